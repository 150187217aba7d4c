//! Price in credits: pixels × quality × n. A 1024x1024 image costs the quality's base price;
//! other sizes scale with their pixel count (rounded up).
//!
//! `auto` (size, quality or both) is held at the highest price it can resolve to ([`hold`]:
//! any of [`AUTO_SIZES`] at `high`), and charged as rendered ([`rendered`]: the size and
//! quality the provider reports for each image, the rest of the hold released). Explicit
//! sizes and qualities are charged as asked, whatever comes back.

use serde::Serialize;
use utoipa::ToSchema;

const REFERENCE_PIXELS: u64 = 1024 * 1024;

/// Credits per 1024x1024 image, by quality.
pub fn base(quality: &str) -> u64 {
    match quality {
        "low" => 1,
        "high" => 16,
        _ => 4,
    }
}

/// The sizes `size: "auto"` resolves to (the Images API answers one of these).
pub const AUTO_SIZES: &[(u32, u32)] = &[(1024, 1024), (1536, 1024), (1024, 1536)];
/// The qualities `quality: "auto"` resolves to.
pub const QUALITIES: &[&str] = &["low", "medium", "high"];
/// What `auto` quality is charged as when the provider does not say what it rendered (the
/// model's usual choice; the built-in renderer draws this).
pub const UNREPORTED_AUTO_QUALITY: &str = "medium";

/// The price of an explicit request (`None` size: 1024x1024; `auto` quality: medium).
pub fn cost(size: Option<(u32, u32)>, quality: &str, n: u32) -> i64 {
    let (w, h) = size.unwrap_or((1024, 1024));
    let pixels = u64::from(w) * u64::from(h);
    let per_image = (base(quality) * pixels).div_ceil(REFERENCE_PIXELS).max(1);
    (per_image * u64::from(n)) as i64
}

/// What a request reserves: its price, or for `auto` size or quality the highest price any
/// of the sizes and qualities it may resolve to costs.
pub fn hold(size: Option<(u32, u32)>, quality: &str, n: u32) -> i64 {
    let sizes = size.map_or(AUTO_SIZES.to_vec(), |s| vec![s]);
    let qualities: &[&str] = if quality == "auto" {
        QUALITIES
    } else {
        std::slice::from_ref(&quality)
    };
    sizes
        .iter()
        .flat_map(|&s| qualities.iter().map(move |q| cost(Some(s), q, n)))
        .max()
        .unwrap_or_else(|| cost(size, quality, n))
}

/// The price of one image as rendered: what was asked where it was explicit, what the
/// provider made (`rendered_size`, `rendered_quality`) where it was `auto`.
pub fn rendered(
    requested_size: Option<(u32, u32)>,
    requested_quality: &str,
    rendered_size: (u32, u32),
    rendered_quality: Option<&str>,
) -> i64 {
    let size = requested_size.unwrap_or(rendered_size);
    let quality = if requested_quality == "auto" {
        rendered_quality
            .filter(|q| QUALITIES.contains(q))
            .unwrap_or(UNREPORTED_AUTO_QUALITY)
    } else {
        requested_quality
    };
    cost(Some(size), quality, 1)
}

/// Credits per image for one size at each quality.
#[derive(Debug, Serialize, ToSchema)]
pub struct PriceRow {
    #[schema(example = "1024x1024")]
    pub size: String,
    #[schema(example = 1)]
    pub low: i64,
    #[schema(example = 4)]
    pub medium: i64,
    #[schema(example = 16)]
    pub high: i64,
    /// What `auto` quality holds: the `high` price. It is charged as rendered (the quality the
    /// model chose), the rest released.
    #[schema(example = 16)]
    pub auto: i64,
}

pub const COMMON_SIZES: &[&str] = &[
    "auto",
    "1024x1024",
    "1536x1024",
    "1024x1536",
    "2048x2048",
    "3840x2160",
    "2160x3840",
];

pub fn table() -> Vec<PriceRow> {
    COMMON_SIZES
        .iter()
        .map(|size| {
            let parsed = super::params::parse_size(size).ok().flatten();
            PriceRow {
                size: size.to_string(),
                low: hold(parsed, "low", 1),
                medium: hold(parsed, "medium", 1),
                high: hold(parsed, "high", 1),
                auto: hold(parsed, "auto", 1),
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn price_grows_with_pixels_quality_and_n() {
        assert_eq!(cost(Some((1024, 1024)), "low", 1), 1);
        assert_eq!(cost(Some((1024, 1024)), "high", 3), 48);
        assert_eq!(cost(None, "auto", 1), 4);
        assert_eq!(cost(Some((1536, 1024)), "medium", 1), 6);
        assert_eq!(cost(Some((3840, 2160)), "high", 1), 127);
        assert_eq!(cost(Some((16, 16)), "low", 1), 1, "never free");
    }

    #[test]
    fn auto_holds_its_maximum_and_is_charged_as_rendered() {
        // Explicit: held and charged as asked.
        assert_eq!(hold(Some((1024, 1024)), "medium", 2), 8);
        // `auto` quality holds high; `auto` size holds the largest size it resolves to.
        assert_eq!(hold(Some((1024, 1024)), "auto", 1), 16);
        assert_eq!(hold(None, "low", 1), 2);
        assert_eq!(hold(None, "auto", 1), 24);
        assert_eq!(hold(None, "auto", 3), 72);
        assert_eq!(rendered(None, "auto", (1024, 1024), Some("low")), 1);
        assert_eq!(rendered(None, "auto", (1536, 1024), Some("high")), 24);
        assert_eq!(rendered(None, "auto", (1024, 1024), None), 4);
        assert_eq!(rendered(None, "low", (1024, 1536), Some("high")), 2);
        // Explicit values are charged as asked, whatever the provider says.
        assert_eq!(
            rendered(Some((1024, 1024)), "low", (1536, 1024), Some("high")),
            1
        );
        assert_eq!(
            rendered(Some((1024, 1024)), "auto", (1536, 1024), Some("high")),
            16
        );
    }
}

//! Price in credits: pixels × quality × n. A 1024x1024 image costs the quality's base price;
//! other sizes scale with their pixel count (rounded up). `auto` is priced as 1024x1024 at
//! medium quality, the model's usual choice.

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

pub fn cost(size: Option<(u32, u32)>, quality: &str, n: u32) -> i64 {
    let (w, h) = size.unwrap_or((1024, 1024));
    let pixels = u64::from(w) * u64::from(h);
    let per_image = (base(quality) * pixels).div_ceil(REFERENCE_PIXELS).max(1);
    (per_image * u64::from(n)) as i64
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
    /// `auto` quality is priced as medium.
    #[schema(example = 4)]
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
                low: cost(parsed, "low", 1),
                medium: cost(parsed, "medium", 1),
                high: cost(parsed, "high", 1),
                auto: cost(parsed, "auto", 1),
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
}

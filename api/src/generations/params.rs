//! The request body of `POST /v1/generations` and the gpt-image-2 rules it must follow.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::values::{Background, Moderation, OutputFormat, Quality};
use crate::error::FieldError;

pub const MAX_PROMPT_CHARS: usize = 32_000;
pub const MAX_REFERENCES: usize = 16;
pub const MAX_SIDE_PRODUCT: u32 = 3840 * 2160;

/// What to generate. Mirrors the upstream gpt-image-2 Images API.
#[derive(Debug, Clone, Deserialize, Serialize, ToSchema)]
#[serde(deny_unknown_fields)]
#[schema(example = json!({
    "prompt": "A watercolor fox reading a map at dawn",
    "size": "1024x1024",
    "quality": "medium",
    "n": 1,
    "background": "auto",
    "output_format": "webp",
    "output_compression": 80,
    "moderation": "auto",
    "reference_image_ids": [],
    "webhook_url": "https://hooks.example.com/gptimage2"
}))]
pub struct GenerationRequest {
    /// What to draw; up to 32,000 characters.
    #[schema(
        min_length = 1,
        max_length = 32000,
        example = "A watercolor fox reading a map at dawn"
    )]
    pub prompt: String,
    /// `auto` or `WIDTHxHEIGHT`: both multiples of 16, aspect between 1:3 and 3:1, at most 3840x2160 pixels.
    #[serde(default = "auto")]
    #[schema(
        example = "1024x1024",
        default = "auto",
        pattern = "^(auto|[0-9]+x[0-9]+)$"
    )]
    pub size: String,
    // The options stay strings here so that `problems` names every bad field at once (serde
    // would stop at the first); the schema lists the values they are checked against.
    #[serde(default = "auto")]
    #[schema(value_type = Quality, default = "auto")]
    pub quality: String,
    /// Number of images, 1–10.
    #[serde(default = "one")]
    #[schema(minimum = 1, maximum = 10, default = 1)]
    pub n: u32,
    #[serde(default = "auto")]
    #[schema(value_type = Background, default = "auto")]
    pub background: String,
    #[serde(default = "png")]
    #[schema(value_type = OutputFormat, default = "png")]
    pub output_format: String,
    /// 0–100; only with `jpeg` or `webp`.
    #[schema(minimum = 0, maximum = 100)]
    pub output_compression: Option<u32>,
    #[serde(default = "auto")]
    #[schema(value_type = Moderation, default = "auto")]
    pub moderation: String,
    /// Up to 16 of your reference images; with any, the edits endpoint is used.
    #[serde(default)]
    #[schema(max_items = 16)]
    pub reference_image_ids: Vec<Uuid>,
    /// A reference image used as the edit mask (needs at least one reference image).
    pub mask_image_id: Option<Uuid>,
    /// https URL that receives a signed POST when the generation finishes. Needs a verified
    /// email address (403 `email_unverified` before).
    #[schema(max_length = 2048, example = "https://hooks.example.com/gptimage2")]
    pub webhook_url: Option<String>,
}

fn auto() -> String {
    "auto".into()
}
fn one() -> u32 {
    1
}
fn png() -> String {
    "png".into()
}

/// `auto` → None; `WxH` checked against the model's rules.
pub fn parse_size(size: &str) -> Result<Option<(u32, u32)>, String> {
    if size == "auto" {
        return Ok(None);
    }
    let (w, h) = size
        .split_once('x')
        .ok_or("must be `auto` or WIDTHxHEIGHT, e.g. 1024x1024")?;
    let (w, h): (u32, u32) = match (w.parse(), h.parse()) {
        (Ok(w), Ok(h)) => (w, h),
        _ => return Err("must be `auto` or WIDTHxHEIGHT, e.g. 1024x1024".into()),
    };
    if w == 0 || h == 0 || !w.is_multiple_of(16) || !h.is_multiple_of(16) {
        return Err("width and height must be positive multiples of 16".into());
    }
    if w > 3 * h || h > 3 * w {
        return Err("aspect ratio must be between 1:3 and 3:1".into());
    }
    if w.max(h) > 3840 || w.min(h) > 2160 || w.saturating_mul(h) > MAX_SIDE_PRODUCT {
        return Err("must be at most 3840x2160".into());
    }
    Ok(Some((w, h)))
}

impl GenerationRequest {
    /// Every rule the request breaks, each naming its field.
    pub fn problems(&self) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let mut bad = |field: &str, message: &str| errors.push(FieldError::new(field, message));
        let prompt_chars = self.prompt.chars().count();
        if self.prompt.trim().is_empty() {
            bad("prompt", "must not be empty");
        } else if prompt_chars > MAX_PROMPT_CHARS {
            bad("prompt", "must be at most 32000 characters");
        }
        if self
            .prompt
            .chars()
            .any(|c| c.is_control() && !matches!(c, '\n' | '\r' | '\t'))
        {
            bad("prompt", "must not contain control characters");
        }
        if let Err(message) = parse_size(&self.size) {
            bad("size", &message);
        }
        if Quality::parse(&self.quality).is_none() {
            bad("quality", "must be low, medium, high or auto");
        }
        if !(1..=10).contains(&self.n) {
            bad("n", "must be between 1 and 10");
        }
        if Background::parse(&self.background).is_none() {
            bad("background", "must be transparent, opaque or auto");
        }
        if OutputFormat::parse(&self.output_format).is_none() {
            bad("output_format", "must be png, jpeg or webp");
        }
        if self.background == "transparent" && self.output_format == "jpeg" {
            bad("background", "transparent needs png or webp output");
        }
        if let Some(c) = self.output_compression {
            if c > 100 {
                bad("output_compression", "must be between 0 and 100");
            }
            if self.output_format == "png" {
                bad("output_compression", "only applies to jpeg and webp output");
            }
        }
        if Moderation::parse(&self.moderation).is_none() {
            bad("moderation", "must be auto or low");
        }
        if self.reference_image_ids.len() > MAX_REFERENCES {
            bad("reference_image_ids", "at most 16 reference images");
        }
        let mut unique = self.reference_image_ids.clone();
        unique.sort();
        unique.dedup();
        if unique.len() != self.reference_image_ids.len() {
            bad("reference_image_ids", "must not repeat an image");
        }
        if self.mask_image_id.is_some() && self.reference_image_ids.is_empty() {
            bad("mask_image_id", "a mask needs at least one reference image");
        }
        errors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_follow_the_model_rules() {
        assert_eq!(parse_size("auto"), Ok(None));
        assert_eq!(parse_size("1536x1024"), Ok(Some((1536, 1024))));
        assert_eq!(parse_size("3840x2160"), Ok(Some((3840, 2160))));
        assert_eq!(parse_size("2160x3840"), Ok(Some((2160, 3840))));
        for bad in [
            "1000x1000",
            "3072x1008",
            "4096x1024",
            "3840x2176",
            "0x16",
            "x",
            "1024",
            "1024x-16",
            "16x64",
        ] {
            assert!(parse_size(bad).is_err(), "{bad} must be refused");
        }
        assert!(parse_size("48x16").is_ok(), "3:1 is the limit, inclusive");
    }
}

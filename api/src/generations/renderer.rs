//! The built-in renderer: the embedded default image provider. It draws a deterministic
//! picture from the prompt and parameters (same request, same pixels) at the requested size,
//! format and background, so the whole product works without a model key. Generations it
//! makes are reported as `provider: "builtin"`.

use std::io::Cursor;

use bytes::Bytes;
use image::{ImageFormat, Rgba, RgbaImage, codecs::jpeg::JpegEncoder, codecs::webp::WebPEncoder};
use sha2::{Digest, Sha256};

use super::provider::{
    ImageProvider, PartialImageSink, ProvidedImage, ProviderError, ProviderRequest,
};

pub struct BuiltinRenderer;

/// Draws image `index` of the request.
pub fn render(request: &ProviderRequest, index: u32) -> Result<ProvidedImage, ProviderError> {
    let (width, height) = request.size.unwrap_or((1024, 1024));
    let seed = Sha256::digest(format!(
        "{}\u{0}{}\u{0}{}\u{0}{index}",
        request.prompt, request.quality, request.background
    ));
    let color = |i: usize| Rgba([seed[i], seed[i + 1], seed[i + 2], 255]);
    let (top, bottom, accent) = (color(0), color(3), color(6));
    let transparent = request.background == "transparent";
    // A soft vertical gradient with concentric rings around a point the prompt picks.
    let (cx, cy) = (
        u32::from(seed[9]) * width / 256,
        u32::from(seed[10]) * height / 256,
    );
    let ring = 8 + u32::from(seed[11] % 48);
    let mut img = RgbaImage::new(width, height);
    for (x, y, pixel) in img.enumerate_pixels_mut() {
        let t = y as f32 / height.max(1) as f32;
        let mix = |a: u8, b: u8| (f32::from(a) * (1.0 - t) + f32::from(b) * t) as u8;
        let dx = x.abs_diff(cx);
        let dy = y.abs_diff(cy);
        let dist = ((dx * dx + dy * dy) as f32).sqrt() as u32;
        let on_ring = (dist / ring).is_multiple_of(2) && dist < width.min(height) / 2;
        *pixel = if on_ring {
            accent
        } else if transparent {
            Rgba([0, 0, 0, 0])
        } else {
            Rgba([
                mix(top[0], bottom[0]),
                mix(top[1], bottom[1]),
                mix(top[2], bottom[2]),
                255,
            ])
        };
    }
    let mut out = Cursor::new(Vec::new());
    let encoded = match request.output_format.as_str() {
        "jpeg" => {
            let quality = request.output_compression.unwrap_or(90).clamp(1, 100);
            image::DynamicImage::ImageRgba8(img)
                .to_rgb8()
                .write_with_encoder(JpegEncoder::new_with_quality(&mut out, quality))
        }
        // image's WebP encoder is lossless; `output_compression` does not change it.
        "webp" => img.write_with_encoder(WebPEncoder::new_lossless(&mut out)),
        _ => img.write_to(&mut out, ImageFormat::Png),
    };
    encoded.map_err(|e| ProviderError::Permanent {
        code: "render_failed".into(),
        message: e.to_string(),
    })?;
    Ok(ProvidedImage {
        bytes: Bytes::from(out.into_inner()),
        format: request.output_format.clone(),
        width,
        height,
        rendered_size: (width, height),
        // The built-in renderer draws `auto` as its usual choice.
        rendered_quality: Some(if request.quality == "auto" {
            super::pricing::UNREPORTED_AUTO_QUALITY.to_string()
        } else {
            request.quality.clone()
        }),
    })
}

#[async_trait::async_trait]
impl ImageProvider for BuiltinRenderer {
    fn name(&self) -> &'static str {
        "builtin"
    }

    async fn generate(
        &self,
        request: &ProviderRequest,
        _partials: Option<PartialImageSink>,
    ) -> Result<Vec<ProvidedImage>, ProviderError> {
        let request = request.clone();
        // Pixel loops and encoders are CPU work: keep them off the async threads.
        tokio::task::spawn_blocking(move || (0..request.n).map(|i| render(&request, i)).collect())
            .await
            .map_err(|e| ProviderError::Transient(format!("renderer task failed: {e}")))?
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(format: &str, background: &str) -> ProviderRequest {
        ProviderRequest {
            prompt: "a fox".into(),
            size: Some((64, 48)),
            quality: "low".into(),
            n: 2,
            background: background.into(),
            output_format: format.into(),
            output_compression: None,
            moderation: "auto".into(),
            references: vec![],
            mask: None,
        }
    }

    #[test]
    fn renders_each_format_deterministically() {
        for (format, image_format) in [
            ("png", ImageFormat::Png),
            ("jpeg", ImageFormat::Jpeg),
            ("webp", ImageFormat::WebP),
        ] {
            let req = request(format, "opaque");
            let a = render(&req, 0).unwrap();
            assert_eq!(
                a.bytes,
                render(&req, 0).unwrap().bytes,
                "same request, same bytes"
            );
            assert_ne!(a.bytes, render(&req, 1).unwrap().bytes, "each of n differs");
            let decoded = image::load_from_memory_with_format(&a.bytes, image_format).unwrap();
            assert_eq!((decoded.width(), decoded.height()), (64, 48));
        }
        let transparent = render(&request("png", "transparent"), 0).unwrap();
        let decoded = image::load_from_memory(&transparent.bytes)
            .unwrap()
            .to_rgba8();
        assert!(
            decoded.pixels().any(|p| p[3] == 0),
            "transparent background"
        );
    }
}

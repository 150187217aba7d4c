//! Reference images: uploaded pictures a generation can start from (the edits endpoint).
//!
//! An upload is checked and cleaned before anything is stored: the format comes from the
//! magic bytes (PNG, JPEG or WebP only), the pixel count from the header is bounded before
//! any decoding (decompression bombs), the image is decoded in full (truncated or corrupt
//! files are refused), and the stored bytes are the decoded pixels **re-encoded** in the
//! same format. Re-encoding is what strips metadata: EXIF (GPS, camera serials), text
//! chunks, XMP and ICC profiles never reach the store. The EXIF orientation is applied to
//! the pixels first, so a rotated photo stays upright without its tag.

use std::io::Cursor;

use bytes::Bytes;
use chrono::{DateTime, Utc};
use diesel::prelude::*;
use diesel_async::{AsyncPgConnection, RunQueryDsl};
use image::{DynamicImage, ImageDecoder, ImageReader, metadata::Orientation};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    db::schema::reference_images,
    error::ApiError,
    storage::{ObjectStore, StorageError, collect},
    wire_enum,
};

/// JPEG re-encoding quality: visually lossless for references, far smaller than 100.
pub const JPEG_QUALITY: u8 = 92;

wire_enum! {
    /// The media type of a stored reference image.
    #[schema(example = "image/png")]
    pub enum ImageContentType {
        Png = "image/png",
        Jpeg = "image/jpeg",
        Webp = "image/webp",
    }
}

/// The accepted formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Png,
    Jpeg,
    Webp,
}

impl Format {
    /// The format named by the file's first bytes, whatever the client claimed.
    pub fn sniff(data: &[u8]) -> Option<Self> {
        if data.starts_with(b"\x89PNG\r\n\x1a\n") {
            Some(Self::Png)
        } else if data.starts_with(&[0xFF, 0xD8, 0xFF]) {
            Some(Self::Jpeg)
        } else if data.len() >= 12 && &data[..4] == b"RIFF" && &data[8..12] == b"WEBP" {
            Some(Self::Webp)
        } else {
            None
        }
    }

    pub fn content_type(self) -> &'static str {
        match self {
            Self::Png => ImageContentType::Png,
            Self::Jpeg => ImageContentType::Jpeg,
            Self::Webp => ImageContentType::Webp,
        }
        .as_str()
    }

    pub fn extension(self) -> &'static str {
        match self {
            Self::Png => "png",
            Self::Jpeg => "jpg",
            Self::Webp => "webp",
        }
    }

    fn name(self) -> &'static str {
        match self {
            Self::Png => "PNG",
            Self::Jpeg => "JPEG",
            Self::Webp => "WebP",
        }
    }

    fn image_format(self) -> image::ImageFormat {
        match self {
            Self::Png => image::ImageFormat::Png,
            Self::Jpeg => image::ImageFormat::Jpeg,
            Self::Webp => image::ImageFormat::WebP,
        }
    }
}

/// A checked upload, ready to store.
#[derive(Debug)]
pub struct CleanImage {
    pub format: Format,
    pub width: u32,
    pub height: u32,
    /// The re-encoded image, without metadata.
    pub bytes: Vec<u8>,
}

/// How many images are decoded at once. A decode may hold hundreds of MB (40 Mpx × 8 bytes
/// for 16-bit RGBA), so concurrency, not just size, bounds memory; more than the cores would
/// not finish sooner anyway.
fn decode_slots() -> &'static Semaphore {
    static SLOTS: std::sync::OnceLock<Semaphore> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

/// [`clean`] on the blocking pool, at most one image per core at a time.
pub async fn clean_blocking(data: Vec<u8>, max_pixels: u64) -> Result<CleanImage, ApiError> {
    let _slot = decode_slots()
        .acquire()
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("decode slots")))?;
    tokio::task::spawn_blocking(move || clean(&data, max_pixels))
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("image check task")))?
}

/// Checks an uploaded file and re-encodes it without metadata. CPU-bound: see
/// [`clean_blocking`].
///
/// Errors: 415 `unsupported_media_type` for anything but PNG, JPEG or WebP (by content);
/// 422 naming `file` for an empty, oversized (pixels), truncated or corrupt image.
pub fn clean(data: &[u8], max_pixels: u64) -> Result<CleanImage, ApiError> {
    if data.is_empty() {
        return Err(ApiError::validation("file", "is empty"));
    }
    let format = Format::sniff(data).ok_or_else(|| {
        ApiError::UnsupportedMediaType(
            "`file` must be a PNG, JPEG or WebP image; this file is none of them.".into(),
        )
    })?;
    let corrupt = |e: image::ImageError| {
        tracing::debug!(error = %e, "reference image refused");
        ApiError::validation(
            "file",
            format!(
                "is not a valid {} image (truncated or corrupt)",
                format.name()
            ),
        )
    };

    // The header alone: a few bytes say how much memory decoding would take.
    let (width, height) = ImageReader::with_format(Cursor::new(data), format.image_format())
        .into_dimensions()
        .map_err(corrupt)?;
    if u64::from(width) * u64::from(height) > max_pixels {
        return Err(ApiError::validation(
            "file",
            format!("image too large: {width}x{height} pixels (at most {max_pixels})"),
        ));
    }

    let mut decoder = ImageReader::with_format(Cursor::new(data), format.image_format())
        .into_decoder()
        .map_err(corrupt)?;
    // Unreadable metadata is dropped anyway: it must not refuse a decodable image.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut pixels = DynamicImage::from_decoder(decoder).map_err(corrupt)?;
    pixels.apply_orientation(orientation);

    let bytes = encode(&pixels, format)
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("re-encoding an image")))?;
    Ok(CleanImage {
        format,
        width: pixels.width(),
        height: pixels.height(),
        bytes,
    })
}

/// The pixels in `format`, with no metadata: the encoders write none unless asked.
fn encode(pixels: &DynamicImage, format: Format) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        Format::Png => {
            pixels.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))?;
        }
        Format::Jpeg => {
            // JPEG has no alpha and 8-bit samples only.
            let flat = if pixels.color().has_color() {
                DynamicImage::ImageRgb8(pixels.to_rgb8())
            } else {
                DynamicImage::ImageLuma8(pixels.to_luma8())
            };
            flat.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out,
                JPEG_QUALITY,
            ))?;
        }
        Format::Webp => {
            // The WebP encoder takes 8-bit RGB(A) only.
            let flat = if pixels.color().has_alpha() {
                DynamicImage::ImageRgba8(pixels.to_rgba8())
            } else {
                DynamicImage::ImageRgb8(pixels.to_rgb8())
            };
            flat.write_with_encoder(image::codecs::webp::WebPEncoder::new_lossless(&mut out))?;
        }
    }
    Ok(out)
}

/// The object key of a reference image.
pub fn object_key(user_id: Uuid, id: Uuid, format: Format) -> String {
    format!("users/{user_id}/references/{id}.{}", format.extension())
}

/// A `reference_images` row.
#[derive(Debug, Clone, Queryable, Selectable, Insertable)]
#[diesel(table_name = reference_images)]
#[diesel(check_for_backend(diesel::pg::Pg))]
pub struct ReferenceImage {
    pub id: Uuid,
    pub user_id: Uuid,
    pub object_key: String,
    pub content_type: String,
    pub width: i32,
    pub height: i32,
    pub bytes: i64,
    pub created_at: DateTime<Utc>,
}

/// The user's reference image `id`; another user's is `NotFound` like a missing one.
pub async fn find(
    conn: &mut AsyncPgConnection,
    user_id: Uuid,
    id: Uuid,
) -> Result<ReferenceImage, ApiError> {
    reference_images::table
        .find(id)
        .filter(reference_images::user_id.eq(user_id))
        .select(ReferenceImage::as_select())
        .first(conn)
        .await
        .optional()?
        .ok_or(ApiError::NotFound)
}

/// The bytes and content type of the user's reference image `id`, for the generation worker.
/// A reference image is at most the upload cap, so it is read whole.
pub async fn load(
    conn: &mut AsyncPgConnection,
    store: &dyn ObjectStore,
    user_id: Uuid,
    id: Uuid,
) -> Result<(Bytes, String), ApiError> {
    let row = find(conn, user_id, id).await?;
    let object = store.get(&row.object_key).await.map_err(|e| match e {
        // The row outlived its object (a failed delete halfway): treat it as gone.
        StorageError::NotFound => ApiError::NotFound,
        other => ApiError::Internal(anyhow::Error::new(other).context("reading a reference image")),
    })?;
    let bytes = collect(object.body).await.map_err(|e| {
        ApiError::Internal(anyhow::Error::new(e).context("reading a reference image"))
    })?;
    Ok((bytes, row.content_type))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_are_sniffed_from_content() {
        assert_eq!(Format::sniff(b"\x89PNG\r\n\x1a\nrest"), Some(Format::Png));
        assert_eq!(Format::sniff(&[0xFF, 0xD8, 0xFF, 0xE0]), Some(Format::Jpeg));
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WEBPVP8 "), Some(Format::Webp));
        assert_eq!(Format::sniff(b"GIF89a"), None);
        assert_eq!(Format::sniff(b"RIFF\0\0\0\0WAVE"), None);
    }

    #[test]
    fn empty_and_foreign_files_are_refused() {
        assert_eq!(clean(b"", 100).unwrap_err().code(), "validation_failed");
        assert_eq!(
            clean(b"GIF89a\x01\0\x01\0", 100).unwrap_err().code(),
            "unsupported_media_type"
        );
    }
}

//! Reference images: uploaded pictures a generation can start from (the edits endpoint).
//!
//! An upload is checked and cleaned before anything is stored: the format comes from the
//! magic bytes (PNG, JPEG or WebP only), the size the header claims is bounded before any
//! decoding (decompression bombs: pixels, sides, and decoded bytes, which count the bytes
//! per pixel, see [`DecodeLimits`]; the image crate's allocation limits stand behind that
//! check), the image is decoded in full (truncated or corrupt files are refused), and the
//! stored bytes are the decoded pixels **re-encoded** in the same format. Re-encoding is what strips metadata: EXIF (GPS, camera serials), text
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

/// The widest or tallest image decoded, whatever the other bounds allow (the largest side
/// WebP can hold; far above the 3840 px the models draw).
pub const MAX_SIDE: u32 = 16_384;

/// How much an upload may decode to, checked from its header before any pixel is decoded.
/// The decoded size is what a decode allocates (width × height × bytes per pixel, so a
/// 16-bit RGBA image counts 8 bytes a pixel): a small file of one flat color can claim
/// hundreds of MB.
#[derive(Debug, Clone, Copy)]
pub struct DecodeLimits {
    /// Width × height (`GI2_MAX_IMAGE_PIXELS`).
    pub max_pixels: u64,
    /// Bytes of decoded pixels (`GI2_MAX_IMAGE_DECODED_BYTES`).
    pub max_decoded_bytes: u64,
}

impl DecodeLimits {
    /// The image crate's own limits: no decoder buffer beyond the decoded-size bound and,
    /// `with_sides`, no side beyond [`MAX_SIDE`].
    fn for_decoder(self, with_sides: bool) -> image::Limits {
        let mut limits = image::Limits::default();
        if with_sides {
            limits.max_image_width = Some(MAX_SIDE);
            limits.max_image_height = Some(MAX_SIDE);
        }
        limits.max_alloc = Some(self.max_decoded_bytes);
        limits
    }
}

/// Why an upload was refused.
#[derive(Debug, thiserror::Error)]
pub enum ImageCheckError {
    #[error("is empty")]
    Empty,
    #[error("`file` must be a PNG, JPEG or WebP image; this file is none of them.")]
    Unsupported,
    #[error("is not a valid {0} image (truncated or corrupt)")]
    Corrupt(&'static str),
    /// More pixels, a longer side or more decoded bytes than allowed (`image_too_large`).
    #[error("{0}")]
    TooLarge(String),
    #[error(transparent)]
    Internal(anyhow::Error),
}

/// How many images are decoded at once. A decode may hold up to the decoded-size bound
/// (64 MiB by default) plus the re-encoded copy, so concurrency, not just size, bounds
/// memory; more than the cores would not finish sooner anyway.
fn decode_slots() -> &'static Semaphore {
    static SLOTS: std::sync::OnceLock<Semaphore> = std::sync::OnceLock::new();
    SLOTS
        .get_or_init(|| Semaphore::new(std::thread::available_parallelism().map_or(2, |n| n.get())))
}

/// [`clean`] on the blocking pool, at most one image per core at a time.
pub async fn clean_blocking(
    data: Vec<u8>,
    limits: DecodeLimits,
) -> Result<CleanImage, ImageCheckError> {
    let _slot = decode_slots()
        .acquire()
        .await
        .map_err(|e| ImageCheckError::Internal(anyhow::Error::new(e).context("decode slots")))?;
    tokio::task::spawn_blocking(move || clean(&data, limits))
        .await
        .map_err(|e| ImageCheckError::Internal(anyhow::Error::new(e).context("image check task")))?
}

/// Checks an uploaded file and re-encodes it without metadata. CPU-bound: see
/// [`clean_blocking`].
///
/// Refuses anything but PNG, JPEG or WebP (by content); an image whose header claims more
/// than `limits` allow (before decoding anything); an empty, truncated or corrupt image.
pub fn clean(data: &[u8], limits: DecodeLimits) -> Result<CleanImage, ImageCheckError> {
    if data.is_empty() {
        return Err(ImageCheckError::Empty);
    }
    let format = Format::sniff(data).ok_or(ImageCheckError::Unsupported)?;
    let refused = |e: image::ImageError| match e {
        image::ImageError::Limits(limit) => ImageCheckError::TooLarge(format!(
            "The image is larger than allowed ({limit}): at most {MAX_SIDE} pixels a side, {} pixels and {} bytes decoded.",
            limits.max_pixels, limits.max_decoded_bytes
        )),
        other => {
            tracing::debug!(error = %other, "reference image refused");
            ImageCheckError::Corrupt(format.name())
        }
    };

    // The header alone says how much memory decoding would take.
    let mut reader = ImageReader::with_format(Cursor::new(data), format.image_format());
    reader.limits(limits.for_decoder(false));
    let mut decoder = reader.into_decoder().map_err(refused)?;
    let (width, height) = decoder.dimensions();
    let pixels = u64::from(width) * u64::from(height);
    let decoded = decoder.total_bytes();
    if width.max(height) > MAX_SIDE
        || pixels > limits.max_pixels
        || decoded > limits.max_decoded_bytes
    {
        return Err(ImageCheckError::TooLarge(format!(
            "The image is too large: {width}x{height} pixels, {decoded} bytes decoded (at most {MAX_SIDE} pixels a side, {} pixels and {} bytes decoded).",
            limits.max_pixels, limits.max_decoded_bytes
        )));
    }
    // And the image crate holds the decoder to the same bounds, as its own `decode` would.
    let mut bounded = limits.for_decoder(true);
    bounded.reserve(decoded).map_err(refused)?;
    decoder.set_limits(bounded).map_err(refused)?;

    // Unreadable metadata is dropped anyway: it must not refuse a decodable image.
    let orientation = decoder.orientation().unwrap_or(Orientation::NoTransforms);
    let mut pixels = DynamicImage::from_decoder(decoder).map_err(refused)?;
    pixels.apply_orientation(orientation);

    let (width, height) = (pixels.width(), pixels.height());
    let bytes = encode(pixels, format).map_err(|e| {
        ImageCheckError::Internal(anyhow::Error::new(e).context("re-encoding an image"))
    })?;
    Ok(CleanImage {
        format,
        width,
        height,
        bytes,
    })
}

/// The pixels in `format`, with no metadata: the encoders write none unless asked.
/// Takes the pixels, so a conversion reuses their buffer when it can.
fn encode(pixels: DynamicImage, format: Format) -> image::ImageResult<Vec<u8>> {
    let mut out = Vec::new();
    match format {
        Format::Png => {
            pixels.write_with_encoder(image::codecs::png::PngEncoder::new(&mut out))?;
        }
        Format::Jpeg => {
            // JPEG has no alpha and 8-bit samples only.
            let flat = if pixels.color().has_color() {
                DynamicImage::ImageRgb8(pixels.into_rgb8())
            } else {
                DynamicImage::ImageLuma8(pixels.into_luma8())
            };
            flat.write_with_encoder(image::codecs::jpeg::JpegEncoder::new_with_quality(
                &mut out,
                JPEG_QUALITY,
            ))?;
        }
        Format::Webp => {
            // The WebP encoder takes 8-bit RGB(A) only.
            let flat = if pixels.color().has_alpha() {
                DynamicImage::ImageRgba8(pixels.into_rgba8())
            } else {
                DynamicImage::ImageRgb8(pixels.into_rgb8())
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

    const ROOMY: DecodeLimits = DecodeLimits {
        max_pixels: 1_000_000,
        max_decoded_bytes: 1 << 20,
    };

    fn png_of(image: DynamicImage) -> Vec<u8> {
        let mut out = Cursor::new(Vec::new());
        image.write_to(&mut out, image::ImageFormat::Png).unwrap();
        out.into_inner()
    }

    #[test]
    fn empty_and_foreign_files_are_refused() {
        assert!(matches!(clean(b"", ROOMY), Err(ImageCheckError::Empty)));
        assert!(matches!(
            clean(b"GIF89a\x01\0\x01\0", ROOMY),
            Err(ImageCheckError::Unsupported)
        ));
    }

    #[test]
    fn the_decoded_size_counts_bytes_per_pixel() {
        // 64x64 pixels of 16-bit RGBA: 4,096 pixels but 32 KiB decoded.
        let deep = png_of(DynamicImage::ImageRgba16(image::ImageBuffer::from_pixel(
            64,
            64,
            image::Rgba([1000u16, 2000, 3000, 65535]),
        )));
        let tight = DecodeLimits {
            max_pixels: 10_000,
            max_decoded_bytes: 16 * 1024,
        };
        match clean(&deep, tight) {
            Err(ImageCheckError::TooLarge(message)) => {
                assert!(message.contains("64x64 pixels, 32768 bytes"), "{message}")
            }
            other => panic!("not refused: {other:?}"),
        }
        let stored = clean(&deep, ROOMY).unwrap();
        assert_eq!((stored.width, stored.height), (64, 64));
    }

    #[test]
    fn a_side_beyond_the_maximum_is_refused_before_decoding() {
        let long = png_of(DynamicImage::ImageLuma8(image::GrayImage::new(
            MAX_SIDE + 1,
            1,
        )));
        let limits = DecodeLimits {
            max_pixels: u64::MAX,
            max_decoded_bytes: u64::MAX,
        };
        assert!(matches!(
            clean(&long, limits),
            Err(ImageCheckError::TooLarge(_))
        ));
    }
}

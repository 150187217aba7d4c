//! The seam between generations and an image model: the OpenAI-compatible Images API, or
//! the built-in renderer (the embedded default, so the product works without a model key).

use bytes::Bytes;

/// What to draw, already validated.
#[derive(Debug, Clone)]
pub struct ProviderRequest {
    pub prompt: String,
    /// `None` is `auto` (the provider picks; the built-in renderer uses 1024x1024).
    pub size: Option<(u32, u32)>,
    /// `low`, `medium`, `high` or `auto`.
    pub quality: String,
    pub n: u32,
    /// `transparent`, `opaque` or `auto`.
    pub background: String,
    /// `png`, `jpeg` or `webp`.
    pub output_format: String,
    pub output_compression: Option<u8>,
    /// `auto` or `low`.
    pub moderation: String,
    /// Reference images (then the edits endpoint is used), in order, with their content types.
    pub references: Vec<(Bytes, String)>,
    pub mask: Option<(Bytes, String)>,
}

/// One image as the provider returned it.
#[derive(Debug, Clone)]
pub struct ProvidedImage {
    pub bytes: Bytes,
    /// `png`, `jpeg` or `webp`.
    pub format: String,
    /// Decoded from the image's header.
    pub width: u32,
    pub height: u32,
    /// The size the provider says it rendered (the answer's `size`), else the decoded one:
    /// what an `auto` size is charged as.
    pub rendered_size: (u32, u32),
    /// The quality the provider says it rendered (`low`, `medium` or `high`), when it says:
    /// what an `auto` quality is charged as.
    pub rendered_quality: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum ProviderError {
    /// Worth retrying later: rate limits, 5xx, timeouts, network failures.
    #[error("{0}")]
    Transient(String),
    /// Never retried: content policy, invalid request. `code` is shown to the user.
    #[error("{code}: {message}")]
    Permanent { code: String, message: String },
}

/// Reported progress while a provider streams.
pub type PartialImageSink = tokio::sync::mpsc::UnboundedSender<(u32, Bytes)>;

#[async_trait::async_trait]
pub trait ImageProvider: Send + Sync + 'static {
    /// `builtin` or `openai`, stored on each generation.
    fn name(&self) -> &'static str;
    /// Generates the images; partial images (when the model streams them) go to `partials`
    /// as (index, image bytes).
    async fn generate(
        &self,
        request: &ProviderRequest,
        partials: Option<PartialImageSink>,
    ) -> Result<Vec<ProvidedImage>, ProviderError>;
}

//! The OpenAI Images API provider (gpt-image-2 or any compatible server): `POST
//! /v1/images/generations` (JSON) without references, `POST /v1/images/edits` (multipart,
//! repeated `image[]` parts, optional `mask`) with them. Every returned image is decoded and
//! checked before it is trusted. Rate limits, 5xx, timeouts and network failures are
//! transient (the job retries them); refusals are permanent and carry the upstream code.
//! When the caller takes partial images, the `stream: true` server-sent-event variant is used.

use std::io::Cursor;

use base64::Engine as _;
use bytes::Bytes;
use futures::StreamExt as _;
use image::{ImageFormat, ImageReader};
use reqwest::{StatusCode, multipart};
use serde::{Deserialize, Serialize};

use super::provider::{
    ImageProvider, PartialImageSink, ProvidedImage, ProviderError, ProviderRequest,
};
use crate::config::{OpenAiConfig, Secret};

pub struct OpenAiProvider {
    http: reqwest::Client,
    /// Without a trailing slash, so paths append cleanly even under a path prefix.
    base_url: String,
    api_key: Secret,
    model: String,
    timeout_secs: u64,
}

#[derive(Serialize)]
struct GenerationBody<'a> {
    model: &'a str,
    prompt: &'a str,
    n: u32,
    size: String,
    quality: &'a str,
    background: &'a str,
    output_format: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    output_compression: Option<u8>,
    moderation: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    stream: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    partial_images: Option<u32>,
}

/// Partial images asked for per image when the caller wants progress (upstream allows 0–3).
pub const PARTIAL_IMAGES: u32 = 2;

/// One server-sent event of a streamed answer (`image_generation.*` or `image_edit.*`).
#[derive(Deserialize)]
struct StreamEvent {
    #[serde(rename = "type")]
    kind: String,
    b64_json: Option<String>,
    partial_image_index: Option<u32>,
    /// On `*.completed`: the size and quality the image was rendered at.
    size: Option<String>,
    quality: Option<String>,
    error: Option<ErrorBody>,
}

/// The JSON answer. `size` and `quality` (gpt-image models) say what `auto` resolved to,
/// for every image of the answer.
#[derive(Deserialize)]
struct ImagesResponse {
    data: Vec<ImageData>,
    size: Option<String>,
    quality: Option<String>,
}

/// One final image as received, with what the provider says it rendered.
#[derive(Debug, PartialEq)]
struct Encoded {
    b64: String,
    size: Option<String>,
    quality: Option<String>,
}

/// `WIDTHxHEIGHT` as the provider reports it; anything else is not a size.
fn reported_size(size: Option<&str>) -> Option<(u32, u32)> {
    let (w, h) = size?.split_once('x')?;
    Some((w.parse().ok()?, h.parse().ok()?)).filter(|&(w, h)| w > 0 && h > 0)
}

/// `low`, `medium` or `high` as the provider reports it; anything else is not said.
fn reported_quality(quality: Option<&str>) -> Option<String> {
    quality
        .filter(|q| super::pricing::QUALITIES.contains(q))
        .map(str::to_string)
}

#[derive(Deserialize)]
struct ImageData {
    b64_json: Option<String>,
}

#[derive(Deserialize)]
struct ErrorEnvelope {
    error: ErrorBody,
}

#[derive(Deserialize, Default)]
struct ErrorBody {
    code: Option<String>,
    message: Option<String>,
}

fn bad_response(message: impl Into<String>) -> ProviderError {
    ProviderError::Permanent {
        code: "provider_bad_response".into(),
        message: message.into(),
    }
}

fn size_param(size: Option<(u32, u32)>) -> String {
    size.map_or_else(|| "auto".into(), |(w, h)| format!("{w}x{h}"))
}

fn extension(content_type: &str) -> &'static str {
    match content_type {
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        _ => "png",
    }
}

fn file_part(
    bytes: &Bytes,
    content_type: &str,
    name: String,
) -> Result<multipart::Part, ProviderError> {
    multipart::Part::bytes(bytes.to_vec())
        .file_name(name)
        .mime_str(content_type)
        .map_err(|_| ProviderError::Permanent {
            code: "invalid_reference".into(),
            message: format!("unusable content type {content_type}"),
        })
}

/// Decodes one `b64_json` and checks it is an image in the requested format.
fn decode_image(b64: &str, wanted_format: &str) -> Result<ProvidedImage, ProviderError> {
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(b64)
        .map_err(|_| bad_response("an image is not valid base64"))?;
    let format = match image::guess_format(&bytes) {
        Ok(ImageFormat::Png) => "png",
        Ok(ImageFormat::Jpeg) => "jpeg",
        Ok(ImageFormat::WebP) => "webp",
        _ => return Err(bad_response("an image is not PNG, JPEG or WebP")),
    };
    if format != wanted_format {
        return Err(bad_response(format!(
            "asked for {wanted_format}, got {format}"
        )));
    }
    let (width, height) = ImageReader::new(Cursor::new(&bytes))
        .with_guessed_format()
        .ok()
        .and_then(|r| r.into_dimensions().ok())
        .ok_or_else(|| bad_response("an image header does not decode"))?;
    Ok(ProvidedImage {
        bytes: Bytes::from(bytes),
        format: format.into(),
        width,
        height,
        rendered_size: (width, height),
        rendered_quality: None,
    })
}

/// [`decode_image`], with what the provider reports it rendered: its `size` (the decoded
/// header's when it reports none) and `quality`.
fn decode_encoded(encoded: &Encoded, wanted_format: &str) -> Result<ProvidedImage, ProviderError> {
    let mut image = decode_image(&encoded.b64, wanted_format)?;
    if let Some(size) = reported_size(encoded.size.as_deref()) {
        image.rendered_size = size;
    }
    image.rendered_quality = reported_quality(encoded.quality.as_deref());
    Ok(image)
}

impl OpenAiProvider {
    pub fn new(config: OpenAiConfig) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            // The whole exchange, body included: a stuck upstream becomes a retryable timeout.
            .timeout(config.timeout)
            .connect_timeout(config.timeout.min(std::time::Duration::from_secs(10)))
            .build()?;
        Ok(Self {
            http,
            base_url: config.base_url.as_str().trim_end_matches('/').to_string(),
            api_key: config.api_key,
            model: config.model,
            timeout_secs: config.timeout.as_secs(),
        })
    }

    fn generations_request(
        &self,
        request: &ProviderRequest,
        stream: bool,
    ) -> reqwest::RequestBuilder {
        let body = GenerationBody {
            model: &self.model,
            prompt: &request.prompt,
            n: request.n,
            size: size_param(request.size),
            quality: &request.quality,
            background: &request.background,
            output_format: &request.output_format,
            output_compression: request.output_compression,
            moderation: &request.moderation,
            stream,
            partial_images: stream.then_some(PARTIAL_IMAGES),
        };
        self.http
            .post(format!("{}/v1/images/generations", self.base_url))
            .json(&body)
    }

    fn edits_request(
        &self,
        request: &ProviderRequest,
        stream: bool,
    ) -> Result<reqwest::RequestBuilder, ProviderError> {
        let mut form = multipart::Form::new()
            .text("model", self.model.clone())
            .text("prompt", request.prompt.clone())
            .text("n", request.n.to_string())
            .text("size", size_param(request.size))
            .text("quality", request.quality.clone())
            .text("background", request.background.clone())
            .text("output_format", request.output_format.clone());
        if let Some(compression) = request.output_compression {
            form = form.text("output_compression", compression.to_string());
        }
        if stream {
            form = form
                .text("stream", "true")
                .text("partial_images", PARTIAL_IMAGES.to_string());
        }
        for (i, (bytes, content_type)) in request.references.iter().enumerate() {
            form = form.part(
                "image[]",
                file_part(
                    bytes,
                    content_type,
                    format!("reference-{i}.{}", extension(content_type)),
                )?,
            );
        }
        if let Some((bytes, content_type)) = &request.mask {
            form = form.part(
                "mask",
                file_part(
                    bytes,
                    content_type,
                    format!("mask.{}", extension(content_type)),
                )?,
            );
        }
        Ok(self
            .http
            .post(format!("{}/v1/images/edits", self.base_url))
            .multipart(form))
    }

    /// A transport failure, described without the URL or headers (so never the key).
    fn transport_error(&self, e: &reqwest::Error) -> ProviderError {
        ProviderError::Transient(if e.is_timeout() {
            format!(
                "the image provider did not answer within {} s",
                self.timeout_secs
            )
        } else if e.is_connect() {
            "could not connect to the image provider".into()
        } else {
            "the connection to the image provider failed".into()
        })
    }
}

/// Maps a non-success answer to a retry or a refusal.
fn error_for(status: StatusCode, body: &[u8]) -> ProviderError {
    if status == StatusCode::TOO_MANY_REQUESTS
        || status == StatusCode::REQUEST_TIMEOUT
        || status.is_server_error()
    {
        return ProviderError::Transient(format!(
            "the image provider answered HTTP {}",
            status.as_u16()
        ));
    }
    if status == StatusCode::UNAUTHORIZED || status == StatusCode::FORBIDDEN {
        return ProviderError::Permanent {
            code: "provider_auth_failed".into(),
            message: "The image provider refused the configured credentials.".into(),
        };
    }
    let error = serde_json::from_slice::<ErrorEnvelope>(body)
        .ok()
        .map(|e| e.error);
    let (code, message) = error.map(|e| (e.code, e.message)).unwrap_or_default();
    ProviderError::Permanent {
        code: code
            .filter(|c| !c.is_empty())
            .unwrap_or_else(|| "invalid_request".into()),
        message: message.unwrap_or_else(|| {
            format!(
                "The image provider refused the request (HTTP {}).",
                status.as_u16()
            )
        }),
    }
}

#[async_trait::async_trait]
impl ImageProvider for OpenAiProvider {
    fn name(&self) -> &'static str {
        "openai"
    }

    /// With `partials`, asks for a streamed answer and forwards each partial image as
    /// (partial_image_index, bytes); otherwise (or when a compatible server answers plain
    /// JSON anyway) reads the final images from one JSON body.
    async fn generate(
        &self,
        request: &ProviderRequest,
        partials: Option<PartialImageSink>,
    ) -> Result<Vec<ProvidedImage>, ProviderError> {
        let stream = partials.is_some();
        let builder = if request.references.is_empty() {
            self.generations_request(request, stream)
        } else {
            self.edits_request(request, stream)?
        };
        let response = builder
            .bearer_auth(self.api_key.expose())
            .send()
            .await
            .map_err(|e| self.transport_error(&e))?;
        let status = response.status();
        if !status.is_success() {
            let body = response
                .bytes()
                .await
                .map_err(|e| self.transport_error(&e))?;
            let error = error_for(status, &body);
            tracing::warn!(status = status.as_u16(), error = %error, "image provider request failed");
            return Err(error);
        }
        let is_event_stream = response
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        let encoded = match partials {
            Some(sink) if is_event_stream => self.read_stream(response, &sink).await?,
            _ => {
                let body = response
                    .bytes()
                    .await
                    .map_err(|e| self.transport_error(&e))?;
                let parsed: ImagesResponse = serde_json::from_slice(&body)
                    .map_err(|e| bad_response(format!("the response does not parse: {e}")))?;
                let (size, quality) = (parsed.size, parsed.quality);
                parsed
                    .data
                    .into_iter()
                    .map(|d| {
                        Ok(Encoded {
                            b64: d
                                .b64_json
                                .ok_or_else(|| bad_response("an image has no b64_json"))?,
                            size: size.clone(),
                            quality: quality.clone(),
                        })
                    })
                    .collect::<Result<Vec<_>, ProviderError>>()?
            }
        };
        if encoded.len() != request.n as usize {
            return Err(bad_response(format!(
                "asked for {} images, got {}",
                request.n,
                encoded.len()
            )));
        }
        encoded
            .iter()
            .map(|e| decode_encoded(e, &request.output_format))
            .collect()
    }
}

impl OpenAiProvider {
    /// Reads a server-sent event stream to its end; returns the completed images.
    async fn read_stream(
        &self,
        response: reqwest::Response,
        sink: &PartialImageSink,
    ) -> Result<Vec<Encoded>, ProviderError> {
        let mut body = response.bytes_stream();
        let mut buffer: Vec<u8> = Vec::new();
        let mut finals = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| self.transport_error(&e))?;
            // CRLF and LF line ends are both valid SSE; base64 and JSON never hold a CR.
            buffer.extend(chunk.iter().filter(|b| **b != b'\r'));
            while let Some(end) = buffer.windows(2).position(|w| w == b"\n\n") {
                let event: Vec<u8> = buffer.drain(..end + 2).collect();
                stream_event(&event[..end], sink, &mut finals)?;
            }
        }
        stream_event(&buffer, sink, &mut finals)?;
        Ok(finals)
    }
}

/// Handles one event: partials go to the sink, completed images are collected.
fn stream_event(
    raw: &[u8],
    sink: &PartialImageSink,
    finals: &mut Vec<Encoded>,
) -> Result<(), ProviderError> {
    let text = String::from_utf8_lossy(raw);
    let data: Vec<&str> = text
        .lines()
        .filter_map(|line| line.strip_prefix("data:"))
        .map(|d| d.strip_prefix(' ').unwrap_or(d))
        .collect();
    let data = data.join("\n");
    if data.trim().is_empty() || data.trim() == "[DONE]" {
        return Ok(());
    }
    let event: StreamEvent = serde_json::from_str(&data)
        .map_err(|e| bad_response(format!("a stream event does not parse: {e}")))?;
    if event.kind.ends_with(".partial_image") {
        // A preview only: one that does not decode is skipped, not fatal.
        if let Some(bytes) = event
            .b64_json
            .and_then(|b| base64::engine::general_purpose::STANDARD.decode(b).ok())
        {
            // The receiver may be gone (nobody watching); the generation goes on.
            let _ = sink.send((event.partial_image_index.unwrap_or(0), Bytes::from(bytes)));
        }
    } else if event.kind.ends_with(".completed") {
        finals.push(Encoded {
            b64: event
                .b64_json
                .ok_or_else(|| bad_response("a completed event has no b64_json"))?,
            size: event.size,
            quality: event.quality,
        });
    } else if event.kind == "error" {
        let error = event.error.unwrap_or_default();
        return Err(match error.code {
            Some(code) if code != "server_error" && code != "rate_limit_exceeded" => {
                ProviderError::Permanent {
                    code,
                    message: error
                        .message
                        .unwrap_or_else(|| "The image provider stopped the request.".into()),
                }
            }
            _ => ProviderError::Transient("the image provider failed mid-stream".into()),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_retry_or_refusal() {
        assert!(matches!(
            error_for(StatusCode::TOO_MANY_REQUESTS, b""),
            ProviderError::Transient(_)
        ));
        assert!(matches!(
            error_for(StatusCode::BAD_GATEWAY, b"<html>"),
            ProviderError::Transient(_)
        ));
        let refused = br#"{"error":{"code":"moderation_blocked","message":"blocked","type":"image_generation_user_error"}}"#;
        assert!(
            matches!(error_for(StatusCode::BAD_REQUEST, refused), ProviderError::Permanent { code, message } if code == "moderation_blocked" && message == "blocked")
        );
        assert!(
            matches!(error_for(StatusCode::BAD_REQUEST, b"nope"), ProviderError::Permanent { code, .. } if code == "invalid_request")
        );
        assert!(
            matches!(error_for(StatusCode::UNAUTHORIZED, b""), ProviderError::Permanent { code, .. } if code == "provider_auth_failed")
        );
    }

    #[test]
    fn stream_events_feed_partials_and_collect_finals() {
        let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
        let mut finals = Vec::new();
        let preview = base64::engine::general_purpose::STANDARD.encode(b"preview");
        let partial = format!(
            "event: image_generation.partial_image\ndata: {{\"type\":\"image_generation.partial_image\",\"b64_json\":\"{preview}\",\"partial_image_index\":1}}"
        );
        stream_event(partial.as_bytes(), &tx, &mut finals).unwrap();
        assert_eq!(rx.try_recv().unwrap(), (1, Bytes::from_static(b"preview")));
        let done = br#"data: {"type":"image_edit.completed","b64_json":"QUJD"}"#;
        stream_event(done, &tx, &mut finals).unwrap();
        let done = br#"data: {"type":"image_generation.completed","b64_json":"REVG","size":"1536x1024","quality":"high","output_format":"png"}"#;
        stream_event(done, &tx, &mut finals).unwrap();
        assert_eq!(
            finals,
            [
                Encoded {
                    b64: "QUJD".into(),
                    size: None,
                    quality: None
                },
                Encoded {
                    b64: "REVG".into(),
                    size: Some("1536x1024".into()),
                    quality: Some("high".into())
                }
            ]
        );
        let blocked =
            br#"data: {"type":"error","error":{"code":"moderation_blocked","message":"no"}}"#;
        assert!(
            matches!(stream_event(blocked, &tx, &mut finals), Err(ProviderError::Permanent { code, .. }) if code == "moderation_blocked")
        );
        let failed = br#"data: {"type":"error","error":{"code":"server_error","message":"oops"}}"#;
        assert!(matches!(
            stream_event(failed, &tx, &mut finals),
            Err(ProviderError::Transient(_))
        ));
        stream_event(b": keep-alive", &tx, &mut finals).unwrap();
    }

    #[test]
    fn images_are_checked() {
        let mut png = Cursor::new(Vec::new());
        image::RgbaImage::new(32, 16)
            .write_to(&mut png, ImageFormat::Png)
            .unwrap();
        let b64 = base64::engine::general_purpose::STANDARD.encode(png.into_inner());
        let image = decode_image(&b64, "png").unwrap();
        assert_eq!(
            (image.width, image.height, image.format.as_str()),
            (32, 16, "png")
        );
        assert!(
            matches!(decode_image(&b64, "jpeg"), Err(ProviderError::Permanent { code, .. }) if code == "provider_bad_response")
        );
        let junk = base64::engine::general_purpose::STANDARD.encode(b"not an image");
        assert!(
            matches!(decode_image(&junk, "png"), Err(ProviderError::Permanent { code, .. }) if code == "provider_bad_response")
        );
        assert!(decode_image("%%%", "png").is_err());
        // What was rendered: the reported size, else the header's; a known quality only.
        let reported = |size: Option<&str>, quality: Option<&str>| {
            decode_encoded(
                &Encoded {
                    b64: b64.clone(),
                    size: size.map(str::to_string),
                    quality: quality.map(str::to_string),
                },
                "png",
            )
            .unwrap()
        };
        let image = reported(Some("1536x1024"), Some("high"));
        assert_eq!(image.rendered_size, (1536, 1024));
        assert_eq!(image.rendered_quality.as_deref(), Some("high"));
        let image = reported(None, Some("auto"));
        assert_eq!(image.rendered_size, (32, 16));
        assert_eq!(image.rendered_quality, None);
        assert_eq!(reported(Some("big"), None).rendered_size, (32, 16));
    }
}

//! A local stand-in for OpenAI's Images API on a wiremock server, speaking its wire format:
//! bearer key, `POST /v1/images/generations` (JSON) and `POST /v1/images/edits` (multipart
//! with repeated `image[]` parts), answers `{created, data: [{b64_json}], usage, ...}` with
//! real encoded images of the requested size and format, and errors as
//! `{"error": {message, type, param, code}}`. It records every request and every image it
//! returned, and can be told to fail in the ways the real one does.

use std::{
    io::Cursor,
    sync::{Arc, Mutex, MutexGuard},
    time::Duration,
};

use base64::Engine as _;
use image::{DynamicImage, ImageFormat, Rgba, RgbaImage};
use serde_json::{Value, json};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate, matchers::any};

/// How the fake answers the next requests.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Images, as asked (streamed as server-sent events when the request says `stream`).
    Succeed,
    /// 429 `rate_limit_exceeded` with `retry-after: 1`, every time.
    RateLimited,
    /// 500 this many more times, then images.
    ServerErrors(u32),
    /// 400 `content_policy_violation`, every time.
    ContentPolicy,
    /// Images, but only after this long (longer than the client's timeout, in tests).
    Slow(Duration),
}

/// One file part of a multipart request.
#[derive(Clone, Debug)]
pub struct FilePart {
    pub name: String,
    pub filename: Option<String>,
    pub content_type: Option<String>,
    pub bytes: Vec<u8>,
}

/// One request the fake received.
#[derive(Clone, Debug)]
pub struct Recorded {
    pub path: String,
    pub authorization: Option<String>,
    /// The JSON body (`/generations`).
    pub json: Option<Value>,
    /// The text fields of a multipart body (`/edits`), in order.
    pub fields: Vec<(String, String)>,
    /// The file parts of a multipart body, in order.
    pub files: Vec<FilePart>,
}

impl Recorded {
    /// A parameter, from the JSON body or the multipart text fields, as a string.
    pub fn param(&self, key: &str) -> Option<String> {
        if let Some(v) = self.json.as_ref().and_then(|j| j.get(key)) {
            return Some(v.as_str().map_or_else(|| v.to_string(), str::to_string));
        }
        self.fields
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
    }
}

struct Shared {
    mode: Mode,
    requests: Vec<Recorded>,
    /// Every image returned, in order, as the exact bytes sent (base64-decoded).
    returned: Vec<Vec<u8>>,
    /// What `size: "auto"` and `quality: "auto"` resolve to, as the model picks per request
    /// (`1024x1024` and `auto` echoed back until set).
    auto_as: Option<(String, String)>,
}

type State = Arc<Mutex<Shared>>;

fn lock(state: &State) -> MutexGuard<'_, Shared> {
    state
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner())
}

pub struct OpenAiFake {
    pub server: MockServer,
    pub api_key: String,
    state: State,
}

impl OpenAiFake {
    pub async fn start() -> Self {
        let server = MockServer::start().await;
        let api_key = format!("sk-test-{}", uuid::Uuid::new_v4().simple());
        let state: State = Arc::new(Mutex::new(Shared {
            mode: Mode::Succeed,
            requests: Vec::new(),
            returned: Vec::new(),
            auto_as: None,
        }));
        Mock::given(any())
            .respond_with(Api {
                state: state.clone(),
                api_key: api_key.clone(),
            })
            .mount(&server)
            .await;
        Self {
            server,
            api_key,
            state,
        }
    }

    pub fn uri(&self) -> String {
        self.server.uri()
    }

    pub fn set_mode(&self, mode: Mode) {
        lock(&self.state).mode = mode;
    }

    /// Makes `size: "auto"` render at `size` and `quality: "auto"` at `quality`, reported in
    /// the answer's (and each `*.completed` event's) `size` and `quality` as the real API does.
    pub fn resolve_auto(&self, size: &str, quality: &str) {
        lock(&self.state).auto_as = Some((size.to_string(), quality.to_string()));
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.state).requests.clone()
    }

    pub fn returned_images(&self) -> Vec<Vec<u8>> {
        lock(&self.state).returned.clone()
    }

    /// The `GI2_*` variables that point an app at this fake.
    pub fn app_env(&self, timeout_secs: u64) -> Vec<(String, String)> {
        vec![
            ("GI2_IMAGE_PROVIDER".into(), "openai".into()),
            ("GI2_OPENAI_API_KEY".into(), self.api_key.clone()),
            ("GI2_OPENAI_BASE_URL".into(), self.uri()),
            ("GI2_OPENAI_TIMEOUT_SECS".into(), timeout_secs.to_string()),
        ]
    }
}

/// A solid-color image, its color picked by `index`, encoded as `format`.
pub fn encode_image(width: u32, height: u32, format: &str, index: u32) -> Vec<u8> {
    let step = (index % 256) as u8;
    let color = Rgba([
        40u8.wrapping_add(step.wrapping_mul(50)),
        200u8.wrapping_sub(step.wrapping_mul(30)),
        120,
        255,
    ]);
    let image = DynamicImage::ImageRgba8(RgbaImage::from_pixel(width, height, color));
    let mut out = Cursor::new(Vec::new());
    match format {
        "jpeg" => DynamicImage::ImageRgb8(image.to_rgb8()).write_to(&mut out, ImageFormat::Jpeg),
        "webp" => image.write_to(&mut out, ImageFormat::WebP),
        _ => image.write_to(&mut out, ImageFormat::Png),
    }
    .expect("encode image");
    out.into_inner()
}

fn error(status: u16, code: Option<&str>, kind: &str, message: &str) -> ResponseTemplate {
    ResponseTemplate::new(status).set_body_json(json!({
        "error": { "message": message, "type": kind, "param": null, "code": code }
    }))
}

/// Text fields and file parts of a multipart body.
type Multipart = (Vec<(String, String)>, Vec<FilePart>);

/// Splits a `multipart/form-data` body into text fields and file parts.
fn parse_multipart(content_type: &str, body: &[u8]) -> Option<Multipart> {
    let boundary = content_type
        .split(';')
        .find_map(|p| p.trim().strip_prefix("boundary="))?
        .trim_matches('"');
    let delimiter = format!("--{boundary}").into_bytes();
    let mut fields = Vec::new();
    let mut files = Vec::new();
    let mut rest = body;
    // Skip the preamble up to the first delimiter.
    let start = find(rest, &delimiter)?;
    rest = &rest[start + delimiter.len()..];
    loop {
        if rest.starts_with(b"--") {
            break;
        }
        rest = rest.strip_prefix(b"\r\n")?;
        let header_end = find(rest, b"\r\n\r\n")?;
        let headers = std::str::from_utf8(&rest[..header_end]).ok()?;
        let content_start = header_end + 4;
        let next = find(&rest[content_start..], &delimiter)? + content_start;
        // The part's content ends with the CRLF before the delimiter.
        let content = &rest[content_start..next.checked_sub(2)?];
        let mut name = None;
        let mut filename = None;
        let mut part_type = None;
        for line in headers.split("\r\n") {
            let (key, value) = line.split_once(':')?;
            match key.trim().to_ascii_lowercase().as_str() {
                "content-disposition" => {
                    for attr in value.split(';').map(str::trim) {
                        if let Some(v) = attr.strip_prefix("name=") {
                            name = Some(v.trim_matches('"').to_string());
                        } else if let Some(v) = attr.strip_prefix("filename=") {
                            filename = Some(v.trim_matches('"').to_string());
                        }
                    }
                }
                "content-type" => part_type = Some(value.trim().to_string()),
                _ => {}
            }
        }
        let name = name?;
        if filename.is_some() || part_type.is_some() {
            files.push(FilePart {
                name,
                filename,
                content_type: part_type,
                bytes: content.to_vec(),
            });
        } else {
            fields.push((name, String::from_utf8_lossy(content).into_owned()));
        }
        rest = &rest[next + delimiter.len()..];
    }
    Some((fields, files))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

struct Api {
    state: State,
    api_key: String,
}

impl Respond for Api {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let header = |name: &str| {
            request
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string)
        };
        let path = request.url.path().to_string();
        let authorization = header("authorization");
        let mut recorded = Recorded {
            path: path.clone(),
            authorization: authorization.clone(),
            json: None,
            fields: Vec::new(),
            files: Vec::new(),
        };
        let parsed = match (request.method.as_str(), path.as_str()) {
            ("POST", "/v1/images/generations") => {
                recorded.json = serde_json::from_slice(&request.body).ok();
                recorded.json.is_some()
            }
            ("POST", "/v1/images/edits") => {
                match parse_multipart(&header("content-type").unwrap_or_default(), &request.body) {
                    Some((fields, files)) => {
                        recorded.fields = fields;
                        recorded.files = files;
                        true
                    }
                    None => false,
                }
            }
            _ => {
                return error(404, None, "invalid_request_error", "Invalid URL");
            }
        };
        let mut state = lock(&self.state);
        state.requests.push(recorded.clone());
        if authorization.as_deref() != Some(&format!("Bearer {}", self.api_key)) {
            return error(
                401,
                Some("invalid_api_key"),
                "invalid_request_error",
                "Incorrect API key provided.",
            );
        }
        if !parsed {
            return error(
                400,
                None,
                "invalid_request_error",
                "We could not parse the body of your request.",
            );
        }
        if path == "/v1/images/edits" && !recorded.files.iter().any(|f| f.name == "image[]") {
            return error(
                400,
                Some("missing_required_parameter"),
                "invalid_request_error",
                "Missing required parameter: 'image'.",
            );
        }
        let mut delay = None;
        match state.mode.clone() {
            Mode::Succeed => {}
            Mode::RateLimited => {
                return error(
                    429,
                    Some("rate_limit_exceeded"),
                    "requests",
                    "Rate limit reached for gpt-image-2 on images per minute. Please try again in 1s.",
                )
                .insert_header("retry-after", "1");
            }
            Mode::ServerErrors(0) => state.mode = Mode::Succeed,
            Mode::ServerErrors(left) => {
                state.mode = Mode::ServerErrors(left - 1);
                return error(
                    500,
                    None,
                    "server_error",
                    "The server had an error while processing your request. Sorry about that!",
                );
            }
            Mode::ContentPolicy => {
                return error(
                    400,
                    Some("content_policy_violation"),
                    "invalid_request_error",
                    "Your request was rejected as a result of our safety system.",
                );
            }
            Mode::Slow(d) => delay = Some(d),
        }
        let param = |key: &str| recorded.param(key);
        let n: u32 = param("n").and_then(|n| n.parse().ok()).unwrap_or(1);
        let auto_as = state.auto_as.clone();
        let mut size = param("size").unwrap_or_else(|| "auto".into());
        let mut quality = param("quality").unwrap_or_else(|| "auto".into());
        if let Some((auto_size, auto_quality)) = auto_as {
            if size == "auto" {
                size = auto_size;
            }
            if quality == "auto" {
                quality = auto_quality;
            }
        }
        let (width, height) = size
            .split_once('x')
            .and_then(|(w, h)| Some((w.parse().ok()?, h.parse().ok()?)))
            .unwrap_or((1024, 1024));
        let format = param("output_format").unwrap_or_else(|| "png".into());
        let mut data = Vec::new();
        for i in 0..n {
            let bytes = encode_image(width, height, &format, i);
            data.push(
                json!({ "b64_json": base64::engine::general_purpose::STANDARD.encode(&bytes) }),
            );
            state.returned.push(bytes);
        }
        let prompt_tokens = param("prompt").map_or(0, |p| p.len() / 4) as u64;
        let body = json!({
            "created": chrono::Utc::now().timestamp(),
            "data": data,
            "background": param("background").unwrap_or_else(|| "auto".into()),
            "output_format": format,
            "quality": quality,
            "size": format!("{width}x{height}"),
            "usage": {
                "input_tokens": prompt_tokens,
                "input_tokens_details": { "image_tokens": 0, "text_tokens": prompt_tokens },
                "output_tokens": 272 * u64::from(n),
                "total_tokens": prompt_tokens + 272 * u64::from(n),
            },
        });
        let response = if param("stream").as_deref() == Some("true") {
            // The streamed variant: per image, `partial_images` previews then the final one.
            let prefix = if path.ends_with("/edits") {
                "image_edit"
            } else {
                "image_generation"
            };
            let partials: u32 = param("partial_images")
                .and_then(|p| p.parse().ok())
                .unwrap_or(0);
            let mut events = String::new();
            let mut push = |kind: &str, event: Value| {
                events.push_str(&format!("event: {prefix}.{kind}\ndata: {event}\n\n"));
            };
            for image in &data {
                for k in 0..partials {
                    let preview = encode_image(width, height, &format, 100 + k);
                    push(
                        "partial_image",
                        json!({
                            "type": format!("{prefix}.partial_image"),
                            "b64_json": base64::engine::general_purpose::STANDARD.encode(&preview),
                            "created_at": body["created"],
                            "size": body["size"],
                            "quality": body["quality"],
                            "background": body["background"],
                            "output_format": format,
                            "partial_image_index": k,
                        }),
                    );
                }
                push(
                    "completed",
                    json!({
                        "type": format!("{prefix}.completed"),
                        "b64_json": image["b64_json"],
                        "created_at": body["created"],
                        "size": body["size"],
                        "quality": body["quality"],
                        "background": body["background"],
                        "output_format": format,
                        "usage": body["usage"],
                    }),
                );
            }
            ResponseTemplate::new(200).set_body_raw(events, "text/event-stream")
        } else {
            ResponseTemplate::new(200).set_body_json(body)
        };
        match delay {
            Some(d) => response.set_delay(d),
            None => response,
        }
    }
}

//! Extractor failures (JSON body, query string, path) rendered as problem+json.

use actix_web::{
    HttpRequest,
    error::{JsonPayloadError, PathError, QueryPayloadError},
    web,
};

use crate::error::{ApiError, FieldError};

pub fn json_config(limit: usize) -> web::JsonConfig {
    web::JsonConfig::default()
        .limit(limit)
        .error_handler(|err, _req: &HttpRequest| json_error(err).into())
}

pub fn query_config() -> web::QueryConfig {
    web::QueryConfig::default().error_handler(|err, _req| query_error(err).into())
}

pub fn path_config() -> web::PathConfig {
    web::PathConfig::default().error_handler(|err, _req| path_error(err).into())
}

fn json_error(err: JsonPayloadError) -> ApiError {
    match err {
        JsonPayloadError::OverflowKnownLength { limit, .. }
        | JsonPayloadError::Overflow { limit } => ApiError::PayloadTooLarge { limit },
        JsonPayloadError::ContentType => {
            ApiError::UnsupportedMediaType("Send the body as application/json.".into())
        }
        JsonPayloadError::Deserialize(e) if e.is_data() => {
            ApiError::Validation(vec![serde_field_error(&e.to_string(), "body")])
        }
        JsonPayloadError::Deserialize(e) => {
            ApiError::bad_request("malformed_json", format!("The body is not valid JSON: {e}"))
        }
        other => ApiError::bad_request(
            "malformed_body",
            format!("The request body could not be read: {other}"),
        ),
    }
}

fn query_error(err: QueryPayloadError) -> ApiError {
    match err {
        QueryPayloadError::Deserialize(e) => {
            ApiError::Validation(vec![serde_field_error(&e.to_string(), "query")])
        }
        other => ApiError::bad_request("invalid_query", other.to_string()),
    }
}

fn path_error(err: PathError) -> ApiError {
    match err {
        PathError::Deserialize(e) => {
            ApiError::Validation(vec![serde_field_error(&e.to_string(), "path")])
        }
        other => ApiError::bad_request("invalid_path", other.to_string()),
    }
}

/// Names the field in serde's messages ("missing field `x`", "unknown field `x`", or a
/// `field: message` prefix) so clients can point at it.
fn serde_field_error(message: &str, fallback: &str) -> FieldError {
    let backticked = message
        .split('`')
        .nth(1)
        .filter(|_| message.contains("field `"));
    let field = match backticked {
        Some(name) => name.to_string(),
        None => fallback.to_string(),
    };
    // serde_json appends " at line 1 column 12"; it helps nobody reading a field error.
    let clean = message.split(" at line ").next().unwrap_or(message);
    FieldError::new(field, clean)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_missing_and_unknown_fields() {
        assert_eq!(
            serde_field_error("missing field `email` at line 1 column 2", "body").field,
            "email"
        );
        assert_eq!(
            serde_field_error("missing field `email` at line 1 column 2", "body").message,
            "missing field `email`"
        );
        assert_eq!(
            serde_field_error("invalid type: string \"x\", expected u32", "query").field,
            "query"
        );
    }
}

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
    use actix_web::{App, HttpResponse, test as actix_test};

    use super::*;

    #[derive(serde::Deserialize)]
    struct Named {
        #[allow(dead_code)]
        name: String,
    }

    async fn echo(_body: web::Json<Named>) -> HttpResponse {
        HttpResponse::NoContent().finish()
    }

    async fn call(content_type: &str, body: &'static str) -> (u16, serde_json::Value) {
        let app = actix_test::init_service(
            App::new()
                .app_data(json_config(64))
                .route("/", web::post().to(echo)),
        )
        .await;
        let req = actix_test::TestRequest::post()
            .uri("/")
            .insert_header(("content-type", content_type))
            .set_payload(body)
            .to_request();
        let res = actix_test::call_service(&app, req).await;
        let status = res.status().as_u16();
        assert_eq!(
            res.headers().get("content-type").unwrap(),
            "application/problem+json"
        );
        (status, actix_test::read_body_json(res).await)
    }

    #[actix_web::test]
    async fn json_failures_are_problems() {
        let (status, body) = call("application/json", "{\"name\":").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (400, Some("malformed_json"))
        );
        let (status, body) = call("application/json", "{}").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("validation_failed"))
        );
        assert_eq!(body["errors"][0]["field"], "name");
        let (status, body) = call("application/json", "{\"name\": 5}").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (422, Some("validation_failed"))
        );
        let (status, body) = call("text/plain", "{\"name\":\"x\"}").await;
        assert_eq!(
            (status, body["code"].as_str()),
            (415, Some("unsupported_media_type"))
        );
        let (status, body) = call(
            "application/json",
            "{\"name\":\"xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx\"}",
        )
        .await;
        assert_eq!(
            (status, body["code"].as_str()),
            (413, Some("payload_too_large"))
        );
    }

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

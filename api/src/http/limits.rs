//! Request-head limits below actix's own (which answers without a problem body): no client
//! of this API needs more than 16 KiB of headers, and big heads cost every layer below.

use actix_web::{
    Error, HttpResponse,
    body::{BoxBody, MessageBody},
    dev::{ServiceRequest, ServiceResponse},
    http::{StatusCode, header},
    middleware::Next,
};

use crate::error::Problem;

pub const MAX_HEADER_BYTES: usize = 16 * 1024;

pub async fn middleware(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, Error> {
    let size: usize = req
        .headers()
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    if size > MAX_HEADER_BYTES {
        let status = StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE;
        let detail = format!(
            "The request headers are {size} bytes; at most {MAX_HEADER_BYTES} are accepted."
        );
        let problem = Problem::from_status(status, &detail, crate::http::request_id::current());
        let response = HttpResponse::build(status)
            .insert_header((header::CONTENT_TYPE, "application/problem+json"))
            .body(serde_json::to_string(&problem).unwrap_or_default());
        return Ok(req.into_response(response));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

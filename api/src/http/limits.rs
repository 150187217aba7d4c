//! Request-head limits below actix's own (which answers without a problem body): no client
//! of this API needs more than 16 KiB of headers, and big heads cost every layer below. And
//! a refused chunked body is not read to its end (see [`HeldBody`]).

use std::{
    cell::RefCell,
    pin::Pin,
    rc::Rc,
    task::{Context, Poll},
};

use actix_web::{
    Error, HttpMessage, HttpResponse,
    body::{BodySize, BoxBody, MessageBody},
    dev::{Payload, ServiceRequest, ServiceResponse},
    error::PayloadError,
    http::{StatusCode, header},
    middleware::Next,
    web::Bytes,
};
use futures::Stream;

use crate::error::Problem;

pub const MAX_HEADER_BYTES: usize = 16 * 1024;

pub async fn middleware(
    mut req: ServiceRequest,
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
    let held = chunked(&req).then(|| {
        let body = Rc::new(RefCell::new(req.take_payload()));
        req.set_payload(Payload::Stream {
            payload: Box::pin(SharedPayload(body.clone())),
        });
        body
    });
    let res = next.call(req).await?.map_into_boxed_body();
    match held {
        Some(payload) if res.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            Ok(res.map_body(|_, body| {
                BoxBody::new(HeldBody {
                    body,
                    _payload: payload,
                })
            }))
        }
        _ => Ok(res),
    }
}

fn chunked(req: &ServiceRequest) -> bool {
    req.headers()
        .get(header::TRANSFER_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("chunked"))
}

/// The request body, read by the handler through one handle while this middleware keeps
/// another.
struct SharedPayload(Rc<RefCell<Payload>>);

impl Stream for SharedPayload {
    type Item = Result<Bytes, PayloadError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut *self.0.borrow_mut()).poll_next(cx)
    }
}

/// A 413 answer that keeps the refused request body open until it is written. actix drains a
/// chunked body whose reader is gone, to keep the connection alive, so a 100 MB upload would
/// still be read to its end; while the reader lives, actix closes the connection after the
/// answer instead.
struct HeldBody {
    body: BoxBody,
    _payload: Rc<RefCell<Payload>>,
}

impl MessageBody for HeldBody {
    type Error = Box<dyn std::error::Error>;

    fn size(&self) -> BodySize {
        self.body.size()
    }

    fn poll_next(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        Pin::new(&mut self.body).poll_next(cx)
    }
}

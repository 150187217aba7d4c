//! Response headers that middleware adds to answers of many operations, so no route annotation
//! can declare them: each is a `components/headers` entry, referenced from every response
//! that carries it. Also the 431 that every operation can answer.

use utoipa::openapi::{
    ContentBuilder, OpenApi, Ref, RefOr, ResponseBuilder,
    header::{Header, HeaderBuilder},
    schema::{ObjectBuilder, Type},
};

use crate::http::{idempotency, limits, request_id};

pub const REQUEST_ID: &str = "X-Request-Id";
pub const RETRY_AFTER: &str = "Retry-After";
pub const REPLAYED: &str = "Idempotent-Replayed";
const HEADERS_TOO_LARGE: &str = "HeadersTooLarge";

/// Declares the shared headers and the 431 response, and references them from every
/// operation's responses: `X-Request-Id` on all, `Retry-After` on 429 (and on 409 where a
/// request with the same `Idempotency-Key` is still running), `Idempotent-Replayed` on the
/// answers below 500 of the operations the idempotency middleware guards.
pub fn add(spec: &mut OpenApi) {
    let components = spec.components.get_or_insert_with(Default::default);
    components
        .headers
        .insert(REQUEST_ID.into(), RefOr::T(request_id_header()));
    components.headers.insert(
        RETRY_AFTER.into(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::Integer)
                        .minimum(Some(0)),
                ))
                .description(Some(
                    "Seconds to wait before trying again. Sent with every 429, and with a 409 \
`idempotency_key_in_use`.",
                ))
                .example(Some(30.into()))
                .build(),
        ),
    );
    components.headers.insert(
        REPLAYED.into(),
        RefOr::T(
            HeaderBuilder::new()
                .schema(Some(
                    ObjectBuilder::new()
                        .schema_type(Type::String)
                        .enum_values(Some(["true"])),
                ))
                .description(Some(
                    "`true` when this answer is the stored first answer to the request's \
`Idempotency-Key`, replayed; absent on a fresh answer.",
                ))
                .build(),
        ),
    );
    components.responses.insert(
        HEADERS_TOO_LARGE.into(),
        RefOr::T(
            ResponseBuilder::new()
                .description(format!(
                    "`headers_too_large`: the request headers exceed {} KiB",
                    limits::MAX_HEADER_BYTES / 1024
                ))
                .header_ref(REQUEST_ID, header_ref(REQUEST_ID))
                .content(
                    "application/problem+json",
                    ContentBuilder::new()
                        .schema(Some(Ref::from_schema_name("Problem")))
                        .build(),
                )
                .build(),
        ),
    );

    for (path, item) in spec.paths.paths.iter_mut() {
        for (method, operation) in [
            (actix_web::http::Method::GET, &mut item.get),
            (actix_web::http::Method::PUT, &mut item.put),
            (actix_web::http::Method::POST, &mut item.post),
            (actix_web::http::Method::DELETE, &mut item.delete),
            (actix_web::http::Method::PATCH, &mut item.patch),
        ] {
            let Some(operation) = operation.as_mut() else {
                continue;
            };
            let guarded = idempotency::applies(&method, path);
            let responses = &mut operation.responses.responses;
            for (status, response) in responses.iter_mut() {
                let RefOr::T(response) = response else {
                    continue;
                };
                let code: u16 = status.parse().unwrap_or(0);
                let mut add = |name: &str| {
                    response
                        .headers
                        .insert(name.into(), RefOr::Ref(header_ref(name)));
                };
                add(REQUEST_ID);
                if code == 429 || (guarded && code == 409) {
                    add(RETRY_AFTER);
                }
                if guarded && code < 500 {
                    add(REPLAYED);
                }
            }
            responses
                .entry("431".into())
                .or_insert_with(|| RefOr::Ref(Ref::from_response_name(HEADERS_TOO_LARGE)));
        }
    }
}

/// `X-Request-Id` is on every answer, so it is the one header declared `required`.
fn request_id_header() -> Header {
    let mut header = HeaderBuilder::new()
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(request_id::MAX_LEN))
                .pattern(Some("^[A-Za-z0-9._:-]+$")),
        ))
        .description(Some(
            "The request's id, also in problem documents: the client's own `X-Request-Id` \
when it is 1–128 of `A-Z a-z 0-9 - _ . :`, else a fresh UUIDv7. Quote it when reporting a problem.",
        ))
        .example(Some("0193a1d2-7c1e-7b3a-9f00-3e1c2b4d5a6f".into()))
        .build();
    // utoipa's `Header` has no `required` field; its extensions are serialised flat into the
    // header object, so they carry the standard keyword.
    header
        .extensions
        .get_or_insert_with(Default::default)
        .insert("required".into(), true.into());
    header
}

fn header_ref(name: &str) -> Ref {
    Ref::new(format!("#/components/headers/{name}"))
}

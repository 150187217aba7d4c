//! The OpenAPI document: this base (info, security schemes, shared schemas) plus every path
//! collected from the route chain in [`crate::routes::configure`].

mod headers;

use utoipa::{
    Modify, OpenApi,
    openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
};

#[derive(OpenApi)]
#[openapi(
    info(
        title = "GPT Image 2 API",
        description = "Turn text prompts and reference images into pictures, paid for with credits. \
Errors are RFC 9457 `application/problem+json` with a stable `code`.",
        version = env!("CARGO_PKG_VERSION"),
    ),
    components(schemas(crate::error::Problem, crate::error::FieldError)),
    modifiers(&SecuritySchemes),
    tags(
        (name = "auth", description = "Registration, sign-in, tokens and password reset"),
        (name = "account", description = "The signed-in user's profile, sessions, security log and consents"),
        (name = "generations", description = "Submit prompts, follow and read generations, download images, prices"),
        (name = "credits", description = "Balances, grants and the credit ledger"),
        (name = "billing", description = "Plans, credit packs, checkout and receipts (Stripe, Creem)"),
        (name = "webhooks", description = "Signed event deliveries from the payment providers"),
        (name = "legal", description = "Policies in force"),
        (name = "support", description = "Requests to the support team, mailed to it with a copy to the sender"),
        (name = "ops", description = "Liveness, readiness and metrics"),
        (name = "storage", description = "Signed downloads of stored objects"),
        (name = "oauth", description = "Sign in with Google or GitHub (authorization code with PKCE)"),
        (name = "api-keys", description = "Keys for integrators: the secret is shown once and stored hashed"),
        (name = "reference-images", description = "Uploaded images generations start from; checked, and stored without metadata"),
    )
)]
struct BaseDoc;

struct SecuritySchemes;

impl Modify for SecuritySchemes {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer_jwt",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("JWT")
                    .description(Some("A short-lived access token from sign-in or refresh."))
                    .build(),
            ),
        );
        components.add_security_scheme(
            "api_key",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .bearer_format("gi2_…")
                    .description(Some(
                        "An API key (`gi2_…`) sent as `Authorization: Bearer <key>`.",
                    ))
                    .build(),
            ),
        );
    }
}

pub fn base() -> utoipa::openapi::OpenApi {
    BaseDoc::openapi()
}

/// The complete document, built from the same route chain the server mounts.
pub fn build() -> utoipa::openapi::OpenApi {
    let (_, spec) = actix_web::App::new()
        .into_utoipa_app()
        .openapi(base())
        .configure(crate::routes::configure)
        .split_for_parts();
    let mut spec = spec;
    finish(&mut spec);
    spec
}

/// What the route chain cannot say by itself, applied wherever the document is produced
/// (here and in the served `/openapi.json`): idempotency headers, the answers of the shared
/// extractors, the response headers and the 431 that middleware adds, explicit `security: []`
/// on public operations, and the server the document describes (its own origin).
pub fn finish(spec: &mut utoipa::openapi::OpenApi) {
    add_idempotency_headers(spec);
    add_extractor_errors(spec);
    headers::add(spec);
    sse_data_as_json_text(spec);
    for item in spec.paths.paths.values_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
            &mut item.head,
            &mut item.options,
        ]
        .into_iter()
        .flatten()
        {
            // An absent `security` means "inherit"; say plainly that these need no credentials.
            operation.security.get_or_insert_with(Vec::new);
        }
    }
    spec.servers = Some(vec![utoipa::openapi::server::Server::new("/")]);
}

/// On the wire an event's `data:` is JSON text, not an object: each `GenerationEvent` variant's
/// `data` becomes a string whose `contentSchema` is the payload's named schema (JSON Schema
/// 2020-12 `contentMediaType`/`contentSchema`, as OpenAPI 3.2 describes event streams).
fn sse_data_as_json_text(spec: &mut utoipa::openapi::OpenApi) {
    let Some(components) = spec.components.as_mut() else {
        return;
    };
    let Some(schema) = components.schemas.get_mut("GenerationEvent") else {
        return;
    };
    let mut value = serde_json::to_value(&*schema).expect("a schema serializes");
    let mut changed = false;
    for variant in value["oneOf"].as_array_mut().into_iter().flatten() {
        let Some(data) = variant.pointer_mut("/properties/data") else {
            continue;
        };
        let mut payload = data.take();
        let description = payload
            .as_object_mut()
            .and_then(|o| o.remove("description"));
        let mut text = serde_json::json!({
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": payload,
        });
        if let Some(description) = description {
            text["description"] = description;
        }
        *data = text;
        changed = true;
    }
    if let Some(example) = value.get_mut("example").and_then(|e| e.get_mut("data")) {
        *example = serde_json::Value::String(example.to_string());
    }
    if changed {
        *schema = serde_json::from_value(value).expect("the rewritten schema deserializes");
    }
}

/// Declares the optional `Idempotency-Key` header, and the answers it adds, on every POST
/// the idempotency middleware guards ([`crate::http::idempotency::applies`]).
pub fn add_idempotency_headers(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        Ref, RefOr, Required,
        path::{ParameterBuilder, ParameterIn},
        schema::{ObjectBuilder, Type},
    };

    const NAME: &str = "IdempotencyKey";
    let parameter = ParameterBuilder::new()
        .name("Idempotency-Key")
        .parameter_in(ParameterIn::Header)
        .required(Required::False)
        .description(Some(
            "Makes the request safe to retry: the first answer (below 500) to a key is replayed \
for 24 h with `Idempotent-Replayed: true`. Scoped to the user (session tokens) or the API key, and to the path; the same key with \
a different body is 422 `idempotency_key_reused`, while the first is still running 409 \
`idempotency_key_in_use`.",
        ))
        .schema(Some(
            ObjectBuilder::new()
                .schema_type(Type::String)
                .min_length(Some(1))
                .max_length(Some(crate::http::idempotency::MAX_KEY_LEN))
                .pattern(Some("^[!-~]+$")),
        ))
        .build();
    spec.components
        .get_or_insert_with(Default::default)
        .parameters
        .insert(NAME.into(), RefOr::T(parameter));

    for (path, item) in spec.paths.paths.iter_mut() {
        if !crate::http::idempotency::applies(&actix_web::http::Method::POST, path) {
            continue;
        }
        let Some(operation) = item.post.as_mut() else {
            continue;
        };
        operation
            .parameters
            .get_or_insert_with(Vec::new)
            .push(RefOr::Ref(Ref::new(format!(
                "#/components/parameters/{NAME}"
            ))));
        let responses = &mut operation.responses.responses;
        mention(responses, "400", "`invalid_idempotency_key`");
        mention(
            responses,
            "409",
            "`idempotency_key_in_use`: a request with this key is still running (`Retry-After`)",
        );
        mention(
            responses,
            "422",
            "`idempotency_key_reused`: this key was used with a different request",
        );
    }
}

/// Declares the answers every route gets from the shared extractor configuration
/// ([`crate::http::extractors`]) rather than from its handler: a JSON body that is not JSON
/// (400), too large (413) or not sent as JSON (415), and a UUID path parameter that is not one
/// (422). The webhooks read their body as raw bytes (the signature covers them), so their
/// answers are their handlers' own.
pub fn add_extractor_errors(spec: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::{
        RefOr, Required,
        path::ParameterIn,
        schema::{KnownFormat, Schema, SchemaFormat},
    };

    for (path, item) in spec.paths.paths.iter_mut() {
        for operation in [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ]
        .into_iter()
        .flatten()
        {
            let json_body = matches!(
                &operation.request_body,
                Some(RefOr::T(body))
                    if body.required == Some(Required::True)
                        && body.content.contains_key("application/json")
            );
            let uuid_in_path = operation.parameters.iter().flatten().any(|p| {
                matches!(
                    p,
                    RefOr::T(p) if matches!(p.parameter_in, ParameterIn::Path)
                        && matches!(
                            &p.schema,
                            Some(RefOr::T(Schema::Object(o)))
                                if o.format == Some(SchemaFormat::KnownFormat(KnownFormat::Uuid))
                        )
                )
            });
            let responses = &mut operation.responses.responses;
            if json_body && !path.starts_with("/v1/webhooks/") {
                mention(responses, "400", "`malformed_json`: the body is not JSON");
                mention(
                    responses,
                    "413",
                    "`payload_too_large`: the body is larger than `GI2_MAX_JSON_BYTES`",
                );
                mention(
                    responses,
                    "415",
                    "`unsupported_media_type`: the body is not sent as `application/json`",
                );
            }
            let said = |responses: &std::collections::BTreeMap<
                String,
                RefOr<utoipa::openapi::Response>,
            >| {
                matches!(responses.get("422"), Some(RefOr::T(r)) if r.description.contains("not a UUID"))
            };
            if uuid_in_path && !said(responses) {
                mention(
                    responses,
                    "422",
                    "`validation_failed`: the id is not a UUID",
                );
            }
        }
    }
}

/// Adds `text` to the description of the `status` answer, or declares that answer
/// (a problem+json body) when the operation has none.
fn mention(
    responses: &mut std::collections::BTreeMap<
        String,
        utoipa::openapi::RefOr<utoipa::openapi::Response>,
    >,
    status: &str,
    text: &str,
) {
    use utoipa::openapi::{ContentBuilder, Ref, RefOr, ResponseBuilder};

    match responses.get_mut(status) {
        Some(RefOr::T(existing)) => {
            existing.description = format!("{}; {text}", existing.description);
        }
        Some(RefOr::Ref(_)) => {}
        None => {
            let problem = ContentBuilder::new()
                .schema(Some(Ref::from_schema_name("Problem")))
                .build();
            responses.insert(
                status.into(),
                RefOr::T(
                    ResponseBuilder::new()
                        .description(text)
                        .content("application/problem+json", problem)
                        .build(),
                ),
            );
        }
    }
}

/// The document as committed in `openapi/openapi.json`: pretty JSON, trailing newline.
pub fn to_pretty_json(spec: &utoipa::openapi::OpenApi) -> String {
    let mut text = spec.to_pretty_json().expect("the spec serialises");
    text.push('\n');
    text
}

use utoipa_actix_web::AppExt;

//! The OpenAPI document: this base (info, security schemes, shared schemas) plus every path
//! collected from the route chain in [`crate::routes::configure`].

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
    spec
}

/// The document as committed in `openapi/openapi.json`: pretty JSON, trailing newline.
pub fn to_pretty_json(spec: &utoipa::openapi::OpenApi) -> String {
    let mut text = spec.to_pretty_json().expect("the spec serialises");
    text.push('\n');
    text
}

use utoipa_actix_web::AppExt;

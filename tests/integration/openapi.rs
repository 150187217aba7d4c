//! The committed spec is the generated one; `UPDATE_OPENAPI=1` rewrites it.

use gptimage2_tests::spawn_app_with;

const COMMITTED: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../openapi/openapi.json");

#[test]
fn committed_spec_is_fresh() {
    let generated = gptimage2::openapi::to_pretty_json(&gptimage2::openapi::build());
    if std::env::var("UPDATE_OPENAPI").is_ok_and(|v| v == "1") {
        std::fs::write(COMMITTED, &generated).expect("write openapi/openapi.json");
        return;
    }
    let committed = std::fs::read_to_string(COMMITTED).unwrap_or_default();
    assert!(
        committed == generated,
        "openapi/openapi.json is stale: run `UPDATE_OPENAPI=1 cargo test -p gptimage2-tests committed_spec_is_fresh` and commit it"
    );
}

#[test]
fn spec_declares_both_security_schemes_and_problem_schema() {
    let spec = serde_json::to_value(gptimage2::openapi::build()).unwrap();
    let schemes = &spec["components"]["securitySchemes"];
    assert_eq!(schemes["bearer_jwt"]["scheme"], "bearer");
    assert_eq!(schemes["bearer_jwt"]["bearerFormat"], "JWT");
    assert_eq!(schemes["api_key"]["scheme"], "bearer");
    assert!(spec["components"]["schemas"]["Problem"].is_object());
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            assert!(
                op["operationId"].is_string(),
                "{method} {path} has no operationId"
            );
            assert!(
                op["tags"].as_array().is_some_and(|t| !t.is_empty()),
                "{method} {path} has no tag"
            );
        }
    }
}

#[tokio::test]
async fn served_spec_and_swagger_ui_work_offline() {
    let app = spawn_app_with(gptimage2_tests::AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let served: serde_json::Value = app.get("/openapi.json").await.json().await.unwrap();
    let generated = serde_json::to_value(gptimage2::openapi::build()).unwrap();
    assert_eq!(served, generated, "the served spec is the generated one");

    let redirect = app.get("/docs").await;
    assert_eq!(redirect.status(), 308);
    assert_eq!(redirect.headers()["location"], "/docs/");
    let page = app.get("/docs/").await;
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("swagger-ui"));
    // The vendored bundle is served by the binary itself.
    let bundle = app.get("/docs/swagger-ui-bundle.js").await;
    assert_eq!(bundle.status(), 200);
    assert!(bundle.bytes().await.unwrap().len() > 100_000);
    let init = app
        .get("/docs/swagger-initializer.js")
        .await
        .text()
        .await
        .unwrap();
    assert!(init.contains("/openapi.json"), "Swagger UI loads our spec");
}

/// The spec's enums for stored fields list exactly what the columns' CHECK constraints allow:
/// those fields are read back as strings, so this is what keeps their `value_type` honest.
#[tokio::test]
async fn spec_enums_match_the_database_checks() {
    let spec = serde_json::to_value(gptimage2::openapi::build()).unwrap();
    let db = gptimage2_tests::fresh_database().await;
    let client = db.client().await;
    for (table, column, schema) in [
        ("generations", "status", "GenerationStatus"),
        ("generation_images", "format", "OutputFormat"),
        ("reference_images", "content_type", "ImageContentType"),
        ("webhook_deliveries", "status", "WebhookDeliveryStatus"),
        ("exports", "status", "ExportStatus"),
        ("sessions", "client", "ClientKind"),
        ("sessions", "auth_method", "AuthMethod"),
        ("identities", "provider", "OAuthProvider"),
        ("credit_grants", "source", "GrantSource"),
        ("ledger_entries", "kind", "LedgerEntryKind"),
        ("billing_transactions", "kind", "TransactionKind"),
        ("billing_transactions", "provider", "ProviderName"),
        ("subscriptions", "provider", "ProviderName"),
    ] {
        let defs: Vec<String> = client
            .query(
                "SELECT pg_get_constraintdef(c.oid) FROM pg_constraint c
                 JOIN pg_class t ON t.oid = c.conrelid
                 WHERE t.relname = $1 AND c.contype = 'c'",
                &[&table],
            )
            .await
            .unwrap()
            .iter()
            .map(|r| r.get(0))
            .collect();
        // PostgreSQL prints `col IN ('a', 'b')` as `(col = ANY (ARRAY['a'::text, 'b'::text]))`.
        let prefix = format!("({column} = ANY (ARRAY[");
        let def = defs
            .iter()
            .find_map(|d| d.split_once(&prefix).map(|(_, rest)| rest))
            .unwrap_or_else(|| panic!("no CHECK lists the values of {table}.{column}: {defs:?}"));
        let allowed: Vec<&str> = def
            .split(']')
            .next()
            .unwrap()
            .split(", ")
            .map(|v| v.trim_start_matches('\'').split('\'').next().unwrap())
            .collect();
        let declared: Vec<&str> = spec["components"]["schemas"][schema]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{schema} is not an enum"))
            .iter()
            .map(|v| v.as_str().unwrap())
            .collect();
        assert_eq!(declared, allowed, "{schema} vs {table}.{column}");
    }
}

/// Found by the schemathesis pass (scripts/fuzz): the shared extractors' answers were
/// undocumented. Every operation with a JSON body answers a body sent without a content type
/// (415) and one that is not JSON (400) with a declared status, and every operation with a
/// UUID in its path answers a malformed one (422) with a declared status.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn extractor_answers_are_declared() {
    let app = spawn_app_with(gptimage2_tests::AppOptions {
        workers: false,
        smtp: false,
        ..Default::default()
    })
    .await;
    let user = app.register_user().await;
    let spec = serde_json::to_value(gptimage2::openapi::build()).unwrap();
    let mut checked = 0;
    for (path, item) in spec["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            let declared = |status: u16| op["responses"].get(status.to_string()).is_some();
            let json_body = op["requestBody"]["required"] == true
                && op["requestBody"]["content"]["application/json"].is_object()
                && !path.starts_with("/v1/webhooks/");
            let uuid_params: Vec<&str> = op["parameters"]
                .as_array()
                .into_iter()
                .flatten()
                .filter(|p| p["in"] == "path" && p["schema"]["format"] == "uuid")
                .map(|p| p["name"].as_str().unwrap())
                .collect();
            let method = reqwest::Method::from_bytes(method.to_uppercase().as_bytes()).unwrap();
            if json_body {
                for (content_type, body) in [(None, ""), (Some("application/json"), "{\"a\":")] {
                    let mut req = app
                        .client
                        .request(method.clone(), app.url(path))
                        .bearer_auth(&user.access_token)
                        .body(body);
                    if let Some(content_type) = content_type {
                        req = req.header("content-type", content_type);
                    }
                    let status = req.send().await.unwrap().status().as_u16();
                    assert!(
                        declared(status),
                        "{method} {path} answered {status} to {content_type:?} {body:?}, undeclared"
                    );
                    checked += 1;
                }
            }
            if !uuid_params.is_empty() {
                let mut target = path.clone();
                for name in &uuid_params {
                    target = target.replace(&format!("{{{name}}}"), "not-a-uuid");
                }
                let status = app
                    .client
                    .request(method.clone(), app.url(&target))
                    .bearer_auth(&user.access_token)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16();
                assert_eq!(status, 422, "{method} {target}");
                assert!(declared(422), "{method} {path}: 422 undeclared");
                checked += 1;
            }
        }
    }
    assert!(checked > 30, "only {checked} requests checked");

    // Each event of the stream is described as the fuzzer (and OpenAPI 3.2) reads it.
    let events = &spec["paths"]["/v1/generations/{id}/events"]["get"]["responses"]["200"]["content"]
        ["text/event-stream"]["schema"];
    assert_eq!(
        events["$ref"], "#/components/schemas/GenerationEvent",
        "{events}"
    );
    let variants = spec["components"]["schemas"]["GenerationEvent"]["oneOf"]
        .as_array()
        .expect("one schema per event");
    for variant in variants {
        assert_eq!(
            variant["required"],
            serde_json::json!(["data", "event"]),
            "{variant}"
        );
    }
}

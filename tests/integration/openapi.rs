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

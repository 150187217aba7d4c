//! Requests no route matched: 405 with `Allow` when the path exists under other methods
//! (the route table comes from the OpenAPI document, so it cannot drift), else 404.

use actix_web::{HttpRequest, web};

use crate::error::ApiError;

/// Path templates and their methods, from the generated spec.
#[derive(Debug, Default)]
pub struct RouteTable {
    routes: Vec<(Vec<String>, Vec<String>)>,
}

impl RouteTable {
    pub fn from_openapi(spec: &utoipa::openapi::OpenApi) -> Self {
        let value = serde_json::to_value(spec).unwrap_or_default();
        let mut routes = Vec::new();
        if let Some(paths) = value.get("paths").and_then(|p| p.as_object()) {
            for (path, item) in paths {
                let mut methods: Vec<String> = item
                    .as_object()
                    .map(|ops| {
                        ops.keys()
                            .filter(|m| {
                                ["get", "put", "post", "delete", "patch", "head", "options"]
                                    .contains(&m.as_str())
                            })
                            .map(|m| m.to_uppercase())
                            .collect()
                    })
                    .unwrap_or_default();
                if methods.iter().any(|m| m == "GET") && !methods.iter().any(|m| m == "HEAD") {
                    methods.push("HEAD".into());
                }
                routes.push((
                    path.trim_matches('/')
                        .split('/')
                        .map(str::to_owned)
                        .collect(),
                    methods,
                ));
            }
        }
        Self { routes }
    }

    /// The methods the path allows, if any template matches it.
    pub fn allowed(&self, path: &str) -> Option<Vec<String>> {
        let segments: Vec<&str> = path.trim_matches('/').split('/').collect();
        let mut allowed: Vec<String> = Vec::new();
        for (template, methods) in &self.routes {
            let matches = template.len() == segments.len()
                && template
                    .iter()
                    .zip(&segments)
                    .all(|(t, s)| (t.starts_with('{') && !s.is_empty()) || t == s);
            if matches {
                allowed.extend(methods.iter().cloned());
            }
        }
        allowed.sort();
        allowed.dedup();
        (!allowed.is_empty()).then_some(allowed)
    }
}

pub async fn fallback(
    req: HttpRequest,
    table: web::Data<RouteTable>,
) -> Result<actix_web::HttpResponse, ApiError> {
    match table.allowed(req.path()) {
        Some(allow) if !allow.iter().any(|m| m == req.method().as_str()) => {
            Err(ApiError::MethodNotAllowed { allow })
        }
        _ => Err(ApiError::NotFound),
    }
}

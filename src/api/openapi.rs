//! `GET /api/v1/openapi.json`: the API description, docs/openapi.yaml,
//! compiled into the binary and served as JSON. Public like the probes: it
//! describes routes, never data, and tools (schemathesis, client generators)
//! fetch it before they hold a token.

use std::sync::LazyLock;

use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::auth::matrix::OPENAPI;
use crate::http::{respond, ApiError};

/// docs/openapi.yaml as written.
pub const SPEC_YAML: &str = include_str!("../../docs/openapi.yaml");

/// The spec as JSON, converted once. A spec that does not parse is a build
/// defect; `spec_json` reports it and a unit test keeps it from shipping.
static SPEC_JSON: LazyLock<Result<bytes::Bytes, String>> = LazyLock::new(|| {
    let value: serde_json::Value =
        yaml_serde::from_str(SPEC_YAML).map_err(|e| format!("docs/openapi.yaml: {e}"))?;
    serde_json::to_vec(&value)
        .map(bytes::Bytes::from)
        .map_err(|e| format!("docs/openapi.yaml: {e}"))
});

/// The spec as JSON bytes.
pub fn spec_json() -> Result<bytes::Bytes, String> {
    SPEC_JSON.clone()
}

/// `GET /api/v1/openapi.json`: public (the spec holds no data); a 500 if the
/// embedded YAML does not parse.
pub fn routes() -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    warp::path!("api" / "v1" / "openapi.json")
        .and(warp::get())
        .map(|| {
            let result = spec_json()
                .map(|body| {
                    let mut resp = Response::new(body.into());
                    resp.headers_mut().insert(
                        header::CONTENT_TYPE,
                        HeaderValue::from_static("application/json"),
                    );
                    resp
                })
                .map_err(|e| {
                    tracing::error!(error = %e, "the embedded OpenAPI spec does not parse");
                    ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "internal",
                        "the API description is unavailable",
                    )
                });
            respond(&OPENAPI, result)
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_embedded_spec_parses_and_lists_every_route_of_the_matrix() {
        let spec: serde_json::Value = serde_json::from_slice(&spec_json().unwrap()).unwrap();
        assert!(spec["openapi"].as_str().unwrap().starts_with("3."));
        let paths = spec["paths"].as_object().unwrap();
        let mut in_spec = std::collections::BTreeSet::new();
        for (path, ops) in paths {
            for method in ops.as_object().unwrap().keys() {
                if ["get", "post", "put", "delete", "patch", "head", "options"]
                    .contains(&method.as_str())
                {
                    in_spec.insert((method.to_uppercase(), path.clone()));
                }
            }
        }
        let in_code: std::collections::BTreeSet<_> = crate::auth::ROUTES
            .iter()
            .map(|r| (r.method.to_string(), r.path.to_string()))
            .collect();
        let missing: Vec<_> = in_code.difference(&in_spec).collect();
        let extra: Vec<_> = in_spec.difference(&in_code).collect();
        assert!(
            missing.is_empty() && extra.is_empty(),
            "routes without a spec entry: {missing:?}; spec entries without a route: {extra:?}"
        );
    }
}

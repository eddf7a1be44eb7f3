//! `GET /api/v1/openapi.json`: the API description, public, equal to
//! docs/openapi.yaml. (A unit test holds its routes to the permission matrix;
//! tests/ops/test_openapi.py validates live responses against it.)

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::spawn_app;

#[tokio::test]
async fn the_openapi_description_is_served_as_json_without_a_token() {
    let app = spawn_app().await;
    let anon = app.api().with_token(None);
    let resp = anon.openapi().await;
    assert_eq!(resp.status, StatusCode::OK);
    assert_eq!(resp.headers["content-type"], "application/json");
    assert!(resp.headers.contains_key("x-request-id"));
    let served = resp.body;
    let yaml =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/docs/openapi.yaml")).unwrap();
    let written: Value = yaml_serde::from_str(&yaml).unwrap();
    assert_eq!(served, written, "the served spec is docs/openapi.yaml");
    assert!(served["paths"]["/api/v1/openapi.json"]["get"].is_object());

    // Other methods on the path are refused like on any route.
    let resp = anon.send("POST", "/api/v1/openapi.json", "").await;
    assert_eq!(resp.status, StatusCode::METHOD_NOT_ALLOWED);
}

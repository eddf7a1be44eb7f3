//! The console: `GET /` and its assets under `/console/`, compiled into the
//! binary (console/ in the repository; plain ES modules, no build step), and
//! `GET /api/v1/me`, which tells the console who the token belongs to.
//!
//! The console has no powers of its own: it calls the API with the token the
//! user pasted, under the same matrix. Its pages are public (they hold no
//! data) and are served with a strict Content-Security-Policy: scripts,
//! styles and connections to this origin only, no inline script, no framing.

use std::sync::Arc;

use serde_json::json;
use warp::http::{header, HeaderValue, StatusCode};
use warp::reply::Response;
use warp::Filter;

use crate::auth::matrix::{CONSOLE, CONSOLE_ASSET, ME};
use crate::http::{endpoint, json_reply, respond, serve, Api, ApiError, Call};

/// The files of the console: (name, content type, bytes).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
];

const INDEX: &str = include_str!("../../console/index.html");

/// The console's Content-Security-Policy.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
    connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'self'; \
    frame-ancestors 'none'";

fn page(content_type: &'static str, body: &'static str) -> Response {
    let mut resp = Response::new(body.into());
    let h = resp.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    h.insert("content-security-policy", HeaderValue::from_static(CSP));
    h.insert("x-frame-options", HeaderValue::from_static("DENY"));
    h.insert("referrer-policy", HeaderValue::from_static("no-referrer"));
    h.insert(
        "x-content-type-options",
        HeaderValue::from_static("nosniff"),
    );
    h.insert("cache-control", HeaderValue::from_static("no-cache"));
    resp
}

/// `GET /`, `GET /console/{file}` and `GET /api/v1/me`.
pub fn routes(
    api: &Arc<Api>,
) -> impl Filter<Extract = (Response,), Error = warp::Rejection> + Clone {
    let index = warp::path::end()
        .and(warp::get())
        .map(|| respond(&CONSOLE, Ok(page("text/html; charset=utf-8", INDEX))));
    let asset = warp::path!("console" / String)
        .and(warp::get())
        .map(|name: String| {
            let found = ASSETS
                .iter()
                .find(|(n, _, _)| *n == name)
                .map(|(_, ct, body)| page(ct, body))
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::NOT_FOUND,
                        "not_found",
                        format!("the console has no file {name:?}"),
                    )
                });
            respond(&CONSOLE_ASSET, found)
        });
    let me = warp::path!("api" / "v1" / "me")
        .and(warp::get())
        .and(endpoint(api, &ME))
        .then(|c| serve(&ME, c, |c| async move { me(&c) }));
    index.or(asset).unify().or(me).unify()
}

fn me(c: &Call) -> Result<Response, ApiError> {
    c.query().only(&[])?;
    let config = c.p().config();
    Ok(json_reply(
        StatusCode::OK,
        &json!({
            "principal": c.who.principal,
            "roles": c.who.roles.names(),
            "visibility": config.auth.visibility,
            "auth_mode": config.auth.mode,
            "grafana_url": (!config.console.grafana_url.is_empty())
                .then(|| config.console.grafana_url.trim_end_matches('/')),
        }),
    ))
}

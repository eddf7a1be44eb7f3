//! Authentication, authorisation and the permission matrix, attacks on the
//! token check, object-level rules.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use forgeline::auth::{Access, Role, ROUTES};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{client_with, spawn_app, spawn_app_with, TestApp, TEST_SECRET};

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn key(name: &str) -> Vec<u8> {
    std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/data/keys")
            .join(name),
    )
    .unwrap()
}

fn b64(v: &Value) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string())
}

fn hs(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    .unwrap()
}

fn good_claims(roles: &[&str]) -> Value {
    json!({"sub": "mallory", "roles": roles, "exp": now() + 600, "iat": now()})
}

/// The permission table of docs/security.md: route -> allowed roles.
fn documented_matrix() -> BTreeMap<(String, String), Vec<String>> {
    let doc =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("docs/security.md"))
            .unwrap();
    let start = doc
        .find("<!-- permission-matrix -->")
        .expect("docs/security.md marks its matrix");
    let mut out = BTreeMap::new();
    for line in doc[start..].lines().skip(1) {
        if !line.starts_with('|') {
            if out.is_empty() {
                continue;
            }
            break;
        }
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some((method, path)) = cells[0].trim_matches('`').split_once(' ') else {
            continue;
        };
        if method == "route" || !["GET", "POST"].contains(&method) {
            continue;
        }
        let roles = cells[1]
            .split(',')
            .map(|r| r.trim().trim_matches('`').to_string())
            .filter(|r| !r.is_empty() && r != "public")
            .collect();
        out.insert((method.to_string(), path.to_string()), roles);
    }
    out
}

#[test]
fn docs_security_matrix_is_the_code_matrix() {
    let doc = documented_matrix();
    let code: BTreeMap<(String, String), Vec<String>> = ROUTES
        .iter()
        .map(|r| {
            let roles = r.allowed().names();
            ((r.method.to_string(), r.path.to_string()), roles)
        })
        .collect();
    assert_eq!(
        doc, code,
        "docs/security.md and src/auth/matrix.rs disagree"
    );
}

/// A request that succeeds for an allowed caller of `route`, prepared with
/// the admin client (and, where the route acts on the caller's own objects,
/// with the caller's own client).
async fn request_for(
    app: &TestApp,
    method: &str,
    path: &str,
    caller: &reqwest::Client,
    role: Option<Role>,
    n: usize,
) -> reqwest::RequestBuilder {
    let admin = &app.client;
    let q = format!("mx{n}");
    let submit = |client: &reqwest::Client, body: Value| {
        let url = app.url("/api/v1/tasks");
        let c = client.clone();
        async move {
            c.post(url)
                .json(&body)
                .send()
                .await
                .unwrap()
                .json::<Value>()
                .await
                .unwrap()
        }
    };
    let new_task = || submit(admin, json!({"queue": q}));
    let lease_as = |client: &reqwest::Client| {
        let url = app.url(&format!("/api/v1/queues/{q}/lease"));
        let c = client.clone();
        async move {
            let v: Value = c
                .post(url)
                .json(&json!({"worker_id": "w"}))
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            v["leases"][0].clone()
        }
    };
    let url = |p: String| app.url(&p);
    match (method, path) {
        ("POST", "/api/v1/tasks") => caller.post(url(path.into())).json(&json!({"queue": q})),
        ("POST", "/api/v1/tasks/stream") => caller
            .post(url("/api/v1/tasks/stream?max_events=1".into()))
            .json(&json!({"queue": q})),
        ("GET", "/api/v1/tasks") => caller.get(url(path.into())),
        ("GET", "/api/v1/tasks/{id}") => {
            let t = new_task().await;
            caller.get(url(format!("/api/v1/tasks/{}", t["id"].as_str().unwrap())))
        }
        ("GET", "/api/v1/tasks/{id}/events") => {
            let t = new_task().await;
            caller.get(url(format!(
                "/api/v1/tasks/{}/events?max_events=1",
                t["id"].as_str().unwrap()
            )))
        }
        ("GET", "/api/v1/tasks/{id}/dossier") => {
            let t = new_task().await;
            caller.get(url(format!(
                "/api/v1/tasks/{}/dossier",
                t["id"].as_str().unwrap()
            )))
        }
        ("POST", "/api/v1/tasks/{id}/cancel") => {
            // A submitter cancels its own task; others try one of the admin's.
            let t = if role == Some(Role::Submitter) {
                submit(caller, json!({"queue": q})).await
            } else {
                new_task().await
            };
            caller
                .post(url(format!(
                    "/api/v1/tasks/{}/cancel",
                    t["id"].as_str().unwrap()
                )))
                .json(&json!({}))
        }
        ("GET", "/api/v1/runs/{run_id}") => {
            new_task().await;
            let l = lease_as(admin).await;
            caller.get(url(format!(
                "/api/v1/runs/{}",
                l["run_id"].as_str().unwrap()
            )))
        }
        ("GET", "/api/v1/events") => caller.get(url("/api/v1/events?max_events=1".into())),
        ("POST", "/api/v1/queues/{queue}/lease") => caller
            .post(url(format!("/api/v1/queues/{q}/lease")))
            .json(&json!({"worker_id": "w"})),
        ("POST", p) if p.starts_with("/api/v1/leases/") => {
            new_task().await;
            // A worker acts on its own lease; others on the admin's.
            let l = if role == Some(Role::Worker) {
                lease_as(caller).await
            } else {
                lease_as(admin).await
            };
            let action = p.rsplit('/').next().unwrap();
            let body = match action {
                "events" => {
                    json!({"token": l["token"], "events": [{"type": "agent_started", "agent_name": "a"}]})
                }
                "fail" => json!({"token": l["token"], "error": "x"}),
                _ => json!({"token": l["token"]}),
            };
            caller
                .post(url(format!(
                    "/api/v1/leases/{}/{action}",
                    l["lease_id"].as_str().unwrap()
                )))
                .json(&body)
        }
        ("GET", "/api/v1/workers") => caller.get(url(path.into())),
        ("POST", "/api/v1/workers/{worker_id}/status") => caller
            .post(url("/api/v1/workers/w1/status".into()))
            .json(&json!({"status": "idle"})),
        ("GET", "/api/v1/dead-letter") => caller.get(url(path.into())),
        ("POST", "/api/v1/dead-letter/{id}/requeue") => {
            let t = submit(admin, json!({"queue": q, "max_attempts": 1})).await;
            let l = lease_as(admin).await;
            admin
                .post(url(format!(
                    "/api/v1/leases/{}/fail",
                    l["lease_id"].as_str().unwrap()
                )))
                .json(&json!({"token": l["token"], "error": "x"}))
                .send()
                .await
                .unwrap();
            caller.post(url(format!(
                "/api/v1/dead-letter/{}/requeue",
                t["id"].as_str().unwrap()
            )))
        }
        ("GET", "/api/v1/reviews/{id}") => {
            let t = review_ticket(app, &q).await;
            caller.get(url(format!(
                "/api/v1/reviews/{}",
                t["id"].as_str().unwrap()
            )))
        }
        ("POST", p) if p.starts_with("/api/v1/reviews/") => {
            let t = review_ticket(app, &q).await;
            let id = t["id"].as_str().unwrap().to_string();
            let action = p.rsplit('/').next().unwrap();
            let body = match action {
                "release" => {
                    // A reviewer releases its own claim; others try the admin's.
                    let holder = if matches!(role, Some(Role::Reviewer | Role::ReviewAdmin)) {
                        caller
                    } else {
                        admin
                    };
                    holder
                        .post(url(format!("/api/v1/reviews/{id}/claim")))
                        .send()
                        .await
                        .unwrap();
                    json!({})
                }
                "assign" => json!({"reviewer": "someone"}),
                "decision" => {
                    json!({"outcome": "approved", "dossier_hash": t["dossier"]["dossier_hash"]})
                }
                _ => json!({}),
            };
            caller
                .post(url(format!("/api/v1/reviews/{id}/{action}")))
                .json(&body)
        }
        ("GET", _) => caller.get(url(path.into())),
        other => panic!("no request for {other:?}: add one to the matrix test"),
    }
}

/// A pending review ticket (a review-required task, leased and completed),
/// as `GET /api/v1/reviews/{id}` shows it.
async fn review_ticket(app: &TestApp, q: &str) -> Value {
    app.submit(json!({"queue": q, "review": {"required": true}}))
        .await;
    let l = app.lease(q, "w", 1).await.remove(0);
    app.lease_call(&l, "complete", json!({})).await;
    let task = app.task(l["task"]["id"].as_str().unwrap()).await;
    let id = task["reviews"][0]["id"].as_str().unwrap().to_string();
    app.get(&format!("/api/v1/reviews/{id}")).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_documented() {
    let app = spawn_app().await;
    let doc = documented_matrix();
    let mut callers: Vec<(String, Option<Role>, reqwest::Client)> =
        vec![("no token".into(), None, client_with(None))];
    for role in Role::ALL {
        callers.push((
            role.as_str().into(),
            Some(role),
            app.client_as(&format!("as-{}", role.as_str()), &[role]),
        ));
    }
    let mut n = 0;
    let mut failures = Vec::new();
    for route in ROUTES {
        for (name, role, client) in &callers {
            n += 1;
            let req = request_for(&app, route.method, route.path, client, *role, n).await;
            let resp = req.send().await.unwrap();
            let status = resp.status();
            let expected = match (route.access, role) {
                (Access::Public, _) => "2xx",
                (_, None) => "401",
                (_, Some(r)) => {
                    let allowed = &doc[&(route.method.to_string(), route.path.to_string())];
                    if allowed.iter().any(|a| a == r.as_str()) {
                        "2xx"
                    } else {
                        "403"
                    }
                }
            };
            let ok = match expected {
                "2xx" => status.is_success(),
                "401" => status == StatusCode::UNAUTHORIZED,
                _ => status == StatusCode::FORBIDDEN,
            };
            if !ok {
                let body = resp.text().await.unwrap_or_default();
                failures.push(format!(
                    "{} {} as {name}: expected {expected}, got {status}: {body}",
                    route.method, route.path
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "{} mismatches:\n{}",
        failures.len(),
        failures.join("\n")
    );
}

#[tokio::test]
async fn an_unknown_path_is_404_for_everyone() {
    let app = spawn_app().await;
    for client in [
        client_with(None),
        app.client.clone(),
        app.client_as("o", &[Role::Observer]),
    ] {
        for path in ["/api/v1/nope", "/api/v1/tasks/x/y/z", "/nope"] {
            let r = client.get(app.url(path)).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::NOT_FOUND, "{path}");
        }
    }
}

#[tokio::test]
async fn attacks_on_the_token_check_are_all_refused_with_a_generic_401() {
    let app = spawn_app_with(|c| {
        c.auth.public_keys = vec![forgeline::config::PublicKeyConfig {
            algorithm: "RS256".into(),
            file: Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys/rsa-public.pem"),
        }];
    })
    .await;
    let secret = TEST_SECRET.as_bytes();
    let valid = hs(&good_claims(&["observer"]), secret);
    let parts: Vec<&str> = valid.split('.').collect();
    let tampered_claims = b64(&good_claims(&["review_admin"]));
    let none_header = b64(&json!({"alg": "none", "typ": "JWT"}));
    let attacks: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        (
            "not a bearer",
            Some(format!(
                "Basic {}",
                base64::engine::general_purpose::STANDARD.encode("a:b")
            )),
        ),
        ("malformed", Some("Bearer not-a-jwt".into())),
        ("empty bearer", Some("Bearer ".into())),
        (
            "alg none",
            Some(format!(
                "Bearer {none_header}.{}.",
                b64(&good_claims(&["review_admin"]))
            )),
        ),
        (
            "HS256 signed with the RS256 public key",
            Some(format!(
                "Bearer {}",
                hs(&good_claims(&["review_admin"]), &key("rsa-public.pem"))
            )),
        ),
        (
            "wrong secret",
            Some(format!(
                "Bearer {}",
                hs(
                    &good_claims(&["observer"]),
                    b"another-secret-0123456789-abcdefghijklmnop"
                )
            )),
        ),
        (
            "expired",
            Some(format!(
                "Bearer {}",
                hs(
                    &json!({"sub": "m", "roles": ["observer"], "exp": now() - 3600}),
                    secret
                )
            )),
        ),
        (
            "not yet valid",
            Some(format!(
                "Bearer {}",
                hs(
                    &json!({"sub": "m", "roles": ["observer"], "exp": now() + 7200, "nbf": now() + 3600}),
                    secret
                )
            )),
        ),
        (
            "no exp",
            Some(format!(
                "Bearer {}",
                hs(&json!({"sub": "m", "roles": ["observer"]}), secret)
            )),
        ),
        (
            "tampered payload",
            Some(format!(
                "Bearer {}.{tampered_claims}.{}",
                parts[0], parts[2]
            )),
        ),
        (
            "unknown role",
            Some(format!(
                "Bearer {}",
                hs(&good_claims(&["superuser"]), secret)
            )),
        ),
        (
            "HS384",
            Some(format!(
                "Bearer {}",
                jsonwebtoken::encode(
                    &Header::new(Algorithm::HS384),
                    &good_claims(&["observer"]),
                    &EncodingKey::from_secret(secret)
                )
                .unwrap()
            )),
        ),
    ];
    for (name, header) in attacks {
        let mut req = client_with(None).get(app.url("/api/v1/tasks"));
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let r = req.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{name}");
        let www = r.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .to_string();
        assert!(www.starts_with("Bearer"), "{name}: {www}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(
            body["error"]["message"], "missing or invalid bearer token",
            "{name}: no hint which check failed"
        );
    }
    // The reasons are counted, not told.
    let metrics = app.metrics().await;
    for reason in [
        "missing",
        "malformed",
        "algorithm",
        "signature",
        "expired",
        "not_yet_valid",
        "claims",
        "unknown_role",
    ] {
        let line = metrics
            .lines()
            .find(|l| {
                l.starts_with(&format!(
                    "forgeline_auth_failures_total{{reason=\"{reason}\"}}"
                ))
            })
            .unwrap_or_else(|| panic!("no series for {reason}"));
        assert!(!line.ends_with(" 0"), "{line}");
    }
    // The genuine article still works.
    let ok = client_with(Some(&valid))
        .get(app.url("/api/v1/tasks"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
}

#[tokio::test]
async fn an_extra_claim_does_not_grant_a_role() {
    let app = spawn_app().await;
    let claims = json!({"sub": "m", "roles": ["observer"], "exp": now() + 600, "role": "review_admin", "admin": true, "scope": "review_admin", "groups": ["review_admin"]});
    let client = client_with(Some(&hs(&claims, TEST_SECRET.as_bytes())));
    assert_eq!(
        client
            .get(app.url("/api/v1/tasks"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        client
            .get(app.url("/api/v1/dead-letter"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
    assert_eq!(
        client
            .post(app.url("/api/v1/tasks"))
            .json(&json!({}))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::FORBIDDEN
    );
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let app = spawn_app_with(|c| {
        c.auth.issuer = "https://idp.example".into();
        c.auth.audience = "forgeline".into();
    })
    .await;
    let s = TEST_SECRET.as_bytes();
    let base = |iss: &str, aud: &str| json!({"sub": "m", "roles": ["observer"], "exp": now() + 600, "iss": iss, "aud": aud});
    let get = |t: String| {
        let url = app.url("/api/v1/tasks");
        async move {
            client_with(Some(&t))
                .get(url)
                .send()
                .await
                .unwrap()
                .status()
        }
    };
    assert_eq!(
        get(hs(&base("https://idp.example", "forgeline"), s)).await,
        StatusCode::OK
    );
    assert_eq!(
        get(hs(&base("https://evil.example", "forgeline"), s)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(hs(&base("https://idp.example", "other"), s)).await,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(hs(&good_claims(&["observer"]), s)).await,
        StatusCode::UNAUTHORIZED,
        "iss and aud are required"
    );
    // Tokens the server mints carry both.
    let minted = app.token("alice", &[Role::Observer]);
    assert_eq!(get(minted).await, StatusCode::OK);
}

#[tokio::test]
async fn identity_provider_tokens_signed_with_rs256_and_eddsa_are_accepted() {
    let app = spawn_app_with(|c| {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/keys");
        c.auth.public_keys = vec![
            forgeline::config::PublicKeyConfig {
                algorithm: "RS256".into(),
                file: dir.join("rsa-public.pem"),
            },
            forgeline::config::PublicKeyConfig {
                algorithm: "EdDSA".into(),
                file: dir.join("ed25519-public.pem"),
            },
        ];
    })
    .await;
    let claims = json!({"sub": "idp-user", "roles": ["submitter"], "exp": now() + 600});
    let rs = jsonwebtoken::encode(
        &Header::new(Algorithm::RS256),
        &claims,
        &EncodingKey::from_rsa_pem(&key("rsa-private.pem")).unwrap(),
    )
    .unwrap();
    let ed = jsonwebtoken::encode(
        &Header::new(Algorithm::EdDSA),
        &claims,
        &EncodingKey::from_ed_pem(&key("ed25519-private.pem")).unwrap(),
    )
    .unwrap();
    for token in [rs, ed] {
        let r = client_with(Some(&token))
            .post(app.url("/api/v1/tasks"))
            .json(&json!({"queue": "idp"}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::CREATED);
        let t: Value = r.json().await.unwrap();
        assert_eq!(t["submitted_by"], "idp-user");
    }
}

#[tokio::test]
async fn a_submitter_cancels_only_its_own_tasks_and_review_admin_any() {
    let app = spawn_app().await;
    let alice = app.client_as("alice", &[Role::Submitter]);
    let bob = app.client_as("bob", &[Role::Submitter]);
    let admin = app.client_as("root", &[Role::ReviewAdmin]);
    let t: Value = alice
        .post(app.url("/api/v1/tasks"))
        .json(&json!({"queue": "q"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let cancel = |c: &reqwest::Client| {
        c.post(app.url(&format!(
            "/api/v1/tasks/{}/cancel",
            t["id"].as_str().unwrap()
        )))
        .json(&json!({}))
        .send()
    };
    assert_eq!(cancel(&bob).await.unwrap().status(), StatusCode::FORBIDDEN);
    assert_eq!(cancel(&admin).await.unwrap().status(), StatusCode::OK);
    let t2: Value = alice
        .post(app.url("/api/v1/tasks"))
        .json(&json!({"queue": "q"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let r = alice
        .post(app.url(&format!(
            "/api/v1/tasks/{}/cancel",
            t2["id"].as_str().unwrap()
        )))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_worker_can_only_use_leases_it_took() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let w1 = app.client_as("worker-1", &[Role::Worker]);
    let w2 = app.client_as("worker-2", &[Role::Worker]);
    let l: Value = w1
        .post(app.url("/api/v1/queues/q/lease"))
        .json(&json!({"worker_id": "a"}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let l = &l["leases"][0];
    let complete = |c: &reqwest::Client| {
        c.post(app.url(&format!(
            "/api/v1/leases/{}/complete",
            l["lease_id"].as_str().unwrap()
        )))
        .json(&json!({"token": l["token"]}))
        .send()
    };
    let r = complete(&w2).await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert_eq!(complete(&w1).await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn probes_and_metrics_need_no_token_and_metrics_can_be_restricted() {
    let app = spawn_app().await;
    let anon = client_with(None);
    for path in [
        "/health/live",
        "/health/startup",
        "/health/ready",
        "/metrics",
    ] {
        assert_eq!(
            anon.get(app.url(path)).send().await.unwrap().status(),
            StatusCode::OK,
            "{path}"
        );
    }
    let token_file = app.dir.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-me-please\n").unwrap();
    let app = spawn_app_with(|c| {
        c.metrics.access = forgeline::config::MetricsAccess::Token;
        c.metrics.token_file = token_file.clone();
    })
    .await;
    assert_eq!(
        anon.get(app.url("/metrics")).send().await.unwrap().status(),
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        app.client
            .get(app.url("/metrics"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::UNAUTHORIZED,
        "a JWT is not the scrape token"
    );
    let ok = client_with(Some("scrape-me-please"))
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap();
    assert_eq!(ok.status(), StatusCode::OK);
    assert_eq!(
        anon.get(app.url("/health/ready"))
            .send()
            .await
            .unwrap()
            .status(),
        StatusCode::OK
    );
    let app =
        spawn_app_with(|c| c.metrics.access = forgeline::config::MetricsAccess::Loopback).await;
    assert_eq!(
        anon.get(app.url("/metrics")).send().await.unwrap().status(),
        StatusCode::OK,
        "tests connect over loopback"
    );
}

#[tokio::test]
async fn auth_mode_none_serves_everyone_as_anonymous_on_loopback() {
    let app = spawn_app_with(|c| c.auth.mode = forgeline::config::AuthMode::None).await;
    let anon = client_with(None);
    let r = anon
        .post(app.url("/api/v1/tasks"))
        .json(&json!({"queue": "q"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::CREATED);
    let t: Value = r.json().await.unwrap();
    assert_eq!(t["submitted_by"], "anonymous");
    let mut c = forgeline::config::Config::default();
    c.auth.mode = forgeline::config::AuthMode::None;
    c.server.host = "0.0.0.0".parse().unwrap();
    c.server.allow_remote = true;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("loopback"), "{e}");
}

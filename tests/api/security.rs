//! Authentication, authorisation and the permission matrix, attacks on the
//! token check, object-level rules.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use forgeline::auth::{Access, Role, Visibility, ROUTES};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::client::{Call, TestClient};
use crate::helpers::{spawn_app, spawn_app_with, TestApp, TEST_SECRET};

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

/// An HS256 token whose header lists a critical extension (RFC 7515
/// §4.1.11), signed correctly: only the `crit` member is wrong.
fn hs_crit(claims: &Value, secret: &[u8]) -> String {
    let header = b64(
        &json!({"alg": "HS256", "typ": "JWT", "crit": ["x-forgeline-test"], "x-forgeline-test": 1}),
    );
    let signing_input = format!("{header}.{}", b64(claims));
    let sig = jsonwebtoken::crypto::sign(
        signing_input.as_bytes(),
        &EncodingKey::from_secret(secret),
        Algorithm::HS256,
    )
    .unwrap();
    format!("{signing_input}.{sig}")
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
    caller: &TestClient,
    role: Option<Role>,
    n: usize,
) -> Call {
    let admin = app.api();
    let q = format!("mx{n}");
    let new_task = || {
        let submit = admin.submit(json!({"queue": q}));
        async move { submit.await.body }
    };
    // A worker id belongs to the first principal that uses it: the admin
    // and each caller lease under ids of their own.
    let (admin_worker, caller_worker) = (format!("w-admin-{n}"), format!("w-caller-{n}"));
    let lease_as = |client: &TestClient, worker: &str| {
        let lease = client.lease(&q, worker, 1, 0);
        async move { lease.await.body["leases"][0].clone() }
    };
    match (method, path) {
        ("POST", "/api/v1/tasks") => caller.submit(json!({"queue": q})),
        ("POST", "/api/v1/tasks/stream") => caller
            .submit_stream(json!({"queue": q}))
            .query("max_events=1"),
        ("GET", "/api/v1/tasks") => caller.tasks(""),
        ("GET", "/api/v1/tasks/{id}") => caller.task(&new_task().await),
        ("GET", "/api/v1/tasks/{id}/events") => {
            caller.task_events(&new_task().await, "max_events=1")
        }
        ("GET", "/api/v1/tasks/{id}/dossier") => caller.dossier(&new_task().await),
        ("POST", "/api/v1/tasks/{id}/cancel") => {
            // A submitter cancels its own task; others try one of the admin's.
            let t = if role == Some(Role::Submitter) {
                caller.submit(json!({"queue": q})).await.body
            } else {
                new_task().await
            };
            caller.cancel(&t, None)
        }
        ("GET", "/api/v1/runs/{run_id}") => {
            new_task().await;
            let l = lease_as(admin, &admin_worker).await;
            caller.run(&l["run_id"])
        }
        ("GET", "/api/v1/events") => caller.events("max_events=1"),
        ("POST", "/api/v1/queues/{queue}/lease") => caller.lease(&q, &caller_worker, 1, 0),
        ("POST", p) if p.starts_with("/api/v1/leases/") => {
            new_task().await;
            // A worker acts on its own lease; others on the admin's.
            let l = if role == Some(Role::Worker) {
                lease_as(caller, &caller_worker).await
            } else {
                lease_as(admin, &admin_worker).await
            };
            let action = p.rsplit('/').next().unwrap();
            let body = match action {
                "events" => json!({"events": [{"type": "agent_started", "agent_name": "a"}]}),
                "fail" => json!({"error": "x"}),
                _ => json!({}),
            };
            caller.lease_call(&l, action, body)
        }
        ("GET", "/api/v1/workers") => caller.workers(),
        ("POST", "/api/v1/workers/{worker_id}/status") => {
            caller.worker_status(&caller_worker, json!({"status": "idle"}))
        }
        ("GET", "/api/v1/dead-letter") => caller.dead_letter(),
        ("POST", "/api/v1/dead-letter/{id}/requeue") => {
            let t = admin
                .submit(json!({"queue": q, "max_attempts": 1}))
                .await
                .body;
            let l = lease_as(admin, &admin_worker).await;
            admin.fail(&l, "x", None).await;
            caller.requeue(&t)
        }
        ("GET", "/api/v1/reviews/{id}") => caller.review(&review_ticket(app, &q).await),
        ("POST", p) if p.starts_with("/api/v1/reviews/") => {
            let t = review_ticket(app, &q).await;
            match p.rsplit('/').next().unwrap() {
                "claim" => caller.claim(&t),
                "release" => {
                    // A reviewer releases its own claim; others try the admin's.
                    let holder = if matches!(role, Some(Role::Reviewer | Role::ReviewAdmin)) {
                        caller
                    } else {
                        admin
                    };
                    holder.claim(&t).await;
                    caller.release_review(&t)
                }
                "assign" => caller.assign(&t, "someone"),
                "decision" => caller.vote(&t, "approved", None),
                action => caller.send(
                    "POST",
                    &format!("/api/v1/reviews/{}/{action}", t["id"].as_str().unwrap()),
                    "{}",
                ),
            }
        }
        ("GET", "/console/{file}") => caller.send("GET", "/console/app.js", ""),
        // The routes that need no setup: probes, metrics, lists, audit.
        ("GET", _) => caller.send("GET", path, ""),
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
    app.api().review(&id).await.body
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_role_as_documented() {
    // Route access only: under `visibility = "own"` a submitter or worker
    // reading the admin's task gets 404, which tests/api/visibility.rs covers.
    let app = spawn_app_with(|c| c.auth.visibility = Visibility::All).await;
    let doc = documented_matrix();
    let mut callers: Vec<(String, Option<Role>, TestClient)> =
        vec![("no token".into(), None, app.api().with_token(None))];
    for role in Role::ALL {
        callers.push((
            role.as_str().into(),
            Some(role),
            app.api_as(&format!("as-{}", role.as_str()), &[role]),
        ));
    }
    let mut n = 0;
    let mut failures = Vec::new();
    for route in ROUTES {
        for (name, role, client) in &callers {
            n += 1;
            let req = request_for(&app, route.method, route.path, client, *role, n).await;
            let resp = req.await;
            let status = resp.status;
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
                failures.push(format!(
                    "{} {} as {name}: expected {expected}, got {status}: {}",
                    route.method, route.path, resp.text
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
        app.api().with_token(None),
        app.api().clone(),
        app.api_as("o", &[Role::Observer]),
    ] {
        for path in ["/api/v1/nope", "/api/v1/tasks/x/y/z", "/nope"] {
            let r = client.send("GET", path, "").await;
            assert_eq!(r.status, StatusCode::NOT_FOUND, "{path}");
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
        (
            "validly signed, with a crit header forgeline does not understand",
            Some(format!(
                "Bearer {}",
                hs_crit(&good_claims(&["observer"]), secret)
            )),
        ),
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
    let anon = app.api().with_token(None);
    for (name, header) in attacks {
        let mut req = anon.tasks("");
        if let Some(h) = &header {
            req = req.header("authorization", h);
        }
        let r = req.await;
        assert_eq!(r.status, StatusCode::UNAUTHORIZED, "{name}");
        let www = r.headers["www-authenticate"].to_str().unwrap().to_string();
        assert!(www.starts_with("Bearer"), "{name}: {www}");
        assert_eq!(
            r.body["error"]["message"], "missing or invalid bearer token",
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
    let ok = app.api().with_token(Some(&valid)).tasks("").await;
    assert_eq!(ok.status, StatusCode::OK);
}

#[tokio::test]
async fn an_extra_claim_does_not_grant_a_role() {
    let app = spawn_app().await;
    let claims = json!({"sub": "m", "roles": ["observer"], "exp": now() + 600, "role": "review_admin", "admin": true, "scope": "review_admin", "groups": ["review_admin"]});
    let client = app
        .api()
        .with_token(Some(&hs(&claims, TEST_SECRET.as_bytes())));
    assert_eq!(client.tasks("").await.status, StatusCode::OK);
    assert_eq!(client.dead_letter().await.status, StatusCode::FORBIDDEN);
    assert_eq!(client.submit(json!({})).await.status, StatusCode::FORBIDDEN);
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
        let list = app.api().with_token(Some(&t)).tasks("");
        async move { list.await.status }
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
        let r = app
            .api()
            .with_token(Some(&token))
            .submit(json!({"queue": "idp"}))
            .await;
        assert_eq!(r.status, StatusCode::CREATED);
        assert_eq!(r.body["submitted_by"], "idp-user");
    }
}

#[tokio::test]
async fn a_submitter_cancels_only_its_own_tasks_and_review_admin_any() {
    let app = spawn_app().await;
    let alice = app.api_as("alice", &[Role::Submitter]);
    let bob = app.api_as("bob", &[Role::Submitter]);
    let admin = app.api_as("root", &[Role::ReviewAdmin]);
    let t = alice.submit(json!({"queue": "q"})).await.body;
    // bob does not see alice's task at all (`visibility = "own"`).
    assert_eq!(bob.cancel(&t, None).await.status, StatusCode::NOT_FOUND);
    assert_eq!(admin.cancel(&t, None).await.status, StatusCode::OK);
    let t2 = alice.submit(json!({"queue": "q"})).await.body;
    let r = alice.cancel(&t2, None).await;
    assert_eq!(r.status, StatusCode::OK);
}

#[tokio::test]
async fn a_worker_can_only_use_leases_it_took() {
    let app = spawn_app().await;
    app.submit(json!({"queue": "q"})).await;
    let w1 = app.api_as("worker-1", &[Role::Worker]);
    let w2 = app.api_as("worker-2", &[Role::Worker]);
    let l = w1.lease("q", "a", 1, 0).await.body;
    let l = &l["leases"][0];
    let r = w2.complete(l, None).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    assert_eq!(w1.complete(l, None).await.status, StatusCode::OK);
}

#[tokio::test]
async fn probes_and_metrics_need_no_token_and_metrics_can_be_restricted() {
    let app = spawn_app().await;
    let anon = app.api().with_token(None);
    for (path, probe) in [
        ("/health/live", anon.health("live")),
        ("/health/startup", anon.health("startup")),
        ("/health/ready", anon.health("ready")),
        ("/metrics", anon.metrics()),
    ] {
        assert_eq!(probe.await.status, StatusCode::OK, "{path}");
    }
    let token_file = app.dir.path().join("metrics-token");
    std::fs::write(&token_file, "scrape-me-please\n").unwrap();
    let app = spawn_app_with(|c| {
        c.metrics.access = forgeline::config::MetricsAccess::Token;
        c.metrics.token_file = token_file.clone();
    })
    .await;
    let anon = app.api().with_token(None);
    assert_eq!(anon.metrics().await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(
        app.api().metrics().await.status,
        StatusCode::UNAUTHORIZED,
        "a JWT is not the scrape token"
    );
    let ok = app
        .api()
        .with_token(Some("scrape-me-please"))
        .metrics()
        .await;
    assert_eq!(ok.status, StatusCode::OK);
    assert_eq!(anon.health("ready").await.status, StatusCode::OK);
    let app =
        spawn_app_with(|c| c.metrics.access = forgeline::config::MetricsAccess::Loopback).await;
    let anon = app.api().with_token(None);
    assert_eq!(
        anon.metrics().await.status,
        StatusCode::OK,
        "tests connect over loopback"
    );
}

#[tokio::test]
async fn auth_mode_none_serves_everyone_as_anonymous_on_loopback() {
    let app = spawn_app_with(|c| c.auth.mode = forgeline::config::AuthMode::None).await;
    let anon = app.api().with_token(None);
    let r = anon.submit(json!({"queue": "q"})).await;
    assert_eq!(r.status, StatusCode::CREATED);
    assert_eq!(r.body["submitted_by"], "anonymous");
    let mut c = forgeline::config::Config::default();
    c.auth.mode = forgeline::config::AuthMode::None;
    c.server.host = "0.0.0.0".parse().unwrap();
    c.server.allow_remote = true;
    let e = c.validate().unwrap_err().to_string();
    assert!(e.contains("loopback"), "{e}");
}

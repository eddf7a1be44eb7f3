//! Bearer-token authentication: which keys, which algorithms, which claims.
//!
//! The algorithms accepted are fixed by configuration, never by the token:
//! HS256 with the server's secret, plus the algorithm of each configured
//! identity-provider public key. A token whose header names anything else
//! (`none`, HS384, an RS256 token when no RSA key is configured…) is refused
//! before any key is touched, and an HS256 token is only ever checked against
//! the HS256 secret (so an attacker cannot sign one with our RSA public key).

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

use super::roles::{Role, RoleSet};
use crate::config::{AuthMode, Config};

/// Shortest HS256 secret accepted (bytes).
pub const MIN_SECRET_LEN: usize = 32;
/// The environment variable holding an HS256 secret.
pub const SECRET_ENV: &str = "FORGELINE_JWT_SECRET";
/// Longest principal (`sub`).
pub const MAX_PRINCIPAL_LEN: usize = 256;

/// The claims forgeline reads (others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The principal: 1–256 characters, no control characters (required).
    pub sub: String,
    /// Role names; one this server does not know refuses the whole token.
    #[serde(default)]
    pub roles: Vec<String>,
    /// Expiry (seconds since the epoch).
    pub exp: u64,
    /// Issued at, in seconds since the epoch (written when minting; not checked).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Not before, in seconds since the epoch; checked with `auth.leeway`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub nbf: Option<u64>,
    /// Issuer; required and must equal `auth.issuer` when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iss: Option<String>,
    /// Audience; required and must equal `auth.audience` when that is set.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub aud: Option<String>,
}

/// An authenticated caller.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// The token's subject (`anonymous` without authentication).
    pub principal: String,
    /// The token's roles.
    pub roles: RoleSet,
}

/// Why a request was not authenticated. Logged and counted; the client only
/// ever sees a generic 401.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, thiserror::Error)]
pub enum AuthFailure {
    /// No Authorization header.
    #[error("no bearer token")]
    Missing,
    /// Not `Bearer <three base64url parts>`, or unreadable.
    #[error("malformed token")]
    Malformed,
    /// The header names an algorithm this server does not accept.
    #[error("algorithm not accepted")]
    Algorithm,
    /// The signature does not verify.
    #[error("bad signature")]
    Signature,
    /// `exp` is past.
    #[error("expired")]
    Expired,
    /// `nbf` is ahead.
    #[error("not yet valid")]
    NotYetValid,
    /// `iss` differs from `auth.issuer`.
    #[error("wrong issuer")]
    Issuer,
    /// `aud` differs from `auth.audience`.
    #[error("wrong audience")]
    Audience,
    /// A required claim is missing or mistyped.
    #[error("bad claims")]
    Claims,
    /// A role that does not exist.
    #[error("unknown role")]
    UnknownRole,
}

impl AuthFailure {
    /// Every reason (metrics pre-register one label value each).
    pub const ALL: [AuthFailure; 10] = [
        AuthFailure::Missing,
        AuthFailure::Malformed,
        AuthFailure::Algorithm,
        AuthFailure::Signature,
        AuthFailure::Expired,
        AuthFailure::NotYetValid,
        AuthFailure::Issuer,
        AuthFailure::Audience,
        AuthFailure::Claims,
        AuthFailure::UnknownRole,
    ];

    /// The `reason` label of `forgeline_auth_failures_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed => "malformed",
            AuthFailure::Algorithm => "algorithm",
            AuthFailure::Signature => "signature",
            AuthFailure::Expired => "expired",
            AuthFailure::NotYetValid => "not_yet_valid",
            AuthFailure::Issuer => "issuer",
            AuthFailure::Audience => "audience",
            AuthFailure::Claims => "claims",
            AuthFailure::UnknownRole => "unknown_role",
        }
    }
}

/// Why the keys could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// A key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The secret, key or token file.
        path: PathBuf,
        /// The underlying I/O error.
        source: std::io::Error,
    },
    /// The secret is too short, or a PEM does not parse.
    #[error("{0}")]
    Invalid(String),
    /// No secret exists yet and this command does not create one.
    #[error("no JWT secret: set auth.secret_file or {SECRET_ENV}, or start `forgeline serve` once to generate {0}")]
    NoSecret(PathBuf),
}

/// Verifies (and, with the HS256 secret, issues) tokens.
pub struct Authenticator {
    mode: AuthMode,
    hs: Option<(EncodingKey, DecodingKey)>,
    external: Vec<(Algorithm, DecodingKey)>,
    issuer: Option<String>,
    audience: Option<String>,
    leeway: u64,
}

impl std::fmt::Debug for Authenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Authenticator")
            .field("mode", &self.mode)
            .field("hs256", &self.hs.is_some())
            .field("external_keys", &self.external.len())
            .finish()
    }
}

fn nonempty(s: &str) -> Option<String> {
    (!s.is_empty()).then(|| s.to_string())
}

fn read(path: &Path) -> Result<Vec<u8>, KeyError> {
    std::fs::read(path).map_err(|source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    })
}

/// The generated secret's default location.
pub fn default_secret_path(config: &Config) -> PathBuf {
    config.store.data_dir.join("jwt-secret")
}

/// Where the first start writes the admin token.
pub fn admin_token_path(config: &Config) -> PathBuf {
    if config.auth.admin_token_file.as_os_str().is_empty() {
        config.store.data_dir.join("admin-token")
    } else {
        config.auth.admin_token_file.clone()
    }
}

/// Finds the HS256 secret: `auth.secret_file`, else `FORGELINE_JWT_SECRET`,
/// else `<data_dir>/jwt-secret`. Returns the secret and whether it came from
/// the data dir.
fn find_secret(config: &Config) -> Result<Option<Vec<u8>>, KeyError> {
    let secret = if !config.auth.secret_file.as_os_str().is_empty() {
        Some(read(&config.auth.secret_file)?)
    } else if let Ok(s) = std::env::var(SECRET_ENV) {
        Some(s.into_bytes())
    } else {
        let p = default_secret_path(config);
        match std::fs::read(&p) {
            Ok(s) => Some(s),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(source) => return Err(KeyError::Io { path: p, source }),
        }
    };
    match secret {
        None => Ok(None),
        Some(s) => {
            let s = s.trim_ascii().to_vec();
            if s.len() < MIN_SECRET_LEN {
                return Err(KeyError::Invalid(format!(
                    "the JWT secret is {} bytes; at least {MIN_SECRET_LEN} are required",
                    s.len()
                )));
            }
            Ok(Some(s))
        }
    }
}

/// Writes `contents` to a new file readable only by its owner.
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), KeyError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let io = |source| KeyError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io)?;
    }
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(io)?;
    f.write_all(contents).map_err(io)?;
    f.sync_all().map_err(io)
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Authenticator {
    /// Builds the authenticator. With `generate`, a missing secret is created
    /// (first start of `serve`) and an admin token is written; the returned
    /// path says where.
    pub fn from_config(
        config: &Config,
        generate: bool,
    ) -> Result<(Authenticator, Option<PathBuf>), KeyError> {
        let mut external = Vec::new();
        for k in &config.auth.public_keys {
            let pem = read(&k.file)?;
            let (alg, key) = match k.algorithm.as_str() {
                "RS256" => (Algorithm::RS256, DecodingKey::from_rsa_pem(&pem)),
                _ => (Algorithm::EdDSA, DecodingKey::from_ed_pem(&pem)),
            };
            let key = key.map_err(|e| {
                KeyError::Invalid(format!(
                    "{}: not a {} public key: {e}",
                    k.file.display(),
                    k.algorithm
                ))
            })?;
            external.push((alg, key));
        }
        let mut admin_token = None;
        let secret = match find_secret(config)? {
            Some(s) => Some(s),
            None if generate && config.auth.mode == AuthMode::Jwt => {
                let mut raw = [0u8; 48];
                rand::fill(&mut raw);
                use base64::Engine;
                let s = base64::engine::general_purpose::URL_SAFE_NO_PAD
                    .encode(raw)
                    .into_bytes();
                write_private(&default_secret_path(config), &s)?;
                admin_token = Some(admin_token_path(config));
                Some(s)
            }
            None => None,
        };
        let auth = Authenticator {
            mode: config.auth.mode,
            hs: secret.map(|s| (EncodingKey::from_secret(&s), DecodingKey::from_secret(&s))),
            external,
            issuer: nonempty(&config.auth.issuer),
            audience: nonempty(&config.auth.audience),
            leeway: config.auth.leeway.as_secs(),
        };
        if let Some(path) = &admin_token {
            let token = auth.issue("admin", RoleSet::all(), config.auth.admin_token_ttl)?;
            write_private(path, format!("{token}\n").as_bytes())?;
        }
        Ok((auth, admin_token))
    }

    /// Authentication is off (`auth.mode = "none"`).
    pub fn disabled(&self) -> bool {
        self.mode == AuthMode::None
    }

    /// Mints an HS256 token with the server's secret.
    pub fn issue(&self, sub: &str, roles: RoleSet, ttl: Duration) -> Result<String, KeyError> {
        let (enc, _) = self
            .hs
            .as_ref()
            .ok_or_else(|| KeyError::Invalid("no HS256 secret to sign with".into()))?;
        if sub.is_empty() || sub.len() > MAX_PRINCIPAL_LEN || sub.chars().any(char::is_control) {
            return Err(KeyError::Invalid(format!(
                "sub must be 1-{MAX_PRINCIPAL_LEN} characters without control characters"
            )));
        }
        let now = now_secs();
        let claims = Claims {
            sub: sub.to_string(),
            roles: roles.names(),
            exp: now + ttl.as_secs(),
            iat: Some(now),
            nbf: Some(now),
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
        };
        jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, enc)
            .map_err(|e| KeyError::Invalid(format!("signing failed: {e}")))
    }

    /// Checks an `Authorization` header value.
    pub fn verify(&self, authorization: Option<&str>) -> Result<Identity, AuthFailure> {
        if self.disabled() {
            return Ok(Identity {
                principal: "anonymous".into(),
                roles: RoleSet::all(),
            });
        }
        let header = authorization.ok_or(AuthFailure::Missing)?;
        let (scheme, token) = header
            .trim()
            .split_once(' ')
            .ok_or(AuthFailure::Malformed)?;
        if !scheme.eq_ignore_ascii_case("bearer") {
            return Err(AuthFailure::Malformed);
        }
        self.verify_token(token.trim())
            .map(|(claims, roles)| Identity {
                principal: claims.sub,
                roles,
            })
    }

    /// Verifies a bare token; returns its claims and roles.
    pub fn verify_token(&self, token: &str) -> Result<(Claims, RoleSet), AuthFailure> {
        let header = read_header(token)?;
        let keys: Vec<&DecodingKey> = if header.alg == Algorithm::HS256 {
            self.hs.iter().map(|(_, d)| d).collect()
        } else {
            self.external
                .iter()
                .filter(|(a, _)| *a == header.alg)
                .map(|(_, k)| k)
                .collect()
        };
        if keys.is_empty() {
            return Err(AuthFailure::Algorithm);
        }
        let mut v = Validation::new(header.alg);
        v.leeway = self.leeway;
        v.validate_nbf = true;
        let mut required = vec!["exp", "sub"];
        match &self.issuer {
            Some(iss) => {
                v.set_issuer(&[iss]);
                required.push("iss");
            }
            None => v.iss = None,
        }
        match &self.audience {
            Some(aud) => {
                v.set_audience(&[aud]);
                required.push("aud");
            }
            None => v.validate_aud = false,
        }
        v.set_required_spec_claims(&required);
        let mut last = AuthFailure::Signature;
        for key in keys {
            match jsonwebtoken::decode::<Claims>(token, key, &v) {
                Ok(data) => return check_claims(data.claims),
                Err(e) => {
                    last = classify(e.kind());
                    if last != AuthFailure::Signature {
                        break; // the signature was fine; the claims were not
                    }
                }
            }
        }
        Err(last)
    }
}

/// The token's header, read once: base64url, then JSON. A header with a
/// `crit` member is refused (RFC 7515 §4.1.11: a recipient that does not
/// understand every extension it lists must refuse the token, and forgeline
/// understands none); jsonwebtoken's `Header` would drop the member, so it is
/// looked for in the JSON before the header is typed.
fn read_header(token: &str) -> Result<Header, AuthFailure> {
    use base64::Engine as _;
    let raw = token.split('.').next().unwrap_or_default();
    let json: serde_json::Value = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(raw)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or(AuthFailure::Malformed)?;
    if json.get("crit").is_some() {
        return Err(AuthFailure::Malformed);
    }
    serde_json::from_value(json).map_err(|_| AuthFailure::Malformed)
}

fn classify(kind: &ErrorKind) -> AuthFailure {
    match kind {
        ErrorKind::InvalidSignature => AuthFailure::Signature,
        ErrorKind::ExpiredSignature => AuthFailure::Expired,
        ErrorKind::ImmatureSignature => AuthFailure::NotYetValid,
        ErrorKind::InvalidIssuer => AuthFailure::Issuer,
        ErrorKind::InvalidAudience => AuthFailure::Audience,
        ErrorKind::InvalidAlgorithm
        | ErrorKind::InvalidAlgorithmName
        | ErrorKind::MissingAlgorithm => AuthFailure::Algorithm,
        ErrorKind::MissingRequiredClaim(_)
        | ErrorKind::InvalidClaimFormat(_)
        | ErrorKind::Json(_)
        | ErrorKind::InvalidSubject => AuthFailure::Claims,
        _ => AuthFailure::Malformed,
    }
}

fn check_claims(claims: Claims) -> Result<(Claims, RoleSet), AuthFailure> {
    if claims.sub.is_empty()
        || claims.sub.len() > MAX_PRINCIPAL_LEN
        || claims.sub.chars().any(char::is_control)
    {
        return Err(AuthFailure::Claims);
    }
    let mut roles = Vec::with_capacity(claims.roles.len());
    for r in &claims.roles {
        roles.push(Role::parse(r).ok_or(AuthFailure::UnknownRole)?);
    }
    Ok((claims.clone(), RoleSet::from_roles(&roles)))
}

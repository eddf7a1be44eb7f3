//! Secret redaction: the one module every sink uses (logs, events, stored step
//! output, error messages).
//!
//! Patterns are deliberately broad: a false positive costs a few characters of
//! a log line, a false negative leaks a credential. Each pattern keeps enough
//! context to say what was removed (`Bearer [REDACTED]`, `"password":
//! "[REDACTED]"`).

use std::borrow::Cow;
use std::sync::LazyLock;

use regex::{Regex, RegexSet};
use serde_json::Value;

/// What replaces a secret.
pub const MASK: &str = "[REDACTED]";

/// Key names whose values are secrets (matched case-insensitively, as a
/// whole key or as a suffix such as `db_password`, `x-api-key`).
pub const SECRET_KEYS: &[&str] = &[
    "password",
    "passwd",
    "secret",
    "token",
    "api_key",
    "apikey",
    "api-key",
    "access_key",
    "private_key",
    "client_secret",
    "authorization",
    "credentials",
];

struct Rule {
    name: &'static str,
    re: Regex,
    /// Replacement; `$k` keeps a captured prefix named `k`.
    with: &'static str,
}

fn rule(name: &'static str, pattern: &str, with: &'static str) -> Rule {
    Rule {
        name,
        re: Regex::new(pattern).expect("redaction pattern compiles"),
        with,
    }
}

/// A key naming a secret, with an optional opening quote (plain or escaped).
const KEY: &str = r#"(?i)(?:\\?["'])?[a-z0-9_.-]*(?:password|passwd|secret|token|api[_-]?key|access[_-]?key|private[_-]?key|credentials)"#;

static RULES: LazyLock<Vec<Rule>> = LazyLock::new(|| {
    // Replacements keep the quoting of what they replace, so a redacted JSON
    // document (or a JSON log line) stays valid JSON.
    vec![
        rule(
            "pem_private_key",
            r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----[\s\S]*?(?:-----END [A-Z0-9 ]*PRIVATE KEY-----|$)",
            "[REDACTED PRIVATE KEY]",
        ),
        rule(
            "authorization_header",
            r#"(?i)(?P<k>\bauthorization\\?"?\s*[:=]\s*\\?"?\s*(?:bearer|basic|token|digest)?\s*)[^\s,;"'\\]+"#,
            "${k}[REDACTED]",
        ),
        rule(
            "bearer",
            r"(?i)(?P<k>\bbearer\s+)[A-Za-z0-9\-._~+/]{8,}=*",
            "${k}[REDACTED]",
        ),
        rule(
            "jwt",
            r"\beyJ[A-Za-z0-9_-]{5,}\.eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*",
            "[REDACTED]",
        ),
        rule(
            "secret_field",
            &format!(r#"(?P<k>{KEY}\\"\s*[:=]\s*)\\"(?:[^"\\]|\\[^"])*\\""#),
            r#"${k}\"[REDACTED]\""#,
        ),
        rule(
            "secret_field",
            &format!(r#"(?P<k>{KEY}"?\s*[:=]\s*)"(?:[^"\\]|\\.)*""#),
            r#"${k}"[REDACTED]""#,
        ),
        rule(
            "secret_field",
            &format!(r#"(?P<k>{KEY}'?\s*[:=]\s*)'[^']*'"#),
            "${k}'[REDACTED]'",
        ),
        rule(
            "secret_field",
            &format!(r#"(?P<k>{KEY}["'\\]*\s*[:=]\s*)[^\s,;&}}\]"'\\\[][^\s,;&}}\]"'\\]*"#),
            "${k}[REDACTED]",
        ),
        rule(
            "aws_access_key_id",
            r"\b(?:AKIA|ASIA|AGPA|AIDA|AROA)[0-9A-Z]{16}\b",
            "[REDACTED]",
        ),
        rule(
            "github_token",
            r"\b(?:gh[pousr]_[A-Za-z0-9]{36,}|github_pat_[A-Za-z0-9_]{22,})\b",
            "[REDACTED]",
        ),
        rule(
            "gitlab_token",
            r"\bglpat-[A-Za-z0-9_-]{20,}\b",
            "[REDACTED]",
        ),
        rule(
            "slack_token",
            r"\bxox[abposr]-[A-Za-z0-9-]{10,}\b",
            "[REDACTED]",
        ),
        rule("google_api_key", r"\bAIza[0-9A-Za-z_-]{35}\b", "[REDACTED]"),
        rule(
            "stripe_key",
            r"\b(?:sk|rk)_(?:live|test)_[0-9A-Za-z]{16,}\b",
            "[REDACTED]",
        ),
        rule(
            "openai_key",
            r"\bsk-(?:proj-|ant-)?[A-Za-z0-9_-]{20,}\b",
            "[REDACTED]",
        ),
        rule(
            "url_credentials",
            r#"(?P<k>\b[a-z][a-z0-9+.-]*://[^/\s:@"]+:)[^/\s@"]+@"#,
            "${k}[REDACTED]@",
        ),
    ]
});

static ANY: LazyLock<RegexSet> =
    LazyLock::new(|| RegexSet::new(RULES.iter().map(|r| r.re.as_str())).expect("patterns compile"));

/// The names of the patterns, for docs and tests.
pub fn pattern_names() -> Vec<&'static str> {
    let mut names: Vec<&'static str> = RULES.iter().map(|r| r.name).collect();
    names.dedup();
    names
}

/// Removes every secret the patterns recognise from `text`.
pub fn redact(text: &str) -> Cow<'_, str> {
    if !ANY.is_match(text) {
        return Cow::Borrowed(text);
    }
    let mut out = text.to_string();
    for r in RULES.iter() {
        if r.re.is_match(&out) {
            out = r.re.replace_all(&out, r.with).into_owned();
        }
    }
    Cow::Owned(out)
}

/// The name of the first pattern that finds a secret in `text`, if any
/// (guardrails' `secret_scan`).
pub fn contains_secret(text: &str) -> Option<&'static str> {
    ANY.matches(text).iter().next().map(|i| RULES[i].name)
}

/// True when `key` names a secret (`password`, `GITHUB_TOKEN`, `x-api-key`…).
pub fn is_secret_key(key: &str) -> bool {
    let k = key.to_ascii_lowercase();
    SECRET_KEYS
        .iter()
        .any(|s| k == *s || k.ends_with(&format!("_{s}")) || k.ends_with(&format!("-{s}")))
}

/// Redacts a JSON value in place: string values under secret keys are masked,
/// and every string is passed through [`redact`].
pub fn redact_json(v: &mut Value) {
    match v {
        Value::String(s) => {
            if let Cow::Owned(r) = redact(s) {
                *s = r;
            }
        }
        Value::Array(a) => a.iter_mut().for_each(redact_json),
        Value::Object(m) => {
            for (k, v) in m.iter_mut() {
                // Only text can be a credential: a numeric `token` (a fencing
                // token, a token count) is left alone.
                if is_secret_key(k) && v.is_string() {
                    *v = Value::String(MASK.to_string());
                } else {
                    redact_json(v);
                }
            }
        }
        _ => {}
    }
}

/// One example per pattern: (pattern, text containing a secret, the secret).
/// The tests feed each through every sink; docs/security.md lists them.
pub const SAMPLES: &[(&str, &str, &str)] = &[
    ("pem_private_key", "key:\n-----BEGIN RSA PRIVATE KEY-----\nMIIEowIBAAKCAQEA7x\n-----END RSA PRIVATE KEY-----\n", "MIIEowIBAAKCAQEA7x"),
    ("authorization_header", "Authorization: Bearer abc.def.ghi-SECRET", "abc.def.ghi-SECRET"),
    ("bearer", "curl -H 'x: Bearer s3cr3tTOKENvalue'", "s3cr3tTOKENvalue"),
    ("jwt", "token was eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c ok", "SflKxwRJSMeKKF2QT4fwpMeJf36POk6yJV_adQssw5c"),
    ("secret_field", r#"{"user":"a","password":"hunter2"}"#, "hunter2"),
    ("secret_field", "DB_PASSWORD=hunter22 next", "hunter22"),
    ("secret_field", "api_key: 'k-123456'", "k-123456"),
    ("aws_access_key_id", "id AKIAIOSFODNN7EXAMPLE here", "AKIAIOSFODNN7EXAMPLE"),
    ("github_token", "push with ghp_abcdefghijklmnopqrstuvwxyz0123456789AB", "ghp_abcdefghijklmnopqrstuvwxyz0123456789AB"),
    ("gitlab_token", "glpat-abcdefghij0123456789", "glpat-abcdefghij0123456789"),
    ("slack_token", "xoxb-1234567890-abcdefghij", "xoxb-1234567890-abcdefghij"),
    ("google_api_key", "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234", "AIzaSyA-abcdefghijklmnopqrstuvwxyz01234"),
    ("stripe_key", "sk_live_abcdefghijklmnop1234", "sk_live_abcdefghijklmnop1234"),
    ("openai_key", "OPENAI sk-proj-abcdefghijklmnopqrstuvwx", "sk-proj-abcdefghijklmnopqrstuvwx"),
    ("url_credentials", "git clone https://bob:pa55word@github.com/x/y", "pa55word"),
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pattern_has_a_sample_and_removes_it() {
        for name in pattern_names() {
            assert!(
                SAMPLES.iter().any(|(n, _, _)| *n == name),
                "no sample for {name}"
            );
        }
        for (name, text, secret) in SAMPLES {
            let out = redact(text);
            assert!(!out.contains(secret), "{name}: {out}");
            assert!(out.contains("REDACTED"), "{name}: {out}");
        }
    }

    #[test]
    fn redacted_json_and_json_log_lines_stay_valid_json() {
        let cases = [
            r#"{"user":"a","password":"hun\"ter2","n":1}"#,
            r#"{"message":"login with password=hunter2 ok","level":"INFO"}"#,
            r#"{"message":"sent {\"api_key\":\"k-12345\"} upstream"}"#,
            r#"{"message":"header Authorization: Bearer abcdef123456","x":"y"}"#,
            r#"{"token":"abc","tokens":5}"#,
        ];
        for c in cases {
            let out = redact(c);
            assert!(out.contains("REDACTED"), "{c} -> {out}");
            let v: serde_json::Value =
                serde_json::from_str(&out).unwrap_or_else(|e| panic!("{c} -> {out}: {e}"));
            assert!(
                !v.to_string().contains("hunter2")
                    && !v.to_string().contains("k-12345")
                    && !v.to_string().contains("abcdef123456"),
                "{out}"
            );
        }
    }

    #[test]
    fn redacting_twice_changes_nothing_more() {
        for (name, text, _) in SAMPLES {
            let once = redact(text).into_owned();
            assert_eq!(redact(&once), once, "{name}");
        }
    }

    #[test]
    fn ordinary_text_is_left_alone() {
        for text in [
            "cargo build --release",
            "exit status 3",
            "tokens: 1200 prompt",
            "the password field is empty",
        ] {
            assert!(matches!(redact(text), Cow::Borrowed(_)), "{text}");
        }
    }

    #[test]
    fn json_values_under_secret_keys_are_masked() {
        let mut v = serde_json::json!({"user": "a", "password": "x", "nested": [{"GITHUB_TOKEN": "y", "note": "Bearer zzzzzzzz"}], "max_tokens": null});
        redact_json(&mut v);
        assert_eq!(v["password"], MASK);
        assert_eq!(v["nested"][0]["GITHUB_TOKEN"], MASK);
        assert_eq!(v["nested"][0]["note"], "Bearer [REDACTED]");
        assert_eq!(v["user"], "a");
    }
}

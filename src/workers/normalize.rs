//! Worker payloads in the shapes agents send today, normalised to one form.
//!
//! Accepted: snake_case keys (`tool_name`), camelCase keys (`toolName`), and
//! either of those nested under `event_data`/`eventData` beside the type. The
//! type may be spelled `tool_invoked`, `toolInvoked` or `tool-invoked`, under
//! `type`, `event`, `event_type` or `eventType`. Anything else is a 422 that
//! says what was wrong; nothing is guessed.
//!
//! This file holds what both payload kinds share: flattening the accepted
//! shapes into one snake_case map and taking typed fields out of it.

use serde_json::{Map, Value};

/// A normalisation failure (422), naming the offending key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ShapeError {
    /// The canonical key at fault, when one is.
    pub field: Option<String>,
    /// What was wrong.
    pub message: String,
}

/// A `ShapeError` blaming the canonical key `field`.
pub(super) fn err(field: &str, message: impl Into<String>) -> ShapeError {
    ShapeError {
        field: Some(field.to_string()),
        message: message.into(),
    }
}

/// Longest string accepted in a named field (output tails are exempt: they
/// are cut to their own limit instead).
pub const MAX_FIELD_LEN: usize = 512;

/// `fooBar` → `foo_bar`; `foo-bar` → `foo_bar`; snake_case is unchanged.
pub fn snake_case(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 4);
    for (i, c) in s.chars().enumerate() {
        if c.is_ascii_uppercase() {
            if i > 0 && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
        } else if c == '-' {
            out.push('_');
        } else {
            out.push(c);
        }
    }
    out
}

/// Flattens the accepted shapes into one map with snake_case keys.
pub(super) fn flatten(value: &Value) -> Result<Map<String, Value>, ShapeError> {
    let Value::Object(top) = value else {
        return Err(ShapeError {
            field: None,
            message: "expected a JSON object".into(),
        });
    };
    let mut out = Map::new();
    let add = |k: &str, v: &Value, out: &mut Map<String, Value>| -> Result<(), ShapeError> {
        let key = snake_case(k);
        match out.get(&key) {
            Some(prev) if prev != v => Err(err(
                &key,
                format!(
                    "{key:?} is given twice with different values (as {k:?} and another spelling)"
                ),
            )),
            _ => {
                out.insert(key, v.clone());
                Ok(())
            }
        }
    };
    for (k, v) in top {
        if k == "event_data" || k == "eventData" {
            continue;
        }
        add(k, v, &mut out)?;
    }
    let nested = match (top.get("event_data"), top.get("eventData")) {
        (Some(_), Some(_)) => {
            return Err(err("event_data", "give event_data or eventData, not both"))
        }
        (Some(n), None) | (None, Some(n)) => Some(n),
        (None, None) => None,
    };
    if let Some(n) = nested {
        let Value::Object(inner) = n else {
            return Err(err("event_data", "event_data must be a JSON object"));
        };
        for (k, v) in inner {
            add(k, v, &mut out)?;
        }
    }
    Ok(out)
}

/// Removes every spelling in `names` (one field, canonical name first) and
/// returns its string; spellings given together must agree. Null counts as
/// absent.
pub(super) fn take_str(
    m: &mut Map<String, Value>,
    names: &[&str],
) -> Result<Option<String>, ShapeError> {
    let mut found: Option<(String, String)> = None;
    for n in names {
        match m.remove(*n) {
            None | Some(Value::Null) => {}
            Some(Value::String(s)) => {
                if s.len() > MAX_FIELD_LEN && *n != "output_tail" && *n != "output" {
                    return Err(err(n, format!("{n} is longer than {MAX_FIELD_LEN} bytes")));
                }
                if let Some((prev_name, prev)) = &found {
                    if prev != &s {
                        return Err(err(n, format!("{n} and {prev_name} disagree")));
                    }
                }
                found = Some((n.to_string(), s));
            }
            Some(_) => return Err(err(n, format!("{n} must be a string"))),
        }
    }
    Ok(found.map(|(_, s)| s))
}

/// Removes `name` as a non-negative integer (a float without a fraction,
/// such as `12.0`, is accepted). Null counts as absent.
pub(super) fn take_u64(m: &mut Map<String, Value>, name: &str) -> Result<Option<u64>, ShapeError> {
    match m.remove(name) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .or_else(|| {
                n.as_f64()
                    .filter(|f| *f >= 0.0 && f.fract() == 0.0)
                    .map(|f| f as u64)
            })
            .map(Some)
            .ok_or_else(|| err(name, format!("{name} must be a non-negative integer"))),
        Some(_) => Err(err(name, format!("{name} must be a non-negative integer"))),
    }
}

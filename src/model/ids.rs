//! Identifiers and names, validated when they are constructed.

use std::fmt;

use serde::{Deserialize, Serialize};

/// A name or id that failed validation; the message says what is accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidName(pub String);

macro_rules! ulid_id {
    ($(#[$doc:meta])* $name:ident, $what:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, ::serde::Serialize, ::serde::Deserialize)]
        pub struct $name(::ulid::Ulid);

        impl $name {
            /// Wraps a freshly generated ULID.
            pub fn from_ulid(u: ::ulid::Ulid) -> Self {
                $name(u)
            }
            /// Parses the 26-character Crockford base32 form.
            pub fn parse(s: &str) -> Result<Self, $crate::model::InvalidName> {
                ::ulid::Ulid::from_string(s).map($name).map_err(|_| {
                    $crate::model::InvalidName(format!("{s:?} is not a {} (a 26-character ULID)", $what))
                })
            }
            /// Big-endian bytes, as used in store keys.
            pub fn to_bytes(self) -> [u8; 16] {
                self.0.to_bytes()
            }
            /// Inverse of `to_bytes`.
            pub fn from_bytes(b: [u8; 16]) -> Self {
                $name(::ulid::Ulid::from_bytes(b))
            }
            /// Milliseconds since the epoch at which the id was made.
            pub fn timestamp_ms(self) -> u64 {
                self.0.timestamp_ms()
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                self.0.fmt(f)
            }
        }

        impl ::std::str::FromStr for $name {
            type Err = $crate::model::InvalidName;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Self::parse(s)
            }
        }
    };
}

pub(crate) use ulid_id;

ulid_id!(
    /// A task's id.
    TaskId,
    "task id"
);
ulid_id!(
    /// One attempt (run) of a task.
    RunId,
    "run id"
);
ulid_id!(
    /// One lease granted to a worker.
    LeaseId,
    "lease id"
);

fn check_name(s: &str, what: &str, max: usize, extra: &[char]) -> Result<(), InvalidName> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || extra.contains(&c);
    let first_ok = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric());
    if s.is_empty() || s.len() > max || !first_ok || !s.chars().all(ok_char) {
        let extras: String = extra.iter().collect();
        return Err(InvalidName(format!(
            "{s:?} is not a valid {what}: use 1-{max} characters from [A-Za-z0-9{extras}], starting with a letter or digit"
        )));
    }
    Ok(())
}

macro_rules! name_type {
    ($(#[$doc:meta])* $name:ident, $what:literal, $max:expr, $extra:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        pub struct $name(String);

        impl $name {
            /// Longest accepted name.
            pub const MAX_LEN: usize = $max;
            /// Validates and wraps a name.
            pub fn parse(s: &str) -> Result<Self, InvalidName> {
                check_name(s, $what, $max, $extra)?;
                Ok($name(s.to_string()))
            }
            /// The name as given (validated, not normalised).
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }
    };
}

name_type!(
    /// A queue name: `[A-Za-z0-9_.-]`, at most 64 characters.
    QueueName,
    "queue name",
    64,
    &['_', '.', '-']
);
name_type!(
    /// A step name: `[A-Za-z0-9_.:-]`, at most 64 characters.
    StepName,
    "step name",
    64,
    &['_', '.', ':', '-']
);
name_type!(
    /// A worker's self-chosen id: `[A-Za-z0-9_.:@-]`, at most 128 characters
    /// (no `/`: it appears as a path segment).
    WorkerId,
    "worker id",
    128,
    &['_', '.', ':', '@', '-']
);

#[cfg(test)]
mod tests {
    use super::*;
    use ulid::Ulid;

    #[test]
    fn queue_names_are_checked() {
        for ok in ["default", "agents.high", "ci-2", "Q_1"] {
            QueueName::parse(ok).unwrap();
        }
        for bad in ["", "-x", "has space", "a/b", "é", &"x".repeat(65), "nul\0"] {
            assert!(QueueName::parse(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn ids_round_trip_through_bytes_and_text() {
        let id = TaskId::from_ulid(Ulid::new());
        assert_eq!(TaskId::from_bytes(id.to_bytes()), id);
        assert_eq!(TaskId::parse(&id.to_string()).unwrap(), id);
        let err = TaskId::parse("nope").unwrap_err();
        assert!(err.0.contains("26-character"));
    }
}

//! Versioned record encoding: one format-version byte, then a bincode body.
//!
//! The version byte lets a newer forgeline read records an older one wrote:
//! `Record::decode_old` converts a body of an earlier version. Fixtures written
//! by each released version live in tests/data/ and a test opens them.

use serde::de::DeserializeOwned;
use serde::Serialize;

/// A value kept in the store.
pub trait Record: Serialize + DeserializeOwned {
    /// The format version written in front of new records of this type.
    const VERSION: u8;

    /// Decodes a body written with an earlier `version`.
    fn decode_old(version: u8, _body: &[u8]) -> Result<Self, CodecError> {
        Err(CodecError::UnknownVersion(version))
    }
}

/// A record that cannot be encoded or decoded.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The stored value is empty.
    #[error("empty record")]
    Empty,
    /// A version this build does not know (written by a newer forgeline?).
    #[error("unknown record format version {0}")]
    UnknownVersion(u8),
    /// The body does not decode.
    #[error("record body does not decode: {0}")]
    Decode(#[from] bincode::error::DecodeError),
    /// The value does not encode.
    #[error("record does not encode: {0}")]
    Encode(#[from] bincode::error::EncodeError),
}

fn config() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Encodes `record` as `[VERSION][bincode body]`.
pub fn encode<R: Record>(record: &R) -> Result<Vec<u8>, CodecError> {
    let mut out = Vec::with_capacity(64);
    out.push(R::VERSION);
    bincode::serde::encode_into_std_write(record, &mut out, config())?;
    Ok(out)
}

/// Decodes a value written by [`encode`] (or an older version of it).
pub fn decode<R: Record>(bytes: &[u8]) -> Result<R, CodecError> {
    let (&version, body) = bytes.split_first().ok_or(CodecError::Empty)?;
    if version == R::VERSION {
        let (value, _) = bincode::serde::decode_from_slice(body, config())?;
        Ok(value)
    } else {
        R::decode_old(version, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct V2 {
        a: u32,
        b: String,
    }
    #[derive(Serialize, Deserialize)]
    struct V1 {
        a: u32,
    }
    impl Record for V2 {
        const VERSION: u8 = 2;
        fn decode_old(version: u8, body: &[u8]) -> Result<Self, CodecError> {
            match version {
                1 => {
                    let (v1, _): (V1, _) = bincode::serde::decode_from_slice(body, config())?;
                    Ok(V2 {
                        a: v1.a,
                        b: String::new(),
                    })
                }
                v => Err(CodecError::UnknownVersion(v)),
            }
        }
    }

    #[test]
    fn version_byte_leads_and_round_trips() {
        let v = V2 {
            a: 7,
            b: "x".into(),
        };
        let bytes = encode(&v).unwrap();
        assert_eq!(bytes[0], 2);
        assert_eq!(decode::<V2>(&bytes).unwrap(), v);
    }

    #[test]
    fn older_versions_go_through_decode_old() {
        let mut old = vec![1u8];
        old.extend(bincode::serde::encode_to_vec(V1 { a: 9 }, config()).unwrap());
        assert_eq!(
            decode::<V2>(&old).unwrap(),
            V2 {
                a: 9,
                b: String::new()
            }
        );
        assert!(matches!(
            decode::<V2>(&[9, 0]),
            Err(CodecError::UnknownVersion(9))
        ));
        assert!(matches!(decode::<V2>(&[]), Err(CodecError::Empty)));
    }
}

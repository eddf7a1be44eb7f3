//! Request bodies and query strings: size limits before parsing, and parse
//! errors that say what was wrong (400 malformed, 422 invalid).

use bytes::{Buf, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::de::DeserializeOwned;
use warp::http::StatusCode;
use warp::Filter;

use super::error::ApiError;

/// A body read within the limit, or the error to answer with.
pub type BodyResult = Result<Bytes, ApiError>;

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "too_large",
        format!("request body exceeds {limit} bytes (server.max_body_bytes)"),
    )
}

/// Reads a body, refusing (413) anything over `limit` bytes: by the
/// Content-Length header before reading, and by counting while reading (for
/// chunked bodies).
pub async fn read_limited<S, B>(content_length: Option<u64>, stream: S, limit: usize) -> BodyResult
where
    S: Stream<Item = Result<B, warp::Error>>,
    B: Buf,
{
    if content_length.is_some_and(|l| l > limit as u64) {
        return Err(too_large(limit));
    }
    let mut stream = std::pin::pin!(stream);
    let mut out = BytesMut::new();
    while let Some(chunk) = stream.next().await {
        let mut chunk =
            chunk.map_err(|e| ApiError::bad_request(format!("reading the body: {e}")))?;
        if out.len() + chunk.remaining() > limit {
            return Err(too_large(limit));
        }
        while chunk.has_remaining() {
            let c = chunk.chunk();
            out.extend_from_slice(c);
            let n = c.len();
            chunk.advance(n);
        }
    }
    Ok(out.freeze())
}

/// Parses a JSON body: syntax errors are 400, wrong types or fields 422.
pub fn parse_json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    if body.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "malformed_json",
            "the request body is empty; a JSON object is expected",
        ));
    }
    // serde_json keeps the last of two equal keys; docs/api.md promises a
    // 422 instead (`{"status":"busy","status":"idle"}` means nothing), so the
    // body is walked once for duplicates before it is read.
    serde_json::from_slice::<UniqueKeys>(body)
        .and_then(|_| serde_json::from_slice(body))
        .map_err(|e| {
            use serde_json::error::Category;
            match e.classify() {
                Category::Data => {
                    ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid", e.to_string())
                }
                Category::Syntax | Category::Eof | Category::Io => ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "malformed_json",
                    format!("malformed JSON: {e}"),
                ),
            }
        })
}

/// A JSON document with no object holding the same key twice, at any depth
/// (deserialising it checks that and keeps nothing).
struct UniqueKeys;

impl<'de> serde::Deserialize<'de> for UniqueKeys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(UniqueKeysVisitor)
    }
}

struct UniqueKeysVisitor;

impl<'de> serde::de::Visitor<'de> for UniqueKeysVisitor {
    type Value = UniqueKeys;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("any JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_i64<E>(self, _: i64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_u64<E>(self, _: u64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_f64<E>(self, _: f64) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_str<E>(self, _: &str) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_unit<E>(self) -> Result<UniqueKeys, E> {
        Ok(UniqueKeys)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<UniqueKeys, A::Error> {
        while seq.next_element::<UniqueKeys>()?.is_some() {}
        Ok(UniqueKeys)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<UniqueKeys, A::Error> {
        let mut seen = std::collections::HashSet::new();
        while let Some(key) = map.next_key::<String>()? {
            if !seen.insert(key.clone()) {
                return Err(serde::de::Error::custom(format!(
                    "duplicate key {key:?} in a JSON object"
                )));
            }
            map.next_value::<UniqueKeys>()?;
        }
        Ok(UniqueKeys)
    }
}

/// Parses a JSON body that may be empty (then `T::default()`).
pub fn parse_json_or_default<T: DeserializeOwned + Default>(body: &[u8]) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    parse_json(body)
}

/// The raw query string ("" when absent).
pub fn raw_query() -> impl Filter<Extract = (String,), Error = std::convert::Infallible> + Clone {
    warp::query::raw().or(warp::any().map(String::new)).unify()
}

/// Decoded `key=value` pairs of a query string, in order (keys may repeat).
pub fn query_pairs(raw: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(raw.as_bytes())
        .into_owned()
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn syntax_errors_are_400_and_type_errors_422() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u8,
        }
        assert_eq!(
            parse_json::<T>(b"{\"n\":").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            parse_json::<T>(b"").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        let e = parse_json::<T>(b"{\"n\":\"x\"}").unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(e.message.contains("invalid type"), "{}", e.message);
    }

    #[test]
    fn duplicate_keys_at_any_depth_are_422() {
        let e =
            parse_json::<serde_json::Value>(br#"{"status":"busy","status":"idle"}"#).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        assert!(
            e.message.contains("duplicate key \"status\""),
            "{}",
            e.message
        );
        let nested = br#"{"payload":{"a":[{"k":1,"k":2}]}}"#;
        assert_eq!(
            parse_json::<serde_json::Value>(nested).unwrap_err().status,
            StatusCode::UNPROCESSABLE_ENTITY
        );
        let fine = br#"{"a":{"k":1},"b":{"k":2},"c":[{"k":1},{"k":1}]}"#;
        assert!(parse_json::<serde_json::Value>(fine).is_ok());
    }

    #[test]
    fn query_pairs_decode_and_keep_repeats() {
        let p = query_pairs("label=a%3Ab&label=c:d&x=1+2");
        assert_eq!(p[0], ("label".into(), "a:b".into()));
        assert_eq!(p[1], ("label".into(), "c:d".into()));
        assert_eq!(p[2], ("x".into(), "1 2".into()));
    }
}

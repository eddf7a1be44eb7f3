//! Typed access to query parameters, with 400s that name the parameter.

use std::time::Duration;

use super::body::query_pairs;
use super::error::ApiError;

/// Parsed query parameters.
#[derive(Debug, Default, Clone)]
pub struct Query {
    pairs: Vec<(String, String)>,
}

impl Query {
    /// Parses a raw query string.
    pub fn parse(raw: &str) -> Query {
        Query {
            pairs: query_pairs(raw),
        }
    }

    /// The first value of `key`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `key`.
    pub fn all(&self, key: &str) -> Vec<&str> {
        self.pairs
            .iter()
            .filter(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// Refuses parameters outside `known`, so typos are not silently ignored.
    pub fn only(&self, known: &[&str]) -> Result<(), ApiError> {
        match self
            .pairs
            .iter()
            .find(|(k, _)| !known.contains(&k.as_str()))
        {
            Some((k, _)) => Err(ApiError::bad_request(format!(
                "unknown query parameter {k:?}; accepted: {}",
                known.join(", ")
            ))),
            None => Ok(()),
        }
    }

    /// An integer in `1..=max`, or `default` when absent.
    pub fn bounded(&self, key: &str, default: usize, max: usize) -> Result<usize, ApiError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=max).contains(&n) => Ok(n),
                _ => Err(ApiError::bad_request(format!(
                    "{key} must be an integer from 1 to {max}, got {v:?}"
                ))),
            },
        }
    }

    /// An optional integer in `1..=max`.
    pub fn optional_bounded(&self, key: &str, max: usize) -> Result<Option<usize>, ApiError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.bounded(key, 0, max).map(Some),
        }
    }

    /// A duration such as `500ms`, `5s`, `2m` (a bare number is seconds).
    pub fn duration(&self, key: &str, max: Duration) -> Result<Option<Duration>, ApiError> {
        let Some(v) = self.get(key) else {
            return Ok(None);
        };
        let d = match v.parse::<u64>() {
            Ok(secs) => Ok(Duration::from_secs(secs)),
            Err(_) => humantime::parse_duration(v),
        }
        .map_err(|_| {
            ApiError::bad_request(format!(
                "{key} must be a duration such as 500ms or 5s, got {v:?}"
            ))
        })?;
        if d.is_zero() || d > max {
            return Err(ApiError::bad_request(format!(
                "{key} must be above 0 and at most {}",
                humantime::format_duration(max)
            )));
        }
        Ok(Some(d))
    }
}

/// For routes that take no query parameters: any given is a 400.
pub fn no_query(
) -> impl warp::Filter<Extract = (Result<(), ApiError>,), Error = std::convert::Infallible> + Clone
{
    use warp::Filter;
    super::body::raw_query().map(|q: String| Query::parse(&q).only(&[]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bounds_and_unknown_keys_are_enforced() {
        let q = Query::parse("limit=5&events=0&idle_timeout=250ms&typo=1");
        assert_eq!(q.bounded("limit", 10, 100).unwrap(), 5);
        assert!(q.bounded("events", 10, 100).is_err());
        assert_eq!(
            q.duration("idle_timeout", Duration::from_secs(60)).unwrap(),
            Some(Duration::from_millis(250))
        );
        assert!(q.only(&["limit", "events", "idle_timeout"]).is_err());
        assert_eq!(Query::parse("").bounded("limit", 10, 100).unwrap(), 10);
    }
}

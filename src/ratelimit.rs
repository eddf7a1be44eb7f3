//! Token buckets per (principal, route class), kept in the store.
//!
//! Each check is one atomic read-modify-write of a 17-byte bucket state
//! (`Store::update_bucket`), so concurrent requests of one principal cannot
//! both take the last token. The update happens in memory; the store's commit
//! thread persists changed buckets to the `ratelimit` tree at every commit
//! round and at least every half second, so a request never waits on the disk
//! for its rate limit. After a crash a principal may therefore get back at
//! most the tokens it spent in the last half second or so; a clean restart
//! loses nothing (the store persists them at shutdown). No one gets a fresh
//! burst.

use std::sync::Arc;

use crate::auth::RateClass;
use crate::clock::{Clock, Millis};
use crate::config::{Bucket, RateLimitConfig};
use crate::store::{Store, StoreError};

/// The outcome of one check, with what the `X-RateLimit-*` headers say.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Decision {
    /// The request may proceed.
    pub allowed: bool,
    /// The bucket's capacity (`X-RateLimit-Limit`).
    pub limit: u32,
    /// Whole tokens left (`X-RateLimit-Remaining`).
    pub remaining: u32,
    /// Seconds until the bucket is full again (`X-RateLimit-Reset`).
    pub reset_secs: u64,
    /// Seconds until one token is available (`Retry-After` when refused).
    pub retry_after_secs: u64,
}

/// Bucket state: tokens (f64), last refill (ms), last decision (1 = allowed).
const STATE_LEN: usize = 17;

fn decode(v: &[u8]) -> Option<(f64, Millis, bool)> {
    if v.len() != STATE_LEN {
        return None;
    }
    let tokens = f64::from_be_bytes(v[0..8].try_into().ok()?);
    let at = u64::from_be_bytes(v[8..16].try_into().ok()?);
    Some((tokens, at, v[16] == 1))
}

fn encode(tokens: f64, at: Millis, allowed: bool) -> Vec<u8> {
    let mut v = Vec::with_capacity(STATE_LEN);
    v.extend_from_slice(&tokens.to_be_bytes());
    v.extend_from_slice(&at.to_be_bytes());
    v.push(allowed as u8);
    v
}

/// Refills the bucket to `now` and takes one token if there is one.
pub fn take(prev: Option<&[u8]>, b: Bucket, now: Millis) -> Vec<u8> {
    let burst = b.burst as f64;
    let (tokens, at) = match prev.and_then(decode) {
        Some((t, at, _)) => {
            let elapsed = now.saturating_sub(at) as f64 / 1000.0;
            ((t + elapsed * b.rate).min(burst), now.max(at))
        }
        None => (burst, now),
    };
    if tokens >= 1.0 {
        encode(tokens - 1.0, at, true)
    } else {
        encode(tokens, at, false)
    }
}

/// Checks requests against the configured buckets.
pub struct RateLimiter {
    store: Store,
    config: RateLimitConfig,
    clock: Arc<dyn Clock>,
}

impl std::fmt::Debug for RateLimiter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("enabled", &self.config.enabled)
            .finish()
    }
}

impl RateLimiter {
    /// A limiter over the store's `ratelimit` tree.
    pub fn new(store: Store, config: RateLimitConfig, clock: Arc<dyn Clock>) -> RateLimiter {
        RateLimiter {
            store,
            config,
            clock,
        }
    }

    /// The bucket of a class.
    pub fn bucket(&self, class: RateClass) -> Bucket {
        match class {
            RateClass::Submit => self.config.submit,
            RateClass::Worker => self.config.worker,
            RateClass::ReviewAction => self.config.review_action,
            RateClass::Read => self.config.read,
        }
    }

    /// Limits are on.
    pub fn enabled(&self) -> bool {
        self.config.enabled
    }

    /// Takes a token for `principal` in `class`, or says when to come back.
    pub fn check(&self, principal: &str, class: RateClass) -> Result<Decision, StoreError> {
        let b = self.bucket(class);
        let now = self.clock.now_ms();
        let mut key = Vec::with_capacity(1 + principal.len());
        key.push(class.code());
        key.extend_from_slice(principal.as_bytes());
        let state = self
            .store
            .update_bucket(&key, |prev| Some(take(prev, b, now)))?;
        let (tokens, _, allowed) = state
            .as_deref()
            .and_then(decode)
            .unwrap_or((0.0, now, false));
        let missing_to_full = (b.burst as f64 - tokens).max(0.0);
        Ok(Decision {
            allowed,
            limit: b.burst,
            remaining: tokens.floor().max(0.0) as u32,
            reset_secs: (missing_to_full / b.rate).ceil() as u64,
            retry_after_secs: ((1.0 - tokens).max(0.0) / b.rate).ceil().max(1.0) as u64,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bucket_allows_its_burst_then_refills_at_its_rate() {
        let b = Bucket {
            rate: 2.0,
            burst: 3,
        };
        let mut state: Option<Vec<u8>> = None;
        let mut allowed = 0;
        for _ in 0..5 {
            let next = take(state.as_deref(), b, 1_000);
            allowed += decode(&next).unwrap().2 as u32;
            state = Some(next);
        }
        assert_eq!(allowed, 3, "the burst");
        // 1.5 s later, 3 tokens have dripped back (capped at the burst).
        let next = take(state.as_deref(), b, 2_500);
        let (tokens, _, ok) = decode(&next).unwrap();
        assert!(ok);
        assert!((tokens - 2.0).abs() < 1e-9, "{tokens}");
    }

    #[test]
    fn the_clock_going_back_never_mints_tokens() {
        let b = Bucket {
            rate: 1.0,
            burst: 1,
        };
        let s1 = take(None, b, 10_000);
        let s2 = take(Some(&s1), b, 5_000);
        assert!(!decode(&s2).unwrap().2);
    }
}

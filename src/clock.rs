//! Wall-clock time as stored (milliseconds since the Unix epoch), and a clock
//! that tests can drive.
//!
//! Deadlines, `eligible_at` and event times are wall-clock milliseconds because
//! they outlive the process; every component reads time through [`Clock`] so
//! that the reaper and the scheduler can be run by hand in tests.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch.
pub type Millis = u64;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// Now, in milliseconds since the epoch.
    fn now_ms(&self) -> Millis;
}

/// The system clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now_ms(&self) -> Millis {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as Millis)
            .unwrap_or(0)
    }
}

/// A clock that only moves when told to (tests).
#[derive(Debug)]
pub struct ManualClock(AtomicU64);

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Millis) -> Self {
        ManualClock(AtomicU64::new(start))
    }
    /// Moves the clock forward.
    pub fn advance(&self, by: Duration) {
        self.0.fetch_add(by.as_millis() as u64, Ordering::SeqCst);
    }
    /// Sets the clock.
    pub fn set(&self, to: Millis) {
        self.0.store(to, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now_ms(&self) -> Millis {
        self.0.load(Ordering::SeqCst)
    }
}

/// The latest time forgeline keeps: 9999-12-31T23:59:59.999Z. RFC 3339 has
/// four-digit years, so no later time could be written back out; inputs past
/// it are refused where they enter (a 422 naming the field).
pub const MAX_MILLIS: Millis = 253_402_300_799_999;

/// RFC 3339 in UTC with milliseconds, the one format times leave the server in.
/// Times past [`MAX_MILLIS`] cannot enter (the parsers refuse them); were one
/// stored anyway, it is shown as `MAX_MILLIS` rather than failing the write
/// that formats it.
pub fn format_rfc3339(ms: Millis) -> String {
    let ms = ms.min(MAX_MILLIS);
    humantime::format_rfc3339_millis(UNIX_EPOCH + Duration::from_millis(ms)).to_string()
}

/// Parses an RFC 3339 timestamp with any offset; `None` when it is not one,
/// or when it falls outside 1970-01-01 to 9999-12-31 in UTC (a time written
/// as year 9999 with a negative offset can be year 10000 in UTC).
pub fn parse_rfc3339(s: &str) -> Option<Millis> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    let ms = t.unix_timestamp_nanos() / 1_000_000;
    u64::try_from(ms).ok().filter(|&ms| ms <= MAX_MILLIS)
}

/// `now + by`, or `None` past [`MAX_MILLIS`] (a delay of thousands of years).
pub fn after(now: Millis, by: Duration) -> Option<Millis> {
    u64::try_from(by.as_millis())
        .ok()
        .and_then(|d| now.checked_add(d))
        .filter(|&t| t <= MAX_MILLIS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trips_with_millis() {
        let ms = 1_795_000_000_123;
        let s = format_rfc3339(ms);
        assert!(s.ends_with(".123Z"), "{s}");
        assert_eq!(parse_rfc3339(&s), Some(ms));
        assert_eq!(
            parse_rfc3339("2026-11-22T12:00:00+02:00"),
            parse_rfc3339("2026-11-22T10:00:00Z")
        );
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn times_past_year_9999_are_refused_and_never_panic() {
        assert_eq!(format_rfc3339(MAX_MILLIS), "9999-12-31T23:59:59.999Z");
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59.999Z"), Some(MAX_MILLIS));
        // Year 9999 at -12:00 is year 10000 in UTC.
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59-12:00"), None);
        assert_eq!(format_rfc3339(u64::MAX), "9999-12-31T23:59:59.999Z");
        assert_eq!(
            after(1_000, Duration::from_secs(9_000 * 365 * 86_400)),
            None
        );
        assert_eq!(after(u64::MAX, Duration::from_millis(1)), None);
        assert_eq!(after(1_000, Duration::from_millis(5)), Some(1_005));
    }
}

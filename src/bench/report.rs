//! What a bench run measured, and its two renderings: a table for people and
//! JSON (`forgeline.bench.v1`) for scripts.

use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

/// Latency percentiles of one measurement, in milliseconds.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Latency {
    /// Median, in ms.
    pub p50_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// The slowest sample, in ms.
    pub max_ms: f64,
}

impl Latency {
    /// Percentiles of `samples` (nearest rank); `None` when there are none.
    pub fn of(samples: &mut [Duration]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let rank = |q: f64| {
            // Nearest rank: the smallest sample with at least q of them at or below it.
            let i = ((q * samples.len() as f64).ceil() as usize).clamp(1, samples.len()) - 1;
            ms(samples[i])
        };
        Some(Latency {
            p50_ms: rank(0.50),
            p99_ms: rank(0.99),
            max_ms: ms(*samples.last().expect("not empty")),
        })
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// One row of the report.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Measurement {
    /// Stable identifier (`submit`, `e2e`, `e2e_batched`, `pickup`,
    /// `health_live`, `bare_warp`).
    pub name: &'static str,
    /// What was measured, for the table.
    pub title: String,
    /// Concurrent clients (for `e2e`: submitters; `workers` holds the lessees).
    pub clients: usize,
    /// Lessees, for measurements that run workers.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workers: Option<usize>,
    /// Operations completed (requests, or tasks for `e2e`).
    pub count: u64,
    /// Wall time of the measurement.
    pub seconds: f64,
    /// Operations per second (`count / seconds`); absent for latency-only rows.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub per_second: Option<f64>,
    /// Per-operation latency.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency: Option<Latency>,
}

/// The server a run measured.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct TargetInfo {
    /// Base URL.
    pub url: String,
    /// Whether the bench started the server itself (in a temporary directory).
    pub spawned: bool,
    /// `sync` or `relaxed`, as the server's `/health/ready` reports it.
    pub durability: String,
    /// Tasks waiting on `bench-backlog` when the run began, as the server's
    /// `/metrics` counts them: the `--stored` preload (`None` when
    /// `/metrics` could not be read).
    pub stored_tasks: Option<u64>,
    /// The server's version, from `forgeline_build_info`.
    pub version: Option<String>,
}

/// A whole run.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// Always `forgeline.bench.v1`.
    pub schema: &'static str,
    /// The server measured: URL, spawned or not, durability, stored tasks.
    pub target: TargetInfo,
    /// CPUs the bench process could use (clients and a spawned server share them).
    pub cpus: usize,
    /// Tasks per throughput measurement (`--tasks`).
    pub tasks: u64,
    /// From spawning the server to its first `200` on `/health/ready` (spawned only).
    pub start_to_ready_ms: Option<f64>,
    /// The server's resident memory once ready, before any load (spawned only).
    pub idle_rss_bytes: Option<u64>,
    /// The server's peak resident memory: the kernel's high-water mark for a
    /// spawned server, the largest `process_resident_memory_bytes` scraped
    /// during the run otherwise.
    pub peak_rss_bytes: Option<u64>,
    /// How `peak_rss_bytes` was obtained (`VmHWM` or `scraped`).
    pub peak_rss_source: Option<&'static str>,
    /// One row per measurement, in the order they ran.
    pub measurements: Vec<Measurement>,
    /// `/health/live` req/s of forgeline over a bare warp server's, same clients.
    pub health_vs_bare_warp: Option<f64>,
}

impl Report {
    /// The report as an aligned text table.
    pub fn table(&self) -> String {
        let t = &self.target;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "forgeline bench: {} ({}, durability {}, {} stored task(s), {} CPU(s) shared with the clients)",
            t.url,
            if t.spawned { "spawned in a temp dir" } else { "external" },
            t.durability,
            t.stored_tasks.map_or("?".to_string(), |n| n.to_string()),
            self.cpus
        );
        out.push_str(&rows_table(&self.measurements));
        out.push('\n');
        if let Some(r) = self.health_vs_bare_warp {
            let _ = writeln!(
                out,
                "/health/live vs a bare warp server: {:.0} % (target ≥ 80 %: {})",
                r * 100.0,
                verdict(r >= 0.8)
            );
        }
        // The start-up and memory targets are set for a store of 1 M tasks.
        let million = self.target.stored_tasks.is_some_and(|n| n >= 1_000_000);
        if let Some(ms) = self.start_to_ready_ms {
            let target = match million {
                true => format!(
                    " (target with 1 M stored ≤ 500 ms: {})",
                    verdict(ms <= 500.0)
                ),
                false => String::new(),
            };
            let _ = writeln!(out, "start to ready: {}{target}", format_ms(ms));
        }
        if let Some(b) = self.idle_rss_bytes {
            let target = match million {
                true => format!(
                    " (target with 1 M stored ≤ 150 MiB: {})",
                    verdict(b <= 150 * 1024 * 1024)
                ),
                false => String::new(),
            };
            let _ = writeln!(out, "idle RSS: {}{target}", format_bytes(b));
        }
        if let (Some(b), Some(src)) = (self.peak_rss_bytes, self.peak_rss_source) {
            let _ = writeln!(out, "peak RSS: {} ({src})", format_bytes(b));
        }
        out
    }
}

/// The measurements as aligned columns: the title left-aligned, the
/// numbers right-aligned, widths from the widest cell.
fn rows_table(measurements: &[Measurement]) -> String {
    let headers = [
        "measurement",
        "clients",
        "count",
        "per second",
        "p50",
        "p99",
        "max",
        "target",
    ];
    let rows: Vec<[String; 8]> = measurements.iter().map(row).collect();
    let widths: Vec<usize> = (0..headers.len())
        .map(|i| {
            rows.iter()
                .map(|r| r[i].chars().count())
                .chain([headers[i].len()])
                .max()
                .unwrap_or(0)
        })
        .collect();
    let line = |cells: &[String]| {
        let mut s = String::new();
        for (i, c) in cells.iter().enumerate() {
            let pad = widths[i].saturating_sub(c.chars().count());
            if i == 0 {
                s.push_str(c);
                s.push_str(&" ".repeat(pad));
            } else {
                s.push_str("  ");
                s.push_str(&" ".repeat(pad));
                s.push_str(c);
            }
        }
        s.trim_end().to_string()
    };
    let mut out = String::new();
    let _ = writeln!(out, "{}", line(&headers.map(String::from)));
    let _ = writeln!(
        out,
        "{}",
        line(&widths.iter().map(|w| "-".repeat(*w)).collect::<Vec<_>>())
    );
    for r in &rows {
        let _ = writeln!(out, "{}", line(r));
    }
    out
}

/// One measurement's cells.
fn row(m: &Measurement) -> [String; 8] {
    let clients = match m.workers {
        Some(w) => format!("{}+{w}w", m.clients),
        None => m.clients.to_string(),
    };
    let lat = |f: fn(&Latency) -> f64| m.latency.as_ref().map_or("-".into(), |l| format_ms(f(l)));
    [
        m.title.clone(),
        clients,
        m.count.to_string(),
        m.per_second.map_or("-".into(), |r| format!("{r:.0}/s")),
        lat(|l| l.p50_ms),
        lat(|l| l.p99_ms),
        lat(|l| l.max_ms),
        target_cell(m),
    ]
}

/// The row's target (docs/performance.md, set for the 2-core machine class
/// with client and server sharing it) and whether this run met it; empty for
/// rows without one.
fn target_cell(m: &Measurement) -> String {
    let rate = |min: f64| {
        let met = m.per_second.is_some_and(|r| r >= min);
        format!("≥ {min:.0}/s {}", if met { "met" } else { "missed" })
    };
    match (m.name, m.clients) {
        ("submit", 1) => rate(2_500.0),
        ("submit", 64) => rate(10_000.0),
        ("e2e" | "e2e_batched", _) => rate(5_000.0),
        // 1,000 steps in at most 1 s.
        ("steps", _) => rate(1_000.0),
        ("pickup", _) => {
            let met = m.latency.is_some_and(|l| l.p99_ms <= 2.0);
            format!("p99 ≤ 2 ms {}", if met { "met" } else { "missed" })
        }
        _ => String::new(),
    }
}

/// `met` or `missed` beside a footer figure.
fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "missed"
    }
}

/// Milliseconds with a precision that suits their size.
pub fn format_ms(ms: f64) -> String {
    if ms < 1.0 {
        format!("{:.0} µs", ms * 1000.0)
    } else if ms < 100.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{ms:.0} ms")
    }
}

fn format_bytes(b: u64) -> String {
    format!("{:.1} MiB", b as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let mut s: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        s.reverse();
        let l = Latency::of(&mut s).unwrap();
        assert_eq!((l.p50_ms, l.p99_ms, l.max_ms), (50.0, 99.0, 100.0));
        let mut one = vec![Duration::from_micros(1500)];
        let l = Latency::of(&mut one).unwrap();
        assert_eq!((l.p50_ms, l.p99_ms), (1.5, 1.5));
        assert_eq!(Latency::of(&mut []), None);
    }

    #[test]
    fn durations_print_in_a_unit_that_suits_them() {
        assert_eq!(format_ms(0.25), "250 µs");
        assert_eq!(format_ms(2.5), "2.50 ms");
        assert_eq!(format_ms(1234.0), "1234 ms");
    }
}

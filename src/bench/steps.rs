//! Shell steps through the built-in executor: `--steps N` tasks, each with
//! one step running `true`, submitted at once to the queue the spawned
//! server's executor serves (`executor.pool_size` 2); measured from the first
//! submit to the scrape that shows all N completed.

use std::time::{Duration, Instant};

use serde_json::json;

use super::client::{BenchClient, BenchError};
use super::phases::load;
use super::progress::Progress;
use super::report::Measurement;
use super::steps_config::{STEPS_POOL, STEPS_QUEUE, STEP_RECIPE};

/// Submitters of the steps phase.
const SUBMITTERS: usize = 8;

/// How long the phase may take before it counts as stuck.
fn deadline(n: u64) -> Duration {
    Duration::from_secs(60) + Duration::from_millis(100 * n)
}

/// Runs the phase.
pub(super) async fn steps(
    client: &BenchClient,
    progress: &Progress,
    n: u64,
) -> Result<Measurement, BenchError> {
    let tick = progress.phase(format!("{n} `true` steps, executor pool {STEPS_POOL}"), n);
    let before = counts(client).await?;
    let started = Instant::now();
    let next = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    load(client, SUBMITTERS, |_, c| {
        let next = next.clone();
        async move {
            while next.fetch_add(1, std::sync::atomic::Ordering::Relaxed) < n {
                c.submit_body(json!({"queue": STEPS_QUEUE, "steps": [STEP_RECIPE]}))
                    .await?;
            }
            Ok(Vec::new())
        }
    })
    .await?;
    loop {
        let now = counts(client).await?;
        let (done, failed) = (now.0 - before.0, now.1 - before.1);
        tick.set(done);
        if failed > 0 {
            return Err(BenchError::Protocol(format!(
                "{failed} steps task(s) failed or were dead-lettered; is `true` on the server's PATH?"
            )));
        }
        if done >= n {
            break;
        }
        if started.elapsed() > deadline(n) {
            return Err(BenchError::Protocol(format!(
                "only {done} of {n} steps tasks completed in {:?}",
                deadline(n)
            )));
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    progress.done();
    Ok(Measurement {
        name: "steps",
        title: format!("`true` steps/s, executor pool {STEPS_POOL}"),
        clients: SUBMITTERS,
        workers: Some(STEPS_POOL),
        count: n,
        seconds,
        per_second: Some(n as f64 / seconds.max(1e-9)),
        latency: None,
    })
}

/// Completed and failed-or-dead tasks on the steps queue, from `/metrics`.
async fn counts(client: &BenchClient) -> Result<(u64, u64), BenchError> {
    let text = client.get("/metrics").await?;
    Ok(parse_counts(&String::from_utf8_lossy(&text)))
}

fn parse_counts(text: &str) -> (u64, u64) {
    let queue = format!("queue=\"{STEPS_QUEUE}\"");
    let (mut done, mut failed) = (0, 0);
    for line in text.lines() {
        let Some(rest) = line.strip_prefix("forgeline_tasks{") else {
            continue;
        };
        let Some((labels, value)) = rest.split_once("} ") else {
            continue;
        };
        if !labels.contains(&queue) {
            continue;
        }
        let v = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        if labels.contains("state=\"completed\"") {
            done += v;
        } else if labels.contains("state=\"failed\"") || labels.contains("state=\"dead\"") {
            failed += v;
        }
    }
    (done, failed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_come_from_the_steps_queue_only() {
        let text = "forgeline_tasks{queue=\"bench-steps\",state=\"completed\"} 12\n\
                    forgeline_tasks{queue=\"bench-steps\",state=\"dead\"} 1\n\
                    forgeline_tasks{queue=\"other\",state=\"completed\"} 99\n";
        assert_eq!(parse_counts(text), (12, 1));
    }
}

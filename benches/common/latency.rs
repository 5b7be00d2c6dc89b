//! What the latency benches share: the test person, percentiles, and polling a target
//! until it shows a change.
#![allow(dead_code)] // each bench uses its own part

use std::time::{Duration, Instant};

/// How often a target is looked at while a change is in flight.
pub const POLL: Duration = Duration::from_millis(5);

/// An Active employee of `department`, their own manager, as Identity YAML.
pub fn person(name: &str, department: &str) -> String {
    format!(
        "metadata: {{name: {name}}}\nspec: {{type: Human, employment: {{status: Active, type: Employee, department: {department}, manager: {name}, startDate: '2026-01-01'}}}}"
    )
}

/// The `p` percentile (0..=1) of sorted samples.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Polls `holds` every [`POLL`] until it is true; the time since `t0`. Fails the bench
/// after `give_up` rather than wait for ever.
pub async fn until(
    t0: Instant,
    what: &str,
    target: &str,
    give_up: Duration,
    mut holds: impl AsyncFnMut() -> bool,
) -> Duration {
    loop {
        if holds().await {
            return t0.elapsed();
        }
        assert!(
            t0.elapsed() < give_up,
            "{what} on {target}: not seen after {give_up:?}"
        );
        tokio::time::sleep(POLL).await;
    }
}

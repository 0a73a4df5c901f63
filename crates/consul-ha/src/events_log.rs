//! `node --events-log`: this node's leadership terms as JSON lines, stamped with the host's
//! monotonic clock (`CLOCK_MONOTONIC`, shared by every process on the host), so an outside
//! checker can line up the terms of several processes and the faults it injected.
//!
//! ```text
//! {"ev":"start","pid":4242,"mono_ns":123}
//! {"ev":"elected","token":7,"mono_ns":456}
//! {"ev":"lost","token":7,"mono_ns":789,"reason":"stopped"}
//! ```

use std::io::Write;
use std::path::Path;

use futures_util::StreamExt;
use ha_cluster::{Cluster, Event};
use tokio::time::Instant;

/// The host's monotonic clock, in nanoseconds.
pub(crate) fn mono_ns() -> u64 {
    let t = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
    (t.tv_sec as u64).saturating_mul(1_000_000_000).saturating_add(t.tv_nsec as u64)
}

/// Converts tokio instants to [`mono_ns`] readings.
#[derive(Clone, Copy)]
struct Clock {
    base: Instant,
    base_ns: u64,
}

impl Clock {
    fn now() -> Clock {
        Clock { base: Instant::now(), base_ns: mono_ns() }
    }

    fn ns(&self, at: Instant) -> u64 {
        match at.checked_duration_since(self.base) {
            Some(d) => self.base_ns.saturating_add(d.as_nanos() as u64),
            None => self.base_ns.saturating_sub((self.base - at).as_nanos() as u64),
        }
    }
}

/// Opens `path` for appending and writes this node's terms to it until the cluster stops.
pub(crate) fn spawn(path: &Path, cluster: &Cluster) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|e| format!("--events-log {}: {e}", path.display()))?;
    let clock = Clock::now();
    let start =
        serde_json::json!({"ev": "start", "pid": std::process::id(), "mono_ns": clock.base_ns});
    writeln!(file, "{start}").map_err(|e| format!("--events-log {}: {e}", path.display()))?;
    // Subscribe before looking at the state, so no term falls between the two.
    let events = cluster.subscribe();
    if let (true, Some(token)) = (cluster.is_leader(), cluster.fencing_token()) {
        let line = serde_json::json!({"ev": "elected", "token": token.0, "mono_ns": clock.base_ns});
        let _ = writeln!(file, "{line}");
    }
    Ok(tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(e) = events.next().await {
            let line = match e {
                Event::LeaderElected { leader, is_self: true, at } => serde_json::json!({
                    "ev": "elected", "token": leader.fencing_token.0, "mono_ns": clock.ns(at),
                }),
                Event::LeadershipLost { fencing_token, at, reason } => serde_json::json!({
                    "ev": "lost", "token": fencing_token.0, "mono_ns": clock.ns(at), "reason": reason,
                }),
                _ => continue,
            };
            if let Err(e) = writeln!(file, "{line}") {
                tracing::warn!(error = %e, "cannot write the events log");
            }
        }
    }))
}

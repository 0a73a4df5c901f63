//! Blocking queries: `?index` and `?wait`, and parking a read until the index moves.

use std::time::Duration;

use super::{Consul, Outcome, SimTime, Target};

/// `?index` and `?wait` of a blocking read: `None` when the query does not block.
pub(crate) fn blocking_params(t: &Target) -> Result<Option<(u64, Duration)>, String> {
    let Some(index) = t.param("index") else { return Ok(None) };
    let index: u64 =
        index.parse().map_err(|_| format!("Invalid index {index:?}: not a whole number"))?;
    let wait = match t.param("wait") {
        None | Some("") => Duration::from_secs(300),
        Some(w) => consul_api::types::parse_duration(w)
            .ok_or_else(|| format!("Invalid wait time {w:?}"))?,
    };
    if index == 0 {
        return Ok(None);
    }
    Ok(Some((index, wait.min(Duration::from_secs(600)))))
}

impl Consul {
    /// Parks a blocking read until the index moves or `wait` (plus up to wait/16 of
    /// jitter, as Consul adds) passes.
    pub(crate) fn park(&mut self, now: SimTime, wait: Duration) -> Outcome {
        let jitter = if wait.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.random() % (wait.as_nanos() as u64 / 16 + 1))
        };
        Outcome::Blocked { index: self.index(), deadline: now.after(wait + jitter) }
    }
}

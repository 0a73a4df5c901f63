//! Blocking queries: `?index` and `?wait`, and parking a read until the index moves.

use std::time::Duration;

use super::{Consul, Outcome, SimTime, Target};

/// Consul's default wait, also used for `wait=0s`.
const DEFAULT_WAIT: Duration = Duration::from_secs(300);
/// Consul's longest wait.
const MAX_WAIT: Duration = Duration::from_secs(600);

/// `?index` and `?wait` of a blocking read: `None` when the query does not block.
///
/// As Consul's `parseWait`: `wait` is checked even without `index` (400 "Invalid wait
/// time"), an `index` that is not a whole number is 400 "Invalid index", empty values count
/// as absent, `index=0` does not block, and a zero wait means the default 5 minutes.
pub(crate) fn blocking_params(t: &Target) -> Result<Option<(u64, Duration)>, String> {
    let wait = match t.param("wait") {
        None | Some("") => DEFAULT_WAIT,
        Some(w) => {
            let w = consul_api::types::parse_duration(w).ok_or("Invalid wait time")?;
            if w.is_zero() { DEFAULT_WAIT } else { w.min(MAX_WAIT) }
        }
    };
    let index = match t.param("index") {
        None | Some("") => return Ok(None),
        Some(i) => i.parse::<u64>().map_err(|_| "Invalid index")?,
    };
    if index == 0 {
        return Ok(None);
    }
    Ok(Some((index, wait)))
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

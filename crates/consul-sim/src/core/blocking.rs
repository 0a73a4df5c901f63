//! Blocking queries: `?index` and `?wait`, parking a read until its answer may change,
//! and what a parked read watches ([`Watch`]) so a write wakes only the reads it concerns.

use std::time::Duration;

use super::kv::under;
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

/// What a parked read's answer depends on: the writes that may change it.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Watch {
    /// One existing key (its answer's index is the key's ModifyIndex).
    Key(String),
    /// Every key under a prefix that has keys or tombstones.
    Prefix(String),
    /// Any KV write: a missing key or an empty prefix answers the KV table's index.
    AnyKv,
    /// Any write outside the KV store (sessions, catalog, health, agent).
    NonKv,
    /// Nothing: no write wakes it (a stream that has nothing to send).
    Never,
}

/// What writes changed since the adapter last asked ([`Consul::take_changes`]).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Changes {
    /// KV keys written, deleted, locked or released.
    pub keys: Vec<String>,
    /// True if anything outside the KV store was written.
    pub other: bool,
    /// True if more keys changed than are listed (the list is bounded, for cores whose
    /// changes nobody takes): every KV read may have changed.
    pub all_kv: bool,
}

/// Most changed keys listed before [`Changes::all_kv`] stands for them.
const MAX_LISTED_CHANGES: usize = 4096;

impl Changes {
    /// True if these changes may change the answer of a read that watches `watch`.
    pub fn wake(&self, watch: &Watch) -> bool {
        match watch {
            Watch::Key(_) | Watch::Prefix(_) | Watch::AnyKv if self.all_kv => true,
            Watch::Key(k) => self.keys.iter().any(|c| c == k),
            Watch::Prefix(p) => self.keys.iter().any(|c| c.starts_with(p.as_str())),
            Watch::AnyKv => !self.keys.is_empty(),
            Watch::NonKv => self.other,
            Watch::Never => false,
        }
    }
}

impl Consul {
    /// Parks a blocking read until the index moves or `wait` (plus up to wait/16 of
    /// jitter, as Consul adds) passes.
    pub(crate) fn park(&mut self, now: SimTime, wait: Duration, target: &Target) -> Outcome {
        let jitter = if wait.is_zero() {
            Duration::ZERO
        } else {
            Duration::from_nanos(self.random() % (wait.as_nanos() as u64 / 16 + 1))
        };
        let watch = self.watch_of(target);
        Outcome::Blocked { index: self.index(), deadline: now.after(wait + jitter), watch }
    }

    /// What the read `target` watches, given the store as it is now.
    fn watch_of(&self, target: &Target) -> Watch {
        let Some(key) = target.path.strip_prefix("/v1/kv/") else { return Watch::NonKv };
        let under = |p: &str| {
            under(&self.state.kv, p).next().is_some()
                || under(&self.state.tombstones, p).next().is_some()
        };
        if target.flag("keys") || target.flag("recurse") {
            if under(key) { Watch::Prefix(key.to_string()) } else { Watch::AnyKv }
        } else if self.state.kv.contains_key(key) {
            Watch::Key(key.to_string())
        } else {
            Watch::AnyKv
        }
    }

    /// Takes the record of what changed since the last call; the adapter wakes the parked
    /// reads whose [`Watch`] it concerns.
    pub fn take_changes(&mut self) -> Changes {
        std::mem::take(&mut self.changes)
    }

    /// Notes a change to a KV key, for the parked reads that watch it.
    pub(crate) fn touched_key(&mut self, key: &str) {
        if self.changes.all_kv {
            return;
        }
        if self.changes.keys.len() >= MAX_LISTED_CHANGES {
            self.changes.keys.clear();
            self.changes.all_kv = true;
            return;
        }
        self.changes.keys.push(key.to_string());
    }
}

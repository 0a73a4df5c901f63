//! The running member: three tasks (heartbeat, election, membership) around shared state,
//! one file each, and the handle that starts and drives them.
//!
//! - **Heartbeat** passes the TTL check and renews the session every `heartbeat_interval`,
//!   re-registering if Consul forgot the service and re-creating the session if it expired.
//!   Each success moves the *lease*: `min(check pass sent, session renew sent) + TTL −
//!   margin`. Consul cannot invalidate the session (or fail the check) before that instant,
//!   because its timers start when it *receives* the request, which is after we sent it.
//! - **Election** watches the leader key with blocking queries. When the key is free it
//!   acquires it in a transaction that also reads it back (the `LockIndex` is the fencing
//!   token). A leader steps down the moment its lease runs out, the key changes hands, or
//!   its session is lost; so a leader's belief always ends before anyone else can acquire.
//! - **Membership** watches the service's health entries and rebuilds the ring whenever the
//!   healthy set changes.

mod election;
mod handle;
mod heartbeat;
mod membership;

pub use handle::{Cluster, ClusterBuilder, read_leader, read_members};

use std::sync::{Arc, Mutex, MutexGuard};

use bytes::Bytes;
use consul_api::agent::{CheckDefinition, CheckStatus, ServiceRegistration};
use consul_api::catalog::HealthFilter;
use consul_api::kv::KvPair;
use consul_api::session::{Behavior, ServiceCheckRef, SessionRequest};
use consul_api::txn::{KvOp, MAX_TXN_OPS, TxnOutcome};
use consul_api::{Client, Index, QueryOptions, SessionId};
use futures_core::Stream;
use hashring::{Ring, RingConfig};
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::backoff::Backoff;
use crate::member::{META_NODE_ID, META_WEIGHT, META_ZONE};
use crate::{ClusterConfig, ClusterError, Health, Member, membership_version};

/// The leader, as the leader key names it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderInfo {
    /// The leader's member id.
    pub node_id: String,
    /// Where the leader serves.
    pub address: String,
    /// The fencing token: the leader key's `LockIndex`, which grows with every new holder.
    pub fencing_token: Index,
    /// The Consul index at which the leader took the lock.
    pub since: Index,
    /// The session holding the lock.
    pub session: SessionId,
}

/// Something that happened in the cluster, as this member saw it.
#[derive(Clone, Debug, PartialEq)]
pub enum Event {
    /// A member (`is_self`: this one) took the leader key.
    LeaderElected {
        /// The new leader.
        leader: LeaderInfo,
        /// Whether this member is the leader.
        is_self: bool,
        /// When this member learned of it.
        at: Instant,
    },
    /// This member stopped being the leader.
    LeadershipLost {
        /// The fencing token it held.
        fencing_token: Index,
        /// When its belief ended (no later than its lease).
        at: Instant,
        /// Why.
        reason: String,
    },
    /// A member became healthy (joined, or came back).
    MemberJoined(Member),
    /// A member's checks are failing.
    MemberFailed(Member),
    /// A member deregistered (or was reaped by Consul).
    MemberLeft(String),
    /// The ring was rebuilt for a new healthy set.
    RingChanged {
        /// The [`membership_version`] of the healthy set.
        version: u64,
        /// How many members are on the ring.
        members: usize,
    },
}

/// A committed [`Cluster::leader_txn`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaderTxn {
    /// The fencing token the write was made under.
    pub fencing_token: Index,
    /// The results of the caller's operations, in order (checks and deletes have none).
    pub results: Vec<KvPair>,
    /// The leader key as it was when the transaction committed.
    pub holder: KvPair,
}

/// What the leader key's value holds.
#[derive(Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct LeaderValue {
    node_id: String,
    address: String,
}

/// This member's term as leader.
#[derive(Clone, Debug)]
struct Term {
    token: Index,
    modify_index: Index,
    session: SessionId,
}

#[derive(Debug)]
struct Inner {
    session: Option<SessionId>,
    /// When the last successful check pass and session renewal were sent.
    pass_sent: Option<Instant>,
    renew_sent: Option<Instant>,
    term: Option<Term>,
    leader: Option<LeaderInfo>,
    members: Vec<Member>,
    ring: Ring,
    version: u64,
}

#[derive(Debug)]
struct Shared {
    config: ClusterConfig,
    client: Client,
    inner: Mutex<Inner>,
    events: broadcast::Sender<Event>,
    /// Bumped when the session appears or goes, or the lease comes back: the election
    /// re-reads the key.
    wake: watch::Sender<u64>,
    /// Set by [`Cluster::leave`]: no task acquires, creates or registers anything after.
    stopped: std::sync::atomic::AtomicBool,
    /// Set by [`Cluster::resign`]: the member never acquires again, and its check warns.
    resigned: std::sync::atomic::AtomicBool,
}

impl Shared {
    fn stopped(&self) -> bool {
        self.stopped.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn resigned(&self) -> bool {
        self.resigned.load(std::sync::atomic::Ordering::SeqCst)
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, event: Event) {
        tracing::info!(node = %self.config.node_id, ?event, "cluster event");
        // No subscribers is fine.
        let _ = self.events.send(event);
    }

    fn wake(&self) {
        self.wake.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// How the watch tasks read: blocking for `watch_wait`, backing off from `retry_min`
    /// to `retry_max` with jitter seeded from the config (`salt` tells the tasks apart), so
    /// a simulation replays.
    fn watch_options(&self, salt: u64) -> consul_api::watch::WatchOptions {
        let c = &self.config;
        consul_api::watch::WatchOptions {
            query: QueryOptions::default(),
            wait: Some(c.watch_wait),
            min_interval: std::time::Duration::ZERO,
            initial_backoff: c.retry_min,
            max_backoff: c.retry_max,
            jitter_seed: Some(c.seed ^ salt),
        }
    }

    /// The instant until which this member may act on what it holds.
    fn lease_until(&self, inner: &Inner) -> Option<Instant> {
        let sent = inner.pass_sent?.min(inner.renew_sent?);
        inner.session.as_ref()?;
        Some(sent + self.config.session_ttl - self.config.lease_margin)
    }

    fn lease_valid(&self, inner: &Inner, now: Instant) -> bool {
        self.lease_until(inner).is_some_and(|until| now < until)
    }

    /// Ends this member's term, if any: its belief ended at `now` or when its lease ran
    /// out, whichever came first.
    fn step_down(&self, inner: &mut Inner, now: Instant, reason: &str) {
        if let Some(term) = inner.term.take() {
            let at = self.lease_until(inner).map_or(now, |until| until.min(now));
            self.emit(Event::LeadershipLost {
                fencing_token: term.token,
                at,
                reason: reason.to_string(),
            });
        }
    }
}

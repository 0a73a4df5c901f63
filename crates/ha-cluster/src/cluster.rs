//! The running member: three tasks (heartbeat, election, membership) around shared state.
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

    fn session_request(&self) -> SessionRequest {
        let c = &self.config;
        SessionRequest {
            name: format!("ha-cluster {}/{}", c.service, c.node_id),
            lock_delay: Some(c.lock_delay),
            behavior: Behavior::Release,
            ttl: Some(c.session_ttl),
            service_checks: vec![ServiceCheckRef { id: c.check_id(), namespace: String::new() }],
            ..Default::default()
        }
    }

    async fn register(&self) -> Result<(), consul_api::Error> {
        let c = &self.config;
        let (host, port) = c.host_port().map_err(|e| consul_api::Error::invalid(e.to_string()))?;
        let mut reg = ServiceRegistration::new(c.service.clone(), c.service_id());
        reg.address = host;
        reg.port = Some(port);
        reg.tags = c.tags.clone();
        reg.meta.insert(META_NODE_ID.into(), c.node_id.clone());
        reg.meta.insert(META_WEIGHT.into(), c.weight.to_string());
        if let Some(zone) = &c.zone {
            reg.meta.insert(META_ZONE.into(), zone.clone());
        }
        let mut check = CheckDefinition::ttl(c.session_ttl);
        check.check_id = c.check_id();
        check.name = format!("ha-cluster heartbeat of {}", c.node_id);
        check.status = Some(CheckStatus::Passing);
        check.deregister_critical_service_after = c.deregister_critical_after;
        reg.checks = vec![check];
        self.client.agent().register_service(&reg).await
    }

    /// One heartbeat: pass the check, then renew (or create) the session.
    async fn beat(&self) -> Result<(), consul_api::Error> {
        let check = self.config.check_id();
        let sent = Instant::now();
        // A resigned member warns: still alive (its session holds), but off every ring.
        let update = || async {
            if self.resigned() {
                self.client.agent().warn_ttl(&check, "resigned: leaving").await
            } else {
                self.client.agent().pass_ttl(&check, "heartbeat").await
            }
        };
        if let Err(e) = update().await {
            if !forgot_check(&e) || self.stopped() {
                return Err(e);
            }
            tracing::warn!(node = %self.config.node_id, error = %e, "Consul forgot this member; registering again");
            self.register().await?;
            update().await?;
        }
        self.lock().pass_sent = Some(sent);

        let session = self.lock().session.clone();
        let sent = Instant::now();
        match session {
            Some(id) => match self.client.session().renew(&id).await? {
                Some(_) => {
                    let mut inner = self.lock();
                    if inner.session.as_ref() == Some(&id) {
                        inner.renew_sent = Some(sent);
                    }
                }
                None => {
                    let mut inner = self.lock();
                    if inner.session.as_ref() == Some(&id) {
                        tracing::warn!(node = %self.config.node_id, "session expired; creating a new one");
                        self.step_down(&mut inner, Instant::now(), "the session was invalidated");
                        inner.session = None;
                        inner.renew_sent = None;
                        drop(inner);
                        self.wake();
                    }
                }
            },
            None if self.stopped() => {}
            None => {
                let id = self.client.session().create(&self.session_request()).await?;
                let mut inner = self.lock();
                inner.session = Some(id);
                inner.renew_sent = Some(sent);
                drop(inner);
                self.wake();
            }
        }
        Ok(())
    }
}

/// Whether a failed check update means Consul no longer knows the check.
fn forgot_check(e: &consul_api::Error) -> bool {
    let m = e.message().to_ascii_lowercase();
    e.is_not_found() || m.contains("unknown check") || m.contains("does not have associated ttl")
}

async fn heartbeat_task(shared: Arc<Shared>) {
    let c = &shared.config;
    let mut backoff = Backoff::new(c.retry_min, c.heartbeat_interval, c.seed ^ 0x4842);
    loop {
        let before = shared.lease_valid(&shared.lock(), Instant::now());
        let delay = match shared.beat().await {
            Ok(()) => {
                backoff.reset();
                c.heartbeat_interval
            }
            Err(e) => {
                tracing::warn!(node = %c.node_id, error = %e, "heartbeat failed");
                backoff.next_delay()
            }
        };
        if !before && shared.lease_valid(&shared.lock(), Instant::now()) {
            shared.wake();
        }
        tokio::time::sleep(delay).await;
    }
}

/// Where the election loop's read of the leader key left it.
enum KeyState {
    /// Held by our session (at this `LockIndex` / `ModifyIndex`).
    Ours(Index, Index),
    /// Held by another member.
    Other(LeaderInfo),
    /// Nobody holds it.
    Free,
}

fn key_state(pair: Option<&KvPair>, ours: Option<&SessionId>) -> KeyState {
    let Some(pair) = pair else { return KeyState::Free };
    let Some(session) = &pair.session else { return KeyState::Free };
    if Some(session) == ours {
        return KeyState::Ours(pair.lock_index, pair.modify_index);
    }
    let value = pair.value.as_deref().and_then(|v| serde_json::from_slice::<LeaderValue>(v).ok());
    let (node_id, address) =
        value.map_or_else(|| (String::new(), String::new()), |v| (v.node_id, v.address));
    KeyState::Other(LeaderInfo {
        node_id,
        address,
        fencing_token: pair.lock_index,
        since: pair.modify_index,
        session: session.clone(),
    })
}

async fn election_task(shared: Arc<Shared>) {
    let c = shared.config.clone();
    let key = c.leader_key();
    let mut wake = shared.wake.subscribe();
    let mut backoff = Backoff::new(c.retry_min, c.retry_max, c.seed ^ 0x454c);
    let mut index = Index(0);
    // Consul refused our last attempt on a free key: it is in lock-delay.
    let mut refused = false;
    loop {
        let opts = QueryOptions::blocking(index, c.watch_wait);
        let kv = shared.client.kv();
        let read = kv.get(&key, &opts);
        tokio::pin!(read);
        // Wait for the read, a wake-up, or the end of our lease, whichever comes first; the
        // lease timer re-arms as heartbeats extend the lease, without dropping the read.
        let result = loop {
            let deadline = {
                let inner = shared.lock();
                inner.term.as_ref().and(shared.lease_until(&inner))
            };
            let lease_end = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                r = &mut read => break Some(r),
                _ = wake.changed() => break None,
                () = lease_end => {
                    let now = Instant::now();
                    let mut inner = shared.lock();
                    if !shared.lease_valid(&inner, now) {
                        shared.step_down(&mut inner, now, "the lease ran out before a renewal was confirmed");
                    }
                }
            }
        };
        // Woken: our session or lease changed, so the key must be judged again now, with a
        // read that does not block.
        let Some(result) = result else {
            index = Index(0);
            continue;
        };
        let (pair, meta) = match result {
            Ok(ok) => {
                backoff.reset();
                ok
            }
            Err(e) => {
                tracing::debug!(node = %c.node_id, error = %e, "reading the leader key failed");
                tokio::time::sleep(backoff.next_delay()).await;
                index = Index(0);
                continue;
            }
        };
        index = consul_api::watch::advance(index, meta.last_index).0;

        let now = Instant::now();
        // Decide under the lock; acquire (which awaits) outside it.
        let attempt = {
            let mut inner = shared.lock();
            match key_state(pair.as_ref(), inner.session.as_ref()) {
                KeyState::Ours(token, modify_index) => {
                    let held = inner.term.as_ref().is_some_and(|t| t.token == token);
                    if let (false, true, Some(session)) =
                        (held, shared.lease_valid(&inner, now), inner.session.clone())
                    {
                        take_office(&shared, &mut inner, token, modify_index, session, now);
                    }
                    None
                }
                KeyState::Other(leader) => {
                    shared.step_down(&mut inner, now, "another member holds the leader key");
                    if inner.leader.as_ref() != Some(&leader) {
                        inner.leader = Some(leader.clone());
                        shared.emit(Event::LeaderElected { leader, is_self: false, at: now });
                    }
                    None
                }
                KeyState::Free => {
                    shared.step_down(&mut inner, now, "the leader key was released");
                    inner.leader = None;
                    inner.session.clone().filter(|_| shared.lease_valid(&inner, now))
                }
            }
        };
        let Some(session) = attempt.filter(|_| !shared.stopped() && !shared.resigned()) else {
            refused = false;
            continue;
        };
        if std::mem::take(&mut refused) {
            // Refused, and still free when read again: the lock-delay of an invalidated
            // holder. Waiting it out once is always enough.
            tokio::time::sleep(c.lock_delay + backoff.spread(c.retry_min)).await;
        }
        match try_acquire(&shared, &key, &session).await {
            Ok(true) => {}
            Ok(false) => {
                refused = true;
                index = Index(0);
            }
            Err(e) => {
                tracing::debug!(node = %c.node_id, error = %e, "acquiring the leader key failed");
                tokio::time::sleep(backoff.next_delay()).await;
                index = Index(0);
            }
        }
    }
}

fn take_office(
    shared: &Shared,
    inner: &mut Inner,
    token: Index,
    modify_index: Index,
    session: SessionId,
    now: Instant,
) {
    let c = &shared.config;
    inner.term = Some(Term { token, modify_index, session: session.clone() });
    let leader = LeaderInfo {
        node_id: c.node_id.clone(),
        address: c.node_address.clone(),
        fencing_token: token,
        since: modify_index,
        session,
    };
    inner.leader = Some(leader.clone());
    shared.emit(Event::LeaderElected { leader, is_self: true, at: now });
}

/// Tries to take the leader key; `Ok(false)` if Consul refused (held, or in lock-delay).
async fn try_acquire(
    shared: &Shared,
    key: &str,
    session: &SessionId,
) -> Result<bool, consul_api::Error> {
    let c = &shared.config;
    let value = serde_json::to_vec(&LeaderValue {
        node_id: c.node_id.clone(),
        address: c.node_address.clone(),
    })
    .expect("a struct of strings serializes");
    let ops = [KvOp::lock(key, Bytes::from(value), session.clone()), KvOp::get(key)];
    match shared.client.txn().execute(&ops).await? {
        TxnOutcome::Committed(results) => {
            let Some(pair) = results.last() else {
                return Err(consul_api::Error::decode("the lock transaction returned no entry"));
            };
            let now = Instant::now();
            let mut inner = shared.lock();
            if inner.session.as_ref() == Some(session)
                && shared.lease_valid(&inner, now)
                && !shared.stopped()
                && !shared.resigned()
            {
                take_office(
                    shared,
                    &mut inner,
                    pair.lock_index,
                    pair.modify_index,
                    session.clone(),
                    now,
                );
            }
            Ok(true)
        }
        TxnOutcome::RolledBack(errors) => {
            tracing::debug!(node = %c.node_id, ?errors, "the leader key was not acquired");
            Ok(false)
        }
    }
}

async fn membership_task(shared: Arc<Shared>) {
    let c = shared.config.clone();
    let mut backoff = Backoff::new(c.retry_min, c.retry_max, c.seed ^ 0x4d42);
    let mut index = Index(0);
    loop {
        let opts = QueryOptions::blocking(index, c.watch_wait);
        let (entries, meta) =
            match shared.client.health().service(&c.service, &HealthFilter::default(), &opts).await
            {
                Ok(ok) => {
                    backoff.reset();
                    ok
                }
                Err(e) => {
                    tracing::debug!(node = %c.node_id, error = %e, "reading the members failed");
                    tokio::time::sleep(backoff.next_delay()).await;
                    index = Index(0);
                    continue;
                }
            };
        let (next, changed) = consul_api::watch::advance(index, meta.last_index);
        index = next;
        if !changed {
            continue;
        }
        apply_membership(&shared, members_of(&entries));
    }
}

/// The cluster members among a service's health entries, one per id (its healthiest
/// registration), sorted by id.
fn members_of(entries: &[consul_api::catalog::ServiceEntry]) -> Vec<Member> {
    let mut members: Vec<Member> = entries.iter().filter_map(Member::from_entry).collect();
    members.sort_by(|a, b| a.id.cmp(&b.id).then_with(|| rank(a.health).cmp(&rank(b.health))));
    members.dedup_by(|later, first| later.id == first.id);
    members
}

fn rank(h: Health) -> u8 {
    match h {
        Health::Passing => 0,
        Health::Warning => 1,
        Health::Critical => 2,
        Health::Maintenance => 3,
    }
}

fn build_ring(members: &[Member], vnodes_per_weight: u32) -> Ring {
    let healthy = members.iter().filter(|m| m.health == Health::Passing).map(Member::ring_member);
    let config = RingConfig { vnodes_per_weight };
    // Members are deduplicated by id and weights are ≥ 1, so this cannot fail; an empty ring
    // is the safe fallback regardless.
    Ring::with_config(healthy, config)
        .unwrap_or_else(|_| Ring::with_config([], config).expect("an empty ring always builds"))
}

fn apply_membership(shared: &Shared, members: Vec<Member>) {
    let mut inner = shared.lock();
    let mut events = Vec::new();
    for m in &members {
        let before = inner.members.iter().find(|o| o.id == m.id);
        let was_healthy = before.is_some_and(|o| o.health == Health::Passing);
        match (was_healthy, m.health == Health::Passing) {
            (false, true) => events.push(Event::MemberJoined(m.clone())),
            (true, false) => events.push(Event::MemberFailed(m.clone())),
            (false, false) if before.is_none() => events.push(Event::MemberFailed(m.clone())),
            _ => {}
        }
    }
    for old in &inner.members {
        if !members.iter().any(|m| m.id == old.id) {
            events.push(Event::MemberLeft(old.id.clone()));
        }
    }
    let version = membership_version(&members);
    if version != inner.version || inner.members.is_empty() {
        inner.ring = build_ring(&members, shared.config.vnodes_per_weight);
        inner.version = version;
        events.push(Event::RingChanged { version, members: inner.ring.members().len() });
    }
    inner.members = members;
    drop(inner);
    for e in events {
        shared.emit(e);
    }
}

/// Starts a member. Obtained from [`Cluster::builder`].
#[derive(Debug)]
pub struct ClusterBuilder {
    client: Client,
    config: ClusterConfig,
}

impl ClusterBuilder {
    /// Validates the config, registers this member, passes its check, creates its session
    /// and starts the background tasks. Fails (without leaving anything running) if the
    /// config is invalid or Consul refuses or cannot be reached.
    pub async fn start(self) -> Result<Cluster, ClusterError> {
        self.config.validate()?;
        let (wake, _) = watch::channel(0);
        let empty = build_ring(&[], self.config.vnodes_per_weight);
        let shared = Arc::new(Shared {
            config: self.config,
            client: self.client,
            inner: Mutex::new(Inner {
                session: None,
                pass_sent: None,
                renew_sent: None,
                term: None,
                leader: None,
                members: Vec::new(),
                ring: empty,
                version: 0,
            }),
            events: broadcast::channel(1024).0,
            wake,
            stopped: std::sync::atomic::AtomicBool::new(false),
            resigned: std::sync::atomic::AtomicBool::new(false),
        });
        shared.register().await?;
        if let Err(e) = shared.beat().await {
            // Leave nothing behind: a half-started member would linger as critical.
            let _ = shared.client.agent().deregister_service(&shared.config.service_id()).await;
            return Err(e.into());
        }
        let tasks = vec![
            tokio::spawn(heartbeat_task(shared.clone())),
            tokio::spawn(election_task(shared.clone())),
            tokio::spawn(membership_task(shared.clone())),
        ];
        Ok(Cluster { shared, tasks })
    }
}

/// A running cluster member. See the [crate docs](crate).
///
/// [`stop`](Cluster::stop) leaves gracefully (hands leadership over at once). Dropping the
/// handle instead stops the member abruptly, as a crash would: Consul notices when the
/// session and check TTLs run out.
#[derive(Debug)]
pub struct Cluster {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl Cluster {
    /// Prepares a member that talks to Consul through `client`.
    pub fn builder(client: Client, config: ClusterConfig) -> ClusterBuilder {
        ClusterBuilder { client, config }
    }

    /// This member's configuration.
    pub fn config(&self) -> &ClusterConfig {
        &self.shared.config
    }

    /// The current leader as last seen on the leader key; `None` while there is none.
    pub fn leader_info(&self) -> Option<LeaderInfo> {
        self.shared.lock().leader.clone()
    }

    /// Whether this member is the leader now: it holds the key and its lease has not run out.
    pub fn is_leader(&self) -> bool {
        let inner = self.shared.lock();
        inner.term.is_some() && self.shared.lease_valid(&inner, Instant::now())
    }

    /// This member's fencing token while it is the leader.
    pub fn fencing_token(&self) -> Option<Index> {
        let inner = self.shared.lock();
        let valid = self.shared.lease_valid(&inner, Instant::now());
        inner.term.as_ref().filter(|_| valid).map(|t| t.token)
    }

    /// The members with their health, sorted by id.
    pub fn members(&self) -> Vec<Member> {
        self.shared.lock().members.clone()
    }

    /// The ring of healthy members (cheap to clone).
    pub fn ring(&self) -> Ring {
        self.shared.lock().ring.clone()
    }

    /// The [`membership_version`] the ring was built for.
    pub fn membership_version(&self) -> u64 {
        self.shared.lock().version
    }

    /// The healthy member that owns `key`.
    pub fn node_for_key(&self, key: &[u8]) -> Option<Member> {
        let inner = self.shared.lock();
        let name = &inner.ring.node_for_key(key)?.name;
        inner.members.iter().find(|m| &m.id == name).cloned()
    }

    /// `n` distinct healthy members for `key`, owner first, spread over zones first.
    pub fn replicas_for_key(&self, key: &[u8], n: usize) -> Vec<Member> {
        let inner = self.shared.lock();
        inner
            .ring
            .replicas_zone_aware(key, n)
            .into_iter()
            .filter_map(|r| inner.members.iter().find(|m| m.id == r.name).cloned())
            .collect()
    }

    /// The cluster's events from now on. A subscriber that falls more than 1024 events
    /// behind skips the oldest.
    pub fn subscribe(&self) -> impl Stream<Item = Event> + Send + 'static + use<> {
        let rx = self.shared.events.subscribe();
        futures_util::stream::unfold(rx, |mut rx| async move {
            loop {
                match rx.recv().await {
                    Ok(event) => return Some((event, rx)),
                    Err(broadcast::error::RecvError::Lagged(_)) => continue,
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// Applies `ops` atomically only while this member is the leader: the transaction
    /// checks that the leader key is still held by this member's session at the index it
    /// acquired it (so a deposed leader's late write is rejected by Consul itself), and
    /// reads the key back as [`LeaderTxn::holder`].
    pub async fn leader_txn(&self, ops: Vec<KvOp>) -> Result<LeaderTxn, ClusterError> {
        self.leader_txn_with(|_| ops).await
    }

    /// [`leader_txn`](Cluster::leader_txn) with operations built from the fencing token they
    /// will be committed under, so a written value can carry the token that guards it.
    pub async fn leader_txn_with(
        &self,
        build: impl FnOnce(Index) -> Vec<KvOp>,
    ) -> Result<LeaderTxn, ClusterError> {
        let term = {
            let inner = self.shared.lock();
            match &inner.term {
                Some(t) if self.shared.lease_valid(&inner, Instant::now()) => t.clone(),
                Some(_) => {
                    return Err(ClusterError::NotLeader(
                        "this member's lease ran out before it could confirm leadership".into(),
                    ));
                }
                None => {
                    return Err(ClusterError::NotLeader("this member is not the leader".into()));
                }
            }
        };
        let ops = build(term.token);
        if ops.len() > MAX_TXN_OPS - 3 {
            return Err(consul_api::Error::invalid(format!(
                "a leader transaction holds at most {} operations (3 guard it), got {}",
                MAX_TXN_OPS - 3,
                ops.len()
            ))
            .into());
        }
        let key = self.shared.config.leader_key();
        let mut all = Vec::with_capacity(ops.len() + 3);
        all.push(KvOp::check_session(key.clone(), term.session.clone()));
        all.push(KvOp::check_index(key.clone(), term.modify_index));
        all.extend(ops);
        all.push(KvOp::get(key));
        match self.shared.client.txn().execute(&all).await? {
            TxnOutcome::Committed(mut results) => {
                let holder = results.pop().ok_or_else(|| {
                    consul_api::Error::decode("the leader transaction lost its read")
                })?;
                Ok(LeaderTxn { fencing_token: term.token, results, holder })
            }
            TxnOutcome::RolledBack(errors) => {
                if let Some(e) = errors.iter().find(|e| e.op_index < 2) {
                    let mut inner = self.shared.lock();
                    if inner.term.as_ref().is_some_and(|t| t.token == term.token) {
                        self.shared.step_down(
                            &mut inner,
                            Instant::now(),
                            "Consul rejected a leader write",
                        );
                    }
                    return Err(ClusterError::NotLeader(format!(
                        "Consul rejected the write: {}",
                        e.what
                    )));
                }
                let shifted = errors
                    .into_iter()
                    .map(|mut e| {
                        e.op_index -= 2;
                        e
                    })
                    .collect();
                Err(ClusterError::Rejected(shifted))
            }
        }
    }

    /// Steps aside before leaving: hands leadership over at once if held (the key is
    /// released, so a follower takes it without lock-delay), never stands for election again,
    /// and from the next heartbeat on its check warns, so every member takes it off the
    /// ring while it still serves. Call [`stop`](Cluster::stop) or
    /// [`leave`](Cluster::leave) once its work has moved.
    pub async fn resign(&self) -> Result<(), ClusterError> {
        let shared = &self.shared;
        shared.resigned.store(true, std::sync::atomic::Ordering::SeqCst);
        let term = {
            let mut inner = shared.lock();
            let term = inner.term.clone();
            shared.step_down(&mut inner, Instant::now(), "resigned");
            term
        };
        if let Some(term) = term {
            let key = shared.config.leader_key();
            shared.client.kv().release(&key, Bytes::new(), &term.session, 0).await?;
        }
        // Warn now rather than at the next heartbeat.
        shared.client.agent().warn_ttl(&shared.config.check_id(), "resigned: leaving").await?;
        Ok(())
    }

    /// Leaves gracefully: stops the tasks, releases the leader key if held (a follower
    /// takes over at once, without lock-delay), destroys the session and deregisters.
    /// Every step is attempted; the first failure is returned.
    pub async fn stop(mut self) -> Result<(), ClusterError> {
        let result = self.leave().await;
        for task in self.tasks.drain(..) {
            let _ = task.await;
        }
        result
    }

    /// [`stop`](Cluster::stop) through a shared reference (e.g. an `Arc<Cluster>`): the
    /// member leaves; the handle stays but does nothing more.
    pub async fn leave(&self) -> Result<(), ClusterError> {
        let shared = &self.shared;
        shared.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        for task in &self.tasks {
            task.abort();
        }
        let (term, session) = {
            let mut inner = shared.lock();
            let term = inner.term.clone();
            shared.step_down(&mut inner, Instant::now(), "stopped");
            (term, inner.session.take())
        };
        let mut first: Option<consul_api::Error> = None;
        let key = shared.config.leader_key();
        if let Some(term) = term
            && let Err(e) = shared.client.kv().release(&key, Bytes::new(), &term.session, 0).await
        {
            first.get_or_insert(e);
        }
        if let Some(session) = session
            && let Err(e) = shared.client.session().destroy(&session).await
        {
            first.get_or_insert(e);
        }
        if let Err(e) = shared.client.agent().deregister_service(&shared.config.service_id()).await
        {
            first.get_or_insert(e);
        }
        match first {
            Some(e) => Err(e.into()),
            None => Ok(()),
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

/// Reads a cluster from outside (for status tools): its members with their health.
pub async fn read_members(client: &Client, service: &str) -> Result<Vec<Member>, ClusterError> {
    let (entries, _) = client
        .health()
        .service(service, &HealthFilter::default(), &QueryOptions::default())
        .await?;
    Ok(members_of(&entries))
}

/// Reads a cluster from outside (for status tools): the leader named by `leader_key`, if
/// the key is held.
pub async fn read_leader(
    client: &Client,
    leader_key: &str,
) -> Result<Option<LeaderInfo>, ClusterError> {
    let (pair, _) = client.kv().get(leader_key, &QueryOptions::default()).await?;
    Ok(match key_state(pair.as_ref(), None) {
        KeyState::Other(info) => Some(info),
        KeyState::Ours(..) | KeyState::Free => None,
    })
}

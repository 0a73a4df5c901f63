//! The handle: starting a member, reading its view, leader transactions, leaving; and
//! reading a cluster from outside.

use super::election::{KeyState, election_task, key_state};
use super::heartbeat::heartbeat_task;
use super::membership::{build_ring, members_of, membership_task};
use super::*;

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
    let pair = client.kv().get(leader_key).await?;
    Ok(match key_state(pair.as_ref(), None) {
        KeyState::Other(info) => Some(info),
        KeyState::Ours(..) | KeyState::Free => None,
    })
}

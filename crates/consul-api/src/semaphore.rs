//! A counting semaphore under a KV prefix, compatible with Go's `consul/api` `Semaphore`.
//!
//! The layout is Go's: each contender holds `<prefix>/<session>` with its session (so the
//! key unlocks when the session dies), and `<prefix>/.lock` holds the JSON
//! `{"Limit": N, "Holders": {"<session>": true}}`, changed only by check-and-set. Holders
//! whose contender key is no longer held are pruned by whoever next updates `.lock`. Both
//! kinds of key carry the flags `0xe0f69a2baa414de0`.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

pub use crate::contender::HoldState;
use crate::contender::{Contender, set_state};
use crate::kv::{KvPair, PutOptions};
use crate::session::Behavior;
use crate::types::{Index, QueryOptions, SessionId};
use crate::{Client, Error};

/// The flags Go's `api.Semaphore` stores on its keys.
pub const SEMAPHORE_FLAG_VALUE: u64 = 0xe0f6_9a2b_aa41_4de0;

/// The name of the coordination key under the prefix.
pub const SEMAPHORE_LOCK_KEY: &str = ".lock";

/// The JSON document in `<prefix>/.lock`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct SemaphoreLock {
    /// How many holders at most.
    pub limit: u32,
    /// The current holders' session ids.
    pub holders: BTreeMap<String, bool>,
}

/// How a [`Semaphore`] behaves; the defaults are Go's.
#[derive(Clone, Debug)]
pub struct SemaphoreOptions {
    /// The KV prefix (without a trailing `/`).
    pub prefix: String,
    /// How many holders at most; every contender must agree on it.
    pub limit: u32,
    /// The value of this contender's key.
    pub value: Bytes,
    /// Name of the created session.
    pub session_name: String,
    /// TTL of the created session; renewed every TTL/2.
    pub session_ttl: Duration,
    /// How long one try waits for a slot.
    pub wait_time: Duration,
    /// Failed watch reads of `.lock` tolerated before the slot is considered lost (Go's
    /// `MonitorRetries`; Go's default is 0, ours 3).
    pub monitor_retries: u32,
    /// Delay between those retries.
    pub monitor_retry_time: Duration,
}

impl SemaphoreOptions {
    /// Go's defaults: session TTL 15 s, wait 15 s.
    pub fn new(prefix: impl Into<String>, limit: u32) -> Self {
        SemaphoreOptions {
            prefix: prefix.into().trim_end_matches('/').to_string(),
            limit,
            value: Bytes::new(),
            session_name: "Consul API Semaphore".into(),
            session_ttl: Duration::from_secs(15),
            wait_time: Duration::from_secs(15),
            monitor_retries: 3,
            monitor_retry_time: Duration::from_secs(2),
        }
    }
}

/// A counting semaphore. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Semaphore {
    client: Client,
    opts: SemaphoreOptions,
}

/// A slot of the semaphore, held. Release it with [`release`](SemaphorePermit::release).
#[derive(Debug)]
pub struct SemaphorePermit {
    client: Client,
    prefix: String,
    session: SessionId,
    state: signal::Receiver<HoldState>,
    tasks: Vec<JoinHandle<()>>,
    released: bool,
}

impl Client {
    /// A semaphore of `limit` slots under `prefix` with Go's defaults (Go's
    /// `SemaphorePrefix`); the limit must be at least 1. [`Semaphore::new`] takes
    /// [`SemaphoreOptions`].
    ///
    /// ```no_run
    /// # async fn run(client: consul_api::Client) -> Result<(), consul_api::Error> {
    /// let permit = client.semaphore("service/workers", 2)?.acquire().await?;
    /// // … one of at most two workers …
    /// permit.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn semaphore(&self, prefix: impl Into<String>, limit: u32) -> Result<Semaphore, Error> {
        Semaphore::new(self.clone(), SemaphoreOptions::new(prefix, limit))
    }
}

impl Semaphore {
    /// A semaphore with `opts`; the limit must be at least 1.
    pub fn new(client: Client, opts: SemaphoreOptions) -> Result<Self, Error> {
        if opts.limit == 0 {
            return Err(Error::invalid(format!(
                "semaphore {:?}: limit must be at least 1",
                opts.prefix
            )));
        }
        if opts.prefix.is_empty() {
            return Err(Error::invalid("a semaphore needs a non-empty prefix"));
        }
        Ok(Semaphore { client, opts })
    }

    fn lock_key(&self) -> String {
        format!("{}/{SEMAPHORE_LOCK_KEY}", self.opts.prefix)
    }

    /// Waits until a slot is held. Cancel by dropping the future. One session and one
    /// contender key serve every wait round; the session is renewed while it waits.
    pub async fn acquire(&self) -> Result<SemaphorePermit, Error> {
        let contender = self.contend().await?;
        loop {
            if self.wait_for_slot(&contender.session).await? {
                return Ok(self.hold(contender));
            }
        }
    }

    /// Tries for up to `wait_time`; `Ok(None)` if every slot stayed taken (the session is
    /// destroyed, which deletes the contender key).
    pub async fn try_acquire(&self) -> Result<Option<SemaphorePermit>, Error> {
        let contender = self.contend().await?;
        Ok(self.wait_for_slot(&contender.session).await?.then(|| self.hold(contender)))
    }

    /// A renewed session and the contender key `<prefix>/<session>` held with it.
    async fn contend(&self) -> Result<Contender, Error> {
        let request = Contender::request(
            &self.opts.session_name,
            self.opts.session_ttl,
            None,
            Behavior::Delete,
        );
        let contender = Contender::start(&self.client, None, request).await?;
        let key = format!("{}/{}", self.opts.prefix, contender.session);
        let opts = PutOptions {
            acquire: Some(contender.session.clone()),
            flags: Some(SEMAPHORE_FLAG_VALUE),
            ..Default::default()
        };
        match self.client.kv().put_with(&key, self.opts.value.clone(), &opts).await {
            Ok(true) => Ok(contender),
            Ok(false) => Err(Error::aborted(format!("could not claim contender key {key:?}"))),
            Err(e) => Err(e),
        }
    }

    /// The slot is ours: watch `.lock` and hand the session to the permit.
    fn hold(&self, contender: Contender) -> SemaphorePermit {
        let (session, _, state, renew) = contender.into_parts();
        let rx = state.subscribe();
        let monitor = tokio::spawn(monitor_holders(
            self.client.clone(),
            self.opts.prefix.clone(),
            session.clone(),
            (self.opts.monitor_retries, self.opts.monitor_retry_time),
            state,
        ));
        let mut tasks = vec![monitor];
        tasks.extend(renew);
        SemaphorePermit {
            client: self.client.clone(),
            prefix: self.opts.prefix.clone(),
            session,
            state: rx,
            tasks,
            released: false,
        }
    }

    async fn wait_for_slot(&self, session: &SessionId) -> Result<bool, Error> {
        let deadline = tokio::time::Instant::now() + self.opts.wait_time;
        let mut index = Index(0);
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let opts = QueryOptions::blocking(index, deadline - now).consistent();
            let (pairs, meta) = self.client.kv().list(&self.opts.prefix, &opts).await?;
            let (lock_pair, mut doc) = self.decode(&pairs)?;
            prune(&mut doc, &pairs, &self.opts.prefix);
            if doc.holders.len() as u32 >= self.opts.limit {
                index = crate::watch::advance(index, meta.last_index).0;
                continue;
            }
            doc.holders.insert(session.to_string(), true);
            if self.write(&doc, lock_pair.map_or(Index(0), |p| p.modify_index)).await? {
                return Ok(true);
            }
            index = Index(0);
        }
    }

    /// The `.lock` entry and its document (a fresh one if absent); checks the flags and
    /// that every contender agrees on the limit.
    fn decode<'p>(
        &self,
        pairs: &'p [KvPair],
    ) -> Result<(Option<&'p KvPair>, SemaphoreLock), Error> {
        let key = self.lock_key();
        let Some(pair) = pairs.iter().find(|p| p.key == key) else {
            return Ok((None, SemaphoreLock { limit: self.opts.limit, holders: BTreeMap::new() }));
        };
        if pair.flags != SEMAPHORE_FLAG_VALUE {
            return Err(Error::aborted(format!("key {key:?} is not a semaphore's lock key")));
        }
        let doc: SemaphoreLock = serde_json::from_slice(pair.value.as_deref().unwrap_or(b"{}"))
            .map_err(|e| Error::decode(format!("semaphore key {key:?}: {e}")))?;
        if doc.limit != self.opts.limit {
            return Err(Error::aborted(format!(
                "semaphore {:?} has limit {}, this contender asked for {}",
                self.opts.prefix, doc.limit, self.opts.limit
            )));
        }
        Ok((Some(pair), doc))
    }

    async fn write(&self, doc: &SemaphoreLock, index: Index) -> Result<bool, Error> {
        let body = serde_json::to_vec(doc)
            .map_err(|e| Error::invalid(format!("cannot encode the semaphore document: {e}")))?;
        let opts = PutOptions {
            cas: Some(index),
            flags: Some(SEMAPHORE_FLAG_VALUE),
            ..Default::default()
        };
        self.client.kv().put_with(&self.lock_key(), body, &opts).await
    }
}

/// Drops holders whose contender key is gone or no longer held by their session.
fn prune(doc: &mut SemaphoreLock, pairs: &[KvPair], prefix: &str) {
    doc.holders.retain(|session, _| {
        let key = format!("{prefix}/{session}");
        pairs.iter().any(|p| p.key == key && p.session.as_ref().is_some_and(|s| s.0 == *session))
    });
}

impl SemaphorePermit {
    /// The session holding the slot.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// What is known of the slot now: held, uncertain (Consul has not answered lately) or
    /// lost.
    pub fn state(&self) -> HoldState {
        *self.state.borrow()
    }

    /// True once the slot is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.state() == HoldState::Lost
    }

    /// Resolves when the slot is lost.
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| *s == HoldState::Lost).await;
    }

    /// Gives the slot back: removes this holder from `.lock` by CAS, then destroys the
    /// session (which deletes the contender key).
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        for t in &self.tasks {
            t.abort();
        }
        let key = format!("{}/{SEMAPHORE_LOCK_KEY}", self.prefix);
        for _ in 0..16 {
            let (pair, _) =
                self.client.kv().get_with(&key, &QueryOptions::default().consistent()).await?;
            let Some(pair) = pair else { break };
            let mut doc: SemaphoreLock =
                serde_json::from_slice(pair.value.as_deref().unwrap_or(b"{}"))
                    .map_err(|e| Error::decode(format!("semaphore key {key:?}: {e}")))?;
            if doc.holders.remove(self.session.as_str()).is_none() {
                break;
            }
            let body = serde_json::to_vec(&doc).map_err(|e| {
                Error::invalid(format!("cannot encode the semaphore document: {e}"))
            })?;
            let opts = PutOptions {
                cas: Some(pair.modify_index),
                flags: Some(SEMAPHORE_FLAG_VALUE),
                ..Default::default()
            };
            if self.client.kv().put_with(&key, body, &opts).await? {
                break;
            }
        }
        self.client.session().destroy(&self.session).await
    }
}

impl Drop for SemaphorePermit {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if !self.released
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            // Destroying the session frees the contender key; the holder entry is pruned
            // by the next contender.
            let (client, session) = (self.client.clone(), self.session.clone());
            rt.spawn(async move {
                let _ = client.session().destroy(&session).await;
            });
        }
    }
}

/// Watches the prefix, as Go's `monitorLock` does: the slot is lost when this holder is no
/// longer listed in `.lock` once dead holders (whose contender key is gone or unheld) are
/// pruned; failed reads make it uncertain, and lost after `retries` failed reads in a row.
async fn monitor_holders(
    client: Client,
    prefix: String,
    session: SessionId,
    (retries, retry_time): (u32, Duration),
    state: signal::Sender<HoldState>,
) {
    let lock_key = format!("{prefix}/{SEMAPHORE_LOCK_KEY}");
    let mut watcher = client.watch_prefix(prefix.clone(), crate::lock::monitor_options(retry_time));
    let mut failing = false;
    loop {
        match watcher.next().await {
            Ok((pairs, _)) => {
                let doc = pairs.iter().find(|p| p.key == lock_key).and_then(|p| {
                    serde_json::from_slice::<SemaphoreLock>(p.value.as_deref()?).ok()
                });
                let holds = doc.is_some_and(|mut d| {
                    prune(&mut d, &pairs, &prefix);
                    d.holders.contains_key(session.as_str())
                });
                if !holds {
                    tracing::warn!(%prefix, "semaphore slot lost");
                    set_state(&state, HoldState::Lost);
                    return;
                }
                if std::mem::take(&mut failing) {
                    set_state(&state, HoldState::Held);
                }
            }
            Err(e) => {
                if watcher.failures() > retries {
                    tracing::warn!(%prefix, error = %e, "cannot watch the semaphore; slot lost");
                    set_state(&state, HoldState::Lost);
                    return;
                }
                failing = true;
                set_state(&state, HoldState::Uncertain);
            }
        }
    }
}

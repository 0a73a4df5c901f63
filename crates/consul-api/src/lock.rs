//! A distributed lock on one key, compatible with Go's `consul/api` `Lock`.
//!
//! Same key layout and flags as Go's (`0x2ddccbc058a50c18`), so Rust and Go processes can
//! contend for the same lock. The holder gets a [`LockGuard`] whose
//! [`fencing_token`](LockGuard::fencing_token) is the key's `LockIndex` (it grows with every
//! new holder) and whose [`lost`](LockGuard::lost) future resolves if the lock is lost:
//! the session could not be renewed, or a blocking watch saw the key change hands.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::watch as signal;
use tokio::task::JoinHandle;

use crate::session::{Behavior, SessionRequest};
use crate::types::{Index, QueryOptions, SessionId};
use crate::{Client, Error};

/// The flags Go's `api.Lock` stores on its key.
pub const LOCK_FLAG_VALUE: u64 = 0x2ddc_cbc0_58a5_0c18;

/// How a [`Lock`] behaves; the defaults are Go's.
#[derive(Clone, Debug)]
pub struct LockOptions {
    /// The key to lock.
    pub key: String,
    /// The value written while the lock is held (the holder's identity).
    pub value: Bytes,
    /// An existing session to lock with; otherwise one is created (and destroyed on release).
    pub session: Option<SessionId>,
    /// Name of the created session.
    pub session_name: String,
    /// TTL of the created session; it is renewed every TTL/2.
    pub session_ttl: Duration,
    /// Lock-delay of the created session (Consul's default: 15 s).
    pub lock_delay: Option<Duration>,
    /// How long each blocking wait for the key lasts.
    pub lock_wait_time: Duration,
    /// How long to wait before retrying while a lock-delay blocks acquisition.
    pub lock_retry_time: Duration,
    /// Failed watch reads tolerated before the lock is considered lost.
    pub monitor_retries: u32,
    /// Delay between those retries.
    pub monitor_retry_time: Duration,
}

impl LockOptions {
    /// Go's defaults for `key`: session TTL 15 s, lock wait 15 s, retry every 5 s.
    pub fn new(key: impl Into<String>) -> Self {
        LockOptions {
            key: key.into(),
            value: Bytes::new(),
            session: None,
            session_name: "Consul API Lock".into(),
            session_ttl: Duration::from_secs(15),
            lock_delay: None,
            lock_wait_time: Duration::from_secs(15),
            lock_retry_time: Duration::from_secs(5),
            monitor_retries: 0,
            monitor_retry_time: Duration::from_secs(2),
        }
    }
}

/// A lock on one key. See the [module docs](self).
#[derive(Clone, Debug)]
pub struct Lock {
    client: Client,
    opts: LockOptions,
}

/// The lock, held. Release it with [`release`](LockGuard::release); dropping it stops the
/// renewals and releases it in the background.
#[derive(Debug)]
pub struct LockGuard {
    client: Client,
    key: String,
    session: SessionId,
    owns_session: bool,
    fencing_token: Index,
    lost: signal::Receiver<bool>,
    tasks: Vec<JoinHandle<()>>,
    released: bool,
}

impl Lock {
    /// A lock with `opts`.
    pub fn new(client: Client, opts: LockOptions) -> Self {
        Lock { client, opts }
    }

    /// Waits until the lock is held. Cancel by dropping the future.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        loop {
            if let Some(guard) = self.try_acquire().await? {
                return Ok(guard);
            }
        }
    }

    /// Tries for up to `lock_wait_time`; `Ok(None)` if the lock stayed taken.
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        let (session, owns_session) = match &self.opts.session {
            Some(s) => (s.clone(), false),
            None => (self.create_session().await?, true),
        };
        let (lost_tx, lost_rx) = signal::channel(false);
        let renew = owns_session.then(|| {
            tokio::spawn(keep_alive(
                self.client.clone(),
                session.clone(),
                self.opts.session_ttl,
                lost_tx.clone(),
            ))
        });
        match self.wait_for_lock(&session).await {
            Ok(Some(token)) => {
                let monitor = tokio::spawn(monitor_key(
                    self.client.clone(),
                    self.opts.key.clone(),
                    session.clone(),
                    self.opts.clone(),
                    lost_tx,
                ));
                let mut tasks = vec![monitor];
                tasks.extend(renew);
                Ok(Some(LockGuard {
                    client: self.client.clone(),
                    key: self.opts.key.clone(),
                    session,
                    owns_session,
                    fencing_token: token,
                    lost: lost_rx,
                    tasks,
                    released: false,
                }))
            }
            other => {
                if let Some(r) = renew {
                    r.abort();
                }
                if owns_session {
                    let _ = self.client.session().destroy(&session).await;
                }
                other.map(|_| None)
            }
        }
    }

    async fn create_session(&self) -> Result<SessionId, Error> {
        let req = SessionRequest {
            name: self.opts.session_name.clone(),
            ttl: Some(self.opts.session_ttl),
            lock_delay: self.opts.lock_delay,
            behavior: Behavior::Release,
            ..Default::default()
        };
        self.client.session().create(&req).await
    }

    /// One round of Go's acquisition loop, bounded by `lock_wait_time`: the fencing token
    /// when the lock was taken, `None` when the time ran out.
    async fn wait_for_lock(&self, session: &SessionId) -> Result<Option<Index>, Error> {
        let deadline = tokio::time::Instant::now() + self.opts.lock_wait_time;
        let kv = self.client.kv();
        let key = &self.opts.key;
        let mut index = Index(0);
        loop {
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            let opts = QueryOptions::blocking(index, deadline - now).consistent();
            let (pair, meta) = kv.get(key, &opts).await?;
            if let Some(p) = &pair {
                if p.flags != LOCK_FLAG_VALUE {
                    return Err(Error::aborted(format!(
                        "key {key:?} exists with flags {:#x}: it is not used as a lock",
                        p.flags
                    )));
                }
                match &p.session {
                    Some(s) if s == session => return Ok(Some(p.lock_index)),
                    Some(_) => {
                        index = meta.last_index.max(Index(1));
                        continue;
                    }
                    None => {}
                }
            }
            if kv.acquire(key, self.opts.value.clone(), session, LOCK_FLAG_VALUE).await? {
                let (pair, _) = kv.get(key, &QueryOptions::default().consistent()).await?;
                match pair {
                    Some(p) if p.session.as_ref() == Some(session) => {
                        return Ok(Some(p.lock_index));
                    }
                    _ => continue,
                }
            }
            // Refused while nobody holds it: a lock-delay is running. Wait it out.
            let (pair, _) = kv.get(key, &QueryOptions::default().consistent()).await?;
            if pair.is_some_and(|p| p.session.is_some()) {
                continue;
            }
            let pause = self.opts.lock_retry_time.min(deadline - tokio::time::Instant::now());
            tokio::time::sleep(pause).await;
            index = Index(0);
        }
    }
}

impl LockGuard {
    /// The key's `LockIndex` when this holder acquired it: a fencing token that grows with
    /// every new holder, for guarding writes made on the lock's behalf.
    pub fn fencing_token(&self) -> Index {
        self.fencing_token
    }

    /// The session holding the lock.
    pub fn session(&self) -> &SessionId {
        &self.session
    }

    /// True once the lock is known to be lost.
    pub fn is_lost(&self) -> bool {
        *self.lost.borrow()
    }

    /// Resolves when the lock is lost (session not renewed, or the key changed hands).
    pub async fn lost(&self) {
        let mut rx = self.lost.clone();
        let _ = rx.wait_for(|lost| *lost).await;
    }

    /// Releases the lock, then destroys the session if the lock created it (Go's `Unlock`).
    /// A release is immediate: no lock-delay applies, so a waiter can take over at once.
    pub async fn release(mut self) -> Result<(), Error> {
        self.released = true;
        for t in &self.tasks {
            t.abort();
        }
        release(&self.client, &self.key, &self.session, self.owns_session).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
        if !self.released
            && let Ok(rt) = tokio::runtime::Handle::try_current()
        {
            let (client, key, session, owns) =
                (self.client.clone(), self.key.clone(), self.session.clone(), self.owns_session);
            rt.spawn(async move {
                if let Err(e) = release(&client, &key, &session, owns).await {
                    tracing::warn!(%key, error = %e, "releasing a dropped lock failed");
                }
            });
        }
    }
}

async fn release(client: &Client, key: &str, session: &SessionId, owns: bool) -> Result<(), Error> {
    let released = client.kv().release(key, Bytes::new(), session, LOCK_FLAG_VALUE).await;
    if owns {
        client.session().destroy(session).await?;
    }
    released.map(|_| ())
}

/// Renews `session` every `ttl / 2`; signals loss when Consul says the session is gone or
/// no renewal succeeded for a whole TTL.
pub(crate) async fn keep_alive(
    client: Client,
    session: SessionId,
    ttl: Duration,
    lost: signal::Sender<bool>,
) {
    let mut last_ok = tokio::time::Instant::now();
    let mut delay = ttl / 2;
    loop {
        tokio::time::sleep(delay).await;
        match client.session().renew(&session).await {
            Ok(Some(_)) => {
                last_ok = tokio::time::Instant::now();
                delay = ttl / 2;
            }
            Ok(None) => {
                tracing::warn!(%session, "session is gone; lock lost");
                let _ = lost.send(true);
                return;
            }
            Err(e) => {
                if last_ok.elapsed() >= ttl {
                    tracing::warn!(%session, error = %e, "no renewal within the TTL; lock lost");
                    let _ = lost.send(true);
                    return;
                }
                delay = Duration::from_secs(1).min(ttl / 4);
            }
        }
    }
}

/// Watches the key with consistent blocking reads; signals loss when it is gone or held by
/// another session, or after `monitor_retries` failed reads in a row.
async fn monitor_key(
    client: Client,
    key: String,
    session: SessionId,
    opts: LockOptions,
    lost: signal::Sender<bool>,
) {
    let mut index = Index(0);
    let mut failures = 0;
    loop {
        let q = QueryOptions::blocking(index, Duration::from_secs(300)).consistent();
        match client.kv().get(&key, &q).await {
            Ok((pair, meta)) => {
                failures = 0;
                if pair.and_then(|p| p.session).as_ref() != Some(&session) {
                    tracing::warn!(%key, "lock key changed hands; lock lost");
                    let _ = lost.send(true);
                    return;
                }
                index =
                    crate::watch::next_index(index, meta.last_index).unwrap_or(index).max(Index(1));
            }
            Err(e) => {
                failures += 1;
                if failures > opts.monitor_retries {
                    tracing::warn!(%key, error = %e, "cannot watch the lock key; lock lost");
                    let _ = lost.send(true);
                    return;
                }
                tokio::time::sleep(opts.monitor_retry_time).await;
            }
        }
    }
}

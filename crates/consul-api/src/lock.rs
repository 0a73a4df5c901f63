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

pub use crate::contender::HoldState;
use crate::contender::{Contender, set_state};
use crate::session::Behavior;
use crate::types::{Index, QueryOptions, SessionId};
use crate::watch::WatchOptions;
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
    /// The lock's value, written again on release as Go's `Unlock` does.
    value: Bytes,
    session: SessionId,
    owns_session: bool,
    fencing_token: Index,
    state: signal::Receiver<HoldState>,
    tasks: Vec<JoinHandle<()>>,
    released: bool,
}

impl Client {
    /// A lock on `key` with Go's defaults (Go's `LockKey`); [`Lock::new`] takes
    /// [`LockOptions`].
    ///
    /// ```no_run
    /// # async fn run(client: consul_api::Client) -> Result<(), consul_api::Error> {
    /// let guard = client.lock("service/leader").acquire().await?;
    /// // … act as the leader, guarding writes with guard.fencing_token() …
    /// guard.release().await?;
    /// # Ok(())
    /// # }
    /// ```
    pub fn lock(&self, key: impl Into<String>) -> Lock {
        Lock::new(self.clone(), LockOptions::new(key))
    }
}

impl Lock {
    /// A lock with `opts`.
    pub fn new(client: Client, opts: LockOptions) -> Self {
        Lock { client, opts }
    }

    /// Waits until the lock is held. Cancel by dropping the future. One session serves
    /// every wait round and is renewed all along, as in Go's `Lock`.
    pub async fn acquire(&self) -> Result<LockGuard, Error> {
        let contender = self.contender().await?;
        loop {
            if let Some(token) = self.wait_for_lock(&contender.session).await? {
                return Ok(self.hold(contender, token));
            }
        }
    }

    /// Tries for up to `lock_wait_time`; `Ok(None)` if the lock stayed taken (the session it
    /// created for the try is destroyed).
    pub async fn try_acquire(&self) -> Result<Option<LockGuard>, Error> {
        let contender = self.contender().await?;
        Ok(self.wait_for_lock(&contender.session).await?.map(|token| self.hold(contender, token)))
    }

    async fn contender(&self) -> Result<Contender, Error> {
        let request = Contender::request(
            &self.opts.session_name,
            self.opts.session_ttl,
            self.opts.lock_delay,
            Behavior::Release,
        );
        Contender::start(&self.client, self.opts.session.clone(), request).await
    }

    /// The lock is ours: start watching the key, and hand the session to the guard.
    fn hold(&self, contender: Contender, token: Index) -> LockGuard {
        let (session, owns_session, state, renew) = contender.into_parts();
        let rx = state.subscribe();
        let monitor = tokio::spawn(monitor_key(
            self.client.clone(),
            self.opts.key.clone(),
            session.clone(),
            self.opts.clone(),
            state,
        ));
        let mut tasks = vec![monitor];
        tasks.extend(renew);
        LockGuard {
            client: self.client.clone(),
            key: self.opts.key.clone(),
            value: self.opts.value.clone(),
            session,
            owns_session,
            fencing_token: token,
            state: rx,
            tasks,
            released: false,
        }
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
            let (pair, meta) = kv.get_with(key, &opts).await?;
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
                        index = crate::watch::advance(index, meta.last_index).0;
                        continue;
                    }
                    None => {}
                }
            }
            if kv.acquire(key, self.opts.value.clone(), session, LOCK_FLAG_VALUE).await? {
                let (pair, _) = kv.get_with(key, &QueryOptions::default().consistent()).await?;
                match pair {
                    Some(p) if p.session.as_ref() == Some(session) => {
                        return Ok(Some(p.lock_index));
                    }
                    _ => continue,
                }
            }
            // Refused while nobody holds it: a lock-delay is running. Wait it out.
            let (pair, _) = kv.get_with(key, &QueryOptions::default().consistent()).await?;
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

    /// What is known of the lock now: held, uncertain (Consul has not answered lately) or
    /// lost.
    pub fn state(&self) -> HoldState {
        *self.state.borrow()
    }

    /// True once the lock is known to be lost.
    pub fn is_lost(&self) -> bool {
        self.state() == HoldState::Lost
    }

    /// Resolves when the lock is lost (session gone or not renewed for a TTL, or the key
    /// changed hands, or `monitor_retries` watch reads failed in a row).
    pub async fn lost(&self) {
        let mut rx = self.state.clone();
        let _ = rx.wait_for(|s| *s == HoldState::Lost).await;
    }

    /// Releases the lock, then destroys the session if the lock created it (Go's `Unlock`).
    /// A release is immediate: no lock-delay applies, so a waiter can take over at once.
    ///
    /// `Ok(true)` when Consul released it; `Ok(false)` when there was nothing to release
    /// because the session no longer exists (it expired or was destroyed: the lock had been
    /// lost), which Consul answers with `false`, not an error.
    pub async fn release(mut self) -> Result<bool, Error> {
        self.released = true;
        for t in &self.tasks {
            t.abort();
        }
        release(&self.client, &self.key, &self.value, &self.session, self.owns_session).await
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
            let (client, key, value, session, owns) = (
                self.client.clone(),
                self.key.clone(),
                self.value.clone(),
                self.session.clone(),
                self.owns_session,
            );
            rt.spawn(async move {
                match release(&client, &key, &value, &session, owns).await {
                    Ok(true) => {}
                    Ok(false) => tracing::debug!(%key, "a dropped lock was no longer held"),
                    Err(e) => tracing::warn!(%key, error = %e, "releasing a dropped lock failed"),
                }
            });
        }
    }
}

/// Go's `Unlock`: release with the lock's own value (so the key keeps it), then destroy the
/// session if the lock created it. A session that is already gone answers `false`.
async fn release(
    client: &Client,
    key: &str,
    value: &Bytes,
    session: &SessionId,
    owns: bool,
) -> Result<bool, Error> {
    let released = client.kv().release(key, value.clone(), session, LOCK_FLAG_VALUE).await;
    if owns {
        client.session().destroy(session).await?;
    }
    released
}

/// Watches the key with consistent blocking reads; the lock is lost when the key is gone or
/// held by another session, uncertain while reads fail, and lost after `monitor_retries`
/// failed reads in a row (Go's `MonitorRetries`, retried every `monitor_retry_time`).
async fn monitor_key(
    client: Client,
    key: String,
    session: SessionId,
    opts: LockOptions,
    state: signal::Sender<HoldState>,
) {
    let mut watcher = client.watch_key(key.clone(), monitor_options(opts.monitor_retry_time));
    let mut failing = false;
    loop {
        match watcher.next().await {
            Ok((pair, _)) => {
                if pair.and_then(|p| p.session).as_ref() != Some(&session) {
                    tracing::warn!(%key, "lock key changed hands; lock lost");
                    set_state(&state, HoldState::Lost);
                    return;
                }
                if std::mem::take(&mut failing) {
                    set_state(&state, HoldState::Held);
                }
            }
            Err(e) => {
                if watcher.failures() > opts.monitor_retries {
                    tracing::warn!(%key, error = %e, "cannot watch the lock key; lock lost");
                    set_state(&state, HoldState::Lost);
                    return;
                }
                failing = true;
                set_state(&state, HoldState::Uncertain);
            }
        }
    }
}

/// How a holder watches what it holds: consistent blocking reads (Go's `monitorLock`),
/// retried every `retry_time` (drawn from `[retry_time/2, retry_time]`) after a failure.
pub(crate) fn monitor_options(retry_time: Duration) -> WatchOptions {
    WatchOptions {
        min_interval: Duration::ZERO,
        initial_backoff: retry_time,
        max_backoff: retry_time,
        ..WatchOptions::with_wait(Duration::from_secs(300)).consistent()
    }
}

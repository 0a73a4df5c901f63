//! Lock and Semaphore behave as Go's `consul/api` does, on every backend: the sim in-process,
//! the sim over HTTP and real Consul 1.8.7 (real time, so each test is bounded: sessions use
//! Consul's minimum TTL of 10 s, and the backends run side by side).
//!
//! - A contender's session is created once per attempt and renewed while it waits: it
//!   outlives 2 × TTL (when Consul reaps an unrenewed session) across many wait rounds.
//! - Loss detection tolerates failed reads like Go's `MonitorRetries` and says "uncertain"
//!   before "lost"; with no retries (Go's default) one failed read loses the lock.
//! - A lock whose session is gone is lost, and its release answers `Ok(false)`.
//!
//! (The release sending the lock's value back is
//! `conformance::a_released_lock_keeps_its_value_and_a_gone_session_releases_nothing`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use consul_api::lock::{HoldState, LOCK_FLAG_VALUE, LockOptions};
use consul_api::semaphore::SemaphoreOptions;
use consul_api::{Client, Error, QueryOptions, Request, Response, SessionId, Transport};
use futures_util::future::join_all;

use crate::support::{Backend, backends, unique};

const TTL: Duration = Duration::from_secs(10);

/// Fails every request while `cut` is set, as a network cut between client and agent would.
#[derive(Debug)]
struct Cut {
    inner: Arc<dyn Transport>,
    cut: Arc<AtomicBool>,
}

#[async_trait]
impl Transport for Cut {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        if self.cut.load(Ordering::SeqCst) {
            return Err(Error::connect("cut off by the test"));
        }
        self.inner.send(req).await
    }
}

fn cuttable(client: &Client) -> (Client, Arc<AtomicBool>) {
    let cut = Arc::new(AtomicBool::new(false));
    let c = cut.clone();
    (client.layered(move |inner| Cut { inner, cut: c }), cut)
}

/// The ids of the sessions named `name`.
async fn sessions_named(client: &Client, name: &str) -> Vec<SessionId> {
    let (all, _) = client.session().list(&QueryOptions::default()).await.unwrap();
    all.into_iter().filter(|s| s.name == name).map(|s| s.id).collect()
}

/// Waits (≤ `within`) until `f` holds.
async fn eventually(within: Duration, what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + within;
    while !f() {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn waiting_lock_keeps_its_session(b: &Backend) {
    let key = unique("parity-lock");
    let name = format!("{key} waiter");
    let holder = b.client.lock(key.clone()).acquire().await.unwrap();
    let mut opts = LockOptions::new(key.clone());
    opts.session_name = name.clone();
    opts.session_ttl = TTL;
    // Many short wait rounds: Go re-creates nothing between them.
    opts.lock_wait_time = Duration::from_secs(1);
    let lock = consul_api::lock::Lock::new(b.client.clone(), opts);
    let waiter = tokio::spawn(async move { lock.acquire().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sessions_named(&b.client, &name).await;
    assert_eq!(before.len(), 1, "{}: one session for the waiting contender", b.name);
    // Longer than 2 × TTL, when Consul reaps a session nobody renews.
    tokio::time::sleep(2 * TTL + Duration::from_secs(2)).await;
    assert_eq!(sessions_named(&b.client, &name).await, before, "{}: kept and renewed", b.name);
    let first_token = holder.fencing_token();
    assert!(holder.release().await.unwrap(), "{}", b.name);
    let guard = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap_or_else(|_| panic!("{}: the waiter took over", b.name))
        .unwrap()
        .unwrap();
    assert_eq!(guard.session(), &before[0], "{}: holds with the session it waited with", b.name);
    assert!(guard.fencing_token() > first_token, "{}", b.name);
    assert!(guard.release().await.unwrap(), "{}", b.name);
    assert!(sessions_named(&b.client, &name).await.is_empty(), "{}: destroyed", b.name);
}

async fn waiting_semaphore_contender_keeps_its_session(b: &Backend) {
    let prefix = unique("parity-sema");
    let name = format!("{prefix} waiter");
    let first = b.client.semaphore(prefix.clone(), 1).unwrap().acquire().await.unwrap();
    let mut opts = SemaphoreOptions::new(prefix.clone(), 1);
    opts.session_name = name.clone();
    opts.session_ttl = TTL;
    opts.wait_time = Duration::from_secs(1);
    let second = consul_api::semaphore::Semaphore::new(b.client.clone(), opts).unwrap();
    let waiter = tokio::spawn(async move { second.acquire().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let before = sessions_named(&b.client, &name).await;
    assert_eq!(before.len(), 1, "{}", b.name);
    tokio::time::sleep(2 * TTL + Duration::from_secs(2)).await;
    assert_eq!(sessions_named(&b.client, &name).await, before, "{}: kept and renewed", b.name);
    // Its contender key, held by that session, is still there.
    let contender = b.client.kv().get(&format!("{prefix}/{}", before[0])).await.unwrap();
    assert_eq!(contender.and_then(|p| p.session).as_ref(), Some(&before[0]), "{}", b.name);
    first.release().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .unwrap_or_else(|_| panic!("{}: the waiting contender got the slot", b.name))
        .unwrap()
        .unwrap();
    assert_eq!(second.session(), &before[0], "{}", b.name);
    second.release().await.unwrap();
}

#[tokio::test]
async fn a_waiting_contender_keeps_one_renewed_session_past_twice_its_ttl() {
    let all = backends().await;
    join_all(all.iter().map(|b| async move {
        tokio::join!(
            waiting_lock_keeps_its_session(b),
            waiting_semaphore_contender_keeps_its_session(b)
        );
    }))
    .await;
}

async fn monitor_retries(b: &Backend) {
    // Tolerant: 30 failed reads, one every ≤ 500 ms.
    let (cut_client, cut) = cuttable(&b.client);
    let key = unique("parity-monitor");
    let mut opts = LockOptions::new(key.clone());
    opts.session_ttl = TTL;
    opts.monitor_retries = 30;
    opts.monitor_retry_time = Duration::from_millis(500);
    let held = consul_api::lock::Lock::new(cut_client, opts).acquire().await.unwrap();
    let session = held.session().clone();
    cut.store(true, Ordering::SeqCst);
    // Touch the key (same session, same value): the holder's blocking read returns, and its
    // next read fails.
    assert!(b.client.kv().acquire(&key, "", &session, LOCK_FLAG_VALUE).await.unwrap());
    eventually(Duration::from_secs(3), &format!("{}: uncertain while cut off", b.name), || {
        held.state() == HoldState::Uncertain
    })
    .await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(held.state(), HoldState::Uncertain, "{}: tolerated, not lost", b.name);
    cut.store(false, Ordering::SeqCst);
    eventually(
        Duration::from_secs(3),
        &format!("{}: held again once Consul answers", b.name),
        || held.state() == HoldState::Held,
    )
    .await;
    assert!(held.release().await.unwrap(), "{}", b.name);

    // Go's default, no retries: one failed read and the lock is lost, well before the
    // session's TTL could end it.
    let (cut_client, cut) = cuttable(&b.client);
    let key = unique("parity-monitor0");
    let mut opts = LockOptions::new(key.clone());
    opts.session_ttl = TTL;
    let held = consul_api::lock::Lock::new(cut_client, opts).acquire().await.unwrap();
    let session = held.session().clone();
    cut.store(true, Ordering::SeqCst);
    assert!(b.client.kv().acquire(&key, "", &session, LOCK_FLAG_VALUE).await.unwrap());
    tokio::time::timeout(Duration::from_secs(2), held.lost())
        .await
        .unwrap_or_else(|_| panic!("{}: one failed read loses the lock", b.name));
    cut.store(false, Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(held.state(), HoldState::Lost, "{}: lost stays lost", b.name);
    b.client.session().destroy(&session).await.unwrap();
}

#[tokio::test]
async fn monitor_retries_make_a_cut_off_holder_uncertain_and_none_lose_it_at_once() {
    let all = backends().await;
    join_all(all.iter().map(monitor_retries)).await;
}

async fn gone_session(b: &Backend) {
    let key = unique("parity-gone");
    let mut opts = LockOptions::new(key.clone());
    opts.value = "me".into();
    opts.session_ttl = TTL;
    let held = consul_api::lock::Lock::new(b.client.clone(), opts).acquire().await.unwrap();
    b.client.session().destroy(held.session()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), held.lost())
        .await
        .unwrap_or_else(|_| panic!("{}: the holder sees its session gone", b.name));
    assert!(!held.release().await.unwrap(), "{}: nothing to release: Ok(false)", b.name);

    let prefix = unique("parity-gone-sema");
    let permit = b.client.semaphore(prefix.clone(), 2).unwrap().acquire().await.unwrap();
    b.client.session().destroy(permit.session()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(2), permit.lost())
        .await
        .unwrap_or_else(|_| panic!("{}: the permit sees its contender key gone", b.name));
    permit.release().await.unwrap();
}

#[tokio::test]
async fn a_holder_whose_session_is_destroyed_loses_it_and_releases_nothing() {
    let all = backends().await;
    join_all(all.iter().map(gone_session)).await;
}

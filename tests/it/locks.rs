//! Sessions, TTLs, lock-delay, `Lock` and `Semaphore` on the sim, in paused time.

use std::time::Duration;

use consul_api::lock::{LOCK_FLAG_VALUE, Lock, LockOptions};
use consul_api::semaphore::{Semaphore, SemaphoreOptions};
use consul_api::session::SessionRequest;
use consul_api::{Index, QueryOptions};
use consul_sim::{Sim, SimConfig};

fn sim() -> Sim {
    Sim::new(SimConfig::default())
}

#[tokio::test(start_paused = true)]
async fn a_session_expires_after_its_ttl_and_its_lock_waits_out_the_lock_delay() {
    let sim = sim();
    let c = sim.client("a");
    let req = SessionRequest {
        ttl: Some(Duration::from_secs(10)),
        lock_delay: Some(Duration::from_secs(5)),
        ..Default::default()
    };
    let s1 = c.session().create(&req).await.unwrap();
    assert!(c.kv().acquire("leader", "a", &s1, 0).await.unwrap());
    let start = tokio::time::Instant::now();
    // Consul reaps at 2 × TTL after the last renew (measured on 1.8.7: 20.0 s for 10 s).
    tokio::time::sleep(Duration::from_millis(19_900)).await;
    assert!(c.session().info(&s1, &QueryOptions::default()).await.unwrap().0.is_some());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(c.session().info(&s1, &QueryOptions::default()).await.unwrap().0.is_none());
    let pair = c.kv().get("leader").await.unwrap().unwrap();
    assert_eq!(pair.session, None, "behavior release frees the key");
    // The lock-delay (5 s from the expiry at 20 s) blocks every new holder until 25 s.
    let s2 = c.session().create(&SessionRequest::default()).await.unwrap();
    assert!(!c.kv().acquire("leader", "b", &s2, 0).await.unwrap());
    tokio::time::sleep_until(start + Duration::from_millis(24_900)).await;
    assert!(!c.kv().acquire("leader", "b", &s2, 0).await.unwrap());
    tokio::time::sleep_until(start + Duration::from_millis(25_001)).await;
    assert!(c.kv().acquire("leader", "b", &s2, 0).await.unwrap());
    assert_eq!(c.kv().get("leader").await.unwrap().unwrap().lock_index, Index(2));
}

#[tokio::test(start_paused = true)]
async fn renewing_keeps_a_session_alive_and_grace_stretches_the_ttl() {
    // The default grace is Consul's own multiplier, 2.
    let sim = sim();
    let c = sim.client("a");
    let req = SessionRequest { ttl: Some(Duration::from_secs(10)), ..Default::default() };
    let s = c.session().create(&req).await.unwrap();
    for _ in 0..5 {
        tokio::time::sleep(Duration::from_secs(8)).await;
        assert!(c.session().renew(&s).await.unwrap().is_some());
    }
    // At grace 2 the session outlives its TTL until 2 × TTL.
    tokio::time::sleep(Duration::from_secs(19)).await;
    assert!(c.session().info(&s, &QueryOptions::default()).await.unwrap().0.is_some());
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(c.session().renew(&s).await.unwrap().is_none());
}

#[tokio::test(start_paused = true)]
async fn a_lock_hands_over_at_once_on_release_with_a_higher_fencing_token() {
    let sim = sim();
    let mut opts = LockOptions::new("service/leader");
    opts.value = "node-a".into();
    let a = Lock::new(sim.client("a"), opts.clone()).acquire().await.unwrap();
    let token_a = a.fencing_token();
    let pair = sim
        .client("x")
        .kv()
        .get_with("service/leader", &QueryOptions::default())
        .await
        .unwrap()
        .0
        .unwrap();
    assert_eq!(pair.flags, LOCK_FLAG_VALUE, "Go's lock flags, for interoperability");
    assert_eq!(pair.value.as_deref(), Some(&b"node-a"[..]));

    opts.value = "node-b".into();
    let lock_b = Lock::new(sim.client("b"), opts);
    let waiter = tokio::spawn(async move { lock_b.acquire().await });
    tokio::time::sleep(Duration::from_secs(20)).await;
    assert!(!waiter.is_finished(), "b must wait while a holds the lock");
    assert!(!a.is_lost(), "renewals keep a's session alive");
    let released_at = tokio::time::Instant::now();
    a.release().await.unwrap();
    let b = waiter.await.unwrap().unwrap();
    assert!(
        released_at.elapsed() < Duration::from_secs(1),
        "handover took {:?}",
        released_at.elapsed()
    );
    assert!(b.fencing_token() > token_a);
    b.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_holder_learns_it_lost_the_lock() {
    let sim = sim();
    let held = Lock::new(sim.client("a"), LockOptions::new("k")).acquire().await.unwrap();
    let partitioned_at = tokio::time::Instant::now();
    sim.partition("a", true);
    // The holder cannot confirm its lock any more: it reports the loss before the session
    // can expire (15 s TTL), so it stops acting before anyone else can take over.
    tokio::time::timeout(Duration::from_secs(15), held.lost()).await.expect("loss is reported");
    assert!(held.is_lost());
    // Another contender takes over once 2 × TTL (30 s: Consul's reaping) and the
    // lock-delay (15 s) have run, within one retry period (5 s).
    let b = Lock::new(sim.client("b"), LockOptions::new("k")).acquire().await.unwrap();
    let took = partitioned_at.elapsed();
    assert!(took >= Duration::from_secs(45) && took <= Duration::from_secs(51), "took {took:?}");
    assert!(b.fencing_token() > held.fencing_token());
}

#[tokio::test(start_paused = true)]
async fn a_lock_refuses_a_key_that_is_not_a_lock() {
    let sim = sim();
    sim.client("a").kv().put("plain", "data").await.unwrap();
    let err = Lock::new(sim.client("a"), LockOptions::new("plain")).acquire().await.unwrap_err();
    assert!(err.to_string().contains("not used as a lock"), "{err}");
    // Nothing stored was lost.
    let (v, _) = sim.client("a").kv().get_raw("plain", &QueryOptions::default()).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"data"[..]));
}

#[tokio::test(start_paused = true)]
async fn a_semaphore_admits_at_most_its_limit() {
    let sim = sim();
    let opts = SemaphoreOptions::new("service/workers", 2);
    let s1 = Semaphore::new(sim.client("1"), opts.clone()).unwrap().acquire().await.unwrap();
    let s2 = Semaphore::new(sim.client("2"), opts.clone()).unwrap().acquire().await.unwrap();
    let third = Semaphore::new(sim.client("3"), opts.clone()).unwrap();
    assert!(third.try_acquire().await.unwrap().is_none(), "a third holder must wait");
    let waiter = tokio::spawn(async move { third.acquire().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(!waiter.is_finished());
    s1.release().await.unwrap();
    let s3 = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    let (pair, _) = sim
        .client("x")
        .kv()
        .get_with("service/workers/.lock", &QueryOptions::default())
        .await
        .unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&pair.unwrap().value.unwrap()).unwrap();
    assert_eq!(doc["Limit"], 2);
    assert_eq!(doc["Holders"].as_object().unwrap().len(), 2);
    assert!(!s2.is_lost() && !s3.is_lost());
    // A contender with another limit is refused, naming both.
    let other =
        Semaphore::new(sim.client("4"), SemaphoreOptions::new("service/workers", 3)).unwrap();
    let err = other.try_acquire().await.unwrap_err();
    assert!(err.to_string().contains("limit 2"), "{err}");
    s2.release().await.unwrap();
    s3.release().await.unwrap();
}

/// The sessions the sim holds now.
async fn sessions(sim: &Sim) -> Vec<consul_api::SessionId> {
    let (list, _) = sim.client("x").session().list(&QueryOptions::default()).await.unwrap();
    list.into_iter().map(|s| s.id).collect()
}

#[tokio::test(start_paused = true)]
async fn a_waiting_lock_keeps_one_renewed_session_across_wait_rounds() {
    // Sessions reaped at 2 × TTL, as Consul does: an unrenewed 15 s session dies at 30 s.
    let sim = Sim::new(SimConfig { ttl_grace: 2.0, ..SimConfig::default() });
    let a = Lock::new(sim.client("a"), LockOptions::new("k")).acquire().await.unwrap();
    let lock_b = Lock::new(sim.client("b"), LockOptions::new("k"));
    let waiter = tokio::spawn(async move { lock_b.acquire().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = sessions(&sim).await;
    assert_eq!(during.len(), 2, "a's session and b's");
    // Four wait rounds of 15 s, twice the session's reaping time.
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sessions(&sim).await, during, "one session per contender, kept alive");
    a.release().await.unwrap();
    let b = tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert!(during.contains(b.session()), "b holds with the session it waited with");
    b.release().await.unwrap();
    assert!(sessions(&sim).await.is_empty(), "released locks destroy their sessions");
}

#[tokio::test(start_paused = true)]
async fn a_waiting_semaphore_contender_keeps_its_session_and_its_place() {
    let sim = Sim::new(SimConfig { ttl_grace: 2.0, ..SimConfig::default() });
    let opts = SemaphoreOptions::new("service/one", 1);
    let first = Semaphore::new(sim.client("1"), opts.clone()).unwrap().acquire().await.unwrap();
    let second = Semaphore::new(sim.client("2"), opts).unwrap();
    let waiter = tokio::spawn(async move { second.acquire().await });
    tokio::time::sleep(Duration::from_secs(1)).await;
    let during = sessions(&sim).await;
    assert_eq!(during.len(), 2);
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert_eq!(sessions(&sim).await, during, "the waiting contender's session was renewed");
    let (keys, _) =
        sim.client("x").kv().keys("service/one/", None, &QueryOptions::default()).await.unwrap();
    assert_eq!(keys.len(), 3, "two contender keys and .lock: {keys:?}");
    first.release().await.unwrap();
    let second =
        tokio::time::timeout(Duration::from_secs(5), waiter).await.unwrap().unwrap().unwrap();
    assert!(during.contains(second.session()));
    second.release().await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn a_holder_cut_off_from_consul_is_uncertain_then_held_again() {
    use consul_api::lock::HoldState;
    let sim = Sim::new(SimConfig { ttl_grace: 2.0, ..SimConfig::default() });
    let mut opts = LockOptions::new("k");
    // Twenty seconds of failed watch reads tolerated (Go's MonitorRetries × MonitorRetryTime).
    opts.monitor_retries = 10;
    let held = Lock::new(sim.client("a"), opts).acquire().await.unwrap();
    assert_eq!(held.state(), HoldState::Held);
    sim.partition("a", true);
    // The next renewal (every TTL/2 = 7.5 s) fails: not lost yet, but no longer confirmed.
    tokio::time::sleep(Duration::from_secs(8)).await;
    assert_eq!(held.state(), HoldState::Uncertain);
    sim.partition("a", false);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(held.state(), HoldState::Held, "a renewal went through again");
    // Cut off for longer than the TTL: lost, and lost stays lost.
    sim.partition("a", true);
    tokio::time::timeout(Duration::from_secs(20), held.lost()).await.expect("loss is reported");
    sim.partition("a", false);
    tokio::time::sleep(Duration::from_secs(10)).await;
    assert_eq!(held.state(), HoldState::Lost);
}

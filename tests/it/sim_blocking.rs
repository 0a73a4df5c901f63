//! Blocking queries on the sim, in paused time: deadlines, `?wait` and `?index` rules, and
//! the `X-Consul-Index` Consul 1.8.7 answers. Each request is one the real Consul was
//! asked too (the answers it gave are in the comments).

use std::time::Duration;

use bytes::Bytes;
use consul_sim::{Sim, SimConfig, SimRequest, SimResponse};
use http::{HeaderMap, Method};
use tokio::time::Instant;

async fn send(sim: &Sim, method: Method, target: &str, body: &'static [u8]) -> SimResponse {
    let req = SimRequest {
        method,
        target: target.to_string(),
        headers: HeaderMap::new(),
        body: Bytes::from_static(body),
    };
    sim.execute("test", req).await.expect("not partitioned")
}

fn index(r: &SimResponse) -> u64 {
    let v = r.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case("X-Consul-Index"));
    v.and_then(|(_, v)| v.parse().ok()).expect("X-Consul-Index")
}

fn text(r: &SimResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

#[tokio::test(start_paused = true)]
async fn writes_to_other_keys_never_extend_a_blocking_wait() {
    let sim = Sim::new(SimConfig::default());
    send(&sim, Method::PUT, "/v1/kv/a", b"1").await;
    let a = index(&send(&sim, Method::GET, "/v1/kv/a", b"").await);
    // A steady stream of writes to another key, every 100 ms, for a minute.
    let writer = {
        let sim = sim.clone();
        tokio::spawn(async move {
            for i in 0..600u32 {
                let body: &'static [u8] = if i % 2 == 0 { b"x" } else { b"y" };
                send(&sim, Method::PUT, "/v1/kv/b", body).await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let started = Instant::now();
    let r = send(&sim, Method::GET, &format!("/v1/kv/a?index={a}&wait=5s"), b"").await;
    let took = started.elapsed();
    writer.abort();
    // Real Consul returned within wait + wait/16 (≤ 5.4 s) under the same stream.
    assert!(took >= Duration::from_secs(5), "returned early: {took:?}");
    assert!(took <= Duration::from_millis(5_313), "the wait was re-armed: {took:?}");
    assert_eq!(r.status, 200);
    assert_eq!(index(&r), a, "key a did not change");
}

#[tokio::test(start_paused = true)]
async fn a_blocking_read_wakes_when_its_key_changes() {
    let sim = Sim::new(SimConfig::default());
    send(&sim, Method::PUT, "/v1/kv/a", b"1").await;
    let a = index(&send(&sim, Method::GET, "/v1/kv/a", b"").await);
    let writer = {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            send(&sim, Method::PUT, "/v1/kv/a", b"2").await;
        })
    };
    let started = Instant::now();
    let r = send(&sim, Method::GET, &format!("/v1/kv/a?index={a}&wait=60s"), b"").await;
    assert_eq!(started.elapsed(), Duration::from_secs(2));
    assert!(index(&r) > a);
    writer.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn wait_and_index_are_checked_as_consul_checks_them() {
    let sim = Sim::new(SimConfig::default());
    send(&sim, Method::PUT, "/v1/kv/k", b"v").await;
    // Consul: 400 "Invalid wait time" even without an index; "5" has no unit.
    for target in ["/v1/kv/k?wait=abc", "/v1/kv/k?wait=abc&index=5", "/v1/kv/k?wait=5"] {
        let r = send(&sim, Method::GET, target, b"").await;
        assert_eq!((r.status.as_u16(), text(&r).as_str()), (400, "Invalid wait time"), "{target}");
    }
    // Consul: 400 "Invalid index".
    for target in ["/v1/kv/k?index=abc", "/v1/kv/k?index=-1"] {
        let r = send(&sim, Method::GET, target, b"").await;
        assert_eq!((r.status.as_u16(), text(&r).as_str()), (400, "Invalid index"), "{target}");
    }
    // Consul: empty values are as if absent.
    for target in ["/v1/kv/k?index=", "/v1/kv/k?wait="] {
        assert_eq!(send(&sim, Method::GET, target, b"").await.status, 200, "{target}");
    }
}

#[tokio::test(start_paused = true)]
async fn a_zero_wait_blocks_for_the_default_five_minutes() {
    // Consul 1.8.7: `wait=0s` is "no wait given", so the default 5 min applies (a curl with a
    // 4 s timeout timed out), while `wait=1ms` returns at once.
    let sim = Sim::new(SimConfig::default());
    send(&sim, Method::PUT, "/v1/kv/k", b"v").await;
    let i = index(&send(&sim, Method::GET, "/v1/kv/k", b"").await);
    let started = Instant::now();
    send(&sim, Method::GET, &format!("/v1/kv/k?index={i}&wait=1ms"), b"").await;
    assert!(started.elapsed() <= Duration::from_millis(2));
    let started = Instant::now();
    send(&sim, Method::GET, &format!("/v1/kv/k?index={i}&wait=0s"), b"").await;
    let took = started.elapsed();
    assert!(took >= Duration::from_secs(300) && took <= Duration::from_millis(318_750), "{took:?}");
}

#[tokio::test(start_paused = true)]
async fn missing_keys_and_empty_prefixes_answer_the_kv_tables_index() {
    let sim = Sim::new(SimConfig::default());
    send(&sim, Method::PUT, "/v1/kv/ix/k1", b"1").await;
    let put = index(&send(&sim, Method::GET, "/v1/kv/ix/k1", b"").await);
    send(&sim, Method::DELETE, "/v1/kv/ix/k1", b"").await;
    // Consul: a deleted key answers 404 with the delete's index…
    let r = send(&sim, Method::GET, "/v1/kv/ix/k1", b"").await;
    assert_eq!((r.status.as_u16(), index(&r)), (404, put + 1));
    assert!(r.headers.iter().all(|(n, _)| !n.eq_ignore_ascii_case("Content-Type")));
    // …and, once another key is written, the KV table's newest index, not its tombstone's.
    send(&sim, Method::PUT, "/v1/kv/ix2", b"1").await;
    assert_eq!(index(&send(&sim, Method::GET, "/v1/kv/ix/k1", b"").await), put + 2);
    // A prefix with a tombstone answers its newest write or delete; an empty prefix the table.
    assert_eq!(index(&send(&sim, Method::GET, "/v1/kv/ix/?recurse", b"").await), put + 1);
    let r = send(&sim, Method::GET, "/v1/kv/nothing/?keys", b"").await;
    assert_eq!((r.status.as_u16(), index(&r)), (404, put + 2));
    // Session writes do not move the KV table's index.
    send(&sim, Method::PUT, "/v1/session/create", b"{}").await;
    assert_eq!(index(&send(&sim, Method::GET, "/v1/kv/ix/k1", b"").await), put + 2);
}

/// Sends `target` as a blocking read at the current answer's index (wait 10 s), runs
/// `write` 1 s later, and returns how long the read took.
async fn woken_after<F, Fut>(sim: &Sim, target: &str, write: F) -> Duration
where
    F: FnOnce(Sim) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send,
{
    let i = index(&send(sim, Method::GET, target, b"").await);
    let sep = if target.contains('?') { '&' } else { '?' };
    let writer = {
        let sim = sim.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(1)).await;
            write(sim).await;
        })
    };
    let started = Instant::now();
    send(sim, Method::GET, &format!("{target}{sep}index={i}&wait=10s"), b"").await;
    writer.await.unwrap();
    started.elapsed()
}

#[tokio::test(start_paused = true)]
async fn a_write_wakes_exactly_the_reads_whose_answer_it_may_change() {
    let sim = Sim::new(SimConfig::default());
    send(&sim, Method::PUT, "/v1/kv/tree/a", b"1").await;
    send(&sim, Method::PUT, "/v1/kv/a", b"1").await;
    let one = Duration::from_secs(1);
    let put = |target: &'static str| {
        move |sim: Sim| async move {
            send(&sim, Method::PUT, target, b"new").await;
        }
    };
    // Measured on Consul 1.8.7 with a write 1 s into a 5 s wait: a missing key and an empty
    // prefix returned after 1.1 s (their index is the KV table's), a prefix with keys and the
    // session list only at the timeout.
    assert_eq!(woken_after(&sim, "/v1/kv/tree/?recurse", put("/v1/kv/tree/b")).await, one);
    assert_eq!(woken_after(&sim, "/v1/kv/tree/?keys", put("/v1/kv/tree/c")).await, one);
    assert_eq!(woken_after(&sim, "/v1/kv/missing", put("/v1/kv/other1")).await, one);
    assert_eq!(woken_after(&sim, "/v1/kv/empty/?recurse", put("/v1/kv/other2")).await, one);
    assert_eq!(woken_after(&sim, "/v1/kv/a", put("/v1/kv/a")).await, one);
    assert!(woken_after(&sim, "/v1/kv/tree/?recurse", put("/v1/kv/treex")).await >= 10 * one);
    assert!(woken_after(&sim, "/v1/kv/a", put("/v1/kv/b")).await >= 10 * one);
    assert!(woken_after(&sim, "/v1/session/list", put("/v1/kv/b")).await >= 10 * one);
    let create = |sim: Sim| async move {
        send(&sim, Method::PUT, "/v1/session/create", b"{}").await;
    };
    assert_eq!(woken_after(&sim, "/v1/session/list", create).await, one);
    // A lock released by a session's end wakes the readers of its key.
    let id = {
        let r = send(&sim, Method::PUT, "/v1/session/create", br#"{"LockDelay":"0s"}"#).await;
        serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["ID"]
            .as_str()
            .unwrap()
            .to_string()
    };
    let acquire = SimRequest {
        method: Method::PUT,
        target: format!("/v1/kv/held?acquire={id}"),
        headers: HeaderMap::new(),
        body: Bytes::from_static(b"h"),
    };
    sim.execute("test", acquire).await.unwrap();
    let destroy = move |sim: Sim| async move {
        let req = SimRequest {
            method: Method::PUT,
            target: format!("/v1/session/destroy/{id}"),
            headers: HeaderMap::new(),
            body: Bytes::new(),
        };
        sim.execute("test", req).await.unwrap();
    };
    assert_eq!(woken_after(&sim, "/v1/kv/held", destroy).await, one);
}

//! consul-sim and our HTTP client: in-process KV get/put, a 1-op transaction with 200,000
//! and 1,000,000 keys stored, HTTP KV GET of our client vs rs-consul against the same sim
//! server, and 10,000 idle blocking watchers on one key (memory, and the time until one
//! write wakes them all).
//!
//! `cargo bench -p consul-ha-benches --bench sim`. Goals: HTTP GET ours/rs-consul time
//! ≤ 0.67 (≥ 1.5× the throughput); a transaction costs O(its ops), not O(store) (the same
//! time at 200,000 and 1,000,000 keys as at 10, and ≤ 50 µs); 10,000 watchers ≤ 200 MB and
//! woken in ≤ 100 ms; CPU per write flat from 100 to 10,000 watchers parked on other keys
//! (a write wakes only the watchers whose answer may change).

use std::hint::black_box;
use std::time::{Duration, Instant};

use bytes::Bytes;
use consul_api::{Client, QueryOptions};
use consul_sim::{Sim, SimConfig, SimRequest};
use criterion::{Criterion, criterion_group, criterion_main};

/// Resident memory of this process, from /proc (Linux); 0 elsewhere.
fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm.split_whitespace().nth(1).and_then(|p| p.parse().ok()).unwrap_or(0);
    pages * 4096
}

/// CPU time of every thread of this process so far, from /proc (Linux); 0 elsewhere.
fn cpu_ns() -> u64 {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else { return 0 };
    tasks
        .flatten()
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next().and_then(|n| n.parse::<u64>().ok()))
        .sum()
}

/// Writes to one key while `parked` blocking reads wait on other keys: CPU and wall time
/// per write, the woken readers' work included.
fn parked_elsewhere(rt: &tokio::runtime::Runtime, parked: usize) {
    let sim = rt.block_on(async { Sim::new(SimConfig::default()) });
    let client = sim.client("bench");
    sim.with_core(|core, now| {
        for i in 0..parked {
            core.handle(now, &request("PUT", &format!("/v1/kv/watch/{i:05}"), b"w"), false);
        }
    });
    let index = sim.core().index();
    let handles: Vec<_> = (0..parked)
        .map(|i| {
            let client = client.clone();
            let opts = QueryOptions::blocking(consul_api::Index(index), Duration::from_secs(300));
            rt.spawn(
                async move { client.kv().get_with(&format!("watch/{i:05}"), &opts).await.is_ok() },
            )
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500 + parked as u64 / 10)); // let every reader park
    // A steady stream: one write every 5 ms, so woken readers cannot fold many writes
    // into one re-evaluation.
    let writes = 200u32;
    let (cpu, mut wall) = (cpu_ns(), Duration::ZERO);
    for n in 0..writes {
        let start = Instant::now();
        rt.block_on(client.kv().put("hot", n.to_string())).unwrap();
        wall += start.elapsed();
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(100)); // let woken readers finish their work
    let cpu = cpu_ns().saturating_sub(cpu) as f64 / f64::from(writes) / 1e3;
    let wall = wall.as_secs_f64() / f64::from(writes) * 1e6;
    eprintln!(
        "sim/parked-elsewhere/{parked}: {cpu:.1} µs CPU per write (woken readers included), \
         {wall:.1} µs per write call, {parked} readers parked on other keys"
    );
    for h in handles {
        h.abort();
    }
}

fn bench(c: &mut Criterion) {
    let rt =
        tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let sim = rt.block_on(async { Sim::new(SimConfig::default()) });
    let local = sim.client("bench");
    rt.block_on(local.kv().put("bench/key", vec![7u8; 256])).unwrap();

    let mut g = c.benchmark_group("sim");
    g.measurement_time(Duration::from_secs(4));
    g.bench_function("in-process/kv-get", |b| {
        b.iter(|| {
            rt.block_on(local.kv().get_with(black_box("bench/key"), &QueryOptions::default()))
                .unwrap()
        })
    });
    let mut n = 0u64;
    g.bench_function("in-process/kv-put", |b| {
        b.iter(|| {
            n += 1;
            rt.block_on(local.kv().put(black_box("bench/put"), n.to_string())).unwrap()
        })
    });

    // A KV read with 10,000 live sessions (each a timer) beside the same with none: the
    // timers are looked at once per deadline, not on every request.
    for sessions in [0usize, 10_000] {
        let timed = rt.block_on(async { Sim::new(SimConfig::default()) });
        timed.with_core(|core, now| {
            core.handle(now, &request("PUT", "/v1/kv/bench/key", b"v"), false);
            for _ in 0..sessions {
                core.handle(
                    now,
                    &request("PUT", "/v1/session/create", br#"{"TTL":"600s"}"#),
                    false,
                );
            }
        });
        let get = request("GET", "/v1/kv/bench/key", b"");
        g.bench_function(format!("in-process/kv-get/{sessions}-sessions"), |b| {
            b.iter(|| rt.block_on(timed.execute("bench", black_box(get.clone()))).unwrap())
        });
    }

    // A 1-op transaction (a set, and a failing cas that rolls back) with 200,000 and
    // 1,000,000 keys stored, beside the same with 10 keys: a transaction must cost O(its ops),
    // not O(store), and stay under 50 us in-process at a million keys.
    for keys in [10usize, 200_000, 1_000_000] {
        let big = rt.block_on(async { Sim::new(SimConfig::default()) });
        big.with_core(|core, now| {
            for i in 0..keys {
                let put = request("PUT", &format!("/v1/kv/bulk/{i:06}"), &[1u8; 64][..]);
                core.handle(now, &put, false);
            }
        });
        let set =
            request("PUT", "/v1/txn", br#"[{"KV":{"Verb":"set","Key":"txn/k","Value":"dg=="}}]"#);
        g.bench_function(format!("in-process/txn-1-op/{keys}-keys"), |b| {
            b.iter(|| rt.block_on(big.execute("bench", black_box(set.clone()))).unwrap())
        });
        let stale = request(
            "PUT",
            "/v1/txn",
            br#"[{"KV":{"Verb":"cas","Key":"txn/k","Index":1,"Value":"dg=="}}]"#,
        );
        g.bench_function(format!("in-process/txn-1-op-rolled-back/{keys}-keys"), |b| {
            b.iter(|| rt.block_on(big.execute("bench", black_box(stale.clone()))).unwrap())
        });
        // A session that takes a lock and is destroyed: ending it looks at the keys it
        // acquired, not at the whole store.
        let create = request("PUT", "/v1/session/create", br#"{"LockDelay":"0s"}"#);
        g.bench_function(format!("in-process/session-lock-destroy/{keys}-keys"), |b| {
            b.iter(|| {
                let made = rt.block_on(big.execute("bench", create.clone())).unwrap();
                let id: serde_json::Value = serde_json::from_slice(&made.body).unwrap();
                let id = id["ID"].as_str().unwrap_or_default().to_string();
                let lock = request("PUT", &format!("/v1/kv/lock/k?acquire={id}"), b"v");
                rt.block_on(big.execute("bench", lock)).unwrap();
                let destroy = request("PUT", &format!("/v1/session/destroy/{id}"), b"");
                black_box(rt.block_on(big.execute("bench", destroy)).unwrap())
            })
        });
        // A request for a datacenter that does not exist is validated, then refused: it
        // must cost O(request) too, not a copy of the store.
        let elsewhere = request("GET", "/v1/kv/txn/k?dc=nowhere", b"");
        g.bench_function(format!("in-process/kv-get-unknown-dc/{keys}-keys"), |b| {
            b.iter(|| rt.block_on(big.execute("bench", black_box(elsewhere.clone()))).unwrap())
        });
    }

    // Both HTTP clients against one server, same key, same runtime.
    let server = rt.block_on(sim.serve("127.0.0.1:0".parse().unwrap())).unwrap();
    let ours = Client::builder().address(server.url()).build().unwrap();
    let theirs =
        rs_consul::Consul::new(rs_consul::Config { address: server.url(), ..Default::default() });
    g.bench_function("http/kv-get/ours", |b| {
        b.iter(|| {
            rt.block_on(ours.kv().get_with(black_box("bench/key"), &QueryOptions::default()))
                .unwrap()
        })
    });
    g.bench_function("http/kv-get/rs-consul", |b| {
        b.iter(|| {
            let req = rs_consul::ReadKeyRequest { key: "bench/key", ..Default::default() };
            rt.block_on(theirs.read_key(black_box(req))).unwrap()
        })
    });
    g.finish();

    // 10,000 idle watchers on one key, in-process: memory once, then wake-up time.
    let watchers = 10_000;
    let before = rss_bytes();
    let mut woken = Vec::new();
    let mut wake_times = Vec::new();
    for round in 0..5 {
        let (_, meta) =
            rt.block_on(local.kv().get_with("bench/watched", &QueryOptions::default())).unwrap();
        let handles: Vec<_> = (0..watchers)
            .map(|_| {
                let client = local.clone();
                let opts = QueryOptions::blocking(meta.last_index, Duration::from_secs(300));
                rt.spawn(async move {
                    client.kv().get_with("bench/watched", &opts).await.map(|r| r.1.last_index)
                })
            })
            .collect();
        std::thread::sleep(Duration::from_millis(300)); // let every watcher park
        if round == 0 {
            let after = rss_bytes();
            eprintln!(
                "sim/10000-watchers: {:.1} MB resident for {watchers} parked blocking reads ({:.0} bytes each)",
                after.saturating_sub(before) as f64 / 1e6,
                after.saturating_sub(before) as f64 / f64::from(watchers)
            );
        }
        let start = Instant::now();
        rt.block_on(local.kv().put("bench/watched", format!("v{round}"))).unwrap();
        let results = rt.block_on(async {
            let mut out = Vec::with_capacity(handles.len());
            for h in handles {
                out.push(h.await.unwrap().unwrap());
            }
            out
        });
        wake_times.push(start.elapsed());
        woken.push(results.iter().filter(|i| **i > meta.last_index).count());
    }
    wake_times.sort();
    eprintln!(
        "sim/10000-watchers: all woken by one write in {:?} (median of 5; min {:?}, max {:?}); woken per round {:?}",
        wake_times[2], wake_times[0], wake_times[4], woken
    );
    rt.block_on(server.shutdown());

    for parked in [100, 1_000, 10_000] {
        parked_elsewhere(&rt, parked);
    }
}

fn request(method: &str, target: &str, body: &[u8]) -> SimRequest {
    SimRequest {
        method: method.parse().unwrap(),
        target: target.into(),
        headers: Default::default(),
        body: Bytes::copy_from_slice(body),
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);

//! Seeded simulations of ha-cluster on consul-sim (paused time): random crashes, restarts,
//! partitions, process pauses, raft-leader loss and check flaps. After each run: no two
//! members ever believed they led at the same time, every committed leader write carried
//! the lock holder's fencing token, and crash failover stayed within its bound.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use consul_api::txn::KvOp;
use consul_api::{Client, Error, Request, Response, Transport};
use consul_sim::{Sim, SimConfig, SimTransport};
use futures_util::StreamExt;
use ha_cluster::{Cluster, Event};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::cluster::config;

/// A process pause: while paused, the member's requests wait to be sent and its responses
/// wait to be delivered, as if the process were frozen.
#[derive(Debug)]
struct Pausable {
    inner: SimTransport,
    resume_at: Arc<Mutex<Option<Instant>>>,
}

impl Pausable {
    async fn wait(&self) {
        loop {
            let until = *self.resume_at.lock().unwrap();
            match until {
                Some(t) if t > Instant::now() => tokio::time::sleep_until(t).await,
                _ => return,
            }
        }
    }
}

#[async_trait]
impl Transport for Pausable {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        self.wait().await;
        let resp = self.inner.send(req).await;
        self.wait().await;
        resp
    }
}

/// splitmix64: a tiny seeded generator for schedules.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn secs(&mut self, lo: u64, hi: u64) -> Duration {
        Duration::from_millis(1000 * lo + self.below(1000 * (hi - lo)))
    }
}

/// What one member did, as (start, end) leadership intervals and committed writes.
#[derive(Default)]
struct Log {
    /// (member, start, end) of every term; end is `None` while it lasts.
    terms: Vec<(String, Instant, Option<Instant>)>,
    /// (member, fencing token, holder's LockIndex at commit, commit index).
    writes: Vec<(String, u64, u64, u64)>,
    /// Seconds from a leader's crash to the next election.
    failovers: Vec<f64>,
}

struct Member {
    id: String,
    cluster: Option<Arc<Cluster>>,
    tasks: Vec<JoinHandle<()>>,
    resume_at: Arc<Mutex<Option<Instant>>>,
}

async fn launch(sim: &Sim, m: &mut Member, log: &Arc<Mutex<Log>>) -> bool {
    let transport = Pausable { inner: sim.transport(m.id.clone()), resume_at: m.resume_at.clone() };
    let cluster = match Cluster::builder(Client::new(transport), config(&m.id, "z")).start().await {
        Ok(c) => Arc::new(c),
        Err(_) => return false, // e.g. Consul has no leader right now: try again later
    };
    let id = m.id.clone();
    let events = cluster.subscribe();
    let l = log.clone();
    m.tasks.push(tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(e) = events.next().await {
            let mut log = l.lock().unwrap();
            match e {
                Event::LeaderElected { is_self: true, at, .. } => {
                    log.terms.push((id.clone(), at, None));
                }
                Event::LeadershipLost { at, .. } => {
                    let open = log.terms.iter_mut().rev().find(|t| t.0 == id && t.2.is_none());
                    open.expect("a loss ends an open term").2 = Some(at);
                }
                _ => {}
            }
        }
    }));
    let (c, l, id) = (cluster.clone(), log.clone(), m.id.clone());
    m.tasks.push(tokio::spawn(async move {
        let mut n = 0u64;
        loop {
            tokio::time::sleep(Duration::from_millis(700)).await;
            if !c.is_leader() {
                continue;
            }
            n += 1;
            let op = KvOp::set(format!("log/{id}/{n}"), n.to_string());
            if let Ok(done) = c.leader_txn(vec![op]).await {
                l.lock().unwrap().writes.push((
                    id.clone(),
                    done.fencing_token.0,
                    done.holder.lock_index.0,
                    done.results[0].modify_index.0,
                ));
            }
        }
    }));
    m.cluster = Some(cluster);
    true
}

/// Kills a member without cleanup; closes its open term at the crash.
fn crash(m: &mut Member, log: &Arc<Mutex<Log>>) {
    for t in m.tasks.drain(..) {
        t.abort();
    }
    m.cluster = None;
    let now = Instant::now();
    let mut log = log.lock().unwrap();
    if let Some(t) = log.terms.iter_mut().rev().find(|t| t.0 == m.id && t.2.is_none()) {
        t.2 = Some(now);
    }
}

fn leader_of(members: &[Member]) -> Option<usize> {
    members.iter().position(|m| m.cluster.as_ref().is_some_and(|c| c.is_leader()))
}

async fn run(seed: u64) -> Log {
    let sim = Sim::new(SimConfig { seed, ..SimConfig::default() });
    let log = Arc::new(Mutex::new(Log::default()));
    let mut rng = Rng(seed);
    let mut members: Vec<Member> = (0..3)
        .map(|i| Member {
            id: format!("m{i}"),
            cluster: None,
            tasks: Vec::new(),
            resume_at: Arc::new(Mutex::new(None)),
        })
        .collect();
    for m in &mut members {
        assert!(launch(&sim, m, &log).await);
    }
    let start = Instant::now();
    // Faults happen one at a time, each healed before the next: (heal at, action).
    let mut pending_failover: Option<Instant> = None;
    while start.elapsed() < Duration::from_secs(120) {
        tokio::time::sleep(rng.secs(3, 12)).await;
        let target = if rng.below(2) == 0 { leader_of(&members) } else { None }
            .unwrap_or_else(|| rng.below(members.len() as u64) as usize);
        let lasting = rng.secs(2, 25);
        match rng.below(6) {
            0 | 1 => {
                let was_leader = members[target].cluster.as_ref().is_some_and(|c| c.is_leader());
                crash(&mut members[target], &log);
                if was_leader {
                    pending_failover = Some(Instant::now());
                }
                tokio::time::sleep(lasting).await;
                let _ = launch(&sim, &mut members[target], &log).await;
            }
            2 => {
                sim.partition(&members[target].id, true);
                tokio::time::sleep(lasting).await;
                sim.partition(&members[target].id, false);
            }
            3 => {
                *members[target].resume_at.lock().unwrap() = Some(Instant::now() + lasting);
                tokio::time::sleep(lasting).await;
            }
            4 => {
                sim.set_leader_lost(true);
                tokio::time::sleep(lasting.min(Duration::from_secs(12))).await;
                sim.set_leader_lost(false);
            }
            _ => {
                let node = sim.core().config().node_name.clone();
                let check = config(&members[target].id, "z").check_id();
                sim.set_check_status(&node, &check, "critical");
            }
        }
        for m in members.iter_mut() {
            if m.cluster.is_none() {
                let _ = launch(&sim, m, &log).await;
            }
        }
        if let Some(crashed) = pending_failover.take() {
            // Measure the failover of that crash: the first term begun after it.
            tokio::time::sleep(Duration::from_secs(20)).await;
            let log_now = log.lock().unwrap();
            if let Some(t) = log_now.terms.iter().filter(|t| t.1 >= crashed).map(|t| t.1).min() {
                drop(log_now);
                log.lock().unwrap().failovers.push((t - crashed).as_secs_f64());
            }
        }
    }
    // Healed: within TTL + lock-delay + retries there is exactly one leader, known to all.
    tokio::time::sleep(Duration::from_secs(20)).await;
    let leaders: Vec<_> =
        members.iter().filter(|m| m.cluster.as_ref().unwrap().is_leader()).collect();
    assert_eq!(leaders.len(), 1, "seed {seed}: one leader after healing");
    let leader = leaders[0].cluster.as_ref().unwrap().leader_info().unwrap();
    for m in &members {
        assert_eq!(
            m.cluster.as_ref().unwrap().leader_info().as_ref(),
            Some(&leader),
            "seed {seed}"
        );
    }
    for m in &mut members {
        crash(m, &log);
    }
    std::mem::take(&mut *log.lock().unwrap())
}

fn check(seed: u64, log: &Log) {
    let mut terms: Vec<_> =
        log.terms.iter().map(|(id, s, e)| (s, e.expect("closed"), id)).collect();
    terms.sort();
    for w in terms.windows(2) {
        let ((s1, e1, a), (s2, _, b)) = (w[0], w[1]);
        assert!(e1 >= *s1, "seed {seed}: a term of {a} ends before it begins");
        assert!(
            e1 <= *s2,
            "seed {seed}: {a} led until {e1:?} but {b} began at {s2:?}: overlapping leaders"
        );
    }
    let mut writes = log.writes.clone();
    writes.sort_by_key(|w| w.3);
    for w in &writes {
        assert_eq!(
            w.1, w.2,
            "seed {seed}: {} wrote under token {} while the holder had {}",
            w.0, w.1, w.2
        );
    }
    assert!(writes.windows(2).all(|p| p[0].1 <= p[1].1), "seed {seed}: tokens went backwards");
}

/// Runs the seeds, checks each run, and returns the crash failover times.
fn simulate(seeds: std::ops::RangeInclusive<u64>) {
    let (first, last) = (*seeds.start(), *seeds.end());
    let mut failovers = Vec::new();
    let (mut terms, mut writes) = (0, 0);
    for seed in seeds {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .unwrap();
        let log = rt.block_on(run(seed));
        check(seed, &log);
        terms += log.terms.len();
        writes += log.writes.len();
        failovers.extend(log.failovers);
    }
    failovers.sort_by(f64::total_cmp);
    let pct = |p: f64| failovers[((failovers.len() - 1) as f64 * p).round() as usize];
    eprintln!(
        "ha-cluster simulation, seeds {first}..={last}: {terms} terms, {writes} fenced writes, \
         {} leader crashes; failover p50 {:.2} s, p99 {:.2} s, max {:.2} s; all failovers: {:?}",
        failovers.len(),
        pct(0.5),
        pct(0.99),
        pct(1.0),
        failovers
    );
    assert!(failovers.len() >= 10, "the schedules crash leaders often enough");
    // A crashed leader's session ends when its check's TTL (10 s) lapses, or, if the member
    // restarted and passed the check again first, when Consul reaps the session itself at
    // 2 × TTL (20 s); then lock-delay 5 s + one retry (≤ 1 s).
    assert!(pct(1.0) <= 26.0, "crash failover within its bound");
}

// 200 seeds in four tests, so nextest spreads them over the cores.
#[test]
fn randomized_faults_seeds_1_to_50() {
    simulate(1..=50);
}

#[test]
fn randomized_faults_seeds_51_to_100() {
    simulate(51..=100);
}

#[test]
fn randomized_faults_seeds_101_to_150() {
    simulate(101..=150);
}

#[test]
fn randomized_faults_seeds_151_to_200() {
    simulate(151..=200);
}

#[test]
fn the_checker_catches_overlapping_leaders_and_stale_tokens() {
    let t0 = Instant::now();
    let s = Duration::from_secs;
    let overlapping = Log {
        terms: vec![("a".into(), t0, Some(t0 + s(5))), ("b".into(), t0 + s(4), Some(t0 + s(9)))],
        ..Log::default()
    };
    assert!(std::panic::catch_unwind(|| check(1, &overlapping)).is_err());
    let stale = Log { writes: vec![("a".into(), 1, 2, 10)], ..Log::default() };
    assert!(std::panic::catch_unwind(|| check(1, &stale)).is_err());
    let fine = Log {
        terms: vec![("a".into(), t0, Some(t0 + s(5))), ("b".into(), t0 + s(5), Some(t0 + s(9)))],
        writes: vec![("a".into(), 1, 1, 10), ("b".into(), 2, 2, 11)],
        ..Log::default()
    };
    check(1, &fine);
}

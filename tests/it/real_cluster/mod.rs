//! consul-ha on a real Consul 1.8.7 cluster, under faults (`cargo xtask real-cluster`).
//!
//! Each scenario starts three Consul servers and one client agent per member on free
//! loopback ports, runs `consul-ha node` processes against their own agents, injects faults
//! with process signals, and hands what it recorded to the independent [`checker`]. The
//! scenarios are `#[ignore]`d: too heavy for the default test run, CI runs them through
//! `cargo xtask real-cluster`, which collects each one's figures from `REAL_CLUSTER_OUT`.

mod checker;
mod consul;
mod members;
mod netns;
mod procs;
mod scenarios;
mod sim;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use consul_api::Client;

use checker::{Checker, Verdict};
use consul::ConsulCluster;
use members::{Member, Settings, Term};
use procs::mono_ns;

/// One scenario's running world.
pub(crate) struct Harness {
    name: String,
    dir: PathBuf,
    /// Members, `m1`…, member `i` on client agent `i`.
    pub(crate) members: Vec<Member>,
    pub(crate) checker: Checker,
    pub(crate) settings: Settings,
    observers: Vec<Client>,
    // Dropped after the members: they leave before their agents stop.
    pub(crate) consul: ConsulCluster,
    /// Dropped last, once nothing runs inside it.
    pub(crate) netns: Option<netns::Netns>,
}

impl Harness {
    /// Starts Consul and `n` members; returns once a leader is elected and every shard is
    /// healthy, with the cold-start election time (members spawned → first term) in seconds.
    pub(crate) async fn start(name: &str, n: usize, settings: Settings) -> (Harness, f64) {
        Harness::start_in(name, n, settings, None).await
    }

    /// [`start`](Harness::start) with member `isolated.1` and its agent inside network
    /// namespace `isolated.0`, every other agent on the namespace's host end.
    pub(crate) async fn start_in(
        name: &str,
        n: usize,
        settings: Settings,
        isolated: Option<(netns::Netns, usize)>,
    ) -> (Harness, f64) {
        let dir = consul::scenario_dir(name);
        let at = consul::Placement { isolated: isolated.as_ref().map(|(ns, i)| (ns, *i)) };
        let consul = ConsulCluster::start(&dir, n, at).await;
        let rf = settings.shards["replication_factor"].as_u64().unwrap_or(3) as usize;
        let checker = Checker::start(consul.server_addrs(), rf);
        let members: Vec<Member> = (0..n)
            .map(|i| {
                let ns = isolated.as_ref().filter(|(_, k)| *k == i).map(|(ns, _)| ns.name.as_str());
                Member::new(&dir, &format!("m{}", i + 1), consul.clients[i].http, &settings, ns)
            })
            .collect();
        let observers = consul
            .server_addrs()
            .into_iter()
            .map(|a| Client::builder().address(a).build().expect("client"))
            .collect();
        let netns = isolated.map(|(ns, _)| ns);
        let mut h = Harness {
            name: name.into(),
            dir,
            members,
            checker,
            settings,
            observers,
            consul,
            netns,
        };
        let t0 = mono_ns();
        for i in 0..n {
            h.start_member(i);
        }
        let (id, token) = h.wait_leader(None, Duration::from_secs(30)).await;
        let cold = (h.elected_at(&id, token) - t0 as f64 / 1e9).max(0.0);
        h.wait_healthy(Duration::from_secs(60)).await;
        (h, cold)
    }

    /// A client for a Consul server.
    pub(crate) fn observer(&self) -> &Client {
        &self.observers[0]
    }

    /// The index of member `id`.
    pub(crate) fn index(&self, id: &str) -> usize {
        self.members.iter().position(|m| m.id == id).unwrap_or_else(|| panic!("no member {id}"))
    }

    /// Starts member `i` (again).
    pub(crate) fn start_member(&mut self, i: usize) {
        self.members[i].proc.start();
        self.checker.set_alive(&self.members[i].id, true);
    }

    /// SIGKILLs member `i`; returns when.
    pub(crate) fn crash(&mut self, i: usize) -> u64 {
        self.checker.set_alive(&self.members[i].id, false);
        self.members[i].crash()
    }

    /// Stops member `i` gracefully; returns when SIGTERM was sent.
    pub(crate) fn stop(&mut self, i: usize) -> u64 {
        let at = self.members[i].stop();
        self.checker.set_alive(&self.members[i].id, false);
        at
    }

    /// The leader as the leader key names it: (member id, fencing token).
    pub(crate) async fn leader(&self) -> Option<(String, u64)> {
        for c in &self.observers {
            if let Ok(l) = ha_cluster::read_leader(c, "ha-cluster/rc/leader").await {
                return l.map(|l| (l.node_id, l.fencing_token.0));
            }
        }
        None
    }

    /// Waits for a leader other than the one holding `not_token`.
    pub(crate) async fn wait_leader(
        &self,
        not_token: Option<u64>,
        limit: Duration,
    ) -> (String, u64) {
        let deadline = Instant::now() + limit;
        loop {
            if let Some((id, token)) = self.leader().await
                && Some(token) != not_token
                && !id.is_empty()
            {
                return (id, token);
            }
            if Instant::now() > deadline {
                self.fail(&format!("no new leader within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// When member `id` began its term `token`, in seconds of [`mono_ns`], from its own log.
    pub(crate) fn elected_at(&self, id: &str, token: u64) -> f64 {
        let m = &self.members[self.index(id)];
        for _ in 0..200 {
            let terms = members::terms(id, &m.events, mono_ns());
            if let Some(t) = terms.iter().find(|t| t.token == token) {
                return t.start as f64 / 1e9;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        self.fail(&format!("{id} holds the leader key (token {token}) but never logged the term"))
    }

    /// Waits until a fresh checker sample finds every shard healthy; returns when.
    pub(crate) async fn wait_healthy(&self, limit: Duration) -> u64 {
        let since = mono_ns();
        let deadline = Instant::now() + limit;
        loop {
            if let Some(s) = self.checker.last_sample()
                && s.at > since
                && s.all_healthy
            {
                return s.at;
            }
            if Instant::now() > deadline {
                self.fail(&format!("shards not all healthy within {limit:?}"));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every member's terms so far.
    pub(crate) fn terms(&self) -> Vec<Term> {
        let now = mono_ns();
        let mut all: Vec<Term> =
            self.members.iter().flat_map(|m| members::terms(&m.id, &m.events, now)).collect();
        all.sort_by_key(|t| t.start);
        all
    }

    /// The checker's verdict on the whole run so far.
    pub(crate) fn verdict(&self) -> Verdict {
        let terms = self.terms();
        self.checker.with(|r| checker::judge(r, &terms, self.settings.lease_margin()))
    }

    /// Panics with the logs of the members and the Consul agents.
    pub(crate) fn fail(&self, why: &str) -> ! {
        let mut msg = format!("{}: {why}\n(logs kept in {})\n", self.name, self.dir.display());
        for m in &self.members {
            msg += &format!("--- {}\n{}\n", m.id, consul::tail(&m.proc.log(), 15));
        }
        panic!("{msg}");
    }

    /// Removes the scenario's directory (on success).
    pub(crate) fn clean_up(self) {
        let dir = self.dir.clone();
        drop(self);
        let _ = std::fs::remove_dir_all(dir);
    }
}

/// A scenario's result, written to `$REAL_CLUSTER_OUT/<name>.json` for the xtask.
#[derive(Debug, Default, serde::Serialize)]
pub(crate) struct Report {
    pub(crate) scenario: String,
    pub(crate) passed: bool,
    pub(crate) failures: Vec<String>,
    pub(crate) crash_failover_s: Vec<f64>,
    pub(crate) failover_bound_s: f64,
    pub(crate) handover_ms: Vec<f64>,
    pub(crate) cold_start_s: Vec<f64>,
    pub(crate) shard_recovery_s: Vec<f64>,
    pub(crate) session_reap_s: Vec<f64>,
    pub(crate) stale_token_writes: usize,
    pub(crate) overlapping_leaders: usize,
    pub(crate) max_overlap_ms: f64,
    pub(crate) table_versions: usize,
    pub(crate) failed_routes: usize,
    pub(crate) min_live_in_sync: Option<usize>,
    pub(crate) settings: serde_json::Value,
    pub(crate) notes: Vec<String>,
}

impl Report {
    /// A report for scenario `name` run with `s`.
    pub(crate) fn new(name: &str, s: &Settings) -> Report {
        Report {
            scenario: name.into(),
            settings: serde_json::json!({
                "ttl_ms": s.ttl.as_millis() as u64, "lock_delay_ms": s.lock_delay.as_millis() as u64,
                "heartbeat_ms": s.heartbeat().as_millis() as u64,
                "lease_margin_ms": s.lease_margin().as_millis() as u64,
                "session_ttl_min": consul::SESSION_TTL_MIN, "shards": s.shards,
            }),
            failover_bound_s: s.failover_bound(),
            ..Report::default()
        }
    }

    /// Folds the checker's verdict in.
    pub(crate) fn judge(&mut self, v: &Verdict) {
        self.stale_token_writes = v.stale_token_writes.len();
        self.overlapping_leaders = v.overlapping_leaders.len();
        self.max_overlap_ms = if v.max_overlap_ms.is_finite() { v.max_overlap_ms } else { 0.0 };
        self.table_versions = v.table_versions;
        self.failures.extend(v.stale_token_writes.iter().cloned());
        self.failures.extend(v.overlapping_leaders.iter().cloned());
        self.failures.extend(v.table_violations.iter().cloned());
    }

    /// Writes the report (if `REAL_CLUSTER_OUT` is set) and fails the test if it failed.
    pub(crate) fn finish(mut self) {
        self.passed = self.failures.is_empty();
        let text = serde_json::to_string_pretty(&self).expect("json");
        if let Some(dir) = std::env::var_os("REAL_CLUSTER_OUT") {
            let dir = PathBuf::from(dir);
            std::fs::create_dir_all(&dir).expect("results dir");
            std::fs::write(dir.join(format!("{}.json", self.scenario)), &text).expect("write");
        }
        eprintln!("{text}");
        assert!(self.passed, "{}: {:#?}", self.scenario, self.failures);
    }
}

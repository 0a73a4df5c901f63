//! The independent checker: it knows nothing of ha-cluster's or prod-config's internals. It
//! records Consul's own KV history (every state of the leader key and every committed table
//! write, through blocking reads on the servers) and samples which member processes run, and
//! judges them with the members' self-reported terms:
//!
//! - tokens in commit order never go back, table versions grow by exactly one, every shard
//!   keeps an in-sync copy, one primary per shard per epoch (prod-config's [`TableAuditor`]);
//! - no committed table write carries a token other than the leader key's `LockIndex` at the
//!   raft index it committed at (a stale-token write);
//! - no two members act as leader at the same instant beyond the clock-skew margin;
//! - while a scenario asks it: every shard routable (a running, in-sync primary) and never
//!   below `min_live` running in-sync copies.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_api::{Client, Index, QueryOptions};
use prod_config::{ReplicaState, RoutingTable, TableAuditor};
use tokio::task::JoinHandle;

use super::members::{SERVICE, Term};
use super::procs::mono_ns;

/// A state of the leader key, as Consul committed it.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct LeaderKey {
    /// Its `ModifyIndex`.
    pub(crate) modify_index: u64,
    /// Its `LockIndex` (the fencing token of its holder).
    pub(crate) lock_index: u64,
    /// The holding session, if held.
    pub(crate) session: Option<String>,
}

/// A committed table write.
#[derive(Clone, Debug)]
pub(crate) struct TableWrite {
    /// Its `ModifyIndex` (commit order).
    pub(crate) modify_index: u64,
    /// The table.
    pub(crate) table: RoutingTable,
}

/// One sample of the shards against the running processes.
#[derive(Clone, Debug)]
pub(crate) struct Sample {
    /// When ([`mono_ns`]).
    pub(crate) at: u64,
    /// Shards whose primary is not a serving, in-sync copy.
    pub(crate) failed_routes: usize,
    /// The fewest serving in-sync copies of any shard.
    pub(crate) min_live_in_sync: usize,
    /// Whether every shard had `replication_factor` in-sync copies, all on running members
    /// Consul lists as passing, and nothing copying.
    pub(crate) all_healthy: bool,
}

/// What the checker has recorded so far.
#[derive(Default)]
pub(crate) struct Recording {
    pub(crate) leader_keys: Vec<LeaderKey>,
    pub(crate) tables: Vec<TableWrite>,
    pub(crate) samples: Vec<Sample>,
}

/// The running checker.
pub(crate) struct Checker {
    rec: Arc<Mutex<Recording>>,
    /// Members whose process runs and is not paused (the harness keeps it current).
    pub(crate) alive: Arc<Mutex<HashSet<String>>>,
    tasks: Vec<JoinHandle<()>>,
}

const LEADER_KEY: &str = "ha-cluster/rc/leader";
const TABLE_KEY: &str = "prod-config/rc/table";

impl Checker {
    /// Starts recording through the servers at `servers` (the first that answers).
    pub(crate) fn start(servers: Vec<String>, replication_factor: usize) -> Checker {
        let rec = Arc::new(Mutex::new(Recording::default()));
        let alive = Arc::new(Mutex::new(HashSet::new()));
        let clients: Vec<Client> = servers
            .iter()
            .map(|a| Client::builder().address(a.clone()).build().expect("client"))
            .collect();
        let kv = tokio::spawn(record_kv(clients.clone(), rec.clone()));
        let sampler = tokio::spawn(sample(clients, rec.clone(), alive.clone(), replication_factor));
        Checker { rec, alive, tasks: vec![kv, sampler] }
    }

    /// Marks a member as acting (its process runs and is not paused) or not.
    pub(crate) fn set_alive(&self, member: &str, alive: bool) {
        let mut a = self.alive.lock().unwrap();
        if alive {
            a.insert(member.into());
        } else {
            a.remove(member);
        }
    }

    /// The recording (a snapshot).
    pub(crate) fn with<T>(&self, f: impl FnOnce(&Recording) -> T) -> T {
        f(&self.rec.lock().unwrap())
    }

    /// The last sample.
    pub(crate) fn last_sample(&self) -> Option<Sample> {
        self.rec.lock().unwrap().samples.last().cloned()
    }
}

impl Drop for Checker {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

async fn record_kv(clients: Vec<Client>, rec: Arc<Mutex<Recording>>) {
    let mut index = Index(0);
    let mut at = 0usize;
    loop {
        let c = &clients[at % clients.len()];
        let opts = QueryOptions::blocking(index, Duration::from_secs(10));
        match c.kv().list("", &opts).await {
            Ok((pairs, meta)) => {
                index = consul_api::watch::advance(index, meta.last_index).0;
                let mut r = rec.lock().unwrap();
                for p in pairs {
                    if p.key == LEADER_KEY {
                        let k = LeaderKey {
                            modify_index: p.modify_index.0,
                            lock_index: p.lock_index.0,
                            session: p.session.as_ref().map(|s| s.to_string()),
                        };
                        if !r.leader_keys.iter().any(|o| o.modify_index == k.modify_index) {
                            r.leader_keys.push(k);
                        }
                    } else if p.key == TABLE_KEY
                        && !r.tables.iter().any(|t| t.modify_index == p.modify_index.0)
                    {
                        match RoutingTable::decode(p.value.as_deref().unwrap_or_default()) {
                            Ok(table) => {
                                r.tables.push(TableWrite { modify_index: p.modify_index.0, table })
                            }
                            Err(e) => panic!("the routing table in KV does not decode: {e}"),
                        }
                    }
                }
            }
            Err(_) => {
                // That server is down or has no leader: ask the next one.
                at += 1;
                index = Index(0);
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn sample(
    clients: Vec<Client>,
    rec: Arc<Mutex<Recording>>,
    alive: Arc<Mutex<HashSet<String>>>,
    rf: usize,
) {
    let mut at = 0usize;
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let c = &clients[at % clients.len()];
        let Ok(members) = ha_cluster::read_members(c, SERVICE).await else {
            at += 1;
            continue;
        };
        // Serving: the process runs (and is not paused) and is registered, in any health (a
        // draining member warns while it still serves; a restarted one serves once it has
        // registered again).
        let alive = alive.lock().unwrap().clone();
        let alive: HashSet<String> =
            members.iter().map(|m| m.id.clone()).filter(|m| alive.contains(m)).collect();
        // Healthy needs a copy Consul lists as passing on a process that runs.
        let passing: HashSet<String> = members
            .into_iter()
            .filter(|m| m.health == ha_cluster::Health::Passing && alive.contains(&m.id))
            .map(|m| m.id)
            .collect();
        let mut r = rec.lock().unwrap();
        let Some(t) = r.tables.iter().max_by_key(|t| t.modify_index).map(|t| t.table.clone())
        else {
            continue;
        };
        let mut failed = 0;
        let mut min_live = usize::MAX;
        let mut healthy = !t.shards.is_empty();
        for s in &t.shards {
            let in_sync_on = |set: &HashSet<String>| {
                s.replicas
                    .iter()
                    .filter(|x| x.state == ReplicaState::InSync && set.contains(&x.node))
                    .count()
            };
            let primary_ok = s.primary.as_ref().is_some_and(|p| {
                alive.contains(p)
                    && s.replicas.iter().any(|x| &x.node == p && x.state == ReplicaState::InSync)
            });
            failed += usize::from(!primary_ok);
            min_live = min_live.min(in_sync_on(&alive));
            healthy &= in_sync_on(&passing) >= rf
                && s.replicas.iter().all(|x| x.state == ReplicaState::InSync)
                && s.primary.as_ref().is_some_and(|p| passing.contains(p));
        }
        r.samples.push(Sample {
            at: mono_ns(),
            failed_routes: failed,
            min_live_in_sync: min_live,
            all_healthy: healthy,
        });
    }
}

/// The checker's verdict on a run.
#[derive(Debug, Default)]
pub(crate) struct Verdict {
    /// Table writes committed under a token other than the holder's.
    pub(crate) stale_token_writes: Vec<String>,
    /// Pairs of terms that overlapped beyond the margin.
    pub(crate) overlapping_leaders: Vec<String>,
    /// The largest overlap of two terms seen, in ms (≤ 0: none).
    pub(crate) max_overlap_ms: f64,
    /// The table auditor's findings.
    pub(crate) table_violations: Vec<String>,
    /// Table versions audited.
    pub(crate) table_versions: usize,
}

/// Judges `rec` and the members' `terms`; overlaps up to `margin` are within the clock-skew
/// allowance.
pub(crate) fn judge(rec: &Recording, terms: &[Term], margin: Duration) -> Verdict {
    let mut v = Verdict::default();
    let mut tables = rec.tables.clone();
    tables.sort_by_key(|t| t.modify_index);
    let mut audit = TableAuditor::default();
    for w in &tables {
        audit.observe(&w.table);
        let holder = rec
            .leader_keys
            .iter()
            .filter(|k| k.modify_index <= w.modify_index)
            .max_by_key(|k| k.modify_index);
        let ok = holder.is_some_and(|k| k.session.is_some() && k.lock_index == w.table.token);
        if !ok {
            v.stale_token_writes.push(format!(
                "table v{} committed at index {} under token {}; the leader key then: {holder:?}",
                w.table.version, w.modify_index, w.table.token
            ));
        }
    }
    v.table_violations = audit.violations().to_vec();
    v.table_versions = audit.versions();
    v.max_overlap_ms = f64::NEG_INFINITY;
    for (i, a) in terms.iter().enumerate() {
        for b in &terms[i + 1..] {
            if a.member == b.member && a.token == b.token {
                continue;
            }
            let overlap = a.end.min(b.end) as f64 - a.start.max(b.start) as f64;
            v.max_overlap_ms = v.max_overlap_ms.max(overlap / 1e6);
            if overlap > margin.as_nanos() as f64 {
                v.overlapping_leaders.push(format!(
                    "{} (token {}) and {} (token {}) both acted as leader for {:.0} ms",
                    a.member,
                    a.token,
                    b.member,
                    b.token,
                    overlap / 1e6
                ));
            }
        }
    }
    v
}

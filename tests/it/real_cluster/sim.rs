//! What the sim predicts for the real-cluster settings: the same crash-failover loop on
//! consul-sim in virtual time, with Consul's 2×TTL session grace set explicitly
//! (`ttl_grace = 2.0`), so the figure can stand next to the one measured on real Consul.

use std::time::Duration;

use consul_api::Client;
use consul_sim::{Sim, SimConfig};
use futures_util::StreamExt;
use ha_cluster::{Cluster, ClusterConfig, Event};
use tokio::time::Instant;

use super::members::Settings;
use super::{Report, consul};

/// The member config `consul-ha node` builds for `s` (see `ops::node`).
fn config(id: &str, s: &Settings) -> ClusterConfig {
    let mut c = ClusterConfig::new("rc", id, "127.0.0.1:7000");
    c.session_ttl = s.ttl;
    c.lock_delay = s.lock_delay;
    c.heartbeat_interval = s.heartbeat();
    c.lease_margin = s.lease_margin();
    c.seed = id.bytes().map(u64::from).sum();
    c
}

async fn start(sim: &Sim, id: &str, s: &Settings) -> Cluster {
    Cluster::builder(sim.client(id), config(id, s)).start().await.expect("member starts")
}

/// Crash failover on the sim for the real-cluster settings: the leader is dropped (a crash:
/// no release, no deregistration) at varying phases of its heartbeat, 30 times.
#[tokio::test(start_paused = true)]
async fn sim_predicts_crash_failover_for_the_real_cluster_settings() {
    let s = Settings::fast("60s");
    let sim = Sim::new(SimConfig {
        ttl_grace: 2.0,
        session_ttl_min: Duration::from_secs(1),
        ..SimConfig::default()
    });
    let ids = ["m1", "m2", "m3", "m4"];
    let mut members: Vec<Option<Cluster>> = Vec::new();
    for id in ids {
        members.push(Some(start(&sim, id, &s).await));
    }
    let watcher: Client = sim.client("observer");
    let _ = watcher;
    let mut failovers = Vec::new();
    for round in 0..30u64 {
        // Let the cluster settle, then crash at a phase that walks the heartbeat period.
        let phase = Duration::from_millis(1500 + (round * 137) % 400);
        tokio::time::sleep(phase).await;
        let leader = loop {
            if let Some(i) = members.iter().position(|m| m.as_ref().is_some_and(Cluster::is_leader))
            {
                break i;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        };
        let others: Vec<_> = members
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .filter_map(|(_, m)| m.as_ref().map(|c| Box::pin(c.subscribe())))
            .collect();
        let crashed = Instant::now();
        members[leader] = None; // dropped: tasks aborted, nothing released
        let mut merged = futures_util::stream::select_all(others);
        let elected = loop {
            match tokio::time::timeout(Duration::from_secs(60), merged.next()).await {
                Ok(Some(Event::LeaderElected { is_self: true, at, .. })) => break at,
                Ok(Some(_)) => {}
                other => panic!("no failover on the sim: {other:?}"),
            }
        };
        drop(merged);
        failovers.push((elected - crashed).as_secs_f64());
        members[leader] = Some(start(&sim, ids[leader], &s).await);
    }
    failovers.sort_by(f64::total_cmp);
    let bound = (s.ttl + s.lock_delay).as_secs_f64() + 0.1;
    let max = failovers.last().copied().unwrap_or(f64::MAX);
    assert!(max <= bound, "the sim's crash failover {max} s exceeds the bound {bound} s");
    let mut r = Report::new("sim_prediction", &s);
    r.crash_failover_s = failovers;
    r.notes.push(format!("consul-sim, ttl_grace 2.0, session_ttl_min {}", consul::SESSION_TTL_MIN));
    if std::env::var_os("REAL_CLUSTER_OUT").is_some() {
        r.finish();
    }
}

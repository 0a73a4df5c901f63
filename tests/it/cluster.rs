//! ha-cluster on consul-sim with paused time: election, routing, handover, failover,
//! self-fencing, and a deposed leader's write rejected by Consul.

use std::time::Duration;

use consul_api::QueryOptions;
use consul_api::txn::KvOp;
use consul_sim::{Sim, SimConfig};
use futures_util::StreamExt;
use ha_cluster::{Cluster, ClusterConfig, ClusterError, Event, Health};
use tokio::time::Instant;

pub(crate) fn config(id: &str, zone: &str) -> ClusterConfig {
    let mut c = ClusterConfig::new("orders", id, format!("10.0.0.{}:7000", id.len()));
    c.zone = Some(zone.to_string());
    c.seed = id.bytes().map(u64::from).sum();
    c
}

/// Polls `cond` every 10 ms of (virtual) time until it holds; panics after `limit`.
pub(crate) async fn eventually(limit: Duration, what: &str, mut cond: impl FnMut() -> bool) {
    let start = Instant::now();
    while !cond() {
        assert!(start.elapsed() < limit, "{what}: not true after {limit:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

async fn start(sim: &Sim, id: &str, zone: &str) -> Cluster {
    Cluster::builder(sim.client(id), config(id, zone)).start().await.expect("member starts")
}

fn leaders(nodes: &[&Cluster]) -> Vec<String> {
    nodes.iter().filter(|n| n.is_leader()).map(|n| n.config().node_id.clone()).collect()
}

#[tokio::test(start_paused = true)]
async fn three_members_elect_one_leader_and_build_the_same_ring() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    let b = start(&sim, "node-b", "z2").await;
    let c = start(&sim, "node-c", "z3").await;
    let all = [&a, &b, &c];
    eventually(Duration::from_secs(5), "all see three healthy members", || {
        all.iter().all(|n| n.members().iter().filter(|m| m.health == Health::Passing).count() == 3)
    })
    .await;
    eventually(Duration::from_secs(5), "one leader, known to all", || {
        leaders(&all).len() == 1 && all.iter().all(|n| n.leader_info().is_some())
    })
    .await;
    let leader = a.leader_info().unwrap();
    assert_eq!(leader.fencing_token, consul_api::Index(1), "the first holder's LockIndex");
    for n in all {
        assert_eq!(n.leader_info().unwrap(), leader);
        assert_eq!(n.membership_version(), a.membership_version());
    }
    // Every member maps 10,000 keys identically, and replicas span the three zones.
    for i in 0..10_000u32 {
        let key = format!("order:{i}");
        let owner = a.node_for_key(key.as_bytes()).unwrap();
        assert_eq!(b.node_for_key(key.as_bytes()).unwrap(), owner, "{key}");
        assert_eq!(c.node_for_key(key.as_bytes()).unwrap(), owner, "{key}");
    }
    let replicas = a.replicas_for_key(b"order:1", 3);
    let mut zones: Vec<_> = replicas.iter().map(|m| m.zone.clone().unwrap()).collect();
    zones.sort();
    assert_eq!(zones, ["z1", "z2", "z3"]);
    assert_eq!(replicas[0], a.node_for_key(b"order:1").unwrap());
}

#[tokio::test(start_paused = true)]
async fn graceful_stop_hands_over_in_under_a_second() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    eventually(Duration::from_secs(5), "a leads", || a.is_leader()).await;
    let b = start(&sim, "node-b", "z2").await;
    let mut events = std::pin::pin!(b.subscribe());
    eventually(Duration::from_secs(5), "b sees a", || b.leader_info().is_some()).await;
    let token = a.fencing_token().unwrap();
    let stopped = Instant::now();
    a.stop().await.unwrap();
    loop {
        match events.next().await.unwrap() {
            Event::LeaderElected { leader, is_self: true, at } => {
                assert!(at - stopped < Duration::from_secs(1), "handover took {:?}", at - stopped);
                assert!(leader.fencing_token > token, "a new holder gets a higher token");
                break;
            }
            _ => continue,
        }
    }
    eventually(Duration::from_secs(5), "a left the member list", || {
        b.members().iter().all(|m| m.id != "node-a")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_crashed_leader_is_replaced_within_ttl_plus_lock_delay() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    eventually(Duration::from_secs(5), "a leads", || a.is_leader()).await;
    let b = start(&sim, "node-b", "z2").await;
    let c = start(&sim, "node-c", "z3").await;
    eventually(Duration::from_secs(5), "b and c follow a", || {
        b.leader_info().is_some_and(|l| l.node_id == "node-a")
            && c.leader_info().is_some_and(|l| l.node_id == "node-a")
    })
    .await;
    let crashed = Instant::now();
    drop(a); // no cleanup: the session and check run out on their own
    eventually(Duration::from_secs(30), "a new leader", || b.is_leader() || c.is_leader()).await;
    let took = crashed.elapsed();
    // The session is bound to the member's TTL check: check TTL 10 s + lock-delay 5 s + one
    // retry (≤ 1 s). (The session's own TTL would only reap it at 2 × 10 s.)
    assert!(took <= Duration::from_secs(16), "failover took {took:?}");
    assert!(took >= Duration::from_secs(14), "failover cannot beat TTL + lock-delay: {took:?}");
    eventually(Duration::from_secs(130), "a is reaped after deregister_critical_after", || {
        b.members().iter().all(|m| m.id != "node-a")
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_partitioned_leader_fences_itself_and_its_late_write_is_rejected() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    eventually(Duration::from_secs(5), "a leads", || a.is_leader()).await;
    let b = start(&sim, "node-b", "z2").await;
    let mut a_events = std::pin::pin!(a.subscribe());
    let mut b_events = std::pin::pin!(b.subscribe());
    let done = a.leader_txn(vec![KvOp::set("orders/epoch", "1")]).await.unwrap();
    assert_eq!(done.fencing_token, done.holder.lock_index);

    sim.partition("node-a", true);
    let lost_at = loop {
        if let Event::LeadershipLost { at, .. } = a_events.next().await.unwrap() {
            break at;
        }
    };
    assert!(!a.is_leader());
    let elected_at = loop {
        if let Event::LeaderElected { is_self: true, at, .. } = b_events.next().await.unwrap() {
            break at;
        }
    };
    assert!(lost_at < elected_at, "a stopped at {lost_at:?}, b began at {elected_at:?}");
    let err = a.leader_txn(vec![KvOp::set("orders/epoch", "stale")]).await.unwrap_err();
    assert!(matches!(err, ClusterError::NotLeader(_)), "{err}");

    // A write carrying a's old guard, arriving late, is refused by Consul itself.
    sim.partition("node-a", false);
    let key = a.config().leader_key();
    let stale = vec![
        KvOp::check_session(key.clone(), done.holder.session.clone().unwrap()),
        KvOp::check_index(key.clone(), done.holder.modify_index),
        KvOp::set("orders/epoch", "stale"),
    ];
    let outcome = sim.client("late").txn().execute(&stale).await.unwrap();
    assert!(!outcome.is_committed());
    let (epoch, _) =
        sim.client("x").kv().get_raw("orders/epoch", &QueryOptions::default()).await.unwrap();
    assert_eq!(epoch.unwrap(), "1");
    let done = b.leader_txn(vec![KvOp::set("orders/epoch", "2")]).await.unwrap();
    assert!(done.fencing_token.0 > 1);
    assert_eq!(done.holder.lock_index, done.fencing_token);
}

#[tokio::test(start_paused = true)]
async fn a_failing_check_invalidates_the_leaders_session_and_it_steps_down_at_once() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    eventually(Duration::from_secs(5), "a leads", || a.is_leader()).await;
    let b = start(&sim, "node-b", "z2").await;
    eventually(Duration::from_secs(5), "b follows", || b.leader_info().is_some()).await;
    let node = sim.core().config().node_name.clone();
    assert!(sim.set_check_status(&node, &a.config().check_id(), "critical"));
    eventually(Duration::from_millis(100), "a steps down", || !a.is_leader()).await;
    // The lock-delay keeps b out for 5 s; then someone (b, or a with a new session) leads.
    tokio::time::sleep(Duration::from_secs(4)).await;
    assert!(!b.is_leader() && !a.is_leader(), "nobody leads during the lock-delay");
    eventually(Duration::from_secs(5), "a leader after the lock-delay", || {
        a.is_leader() || b.is_leader()
    })
    .await;
}

#[tokio::test(start_paused = true)]
async fn a_lost_raft_leader_makes_the_leader_step_down_and_recover() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    eventually(Duration::from_secs(5), "a leads", || a.is_leader()).await;
    sim.set_leader_lost(true);
    eventually(Duration::from_secs(10), "a self-fences", || !a.is_leader()).await;
    sim.set_leader_lost(false);
    eventually(Duration::from_secs(30), "a leads again", || a.is_leader()).await;
}

#[tokio::test(start_paused = true)]
async fn bad_config_and_unreachable_consul_are_clear_errors() {
    let sim = Sim::new(SimConfig::default());
    let mut c = config("node-a", "z1");
    c.heartbeat_interval = Duration::from_secs(9);
    let err = Cluster::builder(sim.client("a"), c).start().await.unwrap_err();
    assert!(err.to_string().contains("heartbeat_interval"), "{err}");
    sim.partition("a", true);
    let err = Cluster::builder(sim.client("a"), config("node-a", "z1")).start().await.unwrap_err();
    assert!(err.to_string().contains("partitioned"), "{err}");
    let (services, _) = sim.client("b").catalog().services(&QueryOptions::default()).await.unwrap();
    assert!(!services.contains_key("orders"), "nothing was registered: {services:?}");
}

#[tokio::test(start_paused = true)]
async fn a_member_rejoining_with_the_same_id_gets_its_keys_back() {
    let sim = Sim::new(SimConfig::default());
    let a = start(&sim, "node-a", "z1").await;
    let b = start(&sim, "node-b", "z2").await;
    eventually(Duration::from_secs(5), "two members", || a.ring().members().len() == 2).await;
    let before = a.ring();
    drop(b);
    eventually(Duration::from_secs(15), "b failed", || a.ring().members().len() == 1).await;
    let _b = start(&sim, "node-b", "z2").await;
    eventually(Duration::from_secs(5), "b is back", || a.ring().members().len() == 2).await;
    assert_eq!(a.ring().points(), before.points(), "same members, same ring");
}

/// Real time, real sockets: three members over `HttpTransport` to the sim's HTTP server,
/// with one-second TTLs so election and failover finish in a few seconds.
#[tokio::test]
async fn three_members_over_http_elect_and_fail_over_in_real_time() {
    let sim =
        Sim::new(SimConfig { session_ttl_min: Duration::from_millis(500), ..SimConfig::default() });
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let fast = |id: &str| {
        let mut c = config(id, id);
        c.session_ttl = Duration::from_secs(1);
        c.heartbeat_interval = Duration::from_millis(200);
        c.lock_delay = Duration::from_millis(500);
        c.lease_margin = Duration::from_millis(100);
        c.retry_min = Duration::from_millis(50);
        c.retry_max = Duration::from_millis(500);
        c.watch_wait = Duration::from_secs(5);
        c
    };
    let mut nodes = Vec::new();
    for id in ["node-a", "node-b", "node-c"] {
        let client = consul_api::Client::builder().address(server.url()).build().unwrap();
        nodes.push(Some(Cluster::builder(client, fast(id)).start().await.unwrap()));
    }
    let live =
        |nodes: &Vec<Option<Cluster>>| nodes.iter().flatten().filter(|n| n.is_leader()).count();
    eventually(Duration::from_secs(3), "one leader", || live(&nodes) == 1).await;
    let first = nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.is_leader())).unwrap();
    let crashed = Instant::now();
    nodes[first] = None;
    eventually(Duration::from_secs(4), "a new leader after the crash", || live(&nodes) == 1).await;
    let took = crashed.elapsed();
    assert!(took <= Duration::from_millis(2500), "failover over HTTP took {took:?}");
    let second = nodes.iter().position(|n| n.as_ref().is_some_and(|n| n.is_leader())).unwrap();
    let stopped = Instant::now();
    nodes[second].take().unwrap().stop().await.unwrap();
    eventually(Duration::from_secs(2), "handover after a graceful stop", || live(&nodes) == 1)
        .await;
    assert!(stopped.elapsed() < Duration::from_secs(1), "handover took {:?}", stopped.elapsed());
    server.shutdown().await;
}

/// What `Cluster::resign` relies on, on the sim and on real Consul alike: a service check
/// set to warning keeps the session bound to it (only critical invalidates), and the
/// member is no longer listed as passing.
#[tokio::test]
async fn a_warning_check_keeps_its_session_and_takes_the_member_off_passing() {
    use consul_api::agent::{CheckDefinition, ServiceRegistration};
    use consul_api::catalog::HealthFilter;
    use consul_api::session::{ServiceCheckRef, SessionRequest};

    for b in crate::support::backends().await {
        let c = &b.client;
        let name = crate::support::unique("warn").replace('/', "-");
        let mut reg = ServiceRegistration::new(name.clone(), name.clone());
        let mut check = CheckDefinition::ttl(Duration::from_secs(30));
        check.check_id = format!("{name}:ttl");
        reg.checks = vec![check];
        c.agent().register_service(&reg).await.unwrap();
        c.agent().pass_ttl(&format!("{name}:ttl"), "ok").await.unwrap();
        let req = SessionRequest {
            service_checks: vec![ServiceCheckRef {
                id: format!("{name}:ttl"),
                namespace: String::new(),
            }],
            ..Default::default()
        };
        let id = c.session().create(&req).await.unwrap();
        c.agent().warn_ttl(&format!("{name}:ttl"), "leaving").await.unwrap();
        let q = QueryOptions::default();
        let passing = HealthFilter { passing: true, ..Default::default() };
        let listed = c.health().service(&name, &passing, &q).await.unwrap().0;
        assert!(listed.is_empty(), "{}: a warning member is not passing", b.name);
        assert!(
            c.session().info(&id, &q).await.unwrap().0.is_some(),
            "{}: a warning check keeps its session",
            b.name
        );
        c.agent().fail_ttl(&format!("{name}:ttl"), "gone").await.unwrap();
        // The agent syncs the critical status to the servers, which invalidate the session.
        let mut gone = false;
        for _ in 0..100 {
            if c.session().info(&id, &q).await.unwrap().0.is_none() {
                gone = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(gone, "{}: a critical check invalidates its session", b.name);
        c.agent().deregister_service(&name).await.unwrap();
    }
}

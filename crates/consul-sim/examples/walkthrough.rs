//! The original "simulate mode" walkthrough, on the embedded sim in virtual time: three
//! nodes register, elect a leader with a Go-compatible lock, route keys on a hash ring, and
//! fail over when the leader is cut off. Runs in well under a second of real time.
//!
//! `cargo run -p consul-sim --example walkthrough`

use std::time::Duration;

use consul_api::agent::{CheckDefinition, ServiceRegistration};
use consul_api::catalog::HealthFilter;
use consul_api::lock::{Lock, LockOptions};
use consul_api::{Error, QueryOptions};
use consul_sim::{Sim, SimConfig};
use hashring::{Member, Ring};

fn main() -> Result<(), Error> {
    // Virtual time: TTLs and lock-delays pass instantly, and the run is deterministic.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().start_paused(true).build();
    let rt = rt.map_err(|e| Error::config(format!("cannot start tokio: {e}")))?;
    rt.block_on(run())
}

async fn run() -> Result<(), Error> {
    let sim = Sim::new(SimConfig::default());
    let start = tokio::time::Instant::now();
    let nodes = ["node-a", "node-b", "node-c"];
    for (i, node) in nodes.iter().enumerate() {
        let client = sim.client(*node);
        let mut reg = ServiceRegistration::new("kv-store", *node);
        reg.port = Some(7000 + i as u16);
        reg.checks = vec![CheckDefinition::ttl(Duration::from_secs(15))];
        client.agent().register_service(&reg).await?;
        client.agent().pass_ttl(&format!("service:{node}"), "up").await?;
    }
    let passing = HealthFilter { passing: true, tag: None };
    let (healthy, _) =
        sim.client("ops").health().service("kv-store", &passing, &QueryOptions::default()).await?;
    println!("registered: {} healthy instances of kv-store", healthy.len());

    let ring = Ring::new(healthy.iter().map(|e| Member::new(e.service.id.clone())))
        .map_err(|e| Error::invalid(e.to_string()))?;
    for key in ["user:1", "user:2", "order:77"] {
        let owners: Vec<&str> =
            ring.replicas(key.as_bytes(), 2).iter().map(|m| m.name.as_str()).collect();
        println!("route {key:9} -> primary {} replica {}", owners[0], owners[1]);
    }

    let lock = |node: &str| {
        let mut opts = LockOptions::new("service/kv-store/leader");
        opts.value = node.to_string().into();
        Lock::new(sim.client(node), opts)
    };
    let leader = lock("node-a").acquire().await?;
    println!(
        "t={:>5.1}s node-a is leader, fencing token {}",
        start.elapsed().as_secs_f64(),
        leader.fencing_token()
    );
    let follower = tokio::spawn({
        let lock_b = lock("node-b");
        async move { lock_b.acquire().await }
    });

    println!("t={:>5.1}s node-a is cut off from Consul", start.elapsed().as_secs_f64());
    sim.partition("node-a", true);
    leader.lost().await;
    println!(
        "t={:>5.1}s node-a knows it lost leadership and stops acting",
        start.elapsed().as_secs_f64()
    );
    let new_leader = follower.await.map_err(|e| Error::aborted(e.to_string()))??;
    println!(
        "t={:>5.1}s node-b is leader, fencing token {} (session TTL 15 s + lock-delay 15 s)",
        start.elapsed().as_secs_f64(),
        new_leader.fencing_token()
    );
    new_leader.release().await?;
    Ok(())
}

//! The original "production manager" setup, in Rust: three nodes of one service join a
//! Consul, elect a leader, place 32 shards × 3 copies over three zones, route keys, and
//! print cluster health as JSON; then one leaves gracefully and leadership moves at once.
//!
//! Against a real Consul: `CONSUL_HTTP_ADDR=127.0.0.1:8500 cargo run -p prod-config
//! --example production`. Without one, it runs on the embedded simulator.

use std::sync::Arc;
use std::time::Duration;

use consul_api::Client;
use ha_cluster::{Cluster, ClusterConfig};
use prod_config::{ShardConfig, ShardManager, ShardManagerOptions};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let sim;
    let real = std::env::var("CONSUL_HTTP_ADDR").is_ok_and(|a| !a.is_empty());
    let clients: Vec<Client> = if real {
        println!("using the Consul at {}", std::env::var("CONSUL_HTTP_ADDR")?);
        (0..3).map(|_| Client::from_env()).collect::<Result<_, _>>()?
    } else {
        println!("CONSUL_HTTP_ADDR is not set: using the embedded simulator");
        sim = consul_sim::Sim::new(consul_sim::SimConfig::default());
        ["orders-1", "orders-2", "orders-3"].iter().map(|id| sim.client(*id)).collect()
    };

    let shards = ShardConfig { shards: 32, replication_factor: 3, ..ShardConfig::default() };
    let mut managers = Vec::new();
    for (i, client) in clients.into_iter().enumerate() {
        let mut config = ClusterConfig::new(
            "orders",
            format!("orders-{}", i + 1),
            format!("10.0.0.{}:7000", i + 1),
        );
        config.zone = Some(["eu-1a", "eu-1b", "eu-1c"][i].to_string());
        let cluster = Arc::new(Cluster::builder(client.clone(), config).start().await?);
        let mut opts = ShardManagerOptions::new("orders");
        // This example holds no data; pretend each copy takes a second.
        opts.auto_catch_up = Some(Duration::from_secs(1));
        managers.push(ShardManager::start(cluster, client, shards.clone(), opts).await?);
    }

    // Wait for the placement, then route a few keys from any node.
    for _ in 0..100 {
        if managers.iter().all(|m| m.health().all_healthy()) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let leader = managers.iter().find_map(|m| m.cluster().leader_info());
    if let Some(l) = &leader {
        println!("leader: {} (fencing token {})", l.node_id, l.fencing_token.0);
    }
    for key in ["order:1001", "order:1002", "customer:7"] {
        if let Some(r) = managers[0].route(key.as_bytes()) {
            println!("{key}: shard {} primary {:?} copies {:?}", r.shard, r.primary, r.replicas);
        }
    }
    println!("{}", managers[0].health().to_json());

    // The leader leaves gracefully: another node leads within a second.
    if let Some(i) = managers.iter().position(|m| m.cluster().is_leader()) {
        let leaving = managers.remove(i);
        leaving.cluster().leave().await?;
        leaving.stop();
        for _ in 0..20 {
            if let Some(next) = managers.iter().find(|m| m.cluster().is_leader()) {
                println!("{} leads now", next.cluster().config().node_id);
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    for m in managers {
        m.cluster().leave().await?;
        m.stop();
    }
    Ok(())
}

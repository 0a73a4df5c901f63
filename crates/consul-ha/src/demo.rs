//! `consul-ha demo`: the original "simulate mode", for real. A cluster of nodes on the
//! embedded sim, in virtual time: registration, election with fencing, routing, the leader
//! killed, a node lost and its shards re-replicated, the node back, all green. Invariants are
//! checked throughout; any broken one makes the command exit non-zero.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_api::watch::WatchOptions;
use consul_sim::{Sim, SimConfig};
use ha_cluster::{Cluster, ClusterConfig, Health};
use prod_config::{RoutingTable, ShardConfig, ShardManager, ShardManagerOptions, TableAuditor};
use serde_json::json;
use tokio::time::Instant;

use crate::DemoArgs;

const SERVICE: &str = "consul-ha";
const ZONES: [&str; 3] = ["zone-a", "zone-b", "zone-c"];

pub(crate) fn run(args: &DemoArgs) -> Result<(), String> {
    if !(2..=50).contains(&args.nodes) {
        return Err(format!("--nodes {} is not in 2..=50 (a failover needs two)", args.nodes));
    }
    if !(1..=4096).contains(&args.shards) {
        return Err(format!("--shards {} is not in 1..=4096", args.shards));
    }
    if args.replicas == 0 || args.replicas as usize > args.nodes - 1 {
        return Err(format!(
            "--replicas {} must be in 1..={} (one node is taken down during the demo)",
            args.replicas,
            args.nodes - 1
        ));
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .start_paused(true)
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    let summary = rt.block_on(async { Demo::new(args).run().await });
    let ok = summary["violations"].as_array().is_some_and(|v| v.is_empty());
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&summary).expect("json"));
    }
    if ok { Ok(()) } else { Err(format!("invariants broken: {}", summary["violations"])) }
}

struct Node {
    cluster: Arc<Cluster>,
    manager: ShardManager,
}

struct Demo {
    args: DemoArgs,
    sim: Sim,
    start: Instant,
    nodes: Vec<(String, Option<Node>)>,
    shard_config: ShardConfig,
    audit: Arc<Mutex<TableAuditor>>,
    violations: Vec<String>,
}

impl Demo {
    fn new(args: &DemoArgs) -> Demo {
        let shard_config = ShardConfig {
            shards: args.shards,
            replication_factor: args.replicas,
            min_live: args.replicas.min(2),
            rebalance_delay: Duration::from_secs(10),
            max_moving_fraction: 0.25,
            ..ShardConfig::default()
        };
        Demo {
            args: DemoArgs { ..*args },
            sim: Sim::new(SimConfig { seed: args.seed, ..SimConfig::default() }),
            start: Instant::now(),
            nodes: (1..=args.nodes).map(|i| (format!("node-{i}"), None)).collect(),
            shard_config,
            audit: Arc::default(),
            violations: Vec::new(),
        }
    }

    fn say(&self, msg: impl AsRef<str>) {
        let line = format!("[{:>6.1}s] {}", self.start.elapsed().as_secs_f64(), msg.as_ref());
        if self.args.json {
            eprintln!("{line}");
        } else {
            outln!("{line}");
        }
    }

    async fn launch(&mut self, i: usize) -> Result<(), String> {
        let id = self.nodes[i].0.clone();
        let mut config = ClusterConfig::new(SERVICE, id.clone(), format!("10.0.0.{}:7000", i + 1));
        config.zone = Some(ZONES[i % 3].to_string());
        config.seed = self.args.seed.wrapping_mul(1000).wrapping_add(i as u64);
        let client = self.sim.client(id.clone());
        let cluster = Arc::new(
            Cluster::builder(client.clone(), config).start().await.map_err(|e| e.to_string())?,
        );
        let mut opts = ShardManagerOptions::new(SERVICE);
        opts.auto_catch_up = Some(Duration::from_secs(2));
        let manager = ShardManager::start(cluster.clone(), client, self.shard_config.clone(), opts)
            .await
            .map_err(|e| e.to_string())?;
        self.nodes[i].1 = Some(Node { cluster, manager });
        Ok(())
    }

    fn live(&self) -> impl Iterator<Item = &Node> {
        self.nodes.iter().filter_map(|(_, n)| n.as_ref())
    }

    fn leader(&self) -> Option<usize> {
        self.nodes.iter().position(|(_, n)| n.as_ref().is_some_and(|n| n.cluster.is_leader()))
    }

    /// Waits (virtual time) for `cond`; records a violation and returns false on timeout.
    async fn until(&mut self, limit: Duration, what: &str, cond: impl Fn(&Demo) -> bool) -> bool {
        let t0 = Instant::now();
        let mut shown = t0;
        while !cond(self) {
            // A progress line every few virtual seconds while something takes a while.
            if shown.elapsed() >= Duration::from_secs(3) {
                shown = Instant::now();
                self.progress();
            }
            if t0.elapsed() > limit {
                self.violations.push(format!("{what}: not reached within {limit:?}"));
                self.say(format!("!! {what}: not reached within {limit:?}"));
                return false;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        true
    }

    /// One line: leader, live members, shard health, copies in flight.
    fn progress(&self) {
        let Some(n) = self.live().next() else { return };
        let h = n.manager.health();
        let copying = n
            .manager
            .table()
            .shards
            .iter()
            .filter(|s| s.replicas.iter().any(|r| r.state == prod_config::ReplicaState::CatchingUp))
            .count();
        let leader = n.cluster.leader_info().map_or("none".to_string(), |l| l.node_id);
        let passing = n.cluster.members().iter().filter(|m| m.health == Health::Passing).count();
        self.say(format!(
            "  … leader {leader}, {passing} members passing; shards {} healthy / {} under-replicated / {} unavailable, {copying} copying",
            h.healthy, h.under_replicated, h.unavailable
        ));
    }

    fn all_healthy(&self) -> bool {
        self.live().all(|n| n.manager.health().all_healthy())
    }

    fn print_members(&self) {
        let Some(n) = self.live().next() else { return };
        let health = n.manager.health();
        for line in crate::member_table(&n.cluster.members(), &health) {
            self.say(format!("  {line}"));
        }
        self.say(format!(
            "  shards: {} healthy, {} under-replicated, {} unavailable (table v{})",
            health.healthy, health.under_replicated, health.unavailable, health.table_version
        ));
    }

    async fn run(mut self) -> serde_json::Value {
        let a = &self.args;
        self.say(format!(
            "consul-ha demo: {} nodes in {} zones, {} shards × {} copies, seed {} (virtual time)",
            a.nodes,
            a.nodes.min(3),
            a.shards,
            a.replicas,
            a.seed
        ));
        // Audit every version of the routing table as it is written.
        let (audit, observer) = (self.audit.clone(), self.sim.client("auditor"));
        let auditor = tokio::spawn(async move {
            let opts = WatchOptions {
                min_interval: Duration::ZERO,
                initial_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_millis(100),
                ..WatchOptions::with_wait(Duration::from_secs(30))
            };
            let mut table = observer.watch_key(format!("prod-config/{SERVICE}/table"), opts);
            loop {
                if let Ok((pair, _)) = table.next().await
                    && let Some(t) =
                        pair.and_then(|p| RoutingTable::decode(p.value.as_deref()?).ok())
                {
                    audit.lock().unwrap_or_else(|e| e.into_inner()).observe(&t);
                }
            }
        });

        // 1. Registration.
        for i in 0..self.nodes.len() {
            if let Err(e) = self.launch(i).await {
                self.violations.push(format!("{} failed to start: {e}", self.nodes[i].0));
            }
        }
        let n = self.nodes.len();
        self.until(Duration::from_secs(10), "all members registered and healthy", |d| {
            d.live().all(|x| {
                x.cluster.members().iter().filter(|m| m.health == Health::Passing).count() == n
            })
        })
        .await;
        self.say(format!("registered {n} members with TTL checks; every node sees all of them"));

        // 2. Election.
        self.until(Duration::from_secs(10), "a leader", |d| d.leader().is_some()).await;
        let first = self.leader().unwrap_or(0);
        let first_info = self.nodes[first].1.as_ref().and_then(|x| x.cluster.leader_info());
        let first_token = first_info.as_ref().map_or(0, |l| l.fencing_token.0);
        self.say(format!("{} elected leader, fencing token {first_token}", self.nodes[first].0));

        // 3. Placement.
        let placed_at = Instant::now();
        self.until(Duration::from_secs(60), "all shards placed and healthy", |d| d.all_healthy())
            .await;
        self.say(format!(
            "placed {} shards × {} copies in {:.1}s",
            self.args.shards,
            self.args.replicas,
            placed_at.elapsed().as_secs_f64()
        ));
        self.print_members();

        // 4. Routing.
        let mut routes = Vec::new();
        if let Some(node) = self.live().next() {
            for key in ["user:42", "order:1001", "cart:7", &format!("session:{}", self.args.seed)] {
                if let Some(r) = node.manager.route(key.as_bytes()) {
                    let copies: Vec<&str> = r.replicas.iter().map(|(n, _)| n.as_str()).collect();
                    routes.push(json!({"key": key, "shard": r.shard, "primary": r.primary, "replicas": copies}));
                    self.say(format!(
                        "route {key:<14} → shard {:>3}, primary {}, copies {}",
                        r.shard,
                        r.primary.as_deref().unwrap_or("none"),
                        copies.join(", ")
                    ));
                }
            }
        }
        let agree = self.live().all(|x| {
            x.manager.table().version == self.live().next().map_or(0, |y| y.manager.table().version)
        });
        if !agree {
            self.violations.push("nodes disagree on the routing table".into());
        }

        // 5. Kill the leader.
        let killed = self.leader().unwrap_or(first);
        let killed_id = self.nodes[killed].0.clone();
        self.say(format!("killing the leader {killed_id} (no goodbye: its session must expire)"));
        self.nodes[killed].1 = None;
        let crash = Instant::now();
        self.until(Duration::from_secs(30), "a new leader", |d| d.leader().is_some()).await;
        let failover = crash.elapsed().as_secs_f64();
        let second = self.leader().unwrap_or(0);
        let second_token = self.nodes[second]
            .1
            .as_ref()
            .and_then(|x| x.cluster.fencing_token())
            .map_or(0, |t| t.0);
        self.say(format!(
            "{} took over after {failover:.1}s (its TTL check went critical at 10s and ended its session, then lock-delay 5s: bound 16s; Consul's 2×TTL session reaping, 20s, is not the path here), fencing token {first_token} → {second_token}",
            self.nodes[second].0
        ));
        if failover > 16.0 {
            self.violations.push(format!("failover took {failover:.1}s, over 16s"));
        }
        if second_token <= first_token {
            self.violations.push("the fencing token did not grow".into());
        }

        // 6. The lost node's shards are re-replicated after the rebalance delay.
        let lost = Instant::now();
        self.until(Duration::from_secs(90), "re-replication of the lost node's shards", |d| {
            d.all_healthy()
                && d.live().all(|x| {
                    x.manager.health().nodes.iter().all(|l| l.node != killed_id || l.replicas == 0)
                })
        })
        .await;
        let rereplicated = lost.elapsed().as_secs_f64();
        self.say(format!(
            "{killed_id}'s copies re-replicated {rereplicated:.1}s later (rebalance delay 10s, throttled to {} shards at a time)",
            self.shard_config.max_moving()
        ));
        self.print_members();

        // 7. The node comes back.
        self.say(format!("{killed_id} comes back with the same id"));
        let back = Instant::now();
        if let Err(e) = self.launch(killed).await {
            self.violations.push(format!("{killed_id} failed to restart: {e}"));
        }
        self.until(Duration::from_secs(120), "the returning node gets its share back", |d| {
            d.all_healthy()
                && d.live().all(|x| {
                    x.manager.health().nodes.iter().any(|l| l.node == killed_id && l.replicas > 0)
                })
        })
        .await;
        let rejoined = back.elapsed().as_secs_f64();
        self.say(format!(
            "{killed_id} holds copies again after {rejoined:.1}s; rebalanced make-before-break"
        ));

        // 8. Final health.
        tokio::time::sleep(Duration::from_secs(2)).await;
        let leaders = self.live().filter(|x| x.cluster.is_leader()).count();
        if leaders != 1 {
            self.violations.push(format!("{leaders} leaders at the end"));
        }
        let infos: Vec<_> = self.live().map(|x| x.cluster.leader_info()).collect();
        if infos.windows(2).any(|w| w[0] != w[1]) {
            self.violations.push("members disagree on the leader".into());
        }
        self.print_members();
        let health = self.live().next().map(|x| x.manager.health());
        auditor.abort();
        let audit = self.audit.lock().unwrap_or_else(|e| e.into_inner());
        self.violations.extend(audit.violations().iter().cloned());
        let ok = self.violations.is_empty();
        let final_health = health.as_ref().map(|h| {
            json!({"healthy": h.healthy, "under_replicated": h.under_replicated, "unavailable": h.unavailable, "table_version": h.table_version})
        });
        if ok {
            self.say(format!(
                "all green: {} table versions audited, one primary per shard per epoch, never without an in-sync copy",
                audit.versions()
            ));
        } else {
            self.say(format!("INVARIANTS BROKEN: {:?}", self.violations));
        }
        json!({
            "seed": self.args.seed,
            "nodes": self.args.nodes,
            "shards": self.args.shards,
            "replicas": self.args.replicas,
            "first_leader": self.nodes[first].0,
            "first_fencing_token": first_token,
            "killed": killed_id,
            "new_leader": self.nodes[second].0,
            "new_fencing_token": second_token,
            "failover_secs": failover,
            "rereplicated_secs": rereplicated,
            "rejoined_secs": rejoined,
            "routes": routes,
            "final": final_health,
            "table_versions_audited": audit.versions(),
            "violations": self.violations,
            "ok": ok,
            "virtual_secs": self.start.elapsed().as_secs_f64(),
        })
    }
}

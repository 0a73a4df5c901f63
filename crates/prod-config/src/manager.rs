//! The running shard manager of one node: table and config watches, the controller (active
//! on the cluster leader only), progress reports, health.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use bytes::Bytes;
use consul_api::txn::KvOp;
use consul_api::watch::WatchOptions;
use consul_api::{Client, Index, QueryOptions};
use ha_cluster::{Cluster, ClusterError, Health};
use serde::Serialize;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::plan::{NodeStatus, NodeView, PlanInput, plan_with_target, target};
use crate::table::{ReplicaState, RoutingTable};
use crate::{ShardConfig, ShardError};

/// How a [`ShardManager`] runs.
#[derive(Clone, Debug, PartialEq)]
pub struct ShardManagerOptions {
    /// KV prefix of the config, table and progress keys.
    pub prefix: String,
    /// How often the controller (on the leader) takes a plan step, and how often every node
    /// checks membership and its own copying work.
    pub tick: Duration,
    /// Simulated copying for demos and tests: a copy added to this node reports itself
    /// caught up after this long. `None`: the embedding service calls
    /// [`ShardManager::report_caught_up`] when its copy is done.
    pub auto_catch_up: Option<Duration>,
}

impl ShardManagerOptions {
    /// Defaults for `service`: prefix `prod-config/<service>`, tick 500 ms, no auto catch-up.
    pub fn new(service: &str) -> Self {
        ShardManagerOptions {
            prefix: format!("prod-config/{service}"),
            tick: Duration::from_millis(500),
            auto_catch_up: None,
        }
    }

    fn key(&self, name: &str) -> String {
        format!("{}/{name}", self.prefix.trim_end_matches('/'))
    }

    /// The KV key of the routing table.
    pub fn table_key(&self) -> String {
        self.key("table")
    }

    /// The KV key of the shard config.
    pub fn config_key(&self) -> String {
        self.key("config")
    }
}

/// Where a key goes (owned; see [`RoutingTable::route`] for the borrowed, faster form).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Route {
    /// The key's shard.
    pub shard: u32,
    /// The shard's primary.
    pub primary: Option<String>,
    /// Its copies and whether each is in sync.
    pub replicas: Vec<(String, bool)>,
    /// The shard's epoch.
    pub epoch: u64,
    /// The routing table's version.
    pub version: u64,
}

/// A shard's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ShardHealth {
    /// A live in-sync primary and `replication_factor` live in-sync copies.
    Healthy,
    /// Served, but with fewer live in-sync copies than wanted (or copies still catching up).
    UnderReplicated,
    /// No live in-sync primary.
    Unavailable,
}

/// A node's share of the shards.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct NodeLoad {
    /// The node.
    pub node: String,
    /// Whether it is healthy.
    pub live: bool,
    /// Shards it is primary of.
    pub primaries: usize,
    /// Copies it holds (primaries included).
    pub replicas: usize,
}

/// Health of every shard and the load of every node, at one table version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct HealthSnapshot {
    /// The table version this describes.
    pub table_version: u64,
    /// The config version in force.
    pub config_version: u64,
    /// Healthy shards.
    pub healthy: usize,
    /// Under-replicated shards.
    pub under_replicated: usize,
    /// Unavailable shards.
    pub unavailable: usize,
    /// Each shard's health, by number.
    pub shards: Vec<ShardHealth>,
    /// Each node's load, by id.
    pub nodes: Vec<NodeLoad>,
}

impl HealthSnapshot {
    /// The snapshot as JSON.
    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("a snapshot serializes")
    }

    /// Whether every shard is healthy.
    pub fn all_healthy(&self) -> bool {
        self.healthy == self.shards.len() && !self.shards.is_empty()
    }
}

/// Computes the health of `table` given which nodes are live and which are known (for
/// status tools that read the table from KV).
pub fn health_of(
    table: &RoutingTable,
    config: &ShardConfig,
    live: &HashSet<String>,
    known: &[String],
) -> HealthSnapshot {
    let mut loads: HashMap<&str, NodeLoad> = known
        .iter()
        .map(|n| {
            let l = NodeLoad { node: n.clone(), live: live.contains(n), primaries: 0, replicas: 0 };
            (n.as_str(), l)
        })
        .collect();
    let mut shards = Vec::with_capacity(table.shards.len());
    for s in &table.shards {
        let live_in_sync = s.in_sync().filter(|r| live.contains(&r.node)).count();
        let primary_ok = s
            .primary
            .as_ref()
            .is_some_and(|p| live.contains(p) && s.in_sync().any(|r| &r.node == p));
        let all_in_sync = s.replicas.iter().all(|r| r.state == ReplicaState::InSync);
        shards.push(if !primary_ok {
            ShardHealth::Unavailable
        } else if live_in_sync >= config.replication_factor as usize && all_in_sync {
            ShardHealth::Healthy
        } else {
            ShardHealth::UnderReplicated
        });
        for r in &s.replicas {
            let l = loads.entry(r.node.as_str()).or_insert_with(|| NodeLoad {
                node: r.node.clone(),
                live: live.contains(&r.node),
                primaries: 0,
                replicas: 0,
            });
            l.replicas += 1;
            if s.primary.as_ref() == Some(&r.node) {
                l.primaries += 1;
            }
        }
    }
    let count = |h| shards.iter().filter(|&&x| x == h).count();
    let mut nodes: Vec<NodeLoad> = loads.into_values().collect();
    nodes.sort_by(|a, b| a.node.cmp(&b.node));
    HealthSnapshot {
        table_version: table.version,
        config_version: config.version,
        healthy: count(ShardHealth::Healthy),
        under_replicated: count(ShardHealth::UnderReplicated),
        unavailable: count(ShardHealth::Unavailable),
        shards,
        nodes,
    }
}

#[derive(Debug)]
struct Shared {
    cluster: Arc<Cluster>,
    client: Client,
    opts: ShardManagerOptions,
    config: RwLock<ShardConfig>,
    table: RwLock<Arc<RoutingTable>>,
    /// When each known node was first seen down (all nodes track this, so a new leader
    /// inherits no head start but no reset either once it has watched a while).
    down_since: Mutex<HashMap<String, Instant>>,
    rejected: Mutex<Option<String>>,
}

impl Shared {
    fn config(&self) -> ShardConfig {
        self.config.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn table(&self) -> Arc<RoutingTable> {
        self.table.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Installs `t` if it is newer than the cached table: versions never go backwards.
    fn offer_table(&self, t: RoutingTable) {
        let mut cur = self.table.write().unwrap_or_else(|e| e.into_inner());
        if t.version > cur.version {
            *cur = Arc::new(t);
        }
    }

    /// Applies a config from KV if it is a valid step forward; otherwise keeps the old one
    /// and says why.
    fn offer_config(&self, bytes: &[u8]) {
        let key = self.opts.config_key();
        let mut cur = self.config.write().unwrap_or_else(|e| e.into_inner());
        let result = ShardConfig::from_json(bytes, &key).and_then(|next| {
            if next == *cur {
                return Ok(None);
            }
            cur.check_update(&next).map(|()| Some(next))
        });
        match result {
            Ok(Some(next)) => {
                tracing::info!(version = next.version, "applying shard config from KV");
                *cur = next;
                *self.rejected.lock().unwrap_or_else(|e| e.into_inner()) = None;
            }
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %e, "rejected shard config update; keeping version {}", cur.version);
                *self.rejected.lock().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
            }
        }
    }

    /// Nodes as the planner sees them: members with their health, plus nodes the table
    /// still names that have left (down).
    fn node_views(&self, config: &ShardConfig, table: &RoutingTable) -> Vec<NodeView> {
        let now = Instant::now();
        let members = self.cluster.members();
        let mut down = self.down_since.lock().unwrap_or_else(|e| e.into_inner());
        let mut views: Vec<NodeView> = members
            .iter()
            .map(|m| {
                let status = if m.health == Health::Passing {
                    down.remove(&m.id);
                    NodeStatus::Live
                } else {
                    let since = *down.entry(m.id.clone()).or_insert(now);
                    NodeStatus::Down { expired: now - since >= config.rebalance_delay }
                };
                NodeView { id: m.id.clone(), zone: m.zone.clone(), weight: m.weight, status }
            })
            .collect();
        let listed: HashSet<String> = views.iter().map(|v| v.id.clone()).collect();
        let gone: HashSet<&String> =
            table.shards.iter().flat_map(|s| s.replicas.iter().map(|r| &r.node)).collect();
        for node in gone {
            if !listed.contains(node) {
                let since = *down.entry(node.clone()).or_insert(now);
                views.push(NodeView {
                    id: node.clone(),
                    zone: None,
                    weight: 1,
                    status: NodeStatus::Down { expired: now - since >= config.rebalance_delay },
                });
            }
        }
        views
    }

    async fn read_table(&self) -> Result<(RoutingTable, Index), ShardError> {
        let opts = QueryOptions::default().consistent();
        let (pair, _) = self.client.kv().get_with(&self.opts.table_key(), &opts).await?;
        match pair {
            None => Ok((RoutingTable::default(), Index(0))),
            Some(p) => {
                let t = RoutingTable::decode(p.value.as_deref().unwrap_or_default())?;
                Ok((t, p.modify_index))
            }
        }
    }

    async fn caught_up(&self) -> Result<HashSet<(u32, String, u64)>, ShardError> {
        let prefix = self.opts.key("progress/");
        let (pairs, _) = self.client.kv().list(&prefix, &QueryOptions::default()).await?;
        let mut out = HashSet::new();
        for p in pairs {
            let Some(rest) = p.key.strip_prefix(&prefix) else { continue };
            let Some((shard, node)) = rest.split_once('/') else { continue };
            let since = p.value.as_deref().and_then(|v| std::str::from_utf8(v).ok()?.parse().ok());
            if let (Ok(shard), Some(since)) = (shard.parse(), since) {
                out.insert((shard, node.to_string(), since));
            }
        }
        Ok(out)
    }

    /// One controller step on the leader: read, plan, write under the leader's fence.
    async fn control(&self) -> Result<bool, ShardError> {
        let (table, index) = self.read_table().await?;
        let config = self.config();
        if !table.shards.is_empty() && table.shards.len() != config.shards as usize {
            return Err(ShardError::Table(format!(
                "the routing table has {} shards but the config says {}; refusing to plan",
                table.shards.len(),
                config.shards
            )));
        }
        let nodes = self.node_views(&config, &table);
        let caught_up = self.caught_up().await?;
        let targets = target(&config, &nodes);
        let input = PlanInput { config: &config, nodes: &nodes, caught_up: &caught_up };
        let Some(next) = plan_with_target(&table, &input, &targets) else {
            self.offer_table(table);
            return Ok(false);
        };
        let mut next = next;
        let key = self.opts.table_key();
        let written = self.cluster.leader_txn_with(|token| {
            next.token = token.0;
            vec![KvOp::cas(key, Bytes::from(next.encode()), index)]
        });
        match written.await {
            Ok(_) => {
                tracing::info!(version = next.version, "routing table step applied");
                self.offer_table(next);
                Ok(true)
            }
            Err(ClusterError::Rejected(errors)) => {
                tracing::debug!(?errors, "the table moved under us; planning again");
                Ok(false)
            }
            Err(e) => Err(e.into()),
        }
    }
}

async fn controller_task(shared: Arc<Shared>) {
    loop {
        tokio::time::sleep(shared.opts.tick).await;
        let config = shared.config();
        if !shared.cluster.is_leader() {
            // Keep the down-since clock running on followers too.
            let table = shared.table();
            shared.node_views(&config, &table);
            continue;
        }
        if let Err(e) = shared.control().await {
            tracing::warn!(error = %e, "controller step failed");
        }
    }
}

/// Watches KV key `name` under the prefix with blocking queries and hands every changed
/// value to `apply`; `what` names it in logs.
async fn watch_key(shared: Arc<Shared>, name: &str, what: &str, apply: fn(&Shared, &[u8])) {
    let opts = WatchOptions {
        wait: Some(Duration::from_secs(60)),
        min_interval: Duration::ZERO,
        initial_backoff: shared.opts.tick,
        max_backoff: shared.opts.tick,
        ..Default::default()
    };
    let mut key = shared.client.watch_key(shared.opts.key(name), opts);
    loop {
        match key.next().await {
            Ok((Some(pair), _)) => apply(&shared, pair.value.as_deref().unwrap_or_default()),
            Ok((None, _)) => {}
            Err(e) => tracing::debug!(error = %e, "watching the {what} failed"),
        }
    }
}

fn apply_table(shared: &Shared, bytes: &[u8]) {
    match RoutingTable::decode(bytes) {
        Ok(t) => shared.offer_table(t),
        Err(e) => tracing::warn!(error = %e, "ignoring an unreadable routing table"),
    }
}

/// Simulated copying: reports this node's catching-up copies done after `copy_time`.
async fn catch_up_task(shared: Arc<Shared>, copy_time: Duration) {
    let me = shared.cluster.config().node_id.clone();
    // Copies in progress here: when each started, and whether it was reported done.
    let mut started: HashMap<(u32, u64), (Instant, bool)> = HashMap::new();
    loop {
        tokio::time::sleep(shared.opts.tick).await;
        let table = shared.table();
        let now = Instant::now();
        let mut pending = HashSet::new();
        for (i, s) in table.shards.iter().enumerate() {
            for r in &s.replicas {
                if r.node == me && r.state == ReplicaState::CatchingUp {
                    pending.insert((i as u32, r.since));
                }
            }
        }
        started.retain(|k, _| pending.contains(k));
        for k in pending {
            let (t0, reported) = started.entry(k).or_insert((now, false));
            if *reported || now - *t0 < copy_time {
                continue;
            }
            match report(&shared, k.0, k.1).await {
                Ok(()) => *reported = true,
                Err(e) => tracing::debug!(error = %e, "reporting a caught-up copy failed"),
            }
        }
    }
}

async fn report(shared: &Shared, shard: u32, since: u64) -> Result<(), ShardError> {
    let node = &shared.cluster.config().node_id;
    let key = shared.opts.key(&format!("progress/{shard}/{node}"));
    shared.client.kv().put(&key, since.to_string()).await?;
    Ok(())
}

/// One node's shard manager. See the [crate docs](crate).
#[derive(Debug)]
pub struct ShardManager {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
}

impl ShardManager {
    /// Starts managing shards for `cluster`. `initial` is written to KV if KV has no config
    /// yet; otherwise KV's config is used (a valid one; an invalid one is reported and
    /// `initial` is used until a valid update arrives).
    pub async fn start(
        cluster: Arc<Cluster>,
        client: Client,
        initial: ShardConfig,
        opts: ShardManagerOptions,
    ) -> Result<ShardManager, ShardError> {
        initial.validate()?;
        let config_key = opts.config_key();
        client.kv().cas(&config_key, Bytes::from(initial.to_json()), Index(0)).await?;
        let shared = Arc::new(Shared {
            cluster,
            client,
            opts: opts.clone(),
            config: RwLock::new(initial),
            table: RwLock::new(Arc::new(RoutingTable::default())),
            down_since: Mutex::new(HashMap::new()),
            rejected: Mutex::new(None),
        });
        let pair = shared.client.kv().get(&config_key).await?;
        if let Some(p) = pair {
            let stored =
                ShardConfig::from_json(p.value.as_deref().unwrap_or_default(), &config_key);
            match stored {
                Ok(c) => *shared.config.write().unwrap_or_else(|e| e.into_inner()) = c,
                Err(e) => {
                    tracing::warn!(error = %e, "the config in KV is invalid; using the local one");
                    *shared.rejected.lock().unwrap_or_else(|e| e.into_inner()) =
                        Some(e.to_string());
                }
            }
        }
        if let Ok((t, _)) = shared.read_table().await {
            shared.offer_table(t);
        }
        let mut tasks = vec![
            tokio::spawn(controller_task(shared.clone())),
            tokio::spawn(watch_key(shared.clone(), "table", "routing table", apply_table)),
            tokio::spawn(watch_key(shared.clone(), "config", "shard config", Shared::offer_config)),
        ];
        if let Some(copy_time) = opts.auto_catch_up {
            tasks.push(tokio::spawn(catch_up_task(shared.clone(), copy_time)));
        }
        Ok(ShardManager { shared, tasks })
    }

    /// The cluster this manager runs on.
    pub fn cluster(&self) -> &Arc<Cluster> {
        &self.shared.cluster
    }

    /// The config in force.
    pub fn config(&self) -> ShardConfig {
        self.shared.config()
    }

    /// Why the last config update from KV was rejected, if it was.
    pub fn rejected_config(&self) -> Option<String> {
        self.shared.rejected.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The cached routing table.
    pub fn table(&self) -> Arc<RoutingTable> {
        self.shared.table()
    }

    /// Where `key` goes, from the cached table; `None` before the first placement.
    pub fn route(&self, key: &[u8]) -> Option<Route> {
        let table = self.shared.table();
        let r = table.route(key)?;
        Some(Route {
            shard: r.shard,
            primary: r.primary.map(str::to_string),
            replicas: r
                .replicas
                .iter()
                .map(|x| (x.node.clone(), x.state == ReplicaState::InSync))
                .collect(),
            epoch: r.epoch,
            version: r.version,
        })
    }

    /// Health of every shard and node now.
    pub fn health(&self) -> HealthSnapshot {
        let members = self.shared.cluster.members();
        let live: HashSet<String> =
            members.iter().filter(|m| m.health == Health::Passing).map(|m| m.id.clone()).collect();
        let known: Vec<String> = members.iter().map(|m| m.id.clone()).collect();
        health_of(&self.shared.table(), &self.shared.config(), &live, &known)
    }

    /// Reports that this node's copy of `shard` (added at table version `since`) caught up.
    pub async fn report_caught_up(&self, shard: u32, since: u64) -> Result<(), ShardError> {
        report(&self.shared, shard, since).await
    }

    /// Writes a new config to KV (validated against the one in force first); every node
    /// applies it from its watch.
    pub async fn update_config(&self, next: &ShardConfig) -> Result<(), ShardError> {
        self.shared.config().check_update(next)?;
        self.shared.client.kv().put(&self.shared.opts.config_key(), next.to_json()).await?;
        Ok(())
    }

    /// Stops the manager's tasks (the cluster membership is stopped separately).
    pub fn stop(mut self) {
        for t in self.tasks.drain(..) {
            t.abort();
        }
    }
}

impl Drop for ShardManager {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

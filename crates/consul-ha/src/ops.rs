//! `agent`, `node`, `status` and `route`: the operator's commands.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use consul_api::{Client, ClientBuilder, QueryOptions};
use consul_sim::{ServeOptions, Sim, SimConfig, TlsConfig};
use futures_util::StreamExt;
use ha_cluster::{Cluster, ClusterConfig, Health};
use prod_config::{RoutingTable, ShardConfig, ShardManager, ShardManagerOptions, health_of};

use crate::{AgentArgs, ConsulArgs, NodeArgs, RouteArgs, StatusArgs};

/// Waits for SIGINT or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

pub(crate) async fn agent(args: AgentArgs) -> Result<(), String> {
    if !args.dev {
        return Err("only development mode is supported: run `consul-ha agent -dev`".into());
    }
    // `unix:///path`: Consul's `addresses { http = "unix:///path" }`.
    let socket = args.http_addr.strip_prefix("unix://").map(std::path::PathBuf::from);
    let addr: Result<SocketAddr, _> = args.http_addr.parse();
    if socket.is_none() && addr.is_err() {
        return Err(format!(
            "--http-addr {:?} is not an IP:port address or unix:///path",
            args.http_addr
        ));
    }
    let config = SimConfig {
        node_name: args.node.clone(),
        session_ttl_min: args.session_ttl_min,
        seed: os_seed(),
        enable_script_checks: args.enable_script_checks,
        // As `consul agent -dev`: every JSON answer indented.
        pretty: true,
        ..SimConfig::default()
    };
    let sim = match &args.data_dir {
        Some(dir) => Sim::with_data_dir(config, dir)?,
        None => Sim::new(config),
    };
    // A restored snapshot brings its generator state back: mix in fresh randomness so
    // session ids issued after the last save are never handed out twice.
    sim.with_core(|core, _| core.reseed(os_seed()));
    let options = ServeOptions {
        fault_injection: args.enable_fault_injection,
        header_read_timeout: Some(args.http_read_header_timeout).filter(|d| !d.is_zero()),
        max_conns_per_client: args.http_max_conns_per_client,
        tls: match (&args.tls_cert, &args.tls_key) {
            (Some(cert), Some(key)) => Some(
                TlsConfig::from_pem_files(cert, key, args.tls_ca.as_deref(), args.verify_incoming)
                    .map_err(|e| e.to_string())?,
            ),
            _ => None,
        },
    };
    let listen_error = |e: std::io::Error| format!("cannot listen on {}: {e}", args.http_addr);
    let server = match (socket, addr) {
        (Some(path), _) => Listening::unix(&sim, &path, options).await.map_err(listen_error)?,
        (None, Ok(addr)) => {
            Listening::Tcp(sim.serve_with(addr, options).await.map_err(listen_error)?)
        }
        (None, Err(e)) => return Err(format!("--http-addr {:?}: {e}", args.http_addr)),
    };
    outln!("consul-ha agent -dev: Consul HTTP API at {} (node {:?})", server.url(), args.node);
    if args.enable_fault_injection {
        outln!(
            "fault injection: ON (/v1/_sim/…, X-Sim-Client): any client can partition the store"
        );
    } else {
        outln!("fault injection: off (--enable-fault-injection serves /v1/_sim/…)");
    }
    // The sim logs every write to the data dir and snapshots as the log grows; shutting
    // down takes a last snapshot.
    // Like Consul, the agent also exits once `PUT /v1/agent/leave` has been answered.
    tokio::select! {
        _ = shutdown_signal() => {}
        _ = sim.left() => tracing::info!("left the cluster (agent/leave)"),
    }
    tracing::info!("shutting down");
    server.shutdown().await;
    sim.save_snapshot().map_err(|e| format!("final snapshot failed: {e}"))?;
    Ok(())
}

/// The dev agent's HTTP listener: a TCP address or a unix socket.
enum Listening {
    Tcp(consul_sim::Server),
    #[cfg(unix)]
    Unix(consul_sim::UnixServer),
}

impl Listening {
    #[cfg(unix)]
    async fn unix(
        sim: &Sim,
        path: &std::path::Path,
        options: ServeOptions,
    ) -> std::io::Result<Listening> {
        Ok(Listening::Unix(sim.serve_unix(path, options).await?))
    }

    #[cfg(not(unix))]
    async fn unix(
        _sim: &Sim,
        _path: &std::path::Path,
        _options: ServeOptions,
    ) -> std::io::Result<Listening> {
        Err(std::io::Error::new(std::io::ErrorKind::Unsupported, "unix sockets need a unix system"))
    }

    fn url(&self) -> String {
        match self {
            Listening::Tcp(s) => s.url(),
            #[cfg(unix)]
            Listening::Unix(s) => s.url(),
        }
    }

    async fn shutdown(self) {
        match self {
            Listening::Tcp(s) => s.shutdown().await,
            #[cfg(unix)]
            Listening::Unix(s) => s.shutdown().await,
        }
    }
}

/// 64 bits from the OS's randomness (std's `RandomState` keys are drawn from it), so each
/// agent run hands out different session ids, as Consul does.
fn os_seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::UNIX_EPOCH.elapsed().map_or(0, |d| d.as_nanos()));
    h.finish()
}

/// A client for `args`: Consul's client environment, overridden by the flags; checked to
/// reach Consul.
async fn connect(args: &ConsulArgs) -> Result<Client, String> {
    let mut b = ClientBuilder::from_env().map_err(|e| e.to_string())?;
    let addr = match &args.http_addr {
        Some(addr) => {
            b = b.address(addr.clone());
            addr.clone()
        }
        None => std::env::var("CONSUL_HTTP_ADDR")
            .ok()
            .filter(|a| !a.is_empty())
            .unwrap_or_else(|| "127.0.0.1:8500".into()),
    };
    if let Some(t) = &args.token {
        b = b.token(t.clone());
    }
    let client = b.build().map_err(|e| format!("{addr}: {e}"))?;
    client.status().leader().await.map_err(|e| format!("cannot reach Consul at {addr}: {e}"))?;
    Ok(client)
}

pub(crate) async fn node(args: NodeArgs) -> Result<(), String> {
    let shards = match &args.config {
        Some(path) => ShardConfig::from_file(path).map_err(|e| e.to_string())?,
        None => ShardConfig::default(),
    };
    let mut config =
        ClusterConfig::new(args.consul.service.clone(), args.id.clone(), args.address.clone());
    config.zone = args.zone.clone();
    config.session_ttl = args.ttl;
    config.lock_delay = args.lock_delay;
    config.heartbeat_interval = (args.ttl / 5).min(Duration::from_secs(1));
    config.lease_margin = (args.ttl / 10).min(Duration::from_millis(500));
    config.validate().map_err(|e| e.to_string())?;
    let client = connect(&args.consul).await?;
    let metrics = args.metrics_addr.map(|_| crate::metrics::Metrics::new());
    let client = match &metrics {
        Some(m) => client.layered(|t| crate::metrics::Instrumented::new(t, m.clone())),
        None => client,
    };
    let cluster =
        Cluster::builder(client.clone(), config).start().await.map_err(|e| e.to_string())?;
    let cluster = Arc::new(cluster);
    let terms = match &args.events_log {
        Some(path) => Some(crate::events_log::spawn(path, &cluster)?),
        None => None,
    };
    let mut opts = ShardManagerOptions::new(&args.consul.service);
    opts.auto_catch_up = Some(args.copy_time);
    let manager = ShardManager::start(cluster.clone(), client, shards, opts)
        .await
        .map_err(|e| e.to_string())?;
    let manager = Arc::new(manager);
    let exporter = match (args.metrics_addr, metrics) {
        (Some(addr), Some(m)) => {
            crate::metrics::serve(addr, m, cluster.clone(), manager.clone()).await?
        }
        _ => Vec::new(),
    };
    tracing::info!(id = %args.id, service = %args.consul.service, "joined");
    let events = cluster.subscribe();
    let logger = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(e) = events.next().await {
            tracing::info!(event = ?e, "cluster");
        }
    });
    let signal = shutdown_signal();
    tokio::pin!(signal);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    let mut seen_version = 0;
    loop {
        tokio::select! {
            () = &mut signal => break,
            _ = tick.tick() => {
                let t = manager.table();
                if t.version != seen_version {
                    seen_version = t.version;
                    let h = manager.health();
                    let mine = t.shards.iter().filter(|s| s.holds(&args.id)).count();
                    let primary = t.shards.iter().filter(|s| s.primary.as_deref() == Some(args.id.as_str())).count();
                    tracing::info!(version = t.version, healthy = h.healthy, under_replicated = h.under_replicated,
                        unavailable = h.unavailable, holds = mine, primary_of = primary, "shards");
                }
            }
        }
    }
    tracing::info!("leaving: handing over leadership and primaries first");
    drain(&cluster, &manager, &args.id).await;
    for task in exporter {
        task.abort();
    }
    // The last handle: dropping it stops the manager's tasks.
    drop(manager);
    logger.abort();
    let left = cluster.leave().await.map_err(|e| format!("leaving the cluster: {e}"));
    if let Some(terms) = terms {
        // Let the log take the last `lost` line.
        tokio::time::sleep(Duration::from_millis(20)).await;
        terms.abort();
    }
    left
}

/// A graceful leave: resign (a follower takes leadership at once), then wait, while still
/// serving, until the leader has moved every primary off this node (at most 10 s), so no
/// route ever points at a node that is gone.
async fn drain(cluster: &Cluster, manager: &ShardManager, id: &str) {
    if let Err(e) = cluster.resign().await {
        tracing::warn!(error = %e, "resigning failed; leaving anyway");
        return;
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let t = manager.table();
        let primaries = t.shards.iter().filter(|s| s.primary.as_deref() == Some(id)).count();
        if primaries == 0 {
            return;
        }
        if tokio::time::Instant::now() > deadline {
            tracing::warn!(
                primaries,
                "the leader did not move every primary off in time; leaving anyway"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `status` and `route` read from Consul.
struct View {
    leader: Option<ha_cluster::LeaderInfo>,
    members: Vec<ha_cluster::Member>,
    table: RoutingTable,
    config: ShardConfig,
}

async fn view(args: &ConsulArgs) -> Result<View, String> {
    let client = connect(args).await?;
    let leader_key = format!("{}/leader", ClusterConfig::default_key_prefix(&args.service));
    let leader = ha_cluster::read_leader(&client, &leader_key).await.map_err(|e| e.to_string())?;
    let members =
        ha_cluster::read_members(&client, &args.service).await.map_err(|e| e.to_string())?;
    let opts = ShardManagerOptions::new(&args.service);
    let kv = client.kv();
    let q = QueryOptions::default();
    let table_key = opts.table_key();
    let table = match kv.get_with(&table_key, &q).await.map_err(|e| e.to_string())?.0 {
        Some(p) => RoutingTable::decode(p.value.as_deref().unwrap_or_default())
            .map_err(|e| e.to_string())?,
        None => RoutingTable::default(),
    };
    let config_key = opts.config_key();
    let config = match kv.get_with(&config_key, &q).await.map_err(|e| e.to_string())?.0 {
        Some(p) => ShardConfig::from_json(p.value.as_deref().unwrap_or_default(), &config_key)
            .map_err(|e| e.to_string())?,
        None => ShardConfig::default(),
    };
    Ok(View { leader, members, table, config })
}

pub(crate) async fn status(args: StatusArgs) -> Result<(), String> {
    let v = view(&args.consul).await?;
    let live: HashSet<String> =
        v.members.iter().filter(|m| m.health == Health::Passing).map(|m| m.id.clone()).collect();
    let known: Vec<String> = v.members.iter().map(|m| m.id.clone()).collect();
    let health = health_of(&v.table, &v.config, &live, &known);
    if args.json {
        let out = serde_json::json!({
            "service": args.consul.service,
            "leader": v.leader.as_ref().map(|l| serde_json::json!({
                "node_id": l.node_id, "address": l.address, "fencing_token": l.fencing_token.0,
            })),
            "members": v.members.iter().map(|m| serde_json::json!({
                "id": m.id, "address": m.address, "zone": m.zone, "health": crate::health_name(m.health),
            })).collect::<Vec<_>>(),
            "shards": serde_json::to_value(&health).map_err(|e| e.to_string())?,
            "copies_in_flight": copies_in_flight(&v.table),
        });
        outln!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
        return Ok(());
    }
    match &v.leader {
        Some(l) => {
            outln!("leader: {} at {} (fencing token {})", l.node_id, l.address, l.fencing_token.0)
        }
        None => outln!("leader: none"),
    }
    for line in crate::member_table(&v.members, &health) {
        outln!("{line}");
    }
    let count = |h: Health| v.members.iter().filter(|m| m.health == h).count();
    outln!(
        "members: {} passing, {} warning, {} critical, {} maintenance",
        count(Health::Passing),
        count(Health::Warning),
        count(Health::Critical),
        count(Health::Maintenance)
    );
    outln!(
        "shards: {} total, {} healthy, {} under-replicated, {} unavailable (table v{}, config v{}); {} copies in flight",
        health.shards.len(),
        health.healthy,
        health.under_replicated,
        health.unavailable,
        health.table_version,
        health.config_version,
        copies_in_flight(&v.table)
    );
    Ok(())
}

/// Shard copies still catching up (the metrics' `copies_in_flight`).
fn copies_in_flight(t: &RoutingTable) -> usize {
    t.shards
        .iter()
        .flat_map(|s| &s.replicas)
        .filter(|r| r.state == prod_config::ReplicaState::CatchingUp)
        .count()
}

pub(crate) async fn route(args: RouteArgs) -> Result<(), String> {
    let v = view(&args.consul).await?;
    let r = v
        .table
        .route(args.key.as_bytes())
        .ok_or_else(|| format!("service {:?} has no routing table yet", args.consul.service))?;
    let replicas: Vec<_> = r
        .replicas
        .iter()
        .map(|x| (x.node.clone(), x.state == prod_config::ReplicaState::InSync))
        .collect();
    if args.json {
        let out = serde_json::json!({
            "key": args.key, "shard": r.shard, "primary": r.primary, "epoch": r.epoch,
            "table_version": r.version,
            "replicas": replicas.iter().map(|(n, s)| serde_json::json!({"node": n, "in_sync": s})).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&out).map_err(|e| e.to_string())?);
    } else {
        let list: Vec<String> = replicas
            .iter()
            .map(|(n, s)| if *s { n.clone() } else { format!("{n} (catching up)") })
            .collect();
        outln!(
            "key {:?}: shard {}, primary {}, replicas [{}], epoch {}, table v{}",
            args.key,
            r.shard,
            r.primary.unwrap_or("none"),
            list.join(", "),
            r.epoch,
            r.version
        );
    }
    Ok(())
}

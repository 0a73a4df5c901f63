//! `node --metrics-addr`: the node's state and its Consul traffic as Prometheus text
//! (`GET /metrics`), built with `prometheus-client`.
//!
//! Gauges are refreshed from the cluster and the shard manager every 250 ms; Consul requests
//! are timed by a transport layer around the node's client, so every request the cluster
//! and the shard manager send is counted, blocking reads apart from the rest.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use consul_api::{Error, Request, Response, Transport};
use futures_util::StreamExt;
use ha_cluster::{Cluster, Event, Health};
use http_body_util::Full;
use prod_config::{ReplicaState, ShardManager};
use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

type Labels = Vec<(&'static str, String)>;

fn latency() -> Histogram {
    // 1 ms … 65 s: quick writes to blocking reads that wait out their full minute.
    Histogram::new(exponential_buckets(0.001, 2.0, 17))
}

/// Every metric the node exports.
#[derive(Debug)]
pub(crate) struct Metrics {
    is_leader: Gauge,
    fencing_token: Gauge,
    leadership_changes: Counter,
    members: Family<Labels, Gauge>,
    shards: Family<Labels, Gauge>,
    table_version: Gauge,
    copies_in_flight: Gauge,
    requests: Family<Labels, Histogram, fn() -> Histogram>,
    errors: Family<Labels, Counter>,
    registry: Registry,
}

impl Metrics {
    /// Registers every metric under the `consul_ha_` prefix.
    pub(crate) fn new() -> Arc<Metrics> {
        let mut registry = Registry::with_prefix("consul_ha");
        let m = Metrics {
            is_leader: Gauge::default(),
            fencing_token: Gauge::default(),
            leadership_changes: Counter::default(),
            members: Family::default(),
            shards: Family::default(),
            table_version: Gauge::default(),
            copies_in_flight: Gauge::default(),
            requests: Family::new_with_constructor(latency),
            errors: Family::default(),
            registry: Registry::default(),
        };
        registry.register("is_leader", "1 while this node acts as leader", m.is_leader.clone());
        registry.register(
            "fencing_token",
            "The leader key's LockIndex this node holds (0 when not leader)",
            m.fencing_token.clone(),
        );
        registry.register(
            "leadership_changes",
            "New leaders this node has seen take the leader key",
            m.leadership_changes.clone(),
        );
        registry.register("members", "Cluster members by health", m.members.clone());
        registry.register("shards", "Shards by health", m.shards.clone());
        registry.register(
            "routing_table_version",
            "Version of the cached routing table",
            m.table_version.clone(),
        );
        registry.register(
            "copies_in_flight",
            "Shard copies still catching up, cluster-wide",
            m.copies_in_flight.clone(),
        );
        registry.register(
            "consul_request_duration_seconds",
            "Consul HTTP requests by endpoint and whether they block",
            m.requests.clone(),
        );
        registry.register(
            "consul_request_errors",
            "Failed Consul requests by endpoint and status (`transport`: no response)",
            m.errors.clone(),
        );
        Arc::new(Metrics { registry, ..m })
    }

    /// The Prometheus text exposition.
    pub(crate) fn render(&self) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = encode(&mut out, &self.registry);
        out
    }

    /// Refreshes the gauges from the node's state.
    fn refresh(&self, cluster: &Cluster, manager: &ShardManager) {
        self.is_leader.set(i64::from(cluster.is_leader()));
        self.fencing_token.set(cluster.fencing_token().map_or(0, |t| t.0 as i64));
        let members = cluster.members();
        for (health, name) in [
            (Health::Passing, "passing"),
            (Health::Warning, "warning"),
            (Health::Critical, "critical"),
            (Health::Maintenance, "maintenance"),
        ] {
            let n = members.iter().filter(|m| m.health == health).count();
            self.members.get_or_create(&vec![("health", name.to_string())]).set(n as i64);
        }
        let h = manager.health();
        for (name, n) in [
            ("healthy", h.healthy),
            ("under_replicated", h.under_replicated),
            ("unavailable", h.unavailable),
        ] {
            self.shards.get_or_create(&vec![("health", name.to_string())]).set(n as i64);
        }
        let t = manager.table();
        self.table_version.set(t.version as i64);
        let moving = t
            .shards
            .iter()
            .flat_map(|s| &s.replicas)
            .filter(|r| r.state == ReplicaState::CatchingUp)
            .count();
        self.copies_in_flight.set(moving as i64);
    }
}

/// Times every request through it into [`Metrics`].
#[derive(Debug)]
pub(crate) struct Instrumented {
    inner: Arc<dyn Transport>,
    metrics: Arc<Metrics>,
}

impl Instrumented {
    pub(crate) fn new(inner: Arc<dyn Transport>, metrics: Arc<Metrics>) -> Instrumented {
        Instrumented { inner, metrics }
    }
}

/// `/v1/kv/a/b` → `kv`, `/v1/agent/check/pass/x` → `agent`: few label values.
fn endpoint(path: &str) -> String {
    path.trim_start_matches("/v1/").split('/').next().unwrap_or("").to_string()
}

#[async_trait]
impl Transport for Instrumented {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        let ep = endpoint(&req.path);
        let blocking = req.query.iter().any(|(k, _)| k == "index");
        let started = tokio::time::Instant::now();
        let result = self.inner.send(req).await;
        let labels = vec![("endpoint", ep.clone()), ("blocking", blocking.to_string())];
        self.metrics.requests.get_or_create(&labels).observe(started.elapsed().as_secs_f64());
        let status = match &result {
            Ok(r) if r.status.as_u16() >= 400 => Some(r.status.as_u16().to_string()),
            Ok(_) => None,
            Err(_) => Some("transport".to_string()),
        };
        if let Some(status) = status {
            self.metrics.errors.get_or_create(&vec![("endpoint", ep), ("status", status)]).inc();
        }
        result
    }
}

/// Serves `/metrics` on `addr` and keeps the gauges fresh until the tasks are aborted.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<Metrics>,
    cluster: Arc<Cluster>,
    manager: Arc<ShardManager>,
) -> Result<Vec<tokio::task::JoinHandle<()>>, String> {
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| format!("--metrics-addr {addr}: {e}"))?;
    tracing::info!(%addr, "serving metrics at /metrics");
    let events = cluster.subscribe();
    let m = metrics.clone();
    let changes = tokio::spawn(async move {
        let mut events = std::pin::pin!(events);
        while let Some(e) = events.next().await {
            if matches!(e, Event::LeaderElected { .. }) {
                m.leadership_changes.inc();
            }
        }
    });
    let m = metrics.clone();
    let refresh = tokio::spawn(async move {
        loop {
            m.refresh(&cluster, &manager);
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    });
    let server = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let m = metrics.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: hyper::Request<_>| {
                    let m = m.clone();
                    async move {
                        let (status, body) = if req.uri().path() == "/metrics" {
                            (200, m.render())
                        } else {
                            (404, "only /metrics is served here\n".to_string())
                        };
                        hyper::Response::builder()
                            .status(status)
                            .header(
                                "content-type",
                                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                            )
                            .body(Full::new(Bytes::from(body)))
                    }
                });
                let io = hyper_util::rt::TokioIo::new(stream);
                let _ =
                    hyper::server::conn::http1::Builder::new().serve_connection(io, service).await;
            });
        }
    });
    Ok(vec![changes, refresh, server])
}

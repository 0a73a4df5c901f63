//! Backends the client-level conformance tests run against: the sim in-process, the sim over
//! HTTP, and a real Consul 1.8.7 dev agent the test starts itself (or the Consul at
//! `CONSUL_HTTP_ADDR`, when that is set).

use consul_api::Client;
use consul_sim::{Server, Sim, SimConfig};

use crate::real_consul::RealConsul;

/// One place a test can send its requests.
pub(crate) struct Backend {
    /// What it is, for failure messages.
    pub(crate) name: &'static str,
    /// A client for it.
    pub(crate) client: Client,
    _server: Option<Server>,
    _consul: Option<RealConsul>,
}

/// The simulator in-process and over HTTP, and a real Consul.
pub(crate) async fn backends() -> Vec<Backend> {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().expect("address")).await.expect("bind");
    let http = Client::builder().address(server.url()).build().expect("client");
    let mut out = vec![
        Backend {
            name: "sim in-process",
            client: sim.client("test"),
            _server: None,
            _consul: None,
        },
        Backend { name: "sim over HTTP", client: http, _server: Some(server), _consul: None },
    ];
    match std::env::var("CONSUL_HTTP_ADDR") {
        Ok(addr) if !addr.is_empty() => out.push(Backend {
            name: "real Consul (CONSUL_HTTP_ADDR)",
            client: Client::from_env().expect("CONSUL_HTTP_ADDR is usable"),
            _server: None,
            _consul: None,
        }),
        _ => {
            let consul = RealConsul::start().await;
            let client = Client::builder().address(consul.url()).build().expect("client");
            out.push(Backend {
                name: "real Consul 1.8.7",
                client,
                _server: None,
                _consul: Some(consul),
            });
        }
    }
    out
}

/// A key prefix no other test uses, so runs against a shared real Consul do not collide.
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    let pid = std::process::id();
    format!("consul-ha-it/{pid}/{prefix}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// A plain hyper client, for tests that read answers as they come off the wire.
pub(crate) type RawClient = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    http_body_util::Full<bytes::Bytes>,
>;

/// A [`RawClient`].
pub(crate) fn raw_client() -> RawClient {
    hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new()).build_http()
}

/// A simulator with `config`, served over HTTP on a free loopback port (the server keeps the
/// simulator).
pub(crate) async fn served(config: SimConfig) -> Server {
    Sim::new(config).serve("127.0.0.1:0".parse().expect("address")).await.expect("bind")
}

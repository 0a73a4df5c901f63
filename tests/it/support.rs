//! Backends the conformance suite runs against: the sim in-process, the sim over HTTP, and
//! a real Consul when `CONSUL_HTTP_ADDR` is set.

use consul_api::Client;
use consul_sim::{Server, Sim, SimConfig};

/// One place a test can send its requests.
pub(crate) struct Backend {
    /// What it is, for failure messages.
    pub(crate) name: &'static str,
    /// A client for it.
    pub(crate) client: Client,
    _server: Option<Server>,
}

/// The simulator in-process and over HTTP, plus a real Consul if `CONSUL_HTTP_ADDR` is set.
pub(crate) async fn backends() -> Vec<Backend> {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().expect("address")).await.expect("bind");
    let http = Client::builder().address(server.url()).build().expect("client");
    let mut out = vec![
        Backend { name: "sim in-process", client: sim.client("test"), _server: None },
        Backend { name: "sim over HTTP", client: http, _server: Some(server) },
    ];
    match std::env::var("CONSUL_HTTP_ADDR") {
        Ok(addr) if !addr.is_empty() => {
            out.push(Backend {
                name: "real Consul",
                client: Client::from_env().expect("CONSUL_HTTP_ADDR is usable"),
                _server: None,
            });
        }
        _ => {
            static SAID: std::sync::Once = std::sync::Once::new();
            SAID.call_once(|| {
                eprintln!(
                    "conformance: CONSUL_HTTP_ADDR is not set; skipping the real-Consul backend"
                );
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

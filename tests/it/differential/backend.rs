//! The three places a request script runs: the sim in-process (its core answer, no HTTP),
//! the sim behind its HTTP server, and a real Consul 1.8.7 dev agent. Each sends a raw
//! request target exactly as written, so malformed input reaches the server untouched.

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::Bytes;
use consul_sim::{Server, Sim, SimConfig, SimRequest};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::real_consul::{NODE, RealConsul};

/// An answer, as far as the comparison cares.
#[derive(Clone, Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    /// Lower-case header names.
    pub(crate) headers: BTreeMap<String, String>,
    pub(crate) body: Bytes,
}

/// Which backend, for the summary line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Kind {
    SimInProcess,
    SimHttp,
    Consul,
}

impl Kind {
    pub(crate) const ALL: [Kind; 3] = [Kind::SimInProcess, Kind::SimHttp, Kind::Consul];

    pub(crate) fn label(self) -> &'static str {
        match self {
            Kind::SimInProcess => "sim-inproc",
            Kind::SimHttp => "sim-http",
            Kind::Consul => "consul-1.8.7",
        }
    }
}

/// The sim's config for differential runs: named like the real agent, and with Consul's
/// defaults where the sim's own defaults are tuned for fast tests.
pub(crate) fn sim_config() -> SimConfig {
    SimConfig { node_name: NODE.into(), ..SimConfig::default() }
}

/// One backend, ready to take requests.
pub(crate) enum Backend {
    InProcess(Sim),
    Http { client: Box<HttpClient>, base: String, sim: Option<Sim>, _server: Option<Server> },
}

impl Backend {
    /// A fresh sim in-process.
    pub(crate) fn sim_in_process() -> Backend {
        Backend::InProcess(Sim::new(sim_config()))
    }

    /// A fresh sim behind its HTTP server on a free port.
    pub(crate) async fn sim_http() -> Backend {
        let sim = Sim::new(sim_config());
        let server = sim.serve("127.0.0.1:0".parse().expect("address")).await.expect("bind");
        Backend::Http {
            client: http_client(),
            base: server.url(),
            sim: Some(sim),
            _server: Some(server),
        }
    }

    /// A real Consul (which stays up across cases; see [`clean`]).
    pub(crate) fn consul(consul: &RealConsul) -> Backend {
        Backend::Http { client: http_client(), base: consul.url(), sim: None, _server: None }
    }

    /// The raft index now: every index a script's own writes get is higher. For a real
    /// Consul, its applied raft index (`agent/self`); for the sim, its store index.
    pub(crate) async fn baseline(&self) -> Result<u64, String> {
        match self {
            Backend::InProcess(sim) | Backend::Http { sim: Some(sim), .. } => {
                Ok(sim.core().index())
            }
            Backend::Http { sim: None, .. } => {
                let a = self.send("GET", "/v1/agent/self", "").await?;
                let v: serde_json::Value = serde_json::from_slice(&a.body)
                    .map_err(|e| format!("agent/self is not JSON: {e}"))?;
                v.pointer("/Stats/raft/applied_index")
                    .and_then(|i| i.as_str()?.parse().ok())
                    .ok_or_else(|| "agent/self has no Stats.raft.applied_index".to_string())
            }
        }
    }

    /// Sends one request; an error is a transport failure (no answer at all).
    pub(crate) async fn send(
        &self,
        method: &str,
        target: &str,
        body: &str,
    ) -> Result<Answer, String> {
        let method: http::Method = method.parse().map_err(|_| format!("bad method {method:?}"))?;
        let body = Bytes::copy_from_slice(body.as_bytes());
        match self {
            Backend::InProcess(sim) => {
                let req = SimRequest {
                    method,
                    target: target.to_string(),
                    headers: http::HeaderMap::new(),
                    body,
                };
                let resp = sim.execute("differential", req).await.map_err(|f| format!("{f:?}"))?;
                let headers =
                    resp.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.clone())).collect();
                Ok(Answer { status: resp.status.as_u16(), headers, body: resp.body })
            }
            Backend::Http { client, base, .. } => {
                let req = http::Request::builder()
                    .method(method)
                    .uri(format!("{base}{target}"))
                    .body(Full::new(body))
                    .map_err(|e| format!("cannot build a request for {target:?}: {e}"))?;
                let resp = tokio::time::timeout(Duration::from_secs(60), client.request(req))
                    .await
                    .map_err(|_| "no answer within 60 s".to_string())?
                    .map_err(|e| format!("transport: {e}"))?;
                let status = resp.status().as_u16();
                let mut headers = BTreeMap::new();
                for (k, v) in resp.headers() {
                    headers.insert(
                        k.as_str().to_string(),
                        String::from_utf8_lossy(v.as_bytes()).into(),
                    );
                }
                let body = resp.into_body().collect().await.map_err(|e| format!("body: {e}"))?;
                Ok(Answer { status, headers, body: body.to_bytes() })
            }
        }
    }
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

fn http_client() -> Box<HttpClient> {
    Box::new(Client::builder(TokioExecutor::new()).build_http())
}

/// Puts a long-lived Consul back into a fresh agent's state between cases: no keys, no
/// sessions, no services or checks but its own, no other catalog nodes, no maintenance.
pub(crate) async fn clean(consul: &Backend) -> Result<(), String> {
    let json = |a: &Answer| -> serde_json::Value {
        serde_json::from_slice(&a.body).unwrap_or(serde_json::Value::Null)
    };
    consul.send("DELETE", "/v1/kv/?recurse", "").await?;
    let sessions = consul.send("GET", "/v1/session/list", "").await?;
    for s in json(&sessions).as_array().into_iter().flatten() {
        if let Some(id) = s["ID"].as_str() {
            consul.send("PUT", &format!("/v1/session/destroy/{id}"), "").await?;
        }
    }
    consul.send("PUT", "/v1/agent/maintenance?enable=false", "").await?;
    let services = consul.send("GET", "/v1/agent/services", "").await?;
    for id in json(&services).as_object().into_iter().flat_map(|m| m.keys()) {
        consul.send("PUT", &format!("/v1/agent/service/deregister/{id}"), "").await?;
    }
    let checks = consul.send("GET", "/v1/agent/checks", "").await?;
    for id in json(&checks).as_object().into_iter().flat_map(|m| m.keys()) {
        consul.send("PUT", &format!("/v1/agent/check/deregister/{id}"), "").await?;
    }
    let nodes = consul.send("GET", "/v1/catalog/nodes", "").await?;
    for n in json(&nodes).as_array().into_iter().flatten() {
        if let Some(name) = n["Node"].as_str().filter(|n| *n != NODE) {
            let body = serde_json::json!({ "Node": name }).to_string();
            consul.send("PUT", "/v1/catalog/deregister", &body).await?;
        }
    }
    Ok(())
}

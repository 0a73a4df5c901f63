//! The HTTP adapter: Consul's wire protocol on hyper, in front of a [`Sim`].
//!
//! Fault injection is served under its own prefix, `/v1/_sim/`, which no Consul path uses:
//!
//! | request | effect |
//! |---|---|
//! | `PUT /v1/_sim/partition/<client>` / `DELETE …` | requests carrying `X-Sim-Client: <client>` get their connection closed / heal |
//! | `PUT /v1/_sim/leader?lost=true\|false` | lose or regain the raft leader |
//! | `PUT /v1/_sim/session/expire/<id>` | invalidate a session now |
//! | `PUT /v1/_sim/check/<node>/<check>?status=critical` | force a check's status |
//! | `PUT /v1/_sim/latency?ms=N` | delay every request |
//! | `PUT /v1/_sim/drop-response/<client>?count=N` | apply the next N requests, then close the connection instead of answering |

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::{SimRequest, SimResponse, Target};
use crate::sim::{Failure, Sim, header_map};

/// The largest request body the server reads (a KV value is limited to 512 KiB by the
/// core; this bounds memory for anything larger).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// A running HTTP server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>`, for a client's address setting.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets open ones finish, and waits for the accept loop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

impl Sim {
    /// Serves Consul's HTTP API on `addr` (`127.0.0.1:0` picks a free port).
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, mut stopped) = watch::channel(false);
        let sim = self.clone();
        let task = tokio::spawn(async move {
            loop {
                let (stream, peer) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(e) => {
                            tracing::warn!(error = %e, "accept failed");
                            continue;
                        }
                    },
                    _ = stopped.changed() => break,
                };
                let sim = sim.clone();
                let mut stop_conn = stopped.clone();
                tokio::spawn(async move {
                    let service = service_fn(move |req| {
                        let sim = sim.clone();
                        async move { handle(&sim, peer, req).await }
                    });
                    let conn = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service);
                    tokio::pin!(conn);
                    tokio::select! {
                        _ = conn.as_mut() => {}
                        _ = stop_conn.changed() => {
                            conn.as_mut().graceful_shutdown();
                            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
                        }
                    }
                });
            }
        });
        Ok(Server { addr, stop, task })
    }
}

/// Closing the connection without an answer: how a partition or a lost response looks.
#[derive(Debug)]
struct Dropped;

impl std::fmt::Display for Dropped {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection dropped by fault injection")
    }
}

impl std::error::Error for Dropped {}

async fn handle(
    sim: &Sim,
    peer: SocketAddr,
    req: http::Request<Incoming>,
) -> Result<http::Response<Full<Bytes>>, Dropped> {
    let (parts, body) = req.into_parts();
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    let client = parts
        .headers
        .get("x-sim-client")
        .and_then(|v| v.to_str().ok())
        .map_or_else(|| peer.ip().to_string(), str::to_string);
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(plain(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("Request body too large, max size: {MAX_BODY} bytes"),
            ));
        }
    };
    if target.starts_with("/v1/_sim/") {
        return Ok(fault(sim, &parts.method, &target));
    }
    let sim_req = SimRequest { method: parts.method, target, headers: parts.headers, body };
    match sim.execute(&client, sim_req).await {
        Ok(resp) => Ok(to_http(resp)),
        Err(Failure::Partitioned | Failure::ResponseDropped) => Err(Dropped),
    }
}

fn to_http(resp: SimResponse) -> http::Response<Full<Bytes>> {
    let headers = header_map(&resp);
    let mut out = http::Response::new(Full::new(resp.body));
    *out.status_mut() = resp.status;
    *out.headers_mut() = headers;
    out
}

fn plain(status: StatusCode, text: impl Into<String>) -> http::Response<Full<Bytes>> {
    let mut out = http::Response::new(Full::new(Bytes::from(text.into())));
    *out.status_mut() = status;
    out
}

fn fault(sim: &Sim, method: &Method, target: &str) -> http::Response<Full<Bytes>> {
    let t = match Target::parse(target) {
        Ok(t) => t,
        Err(e) => return plain(StatusCode::BAD_REQUEST, e),
    };
    let rest = t.path.trim_start_matches("/v1/_sim/");
    let parts: Vec<&str> = rest.split('/').collect();
    let ok = || plain(StatusCode::OK, "true");
    match (method, parts.as_slice()) {
        (&Method::PUT, ["partition", client]) => {
            sim.partition(client, true);
            ok()
        }
        (&Method::DELETE, ["partition", client]) => {
            sim.partition(client, false);
            ok()
        }
        (&Method::PUT, ["leader"]) => match t.param("lost") {
            Some("true") | Some("") => {
                sim.set_leader_lost(true);
                ok()
            }
            Some("false") => {
                sim.set_leader_lost(false);
                ok()
            }
            _ => plain(StatusCode::BAD_REQUEST, "lost must be true or false"),
        },
        (&Method::PUT, ["session", "expire", id]) => {
            if sim.expire_session(id) {
                ok()
            } else {
                plain(StatusCode::NOT_FOUND, format!("no session {id:?}"))
            }
        }
        (&Method::PUT, ["check", node, id]) => {
            let status = t.param("status").unwrap_or("critical");
            if sim.set_check_status(node, id, status) {
                ok()
            } else {
                plain(
                    StatusCode::BAD_REQUEST,
                    format!("no check {id:?} on node {node:?}, or bad status {status:?}"),
                )
            }
        }
        (&Method::PUT, ["latency"]) => match t.param("ms").map(str::parse::<u64>) {
            Some(Ok(ms)) => {
                sim.set_latency(Duration::from_millis(ms));
                ok()
            }
            _ => plain(StatusCode::BAD_REQUEST, "ms must be a whole number of milliseconds"),
        },
        (&Method::PUT, ["drop-response", client]) => {
            match t.param("count").unwrap_or("1").parse::<u32>() {
                Ok(n) => {
                    sim.drop_responses(client, n);
                    ok()
                }
                Err(_) => plain(StatusCode::BAD_REQUEST, "count must be a whole number"),
            }
        }
        _ => plain(StatusCode::NOT_FOUND, format!("no fault injection at {target}")),
    }
}

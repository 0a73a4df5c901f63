//! The HTTP adapter: Consul's wire protocol on hyper, in front of a [`Sim`].
//!
//! Connections are treated as Consul 1.8.7 treats them, plus a guard it lacks:
//!
//! - at most [`ServeOptions::max_conns_per_client`] concurrent connections per client IP
//!   (Consul's `limits.http_max_conns_per_client`, default 200); a connection beyond it is
//!   closed at once without a response, as Consul closes it;
//! - a connection whose request headers do not arrive within
//!   [`ServeOptions::header_read_timeout`] is closed (slowloris; Consul 1.8.7 has no such
//!   timeout and keeps them open). The timer also runs while a keep-alive connection idles;
//! - a failing `accept` (EMFILE: out of file descriptors) backs off, 5 ms doubling up to
//!   1 s as Go's net/http does, and is logged once per burst rather than spinning;
//! - an invalid `%` escape in the path gets Go's `400 Bad Request` and the connection is
//!   closed; one in the query gets Consul's 500 with an empty body; a malformed chunked
//!   body gets the answer of Consul's endpoint (`malformed_body`); a missing `Host`, an
//!   unknown `Expect` and `OPTIONS *` get Go's answers (`go_net_http`). Requests hyper
//!   cannot parse get its bare 400 (or 431 for headers too large), where Go writes
//!   `400 Bad Request` as the body.
//!
//! With [`ServeOptions::tls`] the same server speaks HTTPS (rustls), as Consul's `https`
//! port: with `verify_incoming`, a client without a certificate signed by the CA is
//! refused at the handshake; a plain HTTP request gets Go's clear-text 400.
//!
//! Fault injection is served under its own prefix, `/v1/_sim/`, which no Consul path uses,
//! and only when [`ServeOptions::fault_injection`] is on ([`Sim::serve`] turns it on;
//! `consul-ha agent -dev` only with `--enable-fault-injection`):
//!
//! | request | effect |
//! |---|---|
//! | `PUT /v1/_sim/partition/<client>` / `DELETE …` | requests carrying `X-Sim-Client: <client>` get their connection closed / heal |
//! | `PUT /v1/_sim/leader?lost=true\|false` | lose or regain the raft leader |
//! | `PUT /v1/_sim/session/expire/<id>` | invalidate a session now |
//! | `PUT /v1/_sim/check/<node>/<check>?status=critical` | force a check's status |
//! | `PUT /v1/_sim/latency?ms=N` | delay every request |
//! | `PUT /v1/_sim/drop-response/<client>?count=N` | apply the next N requests, then close the connection instead of answering |
//!
//! A client is named by its `X-Sim-Client` header, or else by its IP address.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use http_body_util::{BodyExt, LengthLimitError, Limited};
use hyper::body::{Frame, Incoming, SizeHint};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::core::{BadTarget, SimRequest, SimResponse, Target, VARY};
use crate::encoding;
use crate::sim::{Failure, Sim, header_map};
use crate::tls::TlsConfig;

/// The largest request body the server reads (a KV value is limited to 512 KiB by the
/// core; this bounds memory for anything larger).
const MAX_BODY: usize = 8 * 1024 * 1024;

/// How the HTTP server treats its clients.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServeOptions {
    /// Serve fault injection under `/v1/_sim/` and name clients by `X-Sim-Client`. Off by
    /// default: anyone who can reach the port could partition the store.
    pub fault_injection: bool,
    /// Close a connection whose request headers have not all arrived this long after the
    /// server started waiting for them (also while a keep-alive connection idles). `None`:
    /// wait forever, as Consul 1.8.7 does. Default 30 s.
    pub header_read_timeout: Option<Duration>,
    /// Most concurrent connections from one client IP; more are closed at once. 0: no
    /// limit. Default 200, Consul's `limits.http_max_conns_per_client`.
    pub max_conns_per_client: usize,
    /// Serve HTTPS with this configuration instead of plain HTTP (Consul's `ports.https`
    /// listener). A client whose handshake fails is closed without an HTTP answer.
    pub tls: Option<TlsConfig>,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            fault_injection: false,
            header_read_timeout: Some(Duration::from_secs(30)),
            max_conns_per_client: 200,
            tls: None,
        }
    }
}

/// A running HTTP server. Dropping it does not stop it; call [`shutdown`](Self::shutdown).
#[derive(Debug)]
pub struct Server {
    addr: SocketAddr,
    https: bool,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl Server {
    /// The address the server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://<addr>` (`https://` when serving TLS), for a client's address setting.
    pub fn url(&self) -> String {
        let scheme = if self.https { "https" } else { "http" };
        format!("{scheme}://{}", self.addr)
    }

    /// Stops accepting connections, lets open ones finish, and waits for the accept loop.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

/// Open connections per client IP.
#[derive(Debug, Default)]
struct ConnCount(Mutex<HashMap<IpAddr, usize>>);

/// One counted connection; uncounted when dropped.
struct ConnSlot(Arc<ConnCount>, IpAddr);

impl ConnCount {
    fn claim(self: &Arc<Self>, ip: IpAddr, limit: usize) -> Option<ConnSlot> {
        let mut m = self.0.lock().unwrap_or_else(|p| p.into_inner());
        let n = m.entry(ip).or_default();
        if limit > 0 && *n >= limit {
            return None;
        }
        *n += 1;
        Some(ConnSlot(self.clone(), ip))
    }
}

impl Drop for ConnSlot {
    fn drop(&mut self) {
        let mut m = self.0.0.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(n) = m.get_mut(&self.1) {
            *n -= 1;
            if *n == 0 {
                m.remove(&self.1);
            }
        }
    }
}

/// Go's net/http backoff after a failed accept: 5 ms, doubling, at most 1 s.
const ACCEPT_BACKOFF_MIN: Duration = Duration::from_millis(5);
const ACCEPT_BACKOFF_MAX: Duration = Duration::from_secs(1);

impl Sim {
    /// Serves Consul's HTTP API on `addr` (`127.0.0.1:0` picks a free port), with fault
    /// injection on and the other [`ServeOptions`] at their defaults.
    pub async fn serve(&self, addr: SocketAddr) -> std::io::Result<Server> {
        self.serve_with(addr, ServeOptions { fault_injection: true, ..ServeOptions::default() })
            .await
    }

    /// Serves Consul's HTTP API on `addr` with `options`.
    pub async fn serve_with(
        &self,
        addr: SocketAddr,
        options: ServeOptions,
    ) -> std::io::Result<Server> {
        let listener = TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = watch::channel(false);
        let https = options.tls.is_some();
        let task = tokio::spawn(accept_loop(self.clone(), listener, options, stopped));
        Ok(Server { addr, https, stop, task })
    }
}

async fn accept_loop(
    sim: Sim,
    listener: TcpListener,
    options: ServeOptions,
    mut stopped: watch::Receiver<bool>,
) {
    let options = Arc::new(options);
    let conns = Arc::new(ConnCount::default());
    let mut failures = 0u64;
    let mut backoff = ACCEPT_BACKOFF_MIN;
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
            // Consul stops serving once it has left.
            _ = sim.left() => break,
        };
        let (stream, peer) = match accepted {
            Ok(a) => a,
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(error = %e, "accept failed; backing off until it works again");
                }
                failures += 1;
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = stopped.changed() => break,
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF_MAX);
                continue;
            }
        };
        if failures > 0 {
            tracing::info!(failures, "accepting connections again");
            failures = 0;
            backoff = ACCEPT_BACKOFF_MIN;
        }
        let Some(slot) = conns.claim(peer.ip(), options.max_conns_per_client) else {
            // As Consul: closed without a word.
            tracing::debug!(%peer, "too many connections from this address; closing");
            drop(stream);
            continue;
        };
        let sim = sim.clone();
        let options = options.clone();
        let stop_conn = stopped.clone();
        tokio::spawn(async move {
            let _slot = slot;
            match &options.tls {
                None => serve_connection(sim, options.clone(), peer, stream, stop_conn).await,
                Some(tls) => {
                    let acceptor = tokio_rustls::TlsAcceptor::from(tls.0.clone());
                    // A handshake that never finishes is a slowloris too.
                    let limit = options.header_read_timeout.unwrap_or(TLS_HANDSHAKE_TIMEOUT);
                    let mut stream = stream;
                    if let Ok(true) = tokio::time::timeout(limit, plain_http(&stream)).await {
                        // Go's net/http answers this in clear text, then closes.
                        use tokio::io::AsyncWriteExt as _;
                        let _ = stream.write_all(PLAIN_HTTP_ANSWER).await;
                        let _ = stream.shutdown().await;
                        return;
                    }
                    match tokio::time::timeout(limit, acceptor.accept(stream)).await {
                        Ok(Ok(tls_stream)) => {
                            serve_connection(sim, options.clone(), peer, tls_stream, stop_conn)
                                .await
                        }
                        // As Go's net/http: logged, closed, no HTTP answer.
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake error"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

/// What Go's net/http writes to a client that speaks plain HTTP to its TLS port.
const PLAIN_HTTP_ANSWER: &[u8] =
    b"HTTP/1.0 400 Bad Request\r\n\r\nClient sent an HTTP request to an HTTPS server.\n";

/// True if the connection opens with plain HTTP rather than a TLS record, judged on its
/// first five bytes as Go's `tlsRecordHeaderLooksLikeHTTP` judges them.
async fn plain_http(stream: &tokio::net::TcpStream) -> bool {
    let mut head = [0u8; 5];
    loop {
        match stream.peek(&mut head).await {
            Ok(0) | Err(_) => return false,
            // 0x16: a TLS handshake record.
            Ok(_) if head[0] == 0x16 => return false,
            Ok(n) if n >= 5 => {
                return matches!(&head, b"GET /" | b"HEAD " | b"POST " | b"PUT /" | b"OPTIO");
            }
            // Part of the first bytes: wait for the rest (peek returns at once while
            // there is data, so do not spin).
            Ok(_) => tokio::time::sleep(Duration::from_millis(1)).await,
        }
    }
}

/// How long a TLS handshake may take when no header read timeout is set.
const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves HTTP/1.1 on one accepted connection (plain TCP or TLS) until it closes, the
/// server stops or the agent leaves.
pub(crate) async fn serve_connection<I>(
    sim: Sim,
    options: Arc<ServeOptions>,
    peer: SocketAddr,
    stream: I,
    mut stop_conn: watch::Receiver<bool>,
) where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let leaving = sim.clone();
    let opts = options.clone();
    // The client's name for fault injection, written once per connection.
    let peer_name: Arc<str> = peer.ip().to_string().into();
    let service = service_fn(move |req| {
        let sim = sim.clone();
        let opts = opts.clone();
        let peer_name = peer_name.clone();
        async move { handle(&sim, &opts, &peer_name, req).await }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stop_conn.changed() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
        // The answer in flight (the leave request's own) is still written.
        _ = leaving.left() => {
            conn.as_mut().graceful_shutdown();
            let _ = tokio::time::timeout(Duration::from_secs(5), conn).await;
        }
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
    options: &ServeOptions,
    peer_name: &str,
    req: http::Request<Incoming>,
) -> Result<http::Response<Wire>, Dropped> {
    let (parts, body) = req.into_parts();
    if let Some(resp) = go_net_http(&parts) {
        return Ok(resp);
    }
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str()).to_string();
    match BadTarget::check(&target) {
        Ok(()) => {}
        Err(BadTarget::Path(_)) => {
            // Go's net/http refuses the request line itself.
            let mut out = plain(StatusCode::BAD_REQUEST, "400 Bad Request");
            out.headers_mut()
                .insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
            return Ok(out);
        }
        Err(BadTarget::Query(_)) => return Ok(plain(StatusCode::INTERNAL_SERVER_ERROR, "")),
    }
    let gzip = encoding::accepts_gzip(&parts.headers);
    let client = match parts.headers.get("x-sim-client").and_then(|v| v.to_str().ok()) {
        Some(name) if options.fault_injection => std::borrow::Cow::Owned(name.to_string()),
        _ => std::borrow::Cow::Borrowed(peer_name),
    };
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            let text = format!("Request body too large, max size: {MAX_BODY} bytes");
            return Ok(to_http(handler_text(StatusCode::PAYLOAD_TOO_LARGE, text), gzip));
        }
        Err(e) => match malformed_body(&parts.method, &target, e.as_ref()) {
            Some(resp) => return Ok(to_http(resp, gzip)),
            None => Bytes::new(),
        },
    };
    if options.fault_injection && target.starts_with("/v1/_sim/") {
        return Ok(fault(sim, &parts.method, &target));
    }
    let sim_req = SimRequest { method: parts.method, target, headers: parts.headers, body };
    match sim.execute(&client, sim_req).await {
        Ok(resp) => Ok(to_http(resp, gzip)),
        Err(Failure::Partitioned | Failure::ResponseDropped) => Err(Dropped),
    }
}

/// What Go's net/http answers before any Consul handler runs (measured on 1.8.7): an
/// HTTP/1.1 request without `Host` gets `400 Bad Request: missing required Host header`
/// and a closed connection, an `Expect` other than `100-continue` gets 417, and
/// `OPTIONS *` gets an empty 200.
fn go_net_http(parts: &http::request::Parts) -> Option<http::Response<Wire>> {
    if parts.version == http::Version::HTTP_11 && !parts.headers.contains_key(http::header::HOST) {
        let reason = "Bad Request: missing required Host header";
        let mut out = plain(StatusCode::BAD_REQUEST, format!("400 {reason}"));
        out.extensions_mut().insert(hyper::ext::ReasonPhrase::from_static(reason.as_bytes()));
        out.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        return Some(out);
    }
    if parts.version == http::Version::HTTP_11
        && let Some(expect) = parts.headers.get(http::header::EXPECT)
        && !expect.as_bytes().eq_ignore_ascii_case(b"100-continue")
    {
        let mut out = plain(StatusCode::EXPECTATION_FAILED, "");
        out.headers_mut().insert(http::header::CONNECTION, http::HeaderValue::from_static("close"));
        return Some(out);
    }
    if parts.method == Method::OPTIONS && parts.uri == "*" {
        return Some(plain(StatusCode::OK, ""));
    }
    None
}

/// The answer to a request body that could not be read (a malformed chunked encoding), as
/// Consul 1.8.7's endpoints give it (measured): a KV `PUT` passes Go's read error on as a
/// 500, `/v1/txn` answers 400 `Failed to parse body: …`, the endpoints that decode a JSON
/// body 400 `Request decode failed: …`. `None` for every other request: those endpoints
/// never read a body and give their normal answer (the connection is closed after it).
fn malformed_body(
    method: &Method,
    target: &str,
    e: &(dyn std::error::Error + 'static),
) -> Option<SimResponse> {
    if *method != Method::PUT {
        return None;
    }
    // Go's words for the two ways a chunked body goes wrong.
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        text.push_str(&s.to_string());
        source = s.source();
    }
    let go = if text.contains("chunk size") {
        "invalid byte in chunk length"
    } else {
        "malformed chunked encoding"
    };
    let path = target.split('?').next().unwrap_or(target);
    let decodes_json = matches!(
        path,
        "/v1/agent/service/register"
            | "/v1/agent/check/register"
            | "/v1/catalog/register"
            | "/v1/catalog/deregister"
    ) || path.starts_with("/v1/agent/check/update/");
    if path.strip_prefix("/v1/kv/").is_some_and(|key| !key.is_empty()) {
        Some(handler_text(StatusCode::INTERNAL_SERVER_ERROR, go.into()))
    } else if path == "/v1/txn" {
        Some(handler_text(StatusCode::BAD_REQUEST, format!("Failed to parse body: {go}")))
    } else if decodes_json {
        Some(handler_text(StatusCode::BAD_REQUEST, format!("Request decode failed: {go}")))
    } else {
        None
    }
}

/// The bytes Go's `net/http` buffers before it must choose: an answer that fits is sent
/// with a `Content-Length`, a longer one chunked (`bufferBeforeChunkingSize`).
const GO_BUFFER: usize = 2048;

/// A response body as Go's `net/http` frames one: with a `Content-Length` when it fits in
/// Go's response buffer ([`GO_BUFFER`]) or when the handler set the length, chunked
/// otherwise (checked on Consul 1.8.7: a 2,958-byte KV answer is chunked, a raw value of
/// 2,100 bytes or a gzipped answer of 136 is not).
pub(crate) struct Wire {
    data: Option<Bytes>,
    chunked: bool,
}

impl Wire {
    /// `data`, chunked if it is longer than Go's buffer and no `length` was set.
    fn new(data: Bytes, length: bool) -> Wire {
        let chunked = !length && data.len() > GO_BUFFER;
        Wire { data: Some(data), chunked }
    }
}

impl hyper::body::Body for Wire {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let data = self.data.take().filter(|d| !d.is_empty());
        std::task::Poll::Ready(data.map(|d| Ok(Frame::data(d))))
    }

    fn is_end_stream(&self) -> bool {
        self.data.as_ref().is_none_or(Bytes::is_empty)
    }

    fn size_hint(&self) -> SizeHint {
        let len = self.data.as_ref().map_or(0, Bytes::len) as u64;
        if self.chunked {
            // Not exact: hyper frames the body in chunks, as Go does past its buffer.
            let mut hint = SizeHint::new();
            hint.set_lower(len);
            hint
        } else {
            SizeHint::with_exact(len)
        }
    }
}

/// The core's answer on the wire. An endpoint's answer (it carries `Vary`) with a body goes
/// out gzipped when the client accepts gzip, as Consul's gzip handler sends it.
fn to_http(mut resp: SimResponse, gzip: bool) -> http::Response<Wire> {
    if gzip
        && !resp.body.is_empty()
        && resp.headers.iter().any(|(name, _)| *name == VARY.0)
        && let Some(packed) = encoding::gzip(&resp.body)
    {
        resp.body = packed;
        // The gzip handler drops a length the handler set: it no longer holds.
        resp.headers.retain(|(name, _)| *name != "Content-Length");
        resp.headers.push(("Content-Encoding", "gzip".into()));
    }
    // Consul's handler may set the length itself (a raw KV value); otherwise Go decides.
    let length = resp.headers.iter().any(|(name, _)| *name == "Content-Length");
    let headers = header_map(resp.headers);
    let mut out = http::Response::new(Wire::new(resp.body, length));
    if resp.status == StatusCode::PAYLOAD_TOO_LARGE {
        // Go's name for the status (hyper's is "Payload Too Large").
        out.extensions_mut()
            .insert(hyper::ext::ReasonPhrase::from_static(b"Request Entity Too Large"));
    }
    *out.status_mut() = resp.status;
    *out.headers_mut() = headers;
    out
}

/// A text answer of a Consul endpoint that the server gives itself (the body could not be
/// read): typed as Go types text, and marked as an endpoint's.
fn handler_text(status: StatusCode, text: String) -> SimResponse {
    SimResponse {
        status,
        headers: vec![
            ("Content-Type", "text/plain; charset=utf-8".into()),
            (VARY.0, VARY.1.into()),
        ],
        body: Bytes::from(text),
    }
}

fn plain(status: StatusCode, text: impl Into<String>) -> http::Response<Wire> {
    let text = text.into();
    let mut out = http::Response::new(Wire::new(Bytes::from(text.clone()), false));
    *out.status_mut() = status;
    if !text.is_empty() {
        out.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; charset=utf-8"),
        );
    }
    out
}

fn fault(sim: &Sim, method: &Method, target: &str) -> http::Response<Wire> {
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

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::{TcpSocket, TcpStream};
    use tokio::time::Instant;

    use super::*;
    use crate::SimConfig;

    async fn server(options: ServeOptions) -> (Sim, Server) {
        let sim = Sim::new(SimConfig::default());
        let server = sim.serve_with("127.0.0.1:0".parse().unwrap(), options).await.unwrap();
        (sim, server)
    }

    /// Reads until the server closes the connection (bounded: 60 s of virtual time).
    async fn read_to_close(s: &mut TcpStream) -> String {
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(60), s.read_to_end(&mut out)).await;
        assert!(read.is_ok(), "the server kept the connection open: {out:?}");
        String::from_utf8_lossy(&out).into_owned()
    }

    /// Sends `request` on a new connection and reads until the server closes it.
    async fn exchange(addr: SocketAddr, request: &str) -> String {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(request.as_bytes()).await.unwrap();
        read_to_close(&mut s).await
    }

    /// One request on an open connection; the first chunk of the answer ("" if closed).
    async fn ask(s: &mut TcpStream) -> String {
        let req = "GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n";
        if s.write_all(req.as_bytes()).await.is_err() {
            return String::new();
        }
        let mut buf = vec![0u8; 4096];
        match tokio::time::timeout(Duration::from_secs(60), s.read(&mut buf)).await {
            Ok(Ok(n)) => String::from_utf8_lossy(&buf[..n]).into_owned(),
            Ok(Err(_)) => String::new(),
            Err(_) => panic!("no answer and not closed"),
        }
    }

    fn body(resp: &str) -> &str {
        resp.split_once("\r\n\r\n").map_or("", |(_, b)| b)
    }

    #[tokio::test(start_paused = true)]
    async fn bad_request_lines_get_gos_and_consuls_answers() {
        let (_sim, server) = server(ServeOptions::default()).await;
        let addr = server.local_addr();
        // Keep-alive is asked for; Go's net/http closes anyway.
        for target in ["/v1/kv/%zz", "/v1/kv/%", "/v1/kv/a%2"] {
            let resp = exchange(addr, &format!("GET {target} HTTP/1.1\r\nHost: x\r\n\r\n")).await;
            assert!(resp.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{target}: {resp}");
            assert_eq!(body(&resp), "400 Bad Request", "{target}");
        }
        let put = "PUT /v1/kv/%zz HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n\r\nx";
        assert!(exchange(addr, put).await.starts_with("HTTP/1.1 400 "));
        // In the query, Consul's own parsing fails: 500, empty body, nothing written.
        let close = "Connection: close\r\n";
        for req in [
            format!("GET /v1/kv/a?x=%zz HTTP/1.1\r\nHost: x\r\n{close}\r\n"),
            format!("PUT /v1/kv/a?x=% HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\n{close}\r\nx"),
        ] {
            let resp = exchange(addr, &req).await;
            assert!(resp.starts_with("HTTP/1.1 500 "), "{req}: {resp}");
            assert_eq!(body(&resp), "", "{req}");
        }
        let resp =
            exchange(addr, &format!("GET /v1/kv/a HTTP/1.1\r\nHost: x\r\n{close}\r\n")).await;
        assert!(resp.starts_with("HTTP/1.1 404 "), "the 500 wrote nothing: {resp}");
        // Go's net/http checks before Consul sees the request.
        let resp = exchange(addr, "GET /v1/status/leader HTTP/1.1\r\n\r\n").await;
        let missing = "400 Bad Request: missing required Host header";
        assert!(resp.starts_with(&format!("HTTP/1.1 {missing}\r\n")), "{resp}");
        assert_eq!(body(&resp), missing);
        let resp = exchange(addr, "GET /v1/status/leader HTTP/1.0\r\n\r\n").await;
        assert!(resp.starts_with("HTTP/1.0 200 OK"), "HTTP/1.0 needs no Host: {resp}");
        let put = "PUT /v1/kv/e HTTP/1.1\r\nHost: x\r\nExpect: foo\r\nContent-Length: 1\r\n\r\nx";
        assert!(exchange(addr, put).await.starts_with("HTTP/1.1 417 "));
        let options = format!("OPTIONS * HTTP/1.1\r\nHost: x\r\n{close}\r\n");
        let resp = exchange(addr, &options).await;
        assert!(resp.starts_with("HTTP/1.1 200 OK") && body(&resp).is_empty(), "{resp}");
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn a_malformed_chunked_body_gets_the_endpoints_answer_not_too_large() {
        let (_sim, server) = server(ServeOptions::default()).await;
        let addr = server.local_addr();
        let chunked = |method: &str, path: &str, body: &str| {
            format!(
                "{method} {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n{body}"
            )
        };
        let bad_size = "zz\r\nabc\r\n0\r\n\r\n";
        let bad_end = "3\r\nabcXX0\r\n\r\n";
        for (method, path, body_, status, text) in [
            ("PUT", "/v1/kv/c", bad_size, "500", "invalid byte in chunk length"),
            ("PUT", "/v1/kv/c", bad_end, "500", "malformed chunked encoding"),
            (
                "PUT",
                "/v1/txn",
                bad_size,
                "400",
                "Failed to parse body: invalid byte in chunk length",
            ),
            (
                "PUT",
                "/v1/agent/service/register",
                bad_size,
                "400",
                "Request decode failed: invalid byte in chunk length",
            ),
            (
                "PUT",
                "/v1/catalog/deregister",
                bad_size,
                "400",
                "Request decode failed: invalid byte in chunk length",
            ),
            // Endpoints that never read a body answer as usual.
            ("GET", "/v1/kv/c", bad_size, "404", ""),
            ("DELETE", "/v1/kv/c", bad_size, "200", "true"),
            ("PUT", "/v1/kv/", bad_size, "400", "Missing key name"),
            ("PUT", "/v1/nope", bad_size, "404", "*"),
        ] {
            let resp = exchange(addr, &chunked(method, path, body_)).await;
            assert!(resp.starts_with(&format!("HTTP/1.1 {status} ")), "{method} {path}: {resp}");
            if text != "*" {
                assert_eq!(body(&resp), text, "{method} {path}");
            }
        }
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn slowloris_connections_are_closed_after_the_header_read_timeout() {
        let timeout = Duration::from_secs(5);
        let options = ServeOptions { header_read_timeout: Some(timeout), ..Default::default() };
        let (_sim, server) = server(options).await;
        let mut slow = TcpStream::connect(server.local_addr()).await.unwrap();
        let start = Instant::now();
        slow.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n").await.unwrap();
        let resp = read_to_close(&mut slow).await;
        assert!(!resp.contains("200 OK"), "{resp}");
        let waited = start.elapsed();
        assert!(waited >= timeout && waited < timeout * 2, "closed after {waited:?}");
        // A prompt client is served as ever.
        let mut quick = TcpStream::connect(server.local_addr()).await.unwrap();
        assert!(ask(&mut quick).await.starts_with("HTTP/1.1 200 OK"));
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn connections_beyond_the_per_client_cap_are_closed_other_addresses_are_served() {
        assert_eq!(ServeOptions::default().max_conns_per_client, 200, "Consul's default");
        let options = ServeOptions { max_conns_per_client: 5, ..Default::default() };
        let (_sim, server) = server(options).await;
        let addr = server.local_addr();
        let mut open = Vec::new();
        for _ in 0..5 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            assert!(ask(&mut s).await.starts_with("HTTP/1.1 200 OK"));
            open.push(s);
        }
        let mut sixth = TcpStream::connect(addr).await.unwrap();
        assert_eq!(ask(&mut sixth).await, "", "closed without an answer, as Consul");
        // Another client address is not affected, nor are the open connections.
        let other = TcpSocket::new_v4().unwrap();
        other.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let mut other = other.connect(addr).await.unwrap();
        assert!(ask(&mut other).await.starts_with("HTTP/1.1 200 OK"));
        assert!(ask(&mut open[0]).await.starts_with("HTTP/1.1 200 OK"));
        // A closed connection frees its place.
        drop(open.pop());
        let mut again = None;
        for _ in 0..100 {
            let mut s = TcpStream::connect(addr).await.unwrap();
            if ask(&mut s).await.starts_with("HTTP/1.1 200 OK") {
                again = Some(s);
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert!(again.is_some(), "the freed place was never reused");
        server.shutdown().await;
    }

    #[tokio::test(start_paused = true)]
    async fn fault_injection_is_served_only_when_asked_for() {
        let (sim, server) = server(ServeOptions::default()).await;
        let put = "PUT /v1/_sim/partition/me HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
        let resp = exchange(server.local_addr(), put).await;
        assert!(resp.starts_with("HTTP/1.1 404 "), "{resp}");
        server.shutdown().await;
        let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
        let resp = exchange(server.local_addr(), put).await;
        assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
        let get = "GET /v1/status/leader HTTP/1.1\r\nHost: x\r\nX-Sim-Client: me\r\n\r\n";
        assert_eq!(exchange(server.local_addr(), get).await, "", "partitioned: dropped");
        server.shutdown().await;
    }
}

//! The client: configuration, and the request plumbing every endpoint shares.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderValue, Method, StatusCode};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::http::{HttpOptions, HttpTransport};
use crate::layers::{Retry, RetryPolicy};
use crate::types::{
    Consistency, DEFAULT_WAIT, Index, MAX_WAIT, QueryMeta, QueryOptions, RequestDefaults,
};
use crate::{Error, Request, Response, Transport};

/// A Consul client. Cheap to clone: clones share one transport and its connection pool.
///
/// Endpoints are grouped as in Consul's API: [`kv`](Client::kv), [`txn`](Client::txn),
/// [`session`](Client::session), [`agent`](Client::agent), [`catalog`](Client::catalog),
/// [`health`](Client::health), [`status`](Client::status), [`event`](Client::event).
///
/// Every request goes through one preparation (the one [`Client::raw`] uses too): the
/// client's [`RequestDefaults`] (datacenter, consistency, blocking wait, token) with the
/// request's own [`QueryOptions`] on top: reads, writes, transactions, blocking reads,
/// sessions, agent, catalog, health, status and events alike.
#[derive(Clone, Debug)]
pub struct Client {
    transport: Arc<dyn Transport>,
    defaults: Arc<RequestDefaults>,
}

impl Client {
    /// A client over any transport (HTTP, the in-process simulator, a test double).
    pub fn new(transport: impl Transport) -> Self {
        Client { transport: Arc::new(transport), defaults: Arc::default() }
    }

    /// This client with its transport wrapped in `layer` (metrics, tracing, fault
    /// injection): every request of the new client goes through the layer first.
    pub fn layered<T: Transport>(&self, layer: impl FnOnce(Arc<dyn Transport>) -> T) -> Client {
        Client { transport: Arc::new(layer(self.transport.clone())), ..self.clone() }
    }

    /// A client configured from the environment, as Go's `consul/api` `DefaultConfig`
    /// is: `CONSUL_HTTP_ADDR` (`host:port`, `http://`, `https://` or `unix://`),
    /// `CONSUL_HTTP_TOKEN`, `CONSUL_HTTP_TOKEN_FILE`, `CONSUL_HTTP_AUTH`, `CONSUL_HTTP_SSL`,
    /// `CONSUL_HTTP_SSL_VERIFY`, `CONSUL_CACERT`, `CONSUL_CAPATH`, `CONSUL_CLIENT_CERT`,
    /// `CONSUL_CLIENT_KEY` and `CONSUL_TLS_SERVER_NAME` (see [`ClientBuilder::from_env`]).
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env()?.build()
    }

    /// A builder for an HTTP client.
    pub fn builder() -> ClientBuilder {
        ClientBuilder {
            address: "127.0.0.1:8500".into(),
            token: None,
            token_file: None,
            datacenter: None,
            http: HttpOptions::default(),
            retry: RetryPolicy::default(),
        }
    }

    /// The same client, sending `?dc=` on every request that names none (as Go's client
    /// does, agent endpoints included: Consul answers those locally whatever `dc` says).
    pub fn with_datacenter(mut self, dc: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.defaults).datacenter = Some(dc.into());
        self
    }

    /// The same client, reading with `consistency` unless a read asks for another mode.
    pub fn with_consistency(mut self, consistency: Consistency) -> Self {
        Arc::make_mut(&mut self.defaults).consistency = consistency;
        self
    }

    /// The same client, sending `token` as `X-Consul-Token` on every request that carries
    /// none of its own (a per-read [`QueryOptions::token`] still wins).
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        Arc::make_mut(&mut self.defaults).token = Some(token.into());
        self
    }

    /// The same client, with `defaults` applied to every request.
    pub fn with_defaults(mut self, defaults: RequestDefaults) -> Self {
        self.defaults = Arc::new(defaults);
        self
    }

    /// What this client applies to every request that does not say otherwise.
    pub fn defaults(&self) -> &RequestDefaults {
        &self.defaults
    }

    /// Sends `req` with the client's defaults applied (datacenter, token, consistency for
    /// reads) and returns Consul's answer, whatever its status. A `dc` already in
    /// `req.query`, or a token header already set, is kept.
    pub async fn raw(&self, req: Request) -> Result<Response, Error> {
        self.exchange(req, &QueryOptions::default()).await.map(|(resp, _)| resp)
    }

    /// The one request path: prepares `req` with `opts` over the client's defaults, sends
    /// it, and names the request line in a transport error. Returns the answer and that
    /// request line, for the caller's own errors.
    async fn exchange(
        &self,
        req: Request,
        opts: &QueryOptions,
    ) -> Result<(Response, String), Error> {
        let req = prepare(req, opts, &self.defaults)?;
        let context = format!("{} {}", req.method, req.path);
        match self.transport.send(req).await {
            Ok(resp) => Ok((resp, context)),
            Err(e) => Err(e.with_context(context)),
        }
    }

    /// Sends `req`; a non-2xx answer becomes an [`Error`] carrying the status, Consul's
    /// message and the request line.
    pub(crate) async fn send(&self, req: Request) -> Result<Response, Error> {
        let (resp, context) = self.exchange(req, &QueryOptions::default()).await?;
        if resp.status.is_success() {
            Ok(resp)
        } else {
            Err(status_error(&resp).with_context(context))
        }
    }

    /// A read: applies `opts`, sends, decodes JSON; `Ok(None)` on 404.
    pub(crate) async fn query<T: DeserializeOwned>(
        &self,
        req: Request,
        opts: &QueryOptions,
    ) -> Result<(Option<T>, QueryMeta), Error> {
        match self.query_raw(req, opts).await? {
            (Some(body), meta) => Ok((Some(decode(&body)?), meta)),
            (None, meta) => Ok((None, meta)),
        }
    }

    /// A read returning the body bytes; `Ok(None)` on 404 (the meta is still filled in).
    pub(crate) async fn query_raw(
        &self,
        req: Request,
        opts: &QueryOptions,
    ) -> Result<(Option<Bytes>, QueryMeta), Error> {
        let (resp, context) = self.exchange(req, opts).await?;
        let meta = query_meta(&resp);
        match resp.status {
            s if s.is_success() => Ok((Some(resp.body), meta)),
            StatusCode::NOT_FOUND => Ok((None, meta)),
            _ => Err(status_error(&resp).with_context(context)),
        }
    }

    /// A write with a JSON body, decoding a JSON answer.
    pub(crate) async fn write_json<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        method: Method,
        path: String,
        body: &B,
    ) -> Result<T, Error> {
        let body = serde_json::to_vec(body)
            .map_err(|e| Error::invalid(format!("cannot encode the body of {path}: {e}")))?;
        let resp = self.send(Request::new(method, path).body(body)).await?;
        decode(&resp.body)
    }

    /// A write whose answer carries nothing we need.
    pub(crate) async fn write_unit<B: Serialize + ?Sized>(
        &self,
        method: Method,
        path: String,
        body: Option<&B>,
    ) -> Result<(), Error> {
        let mut req = Request::new(method, path.clone());
        if let Some(body) = body {
            req =
                req.body(serde_json::to_vec(body).map_err(|e| {
                    Error::invalid(format!("cannot encode the body of {path}: {e}"))
                })?);
        }
        self.send(req).await.map(|_| ())
    }
}

/// Builds an HTTP [`Client`]: address, token, timeouts, TLS and retries. `Debug` never
/// shows the token.
#[derive(Clone)]
pub struct ClientBuilder {
    address: String,
    token: Option<String>,
    token_file: Option<std::path::PathBuf>,
    datacenter: Option<String>,
    http: HttpOptions,
    retry: RetryPolicy,
}

impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("address", &self.address)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("token_file", &self.token_file)
            .field("datacenter", &self.datacenter)
            .field("http", &self.http)
            .field("retry", &self.retry)
            .finish()
    }
}

impl ClientBuilder {
    /// A builder with Consul's client environment applied (the variables are listed on
    /// [`Client::from_env`]); later calls override it, as a command's flags override the
    /// environment. A malformed value is an error naming the variable.
    ///
    /// ```no_run
    /// # fn main() -> Result<(), consul_api::Error> {
    /// // CONSUL_HTTP_ADDR=https://127.0.0.1:8501 CONSUL_CACERT=ca.pem CONSUL_CLIENT_CERT=…
    /// let client = consul_api::ClientBuilder::from_env()?.token("from-a-flag").build()?;
    /// # let _ = client;
    /// # Ok(())
    /// # }
    /// ```
    pub fn from_env() -> Result<Self, Error> {
        ClientBuilder::from_env_with(|name| std::env::var(name).ok())
    }

    /// [`from_env`](Self::from_env) reading the variables through `lookup`, so a test or a
    /// caller with its own configuration source need not touch the process environment.
    ///
    /// ```
    /// use std::collections::HashMap;
    /// let env = HashMap::from([("CONSUL_HTTP_SSL_VERIFY", "maybe")]);
    /// let err = consul_api::ClientBuilder::from_env_with(|k| env.get(k).map(|v| v.to_string()))
    ///     .unwrap_err();
    /// assert!(err.to_string().contains("CONSUL_HTTP_SSL_VERIFY"));
    /// ```
    pub fn from_env_with(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, Error> {
        crate::env::apply(Client::builder(), lookup)
    }

    /// The agent's address: `host:port`, `http://host:port`, `https://host:port` or
    /// `unix:///path/to/socket`.
    pub fn address(mut self, address: impl Into<String>) -> Self {
        self.address = address.into();
        self
    }

    /// The ACL token sent as `X-Consul-Token`; replaces a token file set before.
    pub fn token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(token.into());
        self.token_file = None;
        self
    }

    /// A file holding the ACL token, read (and trimmed) when the client is built. As in
    /// Go, its content wins over [`token`](Self::token) when it has any; an empty file
    /// leaves that token in force.
    pub fn token_file(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.token_file = Some(path.into());
        self
    }

    /// The datacenter to query, if not the agent's own.
    pub fn datacenter(mut self, dc: impl Into<String>) -> Self {
        self.datacenter = Some(dc.into());
        self
    }

    /// Time to establish a connection.
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.http.connect_timeout = t;
        self
    }

    /// Time for a request that is not a blocking query.
    pub fn request_timeout(mut self, t: Duration) -> Self {
        self.http.request_timeout = t;
        self
    }

    /// The largest response body the client reads (default
    /// [`DEFAULT_MAX_RESPONSE_BYTES`](crate::http::DEFAULT_MAX_RESPONSE_BYTES)); a larger
    /// answer is an error instead of memory.
    pub fn max_response_bytes(mut self, n: usize) -> Self {
        self.http.max_response_bytes = n;
        self
    }

    /// PEM file of the CA for `https://` addresses (wins over [`ca_path`](Self::ca_path)).
    pub fn ca_cert(mut self, path: impl Into<std::path::PathBuf>) -> Self {
        self.http.ca_cert = Some(path.into());
        self
    }

    /// A directory of PEM CA certificates for `https://` addresses.
    pub fn ca_path(mut self, dir: impl Into<std::path::PathBuf>) -> Self {
        self.http.ca_path = Some(dir.into());
        self
    }

    /// The client certificate and its key, presented to an agent with `verify_incoming`.
    pub fn client_cert(
        mut self,
        cert: impl Into<std::path::PathBuf>,
        key: impl Into<std::path::PathBuf>,
    ) -> Self {
        self.http.client_cert = Some(cert.into());
        self.http.client_key = Some(key.into());
        self
    }

    /// The name to verify in the agent's certificate, if not the address's host.
    pub fn tls_server_name(mut self, name: impl Into<String>) -> Self {
        self.http.tls_server_name = Some(name.into());
        self
    }

    /// Use https even when the address has no scheme or says `http://`.
    pub fn https(mut self, on: bool) -> Self {
        self.http.https = on;
        self
    }

    /// Accept any server certificate (encrypted, not authenticated): for tests only.
    pub fn tls_skip_verify(mut self, skip: bool) -> Self {
        self.http.tls_skip_verify = skip;
        self
    }

    /// HTTP basic authentication for every request.
    pub fn basic_auth(mut self, auth: crate::BasicAuth) -> Self {
        self.http.basic_auth = Some(auth);
        self
    }

    /// Retry policy for transient failures ([`RetryPolicy::none`] disables retries).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Builds the client: HTTP transport, then retries; the token and datacenter become the
    /// client's [`RequestDefaults`], applied with every request's own options in one place.
    pub fn build(mut self) -> Result<Client, Error> {
        if let Some(file) = &self.token_file {
            let text = std::fs::read_to_string(file).map_err(|e| {
                Error::config(format!("cannot read the token file {}: {e}", file.display()))
            })?;
            if !text.trim().is_empty() {
                self.token = Some(text.trim().to_string());
            }
        }
        let http = Retry::new(HttpTransport::with_options(&self.address, self.http)?, self.retry);
        let client = match self.token {
            Some(t) => {
                if HeaderValue::from_str(&t).is_err() {
                    return Err(Error::config(
                        "the ACL token contains characters not allowed in a header",
                    ));
                }
                Client::new(http).with_token(t)
            }
            None => Client::new(http),
        };
        Ok(match self.datacenter {
            Some(dc) => client.with_datacenter(dc),
            None => client,
        })
    }
}

/// Applies the request's options over the client's defaults, in one place for every
/// request: `dc` (unless the request names one), the token header (unless one is set), and
/// for reads the consistency mode, the filter, and the blocking `index`/`wait` with the
/// transport timeout a blocking read needs. A token that cannot be a header value is an
/// error, never a request sent without it.
pub(crate) fn prepare(
    mut req: Request,
    opts: &QueryOptions,
    defaults: &RequestDefaults,
) -> Result<Request, Error> {
    if req.method == Method::GET {
        if opts.index.0 > 0 {
            let wait = opts.wait.or(defaults.wait).unwrap_or(DEFAULT_WAIT).min(MAX_WAIT);
            req = req
                .query("index", opts.index.0.to_string())
                .query("wait", format!("{}ms", wait.as_millis()));
            // Consul adds up to wait/16 of jitter; leave room for it and for the network.
            req.timeout = Some(wait + wait / 16 + Duration::from_secs(5));
        }
        let consistency = match opts.consistency {
            Consistency::Default => defaults.consistency,
            asked => asked,
        };
        match consistency {
            Consistency::Default => {}
            Consistency::Consistent => req = req.flag("consistent"),
            Consistency::Stale => req = req.flag("stale"),
        }
        if let Some(filter) = &opts.filter {
            req = req.query("filter", filter.clone());
        }
    }
    if !req.query.iter().any(|(k, _)| k == "dc")
        && let Some(dc) = opts.datacenter.as_ref().or(defaults.datacenter.as_ref())
    {
        req = req.query("dc", dc.clone());
    }
    if !req.headers.contains_key("x-consul-token")
        && !req.headers.contains_key("authorization")
        && let Some(token) = opts.token.as_ref().or(defaults.token.as_ref())
    {
        let mut v = HeaderValue::from_str(token).map_err(|_| {
            Error::invalid("the ACL token contains characters not allowed in a header")
        })?;
        v.set_sensitive(true);
        req.headers.insert("x-consul-token", v);
    }
    Ok(req)
}

/// Reads `X-Consul-Index`, `X-Consul-KnownLeader` and `X-Consul-LastContact`.
pub(crate) fn query_meta(resp: &Response) -> QueryMeta {
    QueryMeta {
        last_index: Index(resp.header("x-consul-index").and_then(|v| v.parse().ok()).unwrap_or(0)),
        known_leader: resp.header("x-consul-knownleader").is_some_and(|v| v == "true"),
        last_contact: Duration::from_millis(
            resp.header("x-consul-lastcontact").and_then(|v| v.parse().ok()).unwrap_or(0),
        ),
    }
}

pub(crate) fn status_error(resp: &Response) -> Error {
    let mut e = Error::status(resp.status, String::from_utf8_lossy(&resp.body).into_owned());
    if let Some(after) = retry_after(resp) {
        e = e.with_retry_after(after);
    }
    e
}

/// The `Retry-After` hint in seconds, if any; values of any size are accepted (callers add
/// it to times with saturating arithmetic), an HTTP date is ignored.
pub(crate) fn retry_after(resp: &Response) -> Option<Duration> {
    resp.header("retry-after").and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs)
}

pub(crate) fn decode<T: DeserializeOwned>(body: &[u8]) -> Result<T, Error> {
    serde_json::from_slice(body).map_err(|e| {
        let snippet: String = String::from_utf8_lossy(body).chars().take(120).collect();
        Error::decode(format!("{e} in {snippet:?}"))
    })
}

/// Checks a caller-supplied path segment (a service id, a session id, a node name).
pub(crate) fn segment<'a>(what: &str, value: &'a str) -> Result<&'a str, Error> {
    if value.is_empty() {
        Err(Error::invalid(format!("{what} must not be empty")))
    } else if value.contains('/') {
        Err(Error::invalid(format!("{what} {value:?} must not contain '/'")))
    } else {
        Ok(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Request {
        Request::new(Method::GET, path)
    }

    #[test]
    fn a_blocking_query_on_index_0_is_a_plain_read() {
        let wait = Duration::from_secs(30);
        let none = RequestDefaults::default();
        let plain =
            prepare(get("/v1/kv/a"), &QueryOptions::blocking(Index(0), wait), &none).unwrap();
        assert_eq!(plain.path_and_query(), "/v1/kv/a");
        assert_eq!(plain.timeout, None);
        let blocking =
            prepare(get("/v1/kv/a"), &QueryOptions::blocking(Index(7), wait), &none).unwrap();
        assert_eq!(blocking.path_and_query(), "/v1/kv/a?index=7&wait=30000ms");
        assert!(blocking.timeout.is_some_and(|t| t > wait + wait / 16));
    }

    #[test]
    fn defaults_apply_to_every_request_and_the_request_s_own_options_win() {
        let defaults = RequestDefaults {
            datacenter: Some("dc9".into()),
            consistency: Consistency::Stale,
            wait: Some(Duration::from_secs(20)),
            token: Some("client-token".into()),
        };
        let read = prepare(
            get("/v1/kv/a"),
            &QueryOptions { index: Index(3), ..Default::default() },
            &defaults,
        )
        .unwrap();
        assert_eq!(read.path_and_query(), "/v1/kv/a?index=3&wait=20000ms&stale&dc=dc9");
        assert_eq!(read.headers["x-consul-token"], "client-token");
        let own = QueryOptions {
            index: Index(3),
            wait: Some(Duration::from_secs(1)),
            consistency: Consistency::Consistent,
            datacenter: Some("dc2".into()),
            token: Some("mine".into()),
            filter: None,
        };
        let read = prepare(get("/v1/kv/a"), &own, &defaults).unwrap();
        assert_eq!(read.path_and_query(), "/v1/kv/a?index=3&wait=1000ms&consistent&dc=dc2");
        assert_eq!(read.headers["x-consul-token"], "mine");
        // Writes carry the datacenter and the token, never a read's consistency or index.
        let write = prepare(Request::new(Method::PUT, "/v1/txn"), &own, &defaults).unwrap();
        assert_eq!(write.path_and_query(), "/v1/txn?dc=dc2");
        // A datacenter or a token already on the request is kept.
        let mut named = Request::new(Method::DELETE, "/v1/kv/a").query("dc", "dc1");
        named.headers.insert("authorization", HeaderValue::from_static("Bearer x"));
        let named = prepare(named, &QueryOptions::default(), &defaults).unwrap();
        assert_eq!(named.path_and_query(), "/v1/kv/a?dc=dc1");
        assert!(!named.headers.contains_key("x-consul-token"));
        // A token that cannot be a header value fails the request; it is not sent without.
        let bad = QueryOptions { token: Some("line\nbreak".into()), ..Default::default() };
        let err = prepare(get("/v1/kv/a"), &bad, &defaults).unwrap_err();
        assert!(err.to_string().contains("ACL token"), "{err}");
    }

    #[test]
    fn tokens_never_appear_in_debug_output() {
        let defaults = RequestDefaults { token: Some("s3cr3t-token".into()), ..Default::default() };
        let opts = QueryOptions { token: Some("s3cr3t-token".into()), ..Default::default() };
        let client = Client::new(crate::HttpTransport::new("127.0.0.1:1").unwrap())
            .with_defaults(defaults.clone());
        let req = prepare(get("/v1/kv/a"), &opts, &defaults).unwrap();
        for text in [
            format!("{defaults:?}"),
            format!("{opts:?}"),
            format!("{client:?}"),
            format!("{req:?}"),
        ] {
            assert!(!text.contains("s3cr3t"), "{text}");
        }
    }
}

//! The HTTP transport: hyper-util's pooled client, with connect and request timeouts.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::uri::{Authority, Scheme};
use http::{HeaderValue, Uri};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::{Error, Request, Response, Transport};

/// Default time to establish a TCP connection.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// Default time for a request that sets no timeout of its own.
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Clone, Debug)]
enum Pool {
    Plain(HyperClient<HttpConnector, Full<Bytes>>),
    #[cfg(unix)]
    Unix(HyperClient<crate::unix::UnixConnector, Full<Bytes>>),
    #[cfg(feature = "tls")]
    Tls(HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>),
}

/// Sends requests to one Consul agent over HTTP/1.1 with a pool of kept-alive connections.
#[derive(Clone, Debug)]
pub struct HttpTransport {
    pool: Pool,
    scheme: Scheme,
    authority: Authority,
    request_timeout: Duration,
    max_response_bytes: usize,
    basic_auth: Option<HeaderValue>,
}

/// Options for [`HttpTransport`]. The TLS options are used by `https://` addresses only
/// (and need consul-api's `tls` feature); their environment variable is named beside each.
#[derive(Clone)]
pub struct HttpOptions {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for a request that sets no timeout of its own.
    pub request_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// Use https even when the address has no scheme or says `http://`
    /// (`CONSUL_HTTP_SSL=true`).
    pub https: bool,
    /// PEM file of the CA (or CAs) that signed Consul's certificate (`CONSUL_CACERT`).
    /// Takes precedence over `ca_path`, as in Go.
    pub ca_cert: Option<PathBuf>,
    /// Directory of PEM CA certificates, read recursively; every file must hold at least
    /// one certificate (`CONSUL_CAPATH`).
    pub ca_path: Option<PathBuf>,
    /// PEM certificate (chain) presented to Consul, for `verify_incoming`
    /// (`CONSUL_CLIENT_CERT`); needs `client_key`.
    pub client_cert: Option<PathBuf>,
    /// PEM private key of `client_cert` (`CONSUL_CLIENT_KEY`).
    pub client_key: Option<PathBuf>,
    /// Name to verify in Consul's certificate and to send as SNI, if not the address's
    /// host; a `:port` suffix is dropped, as Go does (`CONSUL_TLS_SERVER_NAME`).
    pub tls_server_name: Option<String>,
    /// Accept any server certificate (`CONSUL_HTTP_SSL_VERIFY=false`): the connection is
    /// encrypted but the server is not authenticated. For tests only.
    pub tls_skip_verify: bool,
    /// HTTP basic authentication sent with every request (`CONSUL_HTTP_AUTH`), for an
    /// agent behind a proxy that asks for it.
    pub basic_auth: Option<BasicAuth>,
    /// The largest response body read; a larger one is an error, never held in memory.
    pub max_response_bytes: usize,
}

impl fmt::Debug for HttpOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("HttpOptions")
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("max_idle_per_host", &self.max_idle_per_host)
            .field("https", &self.https)
            .field("ca_cert", &self.ca_cert)
            .field("ca_path", &self.ca_path)
            .field("client_cert", &self.client_cert)
            .field("client_key", &self.client_key)
            .field("tls_server_name", &self.tls_server_name)
            .field("tls_skip_verify", &self.tls_skip_verify)
            .field("basic_auth", &self.basic_auth)
            .field("max_response_bytes", &self.max_response_bytes)
            .finish()
    }
}

/// A user name and password for HTTP basic authentication. `Debug` hides the password.
#[derive(Clone, PartialEq, Eq)]
pub struct BasicAuth {
    /// The user name.
    pub username: String,
    /// The password (may be empty).
    pub password: String,
}

impl BasicAuth {
    /// Parses `CONSUL_HTTP_AUTH`'s form, as Go does: `user:password` splits at the first
    /// `:`; without one, the whole value is the user name and the password is empty.
    pub fn parse(value: &str) -> BasicAuth {
        match value.split_once(':') {
            Some((u, p)) => BasicAuth { username: u.into(), password: p.into() },
            None => BasicAuth { username: value.into(), password: String::new() },
        }
    }

    fn header(&self) -> Result<HeaderValue, Error> {
        use base64::Engine as _;
        let raw = format!("{}:{}", self.username, self.password);
        let encoded = base64::engine::general_purpose::STANDARD.encode(raw);
        let mut v = HeaderValue::from_str(&format!("Basic {encoded}"))
            .map_err(|_| Error::config("CONSUL_HTTP_AUTH cannot be sent as a header"))?;
        v.set_sensitive(true);
        Ok(v)
    }
}

impl fmt::Debug for BasicAuth {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("BasicAuth")
            .field("username", &self.username)
            .field("password", &"<redacted>")
            .finish()
    }
}

/// The default cap on a response body: 256 MiB, far above any answer Consul gives for a
/// 512 KiB-per-value store short of listing the whole of a very large one.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 256 * 1024 * 1024;

impl Default for HttpOptions {
    fn default() -> Self {
        HttpOptions {
            connect_timeout: DEFAULT_CONNECT_TIMEOUT,
            request_timeout: DEFAULT_REQUEST_TIMEOUT,
            max_idle_per_host: 32,
            https: false,
            ca_cert: None,
            ca_path: None,
            client_cert: None,
            client_key: None,
            tls_server_name: None,
            tls_skip_verify: false,
            basic_auth: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Where an address as CONSUL_HTTP_ADDR gives it points.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Address {
    /// `host:port`, `http://host:port` or `https://host:port`.
    Tcp(Scheme, Authority),
    /// `unix:///path/to/socket`: plain HTTP over a unix domain socket.
    Unix(PathBuf),
}

/// Splits an address as CONSUL_HTTP_ADDR gives it (`host:port`, `http://…`, `https://…`,
/// `unix:///path`).
pub fn parse_address(addr: &str) -> Result<Address, Error> {
    let addr = addr.trim();
    if let Some(path) = addr.strip_prefix("unix://") {
        if path.is_empty() {
            return Err(Error::config(format!("address {addr:?} names no socket path")));
        }
        return Ok(Address::Unix(PathBuf::from(path)));
    }
    let addr = addr.trim_end_matches('/');
    let (scheme, rest) = if let Some(r) = addr.strip_prefix("https://") {
        (Scheme::HTTPS, r)
    } else if let Some(r) = addr.strip_prefix("http://") {
        (Scheme::HTTP, r)
    } else if let Some((scheme, _)) = addr.split_once("://") {
        return Err(Error::config(format!(
            "address {addr:?}: unknown protocol scheme {scheme:?} (use http://, https:// or unix://)"
        )));
    } else {
        (Scheme::HTTP, addr)
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::config(format!("address {addr:?} is not host:port")));
    }
    let authority: Authority =
        rest.parse().map_err(|e| Error::config(format!("address {addr:?} is invalid: {e}")))?;
    Ok(Address::Tcp(scheme, authority))
}

impl HttpTransport {
    /// A transport to `addr` (`host:port`, `http://host:port`, `https://host:port` or
    /// `unix:///path`).
    pub fn new(addr: &str) -> Result<Self, Error> {
        HttpTransport::with_options(addr, HttpOptions::default())
    }

    /// A transport to `addr` with `options`.
    pub fn with_options(addr: &str, options: HttpOptions) -> Result<Self, Error> {
        let mut builder = HyperClient::builder(TokioExecutor::new());
        builder.pool_max_idle_per_host(options.max_idle_per_host);
        let basic_auth = options.basic_auth.as_ref().map(BasicAuth::header).transpose()?;
        let (pool, scheme, authority) = match parse_address(addr)? {
            Address::Unix(path) => {
                if options.https {
                    return Err(Error::config(format!(
                        "address {addr:?}: https over a unix socket is not supported \
                         (unset CONSUL_HTTP_SSL)"
                    )));
                }
                (unix_pool(path, &builder)?, Scheme::HTTP, Authority::from_static("localhost"))
            }
            Address::Tcp(scheme, authority) => {
                let scheme = if options.https { Scheme::HTTPS } else { scheme };
                let mut connector = HttpConnector::new();
                connector.set_connect_timeout(Some(options.connect_timeout));
                connector.set_nodelay(true);
                connector.enforce_http(scheme == Scheme::HTTP);
                let pool = if scheme == Scheme::HTTPS {
                    tls_pool(connector, &builder, &options)?
                } else {
                    Pool::Plain(builder.build(connector))
                };
                (pool, scheme, authority)
            }
        };
        Ok(HttpTransport {
            pool,
            scheme,
            authority,
            request_timeout: options.request_timeout,
            max_response_bytes: options.max_response_bytes,
            basic_auth,
        })
    }

    /// The `scheme://host:port` requests go to (`http://localhost` for a unix socket).
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[cfg(unix)]
fn unix_pool(path: PathBuf, builder: &hyper_util::client::legacy::Builder) -> Result<Pool, Error> {
    Ok(Pool::Unix(builder.build(crate::unix::UnixConnector::new(path))))
}

#[cfg(not(unix))]
fn unix_pool(path: PathBuf, _builder: &hyper_util::client::legacy::Builder) -> Result<Pool, Error> {
    Err(Error::config(format!("unix://{} : unix sockets need a unix system", path.display())))
}

#[cfg(feature = "tls")]
fn tls_pool(
    mut connector: HttpConnector,
    builder: &hyper_util::client::legacy::Builder,
    options: &HttpOptions,
) -> Result<Pool, Error> {
    connector.enforce_http(false);
    let (config, server_name) = crate::tls::client_config(options)?;
    let mut https =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    if let Some(name) = server_name {
        https = https.with_server_name_resolver(FixedName(name));
    }
    Ok(Pool::Tls(builder.build(https.enable_http1().wrap_connector(connector))))
}

#[cfg(feature = "tls")]
struct FixedName(rustls::pki_types::ServerName<'static>);

#[cfg(feature = "tls")]
impl hyper_rustls::ResolveServerName for FixedName {
    fn resolve(
        &self,
        _uri: &Uri,
    ) -> Result<rustls::pki_types::ServerName<'static>, Box<dyn std::error::Error + Sync + Send>>
    {
        Ok(self.0.clone())
    }
}

#[cfg(not(feature = "tls"))]
fn tls_pool(
    _connector: HttpConnector,
    _builder: &hyper_util::client::legacy::Builder,
    _options: &HttpOptions,
) -> Result<Pool, Error> {
    Err(Error::config("https needs consul-api's `tls` feature"))
}

/// The error and its causes in one line: hyper-util's own message ("client error
/// (Connect)") says little; the cause (a refused connection, a rejected certificate) is
/// what a reader needs.
fn chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        cur = s.source();
    }
    out
}

/// A TLS failure (a certificate refused by either side, a failed handshake) is a
/// configuration problem, not a transient one: retrying cannot fix it.
#[cfg(feature = "tls")]
fn is_tls_failure(e: &(dyn std::error::Error + 'static)) -> bool {
    if e.is::<rustls::Error>() {
        return true;
    }
    // io::Error's `source` skips the error it wraps: look inside it too.
    if let Some(inner) = e.downcast_ref::<std::io::Error>().and_then(|io| io.get_ref())
        && is_tls_failure(inner)
    {
        return true;
    }
    e.source().is_some_and(is_tls_failure)
}

#[cfg(not(feature = "tls"))]
fn is_tls_failure(_e: &(dyn std::error::Error + 'static)) -> bool {
    false
}

#[async_trait]
impl Transport for HttpTransport {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        let uri = Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(req.path_and_query())
            .build()
            .map_err(|e| Error::invalid(format!("cannot build a URL for {}: {e}", req.path)))?;
        let mut builder = http::Request::builder().method(req.method.clone()).uri(uri);
        if let Some(headers) = builder.headers_mut() {
            *headers = req.headers.clone();
            if let Some(auth) = &self.basic_auth
                && !headers.contains_key(http::header::AUTHORIZATION)
            {
                headers.insert(http::header::AUTHORIZATION, auth.clone());
            }
        }
        let http_req = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| Error::invalid(format!("cannot build a request for {}: {e}", req.path)))?;
        let timeout = req.timeout.unwrap_or(self.request_timeout);
        let exchange = async {
            let resp = match &self.pool {
                Pool::Plain(c) => c.request(http_req).await,
                #[cfg(unix)]
                Pool::Unix(c) => c.request(http_req).await,
                #[cfg(feature = "tls")]
                Pool::Tls(c) => c.request(http_req).await,
            }
            .map_err(|e| {
                let text = chain(&e);
                if is_tls_failure(&e) {
                    Error::config(format!("TLS with Consul failed: {text}")).with_source(e)
                } else if e.is_connect() {
                    Error::connect(text).with_source(e)
                } else {
                    Error::ambiguous(text).with_source(e)
                }
            })?;
            let (parts, body) = resp.into_parts();
            let cap = self.max_response_bytes;
            let body = http_body_util::Limited::new(body, cap).collect().await.map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    Error::decode(format!(
                        "the response to {} is over the {cap}-byte limit",
                        req.path
                    ))
                } else {
                    Error::ambiguous(format!("reading the response: {e}"))
                }
            })?;
            let body = body.to_bytes();
            Ok(Response { status: parts.status, headers: parts.headers, body })
        };
        match tokio::time::timeout(timeout, exchange).await {
            Ok(result) => result,
            Err(_) => Err(Error::timeout(timeout)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_parse_like_consul_http_addr() {
        let tcp = |s, a: &'static str| Address::Tcp(s, Authority::from_static(a));
        assert_eq!(parse_address("127.0.0.1:8500").unwrap(), tcp(Scheme::HTTP, "127.0.0.1:8500"));
        assert_eq!(
            parse_address("https://consul.local:8501/").unwrap(),
            tcp(Scheme::HTTPS, "consul.local:8501")
        );
        assert_eq!(
            parse_address("unix:///run/consul/http.sock").unwrap(),
            Address::Unix("/run/consul/http.sock".into())
        );
        assert!(parse_address("unix://").is_err());
        assert!(parse_address("ftp://x:1").unwrap_err().to_string().contains("scheme"));
        assert!(parse_address("").is_err());
        assert!(parse_address("host:1/path").is_err());
    }

    #[tokio::test]
    async fn a_refused_connection_is_a_connect_error() {
        // Bind then drop a listener so the port is very likely closed.
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let t = HttpTransport::new(&format!("127.0.0.1:{port}")).unwrap();
        let err = t.send(Request::new(http::Method::GET, "/v1/status/leader")).await.unwrap_err();
        assert!(err.is_connect(), "{err:?}");
        assert!(err.is_retryable());
    }
}

//! The HTTP transport: hyper-util's pooled client, with connect and request timeouts.

use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::Uri;
use http::uri::{Authority, Scheme};
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
}

/// Options for [`HttpTransport`].
#[derive(Clone, Debug)]
pub struct HttpOptions {
    /// Time to establish a connection.
    pub connect_timeout: Duration,
    /// Time for a request that sets no timeout of its own.
    pub request_timeout: Duration,
    /// Idle connections kept per host.
    pub max_idle_per_host: usize,
    /// PEM file of the CA that signed Consul's certificate (https only).
    pub ca_cert: Option<std::path::PathBuf>,
    /// Name to verify in Consul's certificate, if not the address's host (https only).
    pub tls_server_name: Option<String>,
    /// The largest response body read; a larger one is an error, never held in memory.
    pub max_response_bytes: usize,
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
            ca_cert: None,
            tls_server_name: None,
            max_response_bytes: DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Splits an address as CONSUL_HTTP_ADDR gives it (`host:port`, `http://…`, `https://…`).
pub fn parse_address(addr: &str) -> Result<(Scheme, Authority), Error> {
    let addr = addr.trim().trim_end_matches('/');
    let (scheme, rest) = if let Some(r) = addr.strip_prefix("https://") {
        (Scheme::HTTPS, r)
    } else if let Some(r) = addr.strip_prefix("http://") {
        (Scheme::HTTP, r)
    } else if addr.contains("://") {
        return Err(Error::config(format!(
            "address {addr:?} has an unsupported scheme (use http:// or https://)"
        )));
    } else {
        (Scheme::HTTP, addr)
    };
    if rest.is_empty() || rest.contains('/') {
        return Err(Error::config(format!("address {addr:?} is not host:port")));
    }
    let authority: Authority =
        rest.parse().map_err(|e| Error::config(format!("address {addr:?} is invalid: {e}")))?;
    Ok((scheme, authority))
}

impl HttpTransport {
    /// A transport to `addr` (`host:port`, `http://host:port` or `https://host:port`).
    pub fn new(addr: &str) -> Result<Self, Error> {
        HttpTransport::with_options(addr, HttpOptions::default())
    }

    /// A transport to `addr` with `options`.
    pub fn with_options(addr: &str, options: HttpOptions) -> Result<Self, Error> {
        let (scheme, authority) = parse_address(addr)?;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(options.connect_timeout));
        connector.set_nodelay(true);
        connector.enforce_http(scheme == Scheme::HTTP);
        let mut builder = HyperClient::builder(TokioExecutor::new());
        builder.pool_max_idle_per_host(options.max_idle_per_host);
        let pool = if scheme == Scheme::HTTPS {
            tls_pool(connector, &builder, &options)?
        } else {
            Pool::Plain(builder.build(connector))
        };
        Ok(HttpTransport {
            pool,
            scheme,
            authority,
            request_timeout: options.request_timeout,
            max_response_bytes: options.max_response_bytes,
        })
    }

    /// The `scheme://host:port` requests go to.
    pub fn base_url(&self) -> String {
        format!("{}://{}", self.scheme, self.authority)
    }
}

#[cfg(feature = "tls")]
fn tls_pool(
    mut connector: HttpConnector,
    builder: &hyper_util::client::legacy::Builder,
    options: &HttpOptions,
) -> Result<Pool, Error> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, ServerName};

    connector.enforce_http(false);
    let mut roots = rustls::RootCertStore::empty();
    match &options.ca_cert {
        Some(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| Error::config(format!("CONSUL_CACERT {}: {e}", path.display())))?;
            for cert in certs {
                let cert = cert
                    .map_err(|e| Error::config(format!("CONSUL_CACERT {}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| Error::config(format!("CONSUL_CACERT {}: {e}", path.display())))?;
            }
        }
        None => {
            return Err(Error::config(
                "https needs a CA certificate: set CONSUL_CACERT (HttpOptions::ca_cert)",
            ));
        }
    }
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(|e| Error::config(format!("TLS: {e}")))?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let mut https =
        hyper_rustls::HttpsConnectorBuilder::new().with_tls_config(config).https_or_http();
    if let Some(name) = &options.tls_server_name {
        let name = ServerName::try_from(name.clone())
            .map_err(|e| Error::config(format!("CONSUL_TLS_SERVER_NAME {name:?}: {e}")))?;
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
        }
        let http_req = builder
            .body(Full::new(req.body.clone()))
            .map_err(|e| Error::invalid(format!("cannot build a request for {}: {e}", req.path)))?;
        let timeout = req.timeout.unwrap_or(self.request_timeout);
        let exchange = async {
            let resp = match &self.pool {
                Pool::Plain(c) => c.request(http_req).await,
                #[cfg(feature = "tls")]
                Pool::Tls(c) => c.request(http_req).await,
            }
            .map_err(|e| {
                if e.is_connect() {
                    Error::connect(e.to_string()).with_source(e)
                } else {
                    Error::ambiguous(e.to_string()).with_source(e)
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
        let (s, a) = parse_address("127.0.0.1:8500").unwrap();
        assert_eq!((s, a.as_str()), (Scheme::HTTP, "127.0.0.1:8500"));
        let (s, a) = parse_address("https://consul.local:8501/").unwrap();
        assert_eq!((s, a.as_str()), (Scheme::HTTPS, "consul.local:8501"));
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

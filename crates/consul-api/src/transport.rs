//! One request in, one response out: the seam every layer plugs into.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderMap, Method, StatusCode};
use percent_encoding::{AsciiSet, CONTROLS, utf8_percent_encode};

use crate::Error;

/// Characters escaped in a path segment (a KV key keeps its `/` separators).
const PATH: &AsciiSet = &CONTROLS
    .add(b' ')
    .add(b'"')
    .add(b'#')
    .add(b'%')
    .add(b'<')
    .add(b'>')
    .add(b'?')
    .add(b'`')
    .add(b'{')
    .add(b'}')
    .add(b'\\')
    .add(b'^')
    .add(b'|')
    .add(b'[')
    .add(b']')
    .add(b'+')
    .add(b'&')
    .add(b'=')
    .add(b';');

/// Characters escaped in a query name or value.
const QUERY: &AsciiSet = &PATH.add(b'/').add(b':').add(b',').add(b'@').add(b'$').add(b'!');

/// Percent-encodes `s` for use inside a URL path, keeping `/` as a separator.
pub fn encode_path(s: &str) -> String {
    utf8_percent_encode(s, PATH).to_string()
}

/// Percent-encodes `s` for use as a query parameter name or value.
pub fn encode_query(s: &str) -> String {
    utf8_percent_encode(s, QUERY).to_string()
}

/// One HTTP request to Consul, transport-neutral.
///
/// `path` is the decoded path (for example `/v1/kv/my key`); it is percent-encoded
/// once, by [`Request::path_and_query`]. Query parameters whose value is empty are
/// sent as bare presence flags (`?recurse`), as Consul reads them.
#[derive(Clone, Debug)]
pub struct Request {
    /// HTTP method.
    pub method: Method,
    /// Decoded path, starting with `/`.
    pub path: String,
    /// Query parameters in order; an empty value is a presence flag.
    pub query: Vec<(String, String)>,
    /// Request headers (the token layer adds `X-Consul-Token`).
    pub headers: HeaderMap,
    /// Request body (raw bytes; JSON or a KV value).
    pub body: Bytes,
    /// Time the transport may spend on this request before giving up; `None` uses the
    /// transport's default. Blocking queries set this above `wait + wait/16`.
    pub timeout: Option<Duration>,
}

impl Request {
    /// A request with no query, headers, body or timeout.
    pub fn new(method: Method, path: impl Into<String>) -> Self {
        Request {
            method,
            path: path.into(),
            query: Vec::new(),
            headers: HeaderMap::new(),
            body: Bytes::new(),
            timeout: None,
        }
    }

    /// Adds a query parameter.
    pub fn query(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.query.push((name.into(), value.into()));
        self
    }

    /// Adds a presence flag such as `recurse`.
    pub fn flag(self, name: impl Into<String>) -> Self {
        self.query(name, "")
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Bytes>) -> Self {
        self.body = body.into();
        self
    }

    /// True if sending this request twice has the same effect as sending it once.
    ///
    /// GET and HEAD always are; PUT, POST and DELETE are not assumed to be (a KV `PUT ?cas`,
    /// a session create or a lock acquire must not be replayed blindly).
    pub fn is_idempotent(&self) -> bool {
        matches!(self.method, Method::GET | Method::HEAD | Method::OPTIONS)
    }

    /// The encoded path and query, ready for an HTTP request line.
    pub fn path_and_query(&self) -> String {
        let mut out = encode_path(&self.path);
        for (i, (name, value)) in self.query.iter().enumerate() {
            out.push(if i == 0 { '?' } else { '&' });
            out.push_str(&encode_query(name));
            if !value.is_empty() {
                out.push('=');
                out.push_str(&encode_query(value));
            }
        }
        out
    }
}

/// One HTTP response from Consul.
#[derive(Clone, Debug)]
pub struct Response {
    /// Status code.
    pub status: StatusCode,
    /// Response headers (`X-Consul-Index` and friends).
    pub headers: HeaderMap,
    /// Response body.
    pub body: Bytes,
}

impl Response {
    /// A response with no headers.
    pub fn new(status: StatusCode, body: impl Into<Bytes>) -> Self {
        Response { status, headers: HeaderMap::new(), body: body.into() }
    }

    /// A header's value as text, if present and valid UTF-8.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Sends one request and returns one response.
///
/// A transport does exactly that: retries, auth headers and defaults are layers that wrap
/// a transport (see [`crate::layers`]), never flags inside it. A non-2xx status is a
/// normal `Ok(Response)`; `Err` means no usable response arrived (connect failure,
/// timeout, broken connection).
#[async_trait]
pub trait Transport: Send + Sync + fmt::Debug + 'static {
    /// Sends `req` and waits for its response.
    async fn send(&self, req: Request) -> Result<Response, Error>;
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for std::sync::Arc<T> {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        (**self).send(req).await
    }
}

#[async_trait]
impl<T: Transport + ?Sized> Transport for Box<T> {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        (**self).send(req).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_and_query_escapes_keys_and_keeps_flags_bare() {
        let req =
            Request::new(Method::GET, "/v1/kv/a b/ü?#%").flag("recurse").query("separator", "/");
        assert_eq!(req.path_and_query(), "/v1/kv/a%20b/%C3%BC%3F%23%25?recurse&separator=%2F");
    }
}

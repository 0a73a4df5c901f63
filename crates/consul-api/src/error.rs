//! The client's one error type: what failed, where, and whether trying again is safe.

use std::fmt;
use std::time::Duration;

use http::StatusCode;

type Source = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why a request failed. Opaque on purpose: match on meaning with the `is_*` queries.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Kind {
    /// Consul answered with a non-success status.
    Status,
    /// No connection could be made (nothing was sent).
    Connect,
    /// The request or the connect step took longer than allowed.
    Timeout,
    /// The connection broke after the request may have been sent: it may or may not have
    /// been applied.
    Ambiguous,
    /// The response arrived but could not be understood.
    Decode,
    /// The caller's input was rejected before anything was sent.
    Invalid,
    /// Configuration (address, TLS files, environment) is unusable.
    Config,
    /// The operation was given up: retry budget spent, lock lost, session gone.
    Aborted,
}

/// An error from the Consul client.
///
/// Carries the HTTP status and Consul's own message when Consul answered, the path or key
/// involved, and the underlying cause. `Display` reads as one sentence, e.g.
/// `PUT /v1/kv/app/config failed: 413 Payload Too Large: Value exceeds 524288 byte limit`.
pub struct Error {
    kind: Kind,
    status: Option<StatusCode>,
    message: String,
    context: Option<String>,
    retry_after: Option<Duration>,
    source: Option<Source>,
}

impl Error {
    fn new(kind: Kind, message: impl Into<String>) -> Self {
        Error {
            kind,
            status: None,
            message: message.into(),
            context: None,
            retry_after: None,
            source: None,
        }
    }

    /// Consul answered `status` with `body` as its message.
    pub fn status(status: StatusCode, body: impl Into<String>) -> Self {
        let mut e = Error::new(Kind::Status, body.into().trim().to_string());
        e.status = Some(status);
        e
    }

    /// A connection to Consul could not be made; the request was not sent.
    pub fn connect(message: impl Into<String>) -> Self {
        Error::new(Kind::Connect, message)
    }

    /// The request did not complete within `after`.
    pub fn timeout(after: Duration) -> Self {
        Error::new(Kind::Timeout, format!("no response within {after:?}"))
    }

    /// The connection failed after the request was sent: it may have been applied.
    pub fn ambiguous(message: impl Into<String>) -> Self {
        Error::new(Kind::Ambiguous, message)
    }

    /// The response could not be decoded.
    pub fn decode(message: impl Into<String>) -> Self {
        Error::new(Kind::Decode, message)
    }

    /// The caller's input is invalid; nothing was sent.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::new(Kind::Invalid, message)
    }

    /// The client configuration is unusable.
    pub fn config(message: impl Into<String>) -> Self {
        Error::new(Kind::Config, message)
    }

    /// The operation was given up (retry budget spent, lock lost, session gone).
    pub fn aborted(message: impl Into<String>) -> Self {
        Error::new(Kind::Aborted, message)
    }

    /// Names what the error is about, e.g. `PUT /v1/kv/app/config` or `key "a/b"`.
    pub fn with_context(mut self, context: impl Into<String>) -> Self {
        self.context = Some(context.into());
        self
    }

    /// Attaches the underlying cause.
    pub fn with_source(mut self, source: impl Into<Source>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// Records the server's `Retry-After` hint.
    pub fn with_retry_after(mut self, after: Duration) -> Self {
        self.retry_after = Some(after);
        self
    }

    /// The HTTP status Consul answered with, if it answered.
    pub fn status_code(&self) -> Option<StatusCode> {
        self.status
    }

    /// Consul's message (the response body) or a description of the failure.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// The request or key the error is about, if known.
    pub fn context(&self) -> Option<&str> {
        self.context.as_deref()
    }

    /// The server's `Retry-After` hint, if it gave one.
    pub fn retry_after(&self) -> Option<Duration> {
        self.retry_after
    }

    /// True for a 404.
    pub fn is_not_found(&self) -> bool {
        self.status == Some(StatusCode::NOT_FOUND)
    }

    /// True for a 409 (a transaction rolled back).
    pub fn is_conflict(&self) -> bool {
        self.status == Some(StatusCode::CONFLICT)
    }

    /// True for 401 and 403 (missing or insufficient ACL token).
    pub fn is_permission_denied(&self) -> bool {
        matches!(self.status, Some(StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN))
    }

    /// True if no connection could be made.
    pub fn is_connect(&self) -> bool {
        self.kind == Kind::Connect
    }

    /// True if the request timed out.
    pub fn is_timeout(&self) -> bool {
        self.kind == Kind::Timeout
    }

    /// True if the request may have been applied although no response arrived.
    pub fn is_ambiguous(&self) -> bool {
        matches!(self.kind, Kind::Ambiguous | Kind::Timeout)
    }

    /// True if the caller's input was rejected before sending.
    pub fn is_invalid(&self) -> bool {
        self.kind == Kind::Invalid
    }

    /// True if the response could not be decoded.
    pub fn is_decode(&self) -> bool {
        self.kind == Kind::Decode
    }

    /// True if the failure is a configuration problem: a bad address, unreadable TLS
    /// files, or a TLS handshake either side refused (a certificate not trusted, not valid
    /// for the name, or missing). Retrying cannot fix it.
    pub fn is_config(&self) -> bool {
        self.kind == Kind::Config
    }

    /// True if the operation was given up (retry budget spent, lock lost, session gone).
    pub fn is_aborted(&self) -> bool {
        self.kind == Kind::Aborted
    }

    /// True if the failure is transient: a connection error, a timeout, a 5xx or a 429.
    ///
    /// Whether a retry is *safe* also depends on the request: only idempotent requests are
    /// retried after an ambiguous failure (see [`crate::layers::Retry`]). A 4xx other than
    /// 429 is never retryable, and neither are the 500s Consul gives for a request that can
    /// never succeed as sent (an unknown datacenter, a session that does not exist, a query
    /// number it cannot parse): asking again only adds the retry policy's delays.
    pub fn is_retryable(&self) -> bool {
        match self.kind {
            Kind::Connect | Kind::Timeout | Kind::Ambiguous => true,
            Kind::Status if self.is_permanent_server_error() => false,
            Kind::Status => self
                .status
                .is_some_and(|s| s.is_server_error() || s == StatusCode::TOO_MANY_REQUESTS),
            Kind::Decode | Kind::Invalid | Kind::Config | Kind::Aborted => false,
        }
    }
}

impl Error {
    /// Consul 1.8.7's 500 answers that depend only on the request (measured in the
    /// conformance cases).
    fn is_permanent_server_error(&self) -> bool {
        const PERMANENT: [&str; 3] = ["No path to datacenter", "invalid session", "strconv."];
        self.status == Some(StatusCode::INTERNAL_SERVER_ERROR)
            && PERMANENT.iter().any(|p| self.message.starts_with(p))
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if let Some(ctx) = &self.context {
            write!(f, "{ctx} failed: ")?;
        }
        match self.kind {
            Kind::Status => {
                let status = self.status.unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
                write!(f, "{status}")?;
                if !self.message.is_empty() {
                    write!(f, ": {}", self.message)?;
                }
                Ok(())
            }
            Kind::Connect => write!(f, "cannot connect to Consul: {}", self.message),
            Kind::Timeout => write!(f, "timed out: {}", self.message),
            Kind::Ambiguous => write!(f, "connection lost, outcome unknown: {}", self.message),
            Kind::Decode => write!(f, "unreadable response: {}", self.message),
            Kind::Invalid => write!(f, "invalid input: {}", self.message),
            Kind::Config => write!(f, "bad configuration: {}", self.message),
            Kind::Aborted => write!(f, "{}", self.message),
        }
    }
}

impl fmt::Debug for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Error");
        d.field("kind", &self.kind).field("message", &self.message);
        if let Some(s) = self.status {
            d.field("status", &s);
        }
        if let Some(c) = &self.context {
            d.field("context", c);
        }
        if let Some(s) = &self.source {
            d.field("source", s);
        }
        d.finish()
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source.as_deref().map(|s| s as &(dyn std::error::Error + 'static))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_reads_as_a_sentence() {
        let e = Error::status(StatusCode::PAYLOAD_TOO_LARGE, "Value exceeds 524288 byte limit\n")
            .with_context("PUT /v1/kv/app/config");
        assert_eq!(
            e.to_string(),
            "PUT /v1/kv/app/config failed: 413 Payload Too Large: Value exceeds 524288 byte limit"
        );
    }

    #[test]
    fn only_transient_failures_are_retryable() {
        assert!(
            Error::status(StatusCode::INTERNAL_SERVER_ERROR, "No cluster leader").is_retryable()
        );
        assert!(Error::status(StatusCode::TOO_MANY_REQUESTS, "").is_retryable());
        let no_path = Error::status(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
        assert!(!no_path.is_retryable());
        let gone = Error::status(StatusCode::INTERNAL_SERVER_ERROR, "invalid session \"x\"");
        assert!(!gone.is_retryable());
        assert!(Error::connect("refused").is_retryable());
        assert!(!Error::status(StatusCode::BAD_REQUEST, "bad").is_retryable());
        assert!(!Error::status(StatusCode::NOT_FOUND, "").is_retryable());
        assert!(!Error::invalid("empty key").is_retryable());
    }
}

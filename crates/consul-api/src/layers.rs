//! Transports that wrap a transport: retries with backoff, and the ACL token.
//!
//! Each layer does one thing and is itself a [`Transport`], so they stack:
//! `Token::new(Retry::new(HttpTransport::new(addr)?, RetryPolicy::default()), token)`.

use std::time::Duration;

use async_trait::async_trait;
use http::HeaderValue;

use crate::{Error, Request, Response, Transport};

/// When and how often [`Retry`] tries again.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (1 disables retries).
    pub max_attempts: u32,
    /// Delay before the first retry; doubles each time, with up to 50 % random jitter.
    pub initial_backoff: Duration,
    /// The longest delay between two attempts.
    pub max_backoff: Duration,
    /// No retry starts after this much time since the first attempt.
    pub max_elapsed: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            max_elapsed: Duration::from_secs(10),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        RetryPolicy { max_attempts: 1, ..Default::default() }
    }

    /// The delay before retry number `attempt` (1-based), jitter included.
    pub fn backoff(&self, attempt: u32) -> Duration {
        let base = self
            .initial_backoff
            .saturating_mul(1u32 << attempt.saturating_sub(1).min(16))
            .min(self.max_backoff);
        base / 2 + crate::jitter(base / 2)
    }
}

/// Retries transient failures, with exponential backoff and jitter, bounded by count and time.
///
/// What is retried: a 5xx or 429 answer, a timeout or a broken connection, but only for
/// idempotent requests (GET, HEAD), since a PUT that may have been applied must not be
/// replayed blindly; a connection that was refused (nothing was sent) is retried for every
/// method. A 4xx other than 429 is never retried. A 429's `Retry-After` is honoured.
#[derive(Debug)]
pub struct Retry<T> {
    inner: T,
    policy: RetryPolicy,
}

impl<T: Transport> Retry<T> {
    /// Wraps `inner` with `policy`.
    pub fn new(inner: T, policy: RetryPolicy) -> Self {
        Retry { inner, policy }
    }

    fn should_retry(&self, req: &Request, outcome: &Result<Response, Error>) -> Option<Duration> {
        match outcome {
            Ok(resp) => {
                let s = resp.status;
                let transient = s.is_server_error() || s == http::StatusCode::TOO_MANY_REQUESTS;
                (transient && req.is_idempotent())
                    .then(|| crate::client::retry_after(resp).unwrap_or_default())
            }
            Err(e) if e.is_connect() => Some(Duration::ZERO),
            Err(e) if e.is_retryable() && req.is_idempotent() => Some(Duration::ZERO),
            Err(_) => None,
        }
    }
}

#[async_trait]
impl<T: Transport> Transport for Retry<T> {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        let start = tokio::time::Instant::now();
        let mut attempt = 1;
        loop {
            let outcome = self.inner.send(req.clone()).await;
            let Some(hint) = self.should_retry(&req, &outcome) else { return outcome };
            let delay =
                self.policy.backoff(attempt).max(hint).min(self.policy.max_backoff.max(hint));
            if attempt >= self.policy.max_attempts
                || start.elapsed().saturating_add(delay) > self.policy.max_elapsed
            {
                tracing::debug!(path = %req.path, attempt, "giving up retrying");
                return outcome;
            }
            tracing::debug!(path = %req.path, attempt, ?delay, "retrying");
            tokio::time::sleep(delay).await;
            attempt += 1;
        }
    }
}

/// Sends an ACL token as `X-Consul-Token` on every request that carries none of its own.
#[derive(Debug)]
pub struct Token<T> {
    inner: T,
    token: HeaderValue,
}

impl<T: Transport> Token<T> {
    /// Wraps `inner`; fails if the token is not a valid header value.
    pub fn new(inner: T, token: &str) -> Result<Self, Error> {
        let mut token = HeaderValue::from_str(token).map_err(|_| {
            Error::config("the ACL token contains characters not allowed in a header")
        })?;
        token.set_sensitive(true);
        Ok(Token { inner, token })
    }
}

#[async_trait]
impl<T: Transport> Transport for Token<T> {
    async fn send(&self, mut req: Request) -> Result<Response, Error> {
        if !req.headers.contains_key("x-consul-token") && !req.headers.contains_key("authorization")
        {
            req.headers.insert("x-consul-token", self.token.clone());
        }
        self.inner.send(req).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use http::{Method, StatusCode};

    use super::*;

    /// Answers from a script, recording what it was sent.
    #[derive(Debug, Default)]
    struct Script {
        answers: Mutex<Vec<Result<Response, Error>>>,
        seen: Mutex<Vec<Request>>,
    }

    #[async_trait]
    impl Transport for Script {
        async fn send(&self, req: Request) -> Result<Response, Error> {
            self.seen.lock().unwrap().push(req);
            self.answers.lock().unwrap().remove(0)
        }
    }

    fn script(answers: Vec<Result<Response, Error>>) -> Script {
        Script { answers: Mutex::new(answers), seen: Mutex::default() }
    }

    fn status(s: StatusCode) -> Result<Response, Error> {
        Ok(Response::new(s, ""))
    }

    #[tokio::test(start_paused = true)]
    async fn idempotent_reads_retry_5xx_then_succeed() {
        let r = Retry::new(
            script(vec![status(StatusCode::INTERNAL_SERVER_ERROR), status(StatusCode::OK)]),
            RetryPolicy::default(),
        );
        let resp = r.send(Request::new(Method::GET, "/v1/kv/a")).await.unwrap();
        assert_eq!(resp.status, StatusCode::OK);
        assert_eq!(r.inner.seen.lock().unwrap().len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn writes_are_not_replayed_after_an_ambiguous_failure() {
        let r = Retry::new(
            script(vec![Err(Error::ambiguous("reset")), status(StatusCode::OK)]),
            RetryPolicy::default(),
        );
        let err = r.send(Request::new(Method::PUT, "/v1/kv/a")).await.unwrap_err();
        assert!(err.is_ambiguous());
        assert_eq!(r.inner.seen.lock().unwrap().len(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn refused_connections_retry_for_any_method() {
        let r = Retry::new(
            script(vec![Err(Error::connect("refused")), status(StatusCode::OK)]),
            RetryPolicy::default(),
        );
        assert!(r.send(Request::new(Method::PUT, "/v1/kv/a")).await.is_ok());
    }

    #[tokio::test(start_paused = true)]
    async fn client_errors_are_never_retried() {
        let r = Retry::new(script(vec![status(StatusCode::BAD_REQUEST)]), RetryPolicy::default());
        let resp = r.send(Request::new(Method::GET, "/v1/kv/")).await.unwrap();
        assert_eq!(resp.status, StatusCode::BAD_REQUEST);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_stop_at_the_attempt_budget() {
        let answers = (0..10).map(|_| status(StatusCode::SERVICE_UNAVAILABLE)).collect();
        let r = Retry::new(script(answers), RetryPolicy { max_attempts: 3, ..Default::default() });
        let start = tokio::time::Instant::now();
        let resp = r.send(Request::new(Method::GET, "/v1/kv/a")).await.unwrap();
        assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(r.inner.seen.lock().unwrap().len(), 3);
        // Two backoffs: 50–100 ms then 100–200 ms.
        let waited = start.elapsed();
        assert!(waited >= Duration::from_millis(150) && waited <= Duration::from_millis(300));
    }

    #[tokio::test(start_paused = true)]
    async fn retry_after_is_honoured() {
        let mut busy = Response::new(StatusCode::TOO_MANY_REQUESTS, "");
        busy.headers.insert("retry-after", HeaderValue::from_static("3"));
        let r = Retry::new(
            script(vec![Ok(busy), status(StatusCode::OK)]),
            RetryPolicy { max_elapsed: Duration::from_secs(60), ..Default::default() },
        );
        let start = tokio::time::Instant::now();
        r.send(Request::new(Method::GET, "/v1/kv/a")).await.unwrap();
        assert!(start.elapsed() >= Duration::from_secs(3));
    }

    /// A server that takes its time before answering.
    #[derive(Debug)]
    struct Slow(Script, Duration);

    #[async_trait]
    impl Transport for Slow {
        async fn send(&self, req: Request) -> Result<Response, Error> {
            tokio::time::sleep(self.1).await;
            self.0.send(req).await
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_of_any_size_gives_up_instead_of_overflowing() {
        for hint in ["18446744073709551615", "99999999999999"] {
            let mut busy = Response::new(StatusCode::SERVICE_UNAVAILABLE, "");
            busy.headers.insert("retry-after", HeaderValue::from_str(hint).unwrap());
            // A slow first answer: the time already spent plus the hint overflowed a Duration.
            let slow = Slow(script(vec![Ok(busy), status(StatusCode::OK)]), Duration::from_secs(2));
            let r = Retry::new(slow, RetryPolicy::default());
            let resp = r.send(Request::new(Method::GET, "/v1/kv/a")).await.unwrap();
            assert_eq!(resp.status, StatusCode::SERVICE_UNAVAILABLE, "{hint:?}");
            assert!(crate::client::status_error(&resp).retry_after().is_some(), "{hint:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_retry_after_that_is_not_seconds_is_ignored() {
        for hint in ["-1", "soon", "", "Wed, 21 Oct 2015 07:28:00 GMT"] {
            let mut busy = Response::new(StatusCode::SERVICE_UNAVAILABLE, "");
            busy.headers.insert("retry-after", HeaderValue::from_str(hint).unwrap());
            let r = Retry::new(
                script(vec![Ok(busy.clone()), status(StatusCode::OK)]),
                RetryPolicy::default(),
            );
            let resp = r.send(Request::new(Method::GET, "/v1/kv/a")).await.unwrap();
            assert_eq!(resp.status, StatusCode::OK, "{hint:?}");
            assert!(crate::client::status_error(&busy).retry_after().is_none(), "{hint:?}");
        }
    }

    #[tokio::test]
    async fn the_token_layer_adds_the_header_unless_present() {
        let t = Token::new(script(vec![status(StatusCode::OK), status(StatusCode::OK)]), "s3cr3t")
            .unwrap();
        t.send(Request::new(Method::GET, "/v1/kv/a")).await.unwrap();
        let mut own = Request::new(Method::GET, "/v1/kv/a");
        own.headers.insert("x-consul-token", HeaderValue::from_static("mine"));
        t.send(own).await.unwrap();
        let seen = t.inner.seen.lock().unwrap();
        assert_eq!(seen[0].headers["x-consul-token"], "s3cr3t");
        assert_eq!(seen[1].headers["x-consul-token"], "mine");
        assert!(Token::new(script(vec![]), "bad\ntoken").is_err());
    }
}

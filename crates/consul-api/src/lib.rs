//! A typed async client for HashiCorp Consul's HTTP API: KV, transactions, sessions,
//! agent, catalog, health, status and events, blocking queries, and `Lock`/`Semaphore` that
//! interoperate with Go's `consul/api`.
//!
//! Everything goes through one [`Transport`]: [`HttpTransport`] talks to a real agent
//! (pooled HTTP/1.1, HTTPS behind the `tls` feature); any other implementation, such as
//! the in-process simulator of the `consul-sim` crate, plugs in the same way. Retries and
//! the ACL token are [`layers`] around a transport.
//!
//! ```no_run
//! use consul_api::{Client, QueryOptions};
//! use consul_api::session::SessionRequest;
//! use std::time::Duration;
//!
//! # async fn run() -> Result<(), consul_api::Error> {
//! let client = Client::from_env()?; // CONSUL_HTTP_ADDR, CONSUL_HTTP_TOKEN, …
//! client.kv().put("app/config", "v1").await?;
//! let pair = client.kv().get("app/config").await?;
//! assert_eq!(pair.unwrap().value.as_deref(), Some(&b"v1"[..]));
//! let (_, meta) = client.kv().get_with("app/config", &QueryOptions::default()).await?;
//!
//! // Block until the key changes (or 30 s pass).
//! let opts = QueryOptions::blocking(meta.last_index, Duration::from_secs(30));
//! let (_changed, _meta) = client.kv().get_with("app/config", &opts).await?;
//!
//! // A lease: a session with a TTL, renewed by its owner.
//! let session = client
//!     .session()
//!     .create(&SessionRequest { ttl: Some(Duration::from_secs(15)), ..Default::default() })
//!     .await?;
//! let held = client.kv().acquire("app/leader", "me", &session, 0).await?;
//! # let _ = held;
//!
//! // Go's `LockKey` and `SemaphorePrefix`: same keys and flags as Go's `consul/api`.
//! let leader = client.lock("app/leader2").acquire().await?;
//! leader.release().await?;
//! # Ok(())
//! # }
//! ```

pub mod agent;
pub mod catalog;
mod client;
mod contender;
mod env;
mod error;
pub mod event;
pub mod http;
pub mod kv;
pub mod layers;
pub mod lock;
pub mod semaphore;
pub mod session;
#[cfg(feature = "tls")]
mod tls;
pub mod transport;
pub mod txn;
pub mod types;
#[cfg(unix)]
mod unix;
pub mod watch;

#[cfg(test)]
mod decode_props;

pub use client::{Client, ClientBuilder};
pub use error::Error;
pub use http::{BasicAuth, HttpTransport};
pub use transport::{Request, Response, Transport};
pub use types::{Consistency, Index, QueryMeta, QueryOptions, RequestDefaults, SessionId};

/// A random duration in `[0, max]`, for backoff jitter. Not cryptographic.
pub(crate) fn jitter(max: std::time::Duration) -> std::time::Duration {
    use std::hash::{BuildHasher, Hasher};
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    if max.is_zero() {
        return max;
    }
    // RandomState is seeded randomly per process; hashing a counter gives a fresh value.
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(COUNTER.fetch_add(1, Ordering::Relaxed));
    let frac = (h.finish() >> 11) as f64 / (1u64 << 53) as f64;
    max.mul_f64(frac)
}

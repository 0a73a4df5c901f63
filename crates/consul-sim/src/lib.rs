//! An in-memory Consul: a sans-IO state machine with injected time, reachable in-process
//! through `consul_api::Transport` and over real HTTP, so any Consul client can use it.
//!
//! - [`core::Consul`] is the state machine: `handle(now, request)` answers or parks a
//!   blocking query; timers come out of `next_deadline()`. It never reads a clock.
//! - [`Sim`] drives it on tokio time and injects faults; [`SimTransport`] is the
//!   in-process `Transport`; [`Sim::serve`] speaks Consul's HTTP API on a socket.
//!
//! ```
//! use consul_sim::{Sim, SimConfig};
//! use consul_api::QueryOptions;
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), consul_api::Error> {
//! let sim = Sim::new(SimConfig::default());
//! let client = sim.client("app-1");
//! client.kv().put("app/config", "v1").await?;
//! let (pair, meta) = client.kv().get_with("app/config", &QueryOptions::default()).await?;
//! assert_eq!(pair.unwrap().value.as_deref(), Some(&b"v1"[..]));
//! assert!(meta.last_index.0 > 0);
//!
//! // The same store over HTTP, for any Consul client.
//! let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
//! let http = consul_api::Client::builder().address(server.url()).build()?;
//! assert_eq!(http.kv().get_raw("app/config", &QueryOptions::default()).await?.0.unwrap(), "v1");
//! server.shutdown().await;
//! # Ok(())
//! # }
//! ```
//!
//! consul-api's common cases, run on the sim (consul-api's own examples cannot run: it sits
//! below this crate):
//!
//! ```
//! use std::time::Duration;
//! use consul_api::watch::WatchOptions;
//! use consul_sim::{Sim, SimConfig};
//!
//! # #[tokio::main(flavor = "current_thread", start_paused = true)]
//! # async fn main() -> Result<(), consul_api::Error> {
//! let client = Sim::new(SimConfig::default()).client("app-1");
//!
//! // Reads without ceremony.
//! client.kv().put("app/config", "v1").await?;
//! let pair = client.kv().get("app/config").await?;
//! assert_eq!(pair.and_then(|p| p.value).as_deref(), Some(&b"v1"[..]));
//! assert!(client.kv().get("app/missing").await?.is_none());
//!
//! // A lock and a semaphore, as Go's `LockKey` and `SemaphorePrefix`.
//! let leader = client.lock("app/leader").acquire().await?;
//! assert!(leader.fencing_token().0 >= 1);
//! assert!(leader.release().await?, "released while held");
//! let workers = client.semaphore("app/workers", 2)?;
//! let (one, two) = (workers.acquire().await?, workers.acquire().await?);
//! assert!(workers.try_acquire().await?.is_none(), "two slots, both taken");
//! one.release().await?;
//! two.release().await?;
//!
//! // One watch primitive: the first read answers at once, the next one when the key changes.
//! let mut config = client.watch_key("app/config", WatchOptions::with_wait(Duration::from_secs(30)));
//! let (first, _) = config.next().await?;
//! assert_eq!(first.and_then(|p| p.value).as_deref(), Some(&b"v1"[..]));
//! let writer = client.clone();
//! tokio::spawn(async move { writer.kv().put("app/config", "v2").await });
//! let (changed, _) = config.next().await?;
//! assert_eq!(changed.and_then(|p| p.value).as_deref(), Some(&b"v2"[..]));
//! # Ok(())
//! # }
//! ```

// The request path answers bad input with an error, never a panic: no indexing or slicing
// that can go out of bounds, no unwrap or expect, outside tests.
#![cfg_attr(not(test), deny(clippy::indexing_slicing, clippy::unwrap_used, clippy::expect_used))]

pub mod core;
mod encoding;
pub mod persist;
mod server;
mod sim;
mod tls;
#[cfg(unix)]
mod unix_server;

pub use crate::core::{Consul, Outcome, SimConfig, SimRequest, SimResponse, SimTime};
pub use server::{ServeOptions, Server};
pub use sim::{Failure, Sim, SimTransport};
pub use tls::{TlsConfig, TlsError};
#[cfg(unix)]
pub use unix_server::UnixServer;

//! A typed async client for HashiCorp Consul's HTTP API: KV, transactions, sessions,
//! agent, catalog, health and status, blocking queries, and `Lock`/`Semaphore` that
//! interoperate with Go's `consul/api`.

mod error;
pub mod transport;

pub use error::Error;
pub use transport::{Request, Response, Transport};

//! HTTP over a unix domain socket (`CONSUL_HTTP_ADDR=unix:///path`, Consul's
//! `addresses { http = "unix:///path" }`): a hyper-util connector that dials the socket
//! whatever the request's URL says.

use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;

/// Connects every request to one socket path.
#[derive(Clone, Debug)]
pub(crate) struct UnixConnector(Arc<PathBuf>);

impl UnixConnector {
    pub(crate) fn new(path: PathBuf) -> Self {
        UnixConnector(Arc::new(path))
    }
}

type Connecting = Pin<Box<dyn Future<Output = std::io::Result<TokioIo<UnixStream>>> + Send>>;

impl tower_service::Service<http::Uri> for UnixConnector {
    type Response = TokioIo<UnixStream>;
    type Error = std::io::Error;
    type Future = Connecting;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _uri: http::Uri) -> Self::Future {
        let path = self.0.clone();
        Box::pin(async move {
            UnixStream::connect(path.as_path()).await.map(TokioIo::new).map_err(|e| {
                std::io::Error::new(e.kind(), format!("unix socket {}: {e}", path.display()))
            })
        })
    }
}

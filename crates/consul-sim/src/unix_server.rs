//! The same HTTP server on a unix domain socket, as Consul serves its API with
//! `addresses { http = "unix:///path" }`: plain HTTP, no per-address connection limit (a
//! socket's clients have no IP address to count by).

use std::os::unix::fs::FileTypeExt as _;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UnixListener;
use tokio::sync::watch;

use crate::server::{ServeOptions, serve_connection};
use crate::sim::Sim;

/// A running unix-socket server. Dropping it does not stop it; call
/// [`shutdown`](Self::shutdown), which also removes the socket file.
#[derive(Debug)]
pub struct UnixServer {
    path: PathBuf,
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

impl UnixServer {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// `unix:///path`, for a client's address setting (`CONSUL_HTTP_ADDR`).
    pub fn url(&self) -> String {
        format!("unix://{}", self.path.display())
    }

    /// Stops accepting connections, lets open ones finish, and removes the socket file.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
        let _ = std::fs::remove_file(&self.path);
    }
}

impl Sim {
    /// Serves Consul's HTTP API on a unix socket at `path`. A socket file left there by an
    /// earlier run is replaced, as Consul replaces it; any other file is an error. TLS
    /// ([`ServeOptions::tls`]) is not served on a socket.
    pub async fn serve_unix(
        &self,
        path: &Path,
        options: ServeOptions,
    ) -> std::io::Result<UnixServer> {
        if options.tls.is_some() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                "TLS is not served on a unix socket",
            ));
        }
        if let Ok(meta) = std::fs::symlink_metadata(path)
            && meta.file_type().is_socket()
        {
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        let (stop, stopped) = watch::channel(false);
        let task = tokio::spawn(accept_loop(self.clone(), listener, Arc::new(options), stopped));
        Ok(UnixServer { path: path.to_path_buf(), stop, task })
    }
}

/// Where a socket's client is said to come from (the fault injection's default client
/// name): a socket peer has no address.
const UNIX_PEER: std::net::SocketAddr =
    std::net::SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

async fn accept_loop(
    sim: Sim,
    listener: UnixListener,
    options: Arc<ServeOptions>,
    mut stopped: watch::Receiver<bool>,
) {
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.changed() => break,
            _ = sim.left() => break,
        };
        match accepted {
            Ok((stream, _)) => {
                let conn = serve_connection(
                    sim.clone(),
                    options.clone(),
                    UNIX_PEER,
                    stream,
                    stopped.clone(),
                );
                tokio::spawn(conn);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept on the unix socket failed; backing off");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                    _ = stopped.changed() => break,
                }
            }
        }
    }
}

//! A real Consul 1.8.7 dev agent for one test: started on free loopback ports, waited for
//! until it has a leader and has registered its own node, stopped (by its process id) and
//! its data removed when the guard drops.
//!
//! The binary comes from `CONSUL_BIN` or `target/consul/usr/bin/consul`, where
//! `cargo xtask consul` (run by `cargo xtask test` and CI) installs it.

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The node name every differential backend uses, so node names compare equal.
pub(crate) const NODE: &str = "conformance";

/// A running Consul dev agent.
pub(crate) struct RealConsul {
    child: Child,
    /// Its HTTP address.
    pub(crate) http: SocketAddr,
    dir: PathBuf,
}

/// Where the reference binary is, or why there is none.
pub(crate) fn binary() -> Result<PathBuf, String> {
    if let Some(p) = std::env::var_os("CONSUL_BIN").filter(|p| !p.is_empty()) {
        return Ok(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/consul/usr/bin/consul");
    if p.exists() {
        Ok(p)
    } else {
        Err(format!(
            "no Consul binary at {} and CONSUL_BIN is not set: run `cargo xtask consul` (or `cargo xtask test`)",
            p.display()
        ))
    }
}

pub(crate) fn free_port() -> u16 {
    free_ports::<1>()[0]
}

/// `N` distinct free loopback ports: all bound at once, so the kernel cannot hand out one
/// of them twice (picked one at a time, two could be the same).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> =
        (0..N).map(|_| TcpListener::bind("127.0.0.1:0").expect("a free loopback port")).collect();
    std::array::from_fn(|i| listeners[i].local_addr().expect("its address").port())
}

impl RealConsul {
    /// Starts a dev agent named [`NODE`], its UI off, and waits (≤ 30 s) until it serves reads with a
    /// leader. Panics with the agent's log if it does not come up: a test that needs Consul
    /// cannot go on without it.
    pub(crate) async fn start() -> RealConsul {
        RealConsul::start_with(&[]).await
    }

    /// Like [`start`](Self::start), with extra agent flags.
    pub(crate) async fn start_with(extra: &[&str]) -> RealConsul {
        // Another test may take a port between our choice and Consul's bind: try afresh.
        let mut last = String::new();
        for _ in 0..3 {
            match RealConsul::try_start(extra).await {
                Ok(consul) => return consul,
                Err(log) => last = log,
            }
        }
        panic!("Consul exited before it was ready, three times; the last log:\n{last}");
    }

    /// One start on fresh ports; `Err` with the log if Consul exits before it is ready.
    async fn try_start(extra: &[&str]) -> Result<RealConsul, String> {
        let bin = binary().unwrap_or_else(|e| panic!("{e}"));
        let dir = std::env::temp_dir().join(format!(
            "consul-ha-real-{}-{}",
            std::process::id(),
            free_port()
        ));
        std::fs::create_dir_all(&dir).expect("a temp dir for Consul");
        let log = std::fs::File::create(dir.join("consul.log")).expect("Consul's log file");
        let [http, serf_lan, serf_wan, server] = free_ports::<4>();
        let ports = format!(
            "ports {{ http = {http}, dns = -1, grpc = -1, serf_lan = {serf_lan}, serf_wan = {serf_wan}, server = {server} }}"
        );
        let child = Command::new(&bin)
            .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-node", NODE])
            .args(["-hcl", &ports])
            // The UI off, as on the sim, which has none: `/` is the agent's index page.
            .args(["-hcl", "ui = false"])
            .args(extra)
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log handle"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", bin.display()));
        let mut consul = RealConsul { child, http: SocketAddr::from(([127, 0, 0, 1], http)), dir };
        consul.wait_ready().await?;
        Ok(consul)
    }

    /// `http://127.0.0.1:port`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.http)
    }

    async fn wait_ready(&mut self) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = consul_api::Client::builder().address(self.url()).build().expect("client");
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Err(format!("Consul exited ({status}):\n{}", self.log()));
            }
            let leader = client.status().leader().await.unwrap_or_default();
            // Go's own test harness waits for exactly this: a leader, and the catalog index
            // past 1 with the agent's node (and its serfHealth check) registered.
            if !leader.is_empty()
                && let Ok((checks, meta)) =
                    client.health().node(NODE, &consul_api::QueryOptions::default()).await
                && meta.last_index.0 >= 2
                && checks.iter().any(|c| c.check_id == "serfHealth")
            {
                return Ok(());
            }
            assert!(Instant::now() < deadline, "Consul not ready after 30 s:\n{}", self.log());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// The agent's log so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("consul.log")).unwrap_or_default()
    }
}

impl Drop for RealConsul {
    fn drop(&mut self) {
        // `Child::kill` signals this very process id, never a name.
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

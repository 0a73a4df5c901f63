//! The `consul-ha` command: a narrated demo on the embedded sim, a dev Consul agent, real
//! cluster nodes, and status/route queries against any Consul.

/// `println!` that does not panic when stdout is gone (e.g. piped into `head`).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stdout(), $($arg)*);
    }};
}

mod demo;
mod events_log;
mod metrics;
mod ops;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};

/// Highly available, sharded services on Consul.
#[derive(Debug, Parser)]
#[command(name = "consul-ha", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Runs a cluster on the embedded sim, in virtual time, and narrates what happens.
    Demo(DemoArgs),
    /// Serves the sim's Consul HTTP API (like `consul agent -dev`).
    Agent(AgentArgs),
    /// Joins a Consul as a cluster member and shard holder until interrupted.
    Node(NodeArgs),
    /// Shows the leader, the members and the shard health.
    Status(StatusArgs),
    /// Shows the shard, primary and replicas of a key.
    Route(RouteArgs),
}

/// Options of `demo`.
#[derive(Debug, Args)]
pub(crate) struct DemoArgs {
    /// Seed of everything random: the same seed replays the same run.
    #[arg(long, default_value_t = 1)]
    pub(crate) seed: u64,
    /// Number of nodes (at least 2).
    #[arg(long, default_value_t = 5)]
    pub(crate) nodes: usize,
    /// Number of shards.
    #[arg(long, default_value_t = 64)]
    pub(crate) shards: u32,
    /// Copies of each shard.
    #[arg(long, default_value_t = 3)]
    pub(crate) replicas: u32,
    /// Print a machine-readable summary on stdout (the narration goes to stderr).
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `agent`.
#[derive(Debug, Args)]
pub(crate) struct AgentArgs {
    /// Development mode: in-memory (or `--data-dir`) single-node Consul. Required.
    #[arg(long)]
    pub(crate) dev: bool,
    /// Address to serve the HTTP API on: `IP:port`, or `unix:///path` for a unix socket
    /// (Consul's `addresses { http = "unix:///path" }`).
    #[arg(long, default_value = "127.0.0.1:8500")]
    pub(crate) http_addr: String,
    /// The agent's node name (Consul's `-node`; Consul defaults to the host name, this
    /// command to a fixed name so runs are repeatable).
    #[arg(long, default_value = "consul-ha-dev")]
    pub(crate) node: String,
    /// Run script checks (`Args`), like Consul's `-enable-script-checks`; off by default,
    /// as in Consul.
    #[arg(long)]
    pub(crate) enable_script_checks: bool,
    /// Keep the store in this directory: every write is logged and fsynced before it is
    /// answered (it survives a crash); a snapshot is taken every 4096 writes or 16 MiB of
    /// log, at start and on shutdown. A damaged file is refused, naming it.
    #[arg(long)]
    pub(crate) data_dir: Option<PathBuf>,
    /// Serve fault injection (`/v1/_sim/…`, the `X-Sim-Client` header). Off by default:
    /// anyone who can reach the port could partition the store.
    #[arg(long)]
    pub(crate) enable_fault_injection: bool,
    /// Most concurrent HTTP connections from one client IP (Consul's
    /// `limits.http_max_conns_per_client`); more are closed at once. 0: no limit.
    #[arg(long, default_value_t = 200)]
    pub(crate) http_max_conns_per_client: usize,
    /// Close a connection whose request headers do not arrive within this time (e.g.
    /// `30s`; `0s`: never, as Consul 1.8.7).
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub(crate) http_read_header_timeout: Duration,
    /// Shortest session TTL accepted (Consul's `session_ttl_min`); lower it for fast local
    /// failover tests.
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub(crate) session_ttl_min: Duration,
    /// Serve HTTPS with this PEM certificate (chain) instead of HTTP (Consul's
    /// `cert_file` with `ports { https = … }`); needs --tls-key.
    #[arg(long, requires = "tls_key")]
    pub(crate) tls_cert: Option<PathBuf>,
    /// PEM private key of --tls-cert (Consul's `key_file`).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_key: Option<PathBuf>,
    /// PEM file of the CA client certificates must be signed by (Consul's `ca_file`).
    #[arg(long, requires = "tls_cert")]
    pub(crate) tls_ca: Option<PathBuf>,
    /// Refuse, at the TLS handshake, a client without a certificate signed by --tls-ca
    /// (Consul's `verify_incoming_https`).
    #[arg(long, requires = "tls_ca")]
    pub(crate) verify_incoming: bool,
    /// Threads serving requests. The store is one lock, so one thread (the default) serves
    /// as many requests a second as several, without wake-ups that cross threads (three
    /// `cargo xtask loadtest` runs each on 2 cores: 1-op txn ratio to Consul 5.01 → 5.76 on
    /// average, GET and PUT the same within the runs' ±10 %).
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..=256))]
    pub(crate) threads: u16,
}

/// How to reach Consul: Consul's client environment (`CONSUL_HTTP_ADDR`,
/// `CONSUL_HTTP_TOKEN[_FILE]`, `CONSUL_HTTP_SSL[_VERIFY]`, `CONSUL_CACERT`, `CONSUL_CAPATH`,
/// `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY`, `CONSUL_TLS_SERVER_NAME`, `CONSUL_HTTP_AUTH`),
/// which these flags override.
#[derive(Debug, Args)]
pub(crate) struct ConsulArgs {
    /// Consul's HTTP address: `host:port`, `http://…`, `https://…` or `unix:///path`
    /// [default: CONSUL_HTTP_ADDR, else 127.0.0.1:8500].
    #[arg(long)]
    pub(crate) http_addr: Option<String>,
    /// ACL token [default: CONSUL_HTTP_TOKEN_FILE's content, else CONSUL_HTTP_TOKEN].
    #[arg(long)]
    pub(crate) token: Option<String>,
    /// The service (cluster) name.
    #[arg(long, default_value = "consul-ha")]
    pub(crate) service: String,
}

/// Options of `node`.
#[derive(Debug, Args)]
pub(crate) struct NodeArgs {
    #[command(flatten)]
    pub(crate) consul: ConsulArgs,
    /// This node's id (stable across restarts).
    #[arg(long)]
    pub(crate) id: String,
    /// Where this node serves, `host:port`.
    #[arg(long)]
    pub(crate) address: String,
    /// Failure domain.
    #[arg(long)]
    pub(crate) zone: Option<String>,
    /// Shard config file (JSON); used if Consul has none yet.
    #[arg(long)]
    pub(crate) config: Option<PathBuf>,
    /// Session and check TTL (e.g. `10s`).
    #[arg(long, default_value = "10s", value_parser = duration)]
    pub(crate) ttl: Duration,
    /// Lock-delay (e.g. `5s`).
    #[arg(long, default_value = "5s", value_parser = duration)]
    pub(crate) lock_delay: Duration,
    /// Simulated copy time of a new shard copy (this command holds no data itself).
    #[arg(long, default_value = "2s", value_parser = duration)]
    pub(crate) copy_time: Duration,
    /// Append this node's leadership terms to this file as JSON lines, stamped with the
    /// host's monotonic clock (for outside checkers).
    #[arg(long)]
    pub(crate) events_log: Option<PathBuf>,
    /// Serve Prometheus metrics at `http://<addr>/metrics` (e.g. `127.0.0.1:9464`).
    #[arg(long)]
    pub(crate) metrics_addr: Option<std::net::SocketAddr>,
}

/// Options of `status`.
#[derive(Debug, Args)]
pub(crate) struct StatusArgs {
    #[command(flatten)]
    pub(crate) consul: ConsulArgs,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// Options of `route`.
#[derive(Debug, Args)]
pub(crate) struct RouteArgs {
    #[command(flatten)]
    pub(crate) consul: ConsulArgs,
    /// The key to route.
    pub(crate) key: String,
    /// Print JSON.
    #[arg(long)]
    pub(crate) json: bool,
}

/// A member's health as one lower-case word.
pub(crate) fn health_name(h: ha_cluster::Health) -> &'static str {
    match h {
        ha_cluster::Health::Passing => "passing",
        ha_cluster::Health::Warning => "warning",
        ha_cluster::Health::Critical => "critical",
        ha_cluster::Health::Maintenance => "maintenance",
    }
}

/// The member table of `demo` and `status`: a header and one row per member with its load.
pub(crate) fn member_table(
    members: &[ha_cluster::Member],
    health: &prod_config::HealthSnapshot,
) -> Vec<String> {
    let row = |cells: [&str; 6]| {
        format!(
            "{:<12} {:<22} {:<8} {:<11} {:>9} {:>7}",
            cells[0], cells[1], cells[2], cells[3], cells[4], cells[5]
        )
    };
    let mut lines = vec![row(["MEMBER", "ADDRESS", "ZONE", "HEALTH", "PRIMARIES", "COPIES"])];
    for m in members {
        let load = health.nodes.iter().find(|l| l.node == m.id);
        let primaries = load.map_or(0, |l| l.primaries).to_string();
        let copies = load.map_or(0, |l| l.replicas).to_string();
        let zone = m.zone.as_deref().unwrap_or("-");
        lines.push(row([&m.id, &m.address, zone, health_name(m.health), &primaries, &copies]));
    }
    lines
}

fn duration(s: &str) -> Result<Duration, String> {
    consul_api::types::parse_duration(s).ok_or_else(|| format!("{s:?} is not a duration like 10s"))
}

fn main() -> ExitCode {
    // Consul spells its flags with one dash (`agent -dev -node n1`); accept those too.
    let args = std::env::args().map(|a| match a.as_str() {
        "-dev" | "-node" | "-enable-script-checks" => format!("-{a}"),
        _ => match a.strip_prefix("-node=") {
            Some(v) => format!("--node={v}"),
            None => a,
        },
    });
    let cli = match Cli::try_parse_from(args) {
        Ok(cli) => cli,
        Err(e) => {
            use clap::error::ErrorKind;
            if matches!(e.kind(), ErrorKind::DisplayHelp | ErrorKind::DisplayVersion) {
                print!("{e}");
                return ExitCode::SUCCESS;
            }
            // One line naming the problem; `--help` has the rest.
            // (clap lists missing arguments on the lines after the first: keep them.)
            let text = e.render().to_string();
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .take_while(|l| !l.starts_with("Usage:") && !l.starts_with("For more"))
                .filter(|l| !l.is_empty())
                .collect();
            let first =
                if lines.is_empty() { "error: invalid arguments".into() } else { lines.join(" ") };
            eprintln!("{first} (see consul-ha --help)");
            return ExitCode::from(2);
        }
    };
    let default_log = if matches!(cli.command, Command::Demo(_)) { "warn" } else { "info" };
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(default_log));
    tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr).init();

    let result = match cli.command {
        Command::Demo(args) => demo::run(&args),
        command => {
            let mut builder = match &command {
                Command::Agent(a) if a.threads == 1 => {
                    tokio::runtime::Builder::new_current_thread()
                }
                Command::Agent(a) => {
                    let mut b = tokio::runtime::Builder::new_multi_thread();
                    b.worker_threads(usize::from(a.threads));
                    b
                }
                _ => tokio::runtime::Builder::new_multi_thread(),
            };
            let rt = match builder.enable_all().build() {
                Ok(rt) => rt,
                Err(e) => {
                    eprintln!("error: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            };
            rt.block_on(async move {
                match command {
                    Command::Agent(a) => ops::agent(a).await,
                    Command::Node(a) => ops::node(a).await,
                    Command::Status(a) => ops::status(a).await,
                    Command::Route(a) => ops::route(a).await,
                    Command::Demo(_) => unreachable!("handled above"),
                }
            })
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

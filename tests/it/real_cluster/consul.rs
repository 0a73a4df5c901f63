//! A real Consul 1.8.7 cluster on 127.0.0.1: three servers (`bootstrap_expect = 3`, their own
//! data dirs and ports) and client agents, one per consul-ha member, as in production.
//! Short sessions are allowed (`session_ttl_min`) so a failover takes seconds, and raft runs
//! at its fastest timing (`raft_multiplier = 1`).

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use consul_api::{Client, QueryOptions};

use super::netns::Netns;
use super::procs::{Proc, free_port};

/// The shortest session TTL the agents accept.
pub(crate) const SESSION_TTL_MIN: &str = "1s";

/// One Consul agent.
pub(crate) struct Agent {
    /// Its node name.
    pub(crate) name: String,
    /// Its HTTP port on 127.0.0.1.
    pub(crate) http: u16,
    /// Its server RPC port (what `/v1/status/leader` names for a server).
    pub(crate) server_port: u16,
    /// The process.
    pub(crate) proc: Proc,
    /// Whether it runs in a network namespace (its HTTP API is reachable only from there).
    pub(crate) isolated: bool,
}

impl Agent {
    /// A client for its HTTP API.
    pub(crate) fn client(&self) -> Client {
        Client::builder()
            .address(format!("http://127.0.0.1:{}", self.http))
            .build()
            .expect("client")
    }
}

/// The servers and the client agents.
pub(crate) struct ConsulCluster {
    /// The three servers.
    pub(crate) servers: Vec<Agent>,
    /// One client agent per member.
    pub(crate) clients: Vec<Agent>,
}

/// Picks distinct free ports.
struct Ports(HashSet<u16>);

impl Ports {
    fn next(&mut self) -> u16 {
        loop {
            let p = free_port();
            if self.0.insert(p) {
                return p;
            }
        }
    }
}

/// Where the cluster's agents live: all on 127.0.0.1, or on a veth's host end with one
/// client agent inside a network namespace.
#[derive(Clone, Copy)]
pub(crate) struct Placement<'a> {
    /// The namespace and the index of the client agent that runs in it.
    pub(crate) isolated: Option<(&'a Netns, usize)>,
}

/// Where one agent binds, where it finds the servers, and the namespace it runs in.
struct Net<'a> {
    bind: &'a str,
    join_ip: &'a str,
    ns: Option<&'a Netns>,
}

fn agent(
    dir: &Path,
    name: &str,
    server: bool,
    join: &[u16],
    ports: &mut Ports,
    net: Net<'_>,
) -> Agent {
    let Net { bind, join_ip, ns } = net;
    let data = dir.join(name);
    std::fs::create_dir_all(&data).expect("agent data dir");
    let http = ports.next();
    let server_port = ports.next();
    let serf_lan =
        if server { join[name[1..].parse::<usize>().expect("s<N>") - 1] } else { ports.next() };
    let config = serde_json::json!({
        "node_name": name,
        "data_dir": data,
        "bind_addr": bind,
        "client_addr": "127.0.0.1",
        "server": server,
        "bootstrap_expect": if server { 3 } else { 0 },
        "retry_join": join.iter().map(|p| format!("{join_ip}:{p}")).collect::<Vec<_>>(),
        "retry_interval": "1s",
        "ports": {
            "http": http, "dns": -1, "grpc": -1, "serf_lan": serf_lan,
            "serf_wan": ports.next(), "server": server_port,
        },
        "session_ttl_min": SESSION_TTL_MIN,
        "performance": { "raft_multiplier": 1 },
        "disable_update_check": true,
        "log_level": "info",
    });
    let mut config = config;
    if !server {
        config.as_object_mut().expect("object").remove("bootstrap_expect");
    }
    let file = dir.join(format!("{name}.json"));
    std::fs::write(&file, serde_json::to_vec_pretty(&config).expect("json")).expect("agent config");
    let args = vec!["agent".into(), "-config-file".into(), file.display().to_string()];
    let consul = crate::real_consul::binary().unwrap_or_else(|e| panic!("{e}"));
    let log = dir.join(format!("{name}.log"));
    let proc = match ns {
        Some(ns) => {
            let mut all: Vec<String> =
                ["netns", "exec", &ns.name].iter().map(|x| x.to_string()).collect();
            all.push(consul.display().to_string());
            all.extend(args);
            Proc::new(name, Path::new("ip"), all, log)
        }
        None => Proc::new(name, &consul, args, log),
    };
    Agent { name: name.into(), http, server_port, proc, isolated: ns.is_some() }
}

impl ConsulCluster {
    /// Starts three servers and `clients` client agents (`c1`…) under `dir`, and waits until
    /// every agent sees the raft leader and the catalog lists every node.
    pub(crate) async fn start(dir: &Path, clients: usize, at: Placement<'_>) -> ConsulCluster {
        let mut ports = Ports(HashSet::new());
        let serf: Vec<u16> = (0..3).map(|_| ports.next()).collect();
        let host = at.isolated.map_or("127.0.0.1".to_string(), |(ns, _)| ns.host_ip.clone());
        let mut servers: Vec<Agent> = (1..=3)
            .map(|i| {
                let net = Net { bind: &host, join_ip: &host, ns: None };
                agent(dir, &format!("s{i}"), true, &serf, &mut ports, net)
            })
            .collect();
        let mut clients: Vec<Agent> = (1..=clients)
            .map(|i| {
                let name = format!("c{i}");
                match at.isolated {
                    Some((ns, k)) if k == i - 1 => {
                        let net = Net { bind: &ns.inner_ip, join_ip: &host, ns: Some(ns) };
                        agent(dir, &name, false, &serf, &mut ports, net)
                    }
                    _ => {
                        let net = Net { bind: &host, join_ip: &host, ns: None };
                        agent(dir, &name, false, &serf, &mut ports, net)
                    }
                }
            })
            .collect();
        for a in servers.iter_mut().chain(clients.iter_mut()) {
            a.proc.start();
        }
        let cluster = ConsulCluster { servers, clients };
        cluster.wait_ready(Duration::from_secs(60)).await;
        cluster
    }

    /// The index of the raft leader among the servers, as the first answering server says.
    pub(crate) async fn raft_leader(&self) -> Option<usize> {
        for s in &self.servers {
            if let Ok(addr) = s.client().status().leader().await
                && !addr.is_empty()
            {
                return self
                    .servers
                    .iter()
                    .position(|x| addr.ends_with(&format!(":{}", x.server_port)));
            }
        }
        None
    }

    /// A client for the first server that answers (the checker reads through these).
    pub(crate) fn server_addrs(&self) -> Vec<String> {
        self.servers.iter().map(|s| format!("http://127.0.0.1:{}", s.http)).collect()
    }

    /// Waits until every agent knows the leader and the catalog lists every node.
    pub(crate) async fn wait_ready(&self, limit: Duration) {
        let names: HashSet<String> =
            self.servers.iter().chain(&self.clients).map(|a| a.name.clone()).collect();
        let deadline = Instant::now() + limit;
        for a in self.servers.iter().chain(&self.clients).filter(|a| !a.isolated) {
            let client = a.client();
            loop {
                let leader = client.status().leader().await.unwrap_or_default();
                let nodes = client
                    .catalog()
                    .nodes(&QueryOptions::default())
                    .await
                    .map(|(n, _)| n.into_iter().map(|n| n.node).collect::<HashSet<_>>())
                    .unwrap_or_default();
                if !leader.is_empty() && nodes.is_superset(&names) {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "Consul agent {} not ready after {limit:?} (leader {leader:?}, nodes {nodes:?}):\n{}",
                    a.name,
                    tail(&a.proc.log(), 30)
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// The last `n` lines of `text`.
pub(crate) fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A fresh directory for one scenario's data and logs, kept on failure for the post-mortem
/// and removed on success.
pub(crate) fn scenario_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("real-cluster-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scenario dir");
    dir
}

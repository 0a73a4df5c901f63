//! `consul-ha agent -dev` as a process: crashes, restarts, resource exhaustion and hostile
//! clients. Every loop here is bounded in count and time; every process is stopped by its
//! handle when the test ends.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::cli::binary;

/// An agent process, killed (SIGKILL) when dropped.
struct Agent {
    child: Child,
    addr: SocketAddr,
    stdout: PathBuf,
    stderr: PathBuf,
}

impl Drop for Agent {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Agent {
    /// Starts `consul-ha agent -dev` on a free port with `extra` arguments, under
    /// `prlimit --nofile=N` if `nofile` is set; waits until it answers.
    fn start(dir: &Path, extra: &[&str], nofile: Option<u32>) -> Agent {
        let addr: SocketAddr = {
            let l = TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap()
        };
        let n = std::fs::read_dir(dir).map_or(0, |d| d.count());
        let stdout = dir.join(format!("agent-{n}.out"));
        let stderr = dir.join(format!("agent-{n}.err"));
        let addr_arg = addr.to_string();
        let mut args = vec!["agent", "-dev", "--http-addr", addr_arg.as_str()];
        args.extend_from_slice(extra);
        let mut cmd = match nofile {
            Some(n) => {
                let mut c = Command::new("prlimit");
                c.arg(format!("--nofile={n}")).arg(binary());
                c
            }
            None => Command::new(binary()),
        };
        let child = cmd
            .args(&args)
            .env("RUST_LOG", "info")
            .env("NO_COLOR", "1")
            .stdout(Stdio::from(std::fs::File::create(&stdout).unwrap()))
            .stderr(Stdio::from(std::fs::File::create(&stderr).unwrap()))
            .spawn()
            .expect("spawns");
        let agent = Agent { child, addr, stdout, stderr };
        let start = Instant::now();
        while http(addr, "GET", "/v1/status/leader", "").is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "agent: {}", agent.stderr());
            std::thread::sleep(Duration::from_millis(50));
        }
        agent
    }

    /// SIGTERM, then waits (bounded) for a clean exit: the final snapshot is written.
    fn stop(mut self) {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(sent.success());
        let start = Instant::now();
        while self.child.try_wait().unwrap().is_none() {
            assert!(start.elapsed() < Duration::from_secs(10), "no exit after SIGTERM");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    fn stdout(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// CPU time (user + system) the process used so far, in clock ticks.
    fn cpu_ticks(&self) -> u64 {
        let stat = std::fs::read_to_string(format!("/proc/{}/stat", self.child.id())).unwrap();
        let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
        fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
    }
}

/// One request on a new connection: (status, body), or None if it failed. The agent is a dev
/// agent: as `consul agent -dev`, it indents its JSON answers and ends them with a newline.
fn http(addr: SocketAddr, method: &str, path: &str, body: &str) -> Option<(u16, String)> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(10))).ok()?;
    let len = body.len();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {len}\r\n\r\n{body}"
    );
    s.write_all(req.as_bytes()).ok()?;
    let mut out = String::new();
    s.read_to_string(&mut out).ok()?;
    let status = out.get(9..12)?.parse().ok()?;
    Some((status, out.split_once("\r\n\r\n").map_or("", |(_, b)| b).to_string()))
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("consul-ha-it-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[test]
fn every_acknowledged_write_survives_sigkill() {
    let dir = temp_dir("sigkill");
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let agent = Agent::start(&dir, &["--data-dir", data_arg], None);
    for i in 0..300 {
        let put = http(agent.addr, "PUT", &format!("/v1/kv/k{i}"), &format!("v{i}"));
        assert_eq!(put, Some((200, "true\n".into())), "write {i}");
    }
    let (status, session) = http(agent.addr, "PUT", "/v1/session/create", "{}").unwrap();
    assert_eq!(status, 200);
    drop(agent); // SIGKILL, right after the last answer
    let agent = Agent::start(&dir, &["--data-dir", data_arg], None);
    for i in 0..300 {
        let got = http(agent.addr, "GET", &format!("/v1/kv/k{i}?raw"), "");
        assert_eq!(got, Some((200, format!("v{i}"))), "k{i} after SIGKILL");
    }
    let id: serde_json::Value = serde_json::from_str(&session).unwrap();
    let id = id["ID"].as_str().unwrap();
    let (status, info) = http(agent.addr, "GET", &format!("/v1/session/info/{id}"), "").unwrap();
    assert!(status == 200 && info.contains(id), "the session survives: {info}");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_tampered_snapshot_stops_the_agent_with_a_message_naming_it() {
    let dir = temp_dir("tamper");
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let agent = Agent::start(&dir, &["--data-dir", data_arg], None);
    assert_eq!(http(agent.addr, "PUT", "/v1/kv/money", "100"), Some((200, "true\n".into())));
    agent.stop();
    let file = data.join("consul-sim.snapshot");
    let text = std::fs::read_to_string(&file).unwrap();
    // 100 → 999 (base64), same length: only the checksum can tell.
    assert!(text.contains("MTAw"), "{text}");
    std::fs::write(&file, text.replacen("MTAw", "OTk5", 1)).unwrap();
    let out = Command::new(binary())
        .args(["agent", "-dev", "--http-addr", "127.0.0.1:0", "--data-dir", data_arg])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "started on a tampered snapshot");
    assert!(err.contains(file.to_str().unwrap()) && err.contains("checksum"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_data_dir_restarted_under_another_node_name_works() {
    let dir = temp_dir("rename");
    let data = dir.join("data");
    let data_arg = data.to_str().unwrap();
    let agent = Agent::start(&dir, &["--data-dir", data_arg, "--node", "alpha"], None);
    assert_eq!(http(agent.addr, "PUT", "/v1/kv/k", "v"), Some((200, "true\n".into())));
    let reg = r#"{"Name":"web","Port":80}"#;
    assert_eq!(http(agent.addr, "PUT", "/v1/agent/service/register", reg).map(|r| r.0), Some(200));
    assert_eq!(http(agent.addr, "PUT", "/v1/session/create", "{}").map(|r| r.0), Some(200));
    drop(agent);
    let agent = Agent::start(&dir, &["--data-dir", data_arg, "--node", "beta"], None);
    let (status, me) = http(agent.addr, "GET", "/v1/agent/self", "").unwrap();
    assert!(status == 200 && me.contains("\"beta\""), "{status} {me}");
    assert_eq!(http(agent.addr, "GET", "/v1/kv/k?raw", ""), Some((200, "v".into())));
    let reg = r#"{"Name":"api","Port":81}"#;
    assert_eq!(http(agent.addr, "PUT", "/v1/agent/service/register", reg).map(|r| r.0), Some(200));
    assert_eq!(http(agent.addr, "PUT", "/v1/session/create", "{}").map(|r| r.0), Some(200));
    // As Consul 1.8.7 on a data dir (same node ID): the node is renamed in place, the
    // agent's services follow it, the old name's sessions are gone.
    let (_, nodes) = http(agent.addr, "GET", "/v1/catalog/nodes", "").unwrap();
    assert!(!nodes.contains("\"alpha\"") && nodes.contains("\"beta\""), "{nodes}");
    let (_, services) = http(agent.addr, "GET", "/v1/agent/services", "").unwrap();
    assert!(services.contains("\"web\"") && services.contains("\"api\""), "{services}");
    let (_, sessions) = http(agent.addr, "GET", "/v1/session/node/alpha", "").unwrap();
    assert_eq!(sessions, "[]\n");
    assert!(
        agent.stderr().is_empty() || !agent.stderr().contains("panicked"),
        "{}",
        agent.stderr()
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn fault_injection_is_off_unless_asked_for_and_says_so() {
    let dir = temp_dir("faults");
    let agent = Agent::start(&dir, &[], None);
    assert_eq!(http(agent.addr, "PUT", "/v1/_sim/leader?lost=true", "").map(|r| r.0), Some(404));
    assert_eq!(http(agent.addr, "GET", "/v1/status/leader", "").map(|r| r.0), Some(200));
    assert!(agent.stdout().contains("fault injection: off"), "{}", agent.stdout());
    drop(agent);
    let agent = Agent::start(&dir, &["--enable-fault-injection"], None);
    assert!(agent.stdout().contains("fault injection: ON"), "{}", agent.stdout());
    assert_eq!(http(agent.addr, "PUT", "/v1/_sim/leader?lost=true", "").map(|r| r.0), Some(200));
    assert_eq!(http(agent.addr, "GET", "/v1/kv/x", "").map(|r| r.0), Some(500));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Opens a connection from `source` and asks for the leader; true if answered 200.
fn served(addr: SocketAddr, s: &mut TcpStream) -> bool {
    let _ = addr;
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    if s.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 256];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && buf[..n].starts_with(b"HTTP/1.1 200"))
}

/// A connection from 127.0.0.2 (the kernel routes all of 127/8 to loopback).
fn connect_from_127_0_0_2(addr: SocketAddr) -> TcpStream {
    // std cannot bind before connect; a tokio socket can, then it is handed over.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    rt.block_on(async {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        let s = s.connect(addr).await.unwrap();
        s.into_std().unwrap()
    })
}

#[test]
fn the_201st_connection_from_one_address_is_closed_while_others_are_served() {
    let dir = temp_dir("cap");
    let agent = Agent::start(&dir, &[], None);
    let mut open = Vec::new();
    for i in 0..200 {
        let mut s = TcpStream::connect(agent.addr).unwrap();
        assert!(served(agent.addr, &mut s), "connection {i}");
        open.push(s);
    }
    let mut extra = TcpStream::connect(agent.addr).unwrap();
    assert!(!served(agent.addr, &mut extra), "the 201st connection is closed, as Consul");
    let mut other = connect_from_127_0_0_2(agent.addr);
    other.set_nonblocking(false).unwrap();
    assert!(served(agent.addr, &mut other), "127.0.0.2 has its own 200");
    assert!(served(agent.addr, &mut open[0]), "open connections go on");
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn running_out_of_file_descriptors_backs_off_and_recovers() {
    let dir = temp_dir("emfile");
    let agent = Agent::start(&dir, &[], Some(48));
    // Far more connections than descriptors: accept fails with EMFILE.
    let mut held = Vec::new();
    for _ in 0..80 {
        if let Ok(s) = TcpStream::connect_timeout(&agent.addr, Duration::from_secs(1)) {
            held.push(s);
        }
    }
    std::thread::sleep(Duration::from_millis(500));
    let before = agent.cpu_ticks();
    std::thread::sleep(Duration::from_secs(2));
    let used = agent.cpu_ticks() - before;
    // A spinning accept loop burns both seconds (about 200 ticks).
    assert!(used < 40, "{used} ticks of CPU in 2 s while out of descriptors");
    let logged = agent.stderr().matches("accept failed").count();
    assert!((1..=3).contains(&logged), "{logged} accept failures logged: {}", agent.stderr());
    drop(held);
    let start = Instant::now();
    while http(agent.addr, "GET", "/v1/status/leader", "").map(|r| r.0) != Some(200) {
        assert!(start.elapsed() < Duration::from_secs(10), "not serving again");
        std::thread::sleep(Duration::from_millis(100));
    }
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_slowloris_connection_is_closed_after_the_configured_header_timeout() {
    let dir = temp_dir("slowloris");
    let agent = Agent::start(&dir, &["--http-read-header-timeout", "1s"], None);
    let mut slow = TcpStream::connect(agent.addr).unwrap();
    slow.write_all(b"GET /v1/status/leader HTTP/1.1\r\nHost: x\r\n").unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 64];
    let n = slow.read(&mut buf).unwrap_or(0);
    assert_eq!(n, 0, "closed without an answer");
    assert!(start.elapsed() < Duration::from_secs(5), "closed after {:?}", start.elapsed());
    assert_eq!(http(agent.addr, "GET", "/v1/status/leader", "").map(|r| r.0), Some(200));
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

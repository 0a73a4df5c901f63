//! `cargo xtask loadtest`: the sim's HTTP server (`consul-ha agent -dev`, release build) and a
//! real Consul 1.8.7 dev agent under the same load, in one run; prints each figure for both
//! and the ratio ours / Consul.
//!
//! Load: wrk (Debian's package, installed if missing) with 2 threads and 16 connections for
//! KV GET, KV PUT and 1-op transactions. Both agents run side by side and the throughput is
//! measured in rounds: each round runs the three loads on the sim, then on Consul, so a
//! slow minute of the host falls on both; each round gives a ratio, and the table shows the
//! median rate of each agent and the median ratio (with the lowest and highest). Then, one
//! agent after the other: wake-ups of parked blocking queries, a blocking query's deadline
//! under writes to other keys, and 200,000 keys (~25-byte values) loaded by 64-op
//! transactions, the resident memory each key costs, and the latency of a 1-op transaction
//! with all of them stored. `LOADTEST_SECONDS` sets each wrk run (default 5),
//! `LOADTEST_ROUNDS` the rounds (default 3).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::consul;

const KEYS: usize = 200_000;
// Under both agents' default cap of 200 connections per client address.
const WATCHERS: usize = 150;

struct Agent {
    name: &'static str,
    child: Child,
    addr: SocketAddr,
}

impl Drop for Agent {
    fn drop(&mut self) {
        // Stopped by its own process id.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map_or(0, |a| a.port())
}

/// One figure for both agents.
struct Row {
    what: &'static str,
    unit: &'static str,
    ours: f64,
    consul: f64,
    /// True when more is better (throughput), false when less is (latency, memory).
    more_is_better: bool,
    /// For figures measured in rounds: the median, lowest and highest ratio of a round.
    rounds: Option<[f64; 3]>,
}

pub(crate) fn run(root: &Path) -> Result<(), String> {
    let consul_bin = consul::ensure(root)?;
    ensure_wrk()?;
    println!("xtask: == building consul-ha (release)");
    let status = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--release", "-p", "consul-ha"])
        .current_dir(root)
        .status()
        .map_err(|e| format!("cargo build: {e}"))?;
    if !status.success() {
        return Err("cargo build --release -p consul-ha failed".into());
    }
    let target = std::env::var("CARGO_TARGET_DIR").map_or_else(|_| root.join("target"), Into::into);
    let sim_bin = target.join("release/consul-ha");
    let seconds: u64 =
        std::env::var("LOADTEST_SECONDS").ok().and_then(|s| s.parse().ok()).unwrap_or(5);
    let rounds: usize =
        std::env::var("LOADTEST_ROUNDS").ok().and_then(|s| s.parse().ok()).unwrap_or(3).max(1);
    let dir = root.join("target/loadtest");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).map_err(|e| e.to_string())?;

    let sim = start_sim(&sim_bin)?;
    let consul = start_consul(&consul_bin)?;
    println!("xtask: == {} on {}, {} on {}", sim.name, sim.addr, consul.name, consul.addr);
    let loads = Loads::new(&dir)?;
    // rates[agent][load][round]
    let mut rates = [[vec![], vec![], vec![]], [vec![], vec![], vec![]]];
    for round in 0..rounds {
        for (a, agent) in [&sim, &consul].into_iter().enumerate() {
            for (l, rate) in loads.run(agent, seconds)?.into_iter().enumerate() {
                rates[a][l].push(rate);
            }
        }
        println!("xtask: round {} of {rounds} done", round + 1);
    }
    let mut figures: Vec<[f64; 5]> = Vec::new();
    for agent in [&sim, &consul] {
        println!("xtask: == the rest on {}", agent.name);
        figures.push(measure(agent)?);
    }
    let (ours, theirs) = (figures[0], figures[1]);
    let throughput = |l: usize, what| {
        let ratios = rates[0][l].iter().zip(&rates[1][l]).map(|(a, b)| a / b).collect();
        let [ratio, low, high] = spread(ratios);
        Row {
            what,
            unit: "req/s",
            ours: spread(rates[0][l].clone())[0],
            consul: spread(rates[1][l].clone())[0],
            more_is_better: true,
            rounds: Some([ratio, low, high]),
        }
    };
    let once = |what, unit, ours: f64, consul: f64| Row {
        what,
        unit,
        ours,
        consul,
        more_is_better: false,
        rounds: None,
    };
    let rows = [
        throughput(0, "KV GET"),
        throughput(1, "KV PUT"),
        throughput(2, "1-op txn"),
        once("wake 150 parked watchers", "ms", ours[0], theirs[0]),
        once("blocking wait=2s under other writes", "s", ours[1], theirs[1]),
        once("RSS per stored key (200k keys)", "B", ours[2], theirs[2]),
        once("1-op txn latency, 200k keys stored (median)", "ms", ours[3], theirs[3]),
        once("load 200k keys by 64-op txns", "s", ours[4], theirs[4]),
    ];
    println!(
        "| figure | consul-ha agent -dev | Consul 1.8.7 -dev | ours / Consul ({rounds} rounds: median, lowest–highest) |"
    );
    println!("|---|---|---|---|");
    for r in rows {
        let (ratio, range) = match r.rounds {
            Some([m, lo, hi]) => (m, format!(" ({lo:.2}–{hi:.2})")),
            None if r.consul > 0.0 => (r.ours / r.consul, String::new()),
            None => (f64::NAN, String::new()),
        };
        let better = if r.more_is_better { ratio >= 1.0 } else { ratio <= 1.0 };
        println!(
            "| {} | {:.1} {} | {:.1} {} | {:.2}{}{} |",
            r.what,
            r.ours,
            r.unit,
            r.consul,
            r.unit,
            ratio,
            range,
            if better { "" } else { " (worse)" }
        );
    }
    Ok(())
}

/// The median, lowest and highest of `xs` (not empty).
fn spread(mut xs: Vec<f64>) -> [f64; 3] {
    xs.sort_by(f64::total_cmp);
    let n = xs.len();
    let median = if n % 2 == 1 { xs[n / 2] } else { (xs[n / 2 - 1] + xs[n / 2]) / 2.0 };
    [median, xs[0], xs[n - 1]]
}

fn ensure_wrk() -> Result<(), String> {
    if Command::new("wrk").arg("--version").output().is_ok() {
        return Ok(());
    }
    println!("xtask: installing wrk (Debian package)");
    let ok = Command::new("apt-get")
        .args(["install", "-y", "-q", "wrk"])
        .status()
        .is_ok_and(|s| s.success())
        || (Command::new("apt-get").args(["update", "-q"]).status().is_ok_and(|s| s.success())
            && Command::new("apt-get")
                .args(["install", "-y", "-q", "wrk"])
                .status()
                .is_ok_and(|s| s.success()));
    if ok { Ok(()) } else { Err("cannot install wrk with apt-get".into()) }
}

fn start_sim(bin: &Path) -> Result<Agent, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let child = Command::new(bin)
        .args(["agent", "-dev", "--http-addr", &addr.to_string()])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let agent = Agent { name: "consul-ha agent -dev", child, addr };
    wait_ready(&agent)?;
    Ok(agent)
}

fn start_consul(bin: &Path) -> Result<Agent, String> {
    let addr = SocketAddr::from(([127, 0, 0, 1], free_port()));
    let ports = format!(
        "ports {{ http = {}, dns = -1, grpc = -1, serf_lan = {}, serf_wan = {}, server = {} }}",
        addr.port(),
        free_port(),
        free_port(),
        free_port()
    );
    let child = Command::new(bin)
        .args(["agent", "-dev", "-bind", "127.0.0.1", "-client", "127.0.0.1", "-log-level", "warn"])
        .args(["-hcl", &ports])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    let agent = Agent { name: "Consul 1.8.7 agent -dev", child, addr };
    wait_ready(&agent)?;
    Ok(agent)
}

fn wait_ready(agent: &Agent) -> Result<(), String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    while Instant::now() < deadline {
        if let Ok((200, body)) = request(agent.addr, "GET", "/v1/status/leader", b"")
            && body.len() > 2
        {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!("{} did not come up on {}", agent.name, agent.addr))
}

/// One request on its own connection: (status, body).
fn request(
    addr: SocketAddr,
    method: &str,
    target: &str,
    body: &[u8],
) -> Result<(u16, Vec<u8>), String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(60))).map_err(|e| e.to_string())?;
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: loadtest\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).and_then(|_| s.write_all(body)).map_err(|e| e.to_string())?;
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).map_err(|e| e.to_string())?;
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no complete response")?;
    let status = String::from_utf8_lossy(&buf[..split])
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or("no status line")?;
    Ok((status, buf[split + 4..].to_vec()))
}

/// A keep-alive connection for request/response latency (small bodies with Content-Length).
struct Conn {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl Conn {
    fn open(addr: SocketAddr) -> Result<Conn, String> {
        let s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
        s.set_nodelay(true).map_err(|e| e.to_string())?;
        let writer = s.try_clone().map_err(|e| e.to_string())?;
        Ok(Conn { reader: BufReader::new(s), writer })
    }

    fn send(&mut self, method: &str, target: &str, body: &[u8]) -> Result<u16, String> {
        let head = format!(
            "{method} {target} HTTP/1.1\r\nHost: loadtest\r\nContent-Length: {}\r\n\r\n",
            body.len()
        );
        self.writer
            .write_all(head.as_bytes())
            .and_then(|_| self.writer.write_all(body))
            .map_err(|e| e.to_string())?;
        let mut line = String::new();
        self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
        let status = line.split(' ').nth(1).and_then(|s| s.parse().ok()).ok_or("no status")?;
        let (mut length, mut chunked) = (0usize, false);
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
            if line == "\r\n" || line.is_empty() {
                break;
            }
            if let Some((k, v)) = line.split_once(':') {
                if k.eq_ignore_ascii_case("content-length") {
                    length = v.trim().parse().unwrap_or(0);
                } else if k.eq_ignore_ascii_case("transfer-encoding") {
                    chunked = v.trim().eq_ignore_ascii_case("chunked");
                }
            }
        }
        if !chunked {
            let mut body = vec![0; length];
            self.reader.read_exact(&mut body).map_err(|e| e.to_string())?;
            return Ok(status);
        }
        // Go sends larger bodies chunked: `<hex size>\r\n<bytes>\r\n`, ended by a 0 chunk.
        loop {
            line.clear();
            self.reader.read_line(&mut line).map_err(|e| e.to_string())?;
            let size = usize::from_str_radix(line.trim(), 16)
                .map_err(|_| format!("bad chunk size {line:?}"))?;
            let mut chunk = vec![0; size + 2];
            self.reader.read_exact(&mut chunk).map_err(|e| e.to_string())?;
            if size == 0 {
                return Ok(status);
            }
        }
    }
}

fn rss_bytes(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map_or(0.0, |kb| kb * 1024.0)
}

fn wrk(url: &str, script: Option<&Path>, seconds: u64) -> Result<f64, String> {
    let mut cmd = Command::new("wrk");
    cmd.args(["-t2", "-c16", &format!("-d{seconds}s")]);
    if let Some(s) = script {
        cmd.arg("-s").arg(s);
    }
    let out = cmd.arg(url).output().map_err(|e| format!("wrk: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    if text.contains("Non-2xx") {
        return Err(format!("wrk saw errors against {url}:\n{text}"));
    }
    text.lines()
        .find_map(|l| l.strip_prefix("Requests/sec:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| format!("wrk printed no rate:\n{text}"))
}

fn txn_body(ops: impl Iterator<Item = String>) -> Vec<u8> {
    let ops: Vec<String> = ops
        .map(|k| format!(r#"{{"KV":{{"Verb":"set","Key":"{k}","Value":"dmFsdWUtMDAwMDAwMDAwMDAwMDAwMDAwMA=="}}}}"#))
        .collect();
    format!("[{}]", ops.join(",")).into_bytes()
}

/// The wrk scripts of the three throughput loads.
struct Loads {
    put: std::path::PathBuf,
    txn: std::path::PathBuf,
}

impl Loads {
    fn new(dir: &Path) -> Result<Loads, String> {
        let put = dir.join("put.lua");
        std::fs::write(&put, "wrk.method = \"PUT\"\nwrk.body = \"a value of some 25 bytes..\"\n")
            .map_err(|e| e.to_string())?;
        let txn = dir.join("txn.lua");
        let one = String::from_utf8_lossy(&txn_body(std::iter::once("bench/txn".to_string())))
            .into_owned();
        std::fs::write(&txn, format!("wrk.method = \"PUT\"\nwrk.body = '{one}'\n"))
            .map_err(|e| e.to_string())?;
        Ok(Loads { put, txn })
    }

    /// KV GET, KV PUT and 1-op txn rates on `agent`, in that order.
    fn run(&self, agent: &Agent, seconds: u64) -> Result<[f64; 3], String> {
        let base = format!("http://{}", agent.addr);
        request(agent.addr, "PUT", "/v1/kv/bench/get", b"a value of some 25 bytes..")?;
        let get = wrk(&format!("{base}/v1/kv/bench/get"), None, seconds)?;
        let put = wrk(&format!("{base}/v1/kv/bench/put"), Some(&self.put), seconds)?;
        let txn = wrk(&format!("{base}/v1/txn"), Some(&self.txn), seconds)?;
        Ok([get, put, txn])
    }
}

/// The figures measured once per agent, in the order of their rows.
fn measure(agent: &Agent) -> Result<[f64; 5], String> {
    // Wake-ups: WATCHERS blocking reads parked on one key, then one write.
    request(agent.addr, "PUT", "/v1/kv/bench/watched", b"0")?;
    let index = current_index(agent.addr, "/v1/kv/bench/watched")?;
    let (tx, rx) = std::sync::mpsc::channel();
    for _ in 0..WATCHERS {
        let tx = tx.clone();
        let addr = agent.addr;
        let target = format!("/v1/kv/bench/watched?index={index}&wait=30s");
        std::thread::spawn(move || {
            let r = request(addr, "GET", &target, b"");
            let _ = tx.send((Instant::now(), r.is_ok()));
        });
    }
    drop(tx);
    std::thread::sleep(Duration::from_secs(2));
    let written = Instant::now();
    request(agent.addr, "PUT", "/v1/kv/bench/watched", b"1")?;
    let mut last = written;
    let mut woke = 0;
    for (at, ok) in rx {
        if ok {
            woke += 1;
            last = last.max(at);
        }
    }
    if woke < WATCHERS {
        return Err(format!("{}: only {woke} of {WATCHERS} watchers answered", agent.name));
    }
    let wake_ms = last.duration_since(written).as_secs_f64() * 1000.0;

    // A blocking read of one key must end near its wait while other keys are written.
    let idx = current_index(agent.addr, "/v1/kv/bench/get")?;
    let addr = agent.addr;
    let reader = std::thread::spawn(move || {
        let started = Instant::now();
        let r = request(addr, "GET", &format!("/v1/kv/bench/get?index={idx}&wait=2s"), b"");
        (started.elapsed(), r.is_ok())
    });
    let mut conn = Conn::open(agent.addr)?;
    let until = Instant::now() + Duration::from_secs(4);
    let mut n = 0u64;
    while !reader.is_finished() && Instant::now() < until {
        conn.send("PUT", &format!("/v1/kv/bench/other/{}", n % 100), b"x")?;
        n += 1;
        std::thread::sleep(Duration::from_millis(20));
    }
    let (blocked, ok) = reader.join().map_err(|_| "the blocking reader panicked")?;
    if !ok {
        return Err(format!("{}: the blocking read failed", agent.name));
    }

    // 200k keys by 64-op transactions; resident memory before and after.
    let before = rss_bytes(agent.child.id());
    let loading = Instant::now();
    let mut conn = Conn::open(agent.addr)?;
    for chunk in 0..KEYS.div_ceil(64) {
        let body =
            txn_body((chunk * 64..((chunk + 1) * 64).min(KEYS)).map(|i| format!("fill/{i:07}")));
        let status = conn.send("PUT", "/v1/txn", &body)?;
        if status != 200 {
            return Err(format!("{}: loading keys: txn answered {status}", agent.name));
        }
    }
    let load_s = loading.elapsed().as_secs_f64();
    std::thread::sleep(Duration::from_secs(1));
    let per_key = (rss_bytes(agent.child.id()) - before).max(0.0) / KEYS as f64;
    let mut times = Vec::new();
    let body = txn_body(std::iter::once("bench/after-fill".to_string()));
    for _ in 0..300 {
        let t = Instant::now();
        conn.send("PUT", "/v1/txn", &body)?;
        times.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    times.sort_by(f64::total_cmp);
    let median = times[times.len() / 2];
    Ok([wake_ms, blocked.as_secs_f64(), per_key, median, load_s])
}

fn current_index(addr: SocketAddr, target: &str) -> Result<u64, String> {
    let mut s = TcpStream::connect(addr).map_err(|e| e.to_string())?;
    let head = format!("GET {target} HTTP/1.1\r\nHost: loadtest\r\nConnection: close\r\n\r\n");
    s.write_all(head.as_bytes()).map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    text.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-consul-index").then(|| v.trim().parse().ok()).flatten()
        })
        .ok_or_else(|| format!("no X-Consul-Index on {target}"))
}

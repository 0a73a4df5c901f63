//! The `consul-ha` command as a user runs it: real processes, real sockets.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Builds the binary once (the test package cannot depend on a binary crate) and returns
/// its path next to this test binary's target directory.
pub(crate) fn binary() -> PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let status = Command::new(cargo)
            .args(["build", "--quiet", "-p", "consul-ha", "--bin", "consul-ha"])
            .current_dir(&root)
            .status()
            .expect("cargo runs");
        assert!(status.success(), "building consul-ha failed");
        // target/debug/deps/it-… → target/debug/consul-ha
        let exe = std::env::current_exe().expect("test binary path");
        let dir = exe.parent().and_then(|d| d.parent()).expect("target dir");
        let bin = dir.join(format!("consul-ha{}", std::env::consts::EXE_SUFFIX));
        assert!(bin.exists(), "{} was not built", bin.display());
        bin
    })
    .clone()
}

/// A child process killed when the test ends, pass or fail.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn run(args: &[&str]) -> Output {
    Command::new(binary()).args(args).env_remove("CONSUL_HTTP_ADDR").output().expect("runs")
}

fn spawn(args: &[&str], addr: &str) -> Running {
    let child = Command::new(binary())
        .args(args)
        .env("CONSUL_HTTP_ADDR", addr)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    Running(child)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// `status --json` against `addr`, once it answers.
fn status(addr: &str) -> Option<serde_json::Value> {
    let out = run(&["status", "--json", "--http-addr", addr]);
    out.status.success().then(|| serde_json::from_slice(&out.stdout).expect("status prints JSON"))
}

fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(start.elapsed() < limit, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn demo_with_seed_1_exits_0_with_the_expected_summary() {
    let out = run(&["demo", "--seed", "1", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "demo failed: {stderr}");
    let s: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON summary");
    assert_eq!(s["ok"], true, "{s}");
    assert_eq!(s["violations"].as_array().unwrap().len(), 0);
    assert_eq!(s["final"]["healthy"], 64);
    assert_eq!(s["final"]["unavailable"], 0);
    assert!(s["failover_secs"].as_f64().unwrap() <= 16.0, "{s}");
    assert!(s["new_fencing_token"].as_u64() > s["first_fencing_token"].as_u64());
    assert!(stderr.contains("took over after"), "the narration goes to stderr with --json");
    // Same seed, same story.
    let again = run(&["demo", "--seed", "1", "--json"]);
    let t: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(s["failover_secs"], t["failover_secs"]);
    assert_eq!(s["routes"], t["routes"]);
}

#[test]
fn the_demo_piped_into_head_stops_quietly() {
    use std::io::{BufRead, BufReader};
    let mut child = Command::new(binary())
        .args(["demo", "--seed", "2"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut first).unwrap();
    assert!(first.contains("consul-ha demo"), "{first}");
    // The reader is gone: further output hits a closed pipe.
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    assert!(out.status.success(), "{:?}: {stderr}", out.status);
}

#[test]
fn an_agent_and_two_nodes_fail_over_and_status_and_route_agree() {
    let addr = format!("127.0.0.1:{}", free_port());
    let _agent = spawn(&["agent", "-dev", "--http-addr", &addr, "--session-ttl-min", "1s"], &addr);
    wait_for(Duration::from_secs(10), "the agent answers", || status(&addr));
    let node = |id: &str, port: &str| {
        spawn(
            &[
                "node",
                "--id",
                id,
                "--address",
                port,
                "--zone",
                id,
                "--ttl",
                "2s",
                "--lock-delay",
                "1s",
            ],
            &addr,
        )
    };
    let mut nodes =
        vec![("a", Some(node("a", "127.0.0.1:7101"))), ("b", Some(node("b", "127.0.0.1:7102")))];
    let first = wait_for(Duration::from_secs(10), "a leader and a routing table", || {
        let s = status(&addr)?;
        let leader = s["leader"]["node_id"].as_str()?.to_string();
        (s["shards"]["shards"].as_array()?.len() == 64).then_some(leader)
    });
    // route agrees with status: the primary of a key is a passing member.
    let out = run(&["route", "user:42", "--json", "--http-addr", &addr]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let s = status(&addr).unwrap();
    let passing: Vec<&str> = s["members"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|m| m["health"] == "passing")
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert!(passing.contains(&r["primary"].as_str().unwrap()), "{r} vs {s}");

    // Kill the leader's process: the other node takes over within TTL + lock-delay + retry.
    let killed = Instant::now();
    for (id, child) in &mut nodes {
        if *id == first {
            *child = None;
        }
    }
    let second = wait_for(Duration::from_secs(8), "the other node leads", || {
        let s = status(&addr)?;
        let l = s["leader"]["node_id"].as_str()?.to_string();
        (l != first).then_some(l)
    });
    let took = killed.elapsed();
    assert!(
        took < Duration::from_secs(6),
        "failover took {took:?} (bound: 2 s TTL + 1 s delay + retry)"
    );
    // Eventually every key routes to the survivor.
    wait_for(Duration::from_secs(10), "route follows the new primary", || {
        let out = run(&["route", "user:42", "--json", "--http-addr", &addr]);
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (r["primary"] == second.as_str()).then_some(())
    });
}

#[test]
fn bad_input_gets_a_one_line_error_and_a_non_zero_exit() {
    let one_line = |out: &Output, expect: &str| {
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "should fail: {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
        assert!(err.contains(expect), "{expect:?} in {err}");
        assert!(!err.contains("panicked"), "{err}");
    };
    one_line(&run(&["demo", "--bogus"]), "--bogus");
    one_line(
        &run(&["status", "--http-addr", &format!("127.0.0.1:{}", free_port())]),
        "cannot reach Consul",
    );
    let dir = std::env::temp_dir().join(format!("consul-ha-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let bad = dir.join("shards.json");
    std::fs::write(&bad, r#"{"version": 1, "shards": 0, "replication_factor": 3, "min_live": 2, "rebalance_delay": "30s", "max_moving_fraction": 0.1}"#).unwrap();
    one_line(
        &run(&[
            "node",
            "--id",
            "a",
            "--address",
            "127.0.0.1:7000",
            "--config",
            bad.to_str().unwrap(),
        ]),
        "shards",
    );
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    one_line(&run(&["agent", "-dev", "--http-addr", &addr]), "cannot listen");
    one_line(&run(&["agent", "--http-addr", &addr]), "-dev");
}

#[test]
fn each_dev_agent_run_hands_out_its_own_session_ids() {
    // Consul's session ids are random; a dev agent seeded with a constant would repeat the
    // same ids on every start (and after a restart, ids a client may still hold).
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let addr = format!("127.0.0.1:{}", free_port());
        let _agent = spawn(&["agent", "-dev", "--http-addr", &addr], &addr);
        wait_for(Duration::from_secs(10), "the agent answers", || status(&addr));
        let client =
            consul_api::Client::builder().address(format!("http://{addr}")).build().unwrap();
        let request = consul_api::session::SessionRequest::default();
        ids.push(rt.block_on(client.session().create(&request)).unwrap());
    }
    assert_ne!(ids[0], ids[1]);
}

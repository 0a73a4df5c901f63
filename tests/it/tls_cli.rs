//! `consul-ha agent -dev --tls-cert … --verify-incoming` as a user runs it, and the
//! command's own client reading Consul's TLS environment (CONSUL_TLS_SERVER_NAME included).

use std::net::TcpListener;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::cli::binary;
use crate::tls_certs::{Pki, s};

/// A child process killed (by its own pid) when the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The command with none of Consul's client variables but `env`.
fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut c = Command::new(binary());
    c.args(args);
    for var in [
        "CONSUL_HTTP_ADDR",
        "CONSUL_HTTP_TOKEN",
        "CONSUL_HTTP_TOKEN_FILE",
        "CONSUL_HTTP_AUTH",
        "CONSUL_HTTP_SSL",
        "CONSUL_HTTP_SSL_VERIFY",
        "CONSUL_CACERT",
        "CONSUL_CAPATH",
        "CONSUL_CLIENT_CERT",
        "CONSUL_CLIENT_KEY",
        "CONSUL_TLS_SERVER_NAME",
    ] {
        c.env_remove(var);
    }
    c.envs(env.iter().copied());
    c
}

fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
    command(args, env).output().expect("runs")
}

#[test]
fn tls_consul_ha_agent_dev_serves_mtls_and_status_reads_the_tls_environment() {
    // Valid for the agent's name only: the client must be told it (CONSUL_TLS_SERVER_NAME).
    let pki = Pki::new(&["server.dc1.consul"]);
    let addr = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr").to_string()
    };
    let agent = command(
        &[
            "agent",
            "-dev",
            "--http-addr",
            &addr,
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
            "--tls-ca",
            s(&pki.ca),
            "--verify-incoming",
        ],
        &[("RUST_LOG", "warn")],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::null())
    .spawn()
    .expect("spawns");
    let _agent = Running(agent);
    let url = format!("https://{addr}");
    let env = [
        ("CONSUL_HTTP_ADDR", url.as_str()),
        ("CONSUL_CACERT", s(&pki.ca)),
        ("CONSUL_CLIENT_CERT", s(&pki.client_cert)),
        ("CONSUL_CLIENT_KEY", s(&pki.client_key)),
        ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
    ];
    let start = Instant::now();
    let out = loop {
        let out = run(&["status", "--json"], &env);
        if out.status.success() || start.elapsed() > Duration::from_secs(15) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "status over mTLS failed: {stderr}");
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).expect("JSON");
    assert!(status.is_object(), "{status}");

    // Each piece is needed; the error is one line saying why.
    for (drop, expect) in [
        ("CONSUL_TLS_SERVER_NAME", "not valid for name"),
        ("CONSUL_CLIENT_CERT", "CONSUL_CLIENT_KEY"),
        ("CONSUL_CACERT", "CONSUL_CACERT"),
    ] {
        let env: Vec<_> = env.iter().copied().filter(|(k, _)| *k != drop).collect();
        let out = run(&["status", "--json"], &env);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "without {drop}: {err}");
        assert!(err.contains(expect), "without {drop}: {expect:?} in {err}");
        assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    }
    // --http-addr overrides CONSUL_HTTP_ADDR: plain http to the TLS port gets Go's 400.
    let out = run(&["status", "--json", "--http-addr", &format!("http://{addr}")], &env);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("Client sent an HTTP request to an HTTPS server"), "{err}");
}

#[test]
fn tls_consul_ha_agent_dev_rejects_bad_tls_flags_in_one_line() {
    let pki = Pki::new(&["127.0.0.1"]);
    let addr = "127.0.0.1:0";
    let out = run(
        &[
            "agent",
            "-dev",
            "--http-addr",
            addr,
            "--tls-cert",
            s(&pki.path("nope.pem")),
            "--tls-key",
            s(&pki.server_key),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("--tls-cert") && err.contains("nope.pem"),
        "{err}"
    );
    // --verify-incoming needs the CA to check clients against.
    let out = run(
        &[
            "agent",
            "-dev",
            "--http-addr",
            addr,
            "--tls-cert",
            s(&pki.server_cert),
            "--tls-key",
            s(&pki.server_key),
            "--verify-incoming",
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("--tls-ca"), "{err}");
}

#[test]
fn consul_ha_agent_dev_on_a_unix_socket_and_status_over_it() {
    let dir = std::env::temp_dir().join(format!("consul-ha-cli-unix-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let url = format!("unix://{}", dir.join("http.sock").display());
    let agent = command(&["agent", "-dev", "--http-addr", &url], &[("RUST_LOG", "warn")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawns");
    let agent = Running(agent);
    let start = Instant::now();
    let out = loop {
        let out = run(&["status", "--json"], &[("CONSUL_HTTP_ADDR", &url)]);
        if out.status.success() || start.elapsed() > Duration::from_secs(15) {
            break out;
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(
        out.status.success(),
        "status over the socket: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(agent);
    let _ = std::fs::remove_dir_all(&dir);
}

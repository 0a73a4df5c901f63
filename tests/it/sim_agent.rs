//! consul-sim beyond the wire format: HTTP and TCP checks really executed, and the data dir
//! surviving a restart and a crash in the middle of a snapshot write.

use std::time::Duration;

use consul_api::QueryOptions;
use consul_api::agent::{CheckDefinition, CheckStatus, ServiceRegistration};
use consul_sim::{Sim, SimConfig};

#[tokio::test]
async fn http_and_tcp_checks_are_executed_at_their_interval() {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let open = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    }; // dropped: nothing listens there any more
    let every = Duration::from_millis(100);
    let mut reg = ServiceRegistration::new("web", "web-1");
    reg.port = Some(8080);
    let with_id = |mut c: CheckDefinition, id: &str| {
        c.check_id = id.into();
        c.name = id.into();
        c
    };
    reg.checks = vec![
        with_id(
            CheckDefinition::http(format!("{}/v1/status/leader", server.url()), every),
            "http-ok",
        ),
        with_id(CheckDefinition::http(format!("{}/v1/nope", server.url()), every), "http-404"),
        with_id(CheckDefinition::tcp(open.local_addr().unwrap().to_string(), every), "tcp-open"),
        with_id(CheckDefinition::tcp(closed.to_string(), every), "tcp-closed"),
    ];
    let client = sim.client("agent");
    client.agent().register_service(&reg).await.unwrap();
    let status = |checks: &std::collections::HashMap<String, consul_api::agent::HealthCheck>,
                  id: &str| { checks.get(id).map(|c| c.status) };
    let start = std::time::Instant::now();
    loop {
        let checks = client.agent().checks().await.unwrap();
        let want = [
            ("http-ok", CheckStatus::Passing),
            ("http-404", CheckStatus::Critical),
            ("tcp-open", CheckStatus::Passing),
            ("tcp-closed", CheckStatus::Critical),
        ];
        if want.iter().all(|(id, s)| status(&checks, id) == Some(*s))
            && checks["http-ok"].output.contains("200")
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "checks did not settle: {checks:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

#[tokio::test]
async fn the_data_dir_survives_a_restart_and_a_torn_snapshot_write() {
    let dir =
        std::env::temp_dir().join(format!("consul-sim-it-{}-{}", std::process::id(), line!()));
    let _ = std::fs::remove_dir_all(&dir);
    let index = {
        let sim = Sim::with_data_dir(SimConfig::default(), &dir).unwrap();
        let c = sim.client("a");
        c.kv().put("app/config", "v1").await.unwrap();
        c.kv().put("app/other", vec![0u8, 255, 7]).await.unwrap();
        // Saves from several threads at once (the driver saves too) take turns.
        std::thread::scope(|scope| {
            for _ in 0..4 {
                scope.spawn(|| (0..10).for_each(|_| sim.save_snapshot().unwrap()));
            }
        });
        let index = sim.core().index();
        // A crash in the middle of the next write leaves a torn temp file behind.
        std::fs::write(dir.join("consul-sim.snapshot.tmp"), b"{\"index\": 99, \"kv\": {").unwrap();
        index
    };
    let sim = Sim::with_data_dir(SimConfig::default(), &dir).unwrap();
    let c = sim.client("b");
    let (v, meta) = c.kv().get_raw("app/config", &QueryOptions::default()).await.unwrap();
    assert_eq!(v.unwrap(), "v1");
    assert_eq!(
        c.kv().get_raw("app/other", &QueryOptions::default()).await.unwrap().0.unwrap(),
        vec![0u8, 255, 7]
    );
    assert!(sim.core().index() >= index && meta.last_index.0 > 0, "the index never goes back");
    // A corrupt snapshot is an error naming the file, not a silent empty store.
    std::fs::write(dir.join("consul-sim.snapshot"), b"not json").unwrap();
    let err = Sim::with_data_dir(SimConfig::default(), &dir).unwrap_err();
    assert!(err.contains("consul-sim.snapshot"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(start_paused = true)]
async fn a_service_critical_past_deregister_critical_service_after_is_reaped() {
    let sim = Sim::new(SimConfig::default());
    let c = sim.client("a");
    let mut reg = ServiceRegistration::new("web", "web-1");
    let mut check = CheckDefinition::ttl(Duration::from_secs(10));
    check.deregister_critical_service_after = Some(Duration::from_secs(60));
    reg.checks = vec![check];
    c.agent().register_service(&reg).await.unwrap();
    assert!(c.agent().services().await.unwrap().contains_key("web-1"));
    // Never passed: critical from the start; reaped about a minute later, not before.
    tokio::time::sleep(Duration::from_secs(50)).await;
    assert!(c.agent().services().await.unwrap().contains_key("web-1"), "not yet");
    tokio::time::sleep(Duration::from_secs(45)).await;
    assert!(!c.agent().services().await.unwrap().contains_key("web-1"), "reaped");
    let (services, _) = c.catalog().services(&QueryOptions::default()).await.unwrap();
    assert!(!services.contains_key("web"), "gone from the catalog too: {services:?}");
}

#[cfg(unix)]
#[tokio::test]
async fn script_checks_run_when_enabled_and_map_exit_codes_like_consul() {
    let sim = Sim::new(SimConfig { enable_script_checks: true, ..SimConfig::default() });
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let http = consul_api::HttpTransport::new(&server.local_addr().to_string()).unwrap();
    let register = |name: &str, script: &str| {
        let body =
            serde_json::json!({"Name": name, "Args": ["sh", "-c", script], "Interval": "1s"});
        consul_api::Request::new(http::Method::PUT, "/v1/agent/check/register")
            .body(body.to_string())
    };
    use consul_api::Transport;
    for (name, script) in [("ok", "echo out; echo err >&2"), ("warn", "exit 1"), ("crit", "exit 2")]
    {
        assert_eq!(http.send(register(name, script)).await.unwrap().status, 200);
    }
    let client = sim.client("a");
    let start = std::time::Instant::now();
    loop {
        let checks = client.agent().checks().await.unwrap();
        let got = |id: &str| checks.get(id).map(|c| (c.status, c.output.clone()));
        if got("ok") == Some((CheckStatus::Passing, "out\nerr\n".into()))
            && got("warn").map(|g| g.0) == Some(CheckStatus::Warning)
            && got("crit").map(|g| g.0) == Some(CheckStatus::Critical)
        {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(5), "scripts did not settle: {checks:#?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    server.shutdown().await;
}

async fn agent_send(sim: &Sim, method: http::Method, target: &str) -> consul_sim::SimResponse {
    let req = consul_sim::SimRequest {
        method,
        target: target.to_string(),
        headers: http::HeaderMap::new(),
        body: bytes::Bytes::new(),
    };
    sim.execute("test", req).await.expect("not partitioned")
}

/// Consul 1.8.7: `GET /v1/agent/monitor?loglevel=info` sends no status line until its first
/// log line; an unknown level is `400 Bad request: Unknown log level: <level>`.
#[tokio::test(start_paused = true)]
async fn the_log_monitor_checks_its_level_and_then_sends_nothing() {
    let sim = Sim::new(SimConfig::default());
    let bad = agent_send(&sim, http::Method::GET, "/v1/agent/monitor?loglevel=loud").await;
    assert_eq!(bad.status, 400);
    assert_eq!(&bad.body[..], b"Bad request: Unknown log level: loud");
    let stream = agent_send(&sim, http::Method::GET, "/v1/agent/monitor?loglevel=err");
    // Writes do not wake it either.
    let writer = agent_send(&sim, http::Method::PUT, "/v1/agent/reload");
    let (stream, writer) =
        tokio::join!(tokio::time::timeout(Duration::from_secs(3600), stream), writer);
    assert_eq!(writer.status, 200);
    assert!(stream.is_err(), "the monitor answered: {stream:?}");
}

/// Consul 1.8.7: `PUT /v1/agent/leave` answers 200 with an empty body, then the agent stops
/// serving HTTP and exits.
#[tokio::test]
async fn after_leave_the_server_answers_then_stops_serving() {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let addr = server.local_addr();
    let put = |path: &'static str| async move {
        let mut s = tokio::net::TcpStream::connect(addr).await?;
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let req = format!(
            "PUT {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
        );
        s.write_all(req.as_bytes()).await?;
        let mut out = Vec::new();
        s.read_to_end(&mut out).await?;
        Ok::<String, std::io::Error>(String::from_utf8_lossy(&out).into_owned())
    };
    let answer = tokio::time::timeout(Duration::from_secs(10), put("/v1/agent/leave"))
        .await
        .expect("the leave answer came and the connection closed")
        .unwrap();
    assert!(answer.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(answer.contains("content-length: 0"), "{answer}");
    tokio::time::timeout(Duration::from_secs(5), sim.left()).await.expect("the sim has left");
    // The accept loop is gone: a new connection is refused or closed unanswered.
    let mut refused = false;
    for _ in 0..50 {
        match put("/v1/agent/self").await {
            Err(_) => refused = true,
            Ok(a) if a.is_empty() => refused = true,
            Ok(_) => {}
        }
        if refused {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(refused, "the server still answers after leave");
    server.shutdown().await;
}

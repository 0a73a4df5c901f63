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

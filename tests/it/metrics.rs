//! `/v1/agent/metrics` on the sim and on a real Consul 1.8.7: the same requests, sent in one
//! 10-second interval, are counted alike once that interval has finished (HTTP requests by
//! handler, KV, transaction and session applies with their `op` labels), the gauges the sim
//! keeps read the same, and the answer is laid out as go-metrics lays it out.
//!
//! Consul runs on the wall clock (the test waits for a 10-second boundary, so it takes about
//! 20 s); the sim runs on paused time from a clock set on a boundary.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{HeaderMap, Method};
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use consul_sim::{Sim, SimConfig, SimRequest};

use crate::real_consul::RealConsul;
use crate::support::{RawClient, raw_client};

/// The requests, `{ttl}` and `{plain}` standing for the ids the two session creations
/// answer. The TTL session is kept, so Consul's `session_ttl.active` reads 1 whenever it is
/// sampled after the workload.
const WORKLOAD: &[(&str, &str, &str)] = &[
    ("PUT", "/v1/session/create", r#"{"TTL": "30s"}"#),
    ("PUT", "/v1/session/create", ""),
    ("PUT", "/v1/kv/metrics/a", "one"),
    ("PUT", "/v1/kv/metrics/a?cas=1", "two"),
    ("GET", "/v1/kv/metrics/a", ""),
    ("GET", "/v1/kv/metrics/?recurse", ""),
    ("PUT", "/v1/kv/metrics/lock?acquire={ttl}", "held"),
    ("PUT", "/v1/kv/metrics/lock?release={ttl}", ""),
    ("DELETE", "/v1/kv/metrics/a?cas=1", ""),
    ("DELETE", "/v1/kv/metrics/b", ""),
    ("DELETE", "/v1/kv/metrics/?recurse", ""),
    ("PUT", "/v1/txn", r#"[{"KV": {"Verb": "get", "Key": "metrics/lock"}}]"#),
    ("PUT", "/v1/txn", r#"[{"KV": {"Verb": "set", "Key": "metrics/t", "Value": "YQ=="}}]"#),
    ("PUT", "/v1/session/destroy/{plain}", ""),
    ("GET", "/v1/agent/self", ""),
    ("GET", "/v1/status/leader", ""),
    ("GET", "/v1/catalog/services", ""),
    ("GET", "/v1/health/state/any", ""),
    ("GET", "/v1/agent/service/none", ""),
    ("OPTIONS", "/v1/kv/metrics/a", ""),
    ("POST", "/v1/kv/metrics/a", "refused"),
    ("GET", "/v1/kv/metrics/a?dc=nowhere", ""),
    // The mux's own 404: no handler runs, nothing is counted.
    ("GET", "/v1/nope", ""),
];

/// The metrics compared: every HTTP handler's, and the applies the workload causes. Consul's
/// runtime, raft and gossip metrics have nothing behind them in the sim.
fn compared(name: &str) -> bool {
    name.starts_with("consul.http.")
        || [
            "consul.kvs.apply",
            "consul.fsm.kvs",
            "consul.txn.apply",
            "consul.txn.read",
            "consul.fsm.txn",
            "consul.session.apply",
            "consul.fsm.session",
        ]
        .contains(&name)
}

enum Backend<'a> {
    Sim(&'a Sim),
    Consul(&'a RawClient, String),
}

impl Backend<'_> {
    async fn send(&self, method: &str, target: &str, body: &str) -> (u16, Vec<u8>) {
        let method = Method::from_bytes(method.as_bytes()).expect("a method");
        match self {
            Backend::Sim(sim) => {
                let req = SimRequest {
                    method,
                    target: target.to_string(),
                    headers: HeaderMap::new(),
                    body: Bytes::from(body.to_string()),
                };
                let resp = sim.execute("metrics", req).await.expect("the sim answers");
                (resp.status.as_u16(), resp.body.to_vec())
            }
            Backend::Consul(client, base) => {
                let req = http::Request::builder()
                    .method(method)
                    .uri(format!("{base}{target}"))
                    .body(Full::new(Bytes::from(body.to_string())))
                    .expect("request");
                let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
                    .await
                    .expect("an answer within 20 s")
                    .expect("transport");
                let status = resp.status().as_u16();
                (status, resp.into_body().collect().await.expect("body").to_bytes().to_vec())
            }
        }
    }

    /// Sends the workload, in order.
    async fn workload(&self) {
        let mut ids: Vec<String> = Vec::new();
        for (method, target, body) in WORKLOAD {
            let target = target
                .replace("{ttl}", ids.first().map_or("", String::as_str))
                .replace("{plain}", ids.get(1).map_or("", String::as_str));
            let (status, answer) = self.send(method, &target, body).await;
            if target == "/v1/session/create" {
                assert_eq!(status, 200, "session create: {}", String::from_utf8_lossy(&answer));
                let v: Value = serde_json::from_slice(&answer).expect("JSON");
                ids.push(v["ID"].as_str().expect("an ID").to_string());
            }
        }
    }
}

/// The compared counters' and samples' counts, by name and labels.
fn counts(metrics: &Value) -> BTreeMap<String, u64> {
    let mut out = BTreeMap::new();
    for kind in ["Counters", "Samples"] {
        for m in metrics[kind].as_array().expect("a list") {
            let name = m["Name"].as_str().expect("a name");
            if compared(name) {
                let labels = serde_json::to_string(&m["Labels"]).expect("labels");
                out.insert(format!("{name} {labels}"), m["Count"].as_u64().expect("a count"));
            }
        }
    }
    out
}

/// The answer's layout: its fields, a gauge's and a sample's, in order (a parsed object
/// keeps its fields in the order they were written: serde_json's `preserve_order`, which
/// the sim turns on for the whole build).
fn layout(v: &Value) -> Vec<Vec<String>> {
    let keys = |v: &Value| v.as_object().map(|o| o.keys().cloned().collect()).unwrap_or_default();
    vec![keys(v), keys(&v["Gauges"][0]), keys(&v["Samples"][0])]
}

/// The sim's answer for the finished interval of the workload, on paused time (in a runtime
/// of its own, beside the test's real-time one), with its clock on a 10-second boundary.
fn on_the_sim() -> Value {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime");
        rt.block_on(async {
            let config = SimConfig {
                wall_clock_start: Some(Duration::from_secs(1_800_000_000)),
                ..SimConfig::default()
            };
            let sim = Sim::new(config);
            tokio::time::advance(Duration::from_millis(500)).await;
            Backend::Sim(&sim).workload().await;
            tokio::time::advance(Duration::from_secs(10)).await;
            let (status, body) = Backend::Sim(&sim).send("GET", "/v1/agent/metrics", "").await;
            assert_eq!(status, 200);
            serde_json::from_slice(&body).expect("JSON")
        })
    })
    .join()
    .expect("the sim's run")
}

/// How long until half a second past the next multiple of 10 s on the wall clock.
fn until_next_interval() -> Duration {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).expect("after 1970");
    let next = (now.as_secs() / 10 + 1) * 10;
    Duration::from_secs(next) + Duration::from_millis(500) - now
}

#[tokio::test]
async fn agent_metrics_count_requests_and_applies_as_consul_does() {
    let sim = on_the_sim();
    assert_eq!(sim["Timestamp"], "2027-01-15 08:00:00 +0000 UTC");

    let consul = RealConsul::start().await;
    let client = raw_client();
    let backend = Backend::Consul(&client, format!("http://{}", consul.http));
    // The workload inside one interval: started just after a boundary, done well before the
    // next (a few dozen loopback requests); tried again if the host stalled it past one.
    let mut finished = false;
    for _ in 0..3 {
        tokio::time::sleep(until_next_interval()).await;
        let started = SystemTime::now();
        backend.workload().await;
        if started.elapsed().unwrap_or_default() < Duration::from_secs(8) {
            finished = true;
            break;
        }
    }
    assert!(finished, "the workload never fitted in one 10-second interval");
    tokio::time::sleep(until_next_interval()).await;
    let (status, text) = backend.send("GET", "/v1/agent/metrics", "").await;
    assert_eq!(status, 200);
    let real: Value = serde_json::from_slice(&text).expect("JSON");

    assert_eq!(counts(&sim), counts(&real), "sim (left) and Consul 1.8.7 (right) counted apart");
    assert!(counts(&real).len() > 20, "too little compared: {:?}", counts(&real));
    for answer in [&sim, &real] {
        let gauge = |name: &str| {
            let gauges = answer["Gauges"].as_array().expect("gauges");
            gauges.iter().find(|g| g["Name"] == name).map(|g| g["Value"].clone())
        };
        assert_eq!(gauge("consul.session_ttl.active"), Some(1.into()), "{answer}");
        assert_eq!(gauge("consul.autopilot.healthy"), Some(1.into()));
        assert_eq!(gauge("consul.autopilot.failure_tolerance"), Some(0.into()));
        for index in ["consul.raft.applied_index", "consul.raft.last_index"] {
            assert!(gauge(index).and_then(|v| v.as_u64()).is_some_and(|i| i > 1), "{index}");
        }
        assert_eq!(answer["Points"], Value::Array(Vec::new()));
        let stamp = answer["Timestamp"].as_str().expect("a timestamp");
        assert!(stamp.ends_with("0 +0000 UTC") && stamp.len() == 29, "{stamp}");
    }
    let want = [
        ["Timestamp", "Gauges", "Points", "Counters", "Samples"].as_slice(),
        &["Name", "Value", "Labels"],
        &["Name", "Count", "Rate", "Sum", "Min", "Max", "Mean", "Stddev", "Labels"],
    ];
    assert_eq!(layout(&real), want.map(|k| k.iter().map(|s| s.to_string()).collect::<Vec<_>>()));
    assert_eq!(layout(&sim), layout(&real));

    // Prometheus output needs a retention time Consul was not given; other methods refused.
    let fresh = Sim::new(SimConfig::default());
    for (method, target) in
        [("GET", "/v1/agent/metrics?format=prometheus"), ("PUT", "/v1/agent/metrics")]
    {
        let ours = Backend::Sim(&fresh).send(method, target, "").await;
        assert_eq!(ours, backend.send(method, target, "").await, "{method} {target}");
    }
}

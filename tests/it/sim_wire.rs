//! The sim's wire format, byte by byte over raw TCP: status codes, headers and JSON shapes
//! as in Consul's HTTP API documentation, and malformed input answered with 4xx.

use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use consul_sim::{Server, Sim, SimConfig};

struct Raw {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Raw {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {:?}", String::from_utf8_lossy(&self.body)))
    }

    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

async fn send(server: &Server, method: &str, target: &str, body: &[u8]) -> Raw {
    let mut s = tokio::net::TcpStream::connect(server.local_addr()).await.unwrap();
    let head = format!(
        "{method} {target} HTTP/1.1\r\nHost: consul\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(body).await.unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let split = buf.windows(4).position(|w| w == b"\r\n\r\n").expect("a complete response");
    let head = String::from_utf8_lossy(&buf[..split]).into_owned();
    let mut lines = head.lines();
    let status = lines.next().unwrap().split(' ').nth(1).unwrap().parse().unwrap();
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect();
    Raw { status, headers, body: buf[split + 4..].to_vec() }
}

async fn server() -> (Sim, Server) {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    (sim, server)
}

#[tokio::test]
async fn kv_speaks_consuls_wire_format() {
    let (_sim, s) = server().await;
    let put = send(&s, "PUT", "/v1/kv/zip?flags=42", b"test").await;
    assert_eq!((put.status, put.text().as_str()), (200, "true"));
    let get = send(&s, "GET", "/v1/kv/zip", b"").await;
    assert_eq!(get.status, 200);
    assert_eq!(get.header("Content-Type"), Some("application/json"));
    assert_eq!(get.header("X-Consul-KnownLeader"), Some("true"));
    assert!(get.header("X-Consul-LastContact").is_some());
    let index: u64 = get.header("X-Consul-Index").unwrap().parse().unwrap();
    assert!(index > 0);
    // The documented shape: an array of one object with exactly these fields.
    let v = get.json();
    let obj = v[0].as_object().unwrap();
    let mut fields: Vec<&str> = obj.keys().map(String::as_str).collect();
    fields.sort();
    assert_eq!(fields, ["CreateIndex", "Flags", "Key", "LockIndex", "ModifyIndex", "Value"]);
    assert_eq!(v[0]["Value"], "dGVzdA==");
    assert_eq!(v[0]["Flags"], 42);
    assert_eq!(v[0]["ModifyIndex"].as_u64(), Some(index));
    let raw = send(&s, "GET", "/v1/kv/zip?raw", b"").await;
    assert_eq!(raw.body, b"test");
    // A missing key: 404 with an index and an empty body.
    let missing = send(&s, "GET", "/v1/kv/nope", b"").await;
    assert_eq!(missing.status, 404);
    assert!(missing.header("X-Consul-Index").unwrap().parse::<u64>().unwrap() > 0);
    assert!(missing.body.is_empty());
    // ?recurse=false still recurses: flags are about presence.
    let rec = send(&s, "GET", "/v1/kv/z?recurse=false", b"").await;
    assert_eq!(rec.status, 200);
    assert_eq!(rec.json().as_array().unwrap().len(), 1);
    let keys = send(&s, "GET", "/v1/kv/?keys", b"").await;
    assert_eq!(keys.json(), serde_json::json!(["zip"]));
    let del = send(&s, "DELETE", "/v1/kv/zip", b"").await;
    assert_eq!((del.status, del.text().as_str()), (200, "true"));
}

#[tokio::test]
async fn sessions_txn_health_and_status_have_the_documented_shapes() {
    let (_sim, s) = server().await;
    let created = send(&s, "PUT", "/v1/session/create", br#"{"Name":"x","TTL":"15s"}"#).await;
    assert_eq!(created.status, 200);
    let id = created.json()["ID"].as_str().unwrap().to_string();
    assert_eq!(id.len(), 36, "a UUID");
    let info = send(&s, "GET", &format!("/v1/session/info/{id}"), b"").await.json();
    assert_eq!(info[0]["TTL"], "15s");
    assert_eq!(info[0]["Behavior"], "release");
    assert_eq!(info[0]["LockDelay"], 15_000_000_000u64);
    assert_eq!(info[0]["NodeChecks"], serde_json::json!(["serfHealth"]));

    let txn =
        br#"[{"KV":{"Verb":"set","Key":"a","Value":"eA=="}},{"KV":{"Verb":"get","Key":"a"}}]"#;
    let out = send(&s, "PUT", "/v1/txn", txn).await;
    assert_eq!(out.status, 200);
    let v = out.json();
    assert_eq!(v["Errors"], Value::Null);
    assert_eq!(v["Results"][0]["KV"]["Value"], Value::Null, "writes echo no value");
    assert_eq!(v["Results"][1]["KV"]["Value"], "eA==");
    let bad = br#"[{"KV":{"Verb":"cas","Key":"a","Value":"eQ==","Index":1}}]"#;
    let rolled = send(&s, "PUT", "/v1/txn", bad).await;
    assert_eq!(rolled.status, 409);
    assert_eq!(rolled.json()["Errors"][0]["OpIndex"], 0);
    assert_eq!(rolled.json()["Results"], Value::Null);
    let ops: Vec<String> =
        (0..129).map(|i| format!(r#"{{"KV":{{"Verb":"get","Key":"k{i}"}}}}"#)).collect();
    let too_many = send(&s, "PUT", "/v1/txn", format!("[{}]", ops.join(",")).as_bytes()).await;
    assert_eq!(too_many.status, 413);

    let reg = br#"{"Name":"web","ID":"web1","Port":80,"Check":{"TTL":"30s","Status":"passing"}}"#;
    assert_eq!(send(&s, "PUT", "/v1/agent/service/register", reg).await.status, 200);
    let health = send(&s, "GET", "/v1/health/service/web?passing", b"").await;
    let v = health.json();
    assert_eq!(v[0]["Service"]["ID"], "web1");
    assert_eq!(v[0]["Node"]["Node"], "sim-node");
    let check_ids: Vec<&str> =
        v[0]["Checks"].as_array().unwrap().iter().map(|c| c["CheckID"].as_str().unwrap()).collect();
    assert!(
        check_ids.contains(&"serfHealth") && check_ids.contains(&"service:web1"),
        "{check_ids:?}"
    );

    let leader = send(&s, "GET", "/v1/status/leader", b"").await;
    assert_eq!(leader.json(), "127.0.0.1:8300");
}

#[tokio::test]
async fn malformed_requests_get_4xx_naming_the_problem_and_keep_the_data() {
    let (_sim, s) = server().await;
    assert_eq!(send(&s, "PUT", "/v1/kv/keep", b"safe").await.status, 200);
    let cases: &[(&str, &str, &[u8], u16, &str)] = &[
        ("GET", "/v1/kv/", b"", 400, "Missing key name"),
        (
            "PUT",
            "/v1/kv/x?flags=abc",
            b"",
            500,
            "strconv.ParseUint: parsing \"abc\": invalid syntax",
        ),
        ("PUT", "/v1/kv/x?cas=1&acquire=s", b"", 400, "Conflicting flags: acquire=s&cas=1"),
        ("GET", "/v1/kv/keep?index=1&wait=abc", b"", 400, "Invalid wait time"),
        ("GET", "/v1/kv/keep?wait=5", b"", 400, "Invalid wait time"),
        ("GET", "/v1/kv/keep?index=-1", b"", 400, "Invalid index"),
        ("PUT", "/v1/txn", b"{not json", 400, "Failed to parse body"),
        ("PUT", "/v1/txn", br#"[{"KV":{"Verb":"set","Key":"x","Value":"%%%"}}]"#, 400, "base64"),
        (
            "PUT",
            "/v1/txn",
            br#"[{"KV":{"Verb":"explode","Key":"x"}}]"#,
            409,
            "unknown KV verb \\\"explode\\\"",
        ),
        (
            "PUT",
            "/v1/session/create",
            br#"{"TTL":"5s"}"#,
            500,
            "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]",
        ),
        ("PUT", "/v1/session/create", br#"{"TTL":"soon"}"#, 500, "Session TTL 'soon' invalid"),
        (
            "PUT",
            "/v1/session/create",
            br#"{"Behavior":"explode"}"#,
            500,
            "Invalid Behavior setting 'explode'",
        ),
        ("PUT", "/v1/session/create", br#"{"Node":"nope"}"#, 500, "Missing node registration"),
        (
            "PUT",
            "/v1/kv/x?acquire=00000000-0000-0000-0000-000000000000",
            b"",
            500,
            "invalid session",
        ),
        ("PUT", "/v1/agent/service/register", br#"{"Port":1}"#, 400, "service name"),
        ("PUT", "/v1/agent/check/update/nope", br#"{"Status":"sideways"}"#, 400, "status"),
        ("GET", "/v1/kv/%FF%FE", b"", 400, "UTF-8"),
        ("DELETE", "/v1/status/leader", b"", 405, "not allowed"),
    ];
    // A path no endpoint serves: a bare 404, as Consul's mux answers it.
    let r = send(&s, "GET", "/v1/no/such/endpoint", b"").await;
    assert_eq!((r.status, r.body.len(), r.header("content-type")), (404, 0, None));
    for (method, target, body, status, needle) in cases {
        let r = send(&s, method, target, body).await;
        assert_eq!(r.status, *status, "{method} {target}: {}", r.text());
        assert!(
            r.text().contains(needle),
            "{method} {target}: {:?} should mention {needle:?}",
            r.text()
        );
    }
    let huge = vec![b'x'; 512 * 1024 + 1];
    assert_eq!(send(&s, "PUT", "/v1/kv/huge", &huge).await.status, 413);
    // The server is still up and nothing stored was lost.
    assert_eq!(send(&s, "GET", "/v1/kv/keep?raw", b"").await.body, b"safe");
    assert_eq!(send(&s, "GET", "/v1/kv/huge", b"").await.status, 404);
}

#[tokio::test]
async fn faults_are_injected_over_http_under_their_own_prefix() {
    let (_sim, s) = server().await;
    assert_eq!(send(&s, "PUT", "/v1/_sim/leader?lost=true", b"").await.status, 200);
    let r = send(&s, "GET", "/v1/kv/x", b"").await;
    assert_eq!((r.status, r.text().as_str()), (500, "No cluster leader"));
    assert_eq!(send(&s, "GET", "/v1/status/leader", b"").await.json(), "");
    assert_eq!(send(&s, "PUT", "/v1/_sim/leader?lost=false", b"").await.status, 200);
    assert_eq!(send(&s, "GET", "/v1/kv/x", b"").await.status, 404);
    assert_eq!(send(&s, "PUT", "/v1/_sim/session/expire/nope", b"").await.status, 404);
    assert_eq!(send(&s, "PUT", "/v1/_sim/latency?ms=soon", b"").await.status, 400);
}

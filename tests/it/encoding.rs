//! How answers are encoded on the wire, over HTTP on the sim and on a real Consul 1.8.7:
//! - every answer of a Consul endpoint carries `Vary: Accept-Encoding` and, for a client
//!   that accepts gzip, a non-empty body goes out gzipped; the mux's own answers (an unknown
//!   path, a redirect, the index page) carry neither;
//! - `?pretty` (and every answer of a dev agent) indents JSON as Go's `MarshalIndent`.

use std::io::Read as _;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

use consul_sim::SimConfig;

use crate::real_consul::RealConsul;
use crate::support::{RawClient, raw_client, served, unique};

struct Answer {
    status: u16,
    vary: Option<String>,
    encoding: Option<String>,
    /// How the body was framed: a `Content-Length`, or `Transfer-Encoding: chunked`.
    framing: (bool, bool),
    body: Bytes,
}

async fn send(
    client: &RawClient,
    base: &str,
    (method, target, body): (&str, &str, &str),
    accept: Option<&str>,
) -> Answer {
    let mut req = http::Request::builder().method(method).uri(format!("{base}{target}"));
    if let Some(a) = accept {
        req = req.header("Accept-Encoding", a);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).expect("request");
    let resp = tokio::time::timeout(Duration::from_secs(20), client.request(req))
        .await
        .expect("an answer within 20 s")
        .expect("transport");
    let header = |name| {
        resp.headers()
            .get(name)
            .map(|v: &http::HeaderValue| String::from_utf8_lossy(v.as_bytes()).into_owned())
    };
    let (vary, encoding) = (header("vary"), header("content-encoding"));
    let chunked = header("transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked"));
    let framing = (header("content-length").is_some(), chunked);
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Answer { status, vary, encoding, framing, body }
}

fn gunzip(body: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(body).read_to_end(&mut out).expect("a gzip body");
    out
}

#[tokio::test]
async fn endpoints_vary_on_accept_encoding_and_gzip_for_clients_that_accept_it() {
    let server = served(SimConfig::default()).await;
    let consul = RealConsul::start().await;
    let client = raw_client();
    let p = unique("encoding");
    let (a, missing, raw) =
        (format!("/v1/kv/{p}/a"), format!("/v1/kv/{p}/missing"), format!("/v1/kv/{p}/a?raw"));
    let dc = format!("/v1/kv/{p}/a?dc=nowhere");
    let bad_wait = format!("/v1/kv/{p}/a?index=x");
    // (request, whether an endpoint answers it), each checked on Consul 1.8.7 with curl.
    let requests: Vec<((&str, &str, &str), bool)> = vec![
        (("PUT", &a, "a value"), true),
        (("GET", &a, ""), true),
        (("GET", &raw, ""), true),
        (("GET", &missing, ""), true),
        (("GET", &dc, ""), true),
        (("GET", &bad_wait, ""), true),
        (("DELETE", "/v1/status/leader", ""), true),
        (("GET", "/v1/txn", ""), true),
        (("PUT", "/v1/txn", "not json"), true),
        (("GET", "/v1/acl/tokens", ""), true),
        (("GET", "/v1/session/info/", ""), true),
        (("GET", "/v1/agent/service/nope", ""), true),
        (("OPTIONS", &a, ""), true),
        (("GET", "/v1/status/leader", ""), true),
        (("GET", "/v1/nope", ""), false),
        (("GET", "/v1/agent/nope", ""), false),
        (("GET", "/v1/catalog/nope", ""), false),
        (("GET", "/v1/nope?dc=nowhere", ""), false),
        (("GET", "/v1//kv/x", ""), false),
        (("GET", "/", ""), false),
        (("PUT", "/", ""), false),
    ];
    for (name, base) in [("sim over HTTP", server.url()), ("real Consul 1.8.7", consul.url())] {
        for &(req, endpoint) in &requests {
            let what = format!("{name}: {} {}", req.0, req.1);
            let plain = send(&client, &base, req, None).await;
            let packed = send(&client, &base, req, Some("gzip")).await;
            let refused = send(&client, &base, req, Some("gzip;q=0")).await;
            for (answer, how) in [(&plain, "plain"), (&packed, "gzip"), (&refused, "q=0")] {
                assert_eq!(answer.status, plain.status, "{what} ({how}): status");
                let want = endpoint.then_some("Accept-Encoding");
                assert_eq!(answer.vary.as_deref(), want, "{what} ({how}): Vary");
            }
            assert_eq!(plain.encoding, None, "{what}: no Content-Encoding unasked");
            assert_eq!(refused.encoding, None, "{what}: no Content-Encoding for q=0");
            if endpoint && !plain.body.is_empty() {
                assert_eq!(packed.encoding.as_deref(), Some("gzip"), "{what}: gzipped");
                let body = gunzip(&packed.body);
                // Answers that name a time or an index would differ between two requests;
                // none of these do.
                assert_eq!(
                    String::from_utf8_lossy(&body),
                    String::from_utf8_lossy(&plain.body),
                    "{what}: the gzipped body"
                );
            } else {
                assert_eq!(packed.encoding, None, "{what}: no Content-Encoding");
                assert_eq!(packed.body, plain.body, "{what}: the body");
            }
        }
    }
    // The index page says what it is, for every method.
    let index = send(&client, &server.url(), ("DELETE", "/", ""), None).await;
    assert_eq!((index.status, &index.body[..]), (200, &b"Consul Agent"[..]));
}

/// The body with every run of digits replaced by one `0`: indexes, ports and times differ
/// between two agents, the layout must not.
fn layout(body: &[u8]) -> String {
    let mut out = String::new();
    for c in String::from_utf8_lossy(body).chars() {
        if c.is_ascii_digit() {
            if !out.ends_with('0') {
                out.push('0');
            }
        } else {
            out.push(c);
        }
    }
    out
}

#[tokio::test]
async fn pretty_indents_json_as_consul_does_and_a_dev_agent_always_does() {
    let compact = served(SimConfig::default()).await;
    let dev = served(SimConfig { pretty: true, ..SimConfig::default() }).await;
    let consul = RealConsul::start().await;
    let client = raw_client();
    let p = unique("pretty");
    let (a, keys) = (format!("/v1/kv/{p}/a"), format!("/v1/kv/{p}/?keys"));
    let txn = format!(r#"[{{"KV":{{"Verb":"get","Key":"{p}/a"}}}}]"#);
    let conflict = format!(r#"[{{"KV":{{"Verb":"check-index","Key":"{p}/a","Index":1}}}}]"#);
    let set = format!(
        r#"[{{"KV":{{"Verb":"set","Key":"{p}/b","Value":"dg=="}}}},{{"KV":{{"Verb":"get","Key":"{p}/a"}}}}]"#
    );
    let missing = format!(r#"[{{"KV":{{"Verb":"get","Key":"{p}/<no>&"}}}}]"#);
    let lines = format!(
        r#"[{{"KV":{{"Verb":"set","Key":"{p}/l\u2028s\u2029","Value":"dg=="}}}},{{"KV":{{"Verb":"get","Key":"{p}/l\u2028s\u2029"}}}}]"#
    );
    let requests: Vec<(&str, String, &str)> = vec![
        ("PUT", a.clone(), "some value"),
        ("GET", a.clone(), ""),
        ("GET", keys, ""),
        ("PUT", "/v1/txn".into(), &txn),
        ("PUT", "/v1/txn".into(), &conflict),
        ("PUT", "/v1/txn".into(), &set),
        ("GET", "/v1/catalog/datacenters".into(), ""),
        ("GET", "/v1/status/leader".into(), ""),
        ("GET", format!("{a}?raw"), ""),
        ("GET", format!("/v1/kv/{p}/missing"), ""),
        ("GET", "/v1/kv/x?index=nope".into(), ""),
        // Go's encoder escapes <, >, & and U+2028/U+2029 in strings, keys and values alike.
        ("PUT", format!("/v1/kv/{p}/h%3Cb%3E%26c"), "x"),
        ("GET", format!("/v1/kv/{p}/?recurse"), ""),
        ("GET", format!("/v1/kv/{p}/?keys"), ""),
        ("PUT", "/v1/txn".into(), &missing),
        ("PUT", "/v1/txn".into(), &lines),
    ];
    for (method, target, body) in &requests {
        let sep = if target.contains('?') { '&' } else { '?' };
        let pretty = format!("{target}{sep}pretty");
        let what = format!("{method} {pretty}");
        // Consul's dev agent indents with or without `?pretty`.
        let want = send(&client, &consul.url(), (method, &pretty, body), None).await;
        let plain = send(&client, &consul.url(), (method, target, body), None).await;
        assert_eq!(layout(&plain.body), layout(&want.body), "Consul -dev: {what}");
        for (name, base, target) in
            [("sim, ?pretty", compact.url(), &pretty), ("sim as a dev agent", dev.url(), target)]
        {
            let got = send(&client, &base, (method, target, body), None).await;
            assert_eq!(got.status, want.status, "{name}: {what}");
            assert_eq!(layout(&got.body), layout(&want.body), "{name}: {what}");
        }
        // Without `?pretty`, an agent that is not in dev mode answers compact JSON.
        let got = send(&client, &compact.url(), (method, target, body), None).await;
        if got.body.starts_with(b"{") || got.body.starts_with(b"[") {
            assert!(!got.body.contains(&b'\n'), "compact: {method} {target}");
        }
    }
}

/// The keys of every object of `v` with two or more, in the order they are written, each
/// object's list once.
fn shapes(v: &Value, out: &mut std::collections::BTreeSet<Vec<String>>) {
    match v {
        Value::Object(m) => {
            if m.len() > 1 {
                out.insert(m.keys().cloned().collect());
            }
            m.values().for_each(|v| shapes(v, out));
        }
        Value::Array(a) => a.iter().for_each(|v| shapes(v, out)),
        _ => {}
    }
}

#[tokio::test]
async fn objects_write_their_fields_in_consuls_order() {
    // Go writes a struct's fields in their declared order and a map's keys sorted; the
    // sim's objects follow the same order (serde_json keeps the order fields are written
    // in). Compared by the keys of each object, values aside.
    let sim = served(SimConfig::default()).await;
    let consul = RealConsul::start().await;
    let client = raw_client();
    let p = unique("order");
    let service = r#"{"Name":"ord","ID":"ord1","Tags":["t"],"Port":80,"Meta":{"b":"1","a":"2"},"TaggedAddresses":{"wan":{"Address":"10.9.9.9","Port":81},"lan":{"Address":"10.0.0.9","Port":80}},"Check":{"TTL":"30s"}}"#;
    let node = r#"{"Node":"ordn","Address":"10.0.0.1","NodeMeta":{"z":"1","m":"2"},"Service":{"Service":"ords","Port":1,"Meta":{"y":"1","x":"2"}},"Check":{"CheckID":"c1","Name":"c1","Status":"passing","ServiceID":"ords","Output":"ok"}}"#;
    let setup: Vec<(&str, String, &str)> = vec![
        ("PUT", "/v1/agent/service/register".into(), service),
        ("PUT", "/v1/catalog/register".into(), node),
        ("PUT", format!("/v1/kv/{p}/a"), "x"),
        ("PUT", "/v1/session/create".into(), r#"{"Name":"o","TTL":"30s"}"#),
        ("PUT", "/v1/event/fire/ord".into(), "payload"),
    ];
    let endpoints = [
        "/v1/agent/services".to_string(),
        "/v1/agent/service/ord1".into(),
        "/v1/agent/checks".into(),
        "/v1/agent/members".into(),
        "/v1/agent/health/service/name/ord".into(),
        "/v1/catalog/services".into(),
        "/v1/catalog/service/ords".into(),
        "/v1/catalog/service/ord".into(),
        "/v1/catalog/nodes".into(),
        "/v1/catalog/node/ordn".into(),
        "/v1/health/service/ord".into(),
        "/v1/health/node/ordn".into(),
        "/v1/health/checks/ord".into(),
        "/v1/health/state/any".into(),
        "/v1/session/list".into(),
        format!("/v1/kv/{p}/a"),
        "/v1/event/list".into(),
        "/v1/operator/raft/configuration".into(),
        "/v1/operator/autopilot/configuration".into(),
    ];
    for base in [sim.url(), consul.url()] {
        for (method, target, body) in &setup {
            let answer = send(&client, &base, (method, target, body), None).await;
            assert_eq!(answer.status, 200, "{base} {method} {target}");
        }
    }
    for target in &endpoints {
        let mut got = Vec::new();
        for base in [sim.url(), consul.url()] {
            // Consul's agent hears its own event through Serf a moment after firing it.
            let mut tries = 0;
            let (status, found) = loop {
                let answer = send(&client, &base, ("GET", target, ""), None).await;
                let v: Value = serde_json::from_slice(&answer.body).expect("JSON");
                let mut found = std::collections::BTreeSet::new();
                shapes(&v, &mut found);
                tries += 1;
                if !found.is_empty() || tries == 50 {
                    break (answer.status, found);
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            };
            got.push((status, found));
        }
        assert!(!got[1].1.is_empty(), "{target}: nothing compared");
        assert_eq!(got[0], got[1], "{target}: the sim's objects (left), Consul's (right)");
    }
}

#[tokio::test]
async fn bodies_are_framed_as_gos_net_http_frames_them() {
    // Go sends an answer that fits its 2 KiB response buffer with a Content-Length, a longer
    // one chunked, unless the handler set the length (a raw value) or the gzip handler
    // compressed it into the buffer.
    let sim = served(SimConfig { pretty: true, ..SimConfig::default() }).await;
    let consul = RealConsul::start().await;
    let client = raw_client();
    let p = unique("framing");
    let (small, big) = ("s".repeat(100), "b".repeat(2100));
    let (s, b) = (format!("/v1/kv/{p}/small"), format!("/v1/kv/{p}/big"));
    for base in [sim.url(), consul.url()] {
        for (key, value) in [(&s, &small), (&b, &big)] {
            assert_eq!(send(&client, &base, ("PUT", key, value), None).await.status, 200);
        }
    }
    let requests = [
        (s.clone(), None),
        (b.clone(), None),
        (format!("{b}?raw"), None),
        (format!("{s}?raw"), None),
        (b.clone(), Some("gzip")),
        (format!("{b}?raw"), Some("gzip")),
        ("/v1/agent/self".to_string(), None),
    ];
    for (target, accept) in &requests {
        let want = send(&client, &consul.url(), ("GET", target, ""), *accept).await;
        let got = send(&client, &sim.url(), ("GET", target, ""), *accept).await;
        assert_eq!(got.framing, want.framing, "GET {target} ({accept:?}): (length, chunked)");
    }
}

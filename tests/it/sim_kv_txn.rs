//! KV, sessions and transactions on the sim, request by request, with the answers Consul
//! 1.8.7 gave to the same requests (status, text, headers). Session ids and indexes are
//! the only values that differ between the two.

use bytes::Bytes;
use consul_sim::{Sim, SimConfig, SimRequest, SimResponse};
use http::{HeaderMap, Method};
use serde_json::{Value, json};

struct Api(Sim);

impl Api {
    fn new() -> Api {
        Api(Sim::new(SimConfig::default()))
    }

    async fn send(&self, method: Method, target: &str, body: impl Into<Bytes>) -> SimResponse {
        let req = SimRequest {
            method,
            target: target.to_string(),
            headers: HeaderMap::new(),
            body: body.into(),
        };
        self.0.execute("test", req).await.expect("not partitioned")
    }

    async fn get(&self, target: &str) -> SimResponse {
        self.send(Method::GET, target, Bytes::new()).await
    }

    async fn put(&self, target: &str, body: &str) -> SimResponse {
        self.send(Method::PUT, target, Bytes::from(body.to_string())).await
    }

    async fn session(&self, body: &str) -> String {
        let r = self.put("/v1/session/create", body).await;
        assert_eq!(r.status, 200, "{}", text(&r));
        json_of(&r)["ID"].as_str().unwrap().to_string()
    }

    async fn txn(&self, ops: Value) -> SimResponse {
        self.put("/v1/txn", &ops.to_string()).await
    }
}

fn text(r: &SimResponse) -> String {
    String::from_utf8_lossy(&r.body).into_owned()
}

fn json_of(r: &SimResponse) -> Value {
    serde_json::from_slice(&r.body).unwrap_or_else(|e| panic!("{e}: {}", text(r)))
}

fn header<'r>(r: &'r SimResponse, name: &str) -> Option<&'r str> {
    r.headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
}

/// Status and body text, for one-line comparisons with Consul's answer.
fn answer(r: &SimResponse) -> (u16, String) {
    (r.status.as_u16(), text(r))
}

fn errors(r: &SimResponse) -> Vec<(u64, String)> {
    json_of(r)["Errors"]
        .as_array()
        .unwrap_or_else(|| panic!("no Errors: {}", text(r)))
        .iter()
        .map(|e| (e["OpIndex"].as_u64().unwrap(), e["What"].as_str().unwrap().to_string()))
        .collect()
}

#[tokio::test(start_paused = true)]
async fn session_create_fails_with_consuls_status_and_text() {
    let api = Api::new();
    let cases = [
        (r#"{"TTL":"5s"}"#, 500, "Invalid Session TTL '5000000000', must be between [10s=24h0m0s]"),
        (
            r#"{"TTL":"25h"}"#,
            500,
            "Invalid Session TTL '90000000000000', must be between [10s=24h0m0s]",
        ),
        (r#"{"TTL":"abc"}"#, 500, r#"Session TTL 'abc' invalid: time: invalid duration "abc""#),
        (
            r#"{"TTL":"15000000000"}"#,
            500,
            r#"Session TTL '15000000000' invalid: time: missing unit in duration "15000000000""#,
        ),
        (
            r#"{"TTL":5}"#,
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field .TTL of type string",
        ),
        (r#"{"Node":"nope"}"#, 500, "Missing node registration"),
        (r#"{"Behavior":"foo"}"#, 500, "Invalid Behavior setting 'foo'"),
        (r#"{"NodeChecks":["nope"]}"#, 500, "Missing check 'nope' registration"),
    ];
    for (body, status, message) in cases {
        let r = api.put("/v1/session/create", body).await;
        assert_eq!(answer(&r), (status, message.to_string()), "{body}");
    }
}

#[tokio::test(start_paused = true)]
async fn session_fields_are_consuls() {
    let api = Api::new();
    // TTL is shown as sent; "0s" means no TTL; a LockDelay number below 1000 is seconds.
    let id = api.session(r#"{"TTL":"10000ms","LockDelay":20,"Name":"n"}"#).await;
    let r = api.get(&format!("/v1/session/info/{id}")).await;
    let info = &json_of(&r)[0];
    let mut fields: Vec<&str> = info.as_object().unwrap().keys().map(String::as_str).collect();
    fields.sort_unstable();
    assert_eq!(
        fields,
        [
            "Behavior",
            "CreateIndex",
            "ID",
            "LockDelay",
            "ModifyIndex",
            "Name",
            "Node",
            "NodeChecks",
            "ServiceChecks",
            "TTL"
        ]
    );
    assert_eq!(info["TTL"], "10000ms");
    assert_eq!(info["LockDelay"], 20_000_000_000u64);
    assert_eq!(info["NodeChecks"], json!(["serfHealth"]));
    assert_eq!(info["ServiceChecks"], Value::Null);
    let zero = api.session(r#"{"TTL":"0s"}"#).await;
    let r = api.get(&format!("/v1/session/info/{zero}")).await;
    assert_eq!(json_of(&r)[0]["TTL"], "0s");
    // Consul's ids are 128 random bits in UUID form.
    assert_eq!(id.len(), 36);
    assert_ne!(id, zero);
    // Unknown ids: [] with an index; not a UUID: 500; none: 400.
    let r = api.get("/v1/session/info/00000000-0000-0000-0000-000000000000").await;
    assert_eq!(answer(&r), (200, "[]".into()));
    assert!(header(&r, "X-Consul-Index").is_some());
    let r = api.get("/v1/session/info/abc").await;
    assert_eq!(
        answer(&r),
        (500, "failed session lookup: index error: UUID must be 36 characters".into())
    );
    assert_eq!(header(&r, "X-Consul-KnownLeader"), Some("false"));
    assert_eq!(answer(&api.get("/v1/session/info/").await), (400, "Missing session".into()));
    assert_eq!(answer(&api.get("/v1/session/node/nope").await), (200, "[]".into()));
    let gone = "00000000-0000-0000-0000-000000000000";
    let r = api.put(&format!("/v1/session/renew/{gone}"), "").await;
    assert_eq!(answer(&r), (404, format!("Session id '{gone}' not found")));
    let r = api.put(&format!("/v1/session/destroy/{gone}"), "").await;
    assert_eq!(answer(&r), (200, "true".into()));
}

#[tokio::test(start_paused = true)]
async fn a_session_is_reaped_at_twice_its_ttl_and_lock_delay_is_capped_at_60s() {
    let api = Api::new();
    let s = api.session(r#"{"TTL":"10s","LockDelay":"90s"}"#).await;
    assert_eq!(text(&api.put(&format!("/v1/kv/k?acquire={s}"), "v").await), "true");
    let start = tokio::time::Instant::now();
    // Measured on Consul 1.8.7: the key's Session was cleared 20.06 s after the last renew.
    tokio::time::sleep_until(start + std::time::Duration::from_millis(19_990)).await;
    assert!(json_of(&api.get("/v1/kv/k").await)[0]["Session"].is_string());
    tokio::time::sleep_until(start + std::time::Duration::from_millis(20_010)).await;
    assert!(json_of(&api.get("/v1/kv/k").await)[0].get("Session").is_none());
    // LockDelay 90s is stored but Consul enforces at most 60 s (measured: 60.5 s).
    let other = api.session(r#"{"LockDelay":"0s"}"#).await;
    tokio::time::sleep_until(start + std::time::Duration::from_millis(79_990)).await;
    assert_eq!(text(&api.put(&format!("/v1/kv/k?acquire={other}"), "w").await), "false");
    tokio::time::sleep_until(start + std::time::Duration::from_millis(80_010)).await;
    assert_eq!(text(&api.put(&format!("/v1/kv/k?acquire={other}"), "w").await), "true");
}

#[tokio::test(start_paused = true)]
async fn kv_writes_and_reads_answer_as_consul_does() {
    let api = Api::new();
    // An empty value reads back as null; ?raw answers it empty.
    api.put("/v1/kv/empty", "").await;
    assert_eq!(json_of(&api.get("/v1/kv/empty").await)[0]["Value"], Value::Null);
    // A PUT without ?flags stores 0.
    api.put("/v1/kv/fl?flags=42", "a").await;
    api.put("/v1/kv/fl", "b").await;
    assert_eq!(json_of(&api.get("/v1/kv/fl").await)[0]["Flags"], 0);
    // ?raw: text/plain, never sniffed, sandboxed.
    let r = api.get("/v1/kv/fl?raw").await;
    assert_eq!(r.body, "b");
    assert_eq!(header(&r, "Content-Type"), Some("text/plain"));
    assert_eq!(header(&r, "X-Content-Type-Options"), Some("nosniff"));
    assert_eq!(header(&r, "Content-Security-Policy"), Some("sandbox"));
    // Bad numbers are Go's strconv errors, with 500.
    let r = api.put("/v1/kv/fl?flags=abc", "x").await;
    assert_eq!(answer(&r), (500, r#"strconv.ParseUint: parsing "abc": invalid syntax"#.into()));
    let r = api.put("/v1/kv/fl?cas=99999999999999999999", "x").await;
    assert_eq!(
        answer(&r),
        (500, r#"strconv.ParseUint: parsing "99999999999999999999": value out of range"#.into())
    );
    // Conflicting flags quote the query as Go re-encodes it (sorted).
    let s = api.session(r#"{"LockDelay":"0s"}"#).await;
    let r = api.put(&format!("/v1/kv/fl?release={s}&acquire={s}"), "x").await;
    assert_eq!(answer(&r), (400, format!("Conflicting flags: acquire={s}&release={s}")));
    let r = api.put(&format!("/v1/kv/fl?cas=0&acquire={s}"), "x").await;
    assert_eq!(answer(&r), (400, format!("Conflicting flags: acquire={s}&cas=0")));
    // Release by an unknown (or malformed) session is false; acquire is a 500.
    let gone = "00000000-0000-0000-0000-000000000000";
    assert_eq!(
        answer(&api.put(&format!("/v1/kv/fl?release={gone}"), "x").await),
        (200, "false".into())
    );
    assert_eq!(answer(&api.put("/v1/kv/fl?release=abc", "x").await), (200, "false".into()));
    let r = api.put(&format!("/v1/kv/fl?acquire={gone}"), "x").await;
    assert_eq!(answer(&r), (500, format!("invalid session \"{gone}\"")));
    let r = api.put("/v1/kv/fl?acquire=abc", "x").await;
    assert_eq!(
        answer(&r),
        (500, "failed session lookup: index error: UUID must be 36 characters".into())
    );
    // DELETE of a missing key is true, with or without cas; a stale cas on a key is false.
    for target in ["/v1/kv/missing", "/v1/kv/missing?cas=0", "/v1/kv/missing?cas=5"] {
        assert_eq!(answer(&api.send(Method::DELETE, target, "").await), (200, "true".into()));
    }
    let r = api.send(Method::DELETE, "/v1/kv/fl?cas=1", "").await;
    assert_eq!(answer(&r), (200, "false".into()));
    // 413 names the option.
    let r = api.send(Method::PUT, "/v1/kv/big", vec![b'x'; 512 * 1024 + 1]).await;
    assert_eq!(
        answer(&r),
        (
            413,
            "Request body(524289 bytes) too large, max size: 524288 bytes. See \
             https://www.consul.io/docs/agent/options.html#kv_max_value_size."
                .into()
        )
    );
}

#[tokio::test(start_paused = true)]
async fn kv_keys_and_separators_list_as_consul_does() {
    let api = Api::new();
    for k in ["tree/a", "tree/b/c", "tree/b/d/e", "treex"] {
        api.put(&format!("/v1/kv/{k}"), "1").await;
    }
    let keys = |target: &'static str| {
        let api = &api;
        async move { json_of(&api.get(target).await) }
    };
    assert_eq!(keys("/v1/kv/tree/?keys&separator=/").await, json!(["tree/a", "tree/b/"]));
    assert_eq!(keys("/v1/kv/tree?keys&separator=/").await, json!(["tree/", "treex"]));
    assert_eq!(
        keys("/v1/kv/tree?keys").await,
        json!(["tree/a", "tree/b/c", "tree/b/d/e", "treex"])
    );
    assert_eq!(keys("/v1/kv/tree/?keys&separator=b/").await, json!(["tree/a", "tree/b/"]));
    assert_eq!(
        keys("/v1/kv/tree/?keys&separator=").await,
        json!(["tree/a", "tree/b/c", "tree/b/d/e"])
    );
    // ?keys wins over ?recurse; ?recurse wins over ?raw.
    assert_eq!(
        keys("/v1/kv/tree/?recurse&keys").await,
        json!(["tree/a", "tree/b/c", "tree/b/d/e"])
    );
    assert_eq!(keys("/v1/kv/tree/a?raw&recurse").await[0]["Key"], "tree/a");
    for method in [Method::GET, Method::PUT, Method::DELETE] {
        let r = api.send(method.clone(), "/v1/kv/", "x").await;
        assert_eq!(answer(&r), (400, "Missing key name".into()), "{method}");
    }
}

#[tokio::test(start_paused = true)]
async fn locks_lock_delay_and_behavior_delete_follow_consul() {
    let api = Api::new();
    let s2 = api.session(r#"{"LockDelay":"0s"}"#).await;
    // Re-acquiring by the holder keeps LockIndex and takes the new value and flags.
    api.put(&format!("/v1/kv/s?acquire={s2}"), "1").await;
    api.put(&format!("/v1/kv/s?acquire={s2}&flags=7"), "2").await;
    let e = json_of(&api.get("/v1/kv/s").await)[0].clone();
    assert_eq!((e["LockIndex"].as_u64(), e["Flags"].as_u64()), (Some(1), Some(7)));
    // Release with an empty body clears the value too.
    api.put(&format!("/v1/kv/s?release={s2}"), "").await;
    let e = json_of(&api.get("/v1/kv/s").await)[0].clone();
    assert_eq!((e["Value"].clone(), e.get("Session")), (Value::Null, None));
    // Destroying a holder with a lock-delay blocks acquire (false) and txn lock (its own
    // text), but not plain writes.
    let a = api.session(r#"{"LockDelay":"15s"}"#).await;
    api.put(&format!("/v1/kv/k?acquire={a}"), "v").await;
    api.put(&format!("/v1/session/destroy/{a}"), "").await;
    assert_eq!(text(&api.put(&format!("/v1/kv/k?acquire={s2}"), "w").await), "false");
    let r = api.txn(json!([{"KV": {"Verb": "lock", "Key": "k", "Session": s2}}])).await;
    assert_eq!(r.status, 409);
    assert_eq!(errors(&r), [(0, "failed to lock key \"k\" due to lock delay".to_string())]);
    assert_eq!(text(&api.put("/v1/kv/k", "z").await), "true");
    // An explicit release starts no lock-delay.
    let b = api.session(r#"{"LockDelay":"15s"}"#).await;
    api.put(&format!("/v1/kv/r?acquire={b}"), "v").await;
    api.put(&format!("/v1/kv/r?release={b}"), "v").await;
    assert_eq!(text(&api.put(&format!("/v1/kv/r?acquire={s2}"), "w").await), "true");
    assert_eq!(json_of(&api.get("/v1/kv/r").await)[0]["LockIndex"], 2);
    // Behavior delete removes held keys.
    let d = api.session(r#"{"LockDelay":"0s","Behavior":"delete"}"#).await;
    api.put(&format!("/v1/kv/d?acquire={d}"), "v").await;
    api.put(&format!("/v1/session/destroy/{d}"), "").await;
    assert_eq!(api.get("/v1/kv/d").await.status, 404);
}

#[tokio::test(start_paused = true)]
async fn txn_failures_use_consuls_words() {
    let api = Api::new();
    let s = api.session(r#"{"LockDelay":"0s"}"#).await;
    let s2 = api.session(r#"{"LockDelay":"0s"}"#).await;
    api.put("/v1/kv/a", "va").await;
    api.put(&format!("/v1/kv/l?acquire={s}"), "v").await;
    let a_index = json_of(&api.get("/v1/kv/a").await)[0]["ModifyIndex"].as_u64().unwrap();
    let gone = "00000000-0000-0000-0000-000000000000";
    let cases = [
        (json!({"Verb": "get", "Key": "missing"}), r#"key "missing" doesn't exist"#.to_string()),
        (
            json!({"Verb": "cas", "Key": "a", "Index": 1}),
            r#"failed to set key "a", index is stale"#.into(),
        ),
        (
            json!({"Verb": "cas", "Key": "zz", "Index": 5}),
            r#"failed to set key "zz", index is stale"#.into(),
        ),
        (
            json!({"Verb": "check-index", "Key": "a", "Index": 1}),
            format!(r#"failed index check for key "a", current modify index {a_index} != 1"#),
        ),
        (
            json!({"Verb": "check-index", "Key": "zz", "Index": 1}),
            r#"failed to check index, key "zz" doesn't exist"#.into(),
        ),
        (
            json!({"Verb": "check-session", "Key": "a", "Session": s}),
            format!(r#"failed session check for key "a", current session "" != "{s}""#),
        ),
        (
            json!({"Verb": "check-session", "Key": "zz", "Session": s}),
            r#"failed to check session, key "zz" doesn't exist"#.into(),
        ),
        (json!({"Verb": "check-not-exists", "Key": "a"}), r#"key "a" exists"#.into()),
        (json!({"Verb": "lock", "Key": "a"}), "missing session".into()),
        (
            json!({"Verb": "lock", "Key": "a", "Session": gone}),
            format!(r#"invalid session "{gone}""#),
        ),
        (
            json!({"Verb": "lock", "Key": "l", "Session": s2}),
            r#"failed to lock key "l", lock is already held"#.into(),
        ),
        (json!({"Verb": "unlock", "Key": "a"}), "missing session".into()),
        (
            json!({"Verb": "unlock", "Key": "a", "Session": gone}),
            r#"failed to unlock key "a", lock isn't held, or is held by another session"#.into(),
        ),
        (
            json!({"Verb": "delete-cas", "Key": "a", "Index": 1}),
            r#"failed to delete key "a", index is stale"#.into(),
        ),
        (json!({"Verb": "set", "Key": ""}), "Must provide key".into()),
        (json!({"Verb": "frob", "Key": "x"}), r#"unknown KV verb "frob""#.into()),
        (json!({"Key": "x"}), r#"unknown KV verb """#.into()),
    ];
    for (op, what) in cases {
        let r = api.txn(json!([{ "KV": op }])).await;
        assert_eq!(r.status, 409, "{op}: {}", text(&r));
        assert_eq!(errors(&r), [(0, what)], "{op}");
        assert_eq!(json_of(&r)["Results"], Value::Null);
    }
    // delete-cas of a missing key succeeds.
    let r = api.txn(json!([{"KV": {"Verb": "delete-cas", "Key": "zz", "Index": 1}}])).await;
    assert_eq!((r.status.as_u16(), json_of(&r)), (200, json!({"Results": [], "Errors": null})));
}

#[tokio::test(start_paused = true)]
async fn txn_reads_and_writes_answer_in_consuls_two_shapes() {
    let api = Api::new();
    api.put("/v1/kv/a", "va").await;
    // Only reads (or no ops, or unknown verbs): the read path, with query metadata.
    let r = api.txn(json!([])).await;
    assert_eq!(
        (r.status.as_u16(), json_of(&r)),
        (
            200,
            json!({"Results": [], "Errors": null, "Index": 0, "LastContact": 0,
                   "KnownLeader": true, "ConsistencyLevel": ""})
        )
    );
    assert_eq!(header(&r, "X-Consul-KnownLeader"), Some("true"));
    assert_eq!(header(&r, "X-Consul-Index"), None);
    let r = api.txn(json!([{}])).await;
    assert_eq!(json_of(&r)["Results"], json!([]));
    let r = api
        .txn(json!([{"KV": {"Verb": "get", "Key": "m1"}}, {"KV": {"Verb": "get", "Key": "m2"}}]))
        .await;
    assert_eq!(
        errors(&r),
        [
            (0, r#"key "m1" doesn't exist"#.to_string()),
            (1, r#"key "m2" doesn't exist"#.to_string())
        ]
    );
    assert_eq!(json_of(&r)["KnownLeader"], true);
    // A write: no metadata; reads return values, writes null values; one index for all.
    let r = api
        .txn(json!([
            {"KV": {"Verb": "get", "Key": "a"}},
            {"KV": {"Verb": "set", "Key": "m/1", "Value": "Yg=="}},
            {"KV": {"Verb": "set", "Key": "m/2"}},
        ]))
        .await;
    assert_eq!(r.status, 200, "{}", text(&r));
    let v = json_of(&r);
    assert_eq!(v.as_object().unwrap().len(), 2, "only Results and Errors: {v}");
    assert_eq!(header(&r, "X-Consul-KnownLeader"), None);
    let results = v["Results"].as_array().unwrap();
    assert_eq!(results[0]["KV"]["Value"], "dmE=");
    assert_eq!(results[1]["KV"]["Value"], Value::Null);
    assert_eq!(results[1]["KV"]["ModifyIndex"], results[2]["KV"]["ModifyIndex"]);
    // Every failure of a write is reported, and nothing is applied.
    let r = api
        .txn(json!([
            {"KV": {"Verb": "set", "Key": "new"}},
            {"KV": {"Verb": "get", "Key": "nope"}},
            {"KV": {"Verb": "cas", "Key": "a", "Index": 1}},
        ]))
        .await;
    assert_eq!(
        errors(&r),
        [
            (1, r#"key "nope" doesn't exist"#.to_string()),
            (2, r#"failed to set key "a", index is stale"#.to_string())
        ]
    );
    assert_eq!(json_of(&r).as_object().unwrap().len(), 2);
    assert_eq!(api.get("/v1/kv/new").await.status, 404);
    // Checks before applying (empty key, lock-delay) fail alone: the missing session of op
    // 0 is not reported.
    let r = api
        .txn(json!([{"KV": {"Verb": "lock", "Key": "l"}}, {"KV": {"Verb": "set", "Key": ""}}]))
        .await;
    assert_eq!(errors(&r), [(1, "Must provide key".to_string())]);
    // Keys are matched case-insensitively.
    let r = api.put("/v1/txn", r#"[{"kv":{"verb":"set","key":"lc","value":"eA=="}}]"#).await;
    assert_eq!(r.status, 200);
}

#[tokio::test(start_paused = true)]
async fn malformed_txns_are_refused_as_consul_refuses_them() {
    let api = Api::new();
    let cases = [
        ("", 400, "Failed to parse body: EOF"),
        (
            "{}",
            400,
            "Failed to parse body: json: cannot unmarshal object into Go value of type api.TxnOps",
        ),
        (r#"[{"Foo":{}}]"#, 400, r#"Failed to parse body: json: unknown field "Foo""#),
        (
            r#"[{"KV":{"Verb":"set","Key":"q","Value":"!!"}}]"#,
            400,
            "Failed to parse body: illegal base64 data at input byte 0",
        ),
        (
            r#"[{"KV":{"Verb":"cas","Key":"q","Index":"5"}}]"#,
            400,
            "Failed to parse body: json: cannot unmarshal string into Go struct field KVTxnOp.KV.Index of type uint64",
        ),
    ];
    for (body, status, message) in cases {
        assert_eq!(
            answer(&api.put("/v1/txn", body).await),
            (status, message.to_string()),
            "{body}"
        );
    }
    // Consul 1.8.7 allows 64 operations (65 → 413 "Transaction contains too many operations
    // (65 > 64)"); the sim follows today's documented 128.
    let ops = |n: usize| {
        Value::Array(
            (0..n).map(|i| json!({"KV": {"Verb": "set", "Key": format!("k{i}")}})).collect(),
        )
    };
    assert_eq!(api.txn(ops(128)).await.status, 200);
    let r = api.txn(ops(129)).await;
    assert_eq!(answer(&r), (413, "Transaction contains too many operations (129 > 128)".into()));
}

#[tokio::test(start_paused = true)]
async fn the_deprecated_checks_list_is_kept_apart_and_still_binds() {
    let api = Api::new();
    let reg =
        r#"{"Name":"web","ID":"web1","Check":{"CheckID":"webttl","TTL":"30s","Status":"passing"}}"#;
    assert_eq!(api.put("/v1/agent/service/register", reg).await.status, 200);
    // As Consul 1.8.7 shows them: NodeChecks defaults to serfHealth, Checks stays apart,
    // and Checks == ["serfHealth"] (the old default) is dropped.
    let cases = [
        (r#"{"Checks":["serfHealth"]}"#, json!(["serfHealth"]), None),
        (
            r#"{"Checks":["webttl"],"Name":"legacy"}"#,
            json!(["serfHealth"]),
            Some(json!(["webttl"])),
        ),
        (r#"{"NodeChecks":[]}"#, json!([]), None),
    ];
    for (body, node_checks, checks) in cases {
        let id = api.session(body).await;
        let info = json_of(&api.get(&format!("/v1/session/info/{id}")).await)[0].clone();
        assert_eq!(info["NodeChecks"], node_checks, "{body}");
        assert_eq!(info.get("Checks").cloned(), checks, "{body}");
    }
    // A session bound through Checks ends when that check goes critical.
    assert_eq!(api.put("/v1/agent/check/fail/webttl", "").await.status, 200);
    let all = json_of(&api.get("/v1/session/list").await);
    assert!(all.as_array().unwrap().iter().all(|s| s["Name"] != "legacy"), "{all}");
}

#[tokio::test(start_paused = true)]
async fn a_write_that_changes_nothing_keeps_the_index() {
    // Consul 1.8.7: PUT of the same value and flags leaves ModifyIndex as it was (485, 485,
    // 485, then 488 for a new value); a txn set of the same value answers the old entry.
    let api = Api::new();
    let modify = |r: &SimResponse| json_of(r)[0]["ModifyIndex"].as_u64().unwrap();
    api.put("/v1/kv/same", "1").await;
    let first = modify(&api.get("/v1/kv/same").await);
    api.put("/v1/kv/same", "1").await;
    api.put("/v1/kv/same?flags=0", "1").await;
    assert_eq!(modify(&api.get("/v1/kv/same").await), first);
    api.put("/v1/kv/same", "2").await;
    let second = modify(&api.get("/v1/kv/same").await);
    assert!(second > first);
    let r = api.txn(json!([{"KV": {"Verb": "set", "Key": "same", "Value": "Mg=="}}])).await;
    assert_eq!(json_of(&r)["Results"][0]["KV"]["ModifyIndex"], second);
    assert_eq!(modify(&api.get("/v1/kv/same").await), second);
}

#[tokio::test(start_paused = true)]
async fn a_wrong_method_is_405_with_consuls_allow_header() {
    let api = Api::new();
    let cases = [
        (Method::POST, "/v1/kv/x", "OPTIONS,GET,PUT,DELETE"),
        (Method::GET, "/v1/txn", "OPTIONS,PUT"),
        (Method::PUT, "/v1/session/list", "OPTIONS,GET"),
        (Method::GET, "/v1/session/destroy/x", "OPTIONS,PUT"),
        (Method::DELETE, "/v1/status/leader", "OPTIONS,GET"),
    ];
    for (method, target, allow) in cases {
        let r = api.send(method.clone(), target, "").await;
        assert_eq!(answer(&r), (405, format!("method {method} not allowed")), "{target}");
        assert_eq!(header(&r, "Allow"), Some(allow), "{target}");
    }
}

#[tokio::test(start_paused = true)]
async fn malformed_session_requests_and_kv_flags_get_consuls_words() {
    let api = Api::new();
    let cases = [
        (
            "[]",
            400,
            "Request decode failed: json: cannot unmarshal array into Go value of type struct { LockDelay interface {}; *structs.Alias }",
        ),
        (
            r#"{"Name":5}"#,
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field .Name of type string",
        ),
        (
            r#"{"Node":5}"#,
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field .Node of type string",
        ),
        (
            r#"{"NodeChecks":"x"}"#,
            400,
            "Request decode failed: json: cannot unmarshal string into Go struct field .NodeChecks of type []string",
        ),
        (
            r#"{"Behavior":5}"#,
            400,
            "Request decode failed: json: cannot unmarshal number into Go struct field .Behavior of type structs.SessionBehavior",
        ),
        (r#"{"LockDelay":"abc"}"#, 400, r#"Request decode failed: time: invalid duration "abc""#),
    ];
    for (body, status, message) in cases {
        let r = api.put("/v1/session/create", body).await;
        assert_eq!(answer(&r), (status, message.to_string()), "{body}");
    }
    // LockDelay 2.5 (a number below 1000) is whole seconds.
    let id = api.session(r#"{"LockDelay":2.5}"#).await;
    let info = json_of(&api.get(&format!("/v1/session/info/{id}")).await);
    assert_eq!(info[0]["LockDelay"], 2_000_000_000u64);
    // A check in critical state cannot back a session.
    api.put("/v1/agent/check/register", r#"{"ID":"crit","Name":"crit","TTL":"30s"}"#).await;
    let r = api.put("/v1/session/create", r#"{"NodeChecks":["serfHealth","crit"]}"#).await;
    assert_eq!(answer(&r), (500, "Check 'crit' is in critical state".into()));
    // KV: an empty acquire/release session, recurse with cas.
    for target in ["/v1/kv/x?acquire=", "/v1/kv/x?release="] {
        assert_eq!(
            answer(&api.put(target, "x").await),
            (500, "missing session".into()),
            "{target}"
        );
    }
    let r = api.send(Method::DELETE, "/v1/kv/x?recurse&cas=1", "").await;
    assert_eq!(answer(&r), (400, "Conflicting flags: cas=1&recurse=".into()));
}

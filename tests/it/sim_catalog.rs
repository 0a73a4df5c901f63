//! The sim's agent, catalog and health endpoints answer as a Consul 1.8.7 dev agent does:
//! each test states one observed behaviour and checks it through the in-process transport.

use consul_api::{Request, Response, Transport};
use consul_sim::{Sim, SimConfig, SimTransport};
use http::Method;
use serde_json::{Value, json};

async fn call(t: &SimTransport, method: Method, target: &str, body: &str) -> (Response, Value) {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let mut req = Request::new(method, path).body(body.to_string());
    for part in query.split('&').filter(|p| !p.is_empty()) {
        let (k, v) = part.split_once('=').unwrap_or((part, ""));
        req = req.query(k, v);
    }
    let resp = t.send(req).await.unwrap();
    let json = serde_json::from_slice(&resp.body).unwrap_or(Value::Null);
    (resp, json)
}

async fn get(t: &SimTransport, target: &str) -> (Response, Value) {
    call(t, Method::GET, target, "").await
}

async fn put(t: &SimTransport, target: &str, body: &str) -> (Response, Value) {
    call(t, Method::PUT, target, body).await
}

fn sim() -> (Sim, SimTransport) {
    let sim = Sim::new(SimConfig { node_name: "node1".into(), ..SimConfig::default() });
    let t = sim.transport("test");
    (sim, t)
}

#[tokio::test(start_paused = true)]
async fn a_fresh_agent_registers_its_node_serf_health_and_the_consul_service() {
    let (_sim, t) = sim();
    let (resp, nodes) = get(&t, "/v1/catalog/nodes").await;
    let index: u64 = resp.header("X-Consul-Index").unwrap().parse().unwrap();
    assert!(index >= 2, "a fresh agent's catalog index is at least 2, got {index}");
    assert_eq!(resp.header("X-Consul-Effective-Consistency"), Some("leader"));
    let node = &nodes[0];
    assert_eq!(node["Node"], "node1");
    assert_eq!(node["Datacenter"], "dc1");
    assert_eq!(node["ID"].as_str().unwrap().len(), 36, "a UUID: {node}");
    let addr = node["Address"].clone();
    assert_eq!(
        node["TaggedAddresses"],
        json!({"lan": addr, "lan_ipv4": addr, "wan": addr, "wan_ipv4": addr})
    );
    assert_eq!(node["Meta"], json!({"consul-network-segment": ""}));

    assert_eq!(get(&t, "/v1/catalog/services").await.1, json!({"consul": []}));
    let consul = &get(&t, "/v1/catalog/service/consul").await.1[0];
    assert_eq!(consul["ServiceID"], "consul");
    assert_eq!(consul["ServiceMeta"]["version"], "1.8.7");
    assert_eq!(consul["ServiceWeights"], json!({"Passing": 1, "Warning": 1}));

    let checks = get(&t, "/v1/health/node/node1").await.1;
    assert_eq!(checks.as_array().unwrap().len(), 1);
    assert_eq!(checks[0]["CheckID"], "serfHealth");
    assert_eq!(checks[0]["Name"], "Serf Health Status");
    assert_eq!(checks[0]["Output"], "Agent alive and reachable");
    assert_eq!(checks[0]["Definition"], json!({}));

    // The agent itself lists neither the `consul` service nor `serfHealth`.
    assert_eq!(get(&t, "/v1/agent/services").await.1, json!({}));
    assert_eq!(get(&t, "/v1/agent/checks").await.1, json!({}));
}

#[tokio::test(start_paused = true)]
async fn agent_self_reports_config_member_stats_and_coordinate() {
    let (_sim, t) = sim();
    let me = get(&t, "/v1/agent/self").await.1;
    assert_eq!(me["Config"]["NodeName"], "node1");
    assert_eq!(me["Config"]["Version"], "1.8.7");
    assert_eq!(me["Config"]["Server"], true);
    let node_id = get(&t, "/v1/catalog/nodes").await.1[0]["ID"].clone();
    assert_eq!(me["Config"]["NodeID"], node_id);
    assert_eq!(me["DebugConfig"]["NodeID"], node_id);
    assert_eq!(me["Member"]["Tags"]["id"], node_id);
    assert_eq!(me["Member"], get(&t, "/v1/agent/members").await.1[0]);
    assert_eq!(me["Stats"]["consul"]["server"], "true");
    assert_eq!(me["Stats"]["consul"]["leader"], "true");
    assert!(me["Stats"]["consul"]["leader_addr"].as_str().unwrap().ends_with(":8300"));
    assert_eq!(me["Coord"]["Vec"].as_array().unwrap().len(), 8);
    assert_eq!(me["Meta"], json!({"consul-network-segment": ""}));
    // Any non-empty `wan` lists the WAN pool, where the agent is `<node>.<dc>`.
    let wan = get(&t, "/v1/agent/members?wan=false").await.1;
    assert_eq!(wan[0]["Name"], "node1.dc1");
    assert_eq!(get(&t, "/v1/agent/members?wan").await.1[0]["Name"], "node1");
    let (r, _) = get(&t, "/v1/agent/members?segment=x").await;
    assert_eq!(r.status, 500);
}

#[tokio::test(start_paused = true)]
async fn agent_services_keep_tagged_addresses_weights_and_tag_override() {
    let (_sim, t) = sim();
    let def = r#"{"Name":"t","ID":"t1","Meta":{"m":"1"},
        "TaggedAddresses":{"lan":{"Address":"10.0.0.1","Port":1}},
        "EnableTagOverride":true,"Weights":{"Passing":5,"Warning":1}}"#;
    let (resp, _) = put(&t, "/v1/agent/service/register", def).await;
    assert_eq!(resp.status, 200);
    assert!(resp.body.is_empty(), "Consul answers agent writes with an empty body");
    let svc = get(&t, "/v1/agent/services").await.1["t1"].clone();
    assert_eq!(svc["TaggedAddresses"], json!({"lan": {"Address": "10.0.0.1", "Port": 1}}));
    assert_eq!(svc["Weights"], json!({"Passing": 5, "Warning": 1}));
    assert_eq!(svc["EnableTagOverride"], true);
    assert_eq!(svc.get("Datacenter"), None, "1.8.7 has no Datacenter here");

    let (resp, one) = get(&t, "/v1/agent/service/t1").await;
    let hash = resp.header("X-Consul-ContentHash").unwrap().to_string();
    assert_eq!(one["ContentHash"], hash.as_str());
    assert_eq!(hash.len(), 16);
    let (resp, _) = get(&t, "/v1/agent/service/nope").await;
    assert_eq!(resp.status, 404);
    assert_eq!(String::from_utf8_lossy(&resp.body), "unknown service ID: nope");

    let cat = &get(&t, "/v1/catalog/service/t").await.1[0];
    assert_eq!(cat["ServiceTaggedAddresses"], svc["TaggedAddresses"]);
    assert_eq!(cat["ServiceEnableTagOverride"], true);
    assert_eq!(cat["ServiceWeights"], svc["Weights"]);
}

#[tokio::test(start_paused = true)]
async fn repeated_tag_parameters_must_all_match() {
    let (_sim, t) = sim();
    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w1","Tags":["a","b"]}"#).await;
    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w2","Tags":["a"]}"#).await;
    let ids = |v: Value, key: &str| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|e| e.pointer(key).unwrap().as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(ids(get(&t, "/v1/catalog/service/web?tag=a&tag=b").await.1, "/ServiceID"), ["w1"]);
    assert_eq!(ids(get(&t, "/v1/catalog/service/web?tag=a").await.1, "/ServiceID"), ["w1", "w2"]);
    assert!(ids(get(&t, "/v1/catalog/service/web?tag=a&tag=c").await.1, "/ServiceID").is_empty());
    assert_eq!(ids(get(&t, "/v1/health/service/web?tag=b&tag=a").await.1, "/Service/ID"), ["w1"]);
}

#[tokio::test(start_paused = true)]
async fn agent_health_endpoints_answer_with_status_codes_by_aggregated_status() {
    let (_sim, t) = sim();
    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w1","Check":{"TTL":"30s"}}"#)
        .await;
    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w2"}"#).await;
    let status =
        |r: &Response| (r.status.as_u16(), r.header("X-Consul-Reason").unwrap().to_string());
    let (r, body) = get(&t, "/v1/agent/health/service/id/w1").await;
    assert_eq!(status(&r), (503, "critical".into()));
    assert_eq!(body["AggregatedStatus"], "critical");
    assert_eq!(body["Checks"][0]["CheckID"], "service:w1");
    put(&t, "/v1/agent/check/warn/service:w1", "").await;
    let (r, _) = get(&t, "/v1/agent/health/service/id/w1?format=text").await;
    assert_eq!(status(&r), (429, "warning".into()));
    assert_eq!(String::from_utf8_lossy(&r.body), "warning");
    put(&t, "/v1/agent/check/pass/service:w1", "").await;
    let (r, list) = get(&t, "/v1/agent/health/service/name/web").await;
    assert_eq!(status(&r), (200, "passing".into()));
    assert_eq!(list.as_array().unwrap().len(), 2);
    // The worst instance decides the name's status; maintenance counts as its own status.
    put(&t, "/v1/agent/service/maintenance/w2?enable=true&reason=upgrading", "").await;
    let (r, _) = get(&t, "/v1/agent/health/service/name/web").await;
    assert_eq!(status(&r), (503, "maintenance".into()));

    let (r, body) = get(&t, "/v1/agent/health/service/id/nope").await;
    assert_eq!(status(&r), (404, "ServiceId nope not found".into()));
    assert_eq!(body, json!({"AggregatedStatus": "critical", "Service": null, "Checks": null}));
    let (r, body) = get(&t, "/v1/agent/health/service/name/nope").await;
    assert_eq!(status(&r), (404, "ServiceName nope Not Found".into()));
    assert_eq!(body, json!([]));
}

#[tokio::test(start_paused = true)]
async fn maintenance_mode_adds_and_removes_a_critical_check() {
    let (_sim, t) = sim();
    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w1"}"#).await;
    put(&t, "/v1/agent/maintenance?enable=true", "").await;
    put(&t, "/v1/agent/service/maintenance/w1?enable=true&reason=upgrading", "").await;
    let checks = get(&t, "/v1/agent/checks").await.1;
    let node = &checks["_node_maintenance"];
    assert_eq!(node["Name"], "Node Maintenance Mode");
    assert_eq!(node["Status"], "critical");
    assert_eq!(node["Type"], "maintenance");
    assert!(
        node["Notes"].as_str().unwrap().starts_with("Maintenance mode is enabled for this node")
    );
    assert_eq!(checks["_service_maintenance:w1"]["Notes"], "upgrading");
    assert_eq!(checks["_service_maintenance:w1"]["ServiceID"], "w1");
    assert!(get(&t, "/v1/health/service/web?passing").await.1.as_array().unwrap().is_empty());

    let (r, _) = put(&t, "/v1/agent/maintenance", "").await;
    assert_eq!(
        (r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned()),
        (400, "Missing value for enable".into())
    );
    let (r, _) = put(&t, "/v1/agent/service/maintenance/nope?enable=true", "").await;
    assert_eq!(r.status, 404);
    assert_eq!(String::from_utf8_lossy(&r.body), r#"No service registered with ID "nope""#);

    put(&t, "/v1/agent/maintenance?enable=false", "").await;
    put(&t, "/v1/agent/service/maintenance/w1?enable=false", "").await;
    assert_eq!(get(&t, "/v1/agent/checks").await.1, json!({}));
}

#[tokio::test(start_paused = true)]
async fn re_registering_a_check_keeps_its_status_and_output() {
    let (_sim, t) = sim();
    let def = r#"{"Name":"web","ID":"w1","Check":{"TTL":"30s"}}"#;
    put(&t, "/v1/agent/service/register", def).await;
    put(&t, "/v1/agent/check/pass/service:w1?note=hi", "").await;
    put(&t, "/v1/agent/service/register", def).await;
    let check = get(&t, "/v1/agent/checks").await.1["service:w1"].clone();
    assert_eq!((check["Status"].as_str(), check["Output"].as_str()), (Some("passing"), Some("hi")));
}

#[tokio::test(start_paused = true)]
async fn unknown_ids_are_answered_as_consul_1_8_7_does() {
    let (_sim, t) = sim();
    assert_eq!(put(&t, "/v1/agent/service/deregister/nope", "").await.0.status, 200);
    assert_eq!(put(&t, "/v1/agent/check/deregister/nope", "").await.0.status, 200);
    let (r, _) = put(&t, "/v1/agent/check/pass/nope", "").await;
    assert_eq!(r.status, 500);
    assert_eq!(String::from_utf8_lossy(&r.body), r#"CheckID "nope" does not have associated TTL"#);
}

#[tokio::test(start_paused = true)]
async fn script_checks_are_refused_unless_enabled() {
    let (_sim, t) = sim();
    let def = r#"{"Name":"s","Check":{"Args":["true"],"Interval":"10s"}}"#;
    let (r, _) = put(&t, "/v1/agent/service/register", def).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Scripts are disabled on this agent from remote calls; to enable, configure \
         'enable_script_checks' to true"
    );
    assert_eq!(get(&t, "/v1/agent/services").await.1, json!({}), "nothing was registered");

    let sim = Sim::new(SimConfig { enable_script_checks: true, ..SimConfig::default() });
    let t = sim.transport("test");
    let (r, _) = put(&t, "/v1/agent/service/register", def).await;
    assert_eq!(r.status, 200);
    assert_eq!(get(&t, "/v1/agent/checks").await.1["service:s"]["Type"], "script");
}

#[tokio::test(start_paused = true)]
async fn catalog_register_keeps_node_id_tagged_addresses_checks_and_skip_node_update() {
    let (_sim, t) = sim();
    let reg = r#"{"Node":"ext","ID":"11111111-2222-3333-4444-555555555555","Address":"10.0.0.1",
        "TaggedAddresses":{"wan":"1.2.3.4"},"NodeMeta":{"k":"v"},
        "Service":{"ID":"db1","Service":"db","Port":5432,"EnableTagOverride":true},
        "Checks":[{"CheckID":"c1","Name":"db check","Status":"passing","ServiceID":"db1"},
                  {"CheckID":"nodec","Name":"node check","Status":"warning"}]}"#;
    assert_eq!(put(&t, "/v1/catalog/register", reg).await.1, json!(true));
    let node = get(&t, "/v1/catalog/node/ext").await.1["Node"].clone();
    assert_eq!(node["ID"], "11111111-2222-3333-4444-555555555555");
    assert_eq!(node["TaggedAddresses"], json!({"wan": "1.2.3.4"}));
    assert_eq!(node["Meta"], json!({"k": "v"}));
    let checks = get(&t, "/v1/health/service/db").await.1[0]["Checks"].clone();
    let ids: Vec<&str> =
        checks.as_array().unwrap().iter().map(|c| c["CheckID"].as_str().unwrap()).collect();
    assert_eq!(ids, ["nodec", "c1"], "node checks first, no serfHealth for a catalog node");

    let skip = r#"{"Node":"ext","Address":"10.9.9.9","SkipNodeUpdate":true,"NodeMeta":{"z":"z"},
        "Check":{"CheckID":"c2","Name":"c2"}}"#;
    put(&t, "/v1/catalog/register", skip).await;
    let node = get(&t, "/v1/catalog/node/ext").await.1["Node"].clone();
    assert_eq!(
        (node["Address"].as_str(), node["Meta"].clone()),
        (Some("10.0.0.1"), json!({"k": "v"}))
    );
    let c2 = get(&t, "/v1/health/node/ext").await.1;
    assert!(
        c2.as_array().unwrap().iter().any(|c| c["CheckID"] == "c2" && c["Status"] == "critical")
    );

    put(&t, "/v1/catalog/deregister", r#"{"Node":"ext","CheckID":"c2"}"#).await;
    assert_eq!(get(&t, "/v1/health/node/ext").await.1.as_array().unwrap().len(), 2);
    assert_eq!(
        put(&t, "/v1/catalog/deregister", r#"{"Node":"nope","ServiceID":"x"}"#).await.1,
        json!(true)
    );
    put(&t, "/v1/catalog/register", r#"{"Node":"m","Address":"10.1.1.1"}"#).await;
    let m = get(&t, "/v1/catalog/node/m").await.1["Node"].clone();
    assert_eq!(
        (m["ID"].clone(), m["TaggedAddresses"].clone(), m["Meta"].clone()),
        (json!(""), Value::Null, Value::Null)
    );
    assert_eq!(
        get(&t, "/v1/catalog/node-services/nope").await.1,
        json!({"Node": null, "Services": null})
    );
    // Consul 1.8.7 lists no checks for a state it does not know, rather than refusing it.
    let (r, list) = get(&t, "/v1/health/state/sideways").await;
    assert_eq!((r.status.as_u16(), list), (200, json!([])));
}

#[tokio::test(start_paused = true)]
async fn events_are_listed_with_consuls_hash_index_and_wake_a_blocking_list() {
    let (_sim, t) = sim();
    let (r, list) = get(&t, "/v1/event/list").await;
    assert_eq!((r.header("X-Consul-Index"), list), (Some("1"), json!([])));
    let (r, _) = call(&t, Method::GET, "/v1/event/fire/x", "").await;
    assert_eq!(r.status, 405);
    let (r, _) = put(&t, "/v1/event/fire/x?tag=a", "").await;
    assert_eq!(r.status, 500);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Cannot provide tag filter without service filter"
    );
    let (r, _) = put(&t, "/v1/event/fire/big", &"a".repeat(411)).await;
    assert_eq!(r.status, 500, "over Serf's 512-byte limit");

    let (_, fired) = put(&t, "/v1/event/fire/deploy?node=node1", "hello").await;
    assert_eq!(fired["Payload"], "aGVsbG8=");
    assert_eq!((fired["NodeFilter"].as_str(), fired["LTime"].as_u64()), (Some("node1"), Some(0)));
    put(&t, "/v1/event/fire/skipped?node=other", "").await; // not for this agent
    let (r, list) = get(&t, "/v1/event/list").await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["ID"], fired["ID"]);
    assert_eq!(list[0]["LTime"], 2);
    let id: String = fired["ID"].as_str().unwrap().chars().filter(|c| *c != '-').collect();
    let hash =
        u64::from_str_radix(&id[..16], 16).unwrap() ^ u64::from_str_radix(&id[16..], 16).unwrap();
    let index = r.header("X-Consul-Index").unwrap().to_string();
    assert_eq!(index, hash.to_string());
    assert_eq!(get(&t, "/v1/event/list?name=zzz").await.1, json!([]));

    // A blocking list returns when a new event arrives, before its wait ends.
    let t2 = t.clone();
    let target = format!("/v1/event/list?index={index}&wait=60s");
    let waiter = tokio::spawn(async move { get(&t2, &target).await });
    tokio::time::sleep(std::time::Duration::from_secs(5)).await;
    assert!(!waiter.is_finished(), "the list blocks while no event arrives");
    put(&t, "/v1/event/fire/second", "").await;
    let start = tokio::time::Instant::now();
    let (r, list) = waiter.await.unwrap();
    assert!(start.elapsed() < std::time::Duration::from_secs(1));
    assert_ne!(r.header("X-Consul-Index").unwrap(), index);
    assert_eq!(list.as_array().unwrap().len(), 2);
}

#[tokio::test(start_paused = true)]
async fn another_datacenter_has_no_path_except_where_consul_ignores_dc() {
    let (_sim, t) = sim();
    for target in [
        "/v1/kv/a?dc=dc2",
        "/v1/status/leader?dc=dc2",
        "/v1/catalog/nodes?dc=dc2",
        "/v1/health/state/any?dc=DC1",
        "/v1/coordinate/nodes?dc=dc2",
    ] {
        let (r, _) = get(&t, target).await;
        assert_eq!(r.status, 500, "{target}");
        assert_eq!(String::from_utf8_lossy(&r.body), "No path to datacenter", "{target}");
    }
    let (r, _) = get(&t, "/v1/catalog/nodes?dc=dc2").await;
    assert_eq!(
        (r.header("X-Consul-Index"), r.header("X-Consul-KnownLeader")),
        (Some("1"), Some("false"))
    );
    assert_eq!(get(&t, "/v1/kv/a?dc=dc2").await.0.header("X-Consul-Index"), None);
    assert_eq!(put(&t, "/v1/kv/a?dc=dc2", "x").await.0.status, 500);
    for target in [
        "/v1/agent/self?dc=dc2",
        "/v1/agent/services?dc=dc2",
        "/v1/event/list?dc=dc2",
        "/v1/catalog/datacenters?dc=dc2",
        "/v1/coordinate/datacenters?dc=dc2",
        "/v1/catalog/nodes?dc=dc1",
    ] {
        assert_eq!(get(&t, target).await.0.status, 200, "{target}");
    }
    let reg = r#"{"Node":"n","Address":"1.1.1.1"}"#;
    assert_eq!(
        put(&t, "/v1/catalog/register?dc=dc2", reg).await.0.status,
        200,
        "dc comes from the body"
    );
    let reg = r#"{"Datacenter":"dc2","Node":"n","Address":"1.1.1.1"}"#;
    assert_eq!(put(&t, "/v1/catalog/register", reg).await.0.status, 500);
}

#[tokio::test(start_paused = true)]
async fn coordinates_hold_the_agents_node_at_the_origin() {
    let (_sim, t) = sim();
    let dcs = get(&t, "/v1/coordinate/datacenters").await.1;
    assert_eq!(
        (dcs[0]["Datacenter"].as_str(), dcs[0]["AreaID"].as_str()),
        (Some("dc1"), Some("wan"))
    );
    let nodes = get(&t, "/v1/coordinate/nodes").await.1;
    assert_eq!(nodes[0]["Node"], "node1");
    assert_eq!(nodes[0]["Coord"]["Error"], 1.5);
    assert_eq!(get(&t, "/v1/coordinate/node/node1").await.1, nodes);
    let (r, _) = get(&t, "/v1/coordinate/node/nope").await;
    assert_eq!((r.status.as_u16(), r.body.len()), (404, 0));
}

#[tokio::test(start_paused = true)]
async fn filter_expressions_select_on_every_listing_endpoint() {
    let (_sim, t) = sim();
    let web1 = r#"{"Name":"web","ID":"web-1","Tags":["a","b"],"Port":8080,"Meta":{"env":"prod"},"Check":{"TTL":"30s"}}"#;
    put(&t, "/v1/agent/service/register", web1).await;
    let web2 =
        r#"{"Name":"web","ID":"web-2","Port":8081,"Check":{"TTL":"30s","Status":"passing"}}"#;
    put(&t, "/v1/agent/service/register", web2).await;
    // `call` encodes query values itself.
    let q = |path: &str, expr: &str| format!("{path}?filter={expr}");
    let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
    let services = get(&t, &q("/v1/agent/services", "Meta.env == prod and a in Tags")).await.1;
    assert_eq!(keys(&services), ["web-1"]);
    let checks = get(&t, &q("/v1/agent/checks", "Status == passing")).await.1;
    assert_eq!(keys(&checks), ["service:web-2"]);
    let health = get(&t, &q("/v1/health/service/web", "Checks.Status == critical")).await.1;
    assert_eq!(health.as_array().unwrap().len(), 1);
    assert_eq!(health[0]["Service"]["ID"], "web-1");
    let cat = get(&t, &q("/v1/catalog/service/web", "ServicePort != 8080")).await.1;
    assert_eq!(cat[0]["ServiceID"], "web-2");
    let nodes =
        get(&t, &q("/v1/catalog/nodes", "Meta is not empty and Node matches \"^node\"")).await.1;
    assert_eq!(nodes.as_array().unwrap().len(), 1);
    let state = get(
        &t,
        &q("/v1/health/state/any", "not (CheckID == serfHealth or ServiceID == \"web-2\")"),
    )
    .await
    .1;
    assert_eq!(state[0]["CheckID"], "service:web-1");
    assert_eq!(state.as_array().unwrap().len(), 1);
    let node = get(&t, &q("/v1/health/node/node1", "ServiceTags contains b")).await.1;
    assert_eq!(node.as_array().unwrap().len(), 1);
    let by_service = get(&t, &q("/v1/health/checks/web", "ServiceID == \"web-2\"")).await.1;
    assert_eq!(by_service[0]["CheckID"], "service:web-2");

    // A bad expression is a 500 with bexpr's message (Consul 1.8.7; the catalog and health
    // reads also carry index headers).
    let (r, _) = get(&t, &q("/v1/catalog/nodes", "Nope == 1")).await;
    assert_eq!(r.status, 500);
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Failed to create boolean expression evaluator: Selector \"Nope\" is not valid"
    );
    assert_eq!(r.header("X-Consul-Index"), Some("1"));
    let (r, _) = get(&t, &q("/v1/agent/checks", "Nope == 1")).await;
    assert_eq!(String::from_utf8_lossy(&r.body), "Selector \"Nope\" is not valid");
    let (r, _) = get(&t, &q("/v1/agent/services", "(Service == web")).await;
    assert_eq!(
        String::from_utf8_lossy(&r.body),
        "Failed to create boolean expression evaluator: 1:16 (15): rule \"grouping\": Unmatched parentheses"
    );
}

#[tokio::test(start_paused = true)]
async fn node_meta_parameters_select_nodes_and_long_check_output_is_cut() {
    let (_sim, t) = sim();
    let reg = r#"{"Node":"ext","Address":"10.0.0.1","NodeMeta":{"k":"v","z":"1"},
        "Service":{"Service":"web","ID":"w9"}}"#;
    put(&t, "/v1/catalog/register", reg).await;
    let names = |v: Value, key: &str| -> Vec<String> {
        v.as_array().unwrap().iter().map(|e| e[key].as_str().unwrap().to_string()).collect()
    };
    assert_eq!(names(get(&t, "/v1/catalog/nodes?node-meta=k:v").await.1, "Node"), ["ext"]);
    assert!(
        names(get(&t, "/v1/catalog/nodes?node-meta=k:v&node-meta=z:2").await.1, "Node").is_empty()
    );
    assert!(names(get(&t, "/v1/catalog/nodes?node-meta=k").await.1, "Node").is_empty());
    assert_eq!(names(get(&t, "/v1/catalog/service/web?node-meta=z:1").await.1, "Node"), ["ext"]);

    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w1","Check":{"TTL":"30s"}}"#)
        .await;
    let long = "x".repeat(5000);
    put(
        &t,
        "/v1/agent/check/update/service:w1",
        &json!({"Status": "passing", "Output": long}).to_string(),
    )
    .await;
    let out =
        get(&t, "/v1/agent/checks").await.1["service:w1"]["Output"].as_str().unwrap().to_string();
    assert!(out.ends_with("x ... (captured 4096 of 5000 bytes)"), "{}", &out[4000..]);
    assert_eq!(out.len(), 4096 + " ... (captured 4096 of 5000 bytes)".len());
}

#[tokio::test(start_paused = true)]
async fn passing_is_a_go_bool_and_catalog_services_take_node_meta() {
    let (_sim, t) = sim();
    put(&t, "/v1/agent/service/register", r#"{"Name":"web","ID":"w1","Check":{"TTL":"30s"}}"#)
        .await;
    let ok = r#"{"Name":"web","ID":"w2","Check":{"TTL":"30s","Status":"passing"}}"#;
    put(&t, "/v1/agent/service/register", ok).await;
    let count = |v: Value| v.as_array().unwrap().len();
    assert_eq!(count(get(&t, "/v1/health/service/web?passing").await.1), 1);
    assert_eq!(count(get(&t, "/v1/health/service/web?passing=TRUE").await.1), 1);
    assert_eq!(count(get(&t, "/v1/health/service/web?passing=false").await.1), 2);
    assert_eq!(count(get(&t, "/v1/health/service/web?passing=0").await.1), 2);
    let (r, _) = get(&t, "/v1/health/service/web?passing=abc").await;
    assert_eq!(
        (r.status.as_u16(), String::from_utf8_lossy(&r.body).into_owned()),
        (400, "Invalid value for ?passing".into())
    );
    assert_eq!(get(&t, "/v1/catalog/services?node-meta=x:y").await.1, json!({}));
    let all = get(&t, "/v1/catalog/services?node-meta=consul-network-segment:").await.1;
    assert_eq!(all, json!({"consul": [], "web": []}));
}

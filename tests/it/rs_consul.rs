//! A third-party client proves the sim speaks Consul's wire format: rs-consul (a crate we
//! did not write) runs KV, lock/session and service operations against the sim's HTTP server.

use std::collections::HashMap;

use consul_sim::{Sim, SimConfig};
use rs_consul::{
    Config, Consul, CreateOrUpdateKeyRequest, GetServiceNodesRequest, LockRequest, ReadKeyRequest,
    RegisterEntityPayload, RegisterEntityService,
};

async fn rs_client() -> (Sim, consul_sim::Server, Consul) {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let consul = Consul::new(Config { address: server.url(), ..Default::default() });
    (sim, server, consul)
}

#[tokio::test]
async fn rs_consul_reads_and_writes_kv_with_cas() {
    let (_sim, _server, consul) = rs_client().await;
    let put = CreateOrUpdateKeyRequest { key: "app/config", ..Default::default() };
    let (ok, _) = consul.create_or_update_key(put, b"v1".to_vec()).await.unwrap();
    assert!(ok);
    let read =
        consul.read_key(ReadKeyRequest { key: "app/config", ..Default::default() }).await.unwrap();
    assert_eq!(read.response.len(), 1);
    assert_eq!(read.response[0].key, "app/config");
    assert_eq!(read.response[0].value.as_deref(), Some("v1"), "rs-consul decodes the base64 Value");
    assert!(read.index > 0);
    let cas = CreateOrUpdateKeyRequest {
        key: "app/config",
        check_and_set: Some(0),
        ..Default::default()
    };
    let (ok, _) = consul.create_or_update_key(cas, b"v2".to_vec()).await.unwrap();
    assert!(!ok, "cas=0 must not overwrite an existing key");
}

// rs-consul releases a lock in `Drop` with a blocking HTTP call, so the sim's server needs a
// second worker thread to answer it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rs_consul_locks_with_a_session() {
    let (sim, _server, consul) = rs_client().await;
    let req = LockRequest { key: "service/leader", ..Default::default() };
    let lock = consul.get_lock(req, b"node-a").await.unwrap();
    // Our client sees the same lock, held by rs-consul's session.
    let ours = sim.client("observer");
    let (pair, _) =
        ours.kv().get_with("service/leader", &consul_api::QueryOptions::default()).await.unwrap();
    let pair = pair.unwrap();
    assert_eq!(pair.session.as_ref().map(|s| s.as_str()), Some(lock.session_id.as_str()));
    assert_eq!(pair.lock_index, consul_api::Index(1));
    let second = consul
        .get_lock(LockRequest { key: "service/leader", ..Default::default() }, b"node-b")
        .await;
    assert!(second.is_err(), "a held lock cannot be taken by another session");
    drop(lock);
    let (pair, _) =
        ours.kv().get_with("service/leader", &consul_api::QueryOptions::default()).await.unwrap();
    assert_eq!(pair.unwrap().session, None, "dropping rs-consul's lock released it in the sim");
}

#[tokio::test]
async fn rs_consul_registers_and_discovers_services() {
    let (_sim, _server, consul) = rs_client().await;
    let payload = RegisterEntityPayload {
        ID: None,
        Node: "worker-1".into(),
        Address: "10.0.0.7".into(),
        Datacenter: None,
        TaggedAddresses: HashMap::new(),
        NodeMeta: HashMap::new(),
        Service: Some(RegisterEntityService {
            ID: Some("web-1".into()),
            Service: "web".into(),
            Tags: vec!["v1".into()],
            TaggedAddresses: HashMap::new(),
            Meta: HashMap::new(),
            Port: Some(8080),
            Namespace: None,
        }),
        Checks: Vec::new(),
        SkipNodeUpdate: None,
    };
    consul.register_entity(&payload).await.unwrap();
    let names = consul.get_all_registered_service_names(None).await.unwrap();
    assert!(names.response.iter().any(|n| n == "web"), "{:?}", names.response);
    let nodes = consul
        .get_service_nodes(GetServiceNodesRequest { service: "web", ..Default::default() }, None)
        .await
        .unwrap();
    assert_eq!(nodes.response.len(), 1);
    assert_eq!(nodes.response[0].service.port, 8080);
    assert_eq!(nodes.response[0].node.node, "worker-1");
}

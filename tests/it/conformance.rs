//! The conformance suite: one set of behaviours, written against `consul_api::Client`, run
//! over every backend (the sim in-process, the sim over HTTP, a real Consul if configured).
//! Every backend must give the same answers.

use std::time::Duration;

use bytes::Bytes;
use consul_api::agent::{CheckDefinition, CheckStatus, ServiceRegistration};
use consul_api::catalog::HealthFilter;
use consul_api::kv::PutOptions;
use consul_api::session::{Behavior, SessionRequest};
use consul_api::txn::{KvOp, TxnOutcome};
use consul_api::{Index, QueryOptions, SessionId};

use crate::support::{backends, unique};

fn q() -> QueryOptions {
    QueryOptions::default()
}

#[tokio::test]
async fn kv_round_trips_binary_values_flags_and_odd_keys() {
    for b in backends().await {
        let kv = b.client.kv();
        let base = unique("kv");
        let binary = Bytes::from_static(&[0, 159, 146, 150, 255, b'\n']);
        for suffix in
            ["plain", "with space", "ünï/cödé", "q?mark", "hash#tag", "per%cent", "plus+sign"]
        {
            let key = format!("{base}/{suffix}");
            kv.put_with(
                &key,
                binary.clone(),
                &PutOptions { flags: Some(42), ..Default::default() },
            )
            .await
            .unwrap_or_else(|e| panic!("{}: put {key:?}: {e}", b.name));
            let (pair, meta) = kv.get_with(&key, &q()).await.unwrap();
            let pair = pair.unwrap_or_else(|| panic!("{}: {key:?} missing", b.name));
            assert_eq!(pair.key, key, "{}", b.name);
            assert_eq!(pair.value.as_ref(), Some(&binary), "{}", b.name);
            assert_eq!(pair.flags, 42, "{}", b.name);
            assert!(meta.last_index.0 > 0, "{}: index must never be 0", b.name);
            assert_eq!(kv.get_raw(&key, &q()).await.unwrap().0, Some(binary.clone()), "{}", b.name);
        }
        // A leading slash is the same key.
        assert!(
            kv.get_with(&format!("/{base}/plain"), &q()).await.unwrap().0.is_some(),
            "{}",
            b.name
        );
        // A missing key is Ok(None), with an index.
        let (missing, meta) = kv.get_with(&format!("{base}/nope"), &q()).await.unwrap();
        assert!(missing.is_none() && meta.last_index.0 > 0, "{}", b.name);
        // An empty key is rejected before sending.
        assert!(kv.put("", "x").await.unwrap_err().is_invalid(), "{}", b.name);
        kv.delete_tree(&base).await.unwrap();
        assert!(kv.list(&base, &q()).await.unwrap().0.is_empty(), "{}", b.name);
    }
}

#[tokio::test]
async fn kv_lists_keys_with_a_separator_and_deletes_trees() {
    for b in backends().await {
        let kv = b.client.kv();
        let base = unique("tree");
        for k in ["a/1", "a/2", "b/1", "c"] {
            kv.put(&format!("{base}/{k}"), k).await.unwrap();
        }
        let (keys, _) = kv.keys(&format!("{base}/"), Some("/"), &q()).await.unwrap();
        assert_eq!(
            keys,
            [format!("{base}/a/"), format!("{base}/b/"), format!("{base}/c")],
            "{}",
            b.name
        );
        let (all, _) = kv.list(&format!("{base}/a/"), &q()).await.unwrap();
        assert_eq!(all.len(), 2, "{}", b.name);
        kv.delete_tree(&format!("{base}/a/")).await.unwrap();
        let (keys, _) = kv.keys(&format!("{base}/"), None, &q()).await.unwrap();
        assert_eq!(keys.len(), 2, "{}", b.name);
        kv.delete_tree(&base).await.unwrap();
    }
}

#[tokio::test]
async fn check_and_set_writes_only_at_the_expected_index() {
    for b in backends().await {
        let kv = b.client.kv();
        let key = unique("cas");
        assert!(kv.cas(&key, "first", Index(0)).await.unwrap(), "{}: cas 0 creates", b.name);
        assert!(
            !kv.cas(&key, "again", Index(0)).await.unwrap(),
            "{}: cas 0 on an existing key",
            b.name
        );
        let (pair, _) = kv.get_with(&key, &q()).await.unwrap();
        let pair = pair.unwrap();
        assert!(
            !kv.cas(&key, "stale", Index(pair.modify_index.0 + 1000)).await.unwrap(),
            "{}",
            b.name
        );
        assert!(kv.cas(&key, "second", pair.modify_index).await.unwrap(), "{}", b.name);
        let (after, _) = kv.get_with(&key, &q()).await.unwrap();
        let after = after.unwrap();
        assert_eq!(after.value.as_deref(), Some(&b"second"[..]), "{}", b.name);
        assert_eq!(after.create_index, pair.create_index, "{}", b.name);
        assert!(after.modify_index > pair.modify_index, "{}", b.name);
        assert!(!kv.delete_cas(&key, pair.modify_index).await.unwrap(), "{}", b.name);
        assert!(kv.delete_cas(&key, after.modify_index).await.unwrap(), "{}", b.name);
    }
}

#[tokio::test]
async fn locks_count_new_holders_and_release_keeps_the_lock_index() {
    for b in backends().await {
        let (kv, sessions) = (b.client.kv(), b.client.session());
        let key = unique("lock");
        let s1 = sessions
            .create(&SessionRequest { name: "one".into(), ..Default::default() })
            .await
            .unwrap();
        let s2 = sessions
            .create(&SessionRequest { name: "two".into(), ..Default::default() })
            .await
            .unwrap();
        assert!(kv.acquire(&key, "s1", &s1, 0).await.unwrap(), "{}", b.name);
        assert!(
            kv.acquire(&key, "s1 again", &s1, 0).await.unwrap(),
            "{}: re-acquire by holder",
            b.name
        );
        assert!(!kv.acquire(&key, "s2", &s2, 0).await.unwrap(), "{}: held by another", b.name);
        let held = kv.get_with(&key, &q()).await.unwrap().0.unwrap();
        assert_eq!(held.lock_index, Index(1), "{}", b.name);
        assert_eq!(held.session.as_ref(), Some(&s1), "{}", b.name);
        assert!(!kv.release(&key, "x", &s2, 0).await.unwrap(), "{}: release by non-holder", b.name);
        assert!(kv.release(&key, "free", &s1, 0).await.unwrap(), "{}", b.name);
        let released = kv.get_with(&key, &q()).await.unwrap().0.unwrap();
        assert_eq!(released.lock_index, Index(1), "{}", b.name);
        assert_eq!(released.session, None, "{}", b.name);
        // An explicit release starts no lock-delay: the next holder gets it at once.
        assert!(kv.acquire(&key, "s2", &s2, 0).await.unwrap(), "{}", b.name);
        assert_eq!(
            kv.get_with(&key, &q()).await.unwrap().0.unwrap().lock_index,
            Index(2),
            "{}",
            b.name
        );
        // Acquiring with a session that does not exist is a 500 naming it.
        let bogus = SessionId("00000000-0000-0000-0000-000000000000".into());
        let err = kv.acquire(&key, "x", &bogus, 0).await.unwrap_err();
        assert_eq!(err.status_code().map(|s| s.as_u16()), Some(500), "{}: {err}", b.name);
        assert!(err.message().contains("invalid session"), "{}: {err}", b.name);
        sessions.destroy(&s1).await.unwrap();
        sessions.destroy(&s2).await.unwrap();
        kv.delete(&key).await.unwrap();
    }
}

#[tokio::test]
async fn transactions_commit_all_or_nothing() {
    for b in backends().await {
        let (kv, txn) = (b.client.kv(), b.client.txn());
        let base = unique("txn");
        let (a, c) = (format!("{base}/a"), format!("{base}/c"));
        let out =
            txn.execute(&[KvOp::set(&a, "1"), KvOp::set(&c, "3"), KvOp::get(&a)]).await.unwrap();
        let TxnOutcome::Committed(results) = out else { panic!("{}: rolled back", b.name) };
        assert_eq!(results.len(), 3, "{}", b.name);
        assert_eq!(results[2].value.as_deref(), Some(&b"1"[..]), "{}", b.name);
        let index = results[0].modify_index;
        // The second op fails its check: nothing is applied.
        let out = txn
            .execute(&[
                KvOp::set(&a, "changed"),
                KvOp::check_index(&c, Index(index.0 + 999)),
                KvOp::delete(&c),
            ])
            .await
            .unwrap();
        let TxnOutcome::RolledBack(errors) = out else { panic!("{}: committed", b.name) };
        assert_eq!(errors.len(), 1, "{}", b.name);
        assert_eq!(errors[0].op_index, 1, "{}", b.name);
        assert_eq!(kv.get_raw(&a, &q()).await.unwrap().0.as_deref(), Some(&b"1"[..]), "{}", b.name);
        assert!(kv.get_with(&c, &q()).await.unwrap().0.is_some(), "{}", b.name);
        // Too many operations never leave the client.
        let many: Vec<KvOp> = (0..129).map(|i| KvOp::set(format!("{base}/{i}"), "x")).collect();
        assert!(txn.execute(&many).await.unwrap_err().is_invalid(), "{}", b.name);
        kv.delete_tree(&base).await.unwrap();
    }
}

#[tokio::test]
async fn sessions_are_created_renewed_listed_and_destroyed() {
    for b in backends().await {
        let s = b.client.session();
        let req = SessionRequest {
            name: "conformance".into(),
            ttl: Some(Duration::from_secs(30)),
            lock_delay: Some(Duration::from_secs(2)),
            behavior: Behavior::Delete,
            ..Default::default()
        };
        let id = s.create(&req).await.unwrap();
        let (info, _) = s.info(&id, &q()).await.unwrap();
        let info = info.unwrap_or_else(|| panic!("{}: session missing", b.name));
        assert_eq!(info.ttl, Some(Duration::from_secs(30)), "{}", b.name);
        assert_eq!(info.lock_delay, Some(Duration::from_secs(2)), "{}", b.name);
        assert_eq!(info.behavior, Behavior::Delete, "{}", b.name);
        assert!(s.renew(&id).await.unwrap().is_some(), "{}", b.name);
        assert!(s.list(&q()).await.unwrap().0.iter().any(|e| e.id == id), "{}", b.name);
        assert!(s.node(&info.node, &q()).await.unwrap().0.iter().any(|e| e.id == id), "{}", b.name);
        s.destroy(&id).await.unwrap();
        assert!(s.renew(&id).await.unwrap().is_none(), "{}: renewing a destroyed session", b.name);
        assert!(s.info(&id, &q()).await.unwrap().0.is_none(), "{}", b.name);
        // Below the agent's session_ttl_min (10 s by default) the server refuses, naming it;
        // above Consul's fixed 24 h maximum the client refuses before sending.
        let short = SessionRequest { ttl: Some(Duration::from_secs(5)), ..Default::default() };
        let err = s.create(&short).await.unwrap_err();
        // Consul 1.8.7 answers 500 (a plain RPC error), not 400.
        assert_eq!(
            err.status_code(),
            Some(http::StatusCode::INTERNAL_SERVER_ERROR),
            "{}: {err}",
            b.name
        );
        assert!(err.message().starts_with("Invalid Session TTL"), "{}: {err}", b.name);
        let long = SessionRequest { ttl: Some(Duration::from_secs(86_401)), ..Default::default() };
        assert!(s.create(&long).await.unwrap_err().is_invalid(), "{}", b.name);
    }
}

#[tokio::test]
async fn services_with_ttl_checks_turn_healthy_when_updated() {
    for b in backends().await {
        let agent = b.client.agent();
        let name = unique("svc").replace('/', "-");
        let mut reg = ServiceRegistration::new(&name, format!("{name}-1"));
        reg.port = Some(8080);
        reg.tags = vec!["primary".into()];
        reg.checks = vec![CheckDefinition::ttl(Duration::from_secs(30))];
        agent.register_service(&reg).await.unwrap();
        let check_id = format!("service:{name}-1");
        let filter = HealthFilter { passing: true, tag: None };
        let (healthy, _) = b.client.health().service(&name, &filter, &q()).await.unwrap();
        assert!(healthy.is_empty(), "{}: a TTL check starts critical", b.name);
        agent.pass_ttl(&check_id, "ok").await.unwrap();
        let (healthy, meta) = b.client.health().service(&name, &filter, &q()).await.unwrap();
        assert_eq!(healthy.len(), 1, "{}", b.name);
        assert_eq!(healthy[0].service.port, 8080, "{}", b.name);
        assert_eq!(healthy[0].aggregated_status(), CheckStatus::Passing, "{}", b.name);
        assert!(meta.last_index.0 > 0, "{}", b.name);
        agent.update_ttl(&check_id, CheckStatus::Warning, "slow").await.unwrap();
        let checks = agent.checks().await.unwrap();
        assert_eq!(checks[&check_id].status, CheckStatus::Warning, "{}", b.name);
        assert_eq!(checks[&check_id].output, "slow", "{}", b.name);
        assert!(agent.services().await.unwrap().contains_key(&format!("{name}-1")), "{}", b.name);
        let (catalog, _) = b.client.catalog().services(&q()).await.unwrap();
        assert_eq!(catalog.get(&name), Some(&vec!["primary".to_string()]), "{}", b.name);
        let (instances, _) =
            b.client.catalog().service(&name, Some("primary"), &q()).await.unwrap();
        assert_eq!(instances.len(), 1, "{}", b.name);
        agent.deregister_service(&format!("{name}-1")).await.unwrap();
        assert!(
            b.client
                .health()
                .service(&name, &HealthFilter::default(), &q())
                .await
                .unwrap()
                .0
                .is_empty()
        );
        let unknown = agent.pass_ttl("no-such-check", "").await.unwrap_err();
        assert!(
            unknown.status_code().is_some_and(|s| s.is_client_error() || s.is_server_error()),
            "{}",
            b.name
        );
    }
}

#[tokio::test]
async fn blocking_queries_wake_on_a_write_and_time_out_without_one() {
    for b in backends().await {
        let kv = b.client.kv();
        let key = unique("block");
        kv.put(&key, "v1").await.unwrap();
        let (_, meta) = kv.get_with(&key, &q()).await.unwrap();
        // No write: the wait runs out and the same index comes back.
        let opts = QueryOptions::blocking(meta.last_index, Duration::from_millis(300));
        let (_, same) = kv.get_with(&key, &opts).await.unwrap();
        assert_eq!(same.last_index, meta.last_index, "{}", b.name);
        // A write wakes the query with a higher index.
        let writer = b.client.clone();
        let k = key.clone();
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            writer.kv().put(&k, "v2").await.unwrap();
        });
        let opts = QueryOptions::blocking(meta.last_index, Duration::from_secs(10));
        let (pair, after) = kv.get_with(&key, &opts).await.unwrap();
        write.await.unwrap();
        assert!(after.last_index > meta.last_index, "{}", b.name);
        assert_eq!(pair.unwrap().value.as_deref(), Some(&b"v2"[..]), "{}", b.name);
        kv.delete(&key).await.unwrap();
    }
}

#[tokio::test]
async fn a_blocking_read_of_a_missing_key_waits_for_it_to_appear() {
    for b in backends().await {
        let kv = b.client.kv();
        let key = unique("appears");
        let (none, meta) = kv.get_with(&key, &q()).await.unwrap();
        assert!(none.is_none() && meta.last_index.0 > 0, "{}: a 404 carries the index", b.name);
        let writer = b.client.clone();
        let k = key.clone();
        let write = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(200)).await;
            writer.kv().put(&k, "here").await.unwrap();
        });
        let started = std::time::Instant::now();
        let opts = QueryOptions::blocking(meta.last_index, Duration::from_secs(10));
        let (pair, after) = kv.get_with(&key, &opts).await.unwrap();
        write.await.unwrap();
        assert!(started.elapsed() >= Duration::from_millis(150), "{}: it blocked", b.name);
        assert!(after.last_index > meta.last_index, "{}", b.name);
        assert_eq!(pair.unwrap().value.as_deref(), Some(&b"here"[..]), "{}", b.name);
        kv.delete(&key).await.unwrap();
    }
}

#[tokio::test]
async fn status_names_a_leader_and_the_agent_names_its_node() {
    for b in backends().await {
        assert!(!b.client.status().leader().await.unwrap().is_empty(), "{}", b.name);
        assert!(!b.client.status().peers().await.unwrap().is_empty(), "{}", b.name);
        let node = b.client.agent().node_name().await.unwrap();
        let (nodes, _) = b.client.catalog().nodes(&q()).await.unwrap();
        assert!(nodes.iter().any(|n| n.node == node), "{}", b.name);
        assert!(!b.client.agent().members().await.unwrap().is_empty(), "{}", b.name);
        let (checks, _) = b.client.health().node(&node, &q()).await.unwrap();
        assert!(checks.iter().any(|c| c.check_id == "serfHealth"), "{}", b.name);
    }
}

#[tokio::test]
async fn the_sim_answers_the_same_in_process_and_over_http() {
    // Same requests, two transports, one store: byte-identical bodies.
    let all = backends().await;
    let (a, b) = (&all[0], &all[1]);
    let key = unique("same");
    a.client.kv().put(&key, "x").await.unwrap();
    for path in [format!("/v1/kv/{key}"), "/v1/catalog/nodes".into(), "/v1/health/state/any".into()]
    {
        let req = consul_api::Request::new(http::Method::GET, path.clone());
        let ra = a.client.raw(req.clone()).await.unwrap();
        let rb = b.client.raw(req).await.unwrap();
        assert_eq!(ra.status, rb.status, "{path}");
        assert_eq!(ra.body, rb.body, "{path}");
        assert_eq!(ra.header("x-consul-index"), rb.header("x-consul-index"), "{path}");
    }
}

#[tokio::test]
async fn a_released_lock_keeps_its_value_and_a_gone_session_releases_nothing() {
    use consul_api::lock::{Lock, LockOptions};
    for b in backends().await {
        let key = unique("golock");
        let mut opts = LockOptions::new(&key);
        opts.value = Bytes::from_static(b"node-a");
        let guard = Lock::new(b.client.clone(), opts).acquire().await.unwrap();
        let session = guard.session().clone();
        guard.release().await.unwrap();
        // Go's Unlock sends the lock's value with the release: the key keeps it.
        let (pair, _) = b.client.kv().get_with(&key, &q()).await.unwrap();
        let pair = pair.unwrap_or_else(|| panic!("{}: the lock key is gone", b.name));
        assert_eq!(pair.value.as_deref(), Some(&b"node-a"[..]), "{}", b.name);
        assert_eq!(pair.session, None, "{}", b.name);
        // The lock destroyed its session; a release with it now answers false, not an error.
        assert!(!b.client.kv().release(&key, "x", &session, 0).await.unwrap(), "{}", b.name);
        b.client.kv().delete(&key).await.unwrap();
    }
}

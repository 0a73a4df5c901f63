//! consul-api's one request path, on every backend (the sim in-process, the sim over HTTP,
//! real Consul 1.8.7): a client configured with a datacenter sends `?dc=` on every request
//! of every endpoint group, and the server answers an unknown datacenter with 500 "No path
//! to datacenter" — except the agent's own endpoints and the event list, which Consul
//! answers locally whatever `dc` says (checked with curl on a 1.8.7 dev agent).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use consul_api::catalog::HealthFilter;
use consul_api::event::EventFilter;
use consul_api::session::SessionRequest;
use consul_api::txn::KvOp;
use consul_api::{
    Client, Consistency, Error, Index, QueryOptions, Request, Response, SessionId, Transport,
};

use crate::support::{backends, unique};

/// Records the query of every request that goes through it.
#[derive(Debug)]
struct Recorder {
    inner: Arc<dyn Transport>,
    seen: Arc<Mutex<Vec<String>>>,
}

#[async_trait]
impl Transport for Recorder {
    async fn send(&self, req: Request) -> Result<Response, Error> {
        self.seen.lock().unwrap().push(format!("{} {}", req.method, req.path_and_query()));
        self.inner.send(req).await
    }
}

fn recorded(client: &Client) -> (Client, Arc<Mutex<Vec<String>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    (client.layered(move |inner| Recorder { inner, seen: s }), seen)
}

/// One request of each endpoint group, named; `Ok` if Consul answered 2xx.
async fn one_of_each(c: &Client, key: &str) -> Vec<(&'static str, Result<(), Error>)> {
    let q = QueryOptions::default();
    let blocking = QueryOptions::blocking(Index(1), Duration::from_millis(100));
    vec![
        ("kv put", unit(c.kv().put(key, "v").await)),
        ("kv get", unit(c.kv().get(key).await)),
        ("kv blocking get", unit(c.kv().get_with(key, &blocking).await)),
        ("kv list", unit(c.kv().list(key, &q).await)),
        ("kv delete", unit(c.kv().delete(key).await)),
        ("txn", unit(c.txn().execute(&[KvOp::get_tree(key)]).await)),
        ("session create", unit(c.session().create(&SessionRequest::default()).await)),
        ("session list", unit(c.session().list(&q).await)),
        (
            "session renew",
            unit(
                c.session().renew(&SessionId("0c1b6a1e-0000-4000-8000-000000000000".into())).await,
            ),
        ),
        ("catalog services", unit(c.catalog().services(&q).await)),
        ("catalog nodes", unit(c.catalog().nodes(&blocking).await)),
        ("health service", unit(c.health().service("consul", &HealthFilter::default(), &q).await)),
        ("status leader", unit(c.status().leader().await)),
        ("status peers", unit(c.status().peers().await)),
        ("event fire", unit(c.event().fire("deploy", "x", &EventFilter::default()).await)),
        ("event list", unit(c.event().list(Some("deploy"), &q).await)),
        ("agent self", unit(c.agent().self_info().await)),
        ("agent services", unit(c.agent().services().await)),
        ("agent members", unit(c.agent().members().await)),
    ]
}

fn unit<T>(r: Result<T, Error>) -> Result<(), Error> {
    r.map(|_| ())
}

/// Consul answers these locally whatever `dc` says.
fn local(what: &str) -> bool {
    what.starts_with("agent ") || what == "event list"
}

#[tokio::test]
async fn every_endpoint_group_carries_dc_and_an_unknown_one_has_no_path() {
    for b in backends().await {
        let key = unique("dc");
        let (far, seen) = recorded(&b.client.clone().with_datacenter("nowhere"));
        for (what, outcome) in one_of_each(&far, &key).await {
            match outcome {
                Ok(()) => assert!(local(what), "{}: {what} answered for dc=nowhere", b.name),
                Err(e) => {
                    assert!(!local(what), "{}: {what}: {e}", b.name);
                    assert_eq!(
                        e.status_code().map(|s| s.as_u16()),
                        Some(500),
                        "{}: {what}: {e}",
                        b.name
                    );
                    assert_eq!(e.message(), "No path to datacenter", "{}: {what}", b.name);
                }
            }
        }
        let seen = seen.lock().unwrap().clone();
        assert!(seen.len() >= 19, "{}: {seen:?}", b.name);
        for line in &seen {
            assert!(line.contains("dc=nowhere"), "{}: {line} has no dc", b.name);
        }

        // The agent's own datacenter: every group answers.
        let info = b.client.agent().self_info().await.unwrap();
        let dc = info["Config"]["Datacenter"].as_str().unwrap().to_string();
        let (home, seen) = recorded(&b.client.clone().with_datacenter(dc.clone()));
        for (what, outcome) in one_of_each(&home, &key).await {
            // (A made-up session's renewal is a 404, which `renew` answers as Ok(None).)
            if let Err(e) = outcome {
                panic!("{}: {what} in {dc}: {e}", b.name);
            }
        }
        assert!(seen.lock().unwrap().iter().all(|l| l.contains(&format!("dc={dc}"))), "{}", b.name);
    }
}

#[tokio::test]
async fn a_read_s_own_options_override_the_client_defaults_on_the_wire() {
    for b in backends().await {
        let key = unique("defaults");
        b.client.kv().put(&key, "v").await.unwrap();
        let (c, seen) = recorded(&b.client.clone().with_consistency(Consistency::Stale));
        assert!(c.kv().get(&key).await.unwrap().is_some(), "{}", b.name);
        let consistent = QueryOptions::default().consistent();
        assert!(c.kv().get_with(&key, &consistent).await.unwrap().0.is_some(), "{}", b.name);
        c.kv().put(&key, "w").await.unwrap();
        let seen = seen.lock().unwrap().clone();
        assert!(seen[0].ends_with("?stale"), "{}: {seen:?}", b.name);
        assert!(seen[1].ends_with("?consistent"), "{}: {seen:?}", b.name);
        assert!(!seen[2].contains("stale"), "{}: a write carries no read mode: {seen:?}", b.name);
    }
}

#[tokio::test]
async fn a_watch_blocks_with_the_client_s_default_wait_unless_it_sets_its_own() {
    use consul_api::RequestDefaults;
    use consul_api::watch::WatchOptions;
    for b in backends().await {
        let key = unique("watch-wait");
        b.client.kv().put(&key, "v").await.unwrap();
        let defaults =
            RequestDefaults { wait: Some(Duration::from_millis(300)), ..Default::default() };
        let (c, seen) = recorded(&b.client.clone().with_defaults(defaults));
        let mut w = c.watch_key(key.clone(), WatchOptions::default());
        w.next().await.unwrap();
        // Nothing changes: the second read times out after the client's wait, and reads again.
        let idle = tokio::time::timeout(Duration::from_millis(900), w.next()).await;
        assert!(idle.is_err(), "{}: no change, nothing to report", b.name);
        let own = WatchOptions::with_wait(Duration::from_millis(200));
        let mut w = c.watch_key(key, own);
        w.next().await.unwrap();
        let _ = tokio::time::timeout(Duration::from_millis(300), w.next()).await;
        let seen = seen.lock().unwrap().clone();
        assert!(!seen[0].contains("wait="), "{}: the first read does not block: {seen:?}", b.name);
        assert!(seen[1].contains("wait=300ms"), "{}: {seen:?}", b.name);
        assert!(seen.iter().any(|l| l.contains("wait=200ms")), "{}: {seen:?}", b.name);
        assert!(
            seen.iter().filter(|l| l.contains("wait=300ms")).count() >= 2,
            "{}: {seen:?}",
            b.name
        );
    }
}

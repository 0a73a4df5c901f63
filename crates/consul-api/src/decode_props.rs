//! Nothing a server sends can panic the client: random statuses, headers and bodies (random
//! bytes, and JSON of every shape, including shapes close to Consul's) go through every
//! endpoint's decoder; each call returns `Ok` or `Err`, never a panic.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode};
use proptest::prelude::*;

use crate::catalog::HealthFilter;
use crate::layers::{Retry, RetryPolicy};
use crate::session::SessionRequest;
use crate::txn::KvOp;
use crate::types::{Index, QueryOptions, SessionId};
use crate::{Client, Error, Request, Response, Transport};

/// Answers every request with the same canned response.
#[derive(Clone, Debug)]
struct Canned(Arc<Mutex<Response>>);

#[async_trait]
impl Transport for Canned {
    async fn send(&self, _req: Request) -> Result<Response, Error> {
        // A slow server: time already spent is what a huge Retry-After gets added to.
        tokio::time::sleep(Duration::from_secs(2)).await;
        Ok(self.0.lock().map_err(|_| Error::invalid("poisoned"))?.clone())
    }
}

fn json_value() -> impl Strategy<Value = serde_json::Value> {
    use serde_json::{Value, json};
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(|n| json!(n)),
        any::<u64>().prop_map(|n| json!(n)),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(|f| json!(f)),
        ".{0,12}".prop_map(Value::String),
        Just(json!("bm90IGJhc2U2NA")),
        Just(json!("10s")),
        Just(json!(u64::MAX)),
    ];
    let keys = prop_oneof![
        Just("Key".to_string()),
        Just("Value".to_string()),
        Just("ModifyIndex".to_string()),
        Just("LockIndex".to_string()),
        Just("Session".to_string()),
        Just("ID".to_string()),
        Just("TTL".to_string()),
        Just("Node".to_string()),
        Just("Service".to_string()),
        Just("Checks".to_string()),
        Just("Status".to_string()),
        Just("Results".to_string()),
        Just("Errors".to_string()),
        Just("KV".to_string()),
        ".{0,6}",
    ];
    leaf.prop_recursive(4, 48, 6, move |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..5).prop_map(Value::Array),
            proptest::collection::btree_map(keys.clone(), inner, 0..6)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

fn response() -> impl Strategy<Value = Response> {
    let status = prop_oneof![
        Just(200u16),
        Just(404),
        Just(409),
        Just(429),
        Just(500),
        Just(503),
        100u16..600
    ];
    let body = prop_oneof![
        json_value().prop_map(|v| Bytes::from(v.to_string())),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(Bytes::from),
    ];
    let header = prop_oneof![
        Just("x-consul-index"),
        Just("x-consul-knownleader"),
        Just("x-consul-lastcontact"),
        Just("retry-after"),
        Just("content-type"),
    ];
    let value = prop_oneof![
        any::<u64>().prop_map(|n| n.to_string()),
        Just("-1".to_string()),
        Just("18446744073709551616".to_string()),
        "[ -~]{0,24}",
    ];
    (status, body, proptest::collection::vec((header, value), 0..5)).prop_map(
        |(status, body, headers)| {
            let mut r = Response::new(StatusCode::from_u16(status).unwrap_or(StatusCode::OK), "");
            r.body = body;
            for (h, v) in headers {
                if let Ok(v) = HeaderValue::from_str(&v) {
                    r.headers.insert(HeaderName::from_static(h), v);
                }
            }
            r
        },
    )
}

async fn call_everything(c: &Client) {
    let q = QueryOptions::default();
    let s = SessionId("6d1e7c2c-3f53-4b8e-9c1a-0e2b7a1c9d11".into());
    let _ = c.kv().get_with("k", &q).await;
    let _ = c.kv().get_raw("k", &q).await;
    let _ = c.kv().list("p", &q).await;
    let _ = c.kv().keys("p", Some("/"), &q).await;
    let _ = c.kv().put("k", "v").await;
    let _ = c.kv().cas("k", "v", Index(3)).await;
    let _ = c.kv().acquire("k", "v", &s, 0).await;
    let _ = c.kv().release("k", "v", &s, 0).await;
    let _ = c.kv().delete_cas("k", Index(3)).await;
    let _ = c.txn().execute(&[KvOp::get("k"), KvOp::set("k", "v")]).await;
    let _ = c.session().create(&SessionRequest::default()).await;
    let _ = c.session().renew(&s).await;
    let _ = c.session().info(&s, &q).await;
    let _ = c.session().list(&q).await;
    let _ = c.agent().services().await;
    let _ = c.agent().checks().await;
    let _ = c.agent().members().await;
    let _ = c.agent().node_name().await;
    let _ = c.catalog().services(&q).await;
    let _ = c.catalog().service("web", Some("t"), &q).await;
    let _ = c.catalog().nodes(&q).await;
    let _ = c.catalog().node("n", &q).await;
    let _ = c.health().service("web", &HealthFilter::default(), &q).await;
    let _ = c.health().node("n", &q).await;
    let _ = c.status().leader().await;
    let _ = c.status().peers().await;
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn no_response_panics_the_client(resp in response()) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_time().start_paused(true).build()?;
        // Through the retry layer too: it reads Retry-After and statuses first.
        let canned = Canned(Arc::new(Mutex::new(resp)));
        let client = Client::new(Retry::new(canned, RetryPolicy::default()));
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(3600), call_everything(&client)).await
        })?;
    }
}

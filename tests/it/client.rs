//! consul-api's client against a real HTTP server (the sim's): limits that protect the client.

use consul_api::{Client, QueryOptions};
use consul_sim::{Sim, SimConfig};

#[tokio::test]
async fn a_response_over_the_size_cap_is_an_error_not_memory() {
    let sim = Sim::new(SimConfig::default());
    let server = sim.serve("127.0.0.1:0".parse().unwrap()).await.unwrap();
    let roomy = Client::builder().address(server.url()).build().unwrap();
    roomy.kv().put("big", vec![b'x'; 64 * 1024]).await.unwrap();
    let tight =
        Client::builder().address(server.url()).max_response_bytes(16 * 1024).build().unwrap();
    let err = tight.kv().get_raw("big", &QueryOptions::default()).await.unwrap_err();
    assert!(err.to_string().contains("16384-byte limit"), "{err}");
    assert!(!err.is_retryable(), "{err:?}");
    // Small answers still come through the same client.
    roomy.kv().put("small", "v").await.unwrap();
    let (v, _) = tight.kv().get_raw("small", &QueryOptions::default()).await.unwrap();
    assert_eq!(v.as_deref(), Some(&b"v"[..]));
    server.shutdown().await;
}

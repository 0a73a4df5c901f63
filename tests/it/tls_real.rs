//! The client over TLS and mutual TLS against a real Consul 1.8.7 dev agent configured for
//! HTTPS with `ca_file`, `cert_file`, `key_file` and `verify_incoming_https`, with the
//! certificates of `tls_certs`; and `unix://` addresses against the agent's unix socket.
//! What Consul does with each refused handshake is asserted as the client sees it, and the
//! sim's HTTPS server is held to the same.

use std::collections::HashMap;

use consul_api::layers::RetryPolicy;
use consul_api::{Client, ClientBuilder, Error, Request};
use http::Method;

use crate::real_consul::{RealConsul, free_port};
use crate::tls::https_sim;
use crate::tls_certs::{Pki, s};

/// A dev agent with its plain HTTP port (for the harness) and an HTTPS port that asks every
/// client for a certificate signed by `pki`'s CA.
async fn tls_consul(pki: &Pki) -> (RealConsul, String) {
    tls_consul_with(pki, true).await
}

/// [`tls_consul`], with `verify_incoming_https` as given.
async fn tls_consul_with(pki: &Pki, verify_incoming: bool) -> (RealConsul, String) {
    let https = free_port();
    let hcl = format!(
        "ports {{ https = {https} }}\nca_file = {:?}\ncert_file = {:?}\nkey_file = {:?}\nverify_incoming_https = {verify_incoming}",
        s(&pki.ca),
        s(&pki.server_cert),
        s(&pki.server_key),
    );
    let consul = RealConsul::start_with(&["-hcl", &hcl]).await;
    (consul, format!("https://127.0.0.1:{https}"))
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn from(env: &HashMap<String, String>) -> Client {
    ClientBuilder::from_env_with(|k| env.get(k).cloned())
        .expect("env")
        .retry(RetryPolicy::none())
        .build()
        .expect("client")
}

async fn round_trip(client: &Client, key: &str) -> Result<(), Error> {
    client.kv().put(key, "over tls").await?;
    let resp = client.raw(Request::new(Method::GET, format!("/v1/kv/{key}")).flag("raw")).await?;
    assert_eq!((resp.status.as_u16(), &resp.body[..]), (200, &b"over tls"[..]));
    Ok(())
}

/// The handshakes a client can have with an HTTPS agent that verifies incoming
/// certificates, and what the client sees of each refusal. `backend` names the agent.
async fn every_refusal(backend: &str, url: &str, pki: &Pki) {
    let good = [
        ("CONSUL_HTTP_ADDR", url),
        ("CONSUL_CACERT", s(&pki.ca)),
        ("CONSUL_CLIENT_CERT", s(&pki.client_cert)),
        ("CONSUL_CLIENT_KEY", s(&pki.client_key)),
    ];
    let refused = |client: Client, what: &'static str| async move {
        let err = client.status().leader().await.expect_err(what);
        eprintln!("{backend}, {what}: {err}");
        err
    };
    // Mutual TLS from the environment, CA file or CA directory.
    round_trip(&from(&vars(&good)), "tls-real/cacert").await.expect("mTLS with CONSUL_CACERT");
    let mut capath = vars(&good);
    capath.remove("CONSUL_CACERT");
    capath.insert("CONSUL_CAPATH".into(), s(&pki.ca_dir).into());
    round_trip(&from(&capath), "tls-real/capath").await.expect("mTLS with CONSUL_CAPATH");
    // The agent's own name, as Consul's certificates carry it.
    let mut named = vars(&good);
    named.insert("CONSUL_TLS_SERVER_NAME".into(), "server.dc1.consul".into());
    round_trip(&from(&named), "tls-real/named").await.expect("CONSUL_TLS_SERVER_NAME");

    // verify_incoming_https: no client certificate → the agent ends the handshake with
    // bad_certificate (Go); rustls, in the sim, with TLS 1.3's certificate_required.
    let mut no_cert = vars(&good);
    no_cert.remove("CONSUL_CLIENT_CERT");
    no_cert.remove("CONSUL_CLIENT_KEY");
    let err = refused(from(&no_cert), "no client certificate").await;
    assert!(err.is_config() && !err.is_retryable(), "{err:?}");
    let text = err.to_string();
    assert!(text.contains("BadCertificate") || text.contains("CertificateRequired"), "{text}");
    // A client certificate signed by a CA the agent does not trust: bad_certificate.
    let mut stranger = vars(&good);
    stranger.insert("CONSUL_CLIENT_CERT".into(), s(&pki.stranger_cert).into());
    stranger.insert("CONSUL_CLIENT_KEY".into(), s(&pki.stranger_key).into());
    let err = refused(from(&stranger), "a client certificate from another CA").await;
    assert!(err.is_config(), "{err:?}");
    assert!(err.to_string().contains("BadCertificate"), "{err}");
    // The client does not trust the agent's CA.
    let mut bad_ca = vars(&good);
    bad_ca.insert("CONSUL_CACERT".into(), s(&pki.stranger_ca).into());
    let err = refused(from(&bad_ca), "a CA that did not sign the agent's certificate").await;
    assert!(err.is_config() && err.to_string().contains("UnknownIssuer"), "{err}");
    // A name the certificate does not carry.
    let mut wrong = vars(&good);
    wrong.insert("CONSUL_TLS_SERVER_NAME".into(), "client.dc1.consul".into());
    let err = refused(from(&wrong), "a server name not in the agent's certificate").await;
    assert!(err.is_config() && err.to_string().contains("not valid for name"), "{err}");
    // CONSUL_HTTP_SSL_VERIFY=false: the stranger CA and the wrong name no longer matter.
    let mut skip = vars(&good);
    skip.insert("CONSUL_CACERT".into(), s(&pki.stranger_ca).into());
    skip.insert("CONSUL_TLS_SERVER_NAME".into(), "client.dc1.consul".into());
    skip.insert("CONSUL_HTTP_SSL_VERIFY".into(), "false".into());
    round_trip(&from(&skip), "tls-real/skip").await.expect("CONSUL_HTTP_SSL_VERIFY=false");
    // Plain HTTP to the HTTPS port: Go answers 400 in clear text, which the client reads.
    let plain = Client::builder()
        .address(url.replace("https://", "http://"))
        .retry(RetryPolicy::none())
        .build()
        .expect("client");
    let err = refused(plain, "plain HTTP to the HTTPS port").await;
    assert_eq!(err.status_code().map(|s| s.as_u16()), Some(400), "{err:?}");
    assert!(err.to_string().contains("Client sent an HTTP request to an HTTPS server."), "{err}");
}

#[tokio::test]
async fn tls_real_consul_and_sim_https_mtls_and_every_refusal() {
    let pki = Pki::new(&["server.dc1.consul", "localhost", "127.0.0.1"]);
    let (consul, url) = tls_consul(&pki).await;
    every_refusal("real Consul 1.8.7", &url, &pki).await;
    drop(consul);
    let sim = https_sim(&pki, true).await;
    every_refusal("sim", &sim.url(), &pki).await;
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_real_consul_and_sim_without_verify_incoming_take_any_client() {
    // ca_file without verify_incoming_https: no certificate is asked for, so neither a
    // missing nor a stranger's certificate matters.
    let pki = Pki::new(&["127.0.0.1"]);
    let (consul, url) = tls_consul_with(&pki, false).await;
    let sim = https_sim(&pki, false).await;
    for (backend, url) in [("real Consul 1.8.7", url), ("sim", sim.url())] {
        let base = vars(&[("CONSUL_HTTP_ADDR", url.as_str()), ("CONSUL_CACERT", s(&pki.ca))]);
        round_trip(&from(&base), "tls-real/no-cert").await.expect(backend);
        let mut stranger = base.clone();
        stranger.insert("CONSUL_CLIENT_CERT".into(), s(&pki.stranger_cert).into());
        stranger.insert("CONSUL_CLIENT_KEY".into(), s(&pki.stranger_key).into());
        round_trip(&from(&stranger), "tls-real/stranger").await.expect(backend);
    }
    drop(consul);
    sim.shutdown().await;
}

#[tokio::test]
async fn tls_real_consul_and_sim_agree_on_a_name_only_certificate() {
    // A certificate valid only for server.dc1.consul, as `consul tls cert create -server`
    // makes: 127.0.0.1 is refused, CONSUL_TLS_SERVER_NAME (with a port, which Go drops)
    // lets it in.
    let pki = Pki::new(&["server.dc1.consul"]);
    let (consul, url) = tls_consul(&pki).await;
    let sim = https_sim(&pki, true).await;
    for (backend, url) in [("real Consul 1.8.7", url), ("sim", sim.url())] {
        let base = [
            ("CONSUL_HTTP_ADDR", url.as_str()),
            ("CONSUL_CACERT", s(&pki.ca)),
            ("CONSUL_CLIENT_CERT", s(&pki.client_cert)),
            ("CONSUL_CLIENT_KEY", s(&pki.client_key)),
        ];
        let err = from(&vars(&base)).status().leader().await.expect_err(backend);
        assert!(err.to_string().contains("not valid for name"), "{backend}: {err}");
        let mut named = vars(&base);
        named.insert("CONSUL_TLS_SERVER_NAME".into(), "server.dc1.consul:8501".into());
        round_trip(&from(&named), "tls-real/name-only").await.expect(backend);
    }
    drop(consul);
    sim.shutdown().await;
}

/// What a client does over `CONSUL_HTTP_ADDR=unix://…` against the agent serving `url`.
async fn over_the_socket(backend: &str, url: &str, dir: &std::path::Path) {
    let client = from(&vars(&[("CONSUL_HTTP_ADDR", url)]));
    assert!(!client.status().leader().await.expect(backend).is_empty(), "{backend}");
    client.kv().put("unix/check", "over a socket").await.expect(backend);
    let resp = client.raw(Request::new(Method::GET, "/v1/kv/unix/check").flag("raw")).await;
    assert_eq!(&resp.expect(backend).body[..], b"over a socket", "{backend}");
    // A socket that is not there is a connection error naming it.
    let gone = format!("unix://{}", dir.join("nope.sock").display());
    let err = from(&vars(&[("CONSUL_HTTP_ADDR", &gone)])).status().leader().await;
    let err = err.expect_err("no socket");
    assert!(err.is_connect() && err.to_string().contains("nope.sock"), "{err}");
}

#[tokio::test]
async fn real_consul_and_sim_serve_a_unix_socket_address() {
    let dir =
        std::env::temp_dir().join(format!("consul-ha-unix-{}-{}", std::process::id(), free_port()));
    std::fs::create_dir_all(&dir).expect("dir");
    // The harness keeps Consul's TCP port; the same HTTP API is served on the socket too.
    let sock = dir.join("consul.sock");
    let hcl = format!("addresses {{ http = \"127.0.0.1 unix://{}\" }}", sock.display());
    let consul = RealConsul::start_with(&["-hcl", &hcl]).await;
    over_the_socket("real Consul 1.8.7", &format!("unix://{}", sock.display()), &dir).await;
    drop(consul);
    let sim = consul_sim::Sim::new(consul_sim::SimConfig::default());
    let server = sim
        .serve_unix(&dir.join("sim.sock"), consul_sim::ServeOptions::default())
        .await
        .expect("bind the socket");
    over_the_socket("sim", &server.url(), &dir).await;
    server.shutdown().await;
    assert!(!dir.join("sim.sock").exists(), "the socket file is removed on shutdown");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `X-Consul-Token` and `Authorization` a request carried, from its lower-cased head.
fn auth_headers(head: &str) -> Vec<String> {
    head.lines()
        .filter(|l| l.starts_with("x-consul-token:") || l.starts_with("authorization:"))
        .map(|l| l.trim().to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect()
}

#[tokio::test]
async fn tls_env_token_and_auth_headers_match_the_consul_cli() {
    // Go's consul/api, as the consul 1.8.7 command reads the environment, and this client
    // reading the same environment send the same token and basic-auth headers.
    let bin = crate::real_consul::binary().unwrap_or_else(|e| panic!("{e}"));
    let pki = Pki::new(&["127.0.0.1"]);
    let token_file = pki.path("token");
    let empty_file = pki.path("empty-token");
    std::fs::write(&token_file, "  file-token\n").expect("write");
    std::fs::write(&empty_file, "").expect("write");
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("CONSUL_HTTP_TOKEN", "env-token")],
        vec![("CONSUL_HTTP_TOKEN_FILE", s(&token_file))],
        vec![("CONSUL_HTTP_TOKEN", "env-token"), ("CONSUL_HTTP_TOKEN_FILE", s(&token_file))],
        vec![("CONSUL_HTTP_TOKEN", "env-token"), ("CONSUL_HTTP_TOKEN_FILE", s(&empty_file))],
        vec![("CONSUL_HTTP_TOKEN", "")],
        vec![("CONSUL_HTTP_AUTH", "alice:pa:ss")],
        vec![("CONSUL_HTTP_AUTH", "alice")],
        vec![("CONSUL_HTTP_AUTH", "alice:pw"), ("CONSUL_HTTP_TOKEN", "env-token")],
    ];
    for case in cases {
        let (addr, seen) = crate::tls::capture_one_request();
        let out = std::process::Command::new(&bin)
            .args(["kv", "get", "consul-ha-parity"])
            .env_clear()
            .env("CONSUL_HTTP_ADDR", &addr)
            .envs(case.iter().copied())
            .output()
            .expect("the consul command runs");
        let go = auth_headers(&seen.join().expect("capture"));
        let sets_something = case.iter().any(|(_, v)| !v.is_empty());
        assert_eq!(!go.is_empty(), sets_something, "{case:?}: the consul command sent {go:?}");

        let (addr, seen) = crate::tls::capture_one_request();
        let mut env = vars(&case);
        env.insert("CONSUL_HTTP_ADDR".into(), addr);
        let client = from(&env);
        let _ = client.raw(Request::new(Method::GET, "/v1/kv/consul-ha-parity")).await;
        let ours = auth_headers(&seen.join().expect("capture"));
        assert_eq!(ours, go, "{case:?} (consul: {})", String::from_utf8_lossy(&out.stderr));
    }
}

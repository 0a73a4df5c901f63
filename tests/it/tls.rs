//! The client over TLS and mutual TLS against the sim's HTTPS server (`ServeOptions::tls`,
//! `consul-ha agent -dev --tls-cert … --verify-incoming`), and Consul's client environment
//! read by `ClientBuilder::from_env_with`. The same handshakes against real Consul 1.8.7 are
//! in `tls_real`.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::path::Path;

use consul_api::layers::RetryPolicy;
use consul_api::{BasicAuth, Client, ClientBuilder, Error, Request};
use consul_sim::{ServeOptions, Server, Sim, SimConfig, TlsConfig};
use http::Method;

use crate::tls_certs::{Pki, s};

/// The sim serving HTTPS with `pki`'s server certificate; with `verify_incoming`, only
/// clients with a certificate signed by `pki`'s CA get in.
pub(crate) async fn https_sim(pki: &Pki, verify_incoming: bool) -> Server {
    let tls = TlsConfig::from_pem_files(
        &pki.server_cert,
        &pki.server_key,
        Some(&pki.ca),
        verify_incoming,
    )
    .expect("TLS config");
    let options = ServeOptions { tls: Some(tls), ..ServeOptions::default() };
    Sim::new(SimConfig::default())
        .serve_with("127.0.0.1:0".parse().expect("addr"), options)
        .await
        .expect("bind")
}

/// A client builder for `server` trusting `ca`, without retries (a refusal is final).
fn builder(server: &Server, ca: &Path) -> ClientBuilder {
    Client::builder().address(server.url()).ca_cert(ca).retry(RetryPolicy::none())
}

/// Writes a key and reads it back raw: proves requests and answers cross the connection.
async fn round_trip(client: &Client) -> Result<(), Error> {
    client.kv().put("tls/check", "over tls").await?;
    let resp = client.raw(Request::new(Method::GET, "/v1/kv/tls/check").flag("raw")).await?;
    assert_eq!(resp.status, 200);
    assert_eq!(&resp.body[..], b"over tls");
    Ok(())
}

#[tokio::test]
async fn tls_client_talks_to_the_sim_over_https() {
    let pki = Pki::new(&["localhost", "127.0.0.1"]);
    let server = https_sim(&pki, false).await;
    assert!(server.url().starts_with("https://"), "{}", server.url());
    let client = builder(&server, &pki.ca).build().expect("client");
    round_trip(&client).await.expect("a round trip over TLS");
    // Plain HTTP to the TLS port gets Go's clear-text 400, as from real Consul (tls_real).
    let plain = Client::builder()
        .address(format!("http://{}", server.local_addr()))
        .retry(RetryPolicy::none())
        .build()
        .expect("client");
    let err = plain.status().leader().await.expect_err("plain HTTP");
    assert_eq!(err.status_code().map(|s| s.as_u16()), Some(400), "{err:?}");
    assert!(err.to_string().contains("Client sent an HTTP request to an HTTPS server."), "{err}");
    // And the handshake still works after a peek at a slow client's first bytes.
    round_trip(&client).await.expect("TLS again");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_mutual_client_cert_is_accepted_with_verify_incoming() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = https_sim(&pki, true).await;
    let client = builder(&server, &pki.ca)
        .client_cert(&pki.client_cert, &pki.client_key)
        .build()
        .expect("client");
    round_trip(&client).await.expect("a round trip over mutual TLS");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_a_server_cert_from_an_untrusted_ca_is_refused() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = https_sim(&pki, false).await;
    let client = builder(&server, &pki.stranger_ca).build().expect("client");
    let err = client.status().leader().await.expect_err("an untrusted CA must be refused");
    assert!(err.is_config() && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_wrong_server_name_is_refused_and_tls_server_name_fixes_it() {
    // As Consul's own agent certificates: valid for server.dc1.consul, not for the IP.
    let pki = Pki::new(&["server.dc1.consul"]);
    let server = https_sim(&pki, false).await;
    let client = builder(&server, &pki.ca).build().expect("client");
    let err = client.status().leader().await.expect_err("127.0.0.1 is not in the certificate");
    assert!(err.is_config(), "{err:?}");
    assert!(err.to_string().contains("not valid for name"), "{err}");

    let named = builder(&server, &pki.ca).tls_server_name("server.dc1.consul:8501");
    round_trip(&named.build().expect("client")).await.expect("the certificate's own name");
    let other = builder(&server, &pki.ca).tls_server_name("client.dc1.consul");
    let err = other.build().expect("client").status().leader().await.expect_err("wrong name");
    assert!(err.to_string().contains("not valid for name"), "{err}");
    server.shutdown().await;
}

#[tokio::test]
async fn tls_verify_incoming_refuses_a_client_without_a_signed_cert() {
    let pki = Pki::new(&["127.0.0.1"]);
    let server = https_sim(&pki, true).await;
    // No certificate at all.
    let none = builder(&server, &pki.ca).build().expect("client");
    let err = none.status().leader().await.expect_err("no client certificate");
    assert!(err.is_config() && !err.is_retryable(), "{err:?}");
    assert!(err.to_string().contains("CertificateRequired"), "{err}");
    // A certificate signed by a CA the server does not trust.
    let stranger = builder(&server, &pki.ca)
        .client_cert(&pki.stranger_cert, &pki.stranger_key)
        .build()
        .expect("client");
    let err = stranger.status().leader().await.expect_err("an unsigned client certificate");
    assert!(err.is_config(), "{err:?}");
    // Go's alert, as real Consul 1.8.7 sends it (tls_real).
    assert!(err.to_string().contains("BadCertificate"), "{err}");
    // The connection was refused before any request reached the store.
    let good = builder(&server, &pki.ca)
        .client_cert(&pki.client_cert, &pki.client_key)
        .build()
        .expect("client");
    let resp = good.raw(Request::new(Method::GET, "/v1/kv/tls/check")).await.expect("get");
    assert_eq!(resp.status, 404);
    server.shutdown().await;
}

#[tokio::test]
async fn tls_skip_verify_accepts_any_server_cert_but_still_encrypts() {
    let pki = Pki::new(&["server.dc1.consul"]);
    let server = https_sim(&pki, false).await;
    // Neither the CA nor the name would pass; CONSUL_HTTP_SSL_VERIFY=false skips both.
    let env = vars(&[("CONSUL_HTTP_ADDR", &server.url()), ("CONSUL_HTTP_SSL_VERIFY", "false")]);
    let client = from(&env).expect("env").retry(RetryPolicy::none()).build().expect("client");
    round_trip(&client).await.expect("unverified TLS");
    server.shutdown().await;
}

fn vars(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

fn from(env: &HashMap<String, String>) -> Result<ClientBuilder, Error> {
    ClientBuilder::from_env_with(|k| env.get(k).cloned())
}

#[tokio::test]
async fn tls_env_vars_configure_https_capath_client_cert_and_server_name() {
    let pki = Pki::new(&["server.dc1.consul"]);
    let server = https_sim(&pki, true).await;
    // CONSUL_HTTP_SSL=true turns a bare host:port into https.
    let env = vars(&[
        ("CONSUL_HTTP_ADDR", &server.local_addr().to_string()),
        ("CONSUL_HTTP_SSL", "true"),
        ("CONSUL_CAPATH", s(&pki.ca_dir)),
        ("CONSUL_CLIENT_CERT", s(&pki.client_cert)),
        ("CONSUL_CLIENT_KEY", s(&pki.client_key)),
        ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
    ]);
    let client = from(&env).expect("env").retry(RetryPolicy::none()).build().expect("client");
    round_trip(&client).await.expect("every TLS variable applied");

    // Each variable is needed: drop one and the handshake fails.
    for missing in ["CONSUL_HTTP_SSL", "CONSUL_TLS_SERVER_NAME"] {
        let mut env = env.clone();
        env.remove(missing);
        let client = from(&env).expect("env").retry(RetryPolicy::none()).build().expect("client");
        assert!(client.status().leader().await.is_err(), "without {missing}");
    }
    let mut no_cert = env.clone();
    no_cert.remove("CONSUL_CLIENT_CERT");
    no_cert.remove("CONSUL_CLIENT_KEY");
    let client = from(&no_cert).expect("env").retry(RetryPolicy::none()).build().expect("client");
    assert!(client.status().leader().await.is_err(), "without the client certificate");
    let mut no_ca = env.clone();
    no_ca.remove("CONSUL_CAPATH");
    let err = from(&no_ca).expect("env").build().expect_err("https without a CA");
    assert!(err.to_string().contains("CONSUL_CACERT"), "{err}");

    // CONSUL_CACERT wins over CONSUL_CAPATH, as in Go: a stranger CA file makes it fail.
    let mut both = env.clone();
    both.insert("CONSUL_CACERT".into(), s(&pki.stranger_ca).into());
    let client = from(&both).expect("env").retry(RetryPolicy::none()).build().expect("client");
    let err = client.status().leader().await.expect_err("CONSUL_CACERT is the one used");
    assert!(err.to_string().contains("UnknownIssuer"), "{err}");

    // A file in CONSUL_CAPATH that holds no certificate is named.
    std::fs::write(pki.ca_dir.join("junk.txt"), "not a certificate").expect("write");
    let err = from(&env).expect("env").build().expect_err("junk in CONSUL_CAPATH");
    assert!(
        err.to_string().contains("CONSUL_CAPATH") && err.to_string().contains("junk.txt"),
        "{err}"
    );
    server.shutdown().await;
}

#[tokio::test]
async fn tls_env_bad_files_are_config_errors_naming_the_variable() {
    let pki = Pki::new(&["127.0.0.1"]);
    let addr = "https://127.0.0.1:1";
    for (var, value, also) in [
        ("CONSUL_CACERT", s(&pki.path("missing.pem")).to_string(), None),
        ("CONSUL_CACERT", s(&pki.client_key).to_string(), None),
        ("CONSUL_CAPATH", s(&pki.path("no-such-dir")).to_string(), None),
        (
            "CONSUL_CLIENT_KEY",
            s(&pki.client_cert).to_string(),
            Some(("CONSUL_CLIENT_CERT", s(&pki.client_cert).to_string())),
        ),
        ("CONSUL_TLS_SERVER_NAME", "not a name!".to_string(), None),
    ] {
        let mut env = vars(&[("CONSUL_HTTP_ADDR", addr)]);
        if var != "CONSUL_CAPATH" {
            // (CONSUL_CACERT wins over CONSUL_CAPATH, which would then not be read.)
            env.insert("CONSUL_CACERT".into(), s(&pki.ca).into());
        }
        env.insert(var.into(), value.clone());
        if let Some((k, v)) = also {
            env.insert(k.into(), v);
        }
        let err = from(&env).and_then(|b| b.build()).expect_err(&format!("{var}={value}"));
        assert!(err.is_config(), "{err:?}");
        assert!(err.to_string().contains(var), "{var}={value}: {err}");
    }
    let env = vars(&[("CONSUL_HTTP_TOKEN_FILE", s(&pki.path("no-token")))]);
    let err = from(&env).expect("env").build().expect_err("a missing token file");
    assert!(err.to_string().contains("no-token"), "{err}");
}

/// One HTTP request's head as a plain TCP server sees it, lower-cased (answers `""`).
pub(crate) fn capture_one_request() -> (String, std::thread::JoinHandle<String>) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let handle = std::thread::spawn(move || {
        let (mut conn, _) = listener.accept().expect("accept");
        let mut head = Vec::new();
        let mut buf = [0u8; 4096];
        while !head.windows(4).any(|w| w == b"\r\n\r\n") {
            let n = conn.read(&mut buf).expect("read");
            if n == 0 {
                break;
            }
            head.extend_from_slice(&buf[..n]);
        }
        let _ = conn.write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n\"\"");
        String::from_utf8_lossy(&head).to_lowercase()
    });
    (addr, handle)
}

#[tokio::test]
async fn tls_env_token_file_wins_and_is_trimmed_and_basic_auth_is_sent() {
    let pki = Pki::new(&["127.0.0.1"]);
    let token_file = pki.path("token");
    std::fs::write(&token_file, "  file-token-123\n").expect("write token");
    let (addr, seen) = capture_one_request();
    let env = vars(&[
        ("CONSUL_HTTP_ADDR", &addr),
        ("CONSUL_HTTP_TOKEN", "env-token-456"),
        ("CONSUL_HTTP_TOKEN_FILE", s(&token_file)),
        ("CONSUL_HTTP_AUTH", "alice:s3cr3t"),
    ]);
    let client = from(&env).expect("env").build().expect("client");
    client.status().leader().await.expect("answered");
    let head = seen.join().expect("server thread");
    assert!(head.contains("x-consul-token: file-token-123\r\n"), "{head}");
    // base64("alice:s3cr3t")
    assert!(head.contains("authorization: basic ywxpy2u6cznjcjn0\r\n"), "{head}");

    // Go's NewClient: an empty token file leaves CONSUL_HTTP_TOKEN in force.
    std::fs::write(&token_file, "\n").expect("write token");
    let (addr, seen) = capture_one_request();
    let mut env = env.clone();
    env.insert("CONSUL_HTTP_ADDR".into(), addr);
    let client = from(&env).expect("env").build().expect("client");
    client.status().leader().await.expect("answered");
    let head = seen.join().expect("server thread");
    assert!(head.contains("x-consul-token: env-token-456\r\n"), "{head}");
}

#[tokio::test]
async fn tls_tokens_and_passwords_never_appear_in_debug() {
    let pki = Pki::new(&["127.0.0.1"]);
    let token_file = pki.path("token");
    std::fs::write(&token_file, "file-secret-789").expect("write token");
    let b = Client::builder()
        .address("https://127.0.0.1:8501")
        .ca_cert(&pki.ca)
        .token("tok-secret-123")
        .basic_auth(BasicAuth { username: "alice".into(), password: "pw-secret-456".into() });
    let client = b.clone().build().expect("client");
    let from_file = b.clone().token_file(&token_file).build().expect("client");
    let opts =
        consul_api::QueryOptions { token: Some("tok-secret-123".into()), ..Default::default() };
    let options = consul_api::http::HttpOptions {
        basic_auth: Some(BasicAuth::parse("alice:pw-secret-456")),
        ..Default::default()
    };
    for text in [
        format!("{b:?}"),
        format!("{client:?}"),
        format!("{from_file:?}"),
        format!("{opts:?}"),
        format!("{options:?}"),
    ] {
        for secret in ["tok-secret-123", "pw-secret-456", "file-secret-789"] {
            assert!(!text.contains(secret), "{secret} in {text}");
        }
    }
    assert!(format!("{b:?}").contains("alice"), "the user name is not a secret");
}

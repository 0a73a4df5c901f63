//! Consul's client environment, read as Go's `consul/api` `DefaultConfig` and `NewClient`
//! read it.
//!
//! | variable | effect |
//! |---|---|
//! | `CONSUL_HTTP_ADDR` | `host:port`, `http://host:port`, `https://host:port` or `unix:///path` (default `127.0.0.1:8500`) |
//! | `CONSUL_HTTP_TOKEN` | ACL token sent as `X-Consul-Token` |
//! | `CONSUL_HTTP_TOKEN_FILE` | file holding the token (trimmed); wins over `CONSUL_HTTP_TOKEN` unless empty, as in Go |
//! | `CONSUL_HTTP_AUTH` | HTTP basic auth, `user:password` or `user` |
//! | `CONSUL_HTTP_SSL` | `true`: https even for a `host:port` or `http://` address |
//! | `CONSUL_HTTP_SSL_VERIFY` | `false`: accept any server certificate |
//! | `CONSUL_CACERT` | PEM file of the CA(s); wins over `CONSUL_CAPATH` |
//! | `CONSUL_CAPATH` | directory of PEM CA certificates (read recursively) |
//! | `CONSUL_CLIENT_CERT`, `CONSUL_CLIENT_KEY` | client certificate and key, for `verify_incoming` (both or neither) |
//! | `CONSUL_TLS_SERVER_NAME` | name to verify in the server's certificate (a `:port` is dropped) |
//!
//! An empty variable counts as unset, as in Go. Booleans take Go's `strconv.ParseBool`
//! forms (`1 t T TRUE true True`, `0 f F FALSE false False`); where Go only logs a warning
//! for another value and goes on, this is a configuration error naming the variable.

use crate::http::{BasicAuth, parse_address};
use crate::{ClientBuilder, Error};

/// Applies the environment, read through `lookup`, to `b`.
pub(crate) fn apply(
    mut b: ClientBuilder,
    lookup: impl Fn(&str) -> Option<String>,
) -> Result<ClientBuilder, Error> {
    let var = |name: &str| lookup(name).filter(|v| !v.is_empty());
    if let Some(addr) = var("CONSUL_HTTP_ADDR") {
        parse_address(&addr)
            .map_err(|e| Error::config(format!("CONSUL_HTTP_ADDR: {}", e.message())))?;
        b = b.address(addr);
    }
    // Go: the token file, read when the client is made, wins over the token when it is
    // not empty.
    if let Some(token) = var("CONSUL_HTTP_TOKEN") {
        b = b.token(token);
    }
    if let Some(file) = var("CONSUL_HTTP_TOKEN_FILE") {
        b = b.token_file(file);
    }
    if let Some(auth) = var("CONSUL_HTTP_AUTH") {
        b = b.basic_auth(BasicAuth::parse(&auth));
    }
    if let Some(v) = var("CONSUL_HTTP_SSL") {
        b = b.https(parse_bool("CONSUL_HTTP_SSL", &v)?);
    }
    if let Some(v) = var("CONSUL_HTTP_SSL_VERIFY") {
        b = b.tls_skip_verify(!parse_bool("CONSUL_HTTP_SSL_VERIFY", &v)?);
    }
    if let Some(name) = var("CONSUL_TLS_SERVER_NAME") {
        b = b.tls_server_name(name);
    }
    if let Some(file) = var("CONSUL_CACERT") {
        b = b.ca_cert(file);
    }
    if let Some(dir) = var("CONSUL_CAPATH") {
        b = b.ca_path(dir);
    }
    match (var("CONSUL_CLIENT_CERT"), var("CONSUL_CLIENT_KEY")) {
        (Some(cert), Some(key)) => b = b.client_cert(cert, key),
        (None, None) => {}
        _ => {
            return Err(Error::config(
                "both client cert and client key must be provided: \
                 set CONSUL_CLIENT_CERT and CONSUL_CLIENT_KEY together",
            ));
        }
    }
    Ok(b)
}

/// Go's `strconv.ParseBool`.
fn parse_bool(name: &str, value: &str) -> Result<bool, Error> {
    match value {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
        _ => Err(Error::config(format!("{name}={value:?} is not a boolean (true or false)"))),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;
    use crate::Client;

    fn from(vars: &[(&str, &str)]) -> Result<ClientBuilder, Error> {
        let map: HashMap<String, String> =
            vars.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        apply(Client::builder(), |k| map.get(k).cloned())
    }

    #[test]
    fn tls_env_booleans_parse_as_go_parse_bool() {
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert!(parse_bool("X", t).unwrap(), "{t}");
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert!(!parse_bool("X", f).unwrap(), "{f}");
        }
        let e = from(&[("CONSUL_HTTP_SSL_VERIFY", "no")]).unwrap_err();
        assert!(e.to_string().contains("CONSUL_HTTP_SSL_VERIFY"), "{e}");
        let e = from(&[("CONSUL_HTTP_SSL", "yes")]).unwrap_err();
        assert!(e.to_string().contains("CONSUL_HTTP_SSL"), "{e}");
    }

    #[test]
    fn tls_env_a_bad_address_or_half_a_client_cert_names_the_variable() {
        let e = from(&[("CONSUL_HTTP_ADDR", "ftp://x:1")]).unwrap_err();
        assert!(e.to_string().contains("CONSUL_HTTP_ADDR"), "{e}");
        let e = from(&[("CONSUL_CLIENT_CERT", "/c.pem")]).unwrap_err();
        assert!(e.to_string().contains("CONSUL_CLIENT_KEY"), "{e}");
    }

    #[test]
    fn tls_env_empty_variables_count_as_unset() {
        let b = from(&[("CONSUL_HTTP_ADDR", ""), ("CONSUL_HTTP_SSL", ""), ("CONSUL_CACERT", "")])
            .unwrap();
        let d = format!("{b:?}");
        assert!(d.contains("127.0.0.1:8500") && d.contains("ca_cert: None"), "{d}");
    }

    #[test]
    fn tls_env_each_variable_lands_in_the_builder() {
        let b = from(&[
            ("CONSUL_HTTP_ADDR", "consul.local:8501"),
            ("CONSUL_HTTP_SSL", "true"),
            ("CONSUL_HTTP_SSL_VERIFY", "false"),
            ("CONSUL_CACERT", "/ca.pem"),
            ("CONSUL_CAPATH", "/cas"),
            ("CONSUL_CLIENT_CERT", "/c.pem"),
            ("CONSUL_CLIENT_KEY", "/k.pem"),
            ("CONSUL_TLS_SERVER_NAME", "server.dc1.consul"),
            ("CONSUL_HTTP_AUTH", "user:pa:ss"),
            ("CONSUL_HTTP_TOKEN", "tok-secret"),
        ])
        .unwrap();
        let d = format!("{b:?}");
        for want in [
            "consul.local:8501",
            "https: true",
            "tls_skip_verify: true",
            "\"/ca.pem\"",
            "\"/cas\"",
            "\"/c.pem\"",
            "\"/k.pem\"",
            "server.dc1.consul",
            "username: \"user\"",
        ] {
            assert!(d.contains(want), "{want} missing from {d}");
        }
        assert!(!d.contains("tok-secret") && !d.contains("pa:ss"), "a secret leaked: {d}");
        assert_eq!(BasicAuth::parse("user:pa:ss").password, "pa:ss");
        assert_eq!(BasicAuth::parse("user").password, "");
    }
}

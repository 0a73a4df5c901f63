//! Parsing a request target (`/v1/kv/a%20b?recurse&index=5`) the same way for every adapter.

use bytes::Bytes;
use http::{HeaderMap, Method};
use percent_encoding::percent_decode_str;

/// One request as both adapters hand it to the core: method, raw request target (encoded
/// path and query), headers, body.
#[derive(Clone, Debug)]
pub struct SimRequest {
    /// HTTP method.
    pub method: Method,
    /// The request target exactly as sent: `/v1/kv/a%20b?recurse`.
    pub target: String,
    /// Headers.
    pub headers: HeaderMap,
    /// Body.
    pub body: Bytes,
}

/// A parsed request target: the decoded path and query parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// The decoded path.
    pub path: String,
    /// Decoded query parameters in order; a bare flag has an empty value.
    pub query: Vec<(String, String)>,
}

impl Target {
    /// Parses a request target; an error names what is malformed.
    pub fn parse(target: &str) -> Result<Target, String> {
        let (raw_path, raw_query) = target.split_once('?').unwrap_or((target, ""));
        let path = decode(raw_path, false).map_err(|e| format!("invalid path: {e}"))?;
        if !path.starts_with('/') {
            return Err(format!("invalid path {path:?}: must start with /"));
        }
        let mut query = Vec::new();
        for part in raw_query.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = part.split_once('=').unwrap_or((part, ""));
            let k = decode(k, true).map_err(|e| format!("invalid query parameter: {e}"))?;
            let v = decode(v, true).map_err(|e| format!("invalid value of {k:?}: {e}"))?;
            query.push((k, v));
        }
        Ok(Target { path, query })
    }

    /// The value of a query parameter (`Some("")` for a bare flag).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// True if a presence flag is set (`?recurse`, `?recurse=false` alike, as in Consul).
    pub fn flag(&self, name: &str) -> bool {
        self.param(name).is_some()
    }
}

fn decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let s = if plus_is_space { s.replace('+', " ") } else { s.to_string() };
    percent_decode_str(&s)
        .decode_utf8()
        .map(|c| c.into_owned())
        .map_err(|_| format!("{s:?} is not valid UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_decode_paths_and_flags() {
        let t = Target::parse("/v1/kv/a%20b/%C3%BC?recurse&separator=%2F&x=1+2").unwrap();
        assert_eq!(t.path, "/v1/kv/a b/ü");
        assert!(t.flag("recurse"));
        assert_eq!(t.param("separator"), Some("/"));
        assert_eq!(t.param("x"), Some("1 2"));
        assert!(Target::parse("/v1/kv/%FF").unwrap_err().contains("UTF-8"));
    }
}

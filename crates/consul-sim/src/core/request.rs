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

/// A request target refused before any endpoint sees it, as Consul 1.8.7 refuses it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum BadTarget {
    /// An invalid `%` escape in the path (`/v1/kv/%zz`, `/v1/kv/%`): Go's net/http answers
    /// `400 Bad Request` (that text as the body) and closes the connection.
    Path(String),
    /// An invalid `%` escape in the query (`?x=%zz`): Consul fails to parse the query and
    /// answers 500 with an empty body.
    Query(String),
}

impl std::fmt::Display for BadTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BadTarget::Path(e) => write!(f, "invalid URL escape {e:?} in the path"),
            BadTarget::Query(e) => write!(f, "invalid URL escape {e:?} in the query"),
        }
    }
}

impl BadTarget {
    /// Checks every `%` of a raw request target is followed by two hex digits, as Go's
    /// `url` package does for the path (net/http) and the query (Consul's parsing).
    pub fn check(target: &str) -> Result<(), BadTarget> {
        let (path, query) = target.split_once('?').unwrap_or((target, ""));
        if let Some(e) = bad_escape(path) {
            return Err(BadTarget::Path(e));
        }
        match bad_escape(query) {
            Some(e) => Err(BadTarget::Query(e)),
            None => Ok(()),
        }
    }
}

/// The first invalid `%` escape in `s`, as written (`%zz`, `%2`, `%`).
fn bad_escape(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let hex = |i: usize| b.get(i).is_some_and(u8::is_ascii_hexdigit);
    let at = (0..b.len()).find(|&i| b.get(i) == Some(&b'%') && !(hex(i + 1) && hex(i + 2)))?;
    let escape = b.get(at..).unwrap_or_default().iter().take(3).copied().collect::<Vec<u8>>();
    Some(String::from_utf8_lossy(&escape).into_owned())
}

/// Where Go's ServeMux redirects a path that is not clean (`//`, `.` or `..` segments): the
/// cleaned path with the query kept, or `None` when the path is clean already.
pub(crate) fn clean_redirect(target: &str) -> Option<String> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    if is_clean(path) {
        return None;
    }
    let clean = go_clean(path);
    if clean == path {
        return None;
    }
    Some(match query {
        Some(q) => format!("{clean}?{q}"),
        None => clean,
    })
}

/// Go's `path.Clean`, keeping a trailing slash as ServeMux does.
fn go_clean(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for seg in path.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    let mut clean = format!("/{}", parts.join("/"));
    if path.ends_with('/') && clean != "/" {
        clean.push('/');
    }
    clean
}

/// True when `path` is already what Go's `path.Clean` makes of it (keeping a trailing
/// slash): rooted, no empty, `.` or `..` segment. The common case, checked without
/// allocating.
fn is_clean(path: &str) -> bool {
    // One pass over the bytes, from slash to slash (this runs on every request): after the
    // leading slash, no segment is `.` or `..`, and none is empty but the last.
    let bytes = path.as_bytes();
    if bytes.first() != Some(&b'/') {
        return false;
    }
    let mut start = 1;
    loop {
        let rest = bytes.get(start..).unwrap_or_default();
        let end = memchr::memchr(b'/', rest).map_or(bytes.len(), |at| start + at);
        let segment = bytes.get(start..end).unwrap_or_default();
        let last = end == bytes.len();
        if segment == b"." || segment == b".." || (segment.is_empty() && !last) {
            return false;
        }
        if last {
            return true;
        }
        start = end + 1;
    }
}

/// Consul 1.8.7's handlers registered as subtrees (`/v1/kv/`) that have no handler of the
/// same name without the slash. Each was measured: `PUT /v1/kv?x=1` answers
/// `301 Location: /v1/kv/?x=1`.
const SUBTREES: &[&str] = &[
    "/v1/kv/",
    "/v1/agent/service/",
    "/v1/agent/service/deregister/",
    "/v1/agent/service/maintenance/",
    "/v1/agent/check/deregister/",
    "/v1/agent/check/pass/",
    "/v1/agent/check/warn/",
    "/v1/agent/check/fail/",
    "/v1/agent/check/update/",
    "/v1/agent/health/service/id/",
    "/v1/agent/health/service/name/",
    "/v1/agent/join/",
    "/v1/agent/force-leave/",
    "/v1/agent/token/",
    "/v1/agent/connect/ca/leaf/",
    "/v1/acl/policy/name/",
    "/v1/acl/role/name/",
    "/v1/catalog/service/",
    "/v1/catalog/node/",
    "/v1/catalog/node-services/",
    "/v1/catalog/connect/",
    "/v1/catalog/gateway-services/",
    "/v1/health/service/",
    "/v1/health/checks/",
    "/v1/health/node/",
    "/v1/health/state/",
    "/v1/health/connect/",
    "/v1/health/ingress/",
    "/v1/session/info/",
    "/v1/session/node/",
    "/v1/session/destroy/",
    "/v1/session/renew/",
    "/v1/event/fire/",
    "/v1/coordinate/node/",
    "/v1/internal/ui/node/",
    "/v1/internal/ui/gateway-services-nodes/",
    "/v1/internal/federation-state/",
    "/v1/discovery-chain/",
];

/// The longest of [`SUBTREES`] holding `path`.
pub(crate) fn subtree_of(path: &str) -> Option<&'static str> {
    SUBTREES.iter().copied().filter(|s| path.starts_with(s)).max_by_key(|s| s.len())
}

/// Where Go's ServeMux redirects a path naming a subtree without its slash (`/v1/kv`): the
/// path with the slash, the query kept; `None` for any other path.
pub(crate) fn subtree_redirect(target: &str) -> Option<String> {
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (target, None),
    };
    // The subtree is the path and a slash (a length and a prefix compare: this runs on every
    // request).
    let subtree = SUBTREES.iter().find(|s| s.len() == path.len() + 1 && s.starts_with(path))?;
    Some(match query {
        Some(q) => format!("{subtree}?{q}"),
        None => subtree.to_string(),
    })
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
        BadTarget::check(target).map_err(|e| e.to_string())?;
        Target::parse_checked(target)
    }

    /// [`parse`](Self::parse) of a target that already passed [`BadTarget::check`] (the
    /// core checks it first, to answer as Go does).
    pub(crate) fn parse_checked(target: &str) -> Result<Target, String> {
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

/// Whether every character of the target's decoded path prints by Go's `unicode.IsPrint`
/// (letters, marks, numbers, punctuation, symbols and the ASCII space), as Consul's outermost
/// handler (go-cleanhttp's `PrintablePathCheckHandler`) requires before anything else sees
/// the request: a control character, a space other than U+0020, a line or paragraph
/// separator, a format character, a private-use or unassigned code point in the path gets a
/// bare 400. Bytes that are not UTF-8 read as U+FFFD, which prints. Unicode 12.0, as in the
/// Go that built Consul 1.8.7 (each kind checked on it).
pub(crate) fn printable_path(target: &str) -> bool {
    // Printable ASCII up to the query needs no decoding: one pass, most requests.
    for b in target.bytes() {
        match b {
            b'?' => return true,
            b' '..=b'~' if b != b'%' => {}
            _ => return slow_printable(target),
        }
    }
    true
}

/// [`printable_path`] of a target with escapes or bytes beyond printable ASCII.
fn slow_printable(target: &str) -> bool {
    let raw = target.split_once('?').map_or(target, |(p, _)| p);
    let bytes: Vec<u8> = percent_decode_str(raw).collect();
    String::from_utf8_lossy(&bytes).chars().all(super::gojson::go_prints)
}

/// Percent-decodes one component, `+` as a space in the query; one allocation, the result.
fn decode(s: &str, plus_is_space: bool) -> Result<String, String> {
    let spaced;
    let s = if plus_is_space && s.contains('+') {
        spaced = s.replace('+', " ");
        spaced.as_str()
    } else {
        s
    };
    percent_decode_str(s)
        .decode_utf8()
        .map(std::borrow::Cow::into_owned)
        .map_err(|_| format!("{s:?} is not valid UTF-8 once decoded"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_print_as_go_1_15_sees_them() {
        // Each checked on Consul 1.8.7: 200 for the printable, a bare 400 for the others.
        for printable in [
            "/v1/kv/a",
            "/v1/kv/a%20b",
            "/v1/kv/a?x=%01",
            "/v1/kv/%C3%BC",
            "/v1/kv/a%C3%28b",
            "/v1/kv/%F0%9F%98%80",
            "/v1/kv/%F0%9F%A6%A5",
        ] {
            assert!(printable_path(printable), "{printable}");
        }
        for refused in [
            "/v1/kv/a%00b",
            "/v1/kv/a%01b",
            "/v1/kv/a%09b",
            "/v1/kv/a%7Fb",
            "/v1/kv/a%C2%A0b",
            "/v1/kv/a%E2%80%8Bb",
            "/v1/kv/a%E2%80%A8b",
            "/v1/kv/a%E2%80%A9b",
            "/v1/kv/a%E3%80%80b",
            "/v1/kv/a%EF%BB%BFb",
            "/v1/kv/a%EE%80%80b",
            "/v1/kv/a%CD%B8b",
            "/v1/kv/%E3%8B%BF",
            "/v1/kv/%F0%9F%AB%90",
            "/%01",
        ] {
            assert!(!printable_path(refused), "{refused}");
        }
    }

    #[test]
    fn unclean_paths_redirect_like_gos_servemux() {
        assert_eq!(clean_redirect("/v1/kv//a"), Some("/v1/kv/a".into()));
        assert_eq!(clean_redirect("/v1/kv/a/../b?raw"), Some("/v1/kv/b?raw".into()));
        assert_eq!(clean_redirect("/v1/./kv/a/"), Some("/v1/kv/a/".into()));
        assert_eq!(clean_redirect("/v1/kv/a/"), None);
        assert_eq!(clean_redirect("/v1/kv/a?x=//y"), None);
        assert_eq!(clean_redirect("?x"), Some("/?x".into()));
        assert_eq!(clean_redirect("/"), None);
    }

    #[test]
    fn targets_decode_paths_and_flags() {
        let t = Target::parse("/v1/kv/a%20b/%C3%BC?recurse&separator=%2F&x=1+2").unwrap();
        assert_eq!(t.path, "/v1/kv/a b/ü");
        assert!(t.flag("recurse"));
        assert_eq!(t.param("separator"), Some("/"));
        assert_eq!(t.param("x"), Some("1 2"));
        assert!(Target::parse("/v1/kv/%FF").unwrap_err().contains("UTF-8"));
    }

    #[test]
    fn invalid_escapes_are_refused_where_go_refuses_them() {
        for (target, want) in [
            ("/v1/kv/%zz", Err(BadTarget::Path("%zz".into()))),
            ("/v1/kv/%", Err(BadTarget::Path("%".into()))),
            ("/v1/kv/a%2", Err(BadTarget::Path("%2".into()))),
            ("/v1/kv/a%2?x=%zz", Err(BadTarget::Path("%2".into()))),
            ("/v1/kv/a?x=%zz", Err(BadTarget::Query("%zz".into()))),
            ("/v1/kv/a?%", Err(BadTarget::Query("%".into()))),
            ("/v1/kv/a%2Fb?x=%41&y=%c3%bc", Ok(())),
        ] {
            assert_eq!(BadTarget::check(target), want, "{target}");
            let parsed = Target::parse(target);
            assert_eq!(parsed.is_ok(), want.is_ok(), "{target}: {parsed:?}");
        }
        assert!(Target::parse("/v1/kv/%zz").unwrap_err().contains("%zz"));
    }

    proptest::proptest! {
        /// The allocation-free check agrees with the full cleaning on every path.
        #[test]
        fn is_clean_agrees_with_go_clean(path in "[/.a]{0,12}") {
            proptest::prop_assert_eq!(is_clean(&path), go_clean(&path) == path);
        }
    }
}

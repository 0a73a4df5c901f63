//! `/v1/acl/*` on an agent whose ACLs are disabled (a dev agent's default): every endpoint
//! Consul 1.8.7 registers answers 401 "ACL support disabled" to the methods it takes, 405
//! to the others, whatever `?dc` says; other paths are 404 (checked one by one on a 1.8.7
//! dev agent).

use http::{Method, StatusCode};

use super::{ApiError, Consul, Reply};

/// Exact paths and the methods they take.
const EXACT: &[(&str, &[Method])] = &[
    ("bootstrap", &[Method::PUT]),
    ("create", &[Method::PUT]),
    ("update", &[Method::PUT]),
    ("list", &[Method::GET]),
    ("replication", &[Method::GET]),
    ("policies", &[Method::GET]),
    ("policy", &[Method::PUT]),
    ("roles", &[Method::GET]),
    ("role", &[Method::PUT]),
    ("tokens", &[Method::GET]),
    ("token", &[Method::PUT]),
    ("token/self", &[Method::GET]),
    ("rules/translate", &[Method::POST]),
    ("auth-methods", &[Method::GET]),
    ("auth-method", &[Method::PUT]),
    ("binding-rules", &[Method::GET]),
    ("binding-rule", &[Method::PUT]),
    ("login", &[Method::POST]),
    ("logout", &[Method::POST]),
];

/// Subtrees (a prefix ending in `/`) and the methods they take; the longest prefix wins, as
/// in Go's ServeMux.
const SUBTREES: &[(&str, &[Method])] = &[
    ("destroy/", &[Method::PUT]),
    ("info/", &[Method::GET]),
    ("clone/", &[Method::PUT]),
    ("policy/", &[Method::GET, Method::PUT, Method::DELETE]),
    ("policy/name/", &[Method::GET]),
    ("role/", &[Method::GET, Method::PUT, Method::DELETE]),
    ("role/name/", &[Method::GET]),
    ("token/", &[Method::GET, Method::PUT, Method::DELETE]),
    ("rules/translate/", &[Method::GET]),
    ("auth-method/", &[Method::GET, Method::PUT, Method::DELETE]),
    ("binding-rule/", &[Method::GET, Method::PUT, Method::DELETE]),
];

/// The methods the endpoint at `rest` (the path after `/v1/acl/`) takes, if there is one.
fn methods(rest: &str) -> Option<&'static [Method]> {
    if let Some((_, m)) = EXACT.iter().find(|(p, _)| *p == rest) {
        return Some(m);
    }
    SUBTREES
        .iter()
        .filter(|(p, _)| rest.starts_with(p))
        .max_by_key(|(p, _)| p.len())
        .map(|(_, m)| *m)
}

impl Consul {
    /// `/v1/acl/<rest>`: ACLs are disabled.
    pub(crate) fn acl_endpoint(&self, method: &Method, rest: &str) -> Result<Reply, ApiError> {
        let Some(allowed) = methods(rest) else { return Err(ApiError::no_endpoint()) };
        if !allowed.contains(method) {
            let list: Vec<&str> = allowed.iter().map(Method::as_str).collect();
            return Err(ApiError::method_not_allowed(
                method,
                &format!("OPTIONS,{}", list.join(",")),
            ));
        }
        Err(ApiError::new(StatusCode::UNAUTHORIZED, "ACL support disabled"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_longest_registered_prefix_decides() {
        assert_eq!(methods("policy/name/x"), Some(&[Method::GET][..]));
        assert_eq!(methods("policy/x").map(<[Method]>::len), Some(3));
        assert_eq!(methods("token/self"), Some(&[Method::GET][..]));
        assert_eq!(methods("token/self/x").map(<[Method]>::len), Some(3));
        assert_eq!(methods("tokens/x"), None);
        assert_eq!(methods(""), None);
    }
}

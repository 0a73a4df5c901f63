//! `/v1/health`: services with their checks, checks by service, node and state.

use serde_json::{Value, json};

use super::{ApiError, CheckState, Consul, Reply, Target, filter};

impl Consul {
    pub(crate) fn health_endpoint(&self, rest: &str, t: &Target) -> Result<Reply, ApiError> {
        let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
        if arg.is_empty() {
            // `/v1/health/service/` reaches its handler, which wants a name.
            return Err(match (verb, rest.contains('/')) {
                ("service" | "connect" | "checks", true) => {
                    ApiError::bad_request("Missing service name")
                }
                ("node", true) => ApiError::bad_request("Missing node name"),
                ("state", true) => ApiError::bad_request("Missing check state"),
                _ => ApiError::no_endpoint(),
            });
        }
        let checks_of = |node: &str, service: Option<&str>| -> Vec<&CheckState> {
            let mut checks = self
                .state
                .checks
                .iter()
                .filter(|((n, _), c)| {
                    n == node && (c.service_id.is_empty() || Some(c.service_id.as_str()) == service)
                })
                .map(|(_, c)| c)
                .collect::<Vec<_>>();
            // Consul lists the node's checks before the service's.
            checks.sort_by_key(|c| !c.service_id.is_empty());
            checks
        };
        let ty =
            if verb == "service" { &filter::CHECK_SERVICE_NODE } else { &filter::HEALTH_CHECK };
        let f = match filter::from_request(t, ty) {
            Ok(f) => f,
            Err(e) => return Ok(filter::error_reply(e.message(), true)),
        };
        let meta = super::catalog::node_meta_param(t);
        let list = match verb {
            "service" => {
                let tags = super::catalog::tags_param(t);
                // Consul 1.8.7 parses `?passing` as a Go bool; a bare flag means true.
                let passing = match t.param("passing") {
                    None => false,
                    Some("") => true,
                    Some(v) => super::filter::parse_go_bool(v)
                        .ok_or_else(|| ApiError::bad_request("Invalid value for ?passing"))?,
                };
                let mut list = Vec::new();
                for ((node, _), s) in &self.state.services {
                    if s.name != arg || !s.has_tags(&tags) || !self.node_has_meta(node, &meta) {
                        continue;
                    }
                    let checks = checks_of(node, Some(&s.id));
                    if passing && checks.iter().any(|c| c.status != "passing") {
                        continue;
                    }
                    let Some(n) = self.state.nodes.get(node) else { continue };
                    let service = self.node_service_json(s);
                    list.push(json!({
                        "Node": self.node_json(node, n),
                        "Service": service,
                        "Checks": checks.iter().map(|c| self.check_json(node, c)).collect::<Vec<_>>(),
                    }));
                }
                list
            }
            "checks" => self
                .state
                .checks
                .iter()
                .filter(|((node, _), c)| {
                    self.node_has_meta(node, &meta)
                        && self
                            .state
                            .services
                            .get(&(node.clone(), c.service_id.clone()))
                            .is_some_and(|s| s.name == arg)
                })
                .map(|((node, _), c)| self.check_json(node, c))
                .collect(),
            "node" => self
                .state
                .checks
                .iter()
                .filter(|((node, _), _)| node == arg)
                .map(|((node, _), c)| self.check_json(node, c))
                .collect(),
            "state" => {
                // Consul 1.8.7 answers any other state with an empty list.
                self.state
                    .checks
                    .iter()
                    .filter(|((node, _), c)| {
                        (arg == "any" || c.status == arg) && self.node_has_meta(node, &meta)
                    })
                    .map(|((node, _), c)| self.check_json(node, c))
                    .collect()
            }
            _ => return Err(ApiError::no_endpoint()),
        };
        let list = filter::retain(f.as_ref(), list);
        // `health/service` reads the service's index; the check lists the checks table.
        let index = match verb {
            "service" => self.service_read_index(arg, true),
            _ => self.state.tables.checks,
        };
        Ok(super::catalog::catalog_read(index, t, &Value::Array(list)))
    }
}

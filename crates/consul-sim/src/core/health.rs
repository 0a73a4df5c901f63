//! `/v1/health`: services with their checks, checks by service, node and state.

use http::StatusCode;
use serde_json::{Value, json};

use super::{ApiError, CheckState, Consul, Reply, Target};

impl Consul {
    pub(crate) fn health_endpoint(&self, rest: &str, t: &Target) -> Result<Reply, ApiError> {
        let index = self.state.catalog_index;
        let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
        if arg.is_empty() {
            return Err(ApiError::new(StatusCode::NOT_FOUND, "404 page not found"));
        }
        let checks_of = |node: &str, service: Option<&str>| -> Vec<&CheckState> {
            self.state
                .checks
                .iter()
                .filter(|((n, _), c)| {
                    n == node && (c.service_id.is_empty() || Some(c.service_id.as_str()) == service)
                })
                .map(|(_, c)| c)
                .collect()
        };
        match verb {
            "service" => {
                let tag = t.param("tag");
                let passing = t.flag("passing");
                let mut list = Vec::new();
                for ((node, _), s) in &self.state.services {
                    if s.name != arg || tag.is_some_and(|tag| !s.tags.iter().any(|x| x == tag)) {
                        continue;
                    }
                    let checks = checks_of(node, Some(&s.id));
                    if passing && checks.iter().any(|c| c.status != "passing") {
                        continue;
                    }
                    let Some(n) = self.state.nodes.get(node) else { continue };
                    let mut service = self.service_json(s);
                    if let Some(o) = service.as_object_mut() {
                        o.insert("CreateIndex".into(), json!(s.create_index));
                        o.insert("ModifyIndex".into(), json!(s.modify_index));
                    }
                    list.push(json!({
                        "Node": self.node_json(node, n),
                        "Service": service,
                        "Checks": checks.iter().map(|c| self.check_json(node, c)).collect::<Vec<_>>(),
                    }));
                }
                Ok(Reply::read_json(index, &Value::Array(list)))
            }
            "checks" => {
                let list: Vec<Value> = self
                    .state
                    .checks
                    .iter()
                    .filter(|((node, _), c)| {
                        self.state
                            .services
                            .get(&(node.clone(), c.service_id.clone()))
                            .is_some_and(|s| s.name == arg)
                    })
                    .map(|((node, _), c)| self.check_json(node, c))
                    .collect();
                Ok(Reply::read_json(index, &Value::Array(list)))
            }
            "node" => {
                let list: Vec<Value> = self
                    .state
                    .checks
                    .iter()
                    .filter(|((node, _), _)| node == arg)
                    .map(|((node, _), c)| self.check_json(node, c))
                    .collect();
                Ok(Reply::read_json(index, &Value::Array(list)))
            }
            "state" => {
                if !matches!(arg, "any" | "passing" | "warning" | "critical") {
                    return Err(ApiError::bad_request(format!("Invalid state {arg:?}")));
                }
                let list: Vec<Value> = self
                    .state
                    .checks
                    .iter()
                    .filter(|(_, c)| arg == "any" || c.status == arg)
                    .map(|((node, _), c)| self.check_json(node, c))
                    .collect();
                Ok(Reply::read_json(index, &Value::Array(list)))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "404 page not found")),
        }
    }
}

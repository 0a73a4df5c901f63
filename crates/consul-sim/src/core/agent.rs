//! `/v1/agent`: the local agent's services, checks, members and configuration.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::checks::valid_status;
use super::{
    ApiError, Consul, Reply, ServiceState, SimTime, Target, expect, field, json_body, map_field,
    str_field, strings_field, to_map,
};

impl Consul {
    pub(crate) fn agent_node(&self) -> String {
        self.config.node_name.clone()
    }

    pub(crate) fn agent_endpoint(
        &mut self,
        now: SimTime,
        method: &Method,
        rest: &str,
        t: &Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let path = format!("/v1/agent/{rest}");
        let node = self.agent_node();
        let segments: Vec<&str> = rest.splitn(3, '/').collect();
        match segments.as_slice() {
            ["service", "register"] => {
                expect(method, &Method::PUT, &path)?;
                self.register_service(now, &node, body)?;
                Ok(Reply::json(&Value::Null))
            }
            ["service", "deregister", id] => {
                expect(method, &Method::PUT, &path)?;
                if !self.state.services.contains_key(&(node.clone(), id.to_string())) {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("Unknown service ID {id:?}"),
                    ));
                }
                self.deregister_service(now, &node, id);
                Ok(Reply::json(&Value::Null))
            }
            ["services"] => {
                expect(method, &Method::GET, &path)?;
                let map: serde_json::Map<String, Value> = self
                    .state
                    .services
                    .iter()
                    .filter(|((n, _), _)| *n == node)
                    .map(|((_, id), s)| (id.clone(), self.service_json(s)))
                    .collect();
                Ok(Reply::read_json(self.state.catalog_index, &Value::Object(map)))
            }
            ["checks"] => {
                expect(method, &Method::GET, &path)?;
                let map: serde_json::Map<String, Value> = self
                    .state
                    .checks
                    .iter()
                    .filter(|((n, _), c)| *n == node && c.id != "serfHealth")
                    .map(|((n, id), c)| (id.clone(), self.check_json(n, c)))
                    .collect();
                Ok(Reply::read_json(self.state.catalog_index, &Value::Object(map)))
            }
            ["check", "register"] => {
                expect(method, &Method::PUT, &path)?;
                let def = json_body(body, "check")?;
                let service_id = str_field(&def, "ServiceID")?.unwrap_or_default();
                if !service_id.is_empty()
                    && !self.state.services.contains_key(&(node.clone(), service_id.clone()))
                {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!("ServiceID {service_id:?} does not exist"),
                    ));
                }
                let check = self.parse_check(now, &def, &service_id, None)?;
                self.put_check(now, &node, check);
                Ok(Reply::json(&Value::Null))
            }
            ["check", "deregister", id] => {
                expect(method, &Method::PUT, &path)?;
                if self.state.checks.remove(&(node.clone(), id.to_string())).is_none() {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("Unknown check ID {id:?}"),
                    ));
                }
                for s in self.sessions_bound_to(&node, id) {
                    self.invalidate_session(now, &s);
                }
                self.state.catalog_index = self.bump();
                Ok(Reply::json(&Value::Null))
            }
            ["check", verb @ ("pass" | "warn" | "fail"), id] => {
                expect(method, &Method::PUT, &path)?;
                let status = match *verb {
                    "pass" => "passing",
                    "warn" => "warning",
                    _ => "critical",
                };
                let note = t.param("note").unwrap_or_default().to_string();
                self.update_ttl(now, &node, id, status, &note)?;
                Ok(Reply::json(&Value::Null))
            }
            ["check", "update", id] => {
                expect(method, &Method::PUT, &path)?;
                let upd = json_body(body, "check update")?;
                let status = str_field(&upd, "Status")?.unwrap_or_default();
                if !valid_status(&status) {
                    return Err(ApiError::bad_request(format!("Invalid check status: {status:?}")));
                }
                let output = str_field(&upd, "Output")?.unwrap_or_default();
                self.update_ttl(now, &node, id, &status, &output)?;
                Ok(Reply::json(&Value::Null))
            }
            ["self"] => {
                expect(method, &Method::GET, &path)?;
                let n = &self.state.nodes[&node];
                Ok(Reply::json(&json!({
                    "Config": {
                        "Datacenter": self.config.datacenter,
                        "NodeName": node,
                        "NodeID": n.id,
                        "Server": true,
                        "Revision": "consul-sim",
                        "Version": "1.20.0",
                    },
                    "Member": self.member_json(),
                    "Meta": {"consul-network-segment": ""},
                })))
            }
            ["members"] => {
                expect(method, &Method::GET, &path)?;
                Ok(Reply::json(&json!([self.member_json()])))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "404 page not found")),
        }
    }

    pub(crate) fn member_json(&self) -> Value {
        json!({
            "Name": self.config.node_name,
            "Addr": self.config.node_address,
            "Port": 8301,
            "Tags": {"role": "consul", "dc": self.config.datacenter, "port": "8300"},
            "Status": 1,
        })
    }

    pub(crate) fn register_service(
        &mut self,
        now: SimTime,
        node: &str,
        body: &Bytes,
    ) -> Result<(), ApiError> {
        let def = json_body(body, "service")?;
        if !def.is_object() {
            return Err(ApiError::bad_request(
                "Request decode failed: the service must be a JSON object",
            ));
        }
        let name = str_field(&def, "Name")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("Missing service name"))?;
        let id = str_field(&def, "ID")?.filter(|n| !n.is_empty()).unwrap_or_else(|| name.clone());
        let port = match field(&def, "Port") {
            None => 0,
            Some(v) => v
                .as_u64()
                .filter(|p| *p <= u64::from(u16::MAX))
                .ok_or_else(|| ApiError::bad_request(format!("Invalid Port {v}")))?
                as u16,
        };
        let mut defs: Vec<&Value> = Vec::new();
        if let Some(c) = field(&def, "Check") {
            defs.push(c);
        }
        match field(&def, "Checks") {
            None => {}
            Some(Value::Array(a)) => defs.extend(a.iter()),
            Some(_) => return Err(ApiError::bad_request("Checks must be a list")),
        }
        let many = defs.len() > 1;
        let mut checks = Vec::new();
        for (i, c) in defs.iter().enumerate() {
            let default_id =
                if many { format!("service:{id}:{}", i + 1) } else { format!("service:{id}") };
            let mut check = self.parse_check(now, c, &id, Some(default_id))?;
            if check.name.is_empty() {
                check.name = format!("Service '{name}' check");
            }
            checks.push(check);
        }
        let key = (node.to_string(), id.clone());
        let index = self.bump();
        let create_index = self.state.services.get(&key).map_or(index, |s| s.create_index);
        self.state.services.insert(
            key,
            ServiceState {
                id: id.clone(),
                name,
                tags: strings_field(&def, "Tags")?,
                address: str_field(&def, "Address")?.unwrap_or_default(),
                port,
                meta: map_field(&def, "Meta")?,
                create_index,
                modify_index: index,
            },
        );
        // Re-registering replaces the service's checks.
        let keep: BTreeSet<String> = checks.iter().map(|c| c.id.clone()).collect();
        let stale: Vec<String> = self
            .state
            .checks
            .iter()
            .filter(|((n, cid), c)| n == node && c.service_id == id && !keep.contains(cid))
            .map(|((_, cid), _)| cid.clone())
            .collect();
        for cid in stale {
            self.state.checks.remove(&(node.to_string(), cid));
        }
        for c in checks {
            self.put_check(now, node, c);
        }
        self.state.catalog_index = self.bump();
        Ok(())
    }

    pub(crate) fn deregister_service(&mut self, now: SimTime, node: &str, id: &str) {
        self.state.services.remove(&(node.to_string(), id.to_string()));
        let checks: Vec<String> = self
            .state
            .checks
            .iter()
            .filter(|((n, _), c)| n == node && c.service_id == id)
            .map(|((_, cid), _)| cid.clone())
            .collect();
        for cid in checks {
            self.state.checks.remove(&(node.to_string(), cid.clone()));
            for s in self.sessions_bound_to(node, &cid) {
                self.invalidate_session(now, &s);
            }
        }
        self.state.catalog_index = self.bump();
    }

    pub(crate) fn service_json(&self, s: &ServiceState) -> Value {
        json!({
            "ID": s.id,
            "Service": s.name,
            "Tags": s.tags,
            "Meta": to_map(&s.meta),
            "Port": s.port,
            "Address": s.address,
            "Weights": {"Passing": 1, "Warning": 1},
            "EnableTagOverride": false,
            "Datacenter": self.config.datacenter,
        })
    }
}

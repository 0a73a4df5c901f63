//! `/v1/catalog`: nodes and the services registered on them.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiError, CheckKind, CheckState, Consul, NodeState, Reply, SimTime, Target, expect, field,
    json_body, map_field, str_field, strings_field, to_map,
};

/// One registered service instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceState {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) address: String,
    pub(crate) port: u16,
    pub(crate) meta: BTreeMap<String, String>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

impl Consul {
    /// Registers `name` as a catalog node with a passing `serfHealth` check, if new.
    pub(crate) fn ensure_node(&mut self, name: &str, address: &str) {
        if self.state.nodes.contains_key(name) {
            return;
        }
        let index = self.bump();
        let id = self.uuid();
        self.state.nodes.insert(
            name.to_string(),
            NodeState {
                id,
                address: address.to_string(),
                meta: BTreeMap::new(),
                create_index: index,
                modify_index: index,
            },
        );
        self.state.checks.insert(
            (name.to_string(), "serfHealth".into()),
            CheckState {
                id: "serfHealth".into(),
                name: "Serf Health Status".into(),
                service_id: String::new(),
                status: "passing".into(),
                output: "Agent alive and reachable".into(),
                notes: String::new(),
                kind: CheckKind::Manual,
                ttl_expires: None,
                critical_since: None,
                deregister_after: None,
                next_run: None,
                create_index: index,
                modify_index: index,
            },
        );
        self.state.catalog_index = index;
    }

    pub(crate) fn node_json(&self, name: &str, n: &NodeState) -> Value {
        json!({
            "ID": n.id,
            "Node": name,
            "Address": n.address,
            "Datacenter": self.config.datacenter,
            "TaggedAddresses": {"lan": n.address, "wan": n.address},
            "Meta": to_map(&n.meta),
            "CreateIndex": n.create_index,
            "ModifyIndex": n.modify_index,
        })
    }

    pub(crate) fn catalog_service_json(&self, node: &str, s: &ServiceState) -> Value {
        let n = &self.state.nodes[node];
        json!({
            "ID": n.id,
            "Node": node,
            "Address": n.address,
            "Datacenter": self.config.datacenter,
            "TaggedAddresses": {"lan": n.address, "wan": n.address},
            "NodeMeta": to_map(&n.meta),
            "ServiceID": s.id,
            "ServiceName": s.name,
            "ServiceTags": s.tags,
            "ServiceAddress": s.address,
            "ServiceMeta": to_map(&s.meta),
            "ServicePort": s.port,
            "ServiceEnableTagOverride": false,
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index,
        })
    }

    pub(crate) fn catalog_endpoint(
        &mut self,
        now: SimTime,
        method: &Method,
        rest: &str,
        t: &Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let path = format!("/v1/catalog/{rest}");
        let index = self.state.catalog_index;
        let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
        match verb {
            "services" => {
                expect(method, &Method::GET, &path)?;
                let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for s in self.state.services.values() {
                    map.entry(s.name.clone()).or_default().extend(s.tags.iter().cloned());
                }
                let v: serde_json::Map<String, Value> =
                    map.into_iter().map(|(k, tags)| (k, json!(tags))).collect();
                Ok(Reply::read_json(index, &Value::Object(v)))
            }
            "service" if !arg.is_empty() => {
                expect(method, &Method::GET, &path)?;
                let tag = t.param("tag");
                let list: Vec<Value> = self
                    .state
                    .services
                    .iter()
                    .filter(|(_, s)| {
                        s.name == arg && tag.is_none_or(|tag| s.tags.iter().any(|x| x == tag))
                    })
                    .map(|((node, _), s)| self.catalog_service_json(node, s))
                    .collect();
                Ok(Reply::read_json(index, &Value::Array(list)))
            }
            "nodes" => {
                expect(method, &Method::GET, &path)?;
                let list: Vec<Value> =
                    self.state.nodes.iter().map(|(name, n)| self.node_json(name, n)).collect();
                Ok(Reply::read_json(index, &Value::Array(list)))
            }
            "node" if !arg.is_empty() => {
                expect(method, &Method::GET, &path)?;
                let Some(n) = self.state.nodes.get(arg) else {
                    return Ok(Reply::read_json(index, &Value::Null));
                };
                let services: serde_json::Map<String, Value> = self
                    .state
                    .services
                    .iter()
                    .filter(|((node, _), _)| node == arg)
                    .map(|((_, id), s)| (id.clone(), self.service_json(s)))
                    .collect();
                Ok(Reply::read_json(
                    index,
                    &json!({"Node": self.node_json(arg, n), "Services": services}),
                ))
            }
            "register" => {
                expect(method, &Method::PUT, &path)?;
                let reg = json_body(body, "catalog registration")?;
                let node = str_field(&reg, "Node")?
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::bad_request("Missing node name"))?;
                let address = str_field(&reg, "Address")?
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::bad_request("Missing node address"))?;
                self.ensure_node(&node, &address);
                if let Some(meta) =
                    field(&reg, "NodeMeta").map(|_| map_field(&reg, "NodeMeta")).transpose()?
                    && let Some(n) = self.state.nodes.get_mut(&node)
                {
                    n.meta = meta;
                }
                if let Some(svc) = field(&reg, "Service") {
                    let name = str_field(svc, "Service")?
                        .filter(|n| !n.is_empty())
                        .ok_or_else(|| ApiError::bad_request("Missing service name"))?;
                    let id = str_field(svc, "ID")?
                        .filter(|n| !n.is_empty())
                        .unwrap_or_else(|| name.clone());
                    let i = self.bump();
                    let port = field(svc, "Port")
                        .and_then(Value::as_u64)
                        .unwrap_or(0)
                        .min(u64::from(u16::MAX)) as u16;
                    self.state.services.insert(
                        (node.clone(), id.clone()),
                        ServiceState {
                            id,
                            name,
                            tags: strings_field(svc, "Tags")?,
                            address: str_field(svc, "Address")?.unwrap_or_default(),
                            port,
                            meta: map_field(svc, "Meta")?,
                            create_index: i,
                            modify_index: i,
                        },
                    );
                }
                self.state.catalog_index = self.bump();
                Ok(Reply::json(&json!(true)))
            }
            "deregister" => {
                expect(method, &Method::PUT, &path)?;
                let reg = json_body(body, "catalog deregistration")?;
                let node = str_field(&reg, "Node")?
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| ApiError::bad_request("Missing node name"))?;
                match str_field(&reg, "ServiceID")?.filter(|s| !s.is_empty()) {
                    Some(sid) => self.deregister_service(now, &node, &sid),
                    None => {
                        if node == self.config.node_name {
                            return Err(ApiError::bad_request(
                                "cannot deregister the agent's own node",
                            ));
                        }
                        let sessions: Vec<String> = self
                            .state
                            .sessions
                            .values()
                            .filter(|s| s.node == node)
                            .map(|s| s.id.clone())
                            .collect();
                        for s in sessions {
                            self.invalidate_session(now, &s);
                        }
                        self.state.nodes.remove(&node);
                        self.state.services.retain(|(n, _), _| *n != node);
                        self.state.checks.retain(|(n, _), _| *n != node);
                        self.state.catalog_index = self.bump();
                    }
                }
                Ok(Reply::json(&json!(true)))
            }
            _ => Err(ApiError::new(StatusCode::NOT_FOUND, "404 page not found")),
        }
    }
}

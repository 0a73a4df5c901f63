//! `/v1/catalog`: nodes and the services registered on them.

use std::collections::{BTreeMap, BTreeSet};

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::filter;
use super::gojson::quote;

use super::{
    ApiError, CheckKind, CheckState, Consul, NodeState, Reply, SimResponse, SimTime, Target,
    expect, field, json_body, map_field, str_field, strings_field, to_map,
};

/// The built-in service a Consul server registers for itself.
pub(crate) const CONSUL_SERVICE: &str = "consul";

/// Consul's server RPC port, the `consul` service's port.
pub(crate) const SERVER_PORT: u16 = 8300;

/// A service instance's load-balancing weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Weights {
    pub(crate) passing: u64,
    pub(crate) warning: u64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights { passing: 1, warning: 1 }
    }
}

/// One registered service instance.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ServiceState {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) tags: Vec<String>,
    pub(crate) address: String,
    /// Go's `int`: Consul takes any integer, negative or above 65535 too.
    pub(crate) port: i64,
    pub(crate) meta: BTreeMap<String, String>,
    /// `{"lan": {"Address": …, "Port": …}, …}` as registered.
    #[serde(default)]
    pub(crate) tagged_addresses: BTreeMap<String, Value>,
    #[serde(default)]
    pub(crate) enable_tag_override: bool,
    #[serde(default)]
    pub(crate) weights: Weights,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

impl ServiceState {
    /// Reads a service definition: `name_field` is `Name` for the agent, `Service` for the
    /// catalog. `go_path` is how Go's decoder names the definition's struct in its errors
    /// (`""` for the agent's, `NodeService.Service` for the catalog's).
    pub(crate) fn parse(
        def: &Value,
        name_field: &str,
        go_path: &str,
    ) -> Result<ServiceState, ApiError> {
        if !def.is_object() {
            return Err(ApiError::bad_request(
                "Request decode failed: the service must be a JSON object",
            ));
        }
        let name = str_field(def, name_field)?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::bad_request("Missing service name"))?;
        let id = str_field(def, "ID")?.filter(|n| !n.is_empty()).unwrap_or_else(|| name.clone());
        let port = match field(def, "Port") {
            None => 0,
            Some(v) => v.as_i64().ok_or_else(|| {
                let kind = match v {
                    // Go names the number itself (the sim prints it as serde_json reads it).
                    Value::Number(n) => format!("number {n}"),
                    other => super::go_kind(other).to_string(),
                };
                ApiError::bad_request(format!(
                    "Request decode failed: json: cannot unmarshal {kind} into Go struct field \
                     {go_path}.Port of type int"
                ))
            })?,
        };
        let tagged_addresses = match field(def, "TaggedAddresses") {
            None => BTreeMap::new(),
            Some(Value::Object(m)) => {
                let mut out = BTreeMap::new();
                for (k, v) in m {
                    let address = str_field(v, "Address")?.unwrap_or_default();
                    let port = field(v, "Port").and_then(Value::as_u64).unwrap_or(0);
                    out.insert(k.clone(), json!({"Address": address, "Port": port}));
                }
                out
            }
            Some(_) => return Err(ApiError::bad_request("TaggedAddresses must be an object")),
        };
        let weights = match field(def, "Weights") {
            None => Weights::default(),
            Some(w) => Weights {
                passing: field(w, "Passing").and_then(Value::as_u64).unwrap_or(1),
                warning: field(w, "Warning").and_then(Value::as_u64).unwrap_or(1),
            },
        };
        let enable_tag_override = match field(def, "EnableTagOverride") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => return Err(ApiError::bad_request("EnableTagOverride must be a boolean")),
        };
        Ok(ServiceState {
            id,
            name,
            tags: strings_field(def, "Tags")?,
            address: str_field(def, "Address")?.unwrap_or_default(),
            port,
            meta: map_field(def, "Meta")?,
            tagged_addresses,
            enable_tag_override,
            weights,
            create_index: 0,
            modify_index: 0,
        })
    }

    pub(crate) fn weights_json(&self) -> Value {
        json!({"Passing": self.weights.passing, "Warning": self.weights.warning})
    }

    pub(crate) fn tagged_addresses_json(&self) -> Value {
        Value::Object(self.tagged_addresses.clone().into_iter().collect())
    }

    /// True if the instance carries every tag in `tags` (repeated `?tag=` combine with AND).
    pub(crate) fn has_tags(&self, tags: &[&str]) -> bool {
        tags.iter().all(|t| self.tags.iter().any(|x| x == t))
    }
}

/// Catalog maps print `null` when empty, as Go's nil maps do.
fn map_or_null(m: &BTreeMap<String, String>) -> Value {
    if m.is_empty() { Value::Null } else { to_map(m) }
}

/// A catalog or health read, with the consistency mode Consul reports for it.
pub(crate) fn catalog_read(index: u64, t: &Target, value: &Value) -> Reply {
    let mode = if t.flag("stale") {
        "stale"
    } else if t.flag("consistent") {
        "consistent"
    } else {
        "leader"
    };
    let mut resp = SimResponse::json(StatusCode::OK, value);
    resp.headers.push(("X-Consul-Effective-Consistency", mode.into()));
    Reply::read(index, resp)
}

/// Every `?node-meta=key:value` of a request (a bare key asks for an empty value).
pub(crate) fn node_meta_param(t: &Target) -> Vec<(&str, &str)> {
    t.query
        .iter()
        .filter(|(k, _)| k == "node-meta")
        .map(|(_, v)| v.split_once(':').unwrap_or((v.as_str(), "")))
        .collect()
}

/// Every `?tag=` of a request.
pub(crate) fn tags_param(t: &Target) -> Vec<&str> {
    t.query.iter().filter(|(k, _)| k == "tag").map(|(_, v)| v.as_str()).collect()
}

impl Consul {
    /// True if `node` carries every `?node-meta=` pair asked for.
    pub(crate) fn node_has_meta(&self, node: &str, wanted: &[(&str, &str)]) -> bool {
        wanted.is_empty()
            || self
                .state
                .nodes
                .get(node)
                .is_some_and(|n| wanted.iter().all(|(k, v)| n.meta.get(*k).is_some_and(|m| m == v)))
    }

    /// Registers the agent's own node as a Consul server does when it starts: the node
    /// with its ID, tagged addresses and segment meta, the `serfHealth` check and the
    /// `consul` service, in one write. The node is updated once more right after (Consul's
    /// anti-entropy does the same), so a fresh agent's nodes index is 2, its services index 1.
    pub(crate) fn register_agent_node(&mut self) {
        let name = self.config.node_name.clone();
        let address = self.config.node_address.clone();
        let index = self.bump();
        let id = self.uuid();
        let tagged: BTreeMap<String, String> = ["lan", "lan_ipv4", "wan", "wan_ipv4"]
            .into_iter()
            .map(|k| (k.to_string(), address.clone()))
            .collect();
        self.state.nodes.insert(
            name.clone(),
            NodeState {
                id,
                address,
                meta: [("consul-network-segment".to_string(), String::new())].into(),
                tagged_addresses: tagged,
                create_index: index,
                modify_index: index,
            },
        );
        self.state.checks.insert(
            (name.clone(), "serfHealth".into()),
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
        let meta = [
            ("non_voter", "false"),
            ("raft_version", "3"),
            ("serf_protocol_current", "2"),
            ("serf_protocol_max", "5"),
            ("serf_protocol_min", "1"),
            ("version", super::agent::VERSION),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        self.state.services.insert(
            (name.clone(), CONSUL_SERVICE.into()),
            ServiceState {
                id: CONSUL_SERVICE.into(),
                name: CONSUL_SERVICE.into(),
                tags: Vec::new(),
                address: String::new(),
                port: i64::from(SERVER_PORT),
                meta,
                tagged_addresses: BTreeMap::new(),
                enable_tag_override: false,
                weights: Weights::default(),
                create_index: index,
                modify_index: index,
            },
        );
        self.touch_node(&name, index);
        self.touch_service(CONSUL_SERVICE, index);
        self.touch_check(&name, "", index);
        let index = self.bump();
        if let Some(n) = self.state.nodes.get_mut(&name) {
            n.modify_index = index;
        }
        self.touch_node(&name, index);
    }

    /// Registers or updates a catalog node (`catalog/register`) as part of the write at
    /// `index`; an unchanged node keeps its indexes.
    fn upsert_node(
        &mut self,
        name: &str,
        index: u64,
        id: String,
        address: String,
        tagged_addresses: BTreeMap<String, String>,
        meta: BTreeMap<String, String>,
    ) {
        let mut fresh = false;
        let node = self.state.nodes.entry(name.to_string()).or_insert_with(|| {
            fresh = true;
            NodeState {
                id: String::new(),
                address: String::new(),
                meta: BTreeMap::new(),
                tagged_addresses: BTreeMap::new(),
                create_index: index,
                modify_index: index,
            }
        });
        let new = (id, address, tagged_addresses, meta);
        if fresh
            || (&node.id, &node.address, &node.tagged_addresses, &node.meta)
                != (&new.0, &new.1, &new.2, &new.3)
        {
            (node.id, node.address, node.tagged_addresses, node.meta) = new;
            node.modify_index = index;
            self.touch_node(name, index);
        }
    }

    /// Registers or updates a service instance of `node` as part of the write at `index`;
    /// an unchanged instance keeps its indexes (Consul's `IsSameService`).
    pub(crate) fn put_service(&mut self, node: &str, mut s: ServiceState, index: u64) {
        let key = (node.to_string(), s.id.clone());
        if let Some(old) = self.state.services.get(&key) {
            s.create_index = old.create_index;
            s.modify_index = old.modify_index;
            if *old == s {
                return;
            }
        } else {
            s.create_index = index;
        }
        s.modify_index = index;
        let name = s.name.clone();
        self.state.services.insert(key, s);
        self.touch_service(&name, index);
    }

    pub(crate) fn node_json(&self, name: &str, n: &NodeState) -> Value {
        json!({
            "ID": n.id,
            "Node": name,
            "Address": n.address,
            "Datacenter": self.config.datacenter,
            "TaggedAddresses": map_or_null(&n.tagged_addresses),
            "Meta": map_or_null(&n.meta),
            "CreateIndex": n.create_index,
            "ModifyIndex": n.modify_index,
        })
    }

    /// A service as the catalog and health endpoints print it (`catalog/node`,
    /// `health/service`).
    pub(crate) fn node_service_json(&self, s: &ServiceState) -> Value {
        let v = json!({
            "ID": s.id,
            "Service": s.name,
            "Tags": s.tags,
            "Address": s.address,
            "Meta": map_or_null(&s.meta),
            "Port": s.port,
            "Weights": s.weights_json(),
            "EnableTagOverride": s.enable_tag_override,
            "Proxy": {"MeshGateway": {}, "Expose": {}},
            "Connect": {},
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index,
        });
        with_tagged_addresses(v, "TaggedAddresses", "Address", s)
    }

    pub(crate) fn catalog_service_json(&self, node: &str, s: &ServiceState) -> Value {
        let n = self.state.nodes.get(node);
        let v = json!({
            "ID": n.map(|n| n.id.clone()).unwrap_or_default(),
            "Node": node,
            "Address": n.map(|n| n.address.clone()).unwrap_or_default(),
            "Datacenter": self.config.datacenter,
            "TaggedAddresses": n.map_or(Value::Null, |n| map_or_null(&n.tagged_addresses)),
            "NodeMeta": n.map_or(Value::Null, |n| map_or_null(&n.meta)),
            "ServiceKind": "",
            "ServiceID": s.id,
            "ServiceName": s.name,
            "ServiceTags": s.tags,
            "ServiceAddress": s.address,
            "ServiceWeights": s.weights_json(),
            "ServiceMeta": to_map(&s.meta),
            "ServicePort": s.port,
            "ServiceEnableTagOverride": s.enable_tag_override,
            "ServiceProxy": {"MeshGateway": {}, "Expose": {}},
            "ServiceConnect": {},
            "CreateIndex": s.create_index,
            "ModifyIndex": s.modify_index,
        });
        with_tagged_addresses(v, "ServiceTaggedAddresses", "ServiceAddress", s)
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
        let tables = &self.state.tables;
        let (nodes_index, services_index) = (tables.nodes, tables.services);
        let (verb, arg) = rest.split_once('/').unwrap_or((rest, ""));
        // `catalog/services/` is no endpoint: only the subtrees take a name after a slash.
        let subtree = matches!(verb, "service" | "node" | "node-services" | "connect");
        if !subtree && rest.contains('/') {
            return Err(ApiError::no_endpoint());
        }
        let filter_ty = match verb {
            "nodes" => Some(&filter::NODE),
            "service" => Some(&filter::SERVICE_NODE),
            "node" | "node-services" => Some(&filter::NODE_SERVICE),
            "connect" => Some(&filter::SERVICE_NODE),
            _ => None,
        };
        let f = match filter_ty.map(|ty| filter::from_request(t, ty)).transpose() {
            Ok(f) => f.flatten(),
            Err(e) => return Ok(filter::error_reply(e.message(), true)),
        };
        let keep = |v: &Value| f.as_ref().is_none_or(|f| f.matches(v));
        // `catalog/node` and `catalog/node-services` read the nodes and services tables.
        let index = nodes_index.max(services_index);
        let meta = node_meta_param(t);
        match verb {
            "datacenters" => {
                expect(method, &Method::GET, &path)?;
                Ok(Reply::json(&json!([self.config.datacenter])))
            }
            "services" => {
                expect(method, &Method::GET, &path)?;
                let mut map: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
                for ((node, _), s) in &self.state.services {
                    if !self.node_has_meta(node, &meta) {
                        continue;
                    }
                    map.entry(s.name.clone()).or_default().extend(s.tags.iter().cloned());
                }
                let v: serde_json::Map<String, Value> =
                    map.into_iter().map(|(k, tags)| (k, json!(tags))).collect();
                Ok(catalog_read(services_index, t, &Value::Object(v)))
            }
            "service" if !arg.is_empty() => {
                expect(method, &Method::GET, &path)?;
                let tags = tags_param(t);
                let list: Vec<Value> = self
                    .state
                    .services
                    .iter()
                    .filter(|((node, _), s)| {
                        s.name == arg && s.has_tags(&tags) && self.node_has_meta(node, &meta)
                    })
                    .map(|((node, _), s)| self.catalog_service_json(node, s))
                    .filter(keep)
                    .collect();
                Ok(catalog_read(self.service_read_index(arg, false), t, &Value::Array(list)))
            }
            "connect" => {
                expect(method, &Method::GET, &path)?;
                if arg.is_empty() {
                    return Err(ApiError::bad_request("Missing service name"));
                }
                // The sim has no Connect proxies or native services: no instance is
                // Connect-capable, so the service counts as absent for the index.
                let index = self.service_read_index_of(arg, false, false);
                Ok(catalog_read(index, t, &json!([])))
            }
            "nodes" => {
                expect(method, &Method::GET, &path)?;
                let list: Vec<Value> = self
                    .state
                    .nodes
                    .iter()
                    .filter(|(name, _)| self.node_has_meta(name, &meta))
                    .map(|(name, n)| self.node_json(name, n))
                    .filter(keep)
                    .collect();
                Ok(catalog_read(nodes_index, t, &Value::Array(list)))
            }
            "node" if !arg.is_empty() => {
                expect(method, &Method::GET, &path)?;
                let Some(n) = self.state.nodes.get(arg) else {
                    // Consul's state store answers a missing node with index 0, sent as 1.
                    return Ok(catalog_read(1, t, &Value::Null));
                };
                let services: serde_json::Map<String, Value> = self
                    .state
                    .services
                    .iter()
                    .filter(|((node, _), _)| node == arg)
                    .map(|((_, id), s)| (id.clone(), self.node_service_json(s)))
                    .filter(|(_, v)| keep(v))
                    .collect();
                Ok(catalog_read(
                    index,
                    t,
                    &json!({"Node": self.node_json(arg, n), "Services": services}),
                ))
            }
            "node-services" if !arg.is_empty() => {
                expect(method, &Method::GET, &path)?;
                let Some(n) = self.state.nodes.get(arg) else {
                    let none = json!({"Node": null, "Services": null});
                    return Ok(catalog_read(1, t, &none));
                };
                let services: Vec<Value> = self
                    .state
                    .services
                    .iter()
                    .filter(|((node, _), _)| node == arg)
                    .map(|(_, s)| self.node_service_json(s))
                    .filter(keep)
                    .collect();
                Ok(catalog_read(
                    index,
                    t,
                    &json!({"Node": self.node_json(arg, n), "Services": services}),
                ))
            }
            "register" => {
                expect(method, &Method::PUT, &path)?;
                self.catalog_register(now, body)?;
                Ok(Reply::json(&json!(true)))
            }
            "deregister" => {
                expect(method, &Method::PUT, &path)?;
                self.catalog_deregister(now, body)?;
                Ok(Reply::json(&json!(true)))
            }
            // `/v1/catalog/service/` reaches its handler, which wants a name.
            "service" | "node" | "node-services" => {
                expect(method, &Method::GET, &path)?;
                let what = if verb == "service" { "service" } else { "node" };
                Err(ApiError::bad_request(format!("Missing {what} name")))
            }
            _ => Err(ApiError::no_endpoint()),
        }
    }

    /// The node a catalog (de)registration names, after its datacenter, which must be this
    /// one (as Consul checks them, in that order).
    fn registration_node(&self, reg: &Value) -> Result<String, ApiError> {
        if let Some(dc) = str_field(reg, "Datacenter")?.filter(|d| !d.is_empty())
            && dc != self.config.datacenter
        {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter"));
        }
        str_field(reg, "Node")?
            .filter(|n| !n.is_empty())
            .ok_or_else(|| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "Must provide node"))
    }

    /// `PUT /v1/catalog/register`: a node, optionally a service and checks, in one write.
    fn catalog_register(&mut self, now: SimTime, body: &Bytes) -> Result<(), ApiError> {
        let reg = json_body(body, "catalog registration")?;
        let node = self.registration_node(&reg)?;
        let skip_node_update = matches!(field(&reg, "SkipNodeUpdate"), Some(Value::Bool(true)));
        let address = str_field(&reg, "Address")?.unwrap_or_default();
        if address.is_empty() && !skip_node_update {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Must provide address if SkipNodeUpdate is not set",
            ));
        }
        let service = field(&reg, "Service")
            .map(|s| ServiceState::parse(s, "Service", "NodeService.Service"))
            .transpose()?;
        let mut check_defs: Vec<&Value> = Vec::new();
        if let Some(c) = field(&reg, "Check") {
            check_defs.push(c);
        }
        match field(&reg, "Checks") {
            None => {}
            Some(Value::Array(a)) => check_defs.extend(a.iter()),
            Some(_) => return Err(ApiError::bad_request("Checks must be a list")),
        }
        let mut checks = Vec::new();
        for c in check_defs {
            checks.push(catalog_check(c)?);
        }
        let index = self.bump();
        if !(skip_node_update && self.state.nodes.contains_key(&node)) {
            let id = str_field(&reg, "ID")?.unwrap_or_default();
            let tagged = map_field(&reg, "TaggedAddresses")?;
            let meta = map_field(&reg, "NodeMeta")?;
            self.upsert_node(&node, index, id, address, tagged, meta);
        }
        if let Some(s) = service {
            self.put_service(&node, s, index);
        }
        for c in checks {
            self.put_check(now, &node, c, index);
        }
        Ok(())
    }

    /// `PUT /v1/catalog/deregister`: a service, a check or a whole node. Unknown names are
    /// not an error.
    fn catalog_deregister(&mut self, now: SimTime, body: &Bytes) -> Result<(), ApiError> {
        let reg = json_body(body, "catalog deregistration")?;
        let node = self.registration_node(&reg)?;
        let service = str_field(&reg, "ServiceID")?.filter(|s| !s.is_empty());
        let check = str_field(&reg, "CheckID")?.filter(|s| !s.is_empty());
        match (service, check) {
            (Some(sid), _) => self.deregister_service(now, &node, &sid),
            (None, Some(cid)) => self.remove_check(now, &node, &cid),
            (None, None) => {
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
                let index = self.bump();
                // Consul's anti-entropy puts the agent's own node back with its services and
                // checks (within a minute); the sim keeps them, as if it already had.
                if node != self.config.node_name && self.state.nodes.contains_key(&node) {
                    self.touch_node(&node, index);
                    let before = self.state.checks.len();
                    self.state.checks.retain(|(n, _), _| *n != node);
                    if self.state.checks.len() != before {
                        self.state.tables.checks = index;
                    }
                    let gone: Vec<String> = self
                        .state
                        .services
                        .iter()
                        .filter(|((n, _), _)| *n == node)
                        .map(|(_, s)| s.name.clone())
                        .collect();
                    self.state.services.retain(|(n, _), _| *n != node);
                    for name in gone {
                        self.removed_service(&name, index);
                    }
                    self.state.nodes.remove(&node);
                    self.state.tables.nodes = index;
                }
            }
        }
        Ok(())
    }
}

/// A check in a catalog registration: no runner, critical unless a Status is given.
fn catalog_check(def: &Value) -> Result<CheckState, ApiError> {
    if !def.is_object() {
        return Err(ApiError::bad_request("a check must be a JSON object"));
    }
    let id = str_field(def, "CheckID")?
        .or(str_field(def, "ID")?)
        .filter(|s| !s.is_empty())
        .or(str_field(def, "Name")?)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApiError::bad_request("Missing check ID"))?;
    let status =
        str_field(def, "Status")?.filter(|s| !s.is_empty()).unwrap_or_else(|| "critical".into());
    if !super::checks::valid_status(&status) {
        return Err(ApiError::bad_request(format!(
            "check {q_id}: invalid Status {q_status}",
            q_id = quote(&id),
            q_status = quote(&status)
        )));
    }
    let service_id = str_field(def, "ServiceID")?.filter(|s| !s.is_empty()).unwrap_or_default();
    Ok(CheckState {
        name: str_field(def, "Name")?.unwrap_or_default(),
        notes: str_field(def, "Notes")?.unwrap_or_default(),
        output: str_field(def, "Output")?.unwrap_or_default(),
        service_id,
        status,
        kind: CheckKind::Manual,
        id,
        ttl_expires: None,
        critical_since: None,
        deregister_after: None,
        next_run: None,
        create_index: 0,
        modify_index: 0,
    })
}

/// `v` with the service's tagged addresses under `field`, right after the field `after`
/// (where Go's struct declares it): Consul leaves the field out when the service has none.
pub(crate) fn with_tagged_addresses(v: Value, field: &str, after: &str, s: &ServiceState) -> Value {
    let Value::Object(fields) = v else { return v };
    if s.tagged_addresses.is_empty() {
        return Value::Object(fields);
    }
    let mut out = serde_json::Map::with_capacity(fields.len() + 1);
    for (k, val) in fields {
        let here = k == after;
        out.insert(k, val);
        if here {
            out.insert(field.to_string(), s.tagged_addresses_json());
        }
    }
    Value::Object(out)
}

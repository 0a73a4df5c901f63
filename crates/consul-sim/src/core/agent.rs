//! `/v1/agent`, `/v1/catalog` and `/v1/health`: services, checks and nodes.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::{
    ApiError, Consul, NodeState, Reply, SimTime, Target, duration_field, expect, field, json_body,
    map_field, str_field, strings_field, to_map,
};

/// What runs a check.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum CheckKind {
    /// Updated by the application; critical when not updated within the TTL.
    Ttl(Duration),
    /// An HTTP GET of `url` every `interval`.
    Http {
        /// The URL.
        url: String,
        /// How often.
        interval: Duration,
        /// Timeout of one run.
        timeout: Duration,
    },
    /// A TCP connect to `addr` every `interval`.
    Tcp {
        /// `host:port`.
        addr: String,
        /// How often.
        interval: Duration,
        /// Timeout of one run.
        timeout: Duration,
    },
    /// The node's gossip health (`serfHealth`), or a check with no runner.
    Manual,
}

impl CheckKind {
    /// The run interval of an HTTP or TCP check.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            CheckKind::Http { interval, .. } | CheckKind::Tcp { interval, .. } => Some(*interval),
            _ => None,
        }
    }

    fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl(_) => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Manual => "",
        }
    }
}

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

/// One registered check and its latest result.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CheckState {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) service_id: String,
    pub(crate) status: String,
    pub(crate) output: String,
    pub(crate) notes: String,
    pub(crate) kind: CheckKind,
    pub(crate) ttl_expires: Option<SimTime>,
    pub(crate) critical_since: Option<SimTime>,
    pub(crate) deregister_after: Option<Duration>,
    pub(crate) next_run: Option<SimTime>,
    pub(crate) create_index: u64,
    pub(crate) modify_index: u64,
}

impl CheckState {
    pub(crate) fn ttl_deadline(&self) -> Option<SimTime> {
        (self.status != "critical").then_some(self.ttl_expires).flatten()
    }

    pub(crate) fn reap_deadline(&self) -> Option<SimTime> {
        Some(self.critical_since?.after(self.deregister_after?))
    }

    pub(crate) fn restart(&mut self, now: SimTime) {
        if let CheckKind::Ttl(ttl) = self.kind {
            self.ttl_expires = Some(now.after(ttl));
        }
        self.next_run = None;
        if self.status == "critical" {
            self.critical_since = Some(now);
        }
    }
}

fn valid_status(s: &str) -> bool {
    matches!(s, "passing" | "warning" | "critical")
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

    fn agent_node(&self) -> String {
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

    fn member_json(&self) -> Value {
        json!({
            "Name": self.config.node_name,
            "Addr": self.config.node_address,
            "Port": 8301,
            "Tags": {"role": "consul", "dc": self.config.datacenter, "port": "8300"},
            "Status": 1,
        })
    }

    fn register_service(&mut self, now: SimTime, node: &str, body: &Bytes) -> Result<(), ApiError> {
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

    fn put_check(&mut self, now: SimTime, node: &str, mut check: CheckState) {
        let index = self.bump();
        check.create_index = index;
        check.modify_index = index;
        let critical = check.status == "critical";
        let id = check.id.clone();
        self.state.checks.insert((node.to_string(), id.clone()), check);
        self.state.catalog_index = index;
        if critical {
            for s in self.sessions_bound_to(node, &id) {
                self.invalidate_session(now, &s);
            }
        }
    }

    fn parse_check(
        &mut self,
        now: SimTime,
        def: &Value,
        service_id: &str,
        default_id: Option<String>,
    ) -> Result<CheckState, ApiError> {
        if !def.is_object() {
            return Err(ApiError::bad_request("a check must be a JSON object"));
        }
        let id = str_field(def, "CheckID")?
            .or(str_field(def, "ID")?)
            .filter(|s| !s.is_empty())
            .or(default_id)
            .or(str_field(def, "Name")?)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| ApiError::bad_request("Missing check name"))?;
        let ttl = duration_field(def, "TTL")?;
        let http = str_field(def, "HTTP")?.filter(|s| !s.is_empty());
        let tcp = str_field(def, "TCP")?.filter(|s| !s.is_empty());
        // Like Consul's agent, an interval under its 1 s minimum is raised to it.
        let interval = duration_field(def, "Interval")?.map(|i| i.max(Duration::from_secs(1)));
        let timeout = duration_field(def, "Timeout")?.unwrap_or(Duration::from_secs(10));
        let kind = match (ttl, http, tcp) {
            (Some(ttl), None, None) => CheckKind::Ttl(ttl),
            (None, Some(url), None) => CheckKind::Http {
                url,
                interval: interval.ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "check {id:?}: Interval is required for HTTP checks"
                    ))
                })?,
                timeout,
            },
            (None, None, Some(addr)) => CheckKind::Tcp {
                addr,
                interval: interval.ok_or_else(|| {
                    ApiError::bad_request(format!(
                        "check {id:?}: Interval is required for TCP checks"
                    ))
                })?,
                timeout,
            },
            (None, None, None) => {
                return Err(ApiError::bad_request(format!(
                    "check {id:?}: one of TTL, HTTP or TCP is required"
                )));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "check {id:?}: only one of TTL, HTTP or TCP may be given"
                )));
            }
        };
        let deregister_after = duration_field(def, "DeregisterCriticalServiceAfter")?;
        let deregister_after = deregister_after.map(|d| d.max(Duration::from_secs(60)));
        let status = str_field(def, "Status")?
            .filter(|s| !s.is_empty())
            .unwrap_or_else(|| "critical".into());
        if !valid_status(&status) {
            return Err(ApiError::bad_request(format!("check {id:?}: invalid Status {status:?}")));
        }
        Ok(CheckState {
            ttl_expires: match kind {
                CheckKind::Ttl(ttl) => Some(now.after(ttl)),
                _ => None,
            },
            critical_since: (status == "critical").then_some(now),
            name: str_field(def, "Name")?.unwrap_or_default(),
            notes: str_field(def, "Notes")?.unwrap_or_default(),
            service_id: service_id.to_string(),
            output: String::new(),
            status,
            kind,
            id,
            deregister_after: if service_id.is_empty() { None } else { deregister_after },
            next_run: None,
            create_index: 0,
            modify_index: 0,
        })
    }

    fn update_ttl(
        &mut self,
        now: SimTime,
        node: &str,
        id: &str,
        status: &str,
        output: &str,
    ) -> Result<(), ApiError> {
        match self.state.checks.get(&(node.to_string(), id.to_string())) {
            None => Err(ApiError::new(StatusCode::NOT_FOUND, format!("Unknown check ID {id:?}"))),
            Some(c) if !matches!(c.kind, CheckKind::Ttl(_)) => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("CheckID {id:?} does not have associated TTL"),
            )),
            Some(_) => {
                self.set_check_status(now, node, id, status, output);
                Ok(())
            }
        }
    }

    /// Sets a check's status; a critical check invalidates the sessions bound to it.
    pub(crate) fn set_check_status(
        &mut self,
        now: SimTime,
        node: &str,
        id: &str,
        status: &str,
        output: &str,
    ) {
        let key = (node.to_string(), id.to_string());
        let Some(c) = self.state.checks.get_mut(&key) else { return };
        let changed = c.status != status || c.output != output;
        if let CheckKind::Ttl(ttl) = c.kind {
            c.ttl_expires = Some(now.after(ttl));
        }
        if status == "critical" {
            c.critical_since.get_or_insert(now);
        } else {
            c.critical_since = None;
        }
        c.status = status.to_string();
        c.output = output.to_string();
        if changed {
            let index = self.bump();
            if let Some(c) = self.state.checks.get_mut(&key) {
                c.modify_index = index;
            }
            self.state.catalog_index = index;
        }
        if status == "critical" {
            for s in self.sessions_bound_to(node, id) {
                self.invalidate_session(now, &s);
            }
        }
    }

    /// Fault injection: set any check (`serfHealth` included) of `node` to `status`.
    pub fn force_check_status(&mut self, now: SimTime, node: &str, id: &str, status: &str) -> bool {
        if !valid_status(status)
            || !self.state.checks.contains_key(&(node.to_string(), id.to_string()))
        {
            return false;
        }
        self.set_check_status(now, node, id, status, "set by fault injection");
        true
    }

    pub(crate) fn expire_checks(&mut self, now: SimTime) {
        let due: Vec<((String, String), SimTime)> = self
            .state
            .checks
            .iter()
            .filter_map(|(k, c)| c.ttl_deadline().filter(|t| *t <= now).map(|t| (k.clone(), t)))
            .collect();
        for ((node, id), at) in due {
            self.set_check_status(at, &node, &id, "critical", "TTL expired");
        }
    }

    pub(crate) fn reap_critical_services(&mut self, now: SimTime) {
        let due: Vec<(String, String, SimTime)> = self
            .state
            .checks
            .iter()
            .filter_map(|((node, _), c)| {
                c.reap_deadline()
                    .filter(|t| *t <= now)
                    .map(|t| (node.clone(), c.service_id.clone(), t))
            })
            .collect();
        for (node, service, at) in due {
            tracing::debug!(%service, "deregistering a service critical for too long");
            self.deregister_service(at, &node, &service);
        }
    }

    fn deregister_service(&mut self, now: SimTime, node: &str, id: &str) {
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

    fn service_json(&self, s: &ServiceState) -> Value {
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

    fn check_json(&self, node: &str, c: &CheckState) -> Value {
        let service = self.state.services.get(&(node.to_string(), c.service_id.clone()));
        json!({
            "Node": node,
            "CheckID": c.id,
            "Name": c.name,
            "Status": c.status,
            "Notes": c.notes,
            "Output": c.output,
            "ServiceID": c.service_id,
            "ServiceName": service.map(|s| s.name.clone()).unwrap_or_default(),
            "ServiceTags": service.map(|s| s.tags.clone()).unwrap_or_default(),
            "Type": c.kind.type_name(),
            "CreateIndex": c.create_index,
            "ModifyIndex": c.modify_index,
        })
    }

    fn node_json(&self, name: &str, n: &NodeState) -> Value {
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

    fn catalog_service_json(&self, node: &str, s: &ServiceState) -> Value {
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

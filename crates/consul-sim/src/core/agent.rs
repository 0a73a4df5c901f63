//! `/v1/agent`: the local agent's services, checks, members, maintenance mode and
//! configuration.

use std::collections::BTreeSet;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::catalog::{CONSUL_SERVICE, SERVER_PORT};
use super::checks::{NODE_MAINT, SERVICE_MAINT_PREFIX, is_maintenance, valid_status};
use super::filter;
use super::gojson::quote;
use super::{
    ApiError, CheckKind, CheckState, Consul, Reply, ServiceState, SimResponse, SimTime, Target,
    expect, json_body, str_field, to_map,
};

/// The Consul version the sim answers as.
pub(crate) const VERSION: &str = "1.8.7";

/// Serf's LAN and WAN ports of the agent (Consul's defaults).
const SERF_LAN_PORT: u16 = 8301;
const SERF_WAN_PORT: u16 = 8302;

/// Consul's answer to most agent writes: 200 with an empty body.
fn empty_ok() -> Reply {
    Reply::write(SimResponse { status: StatusCode::OK, headers: Vec::new(), body: Bytes::new() })
}

/// A 64-bit FNV-1a hash, printed as Consul prints its content hashes (16 hex digits).
fn content_hash(bytes: &[u8]) -> String {
    let h = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |h, b| {
        (h ^ u64::from(*b)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    format!("{h:016x}")
}

/// The worst status of a service's checks, as Go's `HealthChecks.AggregatedStatus`:
/// maintenance, then critical, warning, passing (also for no checks).
fn aggregated_status<'a>(checks: impl IntoIterator<Item = &'a CheckState>) -> &'static str {
    let (mut maint, mut critical, mut warning) = (false, false, false);
    for c in checks {
        if is_maintenance(&c.id) {
            maint = true;
        } else if c.status == "critical" {
            critical = true;
        } else if c.status == "warning" {
            warning = true;
        }
    }
    match (maint, critical, warning) {
        (true, _, _) => "maintenance",
        (_, true, _) => "critical",
        (_, _, true) => "warning",
        _ => "passing",
    }
}

/// The HTTP status of `agent/health/service/*` for an aggregated status.
fn health_code(status: &str) -> StatusCode {
    match status {
        "passing" => StatusCode::OK,
        "warning" => StatusCode::TOO_MANY_REQUESTS,
        _ => StatusCode::SERVICE_UNAVAILABLE,
    }
}

/// An answer of `agent/health/service/*`: JSON or, with `?format=text`, the status alone.
fn health_response(code: StatusCode, reason: &str, body: &Value, text: bool) -> Reply {
    let mut resp = if text {
        SimResponse {
            status: code,
            headers: vec![("Content-Type", "text/plain".into())],
            body: Bytes::from(reason.to_string()),
        }
    } else {
        SimResponse::json(code, body)
    };
    resp.headers.push(("X-Consul-Reason", reason.into()));
    Reply::write(resp)
}

/// `?enable=` of the maintenance endpoints.
fn enable_param(t: &Target) -> Result<bool, ApiError> {
    match t.param("enable") {
        None | Some("") => Err(ApiError::bad_request("Missing value for enable")),
        Some(v) => match v {
            "1" | "t" | "T" | "TRUE" | "true" | "True" => Ok(true),
            "0" | "f" | "F" | "FALSE" | "false" | "False" => Ok(false),
            _ => Err(ApiError::bad_request(format!(
                "Invalid value for enable: {q_v}",
                q_v = quote(v)
            ))),
        },
    }
}

impl Consul {
    pub(crate) fn agent_node(&self) -> String {
        self.config.node_name.clone()
    }

    /// The services of the agent's own node, without the server's `consul` service (which
    /// Consul registers in the catalog, not in the agent).
    fn agent_services(&self) -> impl Iterator<Item = &ServiceState> {
        let node = &self.config.node_name;
        self.state
            .services
            .iter()
            .filter(move |((n, id), _)| n == node && id != CONSUL_SERVICE)
            .map(|(_, s)| s)
    }

    /// The checks of the agent's own node, without `serfHealth` (a catalog-only check).
    fn agent_checks(&self) -> impl Iterator<Item = &CheckState> {
        let node = &self.config.node_name;
        self.state
            .checks
            .iter()
            .filter(move |((n, _), c)| n == node && c.id != "serfHealth")
            .map(|(_, c)| c)
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
                Ok(empty_ok())
            }
            ["service", "deregister", id] => {
                expect(method, &Method::PUT, &path)?;
                // Consul 1.8.7 answers 200 for an unknown id too.
                if self.state.services.contains_key(&(node.clone(), id.to_string())) {
                    self.deregister_service(now, &node, id);
                }
                Ok(empty_ok())
            }
            ["service", "maintenance", id] => {
                expect(method, &Method::PUT, &path)?;
                let enable = enable_param(t)?;
                if !self.state.services.contains_key(&(node.clone(), id.to_string())) {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("No service registered with ID {q_id}", q_id = quote(id)),
                    ));
                }
                let check_id = format!("{SERVICE_MAINT_PREFIX}{id}");
                let reason = t.param("reason").filter(|r| !r.is_empty()).unwrap_or(
                    "Maintenance mode is enabled for this service, but no reason was provided. \
                     This is a default message.",
                );
                self.set_maintenance(
                    now,
                    &node,
                    check_id,
                    "Service Maintenance Mode",
                    id,
                    reason,
                    enable,
                );
                Ok(empty_ok())
            }
            // Everything after `service/` is the id (`service/a/b` asks for service `a/b`).
            ["service", ..] => {
                expect(method, &Method::GET, &path)?;
                let id = rest.strip_prefix("service/").unwrap_or_default();
                let Some(s) = self.state.services.get(&(node.clone(), id.to_string())) else {
                    return Err(ApiError::new(
                        StatusCode::NOT_FOUND,
                        format!("unknown service ID: {id}"),
                    ));
                };
                let mut v = self.agent_service_json(s);
                let hash = content_hash(v.to_string().as_bytes());
                if let Some(o) = v.as_object_mut() {
                    o.insert("ContentHash".into(), json!(hash));
                }
                let mut resp = SimResponse::json(StatusCode::OK, &v);
                resp.headers.push(("X-Consul-ContentHash", hash));
                Ok(Reply::write(resp))
            }
            ["services"] => {
                expect(method, &Method::GET, &path)?;
                let f = match filter::from_request(t, &filter::AGENT_SERVICE) {
                    Ok(f) => f,
                    Err(e) => return Ok(filter::error_reply(e.message(), false)),
                };
                let map: serde_json::Map<String, Value> = self
                    .agent_services()
                    .map(|s| (s.id.clone(), self.agent_service_json(s)))
                    .filter(|(_, v)| f.as_ref().is_none_or(|f| f.matches(v)))
                    .collect();
                Ok(Reply::json(&Value::Object(map)))
            }
            ["checks"] => {
                expect(method, &Method::GET, &path)?;
                let f = match filter::from_request(t, &filter::HEALTH_CHECK) {
                    Ok(f) => f,
                    // Consul 1.8.7 words a bad selector here without the usual prefix.
                    Err(filter::FilterError::Invalid(m)) => {
                        return Ok(filter::error_reply(m, false));
                    }
                    Err(e) => return Ok(filter::error_reply(e.message(), false)),
                };
                let map: serde_json::Map<String, Value> = self
                    .agent_checks()
                    .map(|c| (c.id.clone(), self.agent_check_json(&node, c)))
                    .filter(|(_, v)| f.as_ref().is_none_or(|f| f.matches(v)))
                    .collect();
                Ok(Reply::json(&Value::Object(map)))
            }
            ["check", "register"] => {
                expect(method, &Method::PUT, &path)?;
                let mut def = json_body(body, "check")?;
                super::translate_keys(&mut def, super::CHECK_ALIASES);
                let service_id = str_field(&def, "ServiceID")?.unwrap_or_default();
                if !service_id.is_empty()
                    && !self.state.services.contains_key(&(node.clone(), service_id.clone()))
                {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        format!(
                            "ServiceID {q_service_id} does not exist",
                            q_service_id = quote(&service_id)
                        ),
                    ));
                }
                let check = self.parse_check(now, &def, &service_id, None)?;
                let index = self.bump();
                self.put_check(now, &node, check, index);
                Ok(empty_ok())
            }
            ["check", "deregister", id] => {
                expect(method, &Method::PUT, &path)?;
                // Consul 1.8.7 answers 200 for an unknown id too.
                if self.state.checks.contains_key(&(node.clone(), id.to_string())) {
                    self.remove_check(now, &node, id);
                }
                Ok(empty_ok())
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
                Ok(empty_ok())
            }
            ["check", "update", id] => {
                expect(method, &Method::PUT, &path)?;
                let upd = json_body(body, "check update")?;
                let status = str_field(&upd, "Status")?.unwrap_or_default();
                if !valid_status(&status) {
                    return Err(ApiError::bad_request(format!("Invalid check status: '{status}'")));
                }
                let output = str_field(&upd, "Output")?.unwrap_or_default();
                self.update_ttl(now, &node, id, &status, &output)?;
                Ok(empty_ok())
            }
            ["maintenance"] => {
                expect(method, &Method::PUT, &path)?;
                let enable = enable_param(t)?;
                let reason = t.param("reason").filter(|r| !r.is_empty()).unwrap_or(
                    "Maintenance mode is enabled for this node, but no reason was provided. This \
                     is a default message.",
                );
                self.set_maintenance(
                    now,
                    &node,
                    NODE_MAINT.into(),
                    "Node Maintenance Mode",
                    "",
                    reason,
                    enable,
                );
                Ok(empty_ok())
            }
            ["health", "service", rest] => {
                expect(method, &Method::GET, &path)?;
                let text = t.param("format") == Some("text");
                match rest.split_once('/') {
                    Some(("id", id)) => Ok(self.agent_health_by_id(&node, id, text)),
                    Some(("name", name)) => Ok(self.agent_health_by_name(&node, name, text)),
                    _ => Err(ApiError::no_endpoint()),
                }
            }
            ["leave"] => {
                expect(method, &Method::PUT, &path)?;
                // Consul answers once it has left and then exits; the adapter stops serving.
                self.left = true;
                Ok(empty_ok())
            }
            ["reload"] => {
                expect(method, &Method::PUT, &path)?;
                // The sim has no configuration files to read again.
                Ok(empty_ok())
            }
            ["force-leave", member @ ..] => {
                expect(method, &Method::PUT, &path)?;
                let member = member.join("/");
                // The agent's own node is the only Serf member; forcing it out is a no-op.
                if member == node {
                    return Ok(empty_ok());
                }
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("agent: No node found with name '{member}'"),
                ))
            }
            ["token", ..] => {
                expect(method, &Method::PUT, &path)?;
                Err(ApiError::new(StatusCode::UNAUTHORIZED, "ACL support disabled"))
            }
            ["monitor"] => {
                expect(method, &Method::GET, &path)?;
                let level = t.param("loglevel").unwrap_or_default();
                // Consul upper-cases the level and checks it against logutils' names.
                let known = ["", "TRACE", "DEBUG", "INFO", "WARN", "ERR", "ERROR"];
                if !known.contains(&level.to_ascii_uppercase().as_str()) {
                    return Err(ApiError::bad_request(format!(
                        "Bad request: Unknown log level: {level}"
                    )));
                }
                // The sim writes no Consul log lines, so the stream never sends a byte.
                Ok(Reply::Endless)
            }
            ["self"] => {
                expect(method, &Method::GET, &path)?;
                Ok(Reply::json(&self.agent_self_json()))
            }
            ["metrics"] => {
                expect(method, &Method::GET, &path)?;
                if t.param("format") == Some("prometheus") {
                    // Consul's answer when `telemetry.prometheus_retention_time` is unset.
                    return Err(ApiError::new(
                        StatusCode::UNSUPPORTED_MEDIA_TYPE,
                        "Prometheus is not enabled since its retention time is not positive",
                    ));
                }
                Ok(Reply::json(&self.metrics_json(now)))
            }
            ["members"] => {
                expect(method, &Method::GET, &path)?;
                if t.param("segment").is_some_and(|s| !s.is_empty()) {
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "Network segments are not supported in this version of Consul",
                    ));
                }
                // Consul 1.8.7 lists the WAN pool for any non-empty `wan` (even "false").
                let wan = t.param("wan").is_some_and(|w| !w.is_empty());
                let mut member = self.member_json();
                if wan && let Some(m) = member.as_object_mut() {
                    m.insert(
                        "Name".into(),
                        json!(format!("{}.{}", self.config.node_name, self.config.datacenter)),
                    );
                    m.insert("Port".into(), json!(SERF_WAN_PORT));
                    if let Some(tags) = m.get_mut("Tags").and_then(Value::as_object_mut) {
                        tags.remove("wan_join_port");
                    }
                }
                Ok(Reply::json(&json!([member])))
            }
            _ => Err(ApiError::no_endpoint()),
        }
    }

    /// Adds or removes a maintenance check (critical, type `maintenance`).
    #[allow(clippy::too_many_arguments)]
    fn set_maintenance(
        &mut self,
        now: SimTime,
        node: &str,
        check_id: String,
        name: &str,
        service_id: &str,
        reason: &str,
        enable: bool,
    ) {
        let key = (node.to_string(), check_id.clone());
        if !enable {
            if self.state.checks.contains_key(&key) {
                self.remove_check(now, node, &key.1);
            }
            return;
        }
        if self.state.checks.contains_key(&key) {
            return;
        }
        let check = CheckState {
            id: check_id,
            name: name.to_string(),
            service_id: service_id.to_string(),
            status: "critical".into(),
            output: String::new(),
            notes: reason.to_string(),
            kind: CheckKind::Manual,
            ttl_expires: None,
            critical_since: None,
            deregister_after: None,
            next_run: None,
            create_index: 0,
            modify_index: 0,
        };
        let index = self.bump();
        self.put_check(now, node, check, index);
    }

    /// The checks of one agent service as `agent/health/service/*` prints them: Go's
    /// `api.HealthCheck` with a zero `Definition` and no `Type`.
    fn agent_health_checks(&self, node: &str, service_id: &str) -> (Vec<&CheckState>, Value) {
        let checks: Vec<&CheckState> =
            self.agent_checks().filter(|c| c.service_id == service_id).collect();
        let json: Vec<Value> = checks
            .iter()
            .map(|c| {
                let mut v = self.agent_check_json(node, c);
                if let Some(o) = v.as_object_mut() {
                    if c.service_id.is_empty()
                        || o.get("ServiceTags").and_then(Value::as_array).is_some_and(Vec::is_empty)
                    {
                        // Go's nil slice: this copy of the check carries no tags.
                        o.insert("ServiceTags".into(), Value::Null);
                    }
                    o.insert("Type".into(), json!(""));
                    o.insert(
                        "Definition".into(),
                        json!({
                            "Interval": "0s",
                            "Timeout": "0s",
                            "DeregisterCriticalServiceAfter": "0s",
                            "HTTP": "",
                            "Header": null,
                            "Method": "",
                            "Body": "",
                            "TLSSkipVerify": false,
                            "TCP": "",
                        }),
                    );
                }
                v
            })
            .collect();
        (checks, Value::Array(json))
    }

    fn agent_health_by_id(&self, node: &str, id: &str, text: bool) -> Reply {
        let Some(s) = self.agent_services().find(|s| s.id == id) else {
            let reason = format!("ServiceId {id} not found");
            // Consul 1.8.7 answers `?format=text` here with the reason as a JSON string.
            let body = if text {
                json!(reason)
            } else {
                json!({"AggregatedStatus": "critical", "Service": null, "Checks": null})
            };
            return health_response(StatusCode::NOT_FOUND, &reason, &body, false);
        };
        let (checks, checks_json) = self.agent_health_checks(node, &s.id);
        let status = aggregated_status(checks);
        let body = json!({
            "AggregatedStatus": status,
            "Service": self.agent_service_json(s),
            "Checks": checks_json,
        });
        health_response(health_code(status), status, &body, text)
    }

    fn agent_health_by_name(&self, node: &str, name: &str, text: bool) -> Reply {
        let mut code = StatusCode::NOT_FOUND;
        let mut reason = format!("ServiceName {name} Not Found");
        let mut list = Vec::new();
        for s in self.agent_services().filter(|s| s.name == name) {
            let (checks, checks_json) = self.agent_health_checks(node, &s.id);
            let status = aggregated_status(checks);
            let scode = health_code(status);
            // The worst status wins: passing 200 < warning 429 < critical 503.
            if code == StatusCode::NOT_FOUND || code.as_u16() < scode.as_u16() {
                code = scode;
                reason = status.to_string();
            }
            list.push(json!({
                "AggregatedStatus": status,
                "Service": self.agent_service_json(s),
                "Checks": checks_json,
            }));
        }
        health_response(code, &reason, &Value::Array(list), text)
    }

    /// `agent/self`: the fields of Consul's answer that clients read.
    fn agent_self_json(&self) -> Value {
        let node = &self.config.node_name;
        let id = self.state.nodes.get(node).map(|n| n.id.clone()).unwrap_or_default();
        let address = &self.config.node_address;
        let dc = &self.config.datacenter;
        let ttl_min = if self.config.session_ttl_min == std::time::Duration::from_secs(10) {
            "0s".to_string() // Consul prints the configured value; unset is "0s".
        } else {
            format!("{:?}", self.config.session_ttl_min)
        };
        let tagged: serde_json::Map<String, Value> = ["lan", "lan_ipv4", "wan", "wan_ipv4"]
            .iter()
            .map(|k| (k.to_string(), json!(address)))
            .collect();
        let services = self.agent_services().count();
        let checks: Vec<&CheckState> = self.agent_checks().collect();
        let ttls = checks.iter().filter(|c| matches!(c.kind, CheckKind::Ttl(_))).count();
        let scripts = checks.iter().filter(|c| matches!(c.kind, CheckKind::Script { .. })).count();
        let index = self.index().to_string();
        json!({
            "Config": {
                "Datacenter": dc,
                "NodeName": node,
                "NodeID": id,
                "Revision": "",
                "Server": true,
                "Version": VERSION,
            },
            // A map in Consul (its fields by reflection): sorted, as Go writes maps.
            "DebugConfig": {
                "ACLsEnabled": false,
                "AdvertiseAddrLAN": address,
                "AdvertiseAddrWAN": address,
                "BindAddr": address,
                "Bootstrap": false,
                "CheckDeregisterIntervalMin": "1m0s",
                "CheckReapInterval": "30s",
                "ConnectEnabled": false,
                "DNSDomain": "consul.",
                "Datacenter": dc,
                "DefaultQueryTime": "5m0s",
                "DevMode": true,
                "DisableCoordinates": false,
                "EnableLocalScriptChecks": self.config.enable_script_checks,
                "EnableRemoteScriptChecks": self.config.enable_script_checks,
                "GRPCPort": -1,
                "KVMaxValueSize": self.config.max_value_size,
                "MaxQueryTime": "10m0s",
                "NodeID": id,
                "NodeMeta": {},
                "NodeName": node,
                "PrimaryDatacenter": dc,
                "Revision": "",
                "SerfPortLAN": SERF_LAN_PORT,
                "SerfPortWAN": SERF_WAN_PORT,
                "ServerMode": true,
                "ServerPort": SERVER_PORT,
                "SessionTTLMin": ttl_min,
                "TaggedAddresses": tagged,
                "TxnMaxReqLen": 524_288,
                "Version": VERSION,
                "VersionPrerelease": "",
            },
            "Coord": coordinate(),
            "Member": self.member_json(),
            "Stats": {
                "agent": {
                    "check_monitors": scripts.to_string(),
                    "check_ttls": ttls.to_string(),
                    "checks": checks.len().to_string(),
                    "services": services.to_string(),
                },
                "build": {"prerelease": "", "revision": "", "version": VERSION},
                "consul": {
                    "acl": "disabled",
                    "bootstrap": "false",
                    "known_datacenters": "1",
                    "leader": (!self.leader_lost).to_string(),
                    "leader_addr": if self.leader_lost { String::new() } else { self.leader_addr() },
                    "server": "true",
                },
                "raft": {
                    "applied_index": index,
                    "commit_index": index,
                    "last_log_index": index,
                    "last_log_term": "2",
                    "num_peers": "0",
                    "protocol_version": "3",
                    "state": if self.leader_lost { "Follower" } else { "Leader" },
                    "term": "2",
                },
                "serf_lan": {"failed": "0", "left": "0", "members": "1"},
                "serf_wan": {"failed": "0", "left": "0", "members": "1"},
            },
            "Meta": to_map(&self.state.nodes.get(node).map(|n| n.meta.clone()).unwrap_or_default()),
        })
    }

    /// The agent as a serf member, as `agent/members` lists it.
    pub(crate) fn member_json(&self) -> Value {
        let id =
            self.state.nodes.get(&self.config.node_name).map(|n| n.id.clone()).unwrap_or_default();
        json!({
            "Name": self.config.node_name,
            "Addr": self.config.node_address,
            "Port": SERF_LAN_PORT,
            "Tags": {
                "acls": "0",
                "build": format!("{VERSION}:"),
                "dc": self.config.datacenter,
                "ft_fs": "1",
                "id": id,
                "port": SERVER_PORT.to_string(),
                "raft_vsn": "3",
                "role": "consul",
                "segment": "",
                "vsn": "2",
                "vsn_max": "3",
                "vsn_min": "2",
                "wan_join_port": SERF_WAN_PORT.to_string(),
            },
            "Status": 1,
            "ProtocolMin": 1,
            "ProtocolMax": 5,
            "ProtocolCur": 2,
            "DelegateMin": 2,
            "DelegateMax": 5,
            "DelegateCur": 4,
        })
    }

    pub(crate) fn register_service(
        &mut self,
        now: SimTime,
        node: &str,
        body: &Bytes,
    ) -> Result<(), ApiError> {
        let mut def = json_body(body, "service")?;
        super::translate_keys(&mut def, super::SERVICE_ALIASES);
        if let Some(obj) = def.as_object_mut() {
            for (k, v) in obj.iter_mut() {
                if k.eq_ignore_ascii_case("Check") {
                    super::translate_keys(v, super::CHECK_ALIASES);
                } else if k.eq_ignore_ascii_case("Checks")
                    && let Some(list) = v.as_array_mut()
                {
                    list.iter_mut().for_each(|c| super::translate_keys(c, super::CHECK_ALIASES));
                }
            }
        }
        let mut service = ServiceState::parse(&def, "Name", "")?;
        default_tagged_addresses(&mut service);
        let (id, name) = (service.id.clone(), service.name.clone());
        let mut defs: Vec<&Value> = Vec::new();
        if let Some(c) = super::field(&def, "Check") {
            defs.push(c);
        }
        match super::field(&def, "Checks") {
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
        // The agent syncs a service with its checks to the catalog in one write.
        let index = self.bump();
        self.put_service(node, service, index);
        // Re-registering replaces the service's checks (maintenance mode stays).
        let keep: BTreeSet<String> = checks.iter().map(|c| c.id.clone()).collect();
        let stale: Vec<String> = self
            .state
            .checks
            .iter()
            .filter(|((n, cid), c)| {
                n == node && c.service_id == id && !keep.contains(cid) && !is_maintenance(cid)
            })
            .map(|((_, cid), _)| cid.clone())
            .collect();
        for cid in stale {
            self.state.checks.remove(&(node.to_string(), cid));
            self.touch_check(node, &id, index);
        }
        for c in checks {
            self.put_check(now, node, c, index);
        }
        Ok(())
    }

    /// Removes a service instance and its checks in one write.
    pub(crate) fn deregister_service(&mut self, now: SimTime, node: &str, id: &str) {
        let index = self.bump();
        let Some(service) = self.state.services.get(&(node.to_string(), id.to_string())) else {
            return;
        };
        let name = service.name.clone();
        let checks: Vec<String> = self
            .state
            .checks
            .iter()
            .filter(|((n, _), c)| n == node && c.service_id == id)
            .map(|((_, cid), _)| cid.clone())
            .collect();
        for cid in checks {
            self.state.checks.remove(&(node.to_string(), cid.clone()));
            self.touch_check(node, id, index);
            for s in self.sessions_bound_to(node, &cid) {
                self.invalidate_session(now, &s);
            }
        }
        self.state.services.remove(&(node.to_string(), id.to_string()));
        self.removed_service(&name, index);
    }

    /// A service as the agent prints it (`agent/services`, `agent/service/:id`).
    pub(crate) fn agent_service_json(&self, s: &ServiceState) -> Value {
        let v = json!({
            "ID": s.id,
            "Service": s.name,
            "Tags": s.tags,
            "Meta": to_map(&s.meta),
            "Port": s.port,
            "Address": s.address,
            "Weights": s.weights_json(),
            "EnableTagOverride": s.enable_tag_override,
        });
        super::catalog::with_tagged_addresses(v, "TaggedAddresses", "Address", s)
    }

    /// A check as the agent prints it: the agent's local copy has no raft indexes.
    fn agent_check_json(&self, node: &str, c: &CheckState) -> Value {
        let mut v = self.check_json(node, c);
        if let Some(o) = v.as_object_mut() {
            o.insert("CreateIndex".into(), json!(0));
            o.insert("ModifyIndex".into(), json!(0));
        }
        v
    }
}

/// Consul's agent gives a service whose Address is an IP the tagged addresses
/// `lan_ipv4`/`wan_ipv4` (or `lan_ipv6`/`wan_ipv6`) of that address and port, unless the
/// registration names them itself. A host name gets none.
fn default_tagged_addresses(service: &mut ServiceState) {
    let Ok(ip) = service.address.parse::<std::net::IpAddr>() else { return };
    let v4 = match ip {
        std::net::IpAddr::V4(_) => true,
        std::net::IpAddr::V6(v6) => v6.to_ipv4_mapped().is_some(),
    };
    let keys = if v4 { ["lan_ipv4", "wan_ipv4"] } else { ["lan_ipv6", "wan_ipv6"] };
    for k in keys {
        service
            .tagged_addresses
            .entry(k.to_string())
            .or_insert_with(|| json!({"Address": service.address, "Port": service.port}));
    }
}

/// The network coordinate of a fresh single-node cluster (Serf's origin).
pub(crate) fn coordinate() -> Value {
    json!({"Vec": [0, 0, 0, 0, 0, 0, 0, 0], "Error": 1.5, "Adjustment": 0, "Height": 1e-5})
}

//! Checks: their kinds, state, TTLs, status updates and the reaping of services critical
//! for too long.

use std::time::Duration;

use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gojson::quote;
use super::{ApiError, Consul, SimTime, duration_field, str_field};

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
    /// A command (`Args`) run every `interval`: exit 0 passing, 1 warning, else critical.
    /// Only registered when the agent enables script checks.
    Script {
        /// The command and its arguments.
        args: Vec<String>,
        /// How often.
        interval: Duration,
        /// Timeout of one run.
        timeout: Duration,
    },
    /// The node's gossip health (`serfHealth`), maintenance mode, or a check with no
    /// runner.
    Manual,
}

impl CheckKind {
    /// The run interval of an HTTP or TCP check.
    pub fn interval(&self) -> Option<Duration> {
        match self {
            CheckKind::Http { interval, .. }
            | CheckKind::Tcp { interval, .. }
            | CheckKind::Script { interval, .. } => Some(*interval),
            _ => None,
        }
    }

    pub(crate) fn type_name(&self) -> &'static str {
        match self {
            CheckKind::Ttl(_) => "ttl",
            CheckKind::Http { .. } => "http",
            CheckKind::Tcp { .. } => "tcp",
            CheckKind::Script { .. } => "script",
            CheckKind::Manual => "",
        }
    }
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

/// Consul's answer to an HTTP, TCP or script check without an interval.
fn no_interval() -> ApiError {
    ApiError::bad_request("Invalid check: Interval must be > 0 for Script, HTTP, or TCP checks")
}

/// The id of the node's maintenance check.
pub(crate) const NODE_MAINT: &str = "_node_maintenance";

/// The prefix of a service's maintenance check id.
pub(crate) const SERVICE_MAINT_PREFIX: &str = "_service_maintenance:";

/// True for the checks that maintenance mode adds.
pub(crate) fn is_maintenance(id: &str) -> bool {
    id == NODE_MAINT || id.starts_with(SERVICE_MAINT_PREFIX)
}

/// Consul keeps at most this much of a check's output (`check_output_max_size`).
const OUTPUT_MAX: usize = 4096;

/// A check's output as Consul stores it: cut at 4 KiB, saying how much was captured.
fn truncate_output(output: &str) -> String {
    if output.len() <= OUTPUT_MAX {
        return output.to_string();
    }
    let mut cut = OUTPUT_MAX;
    while !output.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{} ... (captured {cut} of {} bytes)", &output[..cut], output.len())
}

pub(crate) fn valid_status(s: &str) -> bool {
    matches!(s, "passing" | "warning" | "critical")
}

impl Consul {
    /// Registers or updates a check of `node` as part of the write at `index`. A check
    /// whose definition and status are unchanged keeps its indexes (Consul's `IsSame`).
    pub(crate) fn put_check(
        &mut self,
        now: SimTime,
        node: &str,
        mut check: CheckState,
        index: u64,
    ) {
        let key = (node.to_string(), check.id.clone());
        let same = match self.state.checks.get(&key) {
            Some(old) => {
                check.create_index = old.create_index;
                check.modify_index = old.modify_index;
                (&old.name, &old.status, &old.output, &old.notes, &old.service_id, &old.kind)
                    == (
                        &check.name,
                        &check.status,
                        &check.output,
                        &check.notes,
                        &check.service_id,
                        &check.kind,
                    )
            }
            None => {
                check.create_index = index;
                false
            }
        };
        if !same {
            check.modify_index = index;
        }
        let critical = check.status == "critical";
        let id = check.id.clone();
        let service_id = check.service_id.clone();
        self.state.checks.insert(key, check);
        if !same {
            self.touch_check(node, &service_id, index);
        }
        if critical {
            for s in self.sessions_bound_to(node, &id) {
                self.invalidate_session(now, &s);
            }
        }
    }

    pub(crate) fn parse_check(
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
        let args = super::strings_field(def, "Args")?;
        if !args.is_empty() && !self.config.enable_script_checks {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "Scripts are disabled on this agent from remote calls; to enable, configure \
                 'enable_script_checks' to true",
            ));
        }
        // Like Consul's agent, an interval under its 1 s minimum is raised to it.
        let interval = duration_field(def, "Interval")?.map(|i| i.max(Duration::from_secs(1)));
        let timeout = duration_field(def, "Timeout")?.unwrap_or(Duration::from_secs(10));
        let kind = match (ttl, http, tcp) {
            (None, None, None) if !args.is_empty() => CheckKind::Script {
                args,
                interval: interval.ok_or_else(no_interval)?,
                timeout: duration_field(def, "Timeout")?.unwrap_or(Duration::from_secs(30)),
            },
            _ if !args.is_empty() => {
                return Err(ApiError::bad_request(format!(
                    "check {q_id}: only one of Args, TTL, HTTP or TCP may be given",
                    q_id = quote(&id)
                )));
            }
            (Some(ttl), None, None) => CheckKind::Ttl(ttl),
            (None, Some(url), None) => {
                CheckKind::Http { url, interval: interval.ok_or_else(no_interval)?, timeout }
            }
            (None, None, Some(addr)) => {
                CheckKind::Tcp { addr, interval: interval.ok_or_else(no_interval)?, timeout }
            }
            (None, None, None) => {
                return Err(ApiError::bad_request("Invalid check: TTL must be > 0 for TTL checks"));
            }
            _ => {
                return Err(ApiError::bad_request(format!(
                    "check {q_id}: only one of TTL, HTTP or TCP may be given",
                    q_id = quote(&id)
                )));
            }
        };
        let deregister_after = duration_field(def, "DeregisterCriticalServiceAfter")?;
        let deregister_after = deregister_after.map(|d| d.max(Duration::from_secs(60)));
        let given = str_field(def, "Status")?.filter(|s| !s.is_empty());
        if let Some(status) = &given
            && !valid_status(status)
        {
            return Err(ApiError::bad_request(format!(
                "check {q_id}: invalid Status {q_status}",
                q_id = quote(&id),
                q_status = quote(status)
            )));
        }
        // Re-registering a check without a Status keeps its current status and output, as
        // Consul's agent does.
        let existing = self.state.checks.get(&(self.config.node_name.clone(), id.clone()));
        let (status, output) = match (given, existing) {
            (Some(s), _) => (s, String::new()),
            (None, Some(c)) => (c.status.clone(), c.output.clone()),
            (None, None) => ("critical".to_string(), String::new()),
        };
        Ok(CheckState {
            ttl_expires: match kind {
                CheckKind::Ttl(ttl) => Some(now.after(ttl)),
                _ => None,
            },
            critical_since: (status == "critical").then_some(now),
            name: str_field(def, "Name")?.unwrap_or_default(),
            notes: str_field(def, "Notes")?.unwrap_or_default(),
            service_id: service_id.to_string(),
            output,
            status,
            kind,
            id,
            deregister_after: if service_id.is_empty() { None } else { deregister_after },
            next_run: None,
            create_index: 0,
            modify_index: 0,
        })
    }

    pub(crate) fn update_ttl(
        &mut self,
        now: SimTime,
        node: &str,
        id: &str,
        status: &str,
        output: &str,
    ) -> Result<(), ApiError> {
        match self.state.checks.get(&(node.to_string(), id.to_string())) {
            Some(c) if matches!(c.kind, CheckKind::Ttl(_)) => {
                self.set_check_status(now, node, id, status, output);
                Ok(())
            }
            // Consul 1.8.7 answers an unknown check like a check without a TTL.
            _ => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("CheckID {q_id} does not have associated TTL", q_id = quote(id)),
            )),
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
        let output = truncate_output(output);
        let output = output.as_str();
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
            let service_id = c.service_id.clone();
            let index = self.bump();
            if let Some(c) = self.state.checks.get_mut(&key) {
                c.modify_index = index;
            }
            self.touch_check(node, &service_id, index);
        }
        if status == "critical" {
            for s in self.sessions_bound_to(node, id) {
                self.invalidate_session(now, &s);
            }
        }
    }

    /// Removes a check of `node` in a write of its own; sessions bound to it go with it.
    pub(crate) fn remove_check(&mut self, now: SimTime, node: &str, id: &str) {
        let index = self.bump();
        if let Some(c) = self.state.checks.remove(&(node.to_string(), id.to_string())) {
            self.touch_check(node, &c.service_id, index);
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

    pub(crate) fn check_json(&self, node: &str, c: &CheckState) -> Value {
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
            "Type": if is_maintenance(&c.id) { "maintenance" } else { c.kind.type_name() },
            "Definition": {},
            "CreateIndex": c.create_index,
            "ModifyIndex": c.modify_index,
        })
    }
}

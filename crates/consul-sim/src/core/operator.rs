//! `/v1/operator/*`: the raft configuration of a one-server cluster, autopilot's
//! configuration (stored, with check-and-set) and health, and the keyring of an agent without
//! gossip encryption — as a Consul 1.8.7 dev agent answers them.

use std::time::Duration;

use bytes::Bytes;
use http::{Method, StatusCode};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::gojson::quote;
use super::{ApiError, Consul, Reply, SimResponse, SimTime, expect, field};

/// Autopilot's settings as Consul stores them (its defaults for a new cluster).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AutopilotConfig {
    cleanup_dead_servers: bool,
    last_contact_threshold: Duration,
    max_trailing_logs: u64,
    min_quorum: u64,
    server_stabilization_time: Duration,
    redundancy_zone_tag: String,
    disable_upgrade_migration: bool,
    upgrade_version_tag: String,
    create_index: u64,
    modify_index: u64,
}

impl Default for AutopilotConfig {
    fn default() -> Self {
        AutopilotConfig {
            cleanup_dead_servers: true,
            last_contact_threshold: Duration::from_millis(200),
            max_trailing_logs: 250,
            min_quorum: 0,
            server_stabilization_time: Duration::from_secs(10),
            redundancy_zone_tag: String::new(),
            disable_upgrade_migration: false,
            upgrade_version_tag: String::new(),
            // Consul writes it while bootstrapping, before the agent's node registers.
            create_index: 1,
            modify_index: 1,
        }
    }
}

impl AutopilotConfig {
    fn json(&self) -> Value {
        json!({
            "CleanupDeadServers": self.cleanup_dead_servers,
            "LastContactThreshold": go_duration(self.last_contact_threshold),
            "MaxTrailingLogs": self.max_trailing_logs,
            "MinQuorum": self.min_quorum,
            "ServerStabilizationTime": go_duration(self.server_stabilization_time),
            "RedundancyZoneTag": self.redundancy_zone_tag,
            "DisableUpgradeMigration": self.disable_upgrade_migration,
            "UpgradeVersionTag": self.upgrade_version_tag,
            "CreateIndex": self.create_index,
            "ModifyIndex": self.modify_index,
        })
    }

    /// A PUT replaces the whole configuration: fields it leaves out become zero, as in Consul.
    fn from_body(body: &[u8]) -> Result<AutopilotConfig, ApiError> {
        let bad = |e: String| {
            ApiError::bad_request(format!("Bad request: Error parsing autopilot config: {e}"))
        };
        let v: Value =
            if body.is_empty() { json!({}) } else { super::gojson::decode(body).map_err(bad)? };
        if !v.is_object() {
            return Err(bad(format!("json: cannot unmarshal {v} into an object")));
        }
        let boolean = |name: &str| -> Result<bool, ApiError> {
            match field(&v, name) {
                None => Ok(false),
                Some(Value::Bool(b)) => Ok(*b),
                Some(other) => Err(bad(format!("{name}: {other} is not a boolean"))),
            }
        };
        let number = |name: &str| -> Result<u64, ApiError> {
            match field(&v, name) {
                None => Ok(0),
                Some(n) => n.as_u64().ok_or_else(|| bad(format!("{name}: {n} is not a number"))),
            }
        };
        let text = |name: &str| -> Result<String, ApiError> {
            match field(&v, name) {
                None => Ok(String::new()),
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(bad(format!("{name}: {other} is not a string"))),
            }
        };
        let duration = |name: &str| -> Result<Duration, ApiError> {
            match field(&v, name) {
                None => Ok(Duration::ZERO),
                Some(Value::String(s)) => consul_api::types::parse_duration(s)
                    .ok_or_else(|| bad(format!("{name}: invalid duration {q_s}", q_s = quote(s)))),
                Some(Value::Number(n)) => n
                    .as_u64()
                    .map(Duration::from_nanos)
                    .ok_or_else(|| bad(format!("{name}: invalid duration {n}"))),
                Some(other) => Err(bad(format!("{name}: invalid duration {other}"))),
            }
        };
        Ok(AutopilotConfig {
            cleanup_dead_servers: boolean("CleanupDeadServers")?,
            last_contact_threshold: duration("LastContactThreshold")?,
            max_trailing_logs: number("MaxTrailingLogs")?,
            min_quorum: number("MinQuorum")?,
            server_stabilization_time: duration("ServerStabilizationTime")?,
            redundancy_zone_tag: text("RedundancyZoneTag")?,
            disable_upgrade_migration: boolean("DisableUpgradeMigration")?,
            upgrade_version_tag: text("UpgradeVersionTag")?,
            create_index: 0,
            modify_index: 0,
        })
    }
}

/// Go's `time.Duration.String()` for the whole-unit values autopilot uses.
fn go_duration(d: Duration) -> String {
    let ms = d.as_millis();
    if d.is_zero() {
        "0s".into()
    } else if !ms.is_multiple_of(1000) {
        format!("{ms}ms")
    } else {
        let s = ms / 1000;
        match (s / 3600, s % 3600 / 60, s % 60) {
            (0, 0, s) => format!("{s}s"),
            (0, m, s) => format!("{m}m{s}s"),
            (h, m, s) => format!("{h}h{m}m{s}s"),
        }
    }
}

impl Consul {
    pub(crate) fn operator_endpoint(
        &mut self,
        now: SimTime,
        m: &Method,
        rest: &str,
        t: &super::Target,
        body: &Bytes,
    ) -> Result<Reply, ApiError> {
        let path = format!("/v1/operator/{rest}");
        match rest {
            "raft/configuration" => {
                expect(m, &Method::GET, &path)?;
                Ok(Reply::json(&json!({ "Servers": [self.raft_server()], "Index": 0 })))
            }
            "raft/peer" => {
                expect(m, &Method::DELETE, &path)?;
                let me = self.raft_server();
                let (what, value, ours) = match (t.param("id"), t.param("address")) {
                    (Some(id), _) if !id.is_empty() => {
                        ("id", id, me.get("ID").is_some_and(|v| v == id))
                    }
                    (_, Some(a)) if !a.is_empty() => {
                        ("address", a, me.get("Address").is_some_and(|v| v == a))
                    }
                    _ => {
                        return Err(ApiError::bad_request(
                            "Bad request: Must specify either ?id with the server's ID or ?address with IP:port of peer to remove",
                        ));
                    }
                };
                if ours {
                    // Removing the only server would leave the sim without a leader; Consul
                    // refuses to remove the leader this way too.
                    return Err(ApiError::new(
                        StatusCode::INTERNAL_SERVER_ERROR,
                        "cannot remove the only server (the leader) from the Raft configuration",
                    ));
                }
                Err(ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "{what} {q_value} was not found in the Raft configuration",
                        q_value = quote(value)
                    ),
                ))
            }
            "autopilot/configuration" if m == Method::GET => {
                Ok(Reply::json(&self.state.autopilot.json()))
            }
            "autopilot/configuration" => {
                expect(m, &Method::PUT, &path)?;
                let cas = match t.param("cas") {
                    None => None,
                    Some(c) => Some(c.parse::<u64>().map_err(|_| {
                        ApiError::bad_request(format!(
                            "Bad request: Error parsing cas value: strconv.ParseUint: parsing {q_c}: invalid syntax", q_c = quote(c)))
                    })?),
                };
                let mut config = AutopilotConfig::from_body(body)?;
                if cas.is_some_and(|c| c != self.state.autopilot.modify_index) {
                    return Ok(Reply::json(&json!(false)));
                }
                config.create_index = self.state.autopilot.create_index;
                config.modify_index = self.bump();
                self.state.autopilot = config;
                Ok(Reply::json(&json!(true)))
            }
            "autopilot/health" => {
                expect(m, &Method::GET, &path)?;
                // A server counts as healthy once it has been up for the stabilization time;
                // until then Consul answers 429 with the same body.
                let healthy = now.0 >= self.state.autopilot.server_stabilization_time;
                let me = self.raft_server();
                let body = json!({
                    "Healthy": healthy,
                    "FailureTolerance": 0,
                    "Servers": [{
                        "ID": me.get("ID"),
                        "Name": self.config.node_name,
                        "Address": me.get("Address"),
                        "SerfStatus": "alive",
                        "Version": "1.8.7",
                        "Leader": true,
                        "LastContact": "0s",
                        "LastTerm": 2,
                        "LastIndex": self.index(),
                        "Healthy": healthy,
                        "Voter": true,
                        "StableSince": STABLE_SINCE,
                    }],
                });
                let status = if healthy { StatusCode::OK } else { StatusCode::TOO_MANY_REQUESTS };
                Ok(Reply::write(SimResponse::json(status, &body)))
            }
            "keyring" => Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!(
                    "4 errors occurred:\n\t* WAN error: 1/1 nodes reported failure\n\t* {node}.{dc}: Keyring is empty (encryption not enabled)\n\t* {dc} (LAN) error: 1/1 nodes reported failure\n\t* {node}: Keyring is empty (encryption not enabled)\n\n",
                    node = self.config.node_name,
                    dc = self.config.datacenter
                ),
            )),
            _ => Err(ApiError::no_endpoint()),
        }
    }

    /// This agent as the one raft server.
    fn raft_server(&self) -> Value {
        let id = self.state.nodes.get(&self.config.node_name).map(|n| n.id.clone());
        json!({
            "ID": id.unwrap_or_default(),
            "Node": self.config.node_name,
            "Address": format!("{}:8300", self.config.node_address),
            "Leader": !self.leader_lost,
            "ProtocolVersion": "3",
            "Voter": true,
        })
    }
}

/// The sim reads no wall clock, so the server has been stable since the Unix epoch.
const STABLE_SINCE: &str = "1970-01-01T00:00:00Z";

#[cfg(test)]
mod tests {
    use super::*;
    use crate::core::{Outcome, SimConfig, SimRequest};

    fn get(c: &mut Consul, at: Duration, target: &str) -> crate::core::SimResponse {
        let req = SimRequest {
            method: Method::GET,
            target: target.into(),
            headers: http::HeaderMap::new(),
            body: Bytes::new(),
        };
        match c.handle(SimTime(at), &req, false) {
            Outcome::Done(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn autopilot_reports_healthy_once_the_server_is_stable() {
        let mut c = Consul::new(SimConfig::default());
        let early = get(&mut c, Duration::from_secs(3), "/v1/operator/autopilot/health");
        assert_eq!(early.status, StatusCode::TOO_MANY_REQUESTS);
        let later = get(&mut c, Duration::from_secs(11), "/v1/operator/autopilot/health");
        assert_eq!(later.status, StatusCode::OK);
        let v: Value = serde_json::from_slice(&later.body).unwrap();
        assert_eq!(v["Servers"][0]["Leader"], true);
    }

    #[test]
    fn go_durations_print_like_go() {
        assert_eq!(go_duration(Duration::from_millis(200)), "200ms");
        assert_eq!(go_duration(Duration::from_secs(10)), "10s");
        assert_eq!(go_duration(Duration::from_secs(90)), "1m30s");
        assert_eq!(go_duration(Duration::from_secs(3600)), "1h0m0s");
        assert_eq!(go_duration(Duration::ZERO), "0s");
    }
}

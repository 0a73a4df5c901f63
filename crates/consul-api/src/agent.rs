//! The local agent: `/v1/agent` — services, checks, TTL updates, self and members.

use std::collections::HashMap;
use std::time::Duration;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::client::{Client, segment};
use crate::types::{QueryMeta, QueryOptions, duration_serde};
use crate::{Error, Request};

/// A check's health.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckStatus {
    /// Healthy.
    Passing,
    /// Degraded but serving.
    Warning,
    /// Unhealthy (TTL checks start here).
    #[default]
    Critical,
    /// Node or service under maintenance.
    Maintenance,
}

impl CheckStatus {
    /// The status as Consul writes it.
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passing => "passing",
            CheckStatus::Warning => "warning",
            CheckStatus::Critical => "critical",
            CheckStatus::Maintenance => "maintenance",
        }
    }
}

/// A check definition: exactly one of `ttl`, `http` or `tcp` says what kind it is.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CheckDefinition {
    /// The check's id (defaults to its name, or `service:<id>` inside a service).
    #[serde(rename = "CheckID", default, skip_serializing_if = "String::is_empty")]
    pub check_id: String,
    /// The check's name.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub name: String,
    /// The service the check belongs to (for `/v1/agent/check/register`).
    #[serde(rename = "ServiceID", default, skip_serializing_if = "String::is_empty")]
    pub service_id: String,
    /// TTL check: critical unless updated within this time.
    #[serde(
        rename = "TTL",
        default,
        with = "duration_serde",
        skip_serializing_if = "Option::is_none"
    )]
    pub ttl: Option<Duration>,
    /// HTTP check: GET this URL every `interval`; 2xx passing, 429 warning, else critical.
    #[serde(rename = "HTTP", default, skip_serializing_if = "Option::is_none")]
    pub http: Option<String>,
    /// TCP check: connect to this `host:port` every `interval`.
    #[serde(rename = "TCP", default, skip_serializing_if = "Option::is_none")]
    pub tcp: Option<String>,
    /// How often HTTP and TCP checks run.
    #[serde(default, with = "duration_serde", skip_serializing_if = "Option::is_none")]
    pub interval: Option<Duration>,
    /// Timeout of one HTTP or TCP check.
    #[serde(default, with = "duration_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Deregister the service once this check has been critical this long (≥ 1 minute).
    #[serde(default, with = "duration_serde", skip_serializing_if = "Option::is_none")]
    pub deregister_critical_service_after: Option<Duration>,
    /// The initial status.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<CheckStatus>,
    /// Free text.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub notes: String,
}

impl CheckDefinition {
    /// A TTL check.
    pub fn ttl(ttl: Duration) -> Self {
        CheckDefinition { ttl: Some(ttl), ..Default::default() }
    }

    /// An HTTP check of `url` every `interval`.
    pub fn http(url: impl Into<String>, interval: Duration) -> Self {
        CheckDefinition { http: Some(url.into()), interval: Some(interval), ..Default::default() }
    }

    /// A TCP check of `addr` every `interval`.
    pub fn tcp(addr: impl Into<String>, interval: Duration) -> Self {
        CheckDefinition { tcp: Some(addr.into()), interval: Some(interval), ..Default::default() }
    }
}

/// A service instance to register with the local agent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceRegistration {
    /// The instance id (defaults to the name).
    #[serde(rename = "ID", skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The service name.
    pub name: String,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// The address (defaults to the node's).
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// The port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<u16>,
    /// Metadata.
    #[serde(skip_serializing_if = "HashMap::is_empty")]
    pub meta: HashMap<String, String>,
    /// Health checks of the instance.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub checks: Vec<CheckDefinition>,
}

impl ServiceRegistration {
    /// Registration of `name` with instance id `id`.
    pub fn new(name: impl Into<String>, id: impl Into<String>) -> Self {
        ServiceRegistration { name: name.into(), id: id.into(), ..Default::default() }
    }
}

/// A service instance as the agent or catalog reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentService {
    /// Instance id.
    #[serde(rename = "ID", default)]
    pub id: String,
    /// Service name.
    #[serde(default)]
    pub service: String,
    /// Tags.
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    /// Metadata.
    #[serde(default)]
    pub meta: Option<HashMap<String, String>>,
    /// Port.
    #[serde(default)]
    pub port: u16,
    /// Address (empty: the node's).
    #[serde(default)]
    pub address: String,
}

/// A check and its latest result.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthCheck {
    /// The node it runs on.
    #[serde(default)]
    pub node: String,
    /// Its id.
    #[serde(rename = "CheckID", default)]
    pub check_id: String,
    /// Its name.
    #[serde(default)]
    pub name: String,
    /// Its status.
    #[serde(default)]
    pub status: CheckStatus,
    /// Free text.
    #[serde(default)]
    pub notes: String,
    /// The last output.
    #[serde(default)]
    pub output: String,
    /// The service it belongs to, if any.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// That service's name.
    #[serde(default)]
    pub service_name: String,
}

/// A member of the gossip pool, as `/v1/agent/members` reports it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AgentMember {
    /// Node name.
    pub name: String,
    /// Address.
    #[serde(default)]
    pub addr: String,
    /// Gossip port.
    #[serde(default)]
    pub port: u16,
    /// Serf status (1 alive, 2 leaving, 3 left, 4 failed).
    #[serde(default)]
    pub status: u8,
    /// Tags (role, datacenter, …).
    #[serde(default)]
    pub tags: HashMap<String, String>,
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct CheckUpdate<'a> {
    status: CheckStatus,
    output: &'a str,
}

/// The agent endpoints. Obtained from [`Client::agent`].
#[derive(Clone, Debug)]
pub struct Agent<'a> {
    client: &'a Client,
}

impl Client {
    /// The local agent.
    pub fn agent(&self) -> Agent<'_> {
        Agent { client: self }
    }
}

impl Agent<'_> {
    /// Registers (or replaces) a service instance.
    pub async fn register_service(&self, service: &ServiceRegistration) -> Result<(), Error> {
        segment("service name", &service.name)?;
        for check in &service.checks {
            validate_check(check)?;
        }
        self.client
            .write_unit(Method::PUT, "/v1/agent/service/register".into(), Some(service))
            .await
    }

    /// Deregisters a service instance and its checks.
    pub async fn deregister_service(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v1/agent/service/deregister/{}", segment("service id", id)?);
        self.client.write_unit::<()>(Method::PUT, path, None).await
    }

    /// The services registered with this agent, by instance id.
    pub async fn services(&self) -> Result<HashMap<String, AgentService>, Error> {
        let req = Request::new(Method::GET, "/v1/agent/services");
        Ok(self.client.query(req, &QueryOptions::default()).await?.0.unwrap_or_default())
    }

    /// The checks registered with this agent, by check id.
    pub async fn checks(&self) -> Result<HashMap<String, HealthCheck>, Error> {
        let req = Request::new(Method::GET, "/v1/agent/checks");
        Ok(self.client.query(req, &QueryOptions::default()).await?.0.unwrap_or_default())
    }

    /// Registers a check (`check_id` or `name` required).
    pub async fn register_check(&self, check: &CheckDefinition) -> Result<(), Error> {
        if check.name.is_empty() && check.check_id.is_empty() {
            return Err(Error::invalid("a check needs a Name or a CheckID"));
        }
        validate_check(check)?;
        self.client.write_unit(Method::PUT, "/v1/agent/check/register".into(), Some(check)).await
    }

    /// Deregisters a check.
    pub async fn deregister_check(&self, id: &str) -> Result<(), Error> {
        let path = format!("/v1/agent/check/deregister/{}", segment("check id", id)?);
        self.client.write_unit::<()>(Method::PUT, path, None).await
    }

    /// Sets a TTL check's status and output (`PUT /v1/agent/check/update/:id`).
    pub async fn update_ttl(
        &self,
        id: &str,
        status: CheckStatus,
        output: &str,
    ) -> Result<(), Error> {
        let path = format!("/v1/agent/check/update/{}", segment("check id", id)?);
        self.client.write_unit(Method::PUT, path, Some(&CheckUpdate { status, output })).await
    }

    /// Marks a TTL check passing.
    pub async fn pass_ttl(&self, id: &str, note: &str) -> Result<(), Error> {
        self.ttl_verb("pass", id, note).await
    }

    /// Marks a TTL check warning.
    pub async fn warn_ttl(&self, id: &str, note: &str) -> Result<(), Error> {
        self.ttl_verb("warn", id, note).await
    }

    /// Marks a TTL check critical.
    pub async fn fail_ttl(&self, id: &str, note: &str) -> Result<(), Error> {
        self.ttl_verb("fail", id, note).await
    }

    async fn ttl_verb(&self, verb: &str, id: &str, note: &str) -> Result<(), Error> {
        let mut req = Request::new(
            Method::PUT,
            format!("/v1/agent/check/{verb}/{}", segment("check id", id)?),
        );
        if !note.is_empty() {
            req = req.query("note", note);
        }
        self.client.send(req).await.map(|_| ())
    }

    /// The agent's configuration and member record (`/v1/agent/self`), as JSON.
    pub async fn self_info(&self) -> Result<serde_json::Value, Error> {
        let req = Request::new(Method::GET, "/v1/agent/self");
        Ok(self.client.query(req, &QueryOptions::default()).await?.0.unwrap_or_default())
    }

    /// The agent's node name, from `/v1/agent/self`.
    pub async fn node_name(&self) -> Result<String, Error> {
        let info = self.self_info().await?;
        info["Config"]["NodeName"]
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| Error::decode("/v1/agent/self has no Config.NodeName"))
    }

    /// The members of the agent's gossip pool.
    pub async fn members(&self) -> Result<Vec<AgentMember>, Error> {
        let req = Request::new(Method::GET, "/v1/agent/members");
        Ok(self.client.query(req, &QueryOptions::default()).await?.0.unwrap_or_default())
    }

    /// The agent's answer to a read, with its metadata: for watching agent-local state.
    pub async fn services_with_meta(
        &self,
        opts: &QueryOptions,
    ) -> Result<(HashMap<String, AgentService>, QueryMeta), Error> {
        let req = Request::new(Method::GET, "/v1/agent/services");
        let (v, meta) = self.client.query(req, opts).await?;
        Ok((v.unwrap_or_default(), meta))
    }
}

fn validate_check(check: &CheckDefinition) -> Result<(), Error> {
    let kinds = [check.ttl.is_some(), check.http.is_some(), check.tcp.is_some()];
    let what = if check.check_id.is_empty() { &check.name } else { &check.check_id };
    if kinds.iter().filter(|k| **k).count() > 1 {
        return Err(Error::invalid(format!("check {what:?}: give only one of TTL, HTTP and TCP")));
    }
    if (check.http.is_some() || check.tcp.is_some()) && check.interval.is_none() {
        return Err(Error::invalid(format!(
            "check {what:?}: HTTP and TCP checks need an Interval"
        )));
    }
    if check.deregister_critical_service_after.is_some_and(|d| d < Duration::from_secs(60)) {
        return Err(Error::invalid(format!(
            "check {what:?}: DeregisterCriticalServiceAfter must be at least 1m"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_encodes_as_the_documented_payload() {
        let mut reg = ServiceRegistration::new("redis", "redis1");
        reg.port = Some(8000);
        reg.tags = vec!["primary".into()];
        reg.checks = vec![CheckDefinition {
            deregister_critical_service_after: Some(Duration::from_secs(90)),
            ..CheckDefinition::ttl(Duration::from_secs(15))
        }];
        assert_eq!(
            serde_json::to_string(&reg).unwrap(),
            r#"{"ID":"redis1","Name":"redis","Tags":["primary"],"Port":8000,"Checks":[{"TTL":"15s","DeregisterCriticalServiceAfter":"90s"}]}"#
        );
    }

    #[test]
    fn checks_are_validated_before_sending() {
        let both = CheckDefinition {
            http: Some("http://x".into()),
            ..CheckDefinition::ttl(Duration::from_secs(10))
        };
        assert!(validate_check(&both).unwrap_err().to_string().contains("only one"));
        let no_interval = CheckDefinition { tcp: Some("x:1".into()), ..Default::default() };
        assert!(validate_check(&no_interval).is_err());
        let quick = CheckDefinition {
            deregister_critical_service_after: Some(Duration::from_secs(10)),
            ..CheckDefinition::ttl(Duration::from_secs(10))
        };
        assert!(validate_check(&quick).unwrap_err().to_string().contains("1m"));
    }

    #[test]
    fn health_checks_decode_from_the_documented_sample() {
        let body = r#"{"service:redis1":{"Node":"foobar","CheckID":"service:redis1","Name":"Service 'redis' check",
            "Status":"passing","Notes":"","Output":"","ServiceID":"redis1","ServiceName":"redis","ServiceTags":["primary"]}}"#;
        let checks: HashMap<String, HealthCheck> = serde_json::from_str(body).unwrap();
        assert_eq!(checks["service:redis1"].status, CheckStatus::Passing);
        assert_eq!(checks["service:redis1"].service_id, "redis1");
    }
}

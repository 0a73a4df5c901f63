//! What a cluster member is and how it behaves, validated before anything is sent.

use std::time::Duration;

use crate::ClusterError;

/// Configuration of one cluster member. Build with [`ClusterConfig::new`] and adjust fields;
/// [`Cluster::builder`](crate::Cluster::builder) validates it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClusterConfig {
    /// The Consul service all members register under (e.g. `"orders"`).
    pub service: String,
    /// This member's id, unique in the service; stable across restarts.
    pub node_id: String,
    /// Where this member serves, `host:port`.
    pub node_address: String,
    /// Failure domain (rack, availability zone); replicas spread over zones.
    pub zone: Option<String>,
    /// Share of the key space relative to other members (≥ 1).
    pub weight: u32,
    /// Extra tags on the service registration.
    pub tags: Vec<String>,
    /// How often the member passes its TTL check and renews its session.
    pub heartbeat_interval: Duration,
    /// TTL of the session and of the member's health check.
    pub session_ttl: Duration,
    /// Lock-delay of the session: after the leader's session is invalidated, nobody can
    /// take the lock for this long (Consul's rule), which covers a stale leader's last act.
    pub lock_delay: Duration,
    /// Safety margin for clock drift: a leader stops acting as leader this long before its
    /// session could possibly expire.
    pub lease_margin: Duration,
    /// How long each blocking query waits for a change.
    pub watch_wait: Duration,
    /// First delay after a failed request; doubles up to `retry_max`, with jitter.
    pub retry_min: Duration,
    /// Longest delay between retries.
    pub retry_max: Duration,
    /// KV prefix of the cluster's keys; the leader key is `<prefix>/leader`. Default:
    /// `ha-cluster/<service>`.
    pub key_prefix: String,
    /// Consul deregisters a member whose check has been critical this long (≥ 1 min in
    /// Consul); `None` keeps failed members listed until they come back or leave.
    pub deregister_critical_after: Option<Duration>,
    /// Virtual nodes per unit of weight on the hash ring.
    pub vnodes_per_weight: u32,
    /// Seed of the retry jitter, so simulations replay exactly.
    pub seed: u64,
}

impl ClusterConfig {
    /// Defaults for member `node_id` of `service` at `node_address`: heartbeat 1 s, session
    /// TTL 10 s, lock-delay 5 s. Crash failover ≤ 15 s on real Consul when the member stays
    /// down: its TTL check goes critical one TTL after the last pass and takes the session
    /// with it, well before Consul's 2 × TTL session timer; then the lock-delay. ≤ 26 s when
    /// the member restarts and passes its check first, so only the 2 × TTL reaping ends it.
    pub fn new(
        service: impl Into<String>,
        node_id: impl Into<String>,
        node_address: impl Into<String>,
    ) -> Self {
        let service = service.into();
        ClusterConfig {
            key_prefix: ClusterConfig::default_key_prefix(&service),
            service,
            node_id: node_id.into(),
            node_address: node_address.into(),
            zone: None,
            weight: 1,
            tags: Vec::new(),
            heartbeat_interval: Duration::from_secs(1),
            session_ttl: Duration::from_secs(10),
            lock_delay: Duration::from_secs(5),
            lease_margin: Duration::from_millis(500),
            watch_wait: Duration::from_secs(60),
            retry_min: Duration::from_millis(200),
            retry_max: Duration::from_secs(5),
            deregister_critical_after: Some(Duration::from_secs(120)),
            vnodes_per_weight: 160,
            seed: 0,
        }
    }

    /// The KV prefix a cluster of `service` uses unless configured otherwise:
    /// `ha-cluster/<service>` (its leader key is `<prefix>/leader`).
    pub fn default_key_prefix(service: &str) -> String {
        format!("ha-cluster/{service}")
    }

    /// The leader key.
    pub fn leader_key(&self) -> String {
        format!("{}/leader", self.key_prefix.trim_end_matches('/'))
    }

    /// The Consul service instance id of this member.
    pub fn service_id(&self) -> String {
        format!("{}-{}", self.service, self.node_id)
    }

    /// The id of this member's TTL check.
    pub fn check_id(&self) -> String {
        format!("{}:ttl", self.service_id())
    }

    /// `host` and `port` of [`node_address`](Self::node_address).
    pub fn host_port(&self) -> Result<(String, u16), ClusterError> {
        let bad = |why: &str| ClusterError::config("node_address", why.to_string());
        let (host, port) = self
            .node_address
            .rsplit_once(':')
            .ok_or_else(|| bad(&format!("{:?} is not host:port", self.node_address)))?;
        if host.is_empty() {
            return Err(bad(&format!("{:?} has no host", self.node_address)));
        }
        let port = port
            .parse::<u16>()
            .map_err(|_| bad(&format!("{:?} has no valid port", self.node_address)))?;
        Ok((host.trim_start_matches('[').trim_end_matches(']').to_string(), port))
    }

    /// Checks every field; the error names the first one that is wrong and why.
    pub fn validate(&self) -> Result<(), ClusterError> {
        let name_ok = |s: &str| {
            !s.is_empty()
                && s.len() <= 128
                && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c))
        };
        if !name_ok(&self.service) {
            return Err(ClusterError::config(
                "service",
                format!("{:?} must be 1–128 of [A-Za-z0-9-_.]", self.service),
            ));
        }
        if !name_ok(&self.node_id) {
            return Err(ClusterError::config(
                "node_id",
                format!("{:?} must be 1–128 of [A-Za-z0-9-_.]", self.node_id),
            ));
        }
        self.host_port()?;
        if self.zone.as_deref().is_some_and(|z| !name_ok(z)) {
            return Err(ClusterError::config(
                "zone",
                format!("{:?} must be 1–128 of [A-Za-z0-9-_.]", self.zone.as_deref().unwrap_or("")),
            ));
        }
        if self.weight == 0 || self.weight > 10_000 {
            return Err(ClusterError::config(
                "weight",
                format!("{} is not in 1..=10000", self.weight),
            ));
        }
        if self.vnodes_per_weight == 0 || self.vnodes_per_weight > 10_000 {
            return Err(ClusterError::config(
                "vnodes_per_weight",
                format!("{} is not in 1..=10000", self.vnodes_per_weight),
            ));
        }
        if self.session_ttl > Duration::from_secs(86_400) || self.session_ttl.is_zero() {
            return Err(ClusterError::config(
                "session_ttl",
                format!("{:?} is not in (0, 24h] (Consul's bounds)", self.session_ttl),
            ));
        }
        if self.heartbeat_interval.is_zero() || self.heartbeat_interval * 3 > self.session_ttl {
            return Err(ClusterError::config(
                "heartbeat_interval",
                format!(
                    "{:?} must be well below session_ttl {:?}: at most a third of it, so two \
                     heartbeats can fail before the session expires",
                    self.heartbeat_interval, self.session_ttl
                ),
            ));
        }
        if self.lease_margin + self.heartbeat_interval >= self.session_ttl {
            return Err(ClusterError::config(
                "lease_margin",
                format!(
                    "{:?} plus heartbeat_interval must be below session_ttl {:?}, or a leader \
                     could never hold its lease",
                    self.lease_margin, self.session_ttl
                ),
            ));
        }
        if self.lock_delay > Duration::from_secs(60) {
            return Err(ClusterError::config(
                "lock_delay",
                format!("{:?} exceeds Consul's maximum of 60s", self.lock_delay),
            ));
        }
        if self.watch_wait < Duration::from_millis(100)
            || self.watch_wait > Duration::from_secs(600)
        {
            return Err(ClusterError::config(
                "watch_wait",
                format!(
                    "{:?} is not in [100ms, 10m] (Consul's blocking-wait limit)",
                    self.watch_wait
                ),
            ));
        }
        if self.retry_min.is_zero() || self.retry_min > self.retry_max {
            return Err(ClusterError::config(
                "retry_min",
                format!(
                    "{:?} must be positive and at most retry_max {:?}",
                    self.retry_min, self.retry_max
                ),
            ));
        }
        let prefix = self.key_prefix.trim_matches('/');
        if prefix.is_empty() || self.key_prefix.starts_with('/') {
            return Err(ClusterError::config(
                "key_prefix",
                format!("{:?} must be a non-empty KV path without a leading '/'", self.key_prefix),
            ));
        }
        if let Some(after) = self.deregister_critical_after
            && after < Duration::from_secs(60)
        {
            return Err(ClusterError::config(
                "deregister_critical_after",
                format!("{after:?} is below Consul's minimum of 1m"),
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field_of(c: &ClusterConfig) -> String {
        match c.validate() {
            Err(ClusterError::Config { field, .. }) => field.to_string(),
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn defaults_are_valid_and_bad_fields_are_named() {
        let ok = ClusterConfig::new("orders", "n1", "10.0.0.1:7000");
        ok.validate().unwrap();
        let with = |f: &dyn Fn(&mut ClusterConfig)| {
            let mut c = ok.clone();
            f(&mut c);
            field_of(&c)
        };
        assert_eq!(with(&|c| c.service = "a/b".into()), "service");
        assert_eq!(with(&|c| c.node_id = String::new()), "node_id");
        assert_eq!(with(&|c| c.node_address = "10.0.0.1".into()), "node_address");
        assert_eq!(with(&|c| c.node_address = "h:99999".into()), "node_address");
        assert_eq!(with(&|c| c.weight = 0), "weight");
        assert_eq!(with(&|c| c.heartbeat_interval = Duration::from_secs(5)), "heartbeat_interval");
        assert_eq!(with(&|c| c.lock_delay = Duration::from_secs(61)), "lock_delay");
        assert_eq!(with(&|c| c.watch_wait = Duration::from_secs(3600)), "watch_wait");
        assert_eq!(with(&|c| c.key_prefix = "/x".into()), "key_prefix");
        assert_eq!(
            with(&|c| c.deregister_critical_after = Some(Duration::from_secs(5))),
            "deregister_critical_after"
        );
        let msg = {
            let mut c = ok.clone();
            c.heartbeat_interval = Duration::from_secs(4);
            c.validate().unwrap_err().to_string()
        };
        assert!(msg.contains("heartbeat_interval") && msg.contains("session_ttl"), "{msg}");
    }

    #[test]
    fn ids_and_keys_derive_from_the_names() {
        let c = ClusterConfig::new("orders", "n1", "[::1]:7000");
        assert_eq!(c.leader_key(), "ha-cluster/orders/leader");
        assert_eq!(c.service_id(), "orders-n1");
        assert_eq!(c.check_id(), "orders-n1:ttl");
        assert_eq!(c.host_port().unwrap(), ("::1".to_string(), 7000));
    }
}

//! The shard configuration: from a file, from Consul KV, validated field by field.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::ShardError;

/// How the data is sharded and replicated. Stored as JSON (file or KV):
///
/// ```json
/// {"version": 1, "shards": 64, "replication_factor": 3, "min_live": 2,
///  "rebalance_delay": "30s", "max_moving_fraction": 0.1, "drain": []}
/// ```
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ShardConfig {
    /// Grows with every change; an update must carry a higher version.
    pub version: u64,
    /// Number of shards. Fixed once the cluster has a routing table: changing it would
    /// re-route every key.
    pub shards: u32,
    /// Copies of each shard (R).
    pub replication_factor: u32,
    /// Live in-sync copies below which nothing is removed on purpose.
    pub min_live: u32,
    /// How long a failed node keeps its shards before they are re-replicated elsewhere.
    #[serde(with = "duration_text")]
    pub rebalance_delay: Duration,
    /// Most shards (as a fraction of all) that may be copying at once.
    pub max_moving_fraction: f64,
    /// Nodes to drain: their shards move elsewhere (make-before-break), then they hold none.
    #[serde(default)]
    pub drain: Vec<String>,
}

impl Default for ShardConfig {
    fn default() -> Self {
        ShardConfig {
            version: 1,
            shards: 64,
            replication_factor: 3,
            min_live: 2,
            rebalance_delay: Duration::from_secs(30),
            max_moving_fraction: 0.1,
            drain: Vec::new(),
        }
    }
}

mod duration_text {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer, de::Error};

    pub(super) fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&consul_api::types::format_duration(*d))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let text = String::deserialize(d)?;
        consul_api::types::parse_duration(&text)
            .ok_or_else(|| D::Error::custom(format!("{text:?} is not a duration like \"30s\"")))
    }
}

impl ShardConfig {
    /// Parses and validates JSON; `source` names where it came from in errors.
    pub fn from_json(bytes: &[u8], source: &str) -> Result<ShardConfig, ShardError> {
        let config: ShardConfig = serde_json::from_slice(bytes).map_err(|e| {
            ShardError::Config { field: "(json)".into(), reason: format!("{source}: {e}") }
        })?;
        config.validate()?;
        Ok(config)
    }

    /// Reads and validates a JSON config file.
    pub fn from_file(path: &std::path::Path) -> Result<ShardConfig, ShardError> {
        let bytes = std::fs::read(path).map_err(|e| ShardError::Config {
            field: "(file)".into(),
            reason: format!("cannot read {}: {e}", path.display()),
        })?;
        ShardConfig::from_json(&bytes, &path.display().to_string())
    }

    /// The JSON form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a config serializes")
    }

    /// Checks every field; the error names the first that is wrong.
    pub fn validate(&self) -> Result<(), ShardError> {
        let bad =
            |field: &str, reason: String| Err(ShardError::Config { field: field.into(), reason });
        if self.version == 0 {
            return bad("version", "must be at least 1".into());
        }
        if !(1..=65_536).contains(&self.shards) {
            return bad("shards", format!("{} is not in 1..=65536", self.shards));
        }
        if !(1..=7).contains(&self.replication_factor) {
            return bad(
                "replication_factor",
                format!("{} is not in 1..=7", self.replication_factor),
            );
        }
        if self.min_live == 0 || self.min_live > self.replication_factor {
            return bad(
                "min_live",
                format!(
                    "{} must be in 1..=replication_factor ({})",
                    self.min_live, self.replication_factor
                ),
            );
        }
        if !(self.max_moving_fraction > 0.0 && self.max_moving_fraction <= 1.0) {
            return bad(
                "max_moving_fraction",
                format!("{} is not in (0, 1]", self.max_moving_fraction),
            );
        }
        if self.rebalance_delay > Duration::from_secs(7 * 86_400) {
            return bad(
                "rebalance_delay",
                format!("{:?} is longer than a week", self.rebalance_delay),
            );
        }
        if let Some(empty) = self.drain.iter().find(|n| n.is_empty()) {
            return bad("drain", format!("{empty:?} is not a node id"));
        }
        Ok(())
    }

    /// Whether `next` may replace `self` on a running cluster.
    pub fn check_update(&self, next: &ShardConfig) -> Result<(), ShardError> {
        next.validate()?;
        if next.version <= self.version {
            return Err(ShardError::Config {
                field: "version".into(),
                reason: format!("{} does not move forward from {}", next.version, self.version),
            });
        }
        if next.shards != self.shards {
            return Err(ShardError::Config {
                field: "shards".into(),
                reason: format!(
                    "cannot change from {} to {} on a running cluster: every key would move",
                    self.shards, next.shards
                ),
            });
        }
        Ok(())
    }

    /// Most shards that may have a copy in progress at once (at least one).
    pub fn max_moving(&self) -> usize {
        ((f64::from(self.shards) * self.max_moving_fraction).floor() as usize).max(1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn field(r: Result<ShardConfig, ShardError>) -> String {
        match r {
            Err(ShardError::Config { field, .. }) => field,
            other => panic!("expected a config error, got {other:?}"),
        }
    }

    #[test]
    fn json_round_trips_and_errors_name_the_field() {
        let c = ShardConfig::default();
        assert_eq!(ShardConfig::from_json(&c.to_json(), "t").unwrap(), c);
        let with = |patch: &str| {
            let mut v: serde_json::Value = serde_json::from_slice(&c.to_json()).unwrap();
            let p: serde_json::Value = serde_json::from_str(patch).unwrap();
            for (k, x) in p.as_object().unwrap() {
                v[k] = x.clone();
            }
            field(ShardConfig::from_json(v.to_string().as_bytes(), "t"))
        };
        assert_eq!(with(r#"{"shards": 0}"#), "shards");
        assert_eq!(with(r#"{"replication_factor": 9}"#), "replication_factor");
        assert_eq!(with(r#"{"min_live": 4}"#), "min_live");
        assert_eq!(with(r#"{"max_moving_fraction": 0}"#), "max_moving_fraction");
        assert_eq!(with(r#"{"version": 0}"#), "version");
        let err = ShardConfig::from_json(br#"{"shards": 1, "bogus": 2}"#, "kv").unwrap_err();
        assert!(err.to_string().contains("kv"), "{err}");
        let err = with(r#"{"rebalance_delay": "soon"}"#);
        assert_eq!(err, "(json)");
    }

    #[test]
    fn updates_must_move_forward_and_keep_the_shard_count() {
        let c = ShardConfig::default();
        let same = c.clone();
        assert_eq!(field(c.check_update(&same).map(|_| same.clone())), "version");
        let more = ShardConfig { version: 2, shards: 128, ..c.clone() };
        assert_eq!(field(c.check_update(&more).map(|_| more.clone())), "shards");
        let ok = ShardConfig { version: 2, replication_factor: 2, ..c.clone() };
        c.check_update(&ok).unwrap();
        assert_eq!(c.max_moving(), 6);
    }
}

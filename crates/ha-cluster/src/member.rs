//! Members as Consul lists them, and the ring built from the healthy ones.

use std::collections::HashMap;

use consul_api::agent::CheckStatus;
use consul_api::catalog::ServiceEntry;

/// Meta keys a member registers with.
pub(crate) const META_NODE_ID: &str = "ha_node_id";
pub(crate) const META_ZONE: &str = "ha_zone";
pub(crate) const META_WEIGHT: &str = "ha_weight";

/// A member's health: the worst of its checks (and its node's).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Health {
    /// All checks pass: the member is on the ring.
    Passing,
    /// A check warns: listed, but off the ring.
    Warning,
    /// A check is critical: the member has failed.
    Critical,
    /// In maintenance mode.
    Maintenance,
}

impl From<CheckStatus> for Health {
    fn from(s: CheckStatus) -> Self {
        match s {
            CheckStatus::Passing => Health::Passing,
            CheckStatus::Warning => Health::Warning,
            CheckStatus::Critical => Health::Critical,
            CheckStatus::Maintenance => Health::Maintenance,
        }
    }
}

/// One member of the cluster.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Member {
    /// The member's id ([`ClusterConfig::node_id`](crate::ClusterConfig::node_id)).
    pub id: String,
    /// Where it serves, `host:port`.
    pub address: String,
    /// Its failure domain.
    pub zone: Option<String>,
    /// Its weight on the ring.
    pub weight: u32,
    /// Its health as Consul reports it.
    pub health: Health,
}

impl Member {
    /// Reads a member from a health entry; `None` for instances that are not cluster members
    /// (registered by something else under the same service name).
    pub(crate) fn from_entry(e: &ServiceEntry) -> Option<Member> {
        let empty = HashMap::new();
        let meta = e.service.meta.as_ref().unwrap_or(&empty);
        let id = meta.get(META_NODE_ID)?.clone();
        let host = if e.service.address.is_empty() { &e.node.address } else { &e.service.address };
        let address = if host.contains(':') {
            format!("[{host}]:{}", e.service.port)
        } else {
            format!("{host}:{}", e.service.port)
        };
        Some(Member {
            id,
            address,
            zone: meta.get(META_ZONE).filter(|z| !z.is_empty()).cloned(),
            weight: meta.get(META_WEIGHT).and_then(|w| w.parse().ok()).unwrap_or(1).max(1),
            health: e.aggregated_status().into(),
        })
    }

    /// The ring's view of this member.
    pub(crate) fn ring_member(&self) -> hashring::Member {
        let m = hashring::Member::new(self.id.clone()).weight(self.weight);
        match &self.zone {
            Some(z) => m.zone(z.clone()),
            None => m,
        }
    }
}

/// The membership version: a fingerprint of the healthy members (ids, weights, zones),
/// equal on every node that sees the same healthy set, whatever order Consul listed it in.
pub fn membership_version<'a>(members: impl IntoIterator<Item = &'a Member>) -> u64 {
    let mut healthy: Vec<_> = members
        .into_iter()
        .filter(|m| m.health == Health::Passing)
        .map(|m| format!("{}\u{1}{}\u{1}{}", m.id, m.weight, m.zone.as_deref().unwrap_or("")))
        .collect();
    healthy.sort();
    hashring::hash_key(healthy.join("\u{2}").as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn m(id: &str, health: Health) -> Member {
        Member { id: id.into(), address: "h:1".into(), zone: None, weight: 1, health }
    }

    #[test]
    fn the_version_depends_on_the_healthy_set_only() {
        let a = [m("a", Health::Passing), m("b", Health::Passing), m("c", Health::Critical)];
        let b = [m("b", Health::Passing), m("a", Health::Passing)];
        assert_eq!(membership_version(&a), membership_version(&b));
        let c = [m("a", Health::Passing)];
        assert_ne!(membership_version(&a), membership_version(&c));
    }
}

//! The routing-table auditor: the invariants every table version must keep, checked from
//! outside the controller (the demo, the tests and the real-Consul checker share it).
//!
//! ```
//! use prod_config::{RoutingTable, TableAuditor};
//!
//! let mut audit = TableAuditor::default();
//! audit.observe(&RoutingTable { version: 1, ..RoutingTable::default() });
//! audit.observe(&RoutingTable { version: 3, ..RoutingTable::default() });
//! assert_eq!(audit.violations().len(), 1, "{:?}", audit.violations()); // 2 was skipped
//! ```

use std::collections::HashMap;

use crate::RoutingTable;

/// Checks a sequence of routing tables, as an observer saw them, for the table invariants:
/// versions grow by exactly one (never back, never skipped), the writer's fencing token
/// never goes back, every shard keeps an in-sync copy, and a shard has at most one primary
/// per epoch.
#[derive(Clone, Debug, Default)]
pub struct TableAuditor {
    last: Option<RoutingTable>,
    primaries: HashMap<(usize, u64), String>,
    versions: usize,
    violations: Vec<String>,
}

impl TableAuditor {
    /// Checks `t`, the next table seen. Seeing the same version again with the same
    /// content is fine (a watch may repeat itself); anything else breaking a rule is
    /// recorded as a violation.
    pub fn observe(&mut self, t: &RoutingTable) {
        if let Some(last) = &self.last {
            if t.version == last.version {
                if t != last {
                    self.violations
                        .push(format!("v{}: two different tables carry this version", t.version));
                }
                return;
            }
            if t.version < last.version {
                self.violations.push(format!(
                    "table version went back from {} to {}",
                    last.version, t.version
                ));
            } else if t.version != last.version + 1 {
                self.violations.push(format!(
                    "table version jumped from {} to {} (versions grow by exactly one)",
                    last.version, t.version
                ));
            }
            if t.token < last.token {
                self.violations.push(format!(
                    "v{}: written under fencing token {}, older than v{}'s {}",
                    t.version, t.token, last.version, last.token
                ));
            }
        }
        self.versions += 1;
        for (i, s) in t.shards.iter().enumerate() {
            if s.in_sync().next().is_none() {
                self.violations.push(format!("v{}: shard {i} has no in-sync copy", t.version));
            }
            if let Some(p) = &s.primary {
                let first = self.primaries.entry((i, s.epoch)).or_insert_with(|| p.clone());
                if first != p {
                    self.violations
                        .push(format!("shard {i} epoch {} had primaries {first} and {p}", s.epoch));
                }
            }
        }
        self.last = Some(t.clone());
    }

    /// How many distinct versions were checked.
    pub fn versions(&self) -> usize {
        self.versions
    }

    /// The last table seen.
    pub fn last(&self) -> Option<&RoutingTable> {
        self.last.as_ref()
    }

    /// Every broken rule, in the order seen.
    pub fn violations(&self) -> &[String] {
        &self.violations
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Replica, ReplicaState, Shard};

    fn table(version: u64, token: u64, primary: &str, in_sync: bool) -> RoutingTable {
        let state = if in_sync { ReplicaState::InSync } else { ReplicaState::CatchingUp };
        RoutingTable {
            version,
            config_version: 1,
            token,
            shards: vec![Shard {
                epoch: 1,
                primary: Some(primary.into()),
                replicas: vec![Replica { node: primary.into(), state, since: 1 }],
            }],
        }
    }

    #[test]
    fn each_rule_is_caught_and_a_good_history_passes() {
        let mut good = TableAuditor::default();
        for (v, tok) in [(1, 5), (2, 5), (2, 5), (3, 9)] {
            good.observe(&table(v, tok, "a", true));
        }
        assert!(good.violations().is_empty(), "{:?}", good.violations());
        assert_eq!(good.versions(), 3);

        let bad = |tables: &[RoutingTable]| {
            let mut a = TableAuditor::default();
            tables.iter().for_each(|t| a.observe(t));
            a.violations().to_vec()
        };
        let v = bad(&[table(1, 5, "a", true), table(3, 5, "a", true)]);
        assert!(v[0].contains("jumped"), "{v:?}");
        let v = bad(&[table(2, 5, "a", true), table(1, 5, "a", true)]);
        assert!(v[0].contains("went back"), "{v:?}");
        let v = bad(&[table(1, 5, "a", true), table(2, 4, "a", true)]);
        assert!(v[0].contains("fencing token 4"), "{v:?}");
        let v = bad(&[table(1, 5, "a", false)]);
        assert!(v[0].contains("no in-sync copy"), "{v:?}");
        let v = bad(&[table(1, 5, "a", true), table(2, 5, "b", true)]);
        assert!(v[0].contains("primaries a and b"), "{v:?}");
        let v = bad(&[table(1, 5, "a", true), table(1, 5, "b", true)]);
        assert!(v[0].contains("two different tables"), "{v:?}");
    }
}

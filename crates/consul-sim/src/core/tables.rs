//! The catalog's table indexes: which raft index a catalog or health read reports.
//!
//! Consul's state store keeps one index per table (`nodes`, `services`, `checks`), one per
//! service name (`service.<name>`) and the index at which the last instance of any service
//! went away (`service_last_extinction`). A read answers with the index of the tables it
//! reads, so `catalog/services` does not move when only a check changed. One write request
//! is one raft index: every row it touches gets that same index.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::Consul;

/// The catalog's table indexes (see the [module docs](self)).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct CatalogIndexes {
    /// Last write to the `nodes` table.
    pub(crate) nodes: u64,
    /// Last write to the `services` table.
    pub(crate) services: u64,
    /// Last write to the `checks` table.
    pub(crate) checks: u64,
    /// `service.<name>`: last change to an instance of the service, its checks or its node.
    /// Removed when the last instance goes.
    pub(crate) service: BTreeMap<String, u64>,
    /// `service_last_extinction`: when the last instance of some service went away.
    pub(crate) extinction: u64,
}

impl Consul {
    fn note_catalog_write(&mut self, index: u64) {
        self.state.catalog_index = self.state.catalog_index.max(index);
    }

    /// A node row was written (or removed) at `index`: the `nodes` table and every service
    /// of the node move, as health answers carry the node.
    pub(crate) fn touch_node(&mut self, node: &str, index: u64) {
        self.state.tables.nodes = index;
        self.touch_services_of_node(node, index);
    }

    /// Every service of `node` moves to `index` (Consul's `updateAllServiceIndexesOfNode`).
    fn touch_services_of_node(&mut self, node: &str, index: u64) {
        let names: Vec<String> = self
            .state
            .services
            .iter()
            .filter(|((n, _), _)| n == node)
            .map(|(_, s)| s.name.clone())
            .collect();
        for name in names {
            self.state.tables.service.insert(name, index);
        }
        self.note_catalog_write(index);
    }

    /// A service instance named `name` was written at `index`.
    pub(crate) fn touch_service(&mut self, name: &str, index: u64) {
        self.state.tables.services = index;
        self.state.tables.service.insert(name.to_string(), index);
        self.note_catalog_write(index);
    }

    /// An instance of `name` was removed at `index`: the service's index moves, or, if it
    /// was the last instance, goes and the extinction index moves.
    pub(crate) fn removed_service(&mut self, name: &str, index: u64) {
        self.state.tables.services = index;
        if self.state.services.values().any(|s| s.name == name) {
            self.state.tables.service.insert(name.to_string(), index);
        } else {
            self.state.tables.service.remove(name);
            self.state.tables.extinction = index;
        }
        self.note_catalog_write(index);
    }

    /// A check of `node` bound to `service_id` ("" for a node check) was written or removed
    /// at `index`: the `checks` table moves, and the service it belongs to, or for a node
    /// check every service of the node.
    pub(crate) fn touch_check(&mut self, node: &str, service_id: &str, index: u64) {
        self.state.tables.checks = index;
        if service_id.is_empty() {
            self.touch_services_of_node(node, index);
        } else if let Some(s) = self.state.services.get(&(node.to_string(), service_id.to_string()))
        {
            let name = s.name.clone();
            self.state.tables.service.insert(name, index);
        }
        self.note_catalog_write(index);
    }

    /// The index a read of one service reports (Consul's `maxIndexForService`): the
    /// extinction index for a service with no instance (once any service went extinct), else
    /// the service's own index, else the largest of the tables read.
    pub(crate) fn service_read_index(&self, name: &str, with_checks: bool) -> u64 {
        let exists = self.state.services.values().any(|s| s.name == name);
        self.service_read_index_of(name, exists, with_checks)
    }

    /// [`service_read_index`](Self::service_read_index) for a read that found instances
    /// (`exists`) or not.
    pub(crate) fn service_read_index_of(&self, name: &str, exists: bool, with_checks: bool) -> u64 {
        let t = &self.state.tables;
        if !exists && t.extinction > 0 {
            return t.extinction;
        }
        if let Some(i) = t.service.get(name) {
            return *i;
        }
        let max = t.nodes.max(t.services);
        if with_checks { max.max(t.checks) } else { max }
    }
}

//! `?dc=`: a request for another datacenter. The sim is one datacenter with no WAN peers,
//! so, as on a lone Consul agent, such requests fail with "No path to datacenter" — except
//! the endpoints Consul answers locally whatever `dc` says.

use http::{Method, StatusCode};

use super::{Consul, SimResponse, Target};

/// Endpoints that ignore `?dc=` on Consul 1.8.7 (checked one by one on a dev agent): the
/// agent's own endpoints, its event list, the datacenter lists, and catalog writes (they
/// take the datacenter from the body).
fn ignores_dc(path: &str) -> bool {
    path.starts_with("/v1/agent/")
        || matches!(
            path,
            "/v1/event/list"
                | "/v1/catalog/datacenters"
                | "/v1/coordinate/datacenters"
                | "/v1/catalog/register"
                | "/v1/catalog/deregister"
        )
}

/// Reads that go through Consul's blocking-query path and so carry index headers even on
/// this error.
fn is_blocking_read(method: &Method, path: &str) -> bool {
    method == Method::GET
        && ["/v1/catalog/", "/v1/health/", "/v1/coordinate/", "/v1/session/"]
            .iter()
            .any(|p| path.starts_with(p))
}

impl Consul {
    /// The answer to a request naming another datacenter, if it does.
    pub(crate) fn wrong_datacenter(&self, method: &Method, t: &Target) -> Option<SimResponse> {
        let dc = t.param("dc").filter(|dc| !dc.is_empty())?;
        if dc == self.config.datacenter || ignores_dc(&t.path) {
            return None;
        }
        let resp = SimResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
        Some(if is_blocking_read(method, &t.path) { resp.with_index(1, false) } else { resp })
    }
}

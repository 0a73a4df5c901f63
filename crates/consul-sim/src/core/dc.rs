//! `?dc=`: a request for another datacenter. The sim is one datacenter with no WAN peers,
//! so, as on a lone Consul agent, such requests fail with "No path to datacenter" — except
//! the endpoints Consul answers locally whatever `dc` says.

use http::{Method, StatusCode};

use super::{Consul, Outcome, SimConfig, SimRequest, SimResponse, SimTime, Target};

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

/// Answers Consul's HTTP layer gives before any RPC: no such endpoint (a bare 404), a method
/// the endpoint does not take (405), a bad parameter or body (400), a body too large (413),
/// ACLs disabled (401), the answer to `OPTIONS` (200 with `Allow`),
/// KV flags that are not a number (a 500 from Go's `strconv`). Consul 1.8.7 reads
/// `?passing` only after the RPC, so that 400 is not one of them.
fn rejected_before_rpc(resp: &SimResponse) -> bool {
    let body = String::from_utf8_lossy(&resp.body);
    let bare_404 = resp.status == StatusCode::NOT_FOUND
        && resp.body.is_empty()
        && !resp.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("X-Consul-Index"));
    match resp.status {
        StatusCode::BAD_REQUEST => !body.starts_with("Invalid value for ?passing"),
        // With ACLs disabled, `/v1/acl/*` answers 401 before anything else.
        StatusCode::UNAUTHORIZED
        | StatusCode::METHOD_NOT_ALLOWED
        | StatusCode::PAYLOAD_TOO_LARGE => true,
        StatusCode::INTERNAL_SERVER_ERROR => body.starts_with("strconv.ParseUint"),
        // `OPTIONS` is answered before any handler runs.
        StatusCode::OK => resp.headers.iter().any(|(name, _)| name.eq_ignore_ascii_case("Allow")),
        _ => bare_404,
    }
}

impl Consul {
    /// The answer to a request naming another datacenter, if it does: `Err` when it is the
    /// mux's (no endpoint serves the path).
    ///
    /// Consul's HTTP handler validates the request (endpoint, method, parameters, body)
    /// before the RPC that finds no path to the datacenter (checked on 1.8.7: `GET /v1/nope`,
    /// `POST /v1/kv/a`, `GET /v1/kv/`, `?wait=zz`, a txn body that is not JSON keep their
    /// 404, 405 or 400 with `?dc=nowhere`). So the request runs first on a fresh, empty store
    /// that believes it is that datacenter (validation reads the request, not the store);
    /// only if it got past validation is the answer "No path to datacenter". The fresh store
    /// is thrown away: a request to a datacenter that does not exist costs what the request
    /// costs, whatever this store holds.
    pub(crate) fn wrong_datacenter(
        &self,
        now: SimTime,
        req: &SimRequest,
        t: &Target,
    ) -> Option<Result<SimResponse, SimResponse>> {
        let dc = t.param("dc").filter(|dc| !dc.is_empty())?;
        if dc == self.config.datacenter || ignores_dc(&t.path) {
            return None;
        }
        // Validation reads the request, never the store: a fresh store stands in for it, so
        // the dry run costs O(request), not a copy of every key.
        let mut dry_run =
            Consul::new(SimConfig { datacenter: dc.to_string(), ..self.config.clone() });
        dry_run.leader_lost = self.leader_lost;
        match dry_run.endpoint(now, req, false) {
            // No endpoint serves the path: the mux's answer.
            Err(mux) => return Some(Err(mux)),
            Ok(Outcome::Done(resp)) if rejected_before_rpc(&resp) => return Some(Ok(resp)),
            Ok(_) => {}
        }
        let resp = SimResponse::text(StatusCode::INTERNAL_SERVER_ERROR, "No path to datacenter");
        Some(Ok(if is_blocking_read(&req.method, &t.path) {
            resp.with_index(1, false)
        } else {
            resp
        }))
    }
}

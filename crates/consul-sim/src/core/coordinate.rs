//! `/v1/coordinate`: network coordinates. A single-node sim has one coordinate, Serf's
//! origin, for the agent's node; nodes registered through the catalog have none.

use http::{Method, StatusCode};
use serde_json::{Value, json};

use super::agent::coordinate;
use super::{ApiError, Consul, Reply, SimResponse, Target, expect};

impl Consul {
    fn coordinate_entry(&self) -> Value {
        json!({"Node": self.config.node_name, "Segment": "", "Coord": coordinate()})
    }

    pub(crate) fn coordinate_endpoint(
        &self,
        method: &Method,
        rest: &str,
        _t: &Target,
        body: &[u8],
    ) -> Result<Reply, ApiError> {
        if rest == "update" {
            expect(method, &Method::PUT, "/v1/coordinate/update")?;
            return update(body);
        }
        // The exact paths and the `node/` subtree; anything else is no endpoint, whatever
        // the method.
        let known = matches!(rest, "datacenters" | "nodes") || rest.starts_with("node/");
        if !known {
            return Err(ApiError::no_endpoint());
        }
        expect(method, &Method::GET, &format!("/v1/coordinate/{rest}"))?;
        let index = self.state.catalog_index;
        match rest.split_once('/') {
            None if rest == "datacenters" => Ok(Reply::json(&json!([{
                "Datacenter": self.config.datacenter,
                "AreaID": "wan",
                "Coordinates": [self.coordinate_entry()],
            }]))),
            None if rest == "nodes" => {
                Ok(Reply::read_json(index, &json!([self.coordinate_entry()])))
            }
            Some(("node", node)) if !node.is_empty() => {
                if node != self.config.node_name {
                    // Consul answers an unknown node with a bare 404.
                    return Ok(Reply::write(SimResponse {
                        status: StatusCode::NOT_FOUND,
                        headers: Vec::new(),
                        body: Default::default(),
                    }));
                }
                Ok(Reply::read_json(index, &json!([self.coordinate_entry()])))
            }
            _ => Err(ApiError::no_endpoint()),
        }
    }
}

/// `PUT /v1/coordinate/update`: Consul queues the coordinate and answers an empty 200, for
/// any node name; a coordinate of another dimensionality than Serf's 8 is refused. Consul
/// shows the update within its 5 s batch period, until the agent's own Serf coordinate
/// replaces it (measured: within 30 s); the sim does not store it and always shows Serf's
/// origin. A body without `Coord` makes Consul drop the connection (a recovered panic); the
/// sim answers it as incompatible.
fn update(body: &[u8]) -> Result<Reply, ApiError> {
    let req = super::json_body(body, "coordinate update")?;
    let dims = super::field(&req, "Coord")
        .and_then(|c| super::field(c, "Vec"))
        .and_then(Value::as_array)
        .map_or(0, Vec::len);
    if dims != 8 {
        return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "incompatible coordinate"));
    }
    Ok(Reply::write(SimResponse {
        status: StatusCode::OK,
        headers: Vec::new(),
        body: Default::default(),
    }))
}

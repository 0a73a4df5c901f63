//! The cluster-wide views: `/v1/catalog`, `/v1/health` and `/v1/status`.

use std::collections::HashMap;

use http::Method;
use serde::{Deserialize, Serialize};

use crate::Error;
use crate::Request;
use crate::agent::{AgentService, CheckStatus, HealthCheck};
use crate::client::{Client, segment};
use crate::types::{Index, QueryMeta, QueryOptions};

/// A node of the catalog.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Node {
    /// The node's id (a UUID), if known.
    #[serde(rename = "ID", default, skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The node's name.
    pub node: String,
    /// Its address.
    #[serde(default)]
    pub address: String,
    /// Its datacenter.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub datacenter: String,
    /// Node metadata.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub meta: Option<HashMap<String, String>>,
}

/// One instance of a service in the catalog (`/v1/catalog/service/:name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogService {
    /// The node's name.
    pub node: String,
    /// The node's address.
    #[serde(default)]
    pub address: String,
    /// The instance id.
    #[serde(rename = "ServiceID", default)]
    pub service_id: String,
    /// The service name.
    #[serde(default)]
    pub service_name: String,
    /// The instance's address (empty: the node's).
    #[serde(default)]
    pub service_address: String,
    /// The instance's port.
    #[serde(default)]
    pub service_port: u16,
    /// The instance's tags.
    #[serde(default)]
    pub service_tags: Option<Vec<String>>,
    /// The instance's metadata.
    #[serde(default)]
    pub service_meta: Option<HashMap<String, String>>,
    /// Index of its registration.
    #[serde(default)]
    pub create_index: Index,
    /// Index of its last change.
    #[serde(default)]
    pub modify_index: Index,
}

/// A node and its services (`/v1/catalog/node/:node`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogNode {
    /// The node.
    pub node: Option<Node>,
    /// Its services, by instance id.
    #[serde(default)]
    pub services: Option<HashMap<String, AgentService>>,
}

/// A registration written straight into the catalog (`/v1/catalog/register`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogRegistration {
    /// The node's name.
    pub node: String,
    /// The node's address.
    pub address: String,
    /// A service on that node, if any.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub service: Option<CatalogServiceDef>,
}

/// The service part of a [`CatalogRegistration`].
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct CatalogServiceDef {
    /// Instance id.
    #[serde(rename = "ID")]
    pub id: String,
    /// Service name.
    pub service: String,
    /// Tags.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Address.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub address: String,
    /// Port.
    pub port: u16,
}

/// A service instance with its node and checks (`/v1/health/service/:name`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ServiceEntry {
    /// The node it runs on.
    pub node: Node,
    /// The instance.
    pub service: AgentService,
    /// Its checks and its node's.
    #[serde(default)]
    pub checks: Vec<HealthCheck>,
}

impl ServiceEntry {
    /// The worst status among the checks (passing when there are none).
    pub fn aggregated_status(&self) -> CheckStatus {
        let rank = |s: CheckStatus| match s {
            CheckStatus::Passing => 0,
            CheckStatus::Warning => 1,
            CheckStatus::Critical => 2,
            CheckStatus::Maintenance => 3,
        };
        self.checks
            .iter()
            .map(|c| c.status)
            .max_by_key(|s| rank(*s))
            .unwrap_or(CheckStatus::Passing)
    }
}

/// Filters of a health query.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HealthFilter {
    /// Only instances whose checks all pass (`?passing`).
    pub passing: bool,
    /// Only instances with this tag.
    pub tag: Option<String>,
}

/// The catalog endpoints. Obtained from [`Client::catalog`].
#[derive(Clone, Debug)]
pub struct Catalog<'a> {
    client: &'a Client,
}

/// The health endpoints. Obtained from [`Client::health`].
#[derive(Clone, Debug)]
pub struct Health<'a> {
    client: &'a Client,
}

/// The status endpoints. Obtained from [`Client::status`].
#[derive(Clone, Debug)]
pub struct Status<'a> {
    client: &'a Client,
}

impl Client {
    /// The catalog.
    pub fn catalog(&self) -> Catalog<'_> {
        Catalog { client: self }
    }

    /// Health.
    pub fn health(&self) -> Health<'_> {
        Health { client: self }
    }

    /// Raft status.
    pub fn status(&self) -> Status<'_> {
        Status { client: self }
    }
}

async fn list<T: serde::de::DeserializeOwned + Default>(
    client: &Client,
    req: Request,
    opts: &QueryOptions,
) -> Result<(T, QueryMeta), Error> {
    let (v, meta) = client.query::<Option<T>>(req, opts).await?;
    Ok((v.flatten().unwrap_or_default(), meta))
}

impl Catalog<'_> {
    /// Every service name with the union of its tags.
    pub async fn services(
        &self,
        opts: &QueryOptions,
    ) -> Result<(HashMap<String, Vec<String>>, QueryMeta), Error> {
        list(self.client, Request::new(Method::GET, "/v1/catalog/services"), opts).await
    }

    /// The instances of a service.
    pub async fn service(
        &self,
        name: &str,
        tag: Option<&str>,
        opts: &QueryOptions,
    ) -> Result<(Vec<CatalogService>, QueryMeta), Error> {
        let mut req =
            Request::new(Method::GET, format!("/v1/catalog/service/{}", segment("service", name)?));
        if let Some(tag) = tag {
            req = req.query("tag", tag);
        }
        list(self.client, req, opts).await
    }

    /// Every node.
    pub async fn nodes(&self, opts: &QueryOptions) -> Result<(Vec<Node>, QueryMeta), Error> {
        list(self.client, Request::new(Method::GET, "/v1/catalog/nodes"), opts).await
    }

    /// A node and its services; `Ok(None)` if there is no such node.
    pub async fn node(
        &self,
        node: &str,
        opts: &QueryOptions,
    ) -> Result<(Option<CatalogNode>, QueryMeta), Error> {
        let req = Request::new(Method::GET, format!("/v1/catalog/node/{}", segment("node", node)?));
        let (v, meta) = self.client.query::<Option<CatalogNode>>(req, opts).await?;
        Ok((v.flatten(), meta))
    }

    /// Writes a node (and optionally a service) into the catalog.
    pub async fn register(&self, reg: &CatalogRegistration) -> Result<(), Error> {
        segment("node", &reg.node)?;
        let _: bool =
            self.client.write_json(Method::PUT, "/v1/catalog/register".into(), reg).await?;
        Ok(())
    }

    /// Removes a node, or one service of it when `service_id` is given.
    pub async fn deregister(&self, node: &str, service_id: Option<&str>) -> Result<(), Error> {
        #[derive(Serialize)]
        #[serde(rename_all = "PascalCase")]
        struct Dereg<'a> {
            node: &'a str,
            #[serde(rename = "ServiceID", skip_serializing_if = "Option::is_none")]
            service_id: Option<&'a str>,
        }
        segment("node", node)?;
        let body = Dereg { node, service_id };
        let _: bool =
            self.client.write_json(Method::PUT, "/v1/catalog/deregister".into(), &body).await?;
        Ok(())
    }
}

impl Health<'_> {
    /// The instances of a service with their checks.
    pub async fn service(
        &self,
        name: &str,
        filter: &HealthFilter,
        opts: &QueryOptions,
    ) -> Result<(Vec<ServiceEntry>, QueryMeta), Error> {
        let mut req =
            Request::new(Method::GET, format!("/v1/health/service/{}", segment("service", name)?));
        if filter.passing {
            req = req.flag("passing");
        }
        if let Some(tag) = &filter.tag {
            req = req.query("tag", tag.clone());
        }
        list(self.client, req, opts).await
    }

    /// The checks of a service's instances.
    pub async fn checks(
        &self,
        service: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<HealthCheck>, QueryMeta), Error> {
        let path = format!("/v1/health/checks/{}", segment("service", service)?);
        list(self.client, Request::new(Method::GET, path), opts).await
    }

    /// The checks of a node.
    pub async fn node(
        &self,
        node: &str,
        opts: &QueryOptions,
    ) -> Result<(Vec<HealthCheck>, QueryMeta), Error> {
        let path = format!("/v1/health/node/{}", segment("node", node)?);
        list(self.client, Request::new(Method::GET, path), opts).await
    }

    /// The checks in a state; `None` for every state (`any`).
    pub async fn state(
        &self,
        state: Option<CheckStatus>,
        opts: &QueryOptions,
    ) -> Result<(Vec<HealthCheck>, QueryMeta), Error> {
        let path = format!("/v1/health/state/{}", state.map_or("any", CheckStatus::as_str));
        list(self.client, Request::new(Method::GET, path), opts).await
    }
}

impl Status<'_> {
    /// The raft leader's address; empty when there is none.
    pub async fn leader(&self) -> Result<String, Error> {
        let req = Request::new(Method::GET, "/v1/status/leader");
        Ok(self.client.query::<String>(req, &QueryOptions::default()).await?.0.unwrap_or_default())
    }

    /// The raft peers' addresses.
    pub async fn peers(&self) -> Result<Vec<String>, Error> {
        let req = Request::new(Method::GET, "/v1/status/peers");
        Ok(self.client.query(req, &QueryOptions::default()).await?.0.unwrap_or_default())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_entries_decode_from_the_documented_sample() {
        let body = r#"[{"Node":{"ID":"40e4a748-2192-161a-0510-9bf59fe950b5","Node":"foobar",
            "Address":"10.1.10.12","Datacenter":"dc1","TaggedAddresses":{"lan":"10.1.10.12"},
            "Meta":{"instance_type":"t2.medium"}},
            "Service":{"ID":"redis","Service":"redis","Tags":["primary"],"Address":"10.1.10.12",
            "Meta":null,"Port":8000},
            "Checks":[{"Node":"foobar","CheckID":"service:redis","Name":"Service 'redis' check",
            "Status":"passing","Notes":"","Output":"","ServiceID":"redis","ServiceName":"redis"},
            {"Node":"foobar","CheckID":"serfHealth","Name":"Serf Health Status","Status":"critical",
            "Notes":"","Output":"","ServiceID":"","ServiceName":""}]}]"#;
        let entries: Vec<ServiceEntry> = serde_json::from_str(body).unwrap();
        assert_eq!(entries[0].node.node, "foobar");
        assert_eq!(entries[0].service.port, 8000);
        assert_eq!(entries[0].aggregated_status(), CheckStatus::Critical);
    }
}

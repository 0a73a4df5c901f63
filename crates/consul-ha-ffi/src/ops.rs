//! The client's calls as values: what the blocking functions and `submit` both run.

use std::time::Duration;

use bytes::Bytes;
use consul_api::agent::ServiceRegistration;
use consul_api::catalog::HealthFilter;
use consul_api::session::SessionRequest;
use consul_api::{Client, QueryOptions, SessionId};
use serde_json::json;

use crate::boundary::{ConsulHaStatus, Failure, Outcome};

/// One client call with its arguments, checked.
#[derive(Clone, Debug)]
pub(crate) enum Op {
    KvGet { key: String },
    KvPut { key: String, value: Vec<u8> },
    KvDelete { key: String },
    Register { name: String, address: String, port: u16, tags: Vec<String> },
    Deregister { id: String },
    Discover { name: String },
    CreateSession { name: String, ttl: Option<Duration> },
    Acquire { key: String, session: String, value: Vec<u8> },
    Release { key: String, session: String },
}

/// A finished call: `Ok` or `NotFound`, and the bytes it returns.
pub(crate) type Reply = (ConsulHaStatus, Vec<u8>);

/// The id `register_service` gives an instance: `<name>-<address>-<port>`.
pub(crate) fn service_id(name: &str, address: &str, port: u16) -> String {
    format!("{name}-{address}-{port}")
}

/// A session TTL in seconds, as Consul accepts them (10 s–86400 s on a default agent, from
/// 1 s on the embedded sim); 0 means none.
pub(crate) fn session_ttl(seconds: f64) -> Outcome<Option<Duration>> {
    if !seconds.is_finite() || !(0.0..=86_400.0).contains(&seconds) {
        return Err(Failure::invalid(format!("ttl {seconds} is not in 0..=86400 seconds")));
    }
    Ok((seconds > 0.0).then(|| Duration::from_secs_f64(seconds)))
}

impl Op {
    /// Builds an op from `submit`'s name and string arguments.
    pub(crate) fn parse(name: &str, args: &[&[u8]]) -> Outcome<Op> {
        let want = |n: std::ops::RangeInclusive<usize>| {
            if n.contains(&args.len()) {
                Ok(())
            } else {
                Err(Failure::invalid(format!(
                    "{name} takes {}..={} arguments, not {}",
                    n.start(),
                    n.end(),
                    args.len()
                )))
            }
        };
        let text = |i: usize, what: &str| -> Outcome<String> {
            let b = args.get(i).copied().unwrap_or_default();
            String::from_utf8(b.to_vec()).map_err(|_| {
                Failure::new(ConsulHaStatus::InvalidUtf8, format!("{name}: {what} is not UTF-8"))
            })
        };
        let bytes = |i: usize| args.get(i).map(|b| b.to_vec()).unwrap_or_default();
        Ok(match name {
            "kv_get" => {
                want(1..=1)?;
                Op::KvGet { key: text(0, "key")? }
            }
            "kv_put" => {
                want(2..=2)?;
                Op::KvPut { key: text(0, "key")?, value: bytes(1) }
            }
            "kv_delete" => {
                want(1..=1)?;
                Op::KvDelete { key: text(0, "key")? }
            }
            "register_service" => {
                want(3..=usize::MAX)?;
                let port = text(2, "port")?;
                let port = port
                    .parse::<u16>()
                    .map_err(|_| Failure::invalid(format!("port {port:?} is not in 0..=65535")))?;
                let tags = (3..args.len()).map(|i| text(i, "tag")).collect::<Outcome<_>>()?;
                Op::Register { name: text(0, "name")?, address: text(1, "address")?, port, tags }
            }
            "deregister_service" => {
                want(1..=1)?;
                Op::Deregister { id: text(0, "service id")? }
            }
            "discover_service" => {
                want(1..=1)?;
                Op::Discover { name: text(0, "name")? }
            }
            "create_session" => {
                want(0..=2)?;
                let ttl = text(1, "ttl")?;
                let ttl = if ttl.is_empty() {
                    None
                } else {
                    let secs = ttl
                        .parse::<f64>()
                        .map_err(|_| Failure::invalid(format!("ttl {ttl:?} is not a number")))?;
                    session_ttl(secs)?
                };
                Op::CreateSession { name: text(0, "name")?, ttl }
            }
            "acquire_lock" => {
                want(2..=3)?;
                Op::Acquire { key: text(0, "key")?, session: text(1, "session")?, value: bytes(2) }
            }
            "release_lock" => {
                want(2..=2)?;
                Op::Release { key: text(0, "key")?, session: text(1, "session")? }
            }
            other => return Err(Failure::invalid(format!("unknown call {other:?}"))),
        })
    }

    /// A short name for messages.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            Op::KvGet { .. } => "kv_get",
            Op::KvPut { .. } => "kv_put",
            Op::KvDelete { .. } => "kv_delete",
            Op::Register { .. } => "register_service",
            Op::Deregister { .. } => "deregister_service",
            Op::Discover { .. } => "discover_service",
            Op::CreateSession { .. } => "create_session",
            Op::Acquire { .. } => "acquire_lock",
            Op::Release { .. } => "release_lock",
        }
    }

    /// Runs the call against `client`.
    pub(crate) async fn run(self, client: Client) -> Outcome<Reply> {
        let ok = |bytes: Vec<u8>| Ok((ConsulHaStatus::Ok, bytes));
        let e = Failure::consul;
        match self {
            Op::KvGet { key } => {
                let pair = client.kv().get(&key).await.map_err(e)?;
                match pair {
                    Some(p) => ok(p.value.map(|v| v.to_vec()).unwrap_or_default()),
                    None => Ok((ConsulHaStatus::NotFound, Vec::new())),
                }
            }
            Op::KvPut { key, value } => {
                client.kv().put(&key, Bytes::from(value)).await.map_err(e)?;
                ok(Vec::new())
            }
            Op::KvDelete { key } => {
                client.kv().delete(&key).await.map_err(e)?;
                ok(Vec::new())
            }
            Op::Register { name, address, port, tags } => {
                let id = service_id(&name, &address, port);
                let mut reg = ServiceRegistration::new(name, id.clone());
                reg.address = address;
                reg.port = Some(port);
                reg.tags = tags;
                client.agent().register_service(&reg).await.map_err(e)?;
                ok(id.into_bytes())
            }
            Op::Deregister { id } => {
                client.agent().deregister_service(&id).await.map_err(e)?;
                ok(Vec::new())
            }
            Op::Discover { name } => {
                let filter = HealthFilter { passing: true, tag: None };
                let (entries, _) = client
                    .health()
                    .service(&name, &filter, &QueryOptions::default())
                    .await
                    .map_err(e)?;
                let list: Vec<_> = entries
                    .iter()
                    .map(|s| {
                        let address = if s.service.address.is_empty() {
                            &s.node.address
                        } else {
                            &s.service.address
                        };
                        json!({
                            "id": s.service.id,
                            "name": s.service.service,
                            "address": address,
                            "port": s.service.port,
                            "tags": s.service.tags.clone().unwrap_or_default(),
                            "node": s.node.node,
                        })
                    })
                    .collect();
                ok(serde_json::to_vec(&list).map_err(|e| Failure::invalid(e.to_string()))?)
            }
            Op::CreateSession { name, ttl } => {
                let req = SessionRequest { name, ttl, ..SessionRequest::default() };
                let id = client.session().create(&req).await.map_err(e)?;
                ok(id.as_str().as_bytes().to_vec())
            }
            Op::Acquire { key, session, value } => {
                let got = client
                    .kv()
                    .acquire(&key, Bytes::from(value), &SessionId(session), 0)
                    .await
                    .map_err(e)?;
                ok(if got { b"true".to_vec() } else { b"false".to_vec() })
            }
            Op::Release { key, session } => {
                let done = client
                    .kv()
                    .release(&key, Bytes::new(), &SessionId(session), 0)
                    .await
                    .map_err(e)?;
                ok(if done { b"true".to_vec() } else { b"false".to_vec() })
            }
        }
    }
}

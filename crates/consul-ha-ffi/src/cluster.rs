//! `ConsulHaCluster`: one member of an HA cluster (membership, leader election with
//! fencing, the hash ring), over Consul or the embedded sim.

use std::ffi::c_char;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_api::Client;
use ha_cluster::{Cluster, ClusterConfig, Health, Member};
use serde_json::{Value, json};

use crate::boundary::{
    ConsulHaStatus, ErrorSlot, Failure, Handle, Outcome, bytes_arg, create, destroy, give,
    on_handle, opt_str_arg, out_arg, str_arg,
};
use crate::client::{http_client, timeout_or};
use crate::runtime::{block_on, sim};

/// How a cluster member is set up. Zero numbers and NULL strings take the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConsulHaClusterOptions {
    /// The Consul agent's URL (NULL: `http://127.0.0.1:8500`); ignored with `simulate`.
    pub consul_url: *const c_char,
    /// The Consul service the members register under (NULL: `consul-ha`).
    pub service: *const c_char,
    /// This member's id, unique in the service (required).
    pub node_id: *const c_char,
    /// Where this member serves, `host:port` (required).
    pub node_address: *const c_char,
    /// Failure domain (NULL: none).
    pub zone: *const c_char,
    /// How often the member heartbeats, in ms (0: 1000).
    pub heartbeat_interval_ms: u32,
    /// TTL of the session and health check, in ms (0: 10 000; Consul needs ≥ 10 s unless
    /// its `session_ttl_min` is lowered, the embedded sim accepts ≥ 1 s).
    pub session_ttl_ms: u32,
    /// Lock-delay after a leader's session ends, in ms (0: 5000).
    pub lock_delay_ms: u32,
    /// Default timeout of blocking calls on this handle, in ms (0: 10 000).
    pub timeout_ms: u32,
    /// Run on the process's embedded sim instead of a Consul agent.
    pub simulate: bool,
}

/// One member of an HA cluster. Opaque.
pub struct ConsulHaCluster {
    client: Client,
    config: ClusterConfig,
    timeout: Duration,
    running: Mutex<Option<Arc<Cluster>>>,
    error: ErrorSlot,
}

impl Handle for ConsulHaCluster {
    fn error(&self) -> &ErrorSlot {
        &self.error
    }
}

impl ConsulHaCluster {
    fn running(&self) -> Outcome<Arc<Cluster>> {
        self.running
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| Failure::invalid("the member is not started"))
    }

    /// The started member and its client, for the shard manager.
    pub(crate) fn parts(&self) -> Outcome<(Arc<Cluster>, Client, Duration)> {
        Ok((self.running()?, self.client.clone(), self.timeout))
    }
}

fn ms(v: u32, default: Duration) -> Duration {
    timeout_or(v, default)
}

/// Makes a cluster member (not started: see `consul_ha_cluster_start`). The options are
/// checked here; a wrong one fails with its name in `*error_out` (free with
/// `consul_ha_free`).
///
/// # Safety
/// `options` is NULL or points to options whose strings are NULL or NUL-terminated; `out`
/// points to a writable pointer; `error_out` is NULL or points to a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_new(
    options: *const ConsulHaClusterOptions,
    out: *mut *mut ConsulHaCluster,
    error_out: *mut *mut c_char,
) -> ConsulHaStatus {
    create(out, error_out, || {
        // SAFETY: NULL or a pointer to valid options (the caller's contract).
        let o = unsafe { options.as_ref() }
            .ok_or_else(|| Failure::new(ConsulHaStatus::NullArgument, "options is NULL"))?;
        let service = opt_str_arg(o.service, "service")?.unwrap_or("consul-ha");
        let node_id = str_arg(o.node_id, "node_id")?;
        let node_address = str_arg(o.node_address, "node_address")?;
        let mut config = ClusterConfig::new(service, node_id, node_address);
        config.zone = opt_str_arg(o.zone, "zone")?.map(str::to_string);
        config.heartbeat_interval = ms(o.heartbeat_interval_ms, config.heartbeat_interval);
        config.session_ttl = ms(o.session_ttl_ms, config.session_ttl);
        config.lock_delay = ms(o.lock_delay_ms, config.lock_delay);
        config.lease_margin = config.lease_margin.min(config.session_ttl / 4);
        config.validate().map_err(|e| Failure::invalid(e.to_string()))?;
        let timeout = ms(o.timeout_ms, Duration::from_secs(10));
        let client = if o.simulate {
            sim()?.client(node_id)
        } else {
            let url = opt_str_arg(o.consul_url, "consul_url")?.unwrap_or("http://127.0.0.1:8500");
            http_client(url, timeout)?
        };
        Ok(ConsulHaCluster {
            client,
            config,
            timeout,
            running: Mutex::new(None),
            error: ErrorSlot::default(),
        })
    })
}

/// Frees a member. A started member that was not stopped is abandoned as a crashed
/// process would be: its tasks end, and Consul fails its check and ends its session after
/// the TTL (then another member takes over). NULL is ignored.
///
/// # Safety
/// `cluster` is NULL or a handle from `consul_ha_cluster_new`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_free(cluster: *mut ConsulHaCluster) {
    destroy(cluster);
}

/// The message of the last failed call on `cluster` ("" after a success); valid until the
/// handle's next call. NULL for a NULL handle.
///
/// # Safety
/// `cluster` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_error(cluster: *const ConsulHaCluster) -> *const c_char {
    // SAFETY: NULL or a live handle (the caller's contract).
    match unsafe { cluster.as_ref() } {
        Some(c) => c.error.as_ptr(),
        None => std::ptr::null(),
    }
}

/// Joins: registers the member, creates its session and starts heartbeat, election and
/// membership in the background. Waits at most `timeout_ms` (0: the handle's default).
///
/// # Safety
/// `cluster` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_start(
    cluster: *const ConsulHaCluster,
    timeout_ms: u32,
) -> ConsulHaStatus {
    on_handle(cluster, |c| {
        let mut running = c.running.lock().unwrap_or_else(|p| p.into_inner());
        if running.is_some() {
            return Err(Failure::invalid("the member is already started"));
        }
        let builder = Cluster::builder(c.client.clone(), c.config.clone());
        let started = block_on(timeout_or(timeout_ms, c.timeout), "start", async {
            builder.start().await.map_err(Failure::consul)
        })?;
        *running = Some(Arc::new(started));
        Ok(ConsulHaStatus::Ok)
    })
}

/// Leaves gracefully: releases leadership (another member takes over at once), destroys
/// the session and deregisters. A stopped member can be started again.
///
/// # Safety
/// `cluster` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_stop(
    cluster: *const ConsulHaCluster,
    timeout_ms: u32,
) -> ConsulHaStatus {
    on_handle(cluster, |c| {
        let member = c.running.lock().unwrap_or_else(|p| p.into_inner()).take();
        let Some(member) = member else {
            return Err(Failure::invalid("the member is not started"));
        };
        block_on(timeout_or(timeout_ms, c.timeout), "stop", async move {
            member.leave().await.map_err(Failure::consul)
        })?;
        Ok(ConsulHaStatus::Ok)
    })
}

/// Whether this member leads now (and its lease runs), in `*leader_out`.
///
/// # Safety
/// `cluster` is NULL or a live handle; `leader_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_is_leader(
    cluster: *const ConsulHaCluster,
    leader_out: *mut bool,
) -> ConsulHaStatus {
    on_handle(cluster, |c| {
        let out = out_arg(leader_out, "leader_out")?;
        *out = false;
        *out = c.running()?.is_leader();
        Ok(ConsulHaStatus::Ok)
    })
}

/// The leader as this member knows it, as JSON `{"node_id", "address", "fencing_token",
/// "session"}` in `*json_out`; `CONSUL_HA_STATUS_NOT_FOUND` while there is none.
///
/// # Safety
/// `cluster` is NULL or a live handle; `json_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_leader_info(
    cluster: *const ConsulHaCluster,
    json_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(cluster, |c| {
        *out_arg(json_out, "json_out")? = std::ptr::null_mut();
        let Some(l) = c.running()?.leader_info() else { return Ok(ConsulHaStatus::NotFound) };
        let v = json!({
            "node_id": l.node_id,
            "address": l.address,
            "fencing_token": l.fencing_token.0,
            "session": l.session.as_str(),
        });
        give(v.to_string().as_bytes(), json_out, std::ptr::null_mut())?;
        Ok(ConsulHaStatus::Ok)
    })
}

fn member_json(m: &Member) -> Value {
    let health = match m.health {
        Health::Passing => "passing",
        Health::Warning => "warning",
        Health::Critical => "critical",
        Health::Maintenance => "maintenance",
    };
    json!({"id": m.id, "address": m.address, "zone": m.zone, "weight": m.weight, "health": health})
}

/// The member that owns `key` (`key_len` bytes) on the ring of healthy members, as JSON
/// `{"id", "address", "zone", "weight", "health"}`; `CONSUL_HA_STATUS_NOT_FOUND` while the ring
/// is empty.
///
/// # Safety
/// `cluster` is NULL or a live handle; `key` NULL (length 0) or `key_len` readable bytes;
/// `json_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_node_for_key(
    cluster: *const ConsulHaCluster,
    key: *const u8,
    key_len: usize,
    json_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(cluster, |c| {
        *out_arg(json_out, "json_out")? = std::ptr::null_mut();
        let key = bytes_arg(key, key_len, "key")?;
        let Some(m) = c.running()?.node_for_key(key) else {
            return Ok(ConsulHaStatus::NotFound);
        };
        give(member_json(&m).to_string().as_bytes(), json_out, std::ptr::null_mut())?;
        Ok(ConsulHaStatus::Ok)
    })
}

/// Every member Consul lists for the service, healthy or not, as a JSON array of
/// `{"id", "address", "zone", "weight", "health"}`.
///
/// # Safety
/// `cluster` is NULL or a live handle; `json_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_cluster_nodes(
    cluster: *const ConsulHaCluster,
    json_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(cluster, |c| {
        *out_arg(json_out, "json_out")? = std::ptr::null_mut();
        let list: Vec<Value> = c.running()?.members().iter().map(member_json).collect();
        give(Value::from(list).to_string().as_bytes(), json_out, std::ptr::null_mut())?;
        Ok(ConsulHaStatus::Ok)
    })
}

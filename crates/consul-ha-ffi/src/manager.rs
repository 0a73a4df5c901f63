//! `ConsulHaManager`: the production manager (shards, replicas, routing, recovery) on a
//! started cluster member.

use std::ffi::c_char;
use std::sync::Mutex;
use std::time::Duration;

use prod_config::{ShardConfig, ShardManager, ShardManagerOptions};

use crate::boundary::{
    ConsulHaStatus, ErrorSlot, Failure, Handle, bytes_arg, create, destroy, give, on_handle,
    out_arg,
};
use crate::client::timeout_or;
use crate::cluster::ConsulHaCluster;
use crate::runtime::block_on;

/// How the shards are laid out. Zero numbers take the defaults.
#[repr(C)]
#[derive(Clone, Copy, Debug)]
pub struct ConsulHaManagerOptions {
    /// Number of shards (0: 16).
    pub shards: u32,
    /// Copies of each shard, primary included (0: 3).
    pub replicas: u32,
    /// How long a failed node may stay down before its copies are placed elsewhere, in ms
    /// (0: 10 000).
    pub rebalance_delay_ms: u32,
    /// Simulated copying: a new copy reports itself caught up after this many ms (0: 1000).
    /// This API has no data plane, so copies are never reported any other way.
    pub copy_time_ms: u32,
    /// Timeout of the start, in ms (0: the cluster handle's default).
    pub timeout_ms: u32,
}

/// The production manager of one member. Opaque.
pub struct ConsulHaManager {
    manager: Mutex<Option<ShardManager>>,
    error: ErrorSlot,
}

impl Handle for ConsulHaManager {
    fn error(&self) -> &ErrorSlot {
        &self.error
    }
}

/// Starts the production manager on the started member `cluster` (it keeps the member
/// alive; stop and free the member separately). The first manager of a service writes the
/// shard config to KV; later ones use KV's.
///
/// # Safety
/// `cluster` is NULL or a live, started handle; `options` NULL or valid options; `out` a
/// writable pointer; `error_out` NULL or a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_manager_start(
    cluster: *const ConsulHaCluster,
    options: *const ConsulHaManagerOptions,
    out: *mut *mut ConsulHaManager,
    error_out: *mut *mut c_char,
) -> ConsulHaStatus {
    create(out, error_out, || {
        // SAFETY: NULL or a live handle (the caller's contract).
        let c = unsafe { cluster.as_ref() }
            .ok_or_else(|| Failure::new(ConsulHaStatus::NullArgument, "cluster is NULL"))?;
        // SAFETY: NULL or valid options (the caller's contract).
        let o = unsafe { options.as_ref() }
            .ok_or_else(|| Failure::new(ConsulHaStatus::NullArgument, "options is NULL"))?;
        let (member, client, default_timeout) = c.parts()?;
        let replicas = if o.replicas == 0 { 3 } else { o.replicas };
        let config = ShardConfig {
            shards: if o.shards == 0 { 16 } else { o.shards },
            replication_factor: replicas,
            min_live: replicas.min(2),
            rebalance_delay: timeout_or(o.rebalance_delay_ms, Duration::from_secs(10)),
            ..ShardConfig::default()
        };
        config.validate().map_err(|e| Failure::invalid(e.to_string()))?;
        let mut opts = ShardManagerOptions::new(&member.config().service);
        opts.auto_catch_up = Some(timeout_or(o.copy_time_ms, Duration::from_secs(1)));
        let timeout = timeout_or(o.timeout_ms, default_timeout);
        let manager = block_on(timeout, "manager start", async move {
            ShardManager::start(member, client, config, opts).await.map_err(Failure::consul)
        })?;
        Ok(ConsulHaManager { manager: Mutex::new(Some(manager)), error: ErrorSlot::default() })
    })
}

/// Stops and frees a manager. NULL is ignored.
///
/// # Safety
/// `manager` is NULL or a handle from `consul_ha_manager_start`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_manager_free(manager: *mut ConsulHaManager) {
    destroy(manager);
}

/// The message of the last failed call on `manager` ("" after a success); valid until the
/// handle's next call. NULL for a NULL handle.
///
/// # Safety
/// `manager` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_manager_error(manager: *const ConsulHaManager) -> *const c_char {
    // SAFETY: NULL or a live handle (the caller's contract).
    match unsafe { manager.as_ref() } {
        Some(m) => m.error.as_ptr(),
        None => std::ptr::null(),
    }
}

fn with_manager<T>(m: &ConsulHaManager, f: impl FnOnce(&ShardManager) -> T) -> Result<T, Failure> {
    let guard = m.manager.lock().unwrap_or_else(|p| p.into_inner());
    guard.as_ref().map(f).ok_or_else(|| Failure::invalid("the manager is stopped"))
}

/// Where `key` goes, from the cached routing table, as JSON `{"shard", "primary",
/// "replicas": [[node, in_sync]…], "epoch", "version"}`; `CONSUL_HA_STATUS_NOT_FOUND` before
/// the first placement.
///
/// # Safety
/// `manager` is NULL or a live handle; `key` NULL (length 0) or `key_len` readable bytes;
/// `json_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_manager_route(
    manager: *const ConsulHaManager,
    key: *const u8,
    key_len: usize,
    json_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(manager, |m| {
        *out_arg(json_out, "json_out")? = std::ptr::null_mut();
        let key = bytes_arg(key, key_len, "key")?;
        let Some(route) = with_manager(m, |s| s.route(key))? else {
            return Ok(ConsulHaStatus::NotFound);
        };
        let text = serde_json::to_vec(&route).map_err(|e| Failure::invalid(e.to_string()))?;
        give(&text, json_out, std::ptr::null_mut())?;
        Ok(ConsulHaStatus::Ok)
    })
}

/// The health of every shard and node, as JSON `{"table_version", "config_version",
/// "healthy", "under_replicated", "unavailable", "shards", "nodes"}`.
///
/// # Safety
/// `manager` is NULL or a live handle; `json_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_manager_health(
    manager: *const ConsulHaManager,
    json_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(manager, |m| {
        *out_arg(json_out, "json_out")? = std::ptr::null_mut();
        let text = with_manager(m, |s| serde_json::to_vec(&s.health()))?
            .map_err(|e| Failure::invalid(e.to_string()))?;
        give(&text, json_out, std::ptr::null_mut())?;
        Ok(ConsulHaStatus::Ok)
    })
}

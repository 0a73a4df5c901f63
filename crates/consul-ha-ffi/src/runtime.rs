//! The background tokio runtime that owns all I/O, and the process's embedded sim.
//!
//! Both are created on first use. Blocking calls wait on the caller's thread with a
//! timeout; submitted calls run on the runtime's two worker threads.

use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_sim::{Sim, SimConfig};
use tokio::runtime::Runtime;

use crate::boundary::{ConsulHaStatus, Failure, Outcome};

static RUNTIME: Mutex<Option<Arc<Runtime>>> = Mutex::new(None);
static SIM: Mutex<Option<Sim>> = Mutex::new(None);

/// The runtime, started on first use (again after [`shutdown`]).
pub(crate) fn runtime() -> Outcome<Arc<Runtime>> {
    let mut slot = RUNTIME.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(rt) = slot.as_ref() {
        return Ok(rt.clone());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .thread_name("consul-ha-ffi")
        .enable_all()
        .build()
        .map_err(|e| {
            Failure::new(ConsulHaStatus::Internal, format!("cannot start a runtime: {e}"))
        })?;
    let rt = Arc::new(rt);
    *slot = Some(rt.clone());
    Ok(rt)
}

/// Runs `fut` to completion on the runtime, waiting at most `timeout` on this thread; on
/// timeout the future is dropped (the call is cancelled).
pub(crate) fn block_on<T>(
    timeout: Duration,
    what: &str,
    fut: impl Future<Output = Outcome<T>>,
) -> Outcome<T> {
    let rt = runtime()?;
    if tokio::runtime::Handle::try_current().is_ok() {
        return Err(Failure::invalid(format!(
            "{what}: a blocking call from inside an async runtime; use the submit/poll form"
        )));
    }
    rt.block_on(async {
        match tokio::time::timeout(timeout, fut).await {
            Ok(outcome) => outcome,
            Err(_) => Err(Failure::new(
                ConsulHaStatus::Timeout,
                format!("{what}: no answer within {} ms", timeout.as_millis()),
            )),
        }
    })
}

/// The process's embedded sim: every handle made with `simulate` talks to this one store,
/// so several cluster members in one process see each other. Session TTLs down to 1 s are
/// accepted (Consul's `session_ttl_min`, lowered as a dev agent may), so failover in a
/// test takes seconds.
pub(crate) fn sim() -> Outcome<Sim> {
    let rt = runtime()?;
    let mut slot = SIM.lock().unwrap_or_else(|p| p.into_inner());
    if let Some(sim) = slot.as_ref() {
        return Ok(sim.clone());
    }
    let _entered = rt.enter();
    let sim = Sim::new(SimConfig {
        node_name: "consul-ha-ffi".into(),
        session_ttl_min: Duration::from_secs(1),
        seed: seed(),
        ..SimConfig::default()
    });
    *slot = Some(sim.clone());
    Ok(sim)
}

/// A fresh seed per process, so session ids differ between runs.
fn seed() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u32(std::process::id());
    h.finish()
}

/// Drops the embedded sim and stops the runtime (waiting up to a second for its threads),
/// so a leak checker sees nothing left at exit. Handles still alive stop working until a
/// new call starts a new runtime; free them first.
#[unsafe(no_mangle)]
pub extern "C" fn consul_ha_shutdown() {
    let _ = std::panic::catch_unwind(|| {
        let sim = SIM.lock().unwrap_or_else(|p| p.into_inner()).take();
        let rt = RUNTIME.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(rt) = rt {
            // The sim's driver task must be dropped inside the runtime's context.
            {
                let _entered = rt.enter();
                drop(sim);
            }
            if let Ok(rt) = Arc::try_unwrap(rt) {
                rt.shutdown_timeout(Duration::from_secs(1));
            }
        }
    });
}

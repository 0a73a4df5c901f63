//! `ConsulHaClient`: KV, services, sessions and locks, blocking (with a timeout) or
//! submitted and polled.

use std::collections::HashMap;
use std::ffi::c_char;
use std::io::{Read, Write};
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use consul_api::Client;

use crate::boundary::{
    ConsulHaStatus, ErrorSlot, Failure, Handle, Outcome, bytes_arg, create, destroy, give,
    on_handle, opt_str_arg, out_arg, str_arg,
};
use crate::ops::{Op, Reply, session_ttl};
use crate::runtime::{block_on, runtime, sim};

static NEXT_SIM_CLIENT: AtomicU64 = AtomicU64::new(1);

/// A Consul client (or a client of the process's embedded sim). Opaque.
pub struct ConsulHaClient {
    client: Client,
    timeout: Duration,
    error: ErrorSlot,
    jobs: Arc<Jobs>,
}

impl Handle for ConsulHaClient {
    fn error(&self) -> &ErrorSlot {
        &self.error
    }
}

impl Drop for ConsulHaClient {
    fn drop(&mut self) {
        for (_, task) in self.jobs.lock().running.drain() {
            task.abort();
        }
    }
}

/// Submitted calls: running ones, finished ones waiting to be polled, and the pipe that
/// holds one byte per finished, unpolled call.
struct Jobs {
    next: AtomicU64,
    /// One lock for both maps, so a call is always in exactly one of them.
    state: Mutex<JobState>,
    reader: Mutex<std::io::PipeReader>,
    writer: Mutex<std::io::PipeWriter>,
}

#[derive(Default)]
struct JobState {
    running: HashMap<u64, tokio::task::JoinHandle<()>>,
    done: HashMap<u64, Outcome<Reply>>,
}

impl Jobs {
    fn lock(&self) -> std::sync::MutexGuard<'_, JobState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// A timeout argument in milliseconds: 0 means the handle's default.
pub(crate) fn timeout_or(ms: u32, default: Duration) -> Duration {
    if ms == 0 { default } else { Duration::from_millis(u64::from(ms)) }
}

/// Makes a client of the Consul agent at `consul_url` (NULL or "": `http://127.0.0.1:8500`),
/// or, with `simulate`, of the process's embedded sim (`consul_url` is then ignored).
/// `timeout_ms` is the default timeout of its calls (0: 10 000 ms). On failure `*out` is
/// NULL and `*error_out` (when not NULL) holds a message to free with `consul_ha_free`.
///
/// # Safety
/// `consul_url` is NULL or a NUL-terminated string; `out` points to a writable pointer;
/// `error_out` is NULL or points to a writable pointer.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_client_new(
    consul_url: *const c_char,
    timeout_ms: u32,
    simulate: bool,
    out: *mut *mut ConsulHaClient,
    error_out: *mut *mut c_char,
) -> ConsulHaStatus {
    create(out, error_out, || {
        let timeout = timeout_or(timeout_ms, Duration::from_secs(10));
        let client = if simulate {
            let n = NEXT_SIM_CLIENT.fetch_add(1, Ordering::Relaxed);
            sim()?.client(format!("ffi-client-{n}"))
        } else {
            let url = opt_str_arg(consul_url, "consul_url")?.unwrap_or("http://127.0.0.1:8500");
            http_client(url, timeout)?
        };
        let (reader, writer) = std::io::pipe()
            .map_err(|e| Failure::new(ConsulHaStatus::Internal, format!("pipe: {e}")))?;
        let jobs = Arc::new(Jobs {
            next: AtomicU64::new(1),
            state: Mutex::default(),
            reader: Mutex::new(reader),
            writer: Mutex::new(writer),
        });
        Ok(ConsulHaClient { client, timeout, error: ErrorSlot::default(), jobs })
    })
}

/// A client of the agent at `url`, built inside the runtime (its pool lives there).
pub(crate) fn http_client(url: &str, timeout: Duration) -> Outcome<Client> {
    let rt = runtime()?;
    let _entered = rt.enter();
    Client::builder()
        .address(url)
        .request_timeout(timeout)
        .build()
        .map_err(|e| Failure::invalid(format!("consul_url {url:?}: {e}")))
}

/// Frees a client; calls still submitted are cancelled. NULL is ignored.
///
/// # Safety
/// `client` is NULL or a handle from `consul_ha_client_new`, not used afterwards.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_client_free(client: *mut ConsulHaClient) {
    destroy(client);
}

/// The message of the last failed call on `client` ("" after a call that succeeded). The
/// string belongs to the handle and stays valid until its next call. NULL for a NULL handle.
///
/// # Safety
/// `client` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_client_error(client: *const ConsulHaClient) -> *const c_char {
    // SAFETY: NULL or a live handle (the caller's contract).
    match unsafe { client.as_ref() } {
        Some(c) => c.error.as_ptr(),
        None => std::ptr::null(),
    }
}

/// Runs `op` on `client`, waiting at most the timeout.
fn blocking(c: &ConsulHaClient, timeout_ms: u32, op: Op) -> Outcome<Reply> {
    let what = op.name();
    block_on(timeout_or(timeout_ms, c.timeout), what, op.run(c.client.clone()))
}

/// Reads `key`. `CONSUL_HA_STATUS_OK`: `*value_out` holds the value (free with `consul_ha_free`;
/// its length in `*len_out` when that is not NULL; values may contain NUL bytes).
/// `CONSUL_HA_STATUS_NOT_FOUND`: no such key, `*value_out` is NULL.
///
/// # Safety
/// `client` is NULL or a live handle; `key` a NUL-terminated string; `value_out` writable;
/// `len_out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_kv_get(
    client: *const ConsulHaClient,
    key: *const c_char,
    timeout_ms: u32,
    value_out: *mut *mut c_char,
    len_out: *mut usize,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        *out_arg(value_out, "value_out")? = std::ptr::null_mut();
        let op = Op::KvGet { key: str_arg(key, "key")?.to_string() };
        let (status, bytes) = blocking(c, timeout_ms, op)?;
        if status == ConsulHaStatus::Ok {
            give(&bytes, value_out, len_out)?;
        }
        Ok(status)
    })
}

/// Writes `value_len` bytes at `value` (NULL with length 0: empty) to `key`.
///
/// # Safety
/// `client` is NULL or a live handle; `key` a NUL-terminated string; `value` NULL or
/// `value_len` readable bytes.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_kv_put(
    client: *const ConsulHaClient,
    key: *const c_char,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let key = str_arg(key, "key")?.to_string();
        let value = bytes_arg(value, value_len, "value")?.to_vec();
        Ok(blocking(c, timeout_ms, Op::KvPut { key, value })?.0)
    })
}

/// Deletes `key` (deleting an absent key succeeds).
///
/// # Safety
/// `client` is NULL or a live handle; `key` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_kv_delete(
    client: *const ConsulHaClient,
    key: *const c_char,
    timeout_ms: u32,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let key = str_arg(key, "key")?.to_string();
        Ok(blocking(c, timeout_ms, Op::KvDelete { key })?.0)
    })
}

/// Registers an instance of service `name` at `address`:`port` with `n_tags` tags on the
/// agent. Its id, `<name>-<address>-<port>`, goes to `*id_out` (free with
/// `consul_ha_free`) when `id_out` is not NULL.
///
/// # Safety
/// `client` is NULL or a live handle; `name` and `address` NUL-terminated strings; `tags`
/// NULL (with `n_tags` 0) or `n_tags` NUL-terminated strings; `id_out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_register_service(
    client: *const ConsulHaClient,
    name: *const c_char,
    address: *const c_char,
    port: u16,
    tags: *const *const c_char,
    n_tags: usize,
    timeout_ms: u32,
    id_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let name = str_arg(name, "name")?.to_string();
        let address = str_arg(address, "address")?.to_string();
        if tags.is_null() && n_tags > 0 {
            return Err(Failure::new(ConsulHaStatus::NullArgument, "tags is NULL"));
        }
        let mut list = Vec::with_capacity(n_tags.min(1024));
        for i in 0..n_tags {
            // SAFETY: `tags` is non-null here and points to `n_tags` pointers (contract).
            let tag = unsafe { *tags.add(i) };
            list.push(str_arg(tag, &format!("tags[{i}]"))?.to_string());
        }
        let (status, id) =
            blocking(c, timeout_ms, Op::Register { name, address, port, tags: list })?;
        if !id_out.is_null() {
            give(&id, id_out, std::ptr::null_mut())?;
        }
        Ok(status)
    })
}

/// Deregisters the service instance `service_id` from the agent.
///
/// # Safety
/// `client` is NULL or a live handle; `service_id` a NUL-terminated string.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_deregister_service(
    client: *const ConsulHaClient,
    service_id: *const c_char,
    timeout_ms: u32,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let id = str_arg(service_id, "service_id")?.to_string();
        Ok(blocking(c, timeout_ms, Op::Deregister { id })?.0)
    })
}

/// The passing instances of service `name`, as a JSON array of objects with `id`, `name`,
/// `address`, `port`, `tags` and `node`, in `*json_out` (free with `consul_ha_free`).
///
/// # Safety
/// `client` is NULL or a live handle; `name` a NUL-terminated string; `json_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_discover_service(
    client: *const ConsulHaClient,
    name: *const c_char,
    timeout_ms: u32,
    json_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        *out_arg(json_out, "json_out")? = std::ptr::null_mut();
        let name = str_arg(name, "name")?.to_string();
        let (status, json) = blocking(c, timeout_ms, Op::Discover { name })?;
        give(&json, json_out, std::ptr::null_mut())?;
        Ok(status)
    })
}

/// Creates a session named `name` (NULL: unnamed) with a TTL of `ttl_seconds` (0: none;
/// Consul accepts 10–86400 s, the embedded sim from 1 s). Its id goes to `*id_out` (free
/// with `consul_ha_free`).
///
/// # Safety
/// `client` is NULL or a live handle; `name` NULL or a NUL-terminated string; `id_out`
/// writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_create_session(
    client: *const ConsulHaClient,
    name: *const c_char,
    ttl_seconds: f64,
    timeout_ms: u32,
    id_out: *mut *mut c_char,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        *out_arg(id_out, "id_out")? = std::ptr::null_mut();
        let name = opt_str_arg(name, "name")?.unwrap_or_default().to_string();
        let ttl = session_ttl(ttl_seconds)?;
        let (status, id) = blocking(c, timeout_ms, Op::CreateSession { name, ttl })?;
        give(&id, id_out, std::ptr::null_mut())?;
        Ok(status)
    })
}

/// Takes the lock on `key` for `session_id`, writing `value` (`value_len` bytes). Whether
/// it was taken goes to `*acquired_out` (false: another session holds it, or lock-delay).
///
/// # Safety
/// `client` is NULL or a live handle; `key` and `session_id` NUL-terminated strings;
/// `value` NULL or `value_len` readable bytes; `acquired_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_acquire_lock(
    client: *const ConsulHaClient,
    key: *const c_char,
    session_id: *const c_char,
    value: *const u8,
    value_len: usize,
    timeout_ms: u32,
    acquired_out: *mut bool,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let acquired = out_arg(acquired_out, "acquired_out")?;
        *acquired = false;
        let op = Op::Acquire {
            key: str_arg(key, "key")?.to_string(),
            session: str_arg(session_id, "session_id")?.to_string(),
            value: bytes_arg(value, value_len, "value")?.to_vec(),
        };
        let (status, reply) = blocking(c, timeout_ms, op)?;
        *acquired = reply == b"true";
        Ok(status)
    })
}

/// Releases the lock on `key` held by `session_id`. Whether it was released (false: the
/// session did not hold it) goes to `*released_out`.
///
/// # Safety
/// `client` is NULL or a live handle; `key` and `session_id` NUL-terminated strings;
/// `released_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_release_lock(
    client: *const ConsulHaClient,
    key: *const c_char,
    session_id: *const c_char,
    timeout_ms: u32,
    released_out: *mut bool,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let released = out_arg(released_out, "released_out")?;
        *released = false;
        let op = Op::Release {
            key: str_arg(key, "key")?.to_string(),
            session: str_arg(session_id, "session_id")?.to_string(),
        };
        let (status, reply) = blocking(c, timeout_ms, op)?;
        *released = reply == b"true";
        Ok(status)
    })
}

/// Starts call `op` in the background and returns at once with its ticket in `*ticket_out`;
/// collect the result with `consul_ha_client_poll`. `op` is one of `kv_get` (key),
/// `kv_put` (key, value), `kv_delete` (key), `register_service` (name, address, port,
/// tags…), `deregister_service` (id), `discover_service` (name), `create_session` (name,
/// ttl seconds), `acquire_lock` (key, session, value), `release_lock` (key, session).
/// Arguments are byte strings: `args[i]` with length `arg_lens[i]`, or, when `arg_lens`
/// is NULL, NUL-terminated. The call runs with the client's default timeout.
///
/// # Safety
/// `client` is NULL or a live handle; `op` a NUL-terminated string; `args` NULL (with
/// `n_args` 0) or `n_args` pointers as described; `arg_lens` NULL or `n_args` lengths;
/// `ticket_out` writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_client_submit(
    client: *const ConsulHaClient,
    op: *const c_char,
    args: *const *const u8,
    arg_lens: *const usize,
    n_args: usize,
    ticket_out: *mut u64,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        let ticket_out = out_arg(ticket_out, "ticket_out")?;
        *ticket_out = 0;
        let name = str_arg(op, "op")?;
        if args.is_null() && n_args > 0 {
            return Err(Failure::new(ConsulHaStatus::NullArgument, "args is NULL"));
        }
        let mut list: Vec<&[u8]> = Vec::with_capacity(n_args.min(1024));
        for i in 0..n_args {
            // SAFETY: `args` is non-null here and holds `n_args` pointers (contract).
            let p = unsafe { *args.add(i) };
            let arg = if arg_lens.is_null() {
                str_arg(p as *const c_char, &format!("args[{i}]"))?.as_bytes()
            } else {
                // SAFETY: `arg_lens` is non-null here and holds `n_args` lengths (contract).
                let len = unsafe { *arg_lens.add(i) };
                bytes_arg(p, len, &format!("args[{i}]"))?
            };
            list.push(arg);
        }
        let op = Op::parse(name, &list)?;
        let ticket = c.jobs.next.fetch_add(1, Ordering::Relaxed);
        let jobs = c.jobs.clone();
        let (client, timeout, what) = (c.client.clone(), c.timeout, op.name());
        let rt = runtime()?;
        let mut state = c.jobs.lock();
        let task = rt.spawn(async move {
            let outcome = match tokio::time::timeout(timeout, op.run(client)).await {
                Ok(o) => o,
                Err(_) => Err(Failure::new(
                    ConsulHaStatus::Timeout,
                    format!("{what}: no answer within {} ms", timeout.as_millis()),
                )),
            };
            // The byte first: a reader that sees it readable and polls too early gets
            // PENDING and the byte stays until the result is taken.
            let _ = jobs.writer.lock().unwrap_or_else(|p| p.into_inner()).write_all(&[1]);
            let mut state = jobs.lock();
            state.running.remove(&ticket);
            state.done.insert(ticket, outcome);
        });
        state.running.insert(ticket, task);
        *ticket_out = ticket;
        Ok(ConsulHaStatus::Ok)
    })
}

/// Collects submitted call `ticket`. `CONSUL_HA_STATUS_PENDING`: not finished, poll again. Any
/// other status is the call's own, as its blocking form returns it (its message in
/// `consul_ha_client_error`); `*result_out` then holds what it returns (the value, the
/// JSON, the id, or "true"/"false" for the locks; NULL when nothing), freed with
/// `consul_ha_free`, its length in `*len_out` when not NULL. A ticket is collected once.
///
/// # Safety
/// `client` is NULL or a live handle; `result_out` writable; `len_out` NULL or writable.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_client_poll(
    client: *const ConsulHaClient,
    ticket: u64,
    result_out: *mut *mut c_char,
    len_out: *mut usize,
) -> ConsulHaStatus {
    on_handle(client, |c| {
        *out_arg(result_out, "result_out")? = std::ptr::null_mut();
        let mut state = c.jobs.lock();
        let taken = state.done.remove(&ticket);
        let Some(outcome) = taken else {
            let finished = state.running.get(&ticket).map(|t| t.is_finished());
            return match finished {
                Some(false) => Ok(ConsulHaStatus::Pending),
                // A task leaves `running` itself when it ends normally, so this one panicked.
                Some(true) => {
                    state.running.remove(&ticket);
                    Err(Failure::new(ConsulHaStatus::Internal, "internal error: the call panicked"))
                }
                None => {
                    Err(Failure::invalid(format!("ticket {ticket} is not pending on this client")))
                }
            };
        };
        drop(state);
        // Its byte was written before the result was stored, so this read cannot block.
        let mut byte = [0u8; 1];
        let _ = c.jobs.reader.lock().unwrap_or_else(|p| p.into_inner()).read_exact(&mut byte);
        let (status, bytes) = outcome?;
        if status == ConsulHaStatus::Ok {
            give(&bytes, result_out, len_out)?;
        }
        Ok(status)
    })
}

/// A file descriptor that is readable while a submitted call of `client` has finished and
/// not been polled: wait on it with poll/epoll (or an event loop's fd watcher), then call
/// `consul_ha_client_poll`. Do not read or close it. -1 for a NULL handle.
///
/// # Safety
/// `client` is NULL or a live handle.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_client_fd(client: *const ConsulHaClient) -> i32 {
    // SAFETY: NULL or a live handle (the caller's contract).
    match unsafe { client.as_ref() } {
        Some(c) => c.jobs.reader.lock().unwrap_or_else(|p| p.into_inner()).as_raw_fd(),
        None => -1,
    }
}

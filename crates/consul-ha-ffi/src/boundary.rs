//! The boundary itself: status codes, the per-handle error message, argument checks, the
//! buffers the library hands out, and the `catch_unwind` every entry point goes through.

use std::ffi::{CStr, CString, c_char};
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Mutex;

/// What a call did. `CONSUL_HA_STATUS_OK` and `CONSUL_HA_STATUS_NOT_FOUND` are answers; every other
/// value is a failure whose message is in the handle's error (`consul_ha_*_error`).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConsulHaStatus {
    /// Done.
    Ok = 0,
    /// Done, and the thing asked for does not exist (absent key, no leader yet, …).
    NotFound = 1,
    /// A submitted call is still running: poll again later.
    Pending = 2,
    /// A required pointer argument was NULL.
    NullArgument = 10,
    /// A string argument was not UTF-8.
    InvalidUtf8 = 11,
    /// An argument was out of range or malformed, or the call does not fit the handle's
    /// state (e.g. `start` twice).
    InvalidArgument = 12,
    /// Consul (or the embedded sim) answered with an error, or could not be reached.
    Consul = 20,
    /// The call did not finish within its timeout; it was cancelled.
    Timeout = 21,
    /// A bug inside the library (a Rust panic, caught at the boundary).
    Internal = 30,
}

/// A failed call: its status and a message for the handle's error slot.
#[derive(Debug)]
pub(crate) struct Failure {
    pub(crate) status: ConsulHaStatus,
    pub(crate) message: String,
}

impl Failure {
    pub(crate) fn new(status: ConsulHaStatus, message: impl Into<String>) -> Failure {
        Failure { status, message: message.into() }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Failure {
        Failure::new(ConsulHaStatus::InvalidArgument, message)
    }

    pub(crate) fn consul(e: impl std::fmt::Display) -> Failure {
        Failure::new(ConsulHaStatus::Consul, e.to_string())
    }
}

pub(crate) type Outcome<T> = Result<T, Failure>;

/// Longest message kept in a handle, in bytes.
const MAX_MESSAGE: usize = 4096;

/// The last error of one handle, as a C string that stays valid until the next call on
/// the same handle.
#[derive(Debug, Default)]
pub(crate) struct ErrorSlot(Mutex<CString>);

impl ErrorSlot {
    fn set(&self, message: &str) {
        // Messages may quote the request (a 2 MiB key, say); the first few KiB say enough.
        let mut end = message.len().min(MAX_MESSAGE);
        while !message.is_char_boundary(end) {
            end -= 1;
        }
        let cut = if end < message.len() { "…" } else { "" };
        let text = format!("{}{cut}", &message[..end]).replace('\0', "\\0");
        let text = CString::new(text).unwrap_or_default();
        *self.0.lock().unwrap_or_else(|p| p.into_inner()) = text;
    }

    fn clear(&self) {
        self.set("");
    }

    pub(crate) fn as_ptr(&self) -> *const c_char {
        // The CString's heap buffer does not move while it stays in the slot.
        self.0.lock().unwrap_or_else(|p| p.into_inner()).as_ptr()
    }
}

/// A handle type: something with an error slot.
pub(crate) trait Handle {
    fn error(&self) -> &ErrorSlot;
}

/// Runs `f` behind `catch_unwind`, turning a panic into `CONSUL_HA_STATUS_INTERNAL`.
pub(crate) fn guard(f: impl FnOnce() -> Outcome<ConsulHaStatus>) -> Outcome<ConsulHaStatus> {
    match catch_unwind(AssertUnwindSafe(f)) {
        Ok(outcome) => outcome,
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "a panic".to_string());
            Err(Failure::new(ConsulHaStatus::Internal, format!("internal error: {what}")))
        }
    }
}

/// The entry point of every call on a handle: checks the handle for NULL, runs `f` behind
/// `catch_unwind`, and records the outcome in the handle's error slot.
pub(crate) fn on_handle<H: Handle>(
    handle: *const H,
    f: impl FnOnce(&H) -> Outcome<ConsulHaStatus>,
) -> ConsulHaStatus {
    // SAFETY: the caller passes NULL or a pointer returned by this library's `_new` that it
    // has not freed (the documented contract of every handle function); NULL is checked here.
    let Some(h) = (unsafe { handle.as_ref() }) else {
        return ConsulHaStatus::NullArgument;
    };
    match guard(|| f(h)) {
        Ok(status) => {
            h.error().clear();
            status
        }
        Err(failure) => {
            h.error().set(&failure.message);
            failure.status
        }
    }
}

/// A required C string argument named `name`.
pub(crate) fn str_arg<'a>(ptr: *const c_char, name: &str) -> Outcome<&'a str> {
    if ptr.is_null() {
        return Err(Failure::new(ConsulHaStatus::NullArgument, format!("{name} is NULL")));
    }
    // SAFETY: non-null, and the caller promises a NUL-terminated string that outlives the
    // call (the contract of every `const char *` parameter).
    let c = unsafe { CStr::from_ptr(ptr) };
    c.to_str()
        .map_err(|e| Failure::new(ConsulHaStatus::InvalidUtf8, format!("{name} is not UTF-8: {e}")))
}

/// An optional C string argument: NULL and "" are both `None`.
pub(crate) fn opt_str_arg<'a>(ptr: *const c_char, name: &str) -> Outcome<Option<&'a str>> {
    if ptr.is_null() {
        return Ok(None);
    }
    let s = str_arg(ptr, name)?;
    Ok(if s.is_empty() { None } else { Some(s) })
}

/// A byte-string argument (`ptr`, `len`); NULL is allowed only with `len == 0`.
pub(crate) fn bytes_arg<'a>(ptr: *const u8, len: usize, name: &str) -> Outcome<&'a [u8]> {
    if ptr.is_null() {
        return if len == 0 {
            Ok(&[])
        } else {
            Err(Failure::new(ConsulHaStatus::NullArgument, format!("{name} is NULL")))
        };
    }
    if len > isize::MAX as usize {
        return Err(Failure::invalid(format!("{name}: length {len} is too large")));
    }
    // SAFETY: non-null, and the caller promises `len` readable bytes that outlive the call.
    Ok(unsafe { std::slice::from_raw_parts(ptr, len) })
}

/// A required out-pointer named `name`.
pub(crate) fn out_arg<'a, T>(ptr: *mut T, name: &str) -> Outcome<&'a mut T> {
    // SAFETY: the caller passes NULL or a pointer to writable memory for one `T`.
    unsafe { ptr.as_mut() }
        .ok_or_else(|| Failure::new(ConsulHaStatus::NullArgument, format!("{name} is NULL")))
}

/// Bytes of the header in front of every buffer: its length.
const HEADER: usize = std::mem::size_of::<usize>();

/// Hands `bytes` to the caller as a NUL-terminated buffer (the bytes may contain NULs; the
/// length goes to `len_out` when that is not NULL). Freed by [`consul_ha_free`].
pub(crate) fn give(bytes: &[u8], out: *mut *mut c_char, len_out: *mut usize) -> Outcome<()> {
    let out = out_arg(out, "out")?;
    let mut buf = Vec::with_capacity(HEADER + bytes.len() + 1);
    buf.extend_from_slice(&bytes.len().to_ne_bytes());
    buf.extend_from_slice(bytes);
    buf.push(0);
    let boxed: Box<[u8]> = buf.into_boxed_slice();
    let base = Box::into_raw(boxed) as *mut u8;
    // SAFETY: `base` points to HEADER + len + 1 bytes, so `base + HEADER` is in bounds.
    *out = unsafe { base.add(HEADER) } as *mut c_char;
    // SAFETY: the caller passes NULL or a pointer to one writable `size_t`.
    if let Some(len) = unsafe { len_out.as_mut() } {
        *len = bytes.len();
    }
    Ok(())
}

/// Frees a buffer this library returned (through an `out` parameter or an `error_out`).
/// NULL is ignored.
///
/// # Safety
/// `buffer` is NULL or a buffer from this library not freed before; freeing anything
/// else, or freeing twice, is undefined behaviour.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn consul_ha_free(buffer: *mut c_char) {
    if buffer.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `buffer` came from `give`, so HEADER bytes before it hold the length and
        // the allocation is a Box<[u8]> of HEADER + len + 1 bytes starting there.
        unsafe {
            let base = (buffer as *mut u8).sub(HEADER);
            let mut len = [0u8; HEADER];
            std::ptr::copy_nonoverlapping(base, len.as_mut_ptr(), HEADER);
            let len = usize::from_ne_bytes(len);
            let slice = std::ptr::slice_from_raw_parts_mut(base, HEADER + len + 1);
            drop(Box::from_raw(slice));
        }
    }));
}

/// Writes the message of a failed constructor to `error_out` (when not NULL).
pub(crate) fn report_create_error(error_out: *mut *mut c_char, failure: &Failure) {
    if !error_out.is_null() {
        let _ = give(failure.message.as_bytes(), error_out, std::ptr::null_mut());
    }
}

/// The entry point of a constructor: runs `make` behind `catch_unwind`; on success writes
/// the new handle to `out`, on failure writes NULL there and the message to `error_out`.
pub(crate) fn create<H>(
    out: *mut *mut H,
    error_out: *mut *mut c_char,
    make: impl FnOnce() -> Outcome<H>,
) -> ConsulHaStatus {
    if !error_out.is_null() {
        // SAFETY: non-null; the caller passes a pointer to one writable `char *`.
        unsafe { *error_out = std::ptr::null_mut() };
    }
    let Ok(out) = out_arg(out, "out") else {
        report_create_error(error_out, &Failure::new(ConsulHaStatus::NullArgument, "out is NULL"));
        return ConsulHaStatus::NullArgument;
    };
    *out = std::ptr::null_mut();
    let mut made = None;
    let outcome = guard(|| {
        made = Some(make()?);
        Ok(ConsulHaStatus::Ok)
    });
    match (outcome, made) {
        (Ok(status), Some(h)) => {
            *out = Box::into_raw(Box::new(h));
            status
        }
        (Ok(_), None) => ConsulHaStatus::Internal,
        (Err(failure), _) => {
            report_create_error(error_out, &failure);
            failure.status
        }
    }
}

/// Frees a handle made by [`create`], behind `catch_unwind`. NULL is ignored.
pub(crate) fn destroy<H>(handle: *mut H) {
    if handle.is_null() {
        return;
    }
    let _ = catch_unwind(AssertUnwindSafe(|| {
        // SAFETY: `handle` came from `Box::into_raw` in `create` and is freed once (the
        // caller's contract).
        drop(unsafe { Box::from_raw(handle) });
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_buffer_round_trips_with_its_length_and_a_nul() {
        let mut out: *mut c_char = std::ptr::null_mut();
        let mut len = 0usize;
        give(b"a\0b", &mut out, &mut len).unwrap();
        assert_eq!(len, 3);
        // SAFETY: `out` is a fresh buffer of len + 1 bytes.
        let bytes = unsafe { std::slice::from_raw_parts(out as *const u8, len + 1) };
        assert_eq!(bytes, b"a\0b\0");
        // SAFETY: from `give`, freed once.
        unsafe { consul_ha_free(out) };
    }

    #[test]
    fn a_panic_becomes_a_status_and_a_message_in_the_handle() {
        struct H(ErrorSlot);
        impl Handle for H {
            fn error(&self) -> &ErrorSlot {
                &self.0
            }
        }
        let h = H(ErrorSlot::default());
        let status = on_handle(&h, |_| -> Outcome<ConsulHaStatus> { panic!("boom") });
        assert_eq!(status, ConsulHaStatus::Internal);
        // SAFETY: the slot's string is valid until the handle's next call.
        let msg = unsafe { CStr::from_ptr(h.0.as_ptr()) }.to_str().unwrap().to_string();
        assert_eq!(msg, "internal error: boom");
        assert_eq!(on_handle(&h, |_| Ok(ConsulHaStatus::Ok)), ConsulHaStatus::Ok);
        // SAFETY: as above.
        assert_eq!(unsafe { CStr::from_ptr(h.0.as_ptr()) }.to_bytes(), b"");
        assert_eq!(
            on_handle(std::ptr::null::<H>(), |_| Ok(ConsulHaStatus::Ok)),
            ConsulHaStatus::NullArgument
        );
    }

    #[test]
    fn long_messages_are_cut_at_a_char_boundary() {
        let slot = ErrorSlot::default();
        slot.set(&"é".repeat(5000));
        // SAFETY: the slot's string is valid until it is set again.
        let text = unsafe { CStr::from_ptr(slot.as_ptr()) }.to_str().unwrap().to_string();
        assert!(text.ends_with('…') && text.len() <= MAX_MESSAGE + 3, "{}", text.len());
    }

    #[test]
    fn bad_strings_are_named() {
        let bad = [0xffu8, 0];
        let e = str_arg(bad.as_ptr() as *const c_char, "key").unwrap_err();
        assert_eq!(e.status, ConsulHaStatus::InvalidUtf8);
        assert!(e.message.starts_with("key is not UTF-8"), "{}", e.message);
        let e = str_arg(std::ptr::null(), "name").unwrap_err();
        assert_eq!((e.status, e.message.as_str()), (ConsulHaStatus::NullArgument, "name is NULL"));
    }
}

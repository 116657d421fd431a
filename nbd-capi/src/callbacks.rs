//! The C caller's callbacks, owned.
//!
//! Each libnbd callback struct (function, user data, free function) is
//! taken over by a [`Cb`] the moment the wrapper receives it: its `Drop`
//! calls `free(user_data)` exactly once, whatever happens next (the call
//! refused, the command retired, the handle closed with it in flight,
//! a panic). Where a command has a mid-command callback and a completion
//! callback, [`CmdCallbacks`] declares them in that order, so the
//! mid-command free runs before the completion free, as libnbd(3) says.
//!
//! Callbacks are invoked with the handle's lock held, as libnbd does; a
//! callback that calls back into the same handle gets EDEADLK instead of a
//! deadlock (see `handle::HeldMark`).

use crate::consts::*;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

/// The three words every libnbd callback struct has, with the function's
/// type as a parameter.
pub struct Cb<F: Copy> {
    callback: Option<F>,
    user_data: *mut c_void,
    free: Option<unsafe extern "C" fn(*mut c_void)>,
}

// SAFETY: libnbd lets any thread drive a handle, so the caller's callbacks
// and user data are called from whichever thread holds the handle's lock.
unsafe impl<F: Copy> Send for Cb<F> {}

impl<F: Copy> Cb<F> {
    /// Whether there is neither a function nor a free function: nothing
    /// to remember.
    pub fn is_empty(&self) -> bool {
        self.callback.is_none() && self.free.is_none()
    }
    pub fn has_callback(&self) -> bool {
        self.callback.is_some()
    }
}

impl<F: Copy> Drop for Cb<F> {
    fn drop(&mut self) {
        if let Some(free) = self.free.take() {
            // SAFETY: the caller gave us this function for this user data,
            // to be called once when we no longer need the callback.
            unsafe { free(self.user_data) };
        }
    }
}

macro_rules! take {
    ($name:ident, $c:ty, $f:ty) => {
        pub type $name = Cb<$f>;
        impl From<$c> for Cb<$f> {
            fn from(c: $c) -> Self {
                Cb {
                    callback: c.callback,
                    user_data: c.user_data,
                    free: c.free,
                }
            }
        }
    };
}

type CompletionFn = unsafe extern "C" fn(*mut c_void, *mut c_int) -> c_int;
type ChunkFn =
    unsafe extern "C" fn(*mut c_void, *const c_void, usize, u64, c_uint, *mut c_int) -> c_int;
type ExtentFn =
    unsafe extern "C" fn(*mut c_void, *const c_char, u64, *mut u32, usize, *mut c_int) -> c_int;
type Extent64Fn = unsafe extern "C" fn(
    *mut c_void,
    *const c_char,
    u64,
    *mut nbd_extent,
    usize,
    *mut c_int,
) -> c_int;
type ListFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;
type ContextFn = unsafe extern "C" fn(*mut c_void, *const c_char) -> c_int;
type DebugFn = unsafe extern "C" fn(*mut c_void, *const c_char, *const c_char) -> c_int;

take!(Completion, nbd_completion_callback, CompletionFn);
take!(Chunk, nbd_chunk_callback, ChunkFn);
take!(Extent, nbd_extent_callback, ExtentFn);
take!(Extent64, nbd_extent64_callback, Extent64Fn);
take!(List, nbd_list_callback, ListFn);
take!(Context, nbd_context_callback, ContextFn);
take!(Debug, nbd_debug_callback, DebugFn);

impl Completion {
    /// A command or option is finished; `error` is 0 or its errno and the
    /// callback may change it by returning -1. Returns the callback's
    /// result (1 retires the command), or 0 without a callback.
    pub fn call(&mut self, error: &mut c_int) -> c_int {
        match self.callback {
            // SAFETY: the caller's function with its own user data.
            Some(f) => unsafe { f(self.user_data, error) },
            None => 0,
        }
    }
}

impl Chunk {
    /// One piece of a structured read: `data` is the part of the caller's
    /// buffer the chunk filled.
    pub fn call(
        &mut self,
        data: *const u8,
        len: usize,
        offset: u64,
        status: c_int,
        error: &mut c_int,
    ) -> c_int {
        match self.callback {
            // SAFETY: data points into the caller's buffer, len bytes.
            Some(f) => unsafe {
                f(
                    self.user_data,
                    data.cast(),
                    len,
                    offset,
                    status as c_uint,
                    error,
                )
            },
            None => 0,
        }
    }
}

impl Extent {
    pub fn call(
        &mut self,
        context: &CStr,
        offset: u64,
        entries: &mut [u32],
        error: &mut c_int,
    ) -> c_int {
        match self.callback {
            // SAFETY: entries is a live array of entries.len() u32s.
            Some(f) => unsafe {
                f(
                    self.user_data,
                    context.as_ptr(),
                    offset,
                    entries.as_mut_ptr(),
                    entries.len(),
                    error,
                )
            },
            None => 0,
        }
    }
}

impl Extent64 {
    pub fn call(
        &mut self,
        context: &CStr,
        offset: u64,
        entries: &mut [nbd_extent],
        error: &mut c_int,
    ) -> c_int {
        match self.callback {
            // SAFETY: entries is a live array of entries.len() extents.
            Some(f) => unsafe {
                f(
                    self.user_data,
                    context.as_ptr(),
                    offset,
                    entries.as_mut_ptr(),
                    entries.len(),
                    error,
                )
            },
            None => 0,
        }
    }
}

/// List and debug callbacks have the same type: two strings (name and
/// description, or context and message).
impl List {
    pub fn call(&mut self, name: &CStr, description: &CStr) -> c_int {
        match self.callback {
            // SAFETY: two live C strings.
            Some(f) => unsafe { f(self.user_data, name.as_ptr(), description.as_ptr()) },
            None => 0,
        }
    }
}

impl Context {
    pub fn call(&mut self, name: &CStr) -> c_int {
        match self.callback {
            // SAFETY: a live C string.
            Some(f) => unsafe { f(self.user_data, name.as_ptr()) },
            None => 0,
        }
    }
}

/// The mid-command callback of a command, if it has one.
pub enum Mid {
    None,
    Chunk(Chunk),
    Extent(Extent),
    /// nbd_block_status_64's callback (libnbd 1.18).
    Extent64(Extent64),
}

/// A command's callbacks and what they need to know about it. Field order
/// is free order: the mid-command callback's free runs before the
/// completion's.
pub struct CmdCallbacks {
    pub mid: Mid,
    pub completion: Completion,
    /// The caller's read buffer and the command's offset, so a chunk can be
    /// handed over as the part of the buffer it filled.
    pub buf: *const u8,
    pub len: usize,
    pub offset: u64,
    /// The first error a mid-command callback reported (0: none).
    pub error: c_int,
    /// Whether any chunk was reported (a simple reply to a structured
    /// read is reported as one data chunk at completion).
    pub saw_chunk: bool,
}

// SAFETY: buf is only read by the thread holding the handle's lock, while
// the command is in flight (libnbd's contract keeps the buffer alive).
unsafe impl Send for CmdCallbacks {}

impl CmdCallbacks {
    /// Whether nothing needs remembering: no function and no free.
    pub fn is_empty(&self) -> bool {
        matches!(self.mid, Mid::None) && self.completion.is_empty()
    }
}

/// The callbacks of the option under way in option mode (list or context
/// callback, then the completion), freed in that order.
pub struct OptCallbacks {
    pub list: Option<List>,
    pub context: Option<Context>,
    pub completion: Completion,
}

/// A completion callback that does nothing (sync calls).
pub fn no_completion() -> Completion {
    Completion {
        callback: None,
        user_data: std::ptr::null_mut(),
        free: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    static FREED: AtomicUsize = AtomicUsize::new(0);
    static ORDER: parking_lot::Mutex<Vec<usize>> = parking_lot::Mutex::new(Vec::new());

    unsafe extern "C" fn free_fn(p: *mut c_void) {
        FREED.fetch_add(1, Ordering::SeqCst);
        ORDER.lock().push(p as usize);
    }

    #[test]
    fn free_once_and_in_order() {
        let before = FREED.load(Ordering::SeqCst);
        let cbs = CmdCallbacks {
            mid: Mid::Chunk(
                nbd_chunk_callback {
                    callback: None,
                    user_data: std::ptr::dangling_mut::<c_void>(),
                    free: Some(free_fn),
                }
                .into(),
            ),
            completion: nbd_completion_callback {
                callback: None,
                user_data: 16 as *mut c_void,
                free: Some(free_fn),
            }
            .into(),
            buf: std::ptr::null(),
            len: 0,
            offset: 0,
            error: 0,
            saw_chunk: false,
        };
        assert!(!cbs.is_empty());
        ORDER.lock().clear();
        drop(cbs);
        assert_eq!(FREED.load(Ordering::SeqCst) - before, 2);
        assert_eq!(*ORDER.lock(), vec![1, 16]);
        let empty = CmdCallbacks {
            mid: Mid::None,
            completion: no_completion(),
            buf: std::ptr::null(),
            len: 0,
            offset: 0,
            error: 0,
            saw_chunk: false,
        };
        assert!(empty.is_empty());
    }
}

//! Buffers for the large READ and WRITE payloads of one connection.
//!
//! Why not `Vec<u8>`: glibc's malloc serves a large allocation with its
//! own mapping only until the first such mapping is freed; it then raises
//! its mmap threshold (up to 32 MiB) and serves the next ones from its
//! heaps, which it rarely gives back to the kernel. After a burst of
//! 32 MiB requests the server stayed hundreds of MiB resident.
//!
//! So a large payload lives in a [`PayloadBuf`], an anonymous mapping of
//! its own that is unmapped (its memory returned at once) when dropped.
//! Each connection keeps a [`PayloadPool`] of them, so that a busy
//! connection reuses its buffers instead of mapping and faulting in new
//! pages per request. The pool keeps at most
//! [`MAX_CONN_IN_FLIGHT`](nbd_core::limits::MAX_CONN_IN_FLIGHT) bytes,
//! and buffers in use are bounded by the same figure (the connection
//! holds no more than that in flight), so a connection holds about that
//! much payload memory at most; all of it is unmapped when the
//! connection ends.

use std::io;
use std::ops::{Deref, DerefMut};

use parking_lot::Mutex;

/// Payloads up to this size use the worker's own small `Vec`; larger
/// ones a [`PayloadBuf`] from the connection's pool.
pub const SMALL_PAYLOAD: usize = 256 * 1024;

/// A zero-filled anonymous mapping, unmapped on drop.
pub struct PayloadBuf {
    ptr: *mut u8,
    cap: usize,
}

// SAFETY: the mapping is owned by this value alone (no aliasing pointer
// is kept), so it may move to and be used from another thread.
unsafe impl Send for PayloadBuf {}
unsafe impl Sync for PayloadBuf {}

impl PayloadBuf {
    /// Maps at least `len` bytes (rounded up to whole pages).
    pub fn new(len: usize) -> io::Result<PayloadBuf> {
        // SAFETY: sysconf has no memory-safety preconditions.
        let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) }.max(4096) as usize;
        let cap = len.max(1).div_ceil(page) * page;
        // SAFETY: a fresh private anonymous mapping; the result is checked.
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                cap,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(PayloadBuf { ptr: p.cast(), cap })
    }

    pub fn capacity(&self) -> usize {
        self.cap
    }
}

impl Deref for PayloadBuf {
    type Target = [u8];
    fn deref(&self) -> &[u8] {
        // SAFETY: ptr is a live mapping of cap readable bytes.
        unsafe { std::slice::from_raw_parts(self.ptr, self.cap) }
    }
}

impl DerefMut for PayloadBuf {
    fn deref_mut(&mut self) -> &mut [u8] {
        // SAFETY: ptr is a live mapping of cap writable bytes, borrowed
        // uniquely through &mut self.
        unsafe { std::slice::from_raw_parts_mut(self.ptr, self.cap) }
    }
}

impl Drop for PayloadBuf {
    fn drop(&mut self) {
        // SAFETY: the mapping made in new(), unmapped once.
        unsafe {
            libc::munmap(self.ptr.cast(), self.cap);
        }
    }
}

/// The idle large buffers of one connection, at most `max_bytes` of them.
pub struct PayloadPool {
    idle: Mutex<Vec<PayloadBuf>>,
    max_bytes: usize,
}

impl PayloadPool {
    pub fn new(max_bytes: usize) -> PayloadPool {
        PayloadPool {
            idle: Mutex::new(Vec::new()),
            max_bytes,
        }
    }

    /// A buffer of at least `len` bytes: the smallest idle one that is
    /// large enough, else a new one. When none is large enough, the idle
    /// ones are unmapped first, so that idle and used buffers together
    /// stay near the connection's in-flight limit.
    pub fn take(&self, len: usize) -> io::Result<PayloadBuf> {
        let mut idle = self.idle.lock();
        let best = idle
            .iter()
            .enumerate()
            .filter(|(_, b)| b.capacity() >= len)
            .min_by_key(|(_, b)| b.capacity())
            .map(|(i, _)| i);
        if let Some(i) = best {
            return Ok(idle.swap_remove(i));
        }
        let old = std::mem::take(&mut *idle);
        drop(idle);
        drop(old);
        PayloadBuf::new(len)
    }

    /// Returns a buffer for reuse; unmapped if the pool is full.
    pub fn give(&self, b: PayloadBuf) {
        let mut idle = self.idle.lock();
        let held: usize = idle.iter().map(PayloadBuf::capacity).sum();
        if held + b.capacity() <= self.max_bytes {
            idle.push(b);
        }
    }

    /// Bytes kept idle now.
    pub fn idle_bytes(&self) -> usize {
        self.idle.lock().iter().map(PayloadBuf::capacity).sum()
    }
}

/// A buffer borrowed from a pool for one request, given back on drop.
pub struct Pooled<'a> {
    pool: &'a PayloadPool,
    buf: Option<PayloadBuf>,
}

impl<'a> Pooled<'a> {
    pub fn new(pool: &'a PayloadPool) -> Pooled<'a> {
        Pooled { pool, buf: None }
    }

    /// The first `len` bytes of a buffer taken from the pool.
    pub fn take(&mut self, len: usize) -> io::Result<&mut [u8]> {
        let b = self.pool.take(len)?;
        Ok(&mut self.buf.insert(b)[..len])
    }
}

impl Drop for Pooled<'_> {
    fn drop(&mut self) {
        if let Some(b) = self.buf.take() {
            self.pool.give(b);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_zeroed_writable_and_reused() {
        let pool = PayloadPool::new(8 << 20);
        let mut a = pool.take(3 << 20).unwrap();
        assert!(a.capacity() >= 3 << 20);
        assert!(a.iter().all(|&b| b == 0));
        a[12345] = 7;
        let cap = a.capacity();
        pool.give(a);
        assert_eq!(pool.idle_bytes(), cap);
        // Reused: the same pages, with what was written.
        let b = pool.take(1 << 20).unwrap();
        assert_eq!((b.capacity(), b[12345]), (cap, 7));
        assert_eq!(pool.idle_bytes(), 0);
        pool.give(b);
        // Too small for a bigger request: the idle ones are dropped.
        let c = pool.take(5 << 20).unwrap();
        assert_eq!(pool.idle_bytes(), 0);
        pool.give(c);
        // The pool keeps no more than its limit.
        let d = PayloadBuf::new(4 << 20).unwrap();
        pool.give(d);
        assert_eq!(pool.idle_bytes(), 5 << 20);
    }

    #[test]
    fn pooled_gives_back_on_drop() {
        let pool = PayloadPool::new(4 << 20);
        {
            let mut p = Pooled::new(&pool);
            let s = p.take(1 << 20).unwrap();
            assert_eq!(s.len(), 1 << 20);
            s.fill(1);
        }
        assert_eq!(pool.idle_bytes(), 1 << 20);
    }
}

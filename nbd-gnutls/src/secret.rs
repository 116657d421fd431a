//! Key material that is wiped when we are done with it.
//!
//! GnuTLS copies the keys it is given (`gnutls_psk_set_*_credentials`
//! decode and keep their own copy), so ours can be zeroed right after the
//! call instead of lingering in freed heap memory until something else
//! overwrites it. [`Zeroizing`] does that on drop, the way the `zeroize`
//! crate does, without adding a dependency: volatile writes, which the
//! compiler may not remove as dead stores before a free, then a compiler
//! fence so later code is not moved before them.

use std::ops::{Deref, DerefMut};
use std::sync::atomic::{compiler_fence, Ordering};

/// Zeroes `buf` with writes the optimiser must keep.
pub fn wipe(buf: &mut [u8]) {
    for b in buf.iter_mut() {
        // SAFETY: `b` is a valid, aligned, exclusive reference to a u8.
        unsafe { std::ptr::write_volatile(b, 0) };
    }
    compiler_fence(Ordering::SeqCst);
}

/// Storage that can be wiped in full.
pub trait Wipe {
    fn wipe(&mut self);
}

impl Wipe for Vec<u8> {
    /// The whole allocation, spare capacity included (a truncated secret
    /// would otherwise survive past `len`), then the length drops to 0.
    fn wipe(&mut self) {
        let cap = self.capacity();
        let p = self.as_mut_ptr();
        for i in 0..cap {
            // SAFETY: `p..p + cap` is this Vec's own allocation; writing a
            // u8 to any byte of it is valid whatever was there.
            unsafe { std::ptr::write_volatile(p.add(i), 0) };
        }
        compiler_fence(Ordering::SeqCst);
        self.clear();
    }
}

impl Wipe for &mut [u8] {
    fn wipe(&mut self) {
        wipe(self);
    }
}

impl<const N: usize> Wipe for [u8; N] {
    fn wipe(&mut self) {
        wipe(self);
    }
}

/// A value whose bytes are zeroed when it is dropped.
pub struct Zeroizing<T: Wipe>(T);

impl<T: Wipe> Zeroizing<T> {
    pub fn new(v: T) -> Self {
        Zeroizing(v)
    }
}

impl<T: Wipe> Drop for Zeroizing<T> {
    fn drop(&mut self) {
        self.0.wipe();
    }
}

impl<T: Wipe> Deref for Zeroizing<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Wipe> DerefMut for Zeroizing<T> {
    fn deref_mut(&mut self) -> &mut T {
        &mut self.0
    }
}

/// Never print a secret by accident.
impl<T: Wipe> std::fmt::Debug for Zeroizing<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Zeroizing(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drop_zeroes_a_borrowed_buffer() {
        let mut buf = *b"alice:0011aabbccddeeff";
        {
            let z = Zeroizing::new(&mut buf[..]);
            assert_eq!(&z[..6], b"alice:");
        }
        assert_eq!(buf, [0u8; 22]);
    }

    #[test]
    fn vec_wipe_covers_spare_capacity() {
        let mut v = Vec::with_capacity(64);
        v.extend_from_slice(&[0xa5u8; 48]);
        v.truncate(16); // 32 secret bytes now sit beyond len
        v.wipe();
        assert!(v.is_empty());
        assert!(v.capacity() >= 48);
        // SAFETY: the first 48 bytes were initialised above (and zeroed
        // since); u8 has no invalid values.
        unsafe { v.set_len(48) };
        assert!(v.iter().all(|&b| b == 0));
    }

    #[test]
    fn array_and_deref() {
        let mut z = Zeroizing::new([7u8; 8]);
        z[0] = 1;
        assert_eq!(z[..2], [1, 7]);
        z.wipe();
        assert_eq!(*z, [0u8; 8]);
        assert_eq!(format!("{z:?}"), "Zeroizing(..)");
    }

    #[test]
    fn wipe_slice() {
        let mut b = [0xffu8; 5];
        wipe(&mut b[1..4]);
        assert_eq!(b, [0xff, 0, 0, 0, 0xff]);
    }
}

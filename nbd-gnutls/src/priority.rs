//! The GnuTLS priority strings both sides use unless told otherwise.
//!
//! GnuTLS's `NORMAL` lists TLS 1.3's ciphers as AES-256-GCM, then
//! ChaCha20-Poly1305, then AES-128-GCM. A certificate session gets the
//! first. A PSK session cannot: GnuTLS's pre-shared keys are SHA-256 keys,
//! and TLS 1.3 pairs a PSK only with a cipher suite of the same hash, which
//! rules out AES-256-GCM (SHA-384) and leaves ChaCha20-Poly1305. On a CPU
//! with AES instructions that is the slow choice: GnuTLS's own benchmark
//! (`gnutls-cli --benchmark-ciphers`) gave 4.17 GB/s for AES-128-GCM and
//! 0.51 GB/s for ChaCha20-Poly1305 on the machine of BENCHMARKS.md, and
//! libnbd and nbdkit end up with ChaCha20. So where the CPU has them, our
//! default PSK priority moves ChaCha20-Poly1305 after AES-128-GCM; it
//! stays in the list for peers that offer nothing else. Without AES
//! instructions ChaCha20 is the faster cipher and `NORMAL`'s order stands.
//! A priority the user sets (nbd_set_tls_priority) is used as given,
//! with the PSK key exchanges added ([`psk_with`]).

use std::ffi::{CStr, CString};

/// The priority of certificate sessions, and the base of PSK ones.
pub const DEFAULT: &CStr = c"NORMAL:-VERS-SSL3.0";

/// What a PSK session adds to its base priority: the PSK key exchanges.
pub const PSK_KEY_EXCHANGES: &str = ":+ECDHE-PSK:+DHE-PSK:+PSK";

/// Moves ChaCha20-Poly1305 to the end of the cipher list (GnuTLS appends
/// an algorithm that `+` adds back after `-` removed it).
const CHACHA_LAST: &str = ":-CHACHA20-POLY1305:+CHACHA20-POLY1305";

/// Whether this CPU has the instructions that make AES-GCM fast (AES and
/// carry-less multiplication).
pub fn cpu_has_fast_aes() -> bool {
    #[cfg(target_arch = "x86_64")]
    {
        std::arch::is_x86_feature_detected!("aes")
            && std::arch::is_x86_feature_detected!("pclmulqdq")
    }
    #[cfg(target_arch = "aarch64")]
    {
        std::arch::is_aarch64_feature_detected!("aes")
            && std::arch::is_aarch64_feature_detected!("pmull")
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        false
    }
}

/// The default priority of a PSK session: [`DEFAULT`] with the PSK key
/// exchanges and, on a CPU with AES instructions, AES-128-GCM ahead of
/// ChaCha20-Poly1305.
pub fn psk_default() -> CString {
    psk_default_for(cpu_has_fast_aes())
}

fn psk_default_for(fast_aes: bool) -> CString {
    let mut s = psk_with(DEFAULT).into_bytes();
    if fast_aes {
        s.extend_from_slice(CHACHA_LAST.as_bytes());
    }
    CString::new(s).expect("no NUL inside a CStr")
}

/// A PSK session's priority on a base the user chose: `base` with the
/// PSK key exchanges, nothing reordered.
pub fn psk_with(base: &CStr) -> CString {
    let mut s = base.to_bytes().to_vec();
    s.extend_from_slice(PSK_KEY_EXCHANGES.as_bytes());
    CString::new(s).expect("no NUL inside a CStr")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::psk_pair_with;

    #[test]
    fn only_the_default_is_reordered_and_only_with_fast_aes() {
        assert_eq!(
            psk_default_for(false).to_str().unwrap(),
            "NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK"
        );
        assert_eq!(
            psk_default_for(true).to_str().unwrap(),
            "NORMAL:-VERS-SSL3.0:+ECDHE-PSK:+DHE-PSK:+PSK:-CHACHA20-POLY1305:+CHACHA20-POLY1305"
        );
        assert_eq!(
            psk_with(c"SECURE256").to_str().unwrap(),
            "SECURE256:+ECDHE-PSK:+DHE-PSK:+PSK"
        );
    }

    #[test]
    fn psk_sessions_negotiate_the_cipher_the_priority_puts_first() {
        // Both ends on the reordered priority: AES-128-GCM; both on
        // NORMAL's order: ChaCha20-Poly1305 (what libnbd and nbdkit get).
        let fast = psk_default_for(true);
        let (c, s) = psk_pair_with(&fast, &fast);
        assert!(c.contains("AES-128-GCM"), "{c}");
        assert!(s.contains("AES-128-GCM"), "{s}");
        let normal = psk_default_for(false);
        let (c, _) = psk_pair_with(&normal, &normal);
        assert!(c.contains("CHACHA20-POLY1305"), "{c}");
        // Our server with a client on NORMAL's order: GnuTLS follows the
        // client's preference, so such a pair keeps ChaCha20-Poly1305.
        let (c, _) = psk_pair_with(&normal, &fast);
        assert!(c.contains("CHACHA20-POLY1305"), "{c}");
    }
}

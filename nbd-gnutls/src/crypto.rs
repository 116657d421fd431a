//! GnuTLS's crypto primitives, for disk encryption (the luks filter):
//! digests, PBKDF2 and block ciphers (AES in CBC and XTS mode) used sector
//! by sector, each with its own IV.

use std::os::raw::{c_int, c_uint, c_void};

use crate::error::{check, Error};
use crate::{
    gnutls_cipher_decrypt, gnutls_cipher_deinit, gnutls_cipher_encrypt, gnutls_cipher_init,
    gnutls_cipher_set_iv, gnutls_datum_t, gnutls_hash_fast, gnutls_hash_get_len, gnutls_pbkdf2,
};

/// A digest, also the MAC PBKDF2 uses (GnuTLS numbers both alike).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Digest {
    Sha1,
    Ripemd160,
    Sha224,
    Sha256,
    Sha384,
    Sha512,
}

impl Digest {
    /// The digest LUKS and cryptsetup call `name` ("sha256", ...).
    pub fn by_name(name: &str) -> Option<Digest> {
        Some(match name.to_ascii_lowercase().as_str() {
            "sha1" => Digest::Sha1,
            "ripemd160" => Digest::Ripemd160,
            "sha224" => Digest::Sha224,
            "sha256" => Digest::Sha256,
            "sha384" => Digest::Sha384,
            "sha512" => Digest::Sha512,
            _ => return None,
        })
    }

    /// gnutls_digest_algorithm_t (and gnutls_mac_algorithm_t).
    fn id(self) -> c_int {
        match self {
            Digest::Sha1 => 3,
            Digest::Ripemd160 => 4,
            Digest::Sha256 => 6,
            Digest::Sha384 => 7,
            Digest::Sha512 => 8,
            Digest::Sha224 => 9,
        }
    }

    /// The length of a digest, in bytes.
    pub fn size(self) -> usize {
        // SAFETY: a pure function of an integer.
        unsafe { gnutls_hash_get_len(self.id()) as usize }
    }

    /// The digest of `data`.
    pub fn hash(self, data: &[u8]) -> Result<Vec<u8>, Error> {
        let mut out = vec![0u8; self.size()];
        // SAFETY: `data` is readable for its length; `out` holds a digest.
        let r = unsafe {
            gnutls_hash_fast(
                self.id(),
                data.as_ptr().cast(),
                data.len(),
                out.as_mut_ptr().cast(),
            )
        };
        check("gnutls_hash_fast", r)?;
        Ok(out)
    }

    /// PBKDF2 with HMAC over this digest: fills `out` from `password`,
    /// `salt` and `iterations`.
    pub fn pbkdf2(
        self,
        password: &[u8],
        salt: &[u8],
        iterations: u32,
        out: &mut [u8],
    ) -> Result<(), Error> {
        let key = datum(password);
        let salt = datum(salt);
        // SAFETY: the datums point at live slices GnuTLS only reads;
        // `out` is writable for its length.
        let r = unsafe {
            gnutls_pbkdf2(
                self.id(),
                &key,
                &salt,
                iterations as c_uint,
                out.as_mut_ptr().cast(),
                out.len(),
            )
        };
        check("gnutls_pbkdf2", r).map(|_| ())
    }
}

/// A read-only view of `b` as a gnutls_datum_t.
fn datum(b: &[u8]) -> gnutls_datum_t {
    gnutls_datum_t {
        data: b.as_ptr() as *mut u8,
        size: b.len() as c_uint,
    }
}

/// A block cipher and its mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CipherKind {
    Aes128Cbc,
    Aes192Cbc,
    Aes256Cbc,
    Aes128Xts,
    Aes256Xts,
}

impl CipherKind {
    /// gnutls_cipher_algorithm_t.
    fn id(self) -> c_int {
        match self {
            CipherKind::Aes128Cbc => 4,
            CipherKind::Aes256Cbc => 5,
            CipherKind::Aes192Cbc => 9,
            CipherKind::Aes128Xts => 32,
            CipherKind::Aes256Xts => 33,
        }
    }

    /// AES in CBC mode with a key of `key_bytes`.
    pub fn aes_cbc(key_bytes: usize) -> Option<CipherKind> {
        match key_bytes {
            16 => Some(CipherKind::Aes128Cbc),
            24 => Some(CipherKind::Aes192Cbc),
            32 => Some(CipherKind::Aes256Cbc),
            _ => None,
        }
    }

    /// AES in XTS mode with a key (both halves) of `key_bytes`.
    pub fn aes_xts(key_bytes: usize) -> Option<CipherKind> {
        match key_bytes {
            32 => Some(CipherKind::Aes128Xts),
            64 => Some(CipherKind::Aes256Xts),
            _ => None,
        }
    }
}

/// A cipher with its key, for one thread at a time. Each unit (a disk
/// sector) is encrypted or decrypted in place after `set_iv`.
pub struct Cipher {
    hd: *mut c_void,
}

// SAFETY: the handle is owned and used through `&mut self` only.
unsafe impl Send for Cipher {}

impl Cipher {
    pub fn new(kind: CipherKind, key: &[u8]) -> Result<Cipher, Error> {
        let key = datum(key);
        let zero_iv = [0u8; 16];
        let iv = datum(&zero_iv);
        let mut hd = std::ptr::null_mut();
        // SAFETY: GnuTLS copies the key and IV it reads from live slices.
        let r = unsafe { gnutls_cipher_init(&mut hd, kind.id(), &key, &iv) };
        check("gnutls_cipher_init", r)?;
        Ok(Cipher { hd })
    }

    /// Starts a new unit with the initialisation vector `iv`.
    pub fn set_iv(&mut self, iv: &[u8]) {
        // SAFETY: GnuTLS copies `iv`, readable for its length.
        unsafe { gnutls_cipher_set_iv(self.hd, iv.as_ptr() as *mut c_void, iv.len()) }
    }

    pub fn encrypt(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        // SAFETY: `buf` is read and written in place for its length.
        let r = unsafe { gnutls_cipher_encrypt(self.hd, buf.as_mut_ptr().cast(), buf.len()) };
        check("gnutls_cipher_encrypt", r).map(|_| ())
    }

    pub fn decrypt(&mut self, buf: &mut [u8]) -> Result<(), Error> {
        // SAFETY: as in `encrypt`.
        let r = unsafe { gnutls_cipher_decrypt(self.hd, buf.as_mut_ptr().cast(), buf.len()) };
        check("gnutls_cipher_decrypt", r).map(|_| ())
    }
}

impl Drop for Cipher {
    fn drop(&mut self) {
        // SAFETY: a handle from gnutls_cipher_init, freed once.
        unsafe { gnutls_cipher_deinit(self.hd) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(b: &[u8]) -> String {
        b.iter().map(|x| format!("{x:02x}")).collect()
    }

    #[test]
    fn known_answers() {
        // FIPS 180-2's "abc".
        assert_eq!(
            hex(&Digest::Sha256.hash(b"abc").unwrap()),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        // RFC 6070, PBKDF2-HMAC-SHA1, 2 iterations.
        let mut out = [0u8; 20];
        Digest::Sha1
            .pbkdf2(b"password", b"salt", 2, &mut out)
            .unwrap();
        assert_eq!(hex(&out), "ea6c014dc72d6f8ccd1ed92ace1d41f0d8de8957");
    }

    #[test]
    fn cipher_round_trip_depends_on_the_iv() {
        let key: Vec<u8> = (0..64).collect();
        let mut c = Cipher::new(CipherKind::Aes256Xts, &key).unwrap();
        let plain = [7u8; 512];
        let mut a = plain;
        c.set_iv(&[1u8; 16]);
        c.encrypt(&mut a).unwrap();
        let mut b = plain;
        c.set_iv(&[2u8; 16]);
        c.encrypt(&mut b).unwrap();
        assert_ne!(a, b);
        assert_ne!(a, plain);
        c.set_iv(&[1u8; 16]);
        c.decrypt(&mut a).unwrap();
        assert_eq!(a, plain);
    }
}

//! The luks filter (nbdkit-luks-filter(1)): the layer below is a LUKSv1
//! encrypted disk; the client sees the decrypted payload, and what it
//! writes is encrypted on its way down.
//!
//! When a connection opens, the header is read and each enabled key slot
//! is tried with `passphrase=`: PBKDF2 of the passphrase with the slot's
//! salt gives the key of the slot's key material; that material,
//! decrypted and merged back from its anti-forensic stripes, is a
//! candidate master key, which is right when its own PBKDF2 digest is the
//! header's. The payload is then encrypted sector by sector (512 bytes)
//! with the master key, each sector's IV made from its number counted
//! from the payload's start: `aes-xts-plain64`, `aes-cbc-essiv:HASH`,
//! `aes-cbc-plain64`, `aes-cbc-plain` and `aes-xts-plain`. The crypto is
//! the system GnuTLS's (nbd-gnutls). The header and key material are
//! hidden: the size is the size below less the payload offset.

use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};
use nbd_gnutls::crypto::{Cipher, CipherKind, Digest};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::password::read_password;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "luks",
    params: &[(
        "passphrase",
        "the passphrase: SECRET, +FILE, -FD, or - to ask on the terminal",
    )],
    open: |p, _| {
        let v = p
            .take("passphrase")
            .ok_or_else(|| "LUKS \"passphrase\" parameter is missing".to_string())?;
        let passphrase = read_password(&v).map_err(|e| p.err(e))?;
        Ok(Arc::new(Luks { passphrase }))
    },
};

const SECTOR: u64 = 512;
const MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
const HEADER_SIZE: usize = 592;
const SLOTS: usize = 8;
const SLOT_ENABLED: u32 = 0x00ac_71f3;
const DIGEST_SIZE: usize = 20;

struct Luks {
    passphrase: Vec<u8>,
}

/// How each sector's initialisation vector is made from its number.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum IvGen {
    /// The number's low 32 bits, little-endian.
    Plain,
    /// The number, 64-bit little-endian.
    Plain64,
    /// The 64-bit number encrypted (AES, one block) with the digest of
    /// the key as key.
    Essiv(Digest),
}

/// The payload's cipher, from the header's cipher name and mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Scheme {
    kind: CipherKind,
    ivgen: IvGen,
}

/// A key and its scheme: what encrypts sectors.
struct Volume {
    scheme: Scheme,
    key: Vec<u8>,
    /// The ESSIV key (the digest of `key`), with `IvGen::Essiv`.
    essiv_key: Option<Vec<u8>>,
}

impl Volume {
    fn new(scheme: Scheme, key: Vec<u8>) -> Result<Volume> {
        let essiv_key = match scheme.ivgen {
            IvGen::Essiv(d) => Some(d.hash(&key).map_err(crypto)?),
            _ => None,
        };
        Ok(Volume {
            scheme,
            key,
            essiv_key,
        })
    }

    /// Encrypts (or decrypts) `buf`, whole sectors, the first being
    /// number `sector`.
    fn crypt(&self, buf: &mut [u8], sector: u64, encrypt: bool) -> Result<()> {
        let mut c = Cipher::new(self.scheme.kind, &self.key).map_err(crypto)?;
        let mut essiv = match &self.essiv_key {
            Some(k) => {
                let kind = CipherKind::aes_cbc(k.len())
                    .ok_or_else(|| luks_err("unsupported ESSIV digest size"))?;
                Some(Cipher::new(kind, k).map_err(crypto)?)
            }
            None => None,
        };
        for (i, s) in buf.chunks_mut(SECTOR as usize).enumerate() {
            let n = sector + i as u64;
            let mut iv = [0u8; 16];
            match self.scheme.ivgen {
                IvGen::Plain => iv[..4].copy_from_slice(&(n as u32).to_le_bytes()),
                IvGen::Plain64 | IvGen::Essiv(_) => iv[..8].copy_from_slice(&n.to_le_bytes()),
            }
            if let Some(e) = essiv.as_mut() {
                // CBC over one block with a zero IV is the block cipher.
                e.set_iv(&[0u8; 16]);
                e.encrypt(&mut iv).map_err(crypto)?;
            }
            c.set_iv(&iv);
            if encrypt {
                c.encrypt(s).map_err(crypto)?;
            } else {
                c.decrypt(s).map_err(crypto)?;
            }
        }
        Ok(())
    }
}

fn crypto(e: nbd_gnutls::Error) -> Error {
    Error::new(libc::EIO, format!("luks: {e}"))
}

fn luks_err(msg: impl Into<String>) -> Error {
    Error::new(libc::EINVAL, msg.into())
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// A NUL-padded string field of the header.
fn text(b: &[u8]) -> String {
    let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
    String::from_utf8_lossy(&b[..end]).into_owned()
}

/// The scheme of cipher `name` in `mode` with keys of `key_bytes`.
fn scheme(name: &str, mode: &str, key_bytes: usize) -> Result<Scheme> {
    if name != "aes" {
        return Err(luks_err(format!("unknown LUKS cipher: {name}")));
    }
    let (chain, iv) = mode.split_once('-').unwrap_or((mode, ""));
    // "plain64:sha256", as qemu-img writes it, names a digest that plain
    // IVs do not use.
    let ivgen = match iv.split_once(':').unwrap_or((iv, "")) {
        ("plain", _) => IvGen::Plain,
        ("plain64", _) => IvGen::Plain64,
        ("essiv", hash) => IvGen::Essiv(
            Digest::by_name(hash).ok_or_else(|| luks_err(format!("unknown LUKS hash: {hash}")))?,
        ),
        _ => return Err(luks_err(format!("unknown LUKS IV generator: {mode}"))),
    };
    let kind = match chain {
        "cbc" => CipherKind::aes_cbc(key_bytes),
        "xts" => CipherKind::aes_xts(key_bytes),
        _ => return Err(luks_err(format!("unknown LUKS cipher mode: {mode}"))),
    }
    .ok_or_else(|| {
        luks_err(format!(
            "unsupported LUKS key size {} bits for {name}-{mode}",
            key_bytes * 8
        ))
    })?;
    Ok(Scheme { kind, ivgen })
}

/// The anti-forensic merge (LUKS's AF-merge): the key spread over
/// `stripes` stripes of `material` is folded back with `digest`.
fn af_merge(material: &[u8], key_bytes: usize, stripes: usize, digest: Digest) -> Result<Vec<u8>> {
    let mut d = vec![0u8; key_bytes];
    for (i, stripe) in material.chunks(key_bytes).take(stripes).enumerate() {
        d.iter_mut().zip(stripe).for_each(|(a, b)| *a ^= b);
        if i + 1 < stripes {
            d = diffuse(&d, digest)?;
        }
    }
    Ok(d)
}

/// Each digest-sized piece of `buf` is replaced by the digest of its
/// number (32-bit big-endian) and itself, cut to its length.
fn diffuse(buf: &[u8], digest: Digest) -> Result<Vec<u8>> {
    let mut out = Vec::with_capacity(buf.len());
    for (j, piece) in buf.chunks(digest.size()).enumerate() {
        let mut input = (j as u32).to_be_bytes().to_vec();
        input.extend_from_slice(piece);
        let h = digest.hash(&input).map_err(crypto)?;
        out.extend_from_slice(&h[..piece.len()]);
    }
    Ok(out)
}

/// Reads the header below and unlocks the master key with `passphrase`;
/// returns the volume and the payload's offset in bytes.
fn unlock(next: &dyn Backend, passphrase: &[u8]) -> Result<(Volume, u64)> {
    let size = next.size()?;
    let not_luks = || luks_err("this disk does not contain a LUKS header");
    if size < HEADER_SIZE as u64 {
        return Err(not_luks());
    }
    let mut h = vec![0u8; HEADER_SIZE];
    next.pread(&mut h, 0)?;
    if &h[..6] != MAGIC {
        return Err(not_luks());
    }
    let version = u16::from_be_bytes([h[6], h[7]]);
    if version != 1 {
        return Err(luks_err(format!(
            "this disk contains a LUKS version {version} header, \
             but this filter only supports LUKSv1"
        )));
    }
    let hash_name = text(&h[72..104]);
    let digest = Digest::by_name(&hash_name)
        .ok_or_else(|| luks_err(format!("unknown LUKS hash: {hash_name}")))?;
    let payload = be32(&h, 104) as u64 * SECTOR;
    let key_bytes = be32(&h, 108) as usize;
    if payload > size {
        return Err(luks_err(
            "bad LUKSv1 header: payload offset points beyond the end of the disk",
        ));
    }
    let scheme = scheme(&text(&h[8..40]), &text(&h[40..72]), key_bytes)?;
    let mk_digest = &h[112..132];
    let mk_salt = &h[132..164];
    let mk_iter = be32(&h, 164);

    for slot in 0..SLOTS {
        let s = &h[208 + slot * 48..208 + (slot + 1) * 48];
        if be32(s, 0) != SLOT_ENABLED {
            continue;
        }
        let iterations = be32(s, 4);
        let salt = &s[8..40];
        let material_at = be32(s, 40) as u64 * SECTOR;
        let stripes = be32(s, 44) as usize;
        let len = (key_bytes * stripes).div_ceil(SECTOR as usize) * SECTOR as usize;
        if stripes == 0 || material_at + len as u64 > size {
            return Err(luks_err(format!(
                "bad LUKSv1 header: key slot {slot} points beyond the end of the disk"
            )));
        }
        // The slot's key, from the passphrase.
        let mut slot_key = vec![0u8; key_bytes];
        digest
            .pbkdf2(passphrase, salt, iterations, &mut slot_key)
            .map_err(crypto)?;
        let mut material = vec![0u8; len];
        next.pread(&mut material, material_at)?;
        Volume::new(scheme, slot_key)?.crypt(&mut material, 0, false)?;
        let master = af_merge(&material, key_bytes, stripes, digest)?;
        let mut check = [0u8; DIGEST_SIZE];
        digest
            .pbkdf2(&master, mk_salt, mk_iter, &mut check)
            .map_err(crypto)?;
        if check == mk_digest {
            return Ok((Volume::new(scheme, master)?, payload));
        }
    }
    Err(luks_err(
        "LUKS passphrase is not correct, no key slot could be unlocked",
    ))
}

impl Filter for Luks {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(Handle {
            luks: self,
            volume: Mutex::new(None),
            rmw: Mutex::new(()),
        }))
    }
}

/// The filter opened for one connection.
struct Handle {
    luks: Arc<Luks>,
    /// The unlocked volume and the payload's offset, once prepared.
    volume: Mutex<Option<(Arc<Volume>, u64)>>,
    /// Held by writes that do not cover whole sectors: the read, change
    /// and write of a sector is not interleaved with another's.
    rmw: Mutex<()>,
}

impl Handle {
    fn volume(&self) -> Result<(Arc<Volume>, u64)> {
        self.volume
            .lock()
            .clone()
            .ok_or_else(|| Error::new(libc::EIO, "luks: not prepared"))
    }

    /// Reads and decrypts the whole sectors from `first` covering `buf`.
    fn read_sectors(&self, next: &dyn Backend, buf: &mut [u8], first: u64) -> Result<()> {
        let (v, payload) = self.volume()?;
        next.pread(buf, payload + first * SECTOR)?;
        v.crypt(buf, first, false)
    }

    /// Encrypts and writes whole sectors from `first`.
    fn write_sectors(&self, next: &dyn Backend, buf: &[u8], first: u64, fua: bool) -> Result<()> {
        let (v, payload) = self.volume()?;
        let mut enc = buf.to_vec();
        v.crypt(&mut enc, first, true)?;
        next.pwrite(&enc, payload + first * SECTOR, fua)
    }

    /// Writes `buf` at `offset` of the payload, through whole sectors.
    fn write(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        if offset.is_multiple_of(SECTOR) && (buf.len() as u64).is_multiple_of(SECTOR) {
            return self.write_sectors(next, buf, offset / SECTOR, fua);
        }
        let first = offset / SECTOR;
        let end = (offset + buf.len() as u64).div_ceil(SECTOR);
        let _one_at_a_time = self.rmw.lock();
        let mut whole = vec![0u8; ((end - first) * SECTOR) as usize];
        self.read_sectors(next, &mut whole, first)?;
        let at = (offset - first * SECTOR) as usize;
        whole[at..at + buf.len()].copy_from_slice(buf);
        self.write_sectors(next, &whole, first, fua)
    }
}

impl FilterHandle for Handle {
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        let (v, payload) = unlock(next, &self.luks.passphrase)?;
        *self.volume.lock() = Some((Arc::new(v), payload));
        Ok(())
    }

    answers!(
        true: can_zero, can_cache;
        false: can_trim, can_fast_zero, can_extents;
    );

    fn size(&self, next: &dyn Backend) -> Result<u64> {
        let (_, payload) = self.volume()?;
        Ok(next.size()?.saturating_sub(payload))
    }

    fn block_size(&self, next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        let s = SECTOR as u32;
        Ok(Some(match next.block_size()? {
            None => (s, s, u32::MAX),
            Some((min, pref, max)) => (min.max(s), pref.max(s), max),
        }))
    }

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        if offset.is_multiple_of(SECTOR) && (buf.len() as u64).is_multiple_of(SECTOR) {
            return self.read_sectors(next, buf, offset / SECTOR);
        }
        let first = offset / SECTOR;
        let end = (offset + buf.len() as u64).div_ceil(SECTOR);
        let mut whole = vec![0u8; ((end - first) * SECTOR) as usize];
        self.read_sectors(next, &mut whole, first)?;
        let at = (offset - first * SECTOR) as usize;
        let n = buf.len();
        buf.copy_from_slice(&whole[at..at + n]);
        Ok(())
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.write(next, buf, offset, fua)
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "luks: zeroing is not fast"));
        }
        // Zeros are written encrypted, like any data, 1M at a time.
        let end = offset + count as u64;
        let mut pos = offset;
        while pos < end {
            let n = (end - pos).min(1 << 20);
            self.write(next, &vec![0u8; n as usize], pos, flags.fua)?;
            pos += n;
        }
        Ok(())
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        if !next.can_cache()? {
            return Ok(());
        }
        let (_, payload) = self.volume()?;
        next.cache(count, offset + payload)
    }

    fn extents(&self, _: &dyn Backend, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // Below, every sector of the payload is ciphertext: data.
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemes_from_the_header() {
        let s = scheme("aes", "xts-plain64", 64).unwrap();
        assert_eq!(s.kind, CipherKind::Aes256Xts);
        assert_eq!(s.ivgen, IvGen::Plain64);
        let s = scheme("aes", "cbc-essiv:sha256", 32).unwrap();
        assert_eq!(s.kind, CipherKind::Aes256Cbc);
        assert_eq!(s.ivgen, IvGen::Essiv(Digest::Sha256));
        assert!(scheme("twofish", "xts-plain64", 64).is_err());
        assert!(scheme("aes", "xts-plain64", 24).is_err());
        assert!(scheme("aes", "cbc-benbi", 32).is_err());
        let s = scheme("aes", "cbc-plain64:sha256", 16).unwrap();
        assert_eq!((s.kind, s.ivgen), (CipherKind::Aes128Cbc, IvGen::Plain64));
    }

    #[test]
    fn af_merge_of_one_stripe_is_the_stripe() {
        let k: Vec<u8> = (0..32).collect();
        assert_eq!(af_merge(&k, 32, 1, Digest::Sha256).unwrap(), k);
        // Two stripes: diffuse(s0) xor s1, so s1 = diffuse(s0) gives 0.
        let s0 = vec![5u8; 40];
        let mut m = s0.clone();
        m.extend(diffuse(&s0, Digest::Sha1).unwrap());
        assert_eq!(af_merge(&m, 40, 2, Digest::Sha1).unwrap(), vec![0u8; 40]);
    }
}

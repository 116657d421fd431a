//! The memory plugin: a RAM disk (nbdkit-memory-plugin(1)).
//!
//! `allocator=sparse` (the default) and `allocator=zstd`: the sparse
//! allocator below. We have no zstd compression: `zstd` is served by the
//! sparse allocator, uncompressed (the same disk, only without the memory
//! saving). `allocator=malloc[,mlock=true]`: one contiguous zeroed
//! allocation of the whole size, reported as data in block status;
//! `mlock=true` locks it in RAM with mlock(2) and fails at start-up, with
//! the system's reason, if that is not allowed. As in nbdkit, `mlock` is
//! an option of the allocator's value, not a parameter of its own.
//!
//! Sparse storage is a set of 32 KiB pages allocated on first write, so
//! `memory 1T` costs nothing until written. Pages live in 64 shards (page
//! number modulo 64, so sequential I/O spreads over all shards), each a
//! hash map behind its own reader-writer lock: parallel requests rarely
//! touch the same lock. Trim and zero free whole pages; extents report
//! missing pages as HOLE|ZERO, and pages present but all zero as ZERO (as
//! nbdkit's sparse array does).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};
use std::sync::Arc;

use parking_lot::RwLock;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::params::{parse_size, Params};

use super::PluginSpec;
use crate::chain::Plugin;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "memory",
    magic: Some("size"),
    params: &[
        ("size", "the size of the RAM disk"),
        (
            "allocator",
            "how the RAM is allocated: sparse, malloc[,mlock=true] or zstd",
        ),
    ],
    open: |p, _| open(p),
};

/// The plugin with the allocator its parameters ask for.
fn open(p: &mut Params) -> std::result::Result<Arc<dyn Plugin>, String> {
    let size = p
        .take("size")
        .ok_or("memory: the size parameter is required (eg. size=1G)")?;
    let size = parse_size(&size).map_err(|e| format!("memory: {e}"))?;
    let alloc = match p.take("allocator") {
        Some(a) => parse_allocator(&a).map_err(|e| format!("memory: {e}"))?,
        None => Allocator::Sparse,
    };
    Ok(match alloc {
        Allocator::Sparse => Arc::new(Memory::new(size)),
        Allocator::Malloc { mlock } => Arc::new(MallocDisk::new(size, mlock)?),
    })
}

#[derive(Debug, PartialEq, Eq)]
enum Allocator {
    Sparse,
    Malloc { mlock: bool },
}

/// `NAME[,KEY=VALUE...]`: `sparse`, `zstd` (served as sparse) or
/// `malloc[,mlock=BOOL]`.
fn parse_allocator(v: &str) -> std::result::Result<Allocator, String> {
    let mut it = v.split(',');
    let name = it.next().unwrap_or("");
    let opts: Vec<&str> = it.collect();
    match name {
        "sparse" | "zstd" => {
            if opts.is_empty() {
                Ok(Allocator::Sparse)
            } else {
                Err(format!(
                    "allocator={name} does not take extra parameters: {v}"
                ))
            }
        }
        "malloc" => {
            let mut mlock = false;
            for o in opts {
                match o.split_once('=') {
                    Some(("mlock", b)) => {
                        mlock = crate::params::parse_bool(b)
                            .map_err(|e| format!("allocator=malloc: mlock: {e}"))?
                    }
                    _ => return Err(format!("allocator=malloc: unknown parameter '{o}'")),
                }
            }
            Ok(Allocator::Malloc { mlock })
        }
        _ => Err(format!("unknown allocator \"{v}\"")),
    }
}

const PAGE_SHIFT: u32 = 15;
const PAGE: usize = 1 << PAGE_SHIFT;
const SHARDS: usize = 64;

/// Page numbers are already well spread: a multiplicative hash suffices.
#[derive(Default)]
struct PageHasher(u64);

impl Hasher for PageHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 ^ *b as u64).wrapping_mul(0x100_0000_01b3);
        }
    }
    fn write_u64(&mut self, n: u64) {
        self.0 = n.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

/// A page is shared with readers in flight (zero-copy reads hold a
/// reference while the reply is being sent); a write to a page that is
/// being sent copies it first (`Arc::make_mut`).
type Page = Arc<[u8; PAGE]>;
type Shard = RwLock<HashMap<u64, Page, BuildHasherDefault<PageHasher>>>;

static ZERO_PAGE: [u8; PAGE] = [0; PAGE];

pub struct Memory {
    size: u64,
    shards: Box<[Shard]>,
}

fn is_zero(b: &[u8]) -> bool {
    // Word at a time: the compiler vectorises this well.
    let mut it = b.chunks_exact(16);
    let words = it
        .by_ref()
        .all(|c| u128::from_ne_bytes(c.try_into().unwrap_or([1; 16])) == 0);
    words && it.remainder().iter().all(|&x| x == 0)
}

impl Memory {
    pub fn new(size: u64) -> Memory {
        let shards = (0..SHARDS)
            .map(|_| RwLock::new(HashMap::default()))
            .collect();
        Memory { size, shards }
    }

    fn shard(&self, page: u64) -> (&Shard, u64) {
        (
            &self.shards[(page % SHARDS as u64) as usize],
            page / SHARDS as u64,
        )
    }

    /// Calls `f(page, offset in page, range in buf)` for each page piece of
    /// `len` bytes at `offset`.
    fn for_pages(offset: u64, len: usize, mut f: impl FnMut(u64, usize, std::ops::Range<usize>)) {
        let mut done = 0usize;
        while done < len {
            let pos = offset + done as u64;
            let page = pos >> PAGE_SHIFT;
            let in_page = (pos & (PAGE as u64 - 1)) as usize;
            let n = (PAGE - in_page).min(len - done);
            f(page, in_page, done..done + n);
            done += n;
        }
    }

    /// Writes `buf` at `offset`, keeping every page it touches even when
    /// its bytes are zero: the data plugin's explicit bytes, which nbdkit
    /// stores (they are then not a hole in block status).
    pub(crate) fn store(&self, buf: &[u8], offset: u64) {
        Self::for_pages(offset, buf.len(), |page, in_page, r| {
            let (shard, key) = self.shard(page);
            let mut m = shard.write();
            let p = m.entry(key).or_insert_with(|| Arc::new([0u8; PAGE]));
            Arc::make_mut(p)[in_page..in_page + r.len()].copy_from_slice(&buf[r]);
        });
    }

    /// Zeroes `len` bytes at `offset`, freeing pages that become all zero.
    pub(crate) fn clear_range(&self, offset: u64, len: u64) {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(1 << 30);
            self.clear(n as u32, offset + done);
            done += n;
        }
    }

    fn clear(&self, count: u32, offset: u64) {
        Self::for_pages(offset, count as usize, |page, in_page, r| {
            let (shard, key) = self.shard(page);
            let mut m = shard.write();
            if r.len() == PAGE {
                m.remove(&key);
            } else if let Some(p) = m.get_mut(&key) {
                let p = Arc::make_mut(p);
                p[in_page..in_page + r.len()].fill(0);
                if is_zero(&p[..]) {
                    m.remove(&key);
                }
            }
        });
    }
}

impl Backend for Memory {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    supports!(
        can_write,
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_fast_zero,
        can_multi_conn,
        can_extents,
        can_cache
    );

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        Self::for_pages(offset, buf.len(), |page, in_page, r| {
            let (shard, key) = self.shard(page);
            let m = shard.read();
            match m.get(&key) {
                Some(p) => buf[r.clone()].copy_from_slice(&p[in_page..in_page + r.len()]),
                None => buf[r].fill(0),
            }
        });
        Ok(())
    }

    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        const GROUP: usize = 16;
        let mut held: [Option<Page>; GROUP] = Default::default();
        let mut ranges = [(0usize, 0usize); GROUP];
        let len = count as usize;
        let mut done = 0usize;
        while done < len {
            let mut n = 0;
            while n < GROUP && done < len {
                let pos = offset + done as u64;
                let page = pos >> PAGE_SHIFT;
                let in_page = (pos & (PAGE as u64 - 1)) as usize;
                let k = (PAGE - in_page).min(len - done);
                let (shard, key) = self.shard(page);
                held[n] = shard.read().get(&key).cloned();
                ranges[n] = (in_page, k);
                n += 1;
                done += k;
            }
            let slices: [&[u8]; GROUP] = std::array::from_fn(|i| {
                let (at, k) = ranges[i];
                match (i < n, &held[i]) {
                    (false, _) => &[][..],
                    (true, Some(p)) => &p[at..at + k],
                    (true, None) => &ZERO_PAGE[..k],
                }
            });
            if !send(&slices[..n]) {
                break;
            }
            held.iter_mut().for_each(|h| *h = None);
        }
        Some(Ok(()))
    }

    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        Self::for_pages(offset, buf.len(), |page, in_page, r| {
            let (shard, key) = self.shard(page);
            let src = &buf[r];
            let mut m = shard.write();
            match m.get_mut(&key) {
                Some(p) => Arc::make_mut(p)[in_page..in_page + src.len()].copy_from_slice(src),
                None => {
                    if is_zero(src) {
                        return;
                    }
                    let mut p: Page = Arc::new([0u8; PAGE]);
                    Arc::make_mut(&mut p)[in_page..in_page + src.len()].copy_from_slice(src);
                    m.insert(key, p);
                }
            }
        });
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u32, offset: u64, _fua: bool) -> Result<()> {
        self.clear(count, offset);
        Ok(())
    }

    fn zero(&self, count: u32, offset: u64, _flags: ZeroFlags) -> Result<()> {
        self.clear(count, offset);
        Ok(())
    }

    fn cache(&self, _count: u32, _offset: u64) -> Result<()> {
        Ok(())
    }

    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let end = offset + count as u64;
        let mut page = offset >> PAGE_SHIFT;
        loop {
            let start = page << PAGE_SHIFT;
            if start >= end {
                return Ok(());
            }
            let (shard, key) = self.shard(page);
            let zero = shard.read().get(&key).map(|p| is_zero(&p[..]));
            let flags = match zero {
                Some(false) => 0,
                Some(true) => allocation::ZERO,
                None => allocation::HOLE | allocation::ZERO,
            };
            if !sink.add(start, PAGE as u64, flags)? {
                return Ok(());
            }
            page += 1;
        }
    }
}

/// The same disk for every connection.
impl Plugin for Memory {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}

/// `allocator=malloc`: the whole disk in one anonymous mapping (zeroed
/// by the kernel, pages appear on first touch unless locked), guarded by
/// one reader-writer lock: reads in parallel, writes one at a time.
pub struct MallocDisk {
    ptr: *mut u8,
    len: usize,
    lock: RwLock<()>,
}

// SAFETY: the mapping is owned by the struct; every access to its bytes
// holds `lock` (shared for reads, exclusive for changes).
unsafe impl Send for MallocDisk {}
unsafe impl Sync for MallocDisk {}

impl MallocDisk {
    fn new(size: u64, mlock: bool) -> std::result::Result<MallocDisk, String> {
        let len = usize::try_from(size)
            .ok()
            .filter(|&l| l < isize::MAX as usize)
            .ok_or_else(|| format!("memory: allocator=malloc: {size} bytes is too large"))?;
        // A zero-length mapping is not allowed: map one byte instead.
        let map_len = len.max(1);
        // SAFETY: a new private anonymous mapping; no existing memory is
        // touched. MAP_FAILED is checked.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(format!(
                "memory: allocator=malloc: cannot allocate {size} bytes: {}",
                std::io::Error::last_os_error()
            ));
        }
        let disk = MallocDisk {
            ptr: ptr as *mut u8,
            len,
            lock: RwLock::new(()),
        };
        // SAFETY: locks the pages of our own mapping.
        if mlock && unsafe { libc::mlock(ptr, map_len) } != 0 {
            return Err(format!(
                "memory: allocator=malloc: mlock: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(disk)
    }

    fn check(&self, offset: u64, len: usize) -> Result<usize> {
        match offset.checked_add(len as u64) {
            Some(end) if end <= self.len as u64 => Ok(offset as usize),
            _ => Err(nbd_core::server::backend::Error::new(
                libc::EIO,
                "memory: request past the end of the disk",
            )),
        }
    }

    fn fill_zero(&self, count: u32, offset: u64) -> Result<()> {
        let at = self.check(offset, count as usize)?;
        let _g = self.lock.write();
        // SAFETY: in bounds (checked), and the exclusive lock is held.
        unsafe { std::ptr::write_bytes(self.ptr.add(at), 0, count as usize) };
        Ok(())
    }
}

impl Drop for MallocDisk {
    fn drop(&mut self) {
        // SAFETY: our mapping, unmapped once (munmap also unlocks it).
        unsafe { libc::munmap(self.ptr as *mut libc::c_void, self.len.max(1)) };
    }
}

impl Backend for MallocDisk {
    fn size(&self) -> Result<u64> {
        Ok(self.len as u64)
    }
    supports!(
        can_write,
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_fast_zero,
        can_multi_conn,
        can_extents,
        can_cache
    );

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let at = self.check(offset, buf.len())?;
        let _g = self.lock.read();
        // SAFETY: in bounds (checked); writers are excluded by the lock.
        let src = unsafe { std::slice::from_raw_parts(self.ptr.add(at), buf.len()) };
        buf.copy_from_slice(src);
        Ok(())
    }

    fn pwrite(&self, buf: &[u8], offset: u64, _fua: bool) -> Result<()> {
        let at = self.check(offset, buf.len())?;
        let _g = self.lock.write();
        // SAFETY: in bounds (checked), and the exclusive lock is held.
        let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(at), buf.len()) };
        dst.copy_from_slice(buf);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn trim(&self, count: u32, offset: u64, _fua: bool) -> Result<()> {
        self.fill_zero(count, offset)
    }

    fn zero(&self, count: u32, offset: u64, _flags: ZeroFlags) -> Result<()> {
        self.fill_zero(count, offset)
    }

    fn cache(&self, _count: u32, _offset: u64) -> Result<()> {
        Ok(())
    }
    // Extents: the default, all data (nothing here is sparse).
}

/// The same disk for every connection.
impl Plugin for MallocDisk {
    /// Answers from memory (or computes its data): never blocks.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocators() {
        assert_eq!(parse_allocator("sparse"), Ok(Allocator::Sparse));
        assert_eq!(parse_allocator("zstd"), Ok(Allocator::Sparse));
        assert_eq!(
            parse_allocator("malloc"),
            Ok(Allocator::Malloc { mlock: false })
        );
        assert_eq!(
            parse_allocator("malloc,mlock=true"),
            Ok(Allocator::Malloc { mlock: true })
        );
        assert!(parse_allocator("sparse,mlock=true").is_err());
        assert!(parse_allocator("malloc,foo=1").is_err());
        assert!(parse_allocator("malloc,mlock=maybe").is_err());
        assert!(parse_allocator("bogus").is_err());
    }

    #[test]
    fn malloc_read_write_zero() {
        let m = MallocDisk::new(1 << 20, false).unwrap();
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
        m.pwrite(&data, 1000, false).unwrap();
        let mut r = vec![0u8; data.len()];
        m.pread(&mut r, 1000).unwrap();
        assert_eq!(r, data);
        m.zero(100, 1000, ZeroFlags::default()).unwrap();
        m.pread(&mut r, 1000).unwrap();
        assert!(r[..100].iter().all(|&b| b == 0));
        assert_eq!(r[100..], data[100..]);
        assert!(m.pread(&mut r, (1 << 20) - 10).is_err());
        assert!(MallocDisk::new(0, true).is_ok());
    }

    #[test]
    fn sparse_read_write_zero() {
        let m = Memory::new(1 << 40);
        let mut b = vec![1u8; 100];
        m.pread(&mut b, 1 << 39).unwrap();
        assert!(b.iter().all(|&x| x == 0));
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8 + 1).collect();
        m.pwrite(&data, PAGE as u64 - 10, false).unwrap();
        let mut r = vec![0u8; data.len()];
        m.pread(&mut r, PAGE as u64 - 10).unwrap();
        assert_eq!(r, data);
        // Zeroes are not stored.
        m.pwrite(&vec![0u8; PAGE * 2], 1 << 30, false).unwrap();
        let pages: usize = m.shards.iter().map(|s| s.read().len()).sum();
        assert_eq!(pages, 5);
        m.zero(PAGE as u32 * 2, 0, ZeroFlags::default()).unwrap();
        m.pread(&mut r, PAGE as u64 - 10).unwrap();
        assert!(r[..PAGE + 10].iter().all(|&x| x == 0));
        assert_eq!(r[PAGE + 10..], data[PAGE + 10..]);
        let mut lent = Vec::new();
        let res = m.pread_lend(r.len() as u32, PAGE as u64 - 10, &mut |s: &[&[u8]]| {
            s.iter().for_each(|x| lent.extend_from_slice(x));
            true
        });
        assert!(matches!(res, Some(Ok(()))));
        assert_eq!(lent, r);
        let mut e = Extents::new();
        e.reset(0, PAGE as u32 * 8, false);
        m.extents(PAGE as u32 * 8, 0, &mut e).unwrap();
        let h = allocation::HOLE | allocation::ZERO;
        assert_eq!(
            e.as_slice(),
            &[
                (2 * PAGE as u64, h),
                (3 * PAGE as u64, 0),
                (3 * PAGE as u64, h)
            ]
        );
    }
}

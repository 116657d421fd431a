//! The xnbd-cache filter: xnbd's persistent block cache, the heart of its
//! proxy (live storage migration) and of its copy-on-write target. Not an
//! nbdkit filter; ours, so that xnbd-server's stacks are ordinary chains
//! and our nbdkit can put the cache over any plugin.
//!
//! The disk is cut into 4096-byte blocks. A cache image of the disk's size
//! holds the blocks that are here; a bitmap file says which: xnbd's format,
//! no header, native-endian 64-bit words, bit `i % 64` of word `i / 64` set
//! when block `i` is cached, `ceil(ceil(size / 4096) / 64) * 8` bytes.
//!
//! - A read of an uncached block fetches it from the layer below into the
//!   cache image and sets its bit (`fetch-on-read=true`, the proxy), or
//!   reads it from below without keeping it (`fetch-on-read=false`, the
//!   copy-on-write target).
//! - A write lands in the cache image only and marks its blocks cached; a
//!   write covering part of an uncached block first fetches that block.
//!   The layer below is never written, trimmed or flushed.
//! - Trim and write-zeroes make the range read as zeros in the cache image
//!   and mark its blocks cached (as xnbd's proxy does for trim): whole
//!   blocks are punched out of the cache image (written as zeros when the
//!   file system cannot punch, or when the client asked for no holes), the
//!   parts of blocks at either end are written as zeros after the rest of
//!   their block was fetched. Nothing is passed below.
//! - Block status (base:allocation): cached blocks as the cache image
//!   holds them (SEEK_DATA/SEEK_HOLE: a punched block is a hole that reads
//!   as zeros, anything else data); uncached blocks as the layer below
//!   reports them (they read as its data), or data when it cannot say.
//! - Flush makes the cache image and then the bitmap durable (fdatasync
//!   both, data first, bits snapshotted before the data is synced), so a
//!   crash never leaves a bit set over data that was not stored.
//! - A client's disconnect flushes too (a reader never sends a flush).
//! - State survives a restart: an existing bitmap of the right size is
//!   used as it is, unless `clear-bitmap=true`. A bitmap of another size
//!   is refused.
//! - After [`XnbdCache::switch`] the layer below is never consulted again:
//!   the cache image is the disk (xnbd-bgctl --switch).
//!
//! One cache serves every connection: the filter is its own handle, and
//! its state is global. Blocks come from the connection's layer below, or,
//! once [`XnbdCache::set_source`] gave one (xnbd-server's proxy: the
//! remote, replaced by xnbd-bgctl --reconnect), from that backend, which
//! also serves [`XnbdCache::cache_all`] outside any connection.
//!
//! The cache's files are made once the disk's size is known
//! ([`XnbdCache::start`]): xnbd-server starts it before it serves; as an
//! nbdkit filter, at the first connection (the filter is configured before
//! any layer below is open). The checks that need no size (a bitmap that
//! does not fit the existing cache image, a directory where the cache
//! image should be) are made when the filter is configured, so that such
//! a server does not start.
//!
//! Concurrency: blocks are grouped in 1 MiB regions, each guarded by one
//! of [`STRIPES`] mutexes (region number modulo). A fetch holds its
//! region's mutex from the read below until its bit is set; a write holds
//! those of every region it touches (taken in ascending order, so there is
//! no deadlock), so a fetch never overwrites newer data. Reads of cached
//! blocks take no lock: a bit is set only after its data is in the cache
//! image.
//!
//! As an nbdkit filter: `--filter=xnbd-cache cache=FILE bitmap=FILE
//! [clear-bitmap=BOOL] [fetch-on-read=BOOL]`, e.g. over the nbd plugin.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

use parking_lot::{Mutex, MutexGuard, RwLock};

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use super::FilterSpec;
use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

pub const FILTER: FilterSpec = FilterSpec {
    name: "xnbd-cache",
    params: &[
        (
            "cache",
            "the cache image: the blocks that are here (made with the disk's size)",
        ),
        (
            "bitmap",
            "the bitmap file saying which blocks are cached (xnbd's format)",
        ),
        (
            "clear-bitmap",
            "start with no block cached, whatever the bitmap says (default false)",
        ),
        (
            "fetch-on-read",
            "keep blocks read from below (default true); false: copy-on-write",
        ),
    ],
    open: |p, _| Ok(Arc::new(XnbdCache::from_params(p)?)),
};

/// The cache's block size (xnbd's CBLKSIZE).
pub const BLOCK: u64 = 4096;
/// Blocks per lock region (1 MiB).
const REGION: u64 = 256;
const STRIPES: usize = 64;
/// Bitmap words per dirty-tracking page (4 KiB of bitmap).
const PAGE_WORDS: usize = 512;

/// Where the cache lives and how it behaves.
#[derive(Clone, Debug)]
pub struct Options {
    pub cache: PathBuf,
    pub bitmap: PathBuf,
    /// Start with every bit clear, whatever the bitmap file holds.
    pub clear_bitmap: bool,
    /// Keep blocks read from below (proxy); otherwise only writes fill
    /// the cache (copy-on-write).
    pub fetch_on_read: bool,
}

/// The filter, and the cache every connection shares.
pub struct XnbdCache {
    opts: Options,
    /// The cache of the disk, once its size is known ([`XnbdCache::start`]).
    state: OnceLock<State>,
    starting: Mutex<()>,
    /// Where blocks come from when set ([`XnbdCache::set_source`]);
    /// otherwise the connection's layer below.
    source: RwLock<Option<Arc<dyn Backend>>>,
}

/// The cache of a disk of known size: its files and its bits.
struct State {
    opts: Options,
    size: u64,
    nblocks: u64,
    cache: File,
    bm_file: File,
    words: Box<[AtomicU64]>,
    dirty: Box<[AtomicBool]>,
    cached: AtomicU64,
    stripes: Box<[Mutex<()>]>,
    flush_lock: Mutex<()>,
    switched: AtomicBool,
    /// The cache image's file system punches holes (until it says not).
    can_punch: AtomicBool,
}

fn io_err(what: &str, path: &Path, e: std::io::Error) -> Error {
    Error::new(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("xnbd-cache: {what}: {}: {e}", path.display()),
    )
}

fn not_started() -> Error {
    Error::new(libc::EIO, "xnbd-cache: the cache is not started")
}

static ZEROS: [u8; 1 << 20] = [0; 1 << 20];

/// Deallocates `len` bytes at `offset` of `f` (they read as zeros after).
fn punch_hole(f: &File, offset: u64, len: u64) -> std::io::Result<()> {
    // SAFETY: fallocate on our descriptor with plain integers.
    let r = unsafe {
        libc::fallocate(
            std::os::unix::io::AsRawFd::as_raw_fd(f),
            libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
            offset as libc::off_t,
            len as libc::off_t,
        )
    };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// The length of the bitmap of a disk of `size` bytes.
pub fn bitmap_len(size: u64) -> u64 {
    size.div_ceil(BLOCK).div_ceil(64) * 8
}

/// The metadata of `p`, `None` when it does not exist.
fn meta(p: &Path) -> std::result::Result<Option<std::fs::Metadata>, String> {
    match std::fs::metadata(p) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(format!("{}: {e}", p.display())),
    }
}

/// The refusal of a bitmap of `blen` bytes for a disk of `size` bytes.
fn wrong_bitmap(bpath: &Path, blen: u64, size: u64) -> String {
    format!(
        "bitmap {} is {blen} bytes, but a disk of {size} bytes needs {} (wrong bitmap, or use --clear-bitmap)",
        bpath.display(),
        bitmap_len(size)
    )
}

impl XnbdCache {
    /// The filter: `cache=FILE bitmap=FILE [clear-bitmap=BOOL]
    /// [fetch-on-read=BOOL]`. Refuses what it can tell is wrong without
    /// the disk's size (see [`XnbdCache::precheck`]).
    pub fn from_params(p: &mut Params) -> std::result::Result<Self, String> {
        let cache = p
            .take("cache")
            .ok_or_else(|| p.err("cache=FILE is required"))?;
        let bitmap = p
            .take("bitmap")
            .ok_or_else(|| p.err("bitmap=FILE is required"))?;
        let clear_bitmap = p.take_bool("clear-bitmap")?.unwrap_or(false);
        let fetch_on_read = p.take_bool("fetch-on-read")?.unwrap_or(true);
        let opts = Options {
            cache: cache.into(),
            bitmap: bitmap.into(),
            clear_bitmap,
            fetch_on_read,
        };
        Self::precheck(&opts)?;
        Ok(XnbdCache::new(opts))
    }

    /// A cache that is not started yet: nothing is checked, created or
    /// changed until [`XnbdCache::start`].
    pub fn new(opts: Options) -> Self {
        XnbdCache {
            opts,
            state: OnceLock::new(),
            starting: Mutex::new(()),
            source: RwLock::new(None),
        }
    }

    /// The checks of [`XnbdCache::start`] that need no disk size: the
    /// cache image is not a directory, the bitmap is a regular file, and
    /// an existing bitmap fits an existing cache image (which must be of
    /// the disk's size).
    pub fn precheck(opts: &Options) -> std::result::Result<(), String> {
        let (cpath, bpath) = (&opts.cache, &opts.bitmap);
        let clen = match meta(cpath)? {
            Some(m) if m.is_dir() => return Err(format!("{}: is a directory", cpath.display())),
            Some(m) if m.file_type().is_file() => m.len(),
            _ => 0,
        };
        let blen = match meta(bpath)? {
            Some(m) if !m.file_type().is_file() => {
                return Err(format!("bitmap {}: not a regular file", bpath.display()))
            }
            Some(m) => m.len(),
            None => 0,
        };
        if !opts.clear_bitmap && clen != 0 && blen != 0 && blen != bitmap_len(clen) {
            return Err(wrong_bitmap(bpath, blen, clen));
        }
        Ok(())
    }

    /// Makes the cache of a disk of `below`'s size: checks everything
    /// before creating or changing any file, so a refused start leaves the
    /// cache image and the bitmap as they were. Once started, only checks
    /// that `below` is of the same size.
    pub fn start(&self, below: &dyn Backend) -> std::result::Result<(), String> {
        let size = below.size().map_err(|e| e.to_string())?;
        let _g = self.starting.lock();
        if let Some(s) = self.state.get() {
            if s.size != size {
                return Err(format!(
                    "xnbd-cache: the disk is {size} bytes, but the cache is of {} bytes",
                    s.size
                ));
            }
            return Ok(());
        }
        let s = State::new(size, self.opts.clone())?;
        let _ = self.state.set(s);
        Ok(())
    }

    fn state(&self) -> Result<&State> {
        self.state.get().ok_or_else(not_started)
    }

    /// Runs `f` with the state and where blocks come from: the backend
    /// [`XnbdCache::set_source`] gave, else `next`.
    fn with_source<T>(
        &self,
        next: &dyn Backend,
        f: impl FnOnce(&State, &dyn Backend) -> Result<T>,
    ) -> Result<T> {
        let s = self.state()?;
        let set = self.source.read().clone();
        let src: &dyn Backend = match &set {
            Some(b) => &**b,
            None => next,
        };
        f(s, src)
    }

    /// Fetches from `b` from now on (the remote of a proxy; a new
    /// connection to it after the old one was lost). It must be of the
    /// same size.
    pub fn set_source(&self, b: Arc<dyn Backend>) -> std::result::Result<(), String> {
        let size = b.size().map_err(|e| e.to_string())?;
        if let Some(s) = self.state.get() {
            if size != s.size {
                return Err(format!(
                    "the new remote disk is {size} bytes, not {} bytes",
                    s.size
                ));
            }
        }
        *self.source.write() = Some(b);
        Ok(())
    }

    pub fn options(&self) -> &Options {
        &self.opts
    }

    /// The disk's size, once started.
    pub fn disk_size(&self) -> Option<u64> {
        self.state.get().map(|s| s.size)
    }

    /// (cached blocks, all blocks); (0, 0) before the start.
    pub fn progress(&self) -> (u64, u64) {
        self.state.get().map_or((0, 0), State::progress)
    }

    pub fn is_switched(&self) -> bool {
        self.state.get().is_some_and(State::is_switched)
    }

    pub fn is_cached(&self, b: u64) -> bool {
        self.state.get().is_some_and(|s| s.is_cached(b))
    }

    /// Stops consulting the layer below: from now on the cache image is
    /// the disk. Refused while blocks are missing, unless `force`.
    pub fn switch(&self, force: bool) -> std::result::Result<(), String> {
        let s = self.state().map_err(|e| e.to_string())?;
        let (n, m) = s.progress();
        if n < m && !force {
            return Err(format!(
                "{} of {m} blocks are not cached yet: run --cache-all first, or --force",
                m - n
            ));
        }
        s.flush().map_err(|e| e.to_string())?;
        s.switched.store(true, Ordering::SeqCst);
        Ok(())
    }

    /// Makes the cache durable (see the module's doc); nothing to do
    /// before the start.
    pub fn flush_cache(&self) -> Result<()> {
        self.state.get().map_or(Ok(()), State::flush)
    }

    /// Fetches every uncached block from the source
    /// ([`XnbdCache::set_source`]), region by region, while clients go on,
    /// asking for at most `blocks_per_request` blocks at a time (0: a
    /// region, 256 blocks, which is also the most); `report(cached,
    /// total)` after each region (false: stop). Flushes every 64 MiB and
    /// at the end, so that the work survives a crash.
    pub fn cache_all(
        &self,
        blocks_per_request: u64,
        report: &mut dyn FnMut(u64, u64) -> bool,
    ) -> Result<()> {
        let st = self.state()?;
        let step = match blocks_per_request {
            0 => REGION,
            n => n.min(REGION),
        };
        let regions = st.nblocks.div_ceil(REGION);
        for r in 0..regions {
            if st.is_switched() {
                break;
            }
            let (b0, b1) = (r * REGION, ((r + 1) * REGION).min(st.nblocks));
            if (b0..b1).any(|b| !st.is_cached(b)) {
                let _g = st.stripes[r as usize % STRIPES].lock();
                let mut s = b0;
                while s < b1 {
                    let e = (s + step).min(b1);
                    // Read each time: a reconnect takes effect at once.
                    let src = self.source.read().clone().ok_or_else(|| {
                        Error::new(libc::EIO, "xnbd-cache: no remote to fetch from")
                    })?;
                    st.fetch_locked(&*src, s, e)?;
                    s = e;
                }
            }
            if r % 64 == 63 {
                st.flush()?;
            }
            let (n, m) = st.progress();
            if !report(n, m) {
                return st.flush();
            }
        }
        st.flush()
    }
}

impl State {
    /// Checks everything before creating or changing any file: a refused
    /// start leaves the cache image and the bitmap as they were.
    fn new(size: u64, opts: Options) -> std::result::Result<Self, String> {
        let nblocks = size.div_ceil(BLOCK);
        let bm_len = bitmap_len(size);
        let (cpath, bpath) = (&opts.cache, &opts.bitmap);
        let cmeta = meta(cpath)?;
        let bmeta = meta(bpath)?;
        let clen = match &cmeta {
            Some(m) if m.is_dir() => return Err(format!("{}: is a directory", cpath.display())),
            Some(m) if m.file_type().is_file() => m.len(),
            _ => 0,
        };
        if cmeta.as_ref().is_some_and(|m| m.file_type().is_file()) && clen != 0 && clen != size {
            return Err(format!(
                "cache image {} is {clen} bytes, but the disk is {size} bytes",
                cpath.display()
            ));
        }
        let blen = match &bmeta {
            Some(m) if !m.file_type().is_file() => {
                return Err(format!("bitmap {}: not a regular file", bpath.display()))
            }
            Some(m) => m.len(),
            None => 0,
        };
        if !opts.clear_bitmap && blen != 0 && blen != bm_len {
            return Err(wrong_bitmap(bpath, blen, size));
        }
        let mut words = vec![0u64; bm_len as usize / 8];
        if !opts.clear_bitmap && blen == bm_len && bm_len > 0 {
            let mut raw = vec![0u8; bm_len as usize];
            File::open(bpath)
                .and_then(|f| f.read_exact_at(&mut raw, 0))
                .map_err(|e| format!("bitmap {}: {e}", bpath.display()))?;
            for (w, c) in words.iter_mut().zip(raw.chunks_exact(8)) {
                *w = u64::from_ne_bytes(c.try_into().expect("8 bytes"));
            }
        }
        // Bits past the last block mean nothing.
        if !nblocks.is_multiple_of(64) {
            if let Some(last) = words.last_mut() {
                *last &= (1u64 << (nblocks % 64)) - 1;
            }
        }
        let cached: u64 = words.iter().map(|w| w.count_ones() as u64).sum();
        if cached > 0 && clen == 0 && size > 0 {
            return Err(format!(
                "bitmap {} marks {cached} blocks cached, but the cache image {} is missing or empty",
                bpath.display(),
                cpath.display()
            ));
        }
        // Checks done: create what is missing.
        let open_rw = |p: &Path| {
            OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(p)
                .map_err(|e| format!("{}: {e}", p.display()))
        };
        let cache = open_rw(cpath)?;
        if cmeta.as_ref().is_none_or(|m| m.file_type().is_file()) && clen != size {
            cache
                .set_len(size)
                .map_err(|e| format!("{}: {e}", cpath.display()))?;
        }
        let bm_file = open_rw(bpath)?;
        if opts.clear_bitmap || blen != bm_len {
            bm_file
                .set_len(0)
                .and_then(|()| bm_file.set_len(bm_len))
                .and_then(|()| bm_file.sync_all())
                .map_err(|e| format!("{}: {e}", bpath.display()))?;
        }
        let npages = words.len().div_ceil(PAGE_WORDS);
        Ok(State {
            opts,
            size,
            nblocks,
            cache,
            bm_file,
            words: words.into_iter().map(AtomicU64::new).collect(),
            dirty: (0..npages).map(|_| AtomicBool::new(false)).collect(),
            cached: AtomicU64::new(cached),
            stripes: (0..STRIPES).map(|_| Mutex::new(())).collect(),
            flush_lock: Mutex::new(()),
            switched: AtomicBool::new(false),
            can_punch: AtomicBool::new(true),
        })
    }

    /// (cached blocks, all blocks).
    fn progress(&self) -> (u64, u64) {
        (self.cached.load(Ordering::Relaxed), self.nblocks)
    }

    fn is_switched(&self) -> bool {
        self.switched.load(Ordering::SeqCst)
    }

    fn is_cached(&self, b: u64) -> bool {
        self.words[(b / 64) as usize].load(Ordering::Acquire) & (1 << (b % 64)) != 0
    }

    fn set_cached(&self, b: u64) {
        let w = (b / 64) as usize;
        let bit = 1u64 << (b % 64);
        if self.words[w].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
            self.cached.fetch_add(1, Ordering::Relaxed);
            self.dirty[w / PAGE_WORDS].store(true, Ordering::Release);
        }
    }

    fn is_dirty(&self) -> bool {
        self.dirty.iter().any(|d| d.load(Ordering::Acquire))
    }

    /// The mutexes of the regions of blocks `b0..b1`, in ascending order.
    fn lock_blocks(&self, b0: u64, b1: u64) -> Vec<MutexGuard<'_, ()>> {
        let (r0, r1) = (b0 / REGION, b1.saturating_sub(1) / REGION);
        let mut idx: Vec<usize> = if r1 - r0 + 1 >= STRIPES as u64 {
            (0..STRIPES).collect()
        } else {
            (r0..=r1).map(|r| r as usize % STRIPES).collect()
        };
        idx.sort_unstable();
        idx.dedup();
        idx.into_iter().map(|i| self.stripes[i].lock()).collect()
    }

    /// Fetches the uncached blocks among `b0..b1` from `src` into the
    /// cache. The caller holds their regions' mutexes.
    fn fetch_locked(&self, src: &dyn Backend, b0: u64, b1: u64) -> Result<()> {
        let mut b = b0;
        let mut buf = Vec::new();
        while b < b1 {
            if self.is_cached(b) {
                b += 1;
                continue;
            }
            let mut e = b + 1;
            while e < b1 && !self.is_cached(e) && e - b < REGION {
                e += 1;
            }
            let off = b * BLOCK;
            let len = (e * BLOCK).min(self.size) - off;
            buf.resize(len as usize, 0);
            src.pread(&mut buf, off)?;
            self.cache
                .write_all_at(&buf, off)
                .map_err(|e| io_err("write", &self.opts.cache, e))?;
            for x in b..e {
                self.set_cached(x);
            }
            b = e;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` present in the cache (proxy reads).
    fn fetch_range(&self, src: &dyn Backend, offset: u64, len: u64) -> Result<()> {
        if len == 0 {
            return Ok(());
        }
        let (b0, b1) = (offset / BLOCK, (offset + len).div_ceil(BLOCK));
        let mut r = b0 / REGION;
        while r * REGION < b1 {
            let (s, e) = ((r * REGION).max(b0), ((r + 1) * REGION).min(b1));
            if (s..e).any(|b| !self.is_cached(b)) {
                let _g = self.stripes[r as usize % STRIPES].lock();
                self.fetch_locked(src, s, e)?;
            }
            r += 1;
        }
        Ok(())
    }

    fn read_cache(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.cache
            .read_exact_at(buf, offset)
            .map_err(|e| io_err("read", &self.opts.cache, e))
    }

    /// Writes zeros over `len` bytes at `offset`, as a client's write.
    fn write_zeros(&self, src: &dyn Backend, offset: u64, len: u64) -> Result<()> {
        let mut done = 0u64;
        while done < len {
            let n = (len - done).min(ZEROS.len() as u64) as usize;
            self.write(src, &ZEROS[..n], offset + done)?;
            done += n as u64;
        }
        Ok(())
    }

    /// Makes `len` bytes at `offset` read as zeros and marks their blocks
    /// cached. With `punch`, whole blocks are punched out of the cache
    /// image (a hole), else written; partial blocks are always written.
    fn zero_range(&self, src: &dyn Backend, offset: u64, len: u64, punch: bool) -> Result<()> {
        let end = offset + len;
        // The whole blocks, as bytes: a short last block is whole when the
        // range reaches the end of the disk.
        let a = offset.div_ceil(BLOCK) * BLOCK;
        let z = if end == self.size {
            end
        } else {
            end / BLOCK * BLOCK
        };
        if !punch || !self.can_punch.load(Ordering::Relaxed) || a >= z {
            return self.write_zeros(src, offset, len);
        }
        self.write_zeros(src, offset, a - offset)?;
        self.write_zeros(src, z, end - z)?;
        let (b0, b1) = (a / BLOCK, z.div_ceil(BLOCK));
        let g = self.lock_blocks(b0, b1);
        match punch_hole(&self.cache, a, z - a) {
            Ok(()) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::EOPNOTSUPP | libc::ENOSYS)) => {
                self.can_punch.store(false, Ordering::Relaxed);
                drop(g);
                return self.write_zeros(src, a, z - a);
            }
            Err(e) => return Err(io_err("fallocate", &self.opts.cache, e)),
        }
        for b in b0..b1 {
            self.set_cached(b);
        }
        Ok(())
    }

    /// Block status of `pos..end`, all cached: the cache image's holes
    /// (zeros) and data.
    fn cache_extents(&self, pos: u64, end: u64, sink: &mut Extents) -> Result<()> {
        let fd = std::os::unix::io::AsRawFd::as_raw_fd(&self.cache);
        crate::plugins::file::seek_extents(fd, pos, end, sink).map(|_| ())
    }

    /// Block status of `pos..end`, all uncached: what the layer below
    /// says, or data where it cannot say (no extents, an error, a remote
    /// that is gone).
    fn below_extents(
        &self,
        src: &dyn Backend,
        mut pos: u64,
        end: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        if src.can_extents().unwrap_or(false) {
            let mut e = Extents::new();
            while pos < end && sink.wants_more() {
                let n = (end - pos) as u32;
                e.reset(pos, n, false);
                if src.extents(n, pos, &mut e).is_err() || e.is_empty() {
                    break;
                }
                for &(len, flags) in e.as_slice() {
                    if !sink.add(pos, len, flags)? {
                        return Ok(());
                    }
                    pos += len;
                }
            }
        }
        if pos < end {
            sink.add(pos, end - pos, 0)?;
        }
        Ok(())
    }

    fn write(&self, src: &dyn Backend, buf: &[u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        let end = offset + buf.len() as u64;
        let (b0, b1) = (offset / BLOCK, end.div_ceil(BLOCK));
        let _g = self.lock_blocks(b0, b1);
        if !self.is_switched() {
            // Partly covered blocks come from below first.
            if !offset.is_multiple_of(BLOCK) {
                self.fetch_locked(src, b0, b0 + 1)?;
            }
            if !end.is_multiple_of(BLOCK) && end != self.size {
                self.fetch_locked(src, b1 - 1, b1)?;
            }
        }
        self.cache
            .write_all_at(buf, offset)
            .map_err(|e| io_err("write", &self.opts.cache, e))?;
        for b in b0..b1 {
            self.set_cached(b);
        }
        Ok(())
    }

    fn pread(&self, src: &dyn Backend, buf: &mut [u8], offset: u64) -> Result<()> {
        let len = buf.len() as u64;
        if len == 0 {
            return Ok(());
        }
        if self.is_switched() {
            return self.read_cache(buf, offset);
        }
        if self.opts.fetch_on_read {
            self.fetch_range(src, offset, len)?;
            return self.read_cache(buf, offset);
        }
        // Copy-on-write: runs of cached blocks from the cache image, the
        // rest from below.
        let mut pos = offset;
        let end = offset + len;
        while pos < end {
            let b = pos / BLOCK;
            let here = self.is_cached(b);
            let mut e = ((b + 1) * BLOCK).min(end);
            while e < end && self.is_cached(e / BLOCK) == here {
                e = ((e / BLOCK + 1) * BLOCK).min(end);
            }
            let dst = &mut buf[(pos - offset) as usize..(e - offset) as usize];
            if here {
                self.read_cache(dst, pos)?;
            } else {
                src.pread(dst, pos)?;
            }
            pos = e;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let _g = self.flush_lock.lock();
        // Snapshot the bits first: each was set after its data reached the
        // cache image, so the sync below makes all of them true.
        let mut pages = Vec::new();
        for (i, d) in self.dirty.iter().enumerate() {
            if d.swap(false, Ordering::AcqRel) {
                let w0 = i * PAGE_WORDS;
                let w1 = (w0 + PAGE_WORDS).min(self.words.len());
                let mut bytes = Vec::with_capacity((w1 - w0) * 8);
                for w in &self.words[w0..w1] {
                    bytes.extend_from_slice(&w.load(Ordering::Acquire).to_ne_bytes());
                }
                pages.push((i, bytes));
            }
        }
        let r = self
            .cache
            .sync_data()
            .map_err(|e| io_err("fdatasync", &self.opts.cache, e))
            .and_then(|()| {
                for (i, bytes) in &pages {
                    self.bm_file
                        .write_all_at(bytes, (*i * PAGE_WORDS * 8) as u64)
                        .map_err(|e| io_err("write", &self.opts.bitmap, e))?;
                }
                self.bm_file
                    .sync_data()
                    .map_err(|e| io_err("fdatasync", &self.opts.bitmap, e))
            });
        if r.is_err() {
            for (i, _) in &pages {
                self.dirty[*i].store(true, Ordering::Release);
            }
        }
        r
    }

    fn extents(
        &self,
        src: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let end = offset + count as u64;
        let switched = self.is_switched();
        let here = |b: u64| switched || self.is_cached(b);
        let mut pos = offset;
        while pos < end && sink.wants_more() {
            // A run of blocks that are all cached, or all not.
            let cached = here(pos / BLOCK);
            let mut e = ((pos / BLOCK + 1) * BLOCK).min(end);
            while e < end && here(e / BLOCK) == cached {
                e = ((e / BLOCK + 1) * BLOCK).min(end);
            }
            if cached {
                self.cache_extents(pos, e, sink)?;
            } else {
                self.below_extents(src, pos, e, sink)?;
            }
            pos = e;
        }
        Ok(())
    }
}

/// One cache for every connection: the filter is its own handle.
impl Filter for XnbdCache {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for XnbdCache {
    /// The first connection starts the cache, now that the disk's size is
    /// known; later ones check it is the same disk.
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        self.start(next).map_err(|e| Error::new(libc::EIO, e))
    }

    /// Each client that goes leaves the cache durable, even one that only
    /// read (a reader never flushes): what it fetched survives a restart.
    fn close(&self, _: &ConnectionInfo) {
        if let Some(s) = self.state.get() {
            if s.is_dirty() {
                if let Err(e) = s.flush() {
                    crate::log::error!("xnbd-cache: flush at disconnect: {e}");
                }
            }
        }
    }

    fn size(&self, _: &dyn Backend) -> Result<u64> {
        Ok(self.state()?.size)
    }
    fn block_size(&self, _: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        Ok(None)
    }
    answers!(
        true: can_write, can_flush, can_fua, can_trim, can_zero, can_extents, can_cache;
        // One cache for every connection, whose flush syncs all of it.
        true: can_multi_conn;
        false: can_fast_zero, is_rotational;
    );

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        self.with_source(next, |s, src| s.pread(src, buf, offset))
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.with_source(next, |s, src| {
            s.write(src, buf, offset)?;
            if fua {
                s.flush()?;
            }
            Ok(())
        })
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        if flags.fast {
            return Err(Error::new(libc::ENOTSUP, "xnbd-cache: zero is not fast"));
        }
        self.with_source(next, |s, src| {
            s.zero_range(src, offset, count as u64, flags.may_trim)?;
            if flags.fua {
                s.flush()?;
            }
            Ok(())
        })
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        // Never passed below: the range reads as zeros from the cache.
        self.with_source(next, |s, src| {
            s.zero_range(src, offset, count as u64, true)?;
            if fua {
                s.flush()?;
            }
            Ok(())
        })
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.with_source(next, |s, src| {
            if s.opts.fetch_on_read && !s.is_switched() {
                s.fetch_range(src, offset, count as u64)?;
            }
            Ok(())
        })
    }

    fn flush(&self, _: &dyn Backend) -> Result<()> {
        self.state()?.flush()
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        self.with_source(next, |s, src| s.extents(src, count, offset, sink))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::info;
    use crate::chain::{Chain, Opened};
    use crate::plugins::memory::Memory;

    fn tmp(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("xnbd-cache-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    /// A memory disk holding `i % 251` at byte `i`.
    fn below(size: u64) -> Arc<Memory> {
        let m = Memory::new(size);
        let data: Vec<u8> = (0..size).map(|i| (i % 251) as u8).collect();
        m.pwrite(&data, 0, false).unwrap();
        Arc::new(m)
    }

    /// The cache over `below`, opened for one connection.
    fn open(below: &Arc<Memory>, opts: Options) -> (Arc<XnbdCache>, Opened) {
        let xc = Arc::new(XnbdCache::new(opts));
        let chain = Arc::new(Chain::new(
            Arc::clone(below) as Arc<dyn crate::chain::Plugin>,
            vec![Arc::clone(&xc) as Arc<dyn Filter>],
        ));
        let c = chain.open(info()).unwrap();
        (xc, c)
    }

    #[test]
    fn bitmap_length() {
        assert_eq!(bitmap_len(0), 0);
        assert_eq!(bitmap_len(1), 8);
        assert_eq!(bitmap_len(4096 * 64), 8);
        assert_eq!(bitmap_len(4096 * 64 + 1), 16);
        assert_eq!(bitmap_len(1 << 30), 32768);
    }

    #[test]
    fn reads_fetch_writes_stay_and_state_persists() {
        let d = tmp("a");
        let size = 4096 * 100 + 100;
        let inner = below(size);
        let opts = Options {
            cache: d.join("c"),
            bitmap: d.join("b"),
            clear_bitmap: false,
            fetch_on_read: true,
        };
        let (xc, c) = open(&inner, opts.clone());
        let mut buf = vec![0u8; 10];
        c.pread(&mut buf, 4096 * 3 + 5).unwrap();
        assert_eq!(buf[0], ((4096 * 3 + 5) % 251) as u8);
        assert!(xc.is_cached(3) && !xc.is_cached(2) && !xc.is_cached(4));
        c.pwrite(&[9; 3], 4096 * 70 + 1, false).unwrap();
        assert!(xc.is_cached(70));
        let mut below_buf = [0u8; 3];
        inner.pread(&mut below_buf, 4096 * 70 + 1).unwrap();
        assert_ne!(below_buf, [9; 3]);
        // The tail block, shorter than a block.
        c.pread(&mut [0u8; 50], size - 50).unwrap();
        assert!(xc.is_cached(100));
        // The disconnect flushes.
        drop(c);
        drop(xc);
        let raw = std::fs::read(d.join("b")).unwrap();
        assert_eq!(raw.len(), 16);
        let w0 = u64::from_ne_bytes(raw[..8].try_into().unwrap());
        let w1 = u64::from_ne_bytes(raw[8..].try_into().unwrap());
        assert_eq!(w0, 1 << 3);
        assert_eq!(w1, (1 << (70 - 64)) | (1 << (100 - 64)));
        let (xc, c) = open(&inner, opts);
        assert_eq!(xc.progress(), (3, 101));
        let mut b = [0u8; 4];
        c.pread(&mut b, 4096 * 70).unwrap();
        assert_eq!(b[1..], [9, 9, 9]);
        let _ = std::fs::remove_dir_all(&d);
    }

    /// Trim and zero leave the layer below alone, read as zeros, mark
    /// their blocks cached; block status follows the cache image for
    /// cached blocks and the layer below for the rest. Both modes.
    #[test]
    fn trim_zero_and_block_status() {
        use nbd_core::wire::consts::allocation::{HOLE, ZERO};
        const B: u64 = BLOCK;
        for fetch_on_read in [true, false] {
            let d = tmp(&format!("tz{fetch_on_read}"));
            let size = B * 64;
            // Below: data in blocks 0..32, nothing (zeros, a hole) after.
            let m = Memory::new(size);
            let data: Vec<u8> = (0..B * 32).map(|i| (i % 251) as u8 | 1).collect();
            m.pwrite(&data, 0, false).unwrap();
            let inner = Arc::new(m);
            let opts = Options {
                cache: d.join("c"),
                bitmap: d.join("b"),
                clear_bitmap: false,
                fetch_on_read,
            };
            let (xc, c) = open(&inner, opts);
            // Unaligned: blocks 2 and 5 in part (written), 3 and 4 whole
            // (punched).
            c.trim((B * 3) as u32, B * 2 + 100, false).unwrap();
            let mut got = vec![0u8; (B * 4) as usize];
            c.pread(&mut got, B * 2).unwrap();
            let mut want = data[(B * 2) as usize..(B * 6) as usize].to_vec();
            want[100..(B * 3 + 100) as usize].fill(0);
            assert!(got == want, "fetch_on_read={fetch_on_read}");
            assert!((2..6).all(|b| xc.is_cached(b)) && !xc.is_cached(1) && !xc.is_cached(6));
            let zero = |may_trim| ZeroFlags {
                may_trim,
                fua: false,
                fast: false,
            };
            c.zero((B * 2) as u32, B * 40, zero(true)).unwrap();
            c.zero(B as u32, B * 10, zero(false)).unwrap();
            assert!(c
                .zero(
                    1,
                    0,
                    ZeroFlags {
                        fast: true,
                        ..zero(true)
                    }
                )
                .is_err());
            let mut z = vec![1u8; (B * 2) as usize];
            c.pread(&mut z, B * 10).unwrap();
            assert!(z[..B as usize].iter().all(|&x| x == 0));
            assert_eq!(z[B as usize..], data[(B * 11) as usize..(B * 12) as usize]);
            // Below is as it was.
            let mut below = vec![0u8; data.len()];
            inner.pread(&mut below, 0).unwrap();
            assert!(below == data);
            let mut e = Extents::new();
            e.reset(0, size as u32, false);
            c.extents(size as u32, 0, &mut e).unwrap();
            assert_eq!(
                e.as_slice(),
                &[
                    (B * 3, 0),
                    (B * 2, HOLE | ZERO),
                    (B * 27, 0),
                    (B * 32, HOLE | ZERO)
                ],
                "fetch_on_read={fetch_on_read}"
            );
            // After a switch, the cache image alone: what was never
            // fetched is a hole there too (and reads as zeros).
            xc.switch(true).unwrap();
            e.reset(0, size as u32, false);
            c.extents(size as u32, 0, &mut e).unwrap();
            assert_eq!(e.as_slice()[0], (B * 2, HOLE | ZERO));
            let _ = std::fs::remove_dir_all(&d);
        }
    }

    #[test]
    fn wrong_bitmap_refused_untouched() {
        let d = tmp("b");
        std::fs::write(d.join("b"), [1u8; 24]).unwrap();
        let opts = Options {
            cache: d.join("c"),
            bitmap: d.join("b"),
            clear_bitmap: false,
            fetch_on_read: true,
        };
        let xc = XnbdCache::new(opts);
        let e = xc.start(&*below(4096 * 10)).err().unwrap();
        assert!(e.contains("24 bytes"), "{e}");
        assert_eq!(std::fs::read(d.join("b")).unwrap(), [1u8; 24]);
        assert!(!d.join("c").exists());
        // Configured as a filter with an existing cache image, the bitmap
        // is checked against the image's size before any connection.
        std::fs::write(d.join("c"), vec![0u8; 4096 * 10]).unwrap();
        let mut p = Params::new(
            "xnbd-cache",
            vec![
                ("cache".into(), d.join("c").display().to_string()),
                ("bitmap".into(), d.join("b").display().to_string()),
            ],
        );
        let e = XnbdCache::from_params(&mut p).err().unwrap();
        assert!(e.contains("24 bytes"), "{e}");
        assert_eq!(std::fs::read(d.join("b")).unwrap(), [1u8; 24]);
        let _ = std::fs::remove_dir_all(&d);
    }
}

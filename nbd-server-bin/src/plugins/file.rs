//! The file plugin: serves a regular file or a block device.
//!
//! One descriptor shared by every connection (pread/pwrite need no lock);
//! each connection's handle reads the file's size when it opens, as
//! nbdkit's file plugin does, so a file that grows (or shrinks) between
//! connections is served at its new size. `dir=DIRECTORY` (or its synonym
//! `directory=`) serves the files of a directory, one export each.
//! Flush and FUA are fdatasync; trim punches a hole (BLKDISCARD on block
//! devices); zero uses FALLOC_FL_PUNCH_HOLE when the client allows holes,
//! else FALLOC_FL_ZERO_RANGE (BLKZEROOUT on block devices), falling back to
//! writing zeroes unless the client asked for a fast zero; extents come from
//! SEEK_DATA/SEEK_HOLE. A file we may not open for writing is served
//! read-only. Reads name their file range (`pread_file`), so that the
//! server may send them with sendfile(2) instead of reading them.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::{FileExt, FileTypeExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::params::Params;

use super::PluginSpec;
use crate::chain::Plugin;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "file",
    magic: Some("file"),
    params: &[
        ("file", "the file or block device to serve"),
        (
            "dir",
            "a directory whose regular files and block devices are the exports",
        ),
        ("directory", "the same as dir="),
        ("cache", "page cache use: default or none"),
        (
            "fadvise",
            "access pattern hint: normal, random or sequential",
        ),
    ],
    open: |p, ro| open(p, ro),
};

const BLKGETSIZE64: libc::c_ulong = 0x8008_1272;
const BLKDISCARD: libc::c_ulong = 0x1277;
const BLKZEROOUT: libc::c_ulong = 0x127f;

pub struct FilePlugin {
    file: File,
    path: PathBuf,
    block_device: bool,
    writable: bool,
    can_punch: AtomicBool,
    can_zero_range: AtomicBool,
    can_seek: AtomicBool,
    /// cache=none: drop what we read or wrote from the page cache
    /// (nbdkit does the same with posix_fadvise, not O_DIRECT).
    cache_none: bool,
    /// The file lives in memory (tmpfs, ramfs): reading it never waits
    /// for a device, so the server may serve reads on the thread that
    /// read the request, as it does for the memory plugin.
    in_memory: bool,
    /// Whether preadv2(RWF_NOWAIT) works on this file (tried until the
    /// kernel says it does not): a read the page cache holds is served
    /// on the request's own thread, one it does not goes to a worker.
    nowait_works: AtomicBool,
}

/// statfs(2)'s magic number of ramfs (libc names tmpfs's, not this one).
const RAMFS_MAGIC: libc::c_long = 0x8584_58f6;

/// Whether `file` is on a file system that keeps its files in memory.
fn lives_in_memory(file: &File) -> bool {
    // SAFETY: fstatfs fills the zeroed struct we own, on our descriptor.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstatfs(file.as_raw_fd(), &mut st) } != 0 {
        return false;
    }
    matches!(st.f_type, libc::TMPFS_MAGIC | RAMFS_MAGIC)
}

/// Opens the file plugin (or, with `dir=`, one export per file).
pub fn open(p: &mut Params, readonly: bool) -> std::result::Result<Arc<dyn Plugin>, String> {
    let dir = match (p.take("dir"), p.take("directory")) {
        (Some(_), Some(_)) => return Err("file: dir= and directory= are the same parameter".into()),
        (d, None) | (None, d) => d,
    };
    if let Some(dir) = dir {
        if p.take("file").is_some() {
            return Err("file: file= and dir= cannot be used together".into());
        }
        let cache = p.take_enum("cache", &["default", "none"])?;
        let fadvise = p.take_enum("fadvise", &["normal", "random", "sequential"])?;
        return Ok(Arc::new(FileDir::new(
            PathBuf::from(dir),
            cache,
            fadvise,
            readonly,
        )?));
    }
    Ok(Arc::new(FilePlugin::from_parsed(p, readonly)?))
}

/// `dir=DIR`: every regular file in DIR is an export of that name.
pub struct FileDir {
    dir: PathBuf,
    cache: Option<String>,
    fadvise: Option<String>,
    readonly: bool,
}

impl FileDir {
    fn new(
        dir: PathBuf,
        cache: Option<String>,
        fadvise: Option<String>,
        readonly: bool,
    ) -> std::result::Result<Self, String> {
        let m = std::fs::metadata(&dir).map_err(|e| format!("file: {}: {e}", dir.display()))?;
        if !m.is_dir() {
            return Err(format!("file: {}: is not a directory", dir.display()));
        }
        Ok(FileDir {
            dir,
            cache,
            fadvise,
            readonly,
        })
    }

    fn names(&self) -> Result<Vec<String>> {
        let rd = std::fs::read_dir(&self.dir).map_err(|e| os_err("opendir", e))?;
        let mut v = Vec::new();
        for e in rd.flatten() {
            let is_file = std::fs::metadata(e.path())
                .map(|m| m.is_file())
                .unwrap_or(false);
            if let (true, Some(n)) = (is_file, e.file_name().to_str()) {
                v.push(n.to_string());
            }
        }
        v.sort();
        Ok(v)
    }
}

impl Plugin for FileDir {
    fn list_exports(&self, _: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        Ok(Some(
            self.names()?
                .into_iter()
                .map(|n| (n, String::new()))
                .collect(),
        ))
    }

    // No default_export: the empty name stays empty, and opening it fails
    // as nbdkit-file-plugin(1) says ("a client that requests the default
    // export will be rejected"); the exportname filter can map it.

    /// Opens the file of the connection's export.
    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        let name = String::from_utf8_lossy(&info.export_name).into_owned();
        if name.is_empty() {
            return Err(Error::new(
                libc::ENOENT,
                "open: : No such file or directory",
            ));
        }
        if name.contains('/') || name == "." || name == ".." {
            return Err(Error::new(libc::EINVAL, "export name must not contain '/'"));
        }
        let mut pairs = vec![(
            "file".to_string(),
            self.dir.join(&name).to_string_lossy().into_owned(),
        )];
        if let Some(c) = &self.cache {
            pairs.push(("cache".into(), c.clone()));
        }
        if let Some(f) = &self.fadvise {
            pairs.push(("fadvise".into(), f.clone()));
        }
        let mut p = Params::new("file", pairs);
        let file = FilePlugin::from_parsed(&mut p, self.readonly)
            .map_err(|e| Error::new(libc::ENOENT, e))?;
        Ok(Box::new(FileConn::new(Arc::new(file))?))
    }
}

fn os_err(what: &str, e: io::Error) -> Error {
    let errno = e.raw_os_error().unwrap_or(libc::EIO);
    Error::new(errno, format!("{what}: {e}"))
}

fn last_err(what: &str) -> Error {
    os_err(what, io::Error::last_os_error())
}

fn is_unsupported(e: &Error) -> bool {
    is_unsupported_errno(e.errno)
}

/// The errors by which the kernel says an operation is not supported
/// here (rather than that it failed).
fn is_unsupported_errno(errno: i32) -> bool {
    matches!(errno, libc::EOPNOTSUPP | libc::ENOSYS | libc::EINVAL)
}

impl FilePlugin {
    /// `file=` (or `dir=`), `cache=default|none`, `fadvise=normal|random|sequential`.
    pub fn from_parsed(p: &mut Params, readonly: bool) -> std::result::Result<Self, String> {
        let cache = p.take_enum("cache", &["default", "none"])?;
        let fadvise = p.take_enum("fadvise", &["normal", "random", "sequential"])?;
        let path = p
            .take("file")
            .ok_or("file: the file parameter is required (eg. file=disk.img)")?;
        let mut f = Self::open(PathBuf::from(path), readonly)?;
        f.cache_none = cache.as_deref() == Some("none");
        let advice = match fadvise.as_deref() {
            Some("random") => libc::POSIX_FADV_RANDOM,
            Some("sequential") => libc::POSIX_FADV_SEQUENTIAL,
            _ => libc::POSIX_FADV_NORMAL,
        };
        // SAFETY: advice on our descriptor, plain integers. Advisory: a
        // failure changes nothing.
        unsafe { libc::posix_fadvise(f.fd(), 0, 0, advice) };
        Ok(f)
    }

    pub fn open(path: PathBuf, readonly: bool) -> std::result::Result<Self, String> {
        let rw = if readonly {
            None
        } else {
            match OpenOptions::new().read(true).write(true).open(&path) {
                Ok(f) => Some(f),
                Err(e)
                    if matches!(
                        e.raw_os_error(),
                        Some(libc::EACCES) | Some(libc::EROFS) | Some(libc::EPERM)
                    ) =>
                {
                    None
                }
                Err(e) => return Err(format!("file: open: {}: {e}", path.display())),
            }
        };
        let writable = rw.is_some();
        let file = match rw {
            Some(f) => f,
            None => {
                File::open(&path).map_err(|e| format!("file: open: {}: {e}", path.display()))?
            }
        };
        let meta = file
            .metadata()
            .map_err(|e| format!("file: stat: {}: {e}", path.display()))?;
        let ft = meta.file_type();
        if !ft.is_file() && !ft.is_block_device() {
            return Err(format!(
                "file: {}: is not a regular file or block device",
                path.display()
            ));
        }
        let block_device = ft.is_block_device();
        let in_memory = !block_device && lives_in_memory(&file);
        Ok(FilePlugin {
            file,
            path,
            block_device,
            writable,
            can_punch: AtomicBool::new(!block_device),
            can_zero_range: AtomicBool::new(!block_device),
            can_seek: AtomicBool::new(!block_device),
            cache_none: false,
            in_memory,
            nowait_works: AtomicBool::new(true),
        })
    }

    fn fd(&self) -> libc::c_int {
        self.file.as_raw_fd()
    }

    fn sync(&self) -> Result<()> {
        self.file.sync_data().map_err(|e| os_err("fdatasync", e))
    }

    fn fallocate(&self, mode: libc::c_int, offset: u64, count: u32) -> Result<()> {
        loop {
            // SAFETY: fallocate on a descriptor we own, with plain integers.
            let r = unsafe {
                libc::fallocate(self.fd(), mode, offset as libc::off_t, count as libc::off_t)
            };
            if r == 0 {
                return Ok(());
            }
            let e = last_err("fallocate");
            if e.errno != libc::EINTR {
                return Err(e);
            }
        }
    }

    fn blk_range(&self, req: libc::c_ulong, offset: u64, count: u32) -> Result<()> {
        let range: [u64; 2] = [offset, count as u64];
        // SAFETY: the ioctl reads two u64s from `range`, which outlives it.
        let r = unsafe { libc::ioctl(self.fd(), req, range.as_ptr()) };
        if r == 0 {
            Ok(())
        } else {
            Err(last_err("ioctl"))
        }
    }

    fn write_zeroes(&self, count: u32, offset: u64) -> Result<()> {
        static ZEROES: [u8; 64 * 1024] = [0; 64 * 1024];
        let mut done = 0u64;
        while done < count as u64 {
            let n = (count as u64 - done).min(ZEROES.len() as u64) as usize;
            self.file
                .write_all_at(&ZEROES[..n], offset + done)
                .map_err(|e| os_err("pwrite", e))?;
            done += n as u64;
        }
        Ok(())
    }

    /// cache=none: drop the range from the page cache (written data is
    /// synced first, or it could not be dropped).
    fn evict(&self, offset: u64, count: usize, written: bool) {
        if !self.cache_none {
            return;
        }
        // SAFETY: advisory calls on our descriptor, plain integers.
        unsafe {
            if written {
                libc::sync_file_range(
                    self.fd(),
                    offset as libc::off64_t,
                    count as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WAIT_BEFORE
                        | libc::SYNC_FILE_RANGE_WRITE
                        | libc::SYNC_FILE_RANGE_WAIT_AFTER,
                );
            }
            libc::posix_fadvise(
                self.fd(),
                offset as libc::off_t,
                count as libc::off_t,
                libc::POSIX_FADV_DONTNEED,
            );
        }
    }
}

impl Backend for FilePlugin {
    fn size(&self) -> Result<u64> {
        if self.block_device {
            let mut size: u64 = 0;
            // SAFETY: BLKGETSIZE64 writes one u64 into `size`.
            let r = unsafe { libc::ioctl(self.fd(), BLKGETSIZE64, &mut size as *mut u64) };
            if r != 0 {
                return Err(last_err("ioctl BLKGETSIZE64"));
            }
            Ok(size)
        } else {
            let m = self
                .file
                .metadata()
                .map_err(|e| os_err(&format!("stat {}", self.path.display()), e))?;
            Ok(m.len())
        }
    }

    fn can_write(&self) -> Result<bool> {
        Ok(self.writable)
    }
    supports!(
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_fast_zero,
        can_multi_conn
    );
    fn can_extents(&self) -> Result<bool> {
        Ok(!self.block_device)
    }
    fn can_cache(&self) -> Result<bool> {
        Ok(true)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.read_exact_at(buf, offset).map_err(|e| {
            if e.kind() == io::ErrorKind::UnexpectedEof {
                Error::new(libc::EIO, "pread: unexpected end of file")
            } else {
                os_err("pread", e)
            }
        })?;
        self.evict(offset, buf.len(), false);
        Ok(())
    }

    /// Reads only what the page cache holds (or a file in memory) on the
    /// request's own thread; `None` sends the read to a worker, where
    /// `pread` may wait for the device. A short read (part of the range
    /// cached) also goes to the worker, which reads it whole.
    fn pread_nowait(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        if self.cache_none {
            return None;
        }
        if self.in_memory {
            return Some(self.pread(buf, offset));
        }
        if !self.nowait_works.load(Ordering::Relaxed) {
            return None;
        }
        let iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast(),
            iov_len: buf.len(),
        };
        // SAFETY: one iovec over `buf`, which we borrow mutably for the
        // call; our descriptor.
        let n =
            unsafe { libc::preadv2(self.fd(), &iov, 1, offset as libc::off_t, libc::RWF_NOWAIT) };
        if n == buf.len() as isize {
            return Some(Ok(()));
        }
        if n < 0
            && io::Error::last_os_error()
                .raw_os_error()
                .is_some_and(is_unsupported_errno)
        {
            self.nowait_works.store(false, Ordering::Relaxed);
        }
        None
    }

    /// The data is the file's own, so the server may send it straight
    /// from the page cache: unless cache=none asks us to drop what we
    /// read (done after a pread), or the range reaches past the end of a
    /// file that shrank since the connection opened (then pread reports
    /// the short read, as nbdkit does).
    fn pread_file(&self, count: u32, offset: u64) -> Option<(BorrowedFd<'_>, u64)> {
        if self.cache_none {
            return None;
        }
        if !self.block_device {
            let len = self.file.metadata().ok()?.len();
            if offset.checked_add(u64::from(count))? > len {
                return None;
            }
        }
        Some((self.file.as_fd(), offset))
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.file
            .write_all_at(buf, offset)
            .map_err(|e| os_err("pwrite", e))?;
        if fua {
            self.sync()?;
        }
        self.evict(offset, buf.len(), true);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.sync()
    }

    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let r = if self.block_device {
            self.blk_range(BLKDISCARD, offset, count)
        } else if self.can_punch.load(Ordering::Relaxed) {
            self.fallocate(
                libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                offset,
                count,
            )
        } else {
            Ok(())
        };
        match r {
            // Trim is advisory: not being able to is not an error.
            Err(e) if is_unsupported(&e) => {
                if !self.block_device {
                    self.can_punch.store(false, Ordering::Relaxed);
                }
            }
            Err(e) => return Err(e),
            Ok(()) => {}
        }
        if fua {
            self.sync()?;
        }
        Ok(())
    }

    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let mut done = false;
        if self.block_device {
            if !flags.fast {
                match self.blk_range(BLKZEROOUT, offset, count) {
                    Ok(()) => done = true,
                    Err(e) if is_unsupported(&e) => {}
                    Err(e) => return Err(e),
                }
            }
        } else {
            if flags.may_trim && self.can_punch.load(Ordering::Relaxed) {
                match self.fallocate(
                    libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    count,
                ) {
                    Ok(()) => done = true,
                    Err(e) if is_unsupported(&e) => self.can_punch.store(false, Ordering::Relaxed),
                    Err(e) => return Err(e),
                }
            }
            if !done && self.can_zero_range.load(Ordering::Relaxed) {
                match self.fallocate(
                    libc::FALLOC_FL_ZERO_RANGE | libc::FALLOC_FL_KEEP_SIZE,
                    offset,
                    count,
                ) {
                    Ok(()) => done = true,
                    Err(e) if is_unsupported(&e) => {
                        self.can_zero_range.store(false, Ordering::Relaxed)
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        if !done {
            if flags.fast {
                return Err(Error::new(libc::ENOTSUP, "fast zero is not possible"));
            }
            self.write_zeroes(count, offset)?;
        }
        if flags.fua {
            self.sync()?;
        }
        Ok(())
    }

    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        // SAFETY: advice on our descriptor, plain integers.
        let r = unsafe {
            libc::posix_fadvise(
                self.fd(),
                offset as libc::off_t,
                count as libc::off_t,
                libc::POSIX_FADV_WILLNEED,
            )
        };
        if r != 0 {
            return Err(Error::new(r, "posix_fadvise"));
        }
        Ok(())
    }

    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let end = offset + count as u64;
        if !self.can_seek.load(Ordering::Relaxed) {
            sink.add(offset, count as u64, 0)?;
            return Ok(());
        }
        if !seek_extents(self.fd(), offset, end, sink)? {
            self.can_seek.store(false, Ordering::Relaxed);
        }
        Ok(())
    }
}

/// Block status of `pos..end` of the file open on `fd`, from
/// SEEK_DATA/SEEK_HOLE: holes are HOLE|ZERO, the rest data. Stops early
/// when `sink` is full. Returns false if the file system cannot say (the
/// rest was then reported as data). Used by this plugin and by the
/// xnbd-cache filter for its cache image.
pub(crate) fn seek_extents(
    fd: std::os::unix::io::RawFd,
    mut pos: u64,
    end: u64,
    sink: &mut Extents,
) -> Result<bool> {
    let seek = |offset: u64, whence: libc::c_int| {
        // SAFETY: lseek on the caller's descriptor. SEEK_DATA/SEEK_HOLE
        // move the shared file offset, which nothing else uses (all I/O
        // is pread/pwrite).
        let r = unsafe { libc::lseek(fd, offset as libc::off_t, whence) };
        if r < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(r as u64)
        }
    };
    while pos < end {
        let data = match seek(pos, libc::SEEK_DATA) {
            Ok(d) => d,
            // No data after pos: a hole to the end of the file.
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => u64::MAX,
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | libc::EOPNOTSUPP)) => {
                sink.add(pos, end - pos, 0)?;
                return Ok(false);
            }
            Err(e) => return Err(os_err("lseek SEEK_DATA", e)),
        };
        if data > pos {
            let len = data.min(end) - pos;
            if !sink.add(pos, len, allocation::HOLE | allocation::ZERO)? {
                return Ok(true);
            }
            pos += len;
            continue;
        }
        let hole = match seek(pos, libc::SEEK_HOLE) {
            Ok(h) => h,
            Err(e) if e.raw_os_error() == Some(libc::ENXIO) => end,
            Err(e) => return Err(os_err("lseek SEEK_HOLE", e)),
        };
        let hole = hole.max(pos + 1);
        let len = hole.min(end) - pos;
        if !sink.add(pos, len, 0)? {
            return Ok(true);
        }
        pos += len;
    }
    Ok(true)
}

/// One descriptor for every connection; the size is the file's when the
/// connection opened.
impl Plugin for FilePlugin {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(FileConn::new(self)?))
    }
}

/// One connection's handle: the shared file, and its size as read when
/// the connection opened. Everything else, the zero-copy path included
/// (the default `read` reaches `pread_lend`, then `pread`), is the file's.
struct FileConn {
    file: Arc<FilePlugin>,
    size: u64,
}

impl FileConn {
    fn new(file: Arc<FilePlugin>) -> Result<Self> {
        let size = file.size()?;
        Ok(FileConn { file, size })
    }
}

impl Backend for FileConn {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        self.file.block_size()
    }
    fn can_write(&self) -> Result<bool> {
        self.file.can_write()
    }
    fn can_flush(&self) -> Result<bool> {
        self.file.can_flush()
    }
    fn can_fua(&self) -> Result<bool> {
        self.file.can_fua()
    }
    fn can_trim(&self) -> Result<bool> {
        self.file.can_trim()
    }
    fn can_zero(&self) -> Result<bool> {
        self.file.can_zero()
    }
    fn can_fast_zero(&self) -> Result<bool> {
        self.file.can_fast_zero()
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.file.can_multi_conn()
    }
    fn can_extents(&self) -> Result<bool> {
        self.file.can_extents()
    }
    fn can_cache(&self) -> Result<bool> {
        self.file.can_cache()
    }
    fn is_rotational(&self) -> Result<bool> {
        self.file.is_rotational()
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.file.pread(buf, offset)
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        self.file.pread_lend(count, offset, send)
    }
    fn pread_file(&self, count: u32, offset: u64) -> Option<(BorrowedFd<'_>, u64)> {
        self.file.pread_file(count, offset)
    }
    fn pread_nowait(&self, buf: &mut [u8], offset: u64) -> Option<Result<()>> {
        self.file.pread_nowait(buf, offset)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.file.pwrite(buf, offset, fua)
    }
    fn flush(&self) -> Result<()> {
        self.file.flush()
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.file.trim(count, offset, fua)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.file.zero(count, offset, flags)
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.file.cache(count, offset)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        self.file.extents(count, offset, sink)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{info, info_for};
    use std::path::Path;

    fn temp(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("nbd-rs-file-{}-{name}", std::process::id()));
        let _ = std::fs::remove_file(&d);
        d
    }

    #[test]
    fn read_write_zero_extents() {
        let p = temp("a");
        let f = File::create(&p).unwrap();
        f.set_len(4 << 20).unwrap();
        drop(f);
        let b = FilePlugin::open(p.clone(), false).unwrap();
        assert_eq!(b.size().unwrap(), 4 << 20);
        b.pwrite(&[7u8; 65536], 1 << 20, true).unwrap();
        let mut r = [0u8; 10];
        b.pread(&mut r, (1 << 20) + 100).unwrap();
        assert_eq!(r, [7; 10]);
        let mut e = Extents::new();
        e.reset(0, 4 << 20, false);
        b.extents(4 << 20, 0, &mut e).unwrap();
        let h = allocation::HOLE | allocation::ZERO;
        assert_eq!(
            e.as_slice(),
            &[(1 << 20, h), (65536, 0), ((3 << 20) - 65536, h)]
        );
        b.zero(4096, 1 << 20, ZeroFlags::default()).unwrap();
        b.pread(&mut r, 1 << 20).unwrap();
        assert_eq!(r, [0; 10]);
        b.trim(65536, 1 << 20, false).unwrap();
        assert!(b.pread(&mut r, (4 << 20) - 5).is_err());
        let _ = std::fs::remove_file(&p);
    }

    /// A file in memory (tmpfs) is read whole without waiting; on a disk
    /// file system the read is tried with RWF_NOWAIT and, if the page
    /// cache holds the range, gives the file's bytes; cache=none never
    /// reads this way (it must drop what it reads).
    #[test]
    fn nowait_reads_give_the_files_bytes_or_nothing() {
        let data: Vec<u8> = (0..256 * 1024u32)
            .map(|i| (i * 7 + i / 4096) as u8)
            .collect();
        let shm = Path::new("/dev/shm");
        if shm.is_dir() {
            let p = shm.join(format!("nbd-rs-file-{}-nowait", std::process::id()));
            std::fs::write(&p, &data).unwrap();
            let f = FilePlugin::open(p.clone(), true).unwrap();
            assert!(f.in_memory, "a file on /dev/shm is in memory");
            let mut buf = vec![0u8; 5000];
            assert!(matches!(f.pread_nowait(&mut buf, 1234), Some(Ok(()))));
            assert_eq!(buf, &data[1234..6234]);
            // Past the end: the error is the plugin's, reported here.
            assert!(matches!(
                f.pread_nowait(&mut buf, data.len() as u64 - 10),
                Some(Err(_))
            ));
            let _ = std::fs::remove_file(&p);
        }
        let p = temp("nowait");
        std::fs::write(&p, &data).unwrap();
        let mut f = FilePlugin::open(p.clone(), true).unwrap();
        let mut buf = vec![0u8; 4096];
        for at in [0u64, 777, 200_000] {
            buf.fill(0);
            match f.pread_nowait(&mut buf, at) {
                // Not cached (or not tried on this file system).
                None => {}
                Some(r) => {
                    r.unwrap();
                    assert_eq!(buf, &data[at as usize..at as usize + 4096]);
                }
            }
        }
        f.cache_none = true;
        assert!(f.pread_nowait(&mut buf, 0).is_none(), "cache=none");
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn dir_lists_and_opens_exports() {
        let d = temp("dir");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        std::fs::write(d.join("b.img"), [2u8; 512]).unwrap();
        std::fs::write(d.join("a.img"), [1u8; 1024]).unwrap();
        std::fs::create_dir(d.join("subdir")).unwrap();
        let mut p = Params::new(
            "file",
            vec![("dir".into(), d.to_string_lossy().into_owned())],
        );
        let b = open(&mut p, false).unwrap();
        let info = |name: &str| info_for(1, name, false);
        let names: Vec<String> = b
            .list_exports(&info(""))
            .unwrap()
            .unwrap()
            .into_iter()
            .map(|e| e.0)
            .collect();
        assert_eq!(names, ["a.img", "b.img"]);
        assert_eq!(b.default_export(&info("")).unwrap(), None);
        let e = Arc::clone(&b).open(&info("b.img")).unwrap();
        assert_eq!(e.size().unwrap(), 512);
        let e = Arc::clone(&b).open(&info("")).err().unwrap();
        assert_eq!(e.errno, libc::ENOENT);
        assert!(Arc::clone(&b).open(&info("../x")).is_err());
        assert!(Arc::clone(&b).open(&info("missing")).is_err());
        // Under a filter, each connection's export gets its own layers.
        let top = crate::chain::build(
            "file",
            &["truncate".into()],
            &[format!("dir={}", d.display()), "truncate=4096".into()],
            false,
        )
        .unwrap();
        assert_eq!(top.list_exports(&info("")).unwrap().unwrap().len(), 2);
        assert_eq!(top.open(info("b.img")).unwrap().size().unwrap(), 4096);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn size_is_read_at_each_open() {
        let p = temp("grow");
        std::fs::write(&p, [1u8; 512]).unwrap();
        let info = info();
        let f = Arc::new(FilePlugin::open(p.clone(), false).unwrap());
        let first = Arc::clone(&f).open(&info).unwrap();
        std::fs::write(&p, [2u8; 2048]).unwrap();
        // The open connection keeps the size it saw; a new one sees more.
        assert_eq!(first.size().unwrap(), 512);
        let second = Arc::clone(&f).open(&info).unwrap();
        assert_eq!(second.size().unwrap(), 2048);
        let mut b = [0u8; 4];
        second.pread(&mut b, 2000).unwrap();
        assert_eq!(b, [2; 4]);
        let _ = std::fs::remove_file(&p);
    }

    #[test]
    fn directory_is_dir() {
        let d = temp("directory");
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir(&d).unwrap();
        let ds = d.to_string_lossy().into_owned();
        let mut p = Params::new("file", vec![("directory".into(), ds.clone())]);
        assert!(open(&mut p, false).is_ok());
        let mut p = Params::new(
            "file",
            vec![("dir".into(), ds.clone()), ("directory".into(), ds)],
        );
        assert!(open(&mut p, false).is_err());
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn missing_file_is_an_error() {
        let e = FilePlugin::open(temp("missing"), false).err().unwrap();
        assert!(e.contains("No such file"), "{e}");
    }
}

//! The part of libext2fs (libext2fs.so.2, e2fsprogs) the ext2 filter
//! uses, loaded with dlopen(3) the first time it is needed, and wrapped
//! as a safe API: a [`Filesystem`] opened on any [`Backend`] through an
//! I/O manager of ours, and a [`FileInode`] inside it.
//!
//! libext2fs reads and writes its disk through an "I/O manager", a table
//! of C callbacks. Ours sends each block read and write to the layers
//! below the filter: the channel's private data points to a [`Target`]
//! that holds the backend to use. Layouts and numbers are e2fsprogs
//! 1.47's ABI (ext2fs/ext2_io.h, ext2fs/ext2fs.h, ext2fs/ext2_err.h).

use std::ffi::{c_char, c_int, c_long, c_uint, c_ulong, c_ulonglong, c_void, CStr, CString};
use std::sync::OnceLock;

use nbd_core::server::backend::{Backend, Error};

type Errcode = c_long;
type Filsys = *mut c_void;
type File = *mut c_void;

const EXT2_ET_MAGIC_IO_CHANNEL: Errcode = 2133571333;
const EXT2_ET_MAGIC_IO_MANAGER: Errcode = 2133571335;
const EXT2_ET_SHORT_READ: Errcode = 2133571364;
const EXT2_ET_INVALID_ARGUMENT: Errcode = 2133571399;
const EXT2_ET_FILE_NOT_FOUND: Errcode = 2133571404;
const EXT2_ET_RO_FILSYS: Errcode = 2133571349;

const EXT2_FLAG_RW: c_int = 0x01;
const EXT2_FLAG_64BITS: c_int = 0x20000;
const EXT2_FILE_WRITE: c_int = 0x0001;
const EXT2_SEEK_SET: c_int = 0;
const EXT2_ROOT_INO: c_uint = 2;

/// `struct struct_io_channel`.
#[repr(C)]
struct IoChannel {
    magic: Errcode,
    manager: *const IoManager,
    name: *mut c_char,
    block_size: c_int,
    read_error: *const c_void,
    write_error: *const c_void,
    refcount: c_int,
    flags: c_int,
    reserved: [c_long; 14],
    private_data: *mut c_void,
    app_data: *mut c_void,
    align: c_int,
}

type Channel = *mut IoChannel;

/// `struct struct_io_manager`: the callbacks libext2fs calls for I/O.
#[repr(C)]
struct IoManager {
    magic: Errcode,
    name: *const c_char,
    open: unsafe extern "C" fn(*const c_char, c_int, *mut Channel) -> Errcode,
    close: unsafe extern "C" fn(Channel) -> Errcode,
    set_blksize: unsafe extern "C" fn(Channel, c_int) -> Errcode,
    read_blk: unsafe extern "C" fn(Channel, c_ulong, c_int, *mut c_void) -> Errcode,
    write_blk: unsafe extern "C" fn(Channel, c_ulong, c_int, *const c_void) -> Errcode,
    flush: unsafe extern "C" fn(Channel) -> Errcode,
    write_byte: unsafe extern "C" fn(Channel, c_ulong, c_int, *const c_void) -> Errcode,
    set_option: unsafe extern "C" fn(Channel, *const c_char, *const c_char) -> Errcode,
    get_stats: Option<unsafe extern "C" fn(Channel, *mut *mut c_void) -> Errcode>,
    read_blk64: unsafe extern "C" fn(Channel, c_ulonglong, c_int, *mut c_void) -> Errcode,
    write_blk64: unsafe extern "C" fn(Channel, c_ulonglong, c_int, *const c_void) -> Errcode,
    // Left out (NULL): libext2fs answers "unimplemented" without them.
    discard: Option<unsafe extern "C" fn(Channel, c_ulonglong, c_ulonglong) -> Errcode>,
    cache_readahead: Option<unsafe extern "C" fn(Channel, c_ulonglong, c_ulonglong) -> Errcode>,
    zeroout: Option<unsafe extern "C" fn(Channel, c_ulonglong, c_ulonglong) -> Errcode>,
    reserved: [c_long; 14],
}

// SAFETY: the manager is immutable static data (a table of functions and
// a static name); libext2fs only reads it.
unsafe impl Sync for IoManager {}

static MANAGER: IoManager = IoManager {
    magic: EXT2_ET_MAGIC_IO_MANAGER,
    name: c"nbdkit".as_ptr(),
    open: io_open,
    close: io_close,
    set_blksize: io_set_blksize,
    read_blk: io_read_blk,
    write_blk: io_write_blk,
    flush: io_flush,
    write_byte: io_write_byte,
    set_option: io_set_option,
    get_stats: None,
    read_blk64: io_read_blk64,
    write_blk64: io_write_blk64,
    discard: None,
    cache_readahead: None,
    zeroout: None,
    reserved: [0; 14],
};

/// What the I/O channel reads and writes: the backend in force now. The
/// filter sets it before each use of the filesystem (under its lock), so
/// it is never dangling while libext2fs runs.
pub struct Target {
    pub backend: Option<*const dyn Backend>,
    /// The last error from the backend, for a better message than the
    /// errcode libext2fs passes up.
    pub last_error: Option<Error>,
}

// SAFETY: the pointer is only dereferenced while the filter holds the
// lock that guards the filesystem and while the backend it points to is
// borrowed by the call in progress (or owned by the filter).
unsafe impl Send for Target {}

impl Target {
    /// Runs `f` on the backend in force.
    fn with<T>(&mut self, f: impl FnOnce(&dyn Backend) -> Result<T, Error>) -> Result<T, Errcode> {
        let Some(b) = self.backend else {
            return Err(EXT2_ET_INVALID_ARGUMENT);
        };
        // SAFETY: see the type's comment: set by the filter for the
        // duration of the call that reaches here.
        match f(unsafe { &*b }) {
            Ok(v) => Ok(v),
            Err(e) => {
                self.last_error = Some(e);
                Err(EXT2_ET_SHORT_READ)
            }
        }
    }
}

/// The Target of a channel.
///
/// # Safety
/// `c` must be a channel made by `io_open`.
unsafe fn target<'a>(c: Channel) -> &'a mut Target {
    &mut *((*c).private_data as *mut Target)
}

/// The channel's name is the Target's address, in hex: how the filter
/// hands it to `ext2fs_open2`, whose only way in is a name.
unsafe extern "C" fn io_open(name: *const c_char, _flags: c_int, ret: *mut Channel) -> Errcode {
    let Some(addr) = CStr::from_ptr(name)
        .to_str()
        .ok()
        .and_then(|s| s.strip_prefix("nbdkit:"))
        .and_then(|h| usize::from_str_radix(h, 16).ok())
    else {
        return EXT2_ET_INVALID_ARGUMENT;
    };
    let c = libc::calloc(1, std::mem::size_of::<IoChannel>()) as Channel;
    if c.is_null() {
        return libc::ENOMEM as Errcode;
    }
    (*c).magic = EXT2_ET_MAGIC_IO_CHANNEL;
    (*c).manager = &MANAGER;
    (*c).name = libc::strdup(name);
    (*c).block_size = 1024;
    (*c).refcount = 1;
    (*c).private_data = addr as *mut c_void;
    *ret = c;
    0
}

unsafe extern "C" fn io_close(c: Channel) -> Errcode {
    (*c).refcount -= 1;
    if (*c).refcount > 0 {
        return 0;
    }
    libc::free((*c).name as *mut c_void);
    libc::free(c as *mut c_void);
    0
}

unsafe extern "C" fn io_set_blksize(c: Channel, size: c_int) -> Errcode {
    (*c).block_size = size;
    0
}

/// A count in blocks, or, when negative, in bytes (libext2fs's rule).
unsafe fn span(c: Channel, block: u64, count: c_int) -> (u64, usize) {
    let bs = (*c).block_size as u64;
    let len = if count < 0 {
        (-(count as i64)) as usize
    } else {
        count as usize * bs as usize
    };
    (block * bs, len)
}

unsafe extern "C" fn io_read_blk64(
    c: Channel,
    block: c_ulonglong,
    count: c_int,
    data: *mut c_void,
) -> Errcode {
    let (offset, len) = span(c, block, count);
    let buf = std::slice::from_raw_parts_mut(data as *mut u8, len);
    match target(c).with(|b| b.pread(buf, offset)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

unsafe extern "C" fn io_write_blk64(
    c: Channel,
    block: c_ulonglong,
    count: c_int,
    data: *const c_void,
) -> Errcode {
    let (offset, len) = span(c, block, count);
    let buf = std::slice::from_raw_parts(data as *const u8, len);
    match target(c).with(|b| b.pwrite(buf, offset, false)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

unsafe extern "C" fn io_read_blk(
    c: Channel,
    block: c_ulong,
    count: c_int,
    data: *mut c_void,
) -> Errcode {
    io_read_blk64(c, block as c_ulonglong, count, data)
}

unsafe extern "C" fn io_write_blk(
    c: Channel,
    block: c_ulong,
    count: c_int,
    data: *const c_void,
) -> Errcode {
    io_write_blk64(c, block as c_ulonglong, count, data)
}

unsafe extern "C" fn io_write_byte(
    c: Channel,
    offset: c_ulong,
    count: c_int,
    data: *const c_void,
) -> Errcode {
    if count < 0 {
        return EXT2_ET_INVALID_ARGUMENT;
    }
    let buf = std::slice::from_raw_parts(data as *const u8, count as usize);
    #[allow(clippy::unnecessary_cast)] // c_ulong is u64 on 64-bit Linux only
    match target(c).with(|b| b.pwrite(buf, offset as u64, false)) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

unsafe extern "C" fn io_flush(c: Channel) -> Errcode {
    match target(c).with(|b| if b.can_flush()? { b.flush() } else { Ok(()) }) {
        Ok(()) => 0,
        Err(e) => e,
    }
}

unsafe extern "C" fn io_set_option(_: Channel, _: *const c_char, _: *const c_char) -> Errcode {
    EXT2_ET_INVALID_ARGUMENT
}

struct Lib {
    open2: unsafe extern "C" fn(
        *const c_char,
        *const c_char,
        c_int,
        c_int,
        c_uint,
        *const IoManager,
        *mut Filsys,
    ) -> Errcode,
    close: unsafe extern "C" fn(Filsys) -> Errcode,
    free: unsafe extern "C" fn(Filsys),
    flush: unsafe extern "C" fn(Filsys) -> Errcode,
    namei: unsafe extern "C" fn(Filsys, c_uint, c_uint, *const c_char, *mut c_uint) -> Errcode,
    file_open: unsafe extern "C" fn(Filsys, c_uint, c_int, *mut File) -> Errcode,
    file_close: unsafe extern "C" fn(File) -> Errcode,
    file_flush: unsafe extern "C" fn(File) -> Errcode,
    file_read: unsafe extern "C" fn(File, *mut c_void, c_uint, *mut c_uint) -> Errcode,
    file_write: unsafe extern "C" fn(File, *const c_void, c_uint, *mut c_uint) -> Errcode,
    file_llseek: unsafe extern "C" fn(File, u64, c_int, *mut u64) -> Errcode,
    file_get_lsize: unsafe extern "C" fn(File, *mut u64) -> Errcode,
    error_message: unsafe extern "C" fn(Errcode) -> *const c_char,
}

fn lib() -> Result<&'static Lib, String> {
    static LIB: OnceLock<Result<Lib, String>> = OnceLock::new();
    LIB.get_or_init(|| {
        // SAFETY: dlopen with a NUL-terminated name.
        let h = unsafe {
            libc::dlopen(
                c"libext2fs.so.2".as_ptr(),
                libc::RTLD_NOW | libc::RTLD_LOCAL,
            )
        };
        if h.is_null() {
            return Err("ext2: cannot load libext2fs.so.2: install the libext2fs2 package".into());
        }
        fn sym<F: Copy>(h: *mut c_void, name: &CStr) -> Result<F, String> {
            assert_eq!(std::mem::size_of::<F>(), std::mem::size_of::<*mut c_void>());
            // SAFETY: a handle from dlopen and a NUL-terminated name; the
            // search covers the library's dependencies (com_err).
            let p = unsafe { libc::dlsym(h, name.as_ptr()) };
            if p.is_null() {
                return Err(format!("ext2: libext2fs lacks {}", name.to_string_lossy()));
            }
            // SAFETY: F is the function type e2fsprogs' header gives the
            // symbol, pointer-sized.
            Ok(unsafe { std::mem::transmute_copy::<*mut c_void, F>(&p) })
        }
        // The library's messages, for error_message().
        let init: unsafe extern "C" fn() = sym(h, c"initialize_ext2_error_table")?;
        // SAFETY: registers a static table; safe to call more than once.
        unsafe { init() };
        Ok(Lib {
            open2: sym(h, c"ext2fs_open2")?,
            close: sym(h, c"ext2fs_close")?,
            free: sym(h, c"ext2fs_free")?,
            flush: sym(h, c"ext2fs_flush")?,
            namei: sym(h, c"ext2fs_namei")?,
            file_open: sym(h, c"ext2fs_file_open")?,
            file_close: sym(h, c"ext2fs_file_close")?,
            file_flush: sym(h, c"ext2fs_file_flush")?,
            file_read: sym(h, c"ext2fs_file_read")?,
            file_write: sym(h, c"ext2fs_file_write")?,
            file_llseek: sym(h, c"ext2fs_file_llseek")?,
            file_get_lsize: sym(h, c"ext2fs_file_get_lsize")?,
            error_message: sym(h, c"error_message")?,
        })
    })
    .as_ref()
    .map_err(Clone::clone)
}

/// An errno for an errcode: libext2fs returns plain errnos below its
/// table's base, and its own codes above.
fn errno_of(code: Errcode) -> i32 {
    match code {
        1..=4095 => code as i32,
        EXT2_ET_FILE_NOT_FOUND => libc::ENOENT,
        EXT2_ET_RO_FILSYS => libc::EROFS,
        _ => libc::EIO,
    }
}

/// An open filesystem; every use must be under the filter's lock, with
/// `target.backend` set.
pub struct Filesystem {
    lib: &'static Lib,
    fs: Filsys,
    /// Boxed so its address, given to libext2fs in the channel name,
    /// stays put.
    pub target: Box<Target>,
}

// SAFETY: libext2fs has no thread affinity; the filter serialises all use.
unsafe impl Send for Filesystem {}

impl Filesystem {
    fn error(&mut self, what: &str, code: Errcode) -> Error {
        if let Some(e) = self.target.last_error.take() {
            return Error::new(e.errno, format!("ext2: {what}: {e}"));
        }
        // SAFETY: error_message returns a static or thread-local string.
        let msg = unsafe { CStr::from_ptr((self.lib.error_message)(code)) }.to_string_lossy();
        Error::new(errno_of(code), format!("ext2: {what}: {msg}"))
    }

    /// Opens the filesystem on `backend` (which must stay valid until the
    /// target is pointed elsewhere), for writing if `writable`.
    pub fn open(backend: *const dyn Backend, writable: bool) -> Result<Filesystem, Error> {
        let lib = lib().map_err(|e| Error::new(libc::EIO, e))?;
        let mut me = Filesystem {
            lib,
            fs: std::ptr::null_mut(),
            target: Box::new(Target {
                backend: Some(backend),
                last_error: None,
            }),
        };
        let name = CString::new(format!(
            "nbdkit:{:x}",
            &*me.target as *const Target as usize
        ))
        .expect("hex digits");
        let flags = EXT2_FLAG_64BITS | if writable { EXT2_FLAG_RW } else { 0 };
        let mut fs = std::ptr::null_mut();
        // SAFETY: a NUL-terminated name our manager parses, our static
        // manager, and an out-pointer.
        let r = unsafe {
            (lib.open2)(
                name.as_ptr(),
                std::ptr::null(),
                flags,
                0,
                0,
                &MANAGER,
                &mut fs,
            )
        };
        if r != 0 {
            return Err(me.error("open", r));
        }
        me.fs = fs;
        Ok(me)
    }

    /// Opens the file at the absolute `path`.
    pub fn open_file(&mut self, path: &str, writable: bool) -> Result<FileInode, Error> {
        let c =
            CString::new(path).map_err(|_| Error::new(libc::EINVAL, "ext2: path contains NUL"))?;
        let mut ino: c_uint = 0;
        // SAFETY: an open filesystem, a NUL-terminated path, out-pointer.
        let r = unsafe {
            (self.lib.namei)(self.fs, EXT2_ROOT_INO, EXT2_ROOT_INO, c.as_ptr(), &mut ino)
        };
        if r != 0 {
            return Err(self.error(&format!("{path}: namei"), r));
        }
        let mut file = std::ptr::null_mut();
        let flags = if writable { EXT2_FILE_WRITE } else { 0 };
        // SAFETY: an open filesystem and an inode number it gave us.
        let r = unsafe { (self.lib.file_open)(self.fs, ino, flags, &mut file) };
        if r != 0 {
            return Err(self.error(&format!("{path}: open"), r));
        }
        Ok(FileInode { file })
    }

    pub fn size(&mut self, f: &FileInode) -> Result<u64, Error> {
        let mut size = 0u64;
        // SAFETY: an open file and an out-pointer.
        let r = unsafe { (self.lib.file_get_lsize)(f.file, &mut size) };
        if r != 0 {
            return Err(self.error("get size", r));
        }
        Ok(size)
    }

    fn seek(&mut self, f: &FileInode, offset: u64) -> Result<(), Error> {
        let mut pos = 0u64;
        // SAFETY: an open file and an out-pointer.
        let r = unsafe { (self.lib.file_llseek)(f.file, offset, EXT2_SEEK_SET, &mut pos) };
        if r != 0 {
            return Err(self.error("seek", r));
        }
        Ok(())
    }

    pub fn read(&mut self, f: &FileInode, buf: &mut [u8], offset: u64) -> Result<(), Error> {
        self.seek(f, offset)?;
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(u32::MAX as usize) as c_uint;
            let mut got: c_uint = 0;
            // SAFETY: an open file and a writable buffer of `want` bytes.
            let r = unsafe {
                (self.lib.file_read)(
                    f.file,
                    buf[done..].as_mut_ptr() as *mut c_void,
                    want,
                    &mut got,
                )
            };
            if r != 0 {
                return Err(self.error("read", r));
            }
            if got == 0 {
                return Err(Error::new(libc::EIO, "ext2: read: unexpected end of file"));
            }
            done += got as usize;
        }
        Ok(())
    }

    pub fn write(&mut self, f: &FileInode, buf: &[u8], offset: u64) -> Result<(), Error> {
        self.seek(f, offset)?;
        let mut done = 0;
        while done < buf.len() {
            let want = (buf.len() - done).min(u32::MAX as usize) as c_uint;
            let mut wrote: c_uint = 0;
            // SAFETY: an open file and a readable buffer of `want` bytes.
            let r = unsafe {
                (self.lib.file_write)(
                    f.file,
                    buf[done..].as_ptr() as *const c_void,
                    want,
                    &mut wrote,
                )
            };
            if r != 0 {
                return Err(self.error("write", r));
            }
            if wrote == 0 {
                return Err(Error::new(libc::EIO, "ext2: write: no progress"));
            }
            done += wrote as usize;
        }
        Ok(())
    }

    /// Writes the file's cached blocks and the filesystem's metadata.
    pub fn flush(&mut self, f: &FileInode) -> Result<(), Error> {
        // SAFETY: an open file, then its open filesystem.
        let r = unsafe { (self.lib.file_flush)(f.file) };
        if r != 0 {
            return Err(self.error("flush", r));
        }
        // SAFETY: as above.
        let r = unsafe { (self.lib.flush)(self.fs) };
        if r != 0 {
            return Err(self.error("flush", r));
        }
        Ok(())
    }

    /// Closes `f` and then the filesystem, writing what is left.
    pub fn close(mut self, f: FileInode) -> Result<(), Error> {
        // SAFETY: an open file, closed once (consumed here).
        let r1 = unsafe { (self.lib.file_close)(f.file) };
        // SAFETY: the open filesystem. ext2fs_close frees it when it
        // succeeds; when its final flush fails it returns without
        // freeing, and Drop frees it.
        let r2 = unsafe { (self.lib.close)(self.fs) };
        if r2 == 0 {
            self.fs = std::ptr::null_mut();
        }
        if r1 != 0 {
            return Err(self.error("close file", r1));
        }
        if r2 != 0 {
            return Err(self.error("close", r2));
        }
        Ok(())
    }
}

impl Drop for Filesystem {
    fn drop(&mut self) {
        if !self.fs.is_null() {
            // SAFETY: the filesystem was not closed: free it without
            // writing (its backend may be gone).
            unsafe { (self.lib.free)(self.fs) };
        }
    }
}

/// An open file inside a [`Filesystem`].
pub struct FileInode {
    file: File,
}

// SAFETY: used only together with its filesystem, under the same lock.
unsafe impl Send for FileInode {}

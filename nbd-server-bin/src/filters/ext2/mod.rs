//! The ext2 filter (nbdkit-ext2-filter(1)): serves one file from inside
//! the ext2, ext3 or ext4 filesystem that the layers below hold, read and
//! written through libext2fs (see `libext2fs.rs`).
//!
//! `ext2file=/PATH` names the file; `ext2file=exportname` takes it from
//! the client's export name (the layers below are then opened on the
//! default export ""). As in nbdkit, connections take turns: a second
//! one waits in its open until the first has closed, since two users of
//! one filesystem would corrupt it. The filesystem is opened when the
//! connection is ready (`prepare`) and closed, with its metadata written,
//! when it ends.

mod libext2fs;

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Read, Result};
use parking_lot::{Condvar, Mutex};

use crate::chain::{Filter, FilterHandle, Lower, OpenNext};

use super::FilterSpec;
use libext2fs::{FileInode, Filesystem};

pub const FILTER: FilterSpec = FilterSpec {
    name: "ext2",
    params: &[(
        "ext2file",
        "the absolute path of the file inside the filesystem, or 'exportname' for the client's export name (required)",
    )],
    open: |p, ro| {
        let file = p
            .take("ext2file")
            .ok_or_else(|| p.err("missing ext2file parameter"))?;
        let path = if file == "exportname" {
            None
        } else if file.starts_with('/') {
            Some(file)
        } else {
            return Err(p.err(format!("ext2file must be an absolute path: {file}")));
        };
        Ok(Arc::new(Ext2 {
            path,
            readonly: ro,
            busy: Mutex::new(false),
            freed: Condvar::new(),
        }))
    },
};

struct Ext2 {
    /// The file, or None to take the export name.
    path: Option<String>,
    readonly: bool,
    /// Whether a connection has the filesystem; the next waits on `freed`.
    busy: Mutex<bool>,
    freed: Condvar,
}

impl Ext2 {
    fn acquire(&self) {
        let mut busy = self.busy.lock();
        while *busy {
            self.freed.wait(&mut busy);
        }
        *busy = true;
    }

    fn release(&self) {
        *self.busy.lock() = false;
        self.freed.notify_one();
    }
}

impl Filter for Ext2 {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        let path = match &self.path {
            Some(p) => p.clone(),
            // Relative names are looked up from the root, as nbdkit does
            // (an NBD URI's path loses its leading slash).
            None => String::from_utf8_lossy(&info.export_name).into_owned(),
        };
        let below = if self.path.is_none() {
            ConnectionInfo {
                export_name: Vec::new(),
                ..info.clone()
            }
        } else {
            info.clone()
        };
        self.acquire();
        if let Err(e) = next.open(&below) {
            self.release();
            return Err(e);
        }
        Ok(Box::new(Handle {
            filter: self,
            path,
            writable: !info.readonly,
            state: Mutex::new(State {
                fs: None,
                lower: None,
            }),
        }))
    }
}

/// One connection's filesystem and file.
struct State {
    fs: Option<(Filesystem, FileInode)>,
    /// The layers below, kept for the filesystem's I/O outside requests
    /// (its final writes at close).
    lower: Option<Box<Lower>>,
}

struct Handle {
    filter: Arc<Ext2>,
    path: String,
    writable: bool,
    state: Mutex<State>,
}

impl Handle {
    /// Runs `f` on the filesystem, its I/O going to the layers below.
    fn with<T>(&self, f: impl FnOnce(&mut Filesystem, &FileInode) -> Result<T>) -> Result<T> {
        let mut st = self.state.lock();
        let st = &mut *st;
        let (fs, file) = st
            .fs
            .as_mut()
            .ok_or_else(|| Error::new(libc::EIO, "ext2: filesystem not open"))?;
        f(fs, file)
    }
}

impl FilterHandle for Handle {
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        let writable = self.writable && !self.filter.readonly && next.can_write()?;
        // `next` outlives this call only; the target is pointed at the
        // kept layers in `keep_next`, which runs before any request.
        let ptr: *const dyn Backend = next;
        // SAFETY: erases the borrow's lifetime for the raw pointer the
        // target keeps; it is replaced (keep_next) before `next` ends.
        let ptr: *const (dyn Backend + 'static) = unsafe { std::mem::transmute(ptr) };
        let mut fs = Filesystem::open(ptr, writable)?;
        let file = fs.open_file(&self.path, writable)?;
        self.state.lock().fs = Some((fs, file));
        Ok(())
    }

    fn keep_next(&self, next: Lower) {
        let mut st = self.state.lock();
        let lower = Box::new(next);
        let ptr: *const dyn Backend = &*lower as &dyn Backend;
        // SAFETY: the box is kept in the same state as the filesystem and
        // dropped only after it (close).
        let ptr: *const (dyn Backend + 'static) = unsafe { std::mem::transmute(ptr) };
        if let Some((fs, _)) = st.fs.as_mut() {
            fs.target.backend = Some(ptr);
        }
        st.lower = Some(lower);
    }

    fn close(&self, _: &ConnectionInfo) {
        let mut st = self.state.lock();
        if let Some((fs, file)) = st.fs.take() {
            if let Err(e) = fs.close(file) {
                crate::log::error!("{e}");
            }
        }
        st.lower = None;
        drop(st);
        self.filter.release();
    }

    fn size(&self, _: &dyn Backend) -> Result<u64> {
        self.with(|fs, f| fs.size(f))
    }
    fn can_write(&self, next: &dyn Backend) -> Result<bool> {
        Ok(self.writable && !self.filter.readonly && next.can_write()?)
    }
    fn can_flush(&self, _: &dyn Backend) -> Result<bool> {
        Ok(true)
    }
    fn can_fua(&self, _: &dyn Backend) -> Result<bool> {
        Ok(true)
    }
    fn can_trim(&self, _: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn can_zero(&self, _: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn can_fast_zero(&self, _: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn can_extents(&self, _: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    fn can_cache(&self, _: &dyn Backend) -> Result<bool> {
        Ok(false)
    }
    /// One filesystem per connection, and connections take turns.
    fn can_multi_conn(&self, _: &dyn Backend) -> Result<bool> {
        Ok(false)
    }

    fn pread(&self, _: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let offset = r.offset;
        let buf = r.buf();
        self.with(|fs, f| fs.read(f, buf, offset))
    }

    fn pwrite(&self, _: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.with(|fs, f| {
            fs.write(f, buf, offset)?;
            if fua {
                fs.flush(f)?;
            }
            Ok(())
        })
    }

    fn flush(&self, _: &dyn Backend) -> Result<()> {
        self.with(|fs, f| fs.flush(f))
    }
}

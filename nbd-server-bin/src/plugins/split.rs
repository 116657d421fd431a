//! The split plugin: several files concatenated into one disk.
//!
//! Each part is served by the file plugin's code at its own offset: a
//! request spanning parts is cut at the boundaries, and each piece goes to
//! its part at the offset *within that part* (nbdkit 1.32.5 writes to the
//! second and later files at the wrong offset). Block status with REQ_ONE
//! is answered by the one file holding the offset. Sizes are taken at start;
//! the files must not be resized while served.

use std::path::PathBuf;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result, ZeroFlags};

use super::file::FilePlugin;
use crate::params::Params;

use std::sync::Arc;

use super::PluginSpec;
use crate::chain::Plugin;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "split",
    magic: Some("file"),
    params: &[(
        "file",
        "one of the files concatenated into the disk, in order",
    )],
    open: |p, ro| Ok(Arc::new(Split::open(p, ro)?)),
};

pub struct Split {
    /// (start offset, size, part)
    parts: Vec<(u64, u64, FilePlugin)>,
    size: u64,
    writable: bool,
}

impl Split {
    pub fn open(p: &mut Params, readonly: bool) -> std::result::Result<Split, String> {
        let files = p.take_all("file");
        if files.is_empty() {
            return Err(p.err("at least one file= parameter is required"));
        }
        let mut parts = Vec::new();
        let mut size = 0u64;
        let mut writable = !readonly;
        for f in files {
            let part = FilePlugin::open(PathBuf::from(&f), readonly)
                .map_err(|e| e.replacen("file:", "split:", 1))?;
            let s = part.size().map_err(|e| format!("split: {f}: {e}"))?;
            writable &= part.can_write().unwrap_or(false);
            parts.push((size, s, part));
            size += s;
        }
        Ok(Split {
            parts,
            size,
            writable,
        })
    }

    /// Calls `f(part, offset in part, range of the request)` for each piece
    /// of `len` bytes at `offset`.
    fn each(
        &self,
        offset: u64,
        len: u64,
        mut f: impl FnMut(&FilePlugin, u64, std::ops::Range<usize>) -> Result<bool>,
    ) -> Result<()> {
        let end = offset + len;
        let first = self.parts.partition_point(|(st, s, _)| st + s <= offset);
        for (st, s, part) in &self.parts[first..] {
            if *st >= end {
                break;
            }
            let a = offset.max(*st);
            let b = end.min(st + s);
            if a >= b {
                continue;
            }
            if !f(part, a - st, (a - offset) as usize..(b - offset) as usize)? {
                break;
            }
        }
        Ok(())
    }
}

impl Backend for Split {
    fn size(&self) -> Result<u64> {
        Ok(self.size)
    }
    fn can_write(&self) -> Result<bool> {
        Ok(self.writable)
    }
    supports!(
        can_flush,
        can_fua,
        can_trim,
        can_zero,
        can_multi_conn,
        can_extents,
        can_cache
    );
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.each(offset, buf.len() as u64, |p, o, r| {
            p.pread(&mut buf[r], o).map(|_| true)
        })
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.each(offset, buf.len() as u64, |p, o, r| {
            p.pwrite(&buf[r], o, fua).map(|_| true)
        })
    }
    fn flush(&self) -> Result<()> {
        for (_, _, p) in &self.parts {
            p.flush()?;
        }
        Ok(())
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.each(offset, count as u64, |p, o, r| {
            p.trim(r.len() as u32, o, fua).map(|_| true)
        })
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.each(offset, count as u64, |p, o, r| {
            p.zero(r.len() as u32, o, flags).map(|_| true)
        })
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.each(offset, count as u64, |p, o, r| {
            p.cache(r.len() as u32, o).map(|_| true)
        })
    }
    /// Each part's extents in turn; with REQ_ONE, only the part holding
    /// `offset` answers, so the one extent ends at that file's end at the
    /// latest, as in nbdkit.
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let mut part_sink = Extents::new();
        let one = sink.req_one();
        self.each(offset, count as u64, |p, o, r| {
            part_sink.reset(o, r.len() as u32, one);
            p.extents(r.len() as u32, o, &mut part_sink)?;
            let mut pos = offset + r.start as u64;
            for &(len, flags) in part_sink.as_slice() {
                if !sink.add(pos, len, flags)? {
                    return Ok(false);
                }
                pos += len;
            }
            // A part that described less than asked: the rest as data.
            let end = offset + r.end as u64;
            let none = pos == offset + r.start as u64;
            if pos < end && (!one || none) && !sink.add(pos, end - pos, 0)? {
                return Ok(false);
            }
            Ok(!one)
        })
    }
}

/// The same disk for every connection.
impl Plugin for Split {
    fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        Ok(Box::new(self))
    }
}

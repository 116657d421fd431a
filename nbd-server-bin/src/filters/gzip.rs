//! The gzip filter (nbdkit-gzip-filter(1)): the layer below holds a gzip
//! file; the client sees its uncompressed contents, read-only.
//!
//! gzip cannot be read from the middle, so, as nbdkit does, the first
//! connection decompresses the whole file (flate2) into a hidden
//! temporary file under `$TMPDIR` (default `/var/tmp`), which every later
//! connection reads from. The layer below is opened read-only and is
//! asked nothing after that.

use std::fs::File;
use std::io::{self, Read as _};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "gzip",
    params: &[],
    open: |_, _| {
        let tmpdir = crate::scratch::tmpdir();
        Ok(Arc::new(Gzip {
            tmpdir,
            plain: Mutex::new(None),
        }))
    },
};

struct Gzip {
    tmpdir: PathBuf,
    /// The uncompressed data, once the first connection has made it.
    plain: Mutex<Option<Arc<Plain>>>,
}

/// The uncompressed contents, in a temporary file already unlinked.
struct Plain {
    file: File,
    size: u64,
}

impl Filter for Gzip {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        // Whatever the client asks, the compressed file is only read.
        next.open(&ConnectionInfo {
            readonly: true,
            ..info.clone()
        })?;
        Ok(Box::new(Pending(self)))
    }
}

/// A connection's handle before `prepare` has found (or made) the
/// uncompressed file: it is made with the layers below, which only
/// `prepare` gets.
struct Pending(Arc<Gzip>);

impl FilterHandle for Pending {
    fn prepare(&self, next: &dyn Backend, _: &ConnectionInfo) -> Result<()> {
        // The lock is held while decompressing, so a second connection
        // waits for the first instead of decompressing again.
        let mut plain = self.0.plain.lock();
        if plain.is_none() {
            *plain = Some(Arc::new(uncompress(next, &self.0.tmpdir)?));
        }
        Ok(())
    }

    answers!(
        true: can_multi_conn, can_cache;
        false: can_write, can_extents;
    );

    fn size(&self, _: &dyn Backend) -> Result<u64> {
        Ok(self.plain()?.size)
    }

    fn pread(&self, _: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let plain = self.plain()?;
        let offset = r.offset;
        plain
            .file
            .read_exact_at(r.buf(), offset)
            .map_err(|e| io_error("pread", e))
    }

    fn cache(&self, _: &dyn Backend, _: u32, _: u64) -> Result<()> {
        // Everything is already in a local file.
        Ok(())
    }

    fn extents(&self, _: &dyn Backend, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // The extents below are those of the compressed file: all data.
        sink.add(offset, count as u64, 0).map(|_| ())
    }
}

impl Pending {
    fn plain(&self) -> Result<Arc<Plain>> {
        self.0
            .plain
            .lock()
            .clone()
            .ok_or_else(|| Error::new(libc::EIO, "gzip: not prepared"))
    }
}

fn io_error(what: &str, e: io::Error) -> Error {
    Error::new(
        e.raw_os_error().unwrap_or(libc::EIO),
        format!("gzip: {what}: {e}"),
    )
}

/// The layer below as a `std::io::Read`, from its start.
struct BelowReader<'a> {
    next: &'a dyn Backend,
    pos: u64,
    size: u64,
}

impl io::Read for BelowReader<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = (self.size - self.pos).min(buf.len() as u64) as usize;
        if n == 0 {
            return Ok(0);
        }
        self.next
            .pread(&mut buf[..n], self.pos)
            .map_err(|e| io::Error::from_raw_os_error(e.errno))?;
        self.pos += n as u64;
        Ok(n)
    }
}

/// Decompresses the gzip file below into a new hidden file in `tmpdir`.
fn uncompress(next: &dyn Backend, tmpdir: &Path) -> Result<Plain> {
    let size = next.size()?;
    let below = BelowReader { next, pos: 0, size };
    // Reads of 128K from below, as nbdkit's buffer.
    let mut gz = flate2::read::GzDecoder::new(io::BufReader::with_capacity(128 << 10, below));
    let file = crate::scratch::hidden_file(tmpdir, "gzip")
        .map_err(|e| io_error(&tmpdir.display().to_string(), e))?;
    let mut buf = vec![0u8; 128 << 10];
    let mut out = 0u64;
    loop {
        let n = match gz.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(io_error("inflate", e)),
        };
        file.write_all_at(&buf[..n], out)
            .map_err(|e| io_error("write", e))?;
        out += n as u64;
    }
    Ok(Plain { file, size: out })
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::sync::Arc;

    use nbd_core::server::backend::Backend;

    use crate::chain::testing::{filter_over, info};
    use crate::plugins::memory::Memory;

    fn gzipped(data: &[u8]) -> Vec<u8> {
        let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn serves_the_uncompressed_bytes() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 / 5) as u8).collect();
        let gz = gzipped(&data);
        let mem = Arc::new(Memory::new(gz.len() as u64));
        mem.pwrite(&gz, 0, false).unwrap();
        let chain = filter_over(&super::FILTER, &[], mem as _);
        let c = chain.open(info()).unwrap();
        assert_eq!(c.size().unwrap(), data.len() as u64);
        assert!(!c.can_write().unwrap());
        let mut b = vec![0u8; 1000];
        c.pread(&mut b, 123_456).unwrap();
        assert_eq!(b, data[123_456..124_456]);
        // A second connection reads the same file.
        let c2 = chain.open(info()).unwrap();
        c2.pread(&mut b, 0).unwrap();
        assert_eq!(b, data[..1000]);
    }

    #[test]
    fn not_gzip_is_refused_on_open() {
        let mem = Arc::new(Memory::new(4096));
        mem.pwrite(b"plain text", 0, false).unwrap();
        let chain = filter_over(&super::FILTER, &[], mem as _);
        let e = chain.open(info()).err().unwrap();
        assert!(e.message.starts_with("gzip: inflate: "), "{e}");
    }
}

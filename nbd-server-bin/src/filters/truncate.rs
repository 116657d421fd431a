//! The truncate filter: changes the size of the layer below, to
//! `truncate=SIZE` and/or rounded up or down to a power of 2, as
//! nbdkit-truncate-filter(1). Past the real end, reads are zeroes, writes
//! must be zeroes (else ENOSPC), and trims, zeroes and cache requests do
//! nothing; block status says hole and zero there.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::chain::{Filter, FilterHandle, OpenNext};

use super::extents::extents_at;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "truncate",
    params: &[
        (
            "truncate",
            "the size to serve (default: the size of the layer below)",
        ),
        (
            "round-up",
            "round the size up to a multiple of this power of 2",
        ),
        (
            "round-down",
            "round the size down to a multiple of this power of 2",
        ),
    ],
    open: |p, _| {
        let truncate = p.take_size("truncate")?;
        let up = p.take_size("round-up")?;
        let down = p.take_size("round-down")?;
        for (k, v) in [("round-up", up), ("round-down", down)] {
            if let Some(v) = v {
                if v == 0 || !v.is_power_of_two() {
                    return Err(p.err(format!("{k} must be a power of 2: {v}")));
                }
            }
        }
        Ok(Arc::new(Truncate { truncate, up, down }))
    },
};

/// The size asked for; the real size is the layer below's, for each
/// connection (each export of a plugin with several has its own).
struct Truncate {
    truncate: Option<u64>,
    up: Option<u64>,
    down: Option<u64>,
}

/// The part of `[offset, offset+len)` inside the real disk of `real`
/// bytes.
fn split(real: u64, offset: u64, len: u64) -> u64 {
    real.saturating_sub(offset).min(len)
}

impl Filter for Truncate {
    /// Only reshapes requests and answers: never blocks by itself.
    fn never_blocks(&self) -> bool {
        true
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Truncate {
    fn size(&self, next: &dyn Backend) -> Result<u64> {
        let mut size = match self.truncate {
            Some(t) => t,
            None => next.size()?,
        };
        if let Some(u) = self.up {
            size = size.div_ceil(u) * u;
        }
        if let Some(d) = self.down {
            size = size / d * d;
        }
        Ok(size)
    }

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let count = r.count() as u64;
        let n = split(next.size()?, r.offset, count);
        if n == count {
            // All inside the real disk: the plugin may lend.
            return next.read(r);
        }
        let offset = r.offset;
        let buf = r.buf();
        let n = n as usize;
        if n > 0 {
            next.pread(&mut buf[..n], offset)?;
        }
        buf[n..].fill(0);
        Ok(())
    }

    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let n = split(next.size()?, offset, buf.len() as u64) as usize;
        if buf[n..].iter().any(|&b| b != 0) {
            return Err(Error::new(
                libc::ENOSPC,
                "truncate: write beyond the end of the underlying disk",
            ));
        }
        if n > 0 {
            next.pwrite(&buf[..n], offset, fua)?;
        }
        Ok(())
    }

    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        match split(next.size()?, offset, count as u64) {
            0 => Ok(()),
            n => next.trim(n as u32, offset, fua),
        }
    }

    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        match split(next.size()?, offset, count as u64) {
            0 => Ok(()),
            n => next.zero(n as u32, offset, flags),
        }
    }

    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        match split(next.size()?, offset, count as u64) {
            0 => Ok(()),
            n => next.cache(n as u32, offset),
        }
    }

    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let n = split(next.size()?, offset, count as u64);
        if n > 0 {
            extents_at(next, n as u32, offset, offset, sink)?;
        }
        if n < count as u64 {
            sink.add(
                offset + n,
                count as u64 - n,
                allocation::HOLE | allocation::ZERO,
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use nbd_core::server::backend::{Backend, Extents, Read, Result, ZeroFlags};
    use nbd_core::wire::consts::allocation;

    use crate::chain::testing::{filter_over, info};
    use crate::chain::Opened;
    use crate::params::Params;
    use crate::plugins::memory::Memory;

    fn open(mem: &Arc<Memory>, args: &[(&str, &str)]) -> Result<Opened> {
        filter_over(&super::FILTER, args, Arc::clone(mem) as _).open(info())
    }

    #[test]
    fn pads_with_zeroes_and_refuses_data_past_the_end() {
        let mem = Arc::new(Memory::new(4096));
        mem.pwrite(&[5u8; 4096], 0, false).unwrap();
        let c = open(&mem, &[("truncate", "8192")]).unwrap();
        assert_eq!(c.size().unwrap(), 8192);
        let mut b = [1u8; 20];
        c.pread(&mut b, 4086).unwrap();
        assert_eq!(b[..10], [5; 10]);
        assert_eq!(b[10..], [0; 10]);

        // Wholly inside: still lent.
        let mut send = |_: &[&[u8]]| true;
        let mut r = Read::lending(&mut b, 0, &mut send);
        c.read(&mut r).unwrap();
        assert!(r.was_lent());

        let mut e = Extents::new();
        e.reset(0, 8192, false);
        c.extents(8192, 0, &mut e).unwrap();
        let hz = allocation::HOLE | allocation::ZERO;
        assert_eq!(e.as_slice(), &[(4096, 0), (4096, hz)]);

        c.pwrite(&[0; 10], 6000, false).unwrap();
        let e = c.pwrite(&[1], 6000, false).unwrap_err();
        assert_eq!(e.errno, libc::ENOSPC);
        c.zero(8192, 0, ZeroFlags::default()).unwrap();
        mem.pread(&mut b, 4000).unwrap();
        assert_eq!(b, [0; 20]);
    }

    #[test]
    fn rounds() {
        let mem = Arc::new(Memory::new(1000));
        let up = open(&mem, &[("round-up", "512")]).unwrap();
        assert_eq!(up.size().unwrap(), 1024);
        let down = open(&mem, &[("round-down", "512")]).unwrap();
        assert_eq!(down.size().unwrap(), 512);
        let mut p = Params::new("truncate", vec![("round-up".into(), "3".into())]);
        let e = (super::FILTER.open)(&mut p, false).err().unwrap();
        assert_eq!(e, "truncate: round-up must be a power of 2: 3");
    }
}

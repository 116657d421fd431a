//! The blocksize-policy filter (nbdkit-blocksize-policy-filter(1)):
//! changes the block size constraints advertised to the client
//! (`blocksize-minimum`, `blocksize-preferred`, `blocksize-maximum`, each
//! defaulting to the layer below's) and, with
//! `blocksize-error-policy=error`, fails with EINVAL the requests that
//! break them instead of passing them on (`allow`, the default).
//! `blocksize-write-disconnect` is accepted and not enforced.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "blocksize-policy",
    params: &[
        (
            "blocksize-minimum",
            "the minimum block size to advertise, a power of 2",
        ),
        (
            "blocksize-preferred",
            "the preferred block size to advertise, a power of 2",
        ),
        (
            "blocksize-maximum",
            "the maximum block size to advertise, a multiple of the minimum",
        ),
        (
            "blocksize-error-policy",
            "what to do with requests that break the constraints: allow or error",
        ),
        (
            "blocksize-write-disconnect",
            "writes larger than this disconnect the client (accepted, not enforced)",
        ),
    ],
    open: |p, _| Ok(Arc::new(BlockSizePolicy::open(p)?)),
};

/// `blocksize-minimum=`, `blocksize-preferred=`, `blocksize-maximum=`
/// (advertised through [`Backend::block_size`]), `blocksize-error-policy=
/// allow|error` (with `error`, requests that break them fail EINVAL) and
/// `blocksize-write-disconnect=` (accepted; not enforced).
pub struct BlockSizePolicy {
    min: Option<u64>,
    pref: Option<u64>,
    max: Option<u64>,
    error: bool,
}

impl BlockSizePolicy {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let min = p.take_size("blocksize-minimum")?;
        let pref = p.take_size("blocksize-preferred")?;
        let max = p.take_size("blocksize-maximum")?;
        let error = p
            .take_enum("blocksize-error-policy", &["allow", "error"])?
            .as_deref()
            == Some("error");
        p.take_size("blocksize-write-disconnect")?;
        for (k, v) in [("blocksize-minimum", min), ("blocksize-preferred", pref)] {
            if let Some(v) = v {
                if v == 0 || !v.is_power_of_two() || v > 1 << 25 {
                    return Err(p.err(format!("{k} must be a power of 2 up to 32M: {v}")));
                }
            }
        }
        if let (Some(a), Some(b)) = (min, max) {
            if b < a || b % a != 0 {
                return Err(p.err("blocksize-maximum must be a multiple of blocksize-minimum"));
            }
        }
        Ok(BlockSizePolicy {
            min,
            pref,
            max,
            error,
        })
    }

    fn check(&self, next: &dyn Backend, count: u64, offset: u64, data: bool) -> Result<()> {
        if !self.error {
            return Ok(());
        }
        let (min, _, max) = self.sizes(next)?;
        let min = min as u64;
        if (offset | count) & (min - 1) != 0 {
            return Err(Error::new(
                libc::EINVAL,
                "request is not aligned to the minimum block size",
            ));
        }
        if data && count > max as u64 {
            return Err(Error::new(
                libc::EINVAL,
                "request is larger than the maximum block size",
            ));
        }
        Ok(())
    }

    fn sizes(&self, next: &dyn Backend) -> Result<(u32, u32, u32)> {
        let (imin, ipref, imax) = next.block_size()?.unwrap_or((1, 4096, 32 << 20));
        let min = self.min.map(|v| v as u32).unwrap_or(imin);
        let pref = self.pref.map(|v| v as u32).unwrap_or(ipref).max(min);
        let max = self
            .max
            .map(|v| v.min(u32::MAX as u64) as u32)
            .unwrap_or(imax)
            .max(min);
        Ok((min, pref, max))
    }
}

impl Filter for BlockSizePolicy {
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

impl FilterHandle for BlockSizePolicy {
    fn block_size(&self, next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        self.sizes(next).map(Some)
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        self.check(next, r.count() as u64, r.offset, true)?;
        next.read(r)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.check(next, buf.len() as u64, offset, true)?;
        next.pwrite(buf, offset, fua)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.check(next, count as u64, offset, false)?;
        next.trim(count, offset, fua)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.check(next, count as u64, offset, false)?;
        next.zero(count, offset, flags)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over_memory, info, params};

    #[test]
    fn advertises_and_enforces() {
        let c = filter_over_memory(&FILTER, &[("blocksize-minimum", "512")])
            .open(info())
            .unwrap();
        assert_eq!(c.block_size().unwrap(), Some((512, 4096, 32 << 20)));
        // allow: unaligned requests pass.
        c.pwrite(&[1; 3], 1, false).unwrap();

        let c = filter_over_memory(
            &FILTER,
            &[
                ("blocksize-minimum", "512"),
                ("blocksize-preferred", "1024"),
                ("blocksize-maximum", "64k"),
                ("blocksize-error-policy", "error"),
                ("blocksize-write-disconnect", "1M"),
            ],
        )
        .open(info())
        .unwrap();
        assert_eq!(c.block_size().unwrap(), Some((512, 1024, 64 << 10)));
        let mut buf = vec![0u8; 128 << 10];
        assert_eq!(c.pread(&mut buf[..3], 0).unwrap_err().errno, libc::EINVAL);
        assert_eq!(c.pread(&mut buf, 0).unwrap_err().errno, libc::EINVAL);
        c.pread(&mut buf[..512], 512).unwrap();
        assert_eq!(
            c.pwrite(&buf[..3], 0, false).unwrap_err().errno,
            libc::EINVAL
        );
        assert_eq!(
            c.zero(3, 0, ZeroFlags::default()).unwrap_err().errno,
            libc::EINVAL
        );
        // Zero and trim are not bound by the maximum.
        c.zero(128 << 10, 0, ZeroFlags::default()).unwrap();
        c.trim(128 << 10, 0, false).unwrap();
    }

    #[test]
    fn bad_parameters() {
        for args in [
            &[("blocksize-minimum", "3")][..],
            &[("blocksize-preferred", "0")],
            &[("blocksize-minimum", "512"), ("blocksize-maximum", "768")],
            &[("blocksize-error-policy", "maybe")],
        ] {
            assert!((FILTER.open)(&mut params(FILTER.name, args), false).is_err());
        }
        let e = (FILTER.open)(
            &mut params(FILTER.name, &[("blocksize-minimum", "3")]),
            false,
        )
        .err()
        .unwrap();
        assert_eq!(
            e,
            "blocksize-policy: blocksize-minimum must be a power of 2 up to 32M: 3"
        );
    }
}

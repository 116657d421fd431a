//! The nozero filter (nbdkit-nozero-filter(1)): changes how zero requests
//! reach the layer below. `zeromode=none` (the default) hides zero support
//! from the client and writes zeroes as data if a zero arrives anyway;
//! `emulate` advertises zero support but always writes zeroes as data;
//! `notrim` passes zeroes down but never lets them punch holes; `plugin`
//! passes them down unchanged. `fastzeromode=default|slow|ignore|none`
//! decides what a client asking for a fast zero gets.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::zeroes::write_zeroes;
use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "nozero",
    params: &[
        (
            "zeromode",
            "how zero requests are served: none, emulate, notrim or plugin",
        ),
        (
            "fastzeromode",
            "how fast zero requests are served: default, slow, ignore or none",
        ),
    ],
    open: |p, _| Ok(Arc::new(NoZero::open(p)?)),
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum ZeroMode {
    None,
    Emulate,
    NoTrim,
    Plugin,
}
#[derive(Clone, Copy, PartialEq, Eq)]
enum FastMode {
    Default,
    Slow,
    Ignore,
    None,
}

/// `zeromode=none|emulate|notrim|plugin`, `fastzeromode=default|slow|ignore|none`.
pub struct NoZero {
    mode: ZeroMode,
    fast: FastMode,
}

impl NoZero {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let mode = match p
            .take_enum("zeromode", &["none", "emulate", "notrim", "plugin"])?
            .as_deref()
        {
            Some("emulate") => ZeroMode::Emulate,
            Some("notrim") => ZeroMode::NoTrim,
            Some("plugin") => ZeroMode::Plugin,
            _ => ZeroMode::None,
        };
        let fast = match p
            .take_enum("fastzeromode", &["default", "slow", "ignore", "none"])?
            .as_deref()
        {
            Some("slow") => FastMode::Slow,
            Some("ignore") => FastMode::Ignore,
            Some("none") => FastMode::None,
            _ => FastMode::Default,
        };
        Ok(NoZero { mode, fast })
    }
}

impl Filter for NoZero {
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

impl FilterHandle for NoZero {
    fn can_zero(&self, next: &dyn Backend) -> Result<bool> {
        match self.mode {
            ZeroMode::None => Ok(false),
            ZeroMode::Emulate => next.can_write(),
            _ => next.can_zero(),
        }
    }
    fn can_fast_zero(&self, next: &dyn Backend) -> Result<bool> {
        match (self.fast, self.mode) {
            (FastMode::None, _) | (_, ZeroMode::None) => Ok(false),
            (FastMode::Slow | FastMode::Ignore, _) => Ok(true),
            // Emulated zeroes are writes: never fast, say so quickly.
            (FastMode::Default, ZeroMode::Emulate) => Ok(true),
            (FastMode::Default, _) => next.can_fast_zero(),
        }
    }
    fn zero(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        mut flags: ZeroFlags,
    ) -> Result<()> {
        if flags.fast {
            match self.fast {
                FastMode::Slow => return Err(Error::new(libc::ENOTSUP, "fast zero disabled")),
                FastMode::Ignore => flags.fast = false,
                _ if self.mode == ZeroMode::Emulate => {
                    return Err(Error::new(libc::ENOTSUP, "emulated zero is not fast"))
                }
                _ => {}
            }
        }
        match self.mode {
            ZeroMode::Emulate | ZeroMode::None => write_zeroes(next, count, offset, flags.fua),
            ZeroMode::NoTrim => {
                flags.may_trim = false;
                next.zero(count, offset, flags)
            }
            ZeroMode::Plugin => next.zero(count, offset, flags),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over_memory, info};

    #[test]
    fn modes_change_what_is_advertised() {
        let c = filter_over_memory(&FILTER, &[]).open(info()).unwrap();
        assert!(!c.can_zero().unwrap());
        assert!(!c.can_fast_zero().unwrap());
        let c = filter_over_memory(&FILTER, &[("zeromode", "emulate")])
            .open(info())
            .unwrap();
        assert!(c.can_zero().unwrap());
        assert!(c.can_fast_zero().unwrap());
        let c = filter_over_memory(&FILTER, &[("zeromode", "plugin"), ("fastzeromode", "none")])
            .open(info())
            .unwrap();
        assert!(c.can_zero().unwrap());
        assert!(!c.can_fast_zero().unwrap());
        let mut p = Params::new("nozero", vec![("zeromode".into(), "x".into())]);
        assert!((FILTER.open)(&mut p, false).is_err());
    }

    #[test]
    fn emulated_zeroes_are_writes() {
        let c = filter_over_memory(&FILTER, &[("zeromode", "emulate")])
            .open(info())
            .unwrap();
        c.pwrite(&[7u8; 100_000], 0, false).unwrap();
        c.zero(90_000, 5, ZeroFlags::default()).unwrap();
        let mut buf = vec![0u8; 100_000];
        c.pread(&mut buf, 0).unwrap();
        assert_eq!(&buf[..5], &[7; 5]);
        assert!(buf[5..90_005].iter().all(|&b| b == 0));
        assert!(buf[90_005..].iter().all(|&b| b == 7));
        let fast = ZeroFlags {
            fast: true,
            ..Default::default()
        };
        let e = c.zero(10, 0, fast).unwrap_err();
        assert_eq!(e.errno, libc::ENOTSUP);
        let c = filter_over_memory(&FILTER, &[("zeromode", "plugin"), ("fastzeromode", "slow")])
            .open(info())
            .unwrap();
        assert_eq!(c.zero(10, 0, fast).unwrap_err().errno, libc::ENOTSUP);
        let c = filter_over_memory(
            &FILTER,
            &[("zeromode", "plugin"), ("fastzeromode", "ignore")],
        )
        .open(info())
        .unwrap();
        c.zero(10, 0, fast).unwrap();
    }
}

//! The fua filter (nbdkit-fua-filter(1)): changes how the FUA (force
//! unit access) flag of writes, trims and zeroes reaches the layer below.
//! `fuamode=none` (the default, as the manual says) hides FUA from the
//! client, which must flush instead; `emulate` advertises FUA and, where
//! the layer below lacks it, follows the request with a flush; `native`
//! and `force` advertise it and pass it down (`force` on every request);
//! `pass` passes the layer below's support on unchanged; `discard`
//! advertises it but drops it, and drops flushes too (unsafe: for speed
//! with throwaway data).
//!
//! Debian's nbdkit 1.32.5 behaves the same without `fuamode` (FUA hidden,
//! flush kept) but refuses the word `none` itself ("unknown fuamode"),
//! although its manual lists it; we accept it.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "fua",
    params: &[(
        "fuamode",
        "how FUA is served: none, emulate, native, force, pass or discard",
    )],
    open: |p, _| Ok(Arc::new(Fua::open(p)?)),
};

#[derive(Clone, Copy, PartialEq, Eq)]
enum FuaMode {
    None,
    Emulate,
    Native,
    Force,
    Pass,
    Discard,
}

/// `fuamode=none|emulate|native|force|pass|discard`, `none` when absent.
pub struct Fua {
    mode: FuaMode,
}

impl Fua {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let mode = match p
            .take_enum(
                "fuamode",
                &["none", "emulate", "native", "force", "pass", "discard"],
            )?
            .as_deref()
        {
            Some("emulate") => FuaMode::Emulate,
            Some("native") => FuaMode::Native,
            Some("force") => FuaMode::Force,
            Some("pass") => FuaMode::Pass,
            Some("discard") => FuaMode::Discard,
            _ => FuaMode::None,
        };
        Ok(Fua { mode })
    }

    /// (fua to pass down, flush afterwards).
    fn plan(&self, next: &dyn Backend, fua: bool) -> Result<(bool, bool)> {
        Ok(match self.mode {
            FuaMode::Pass => (fua, false),
            FuaMode::Native => (fua, false),
            FuaMode::Force => (true, false),
            FuaMode::Discard => (false, false),
            FuaMode::None | FuaMode::Emulate => {
                if !fua {
                    (false, false)
                } else if next.can_fua()? {
                    (true, false)
                } else {
                    (false, true)
                }
            }
        })
    }
}

impl Filter for Fua {
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

impl FilterHandle for Fua {
    fn can_fua(&self, next: &dyn Backend) -> Result<bool> {
        match self.mode {
            FuaMode::None => Ok(false),
            FuaMode::Pass => next.can_fua(),
            FuaMode::Emulate => Ok(next.can_fua()? || next.can_flush()?),
            _ => Ok(true),
        }
    }
    fn can_flush(&self, next: &dyn Backend) -> Result<bool> {
        match self.mode {
            FuaMode::Discard => Ok(true),
            _ => next.can_flush(),
        }
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        match self.mode {
            // discard: the client's flushes are dropped too, as nbdkit does.
            FuaMode::Discard => Ok(()),
            _ => next.flush(),
        }
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let (f, flush) = self.plan(next, fua)?;
        next.pwrite(buf, offset, f)?;
        if flush {
            next.flush()?;
        }
        Ok(())
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        let (f, flush) = self.plan(next, fua)?;
        next.trim(count, offset, f)?;
        if flush {
            next.flush()?;
        }
        Ok(())
    }
    fn zero(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        mut flags: ZeroFlags,
    ) -> Result<()> {
        let (f, flush) = self.plan(next, flags.fua)?;
        flags.fua = f;
        next.zero(count, offset, flags)?;
        if flush {
            next.flush()?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use parking_lot::Mutex;

    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::chain::Plugin;

    /// Records the calls that reach it: "w" (write), "W" (write with
    /// FUA), "f" (flush). Can flush, has no FUA.
    #[derive(Default)]
    struct Recorder(Mutex<String>);
    impl Backend for Recorder {
        fn size(&self) -> Result<u64> {
            Ok(4096)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(true)
        }
        fn can_flush(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn pwrite(&self, _: &[u8], _: u64, fua: bool) -> Result<()> {
            self.0.lock().push(if fua { 'W' } else { 'w' });
            Ok(())
        }
        fn flush(&self) -> Result<()> {
            self.0.lock().push('f');
            Ok(())
        }
    }
    impl Plugin for Recorder {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    /// What a FUA write and then a flush do in `mode`, and whether FUA is
    /// advertised.
    fn run(mode: &str) -> (bool, String) {
        let plugin = Arc::new(Recorder::default());
        let args: &[(&str, &str)] = if mode.is_empty() {
            &[]
        } else {
            &[("fuamode", mode)]
        };
        let chain = filter_over(&FILTER, args, plugin.clone());
        let c = chain.open(info()).unwrap();
        c.pwrite(&[1], 0, true).unwrap();
        c.flush().unwrap();
        let calls = plugin.0.lock().clone();
        (c.can_fua().unwrap(), calls)
    }

    #[test]
    fn modes() {
        assert_eq!(run("emulate"), (true, "wff".into()));
        assert_eq!(run("native"), (true, "Wf".into()));
        assert_eq!(run("force"), (true, "Wf".into()));
        assert_eq!(run("pass"), (false, "Wf".into()));
        assert_eq!(run("discard"), (true, "w".into()));
        assert_eq!(run("none"), (false, "wff".into()));
        // No fuamode: none, as nbdkit's manual says.
        assert_eq!(run(""), (false, "wff".into()));
    }
}

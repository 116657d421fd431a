//! The multi-conn filter (nbdkit-multi-conn-filter(1)): decides whether
//! the client is told it may open several connections to the export and
//! rely on a flush through one of them covering writes made through the
//! others. `multi-conn-mode=auto` (the default) advertises it when the
//! layer below does, or can flush, or is read-only; `emulate` always
//! advertises it (and flush, answered at once when the layer below cannot
//! flush); `plugin` passes the layer below's answer on; `unsafe` always
//! advertises it; `disable` never does. `multi-conn-track-dirty` and
//! `multi-conn-exportname` are accepted and change nothing.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "multi-conn",
    params: &[
        (
            "multi-conn-mode",
            "when to advertise multi-conn: auto, emulate, plugin, unsafe or disable",
        ),
        (
            "multi-conn-track-dirty",
            "whether flushes skip clean connections (accepted, ignored)",
        ),
        (
            "multi-conn-exportname",
            "whether connections to other exports count (accepted, ignored)",
        ),
    ],
    open: |p, _| Ok(Arc::new(MultiConn::open(p)?)),
};

/// `multi-conn-mode=auto|emulate|plugin|unsafe|disable`. Every connection
/// of this server reaches the same storage through the layers below, so
/// a flush through any connection flushes what every connection wrote:
/// emulation is simply advertising multi-conn when the stack can flush,
/// and needs no list of the open connections to flush them all.
pub struct MultiConn {
    mode: String,
}

impl MultiConn {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let mode = p
            .take_enum(
                "multi-conn-mode",
                &["auto", "emulate", "plugin", "unsafe", "disable"],
            )?
            .unwrap_or_else(|| "auto".into());
        p.take_bool("multi-conn-track-dirty")?;
        p.take_bool("multi-conn-exportname")?;
        Ok(MultiConn { mode })
    }
}

impl Filter for MultiConn {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for MultiConn {
    fn can_multi_conn(&self, next: &dyn Backend) -> Result<bool> {
        match self.mode.as_str() {
            "disable" => Ok(false),
            "plugin" => next.can_multi_conn(),
            "auto" => Ok(next.can_multi_conn()? || next.can_flush()? || !next.can_write()?),
            _ => Ok(true),
        }
    }
    fn can_flush(&self, next: &dyn Backend) -> Result<bool> {
        if self.mode == "emulate" {
            return Ok(true);
        }
        next.can_flush()
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        if self.mode == "emulate" && !next.can_flush()? {
            return Ok(());
        }
        next.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::chain::{Chain, Plugin};

    /// A writable disk that cannot flush and has no multi-conn.
    struct NoFlush;
    impl Backend for NoFlush {
        fn size(&self) -> Result<u64> {
            Ok(4096)
        }
        fn can_write(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn pwrite(&self, _: &[u8], _: u64, _: bool) -> Result<()> {
            Ok(())
        }
    }
    impl Plugin for NoFlush {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    fn chain(mode: &str) -> Arc<Chain> {
        let args = [("multi-conn-mode", mode), ("multi-conn-track-dirty", "on")];
        filter_over(&FILTER, &args, Arc::new(NoFlush))
    }

    #[test]
    fn modes() {
        let c = chain("auto").open(info()).unwrap();
        assert!(!c.can_multi_conn().unwrap());
        assert!(!c.can_flush().unwrap());
        let c = chain("emulate").open(info()).unwrap();
        assert!(c.can_multi_conn().unwrap());
        assert!(c.can_flush().unwrap());
        c.flush().unwrap();
        let c = chain("unsafe").open(info()).unwrap();
        assert!(c.can_multi_conn().unwrap());
        assert!(!c.can_flush().unwrap());
        let c = chain("plugin").open(info()).unwrap();
        assert!(!c.can_multi_conn().unwrap());
        let c = chain("disable").open(info()).unwrap();
        assert!(!c.can_multi_conn().unwrap());
    }
}

//! The nocache filter (nbdkit-nocache-filter(1)): changes how cache
//! requests are served. `cachemode=none` (the default) hides cache
//! support from the client; `emulate` serves a cache request by reading
//! the range (and dropping the data); `nop` advertises cache support and
//! ignores the requests.

use std::sync::Arc;

use nbd_core::server::backend::{Backend, ConnectionInfo, Result};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "nocache",
    params: &[(
        "cachemode",
        "how cache requests are served: none, emulate or nop",
    )],
    open: |p, _| Ok(Arc::new(NoCache::open(p)?)),
};

/// `cachemode=none|emulate|nop`.
pub struct NoCache {
    mode: String,
}

impl NoCache {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let mode = p
            .take_enum("cachemode", &["none", "emulate", "nop"])?
            .unwrap_or_else(|| "none".into());
        Ok(NoCache { mode })
    }
}

impl Filter for NoCache {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for NoCache {
    fn can_cache(&self, _next: &dyn Backend) -> Result<bool> {
        Ok(self.mode != "none")
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        match self.mode.as_str() {
            "emulate" => {
                let mut buf = vec![0u8; (count as usize).min(1 << 20)];
                let mut done = 0u64;
                while done < count as u64 {
                    let n = (count as u64 - done).min(buf.len() as u64) as usize;
                    next.pread(&mut buf[..n], offset + done)?;
                    done += n as u64;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicU64, Ordering};

    use super::*;
    use crate::chain::testing::{filter_over, info};
    use crate::chain::{Chain, Plugin};

    /// Counts the bytes read from it.
    #[derive(Default)]
    struct Counting(AtomicU64);
    impl Backend for Counting {
        fn size(&self) -> Result<u64> {
            Ok(4 << 20)
        }
        fn can_cache(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            self.0.fetch_add(buf.len() as u64, Ordering::Relaxed);
            buf.fill(0);
            Ok(())
        }
    }
    impl Plugin for Counting {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    fn chain(plugin: &Arc<Counting>, mode: &str) -> Arc<Chain> {
        filter_over(&FILTER, &[("cachemode", mode)], plugin.clone())
    }

    #[test]
    fn cache_modes() {
        let plugin = Arc::new(Counting::default());
        let c = chain(&plugin, "none").open(info()).unwrap();
        assert!(!c.can_cache().unwrap());
        let c = chain(&plugin, "nop").open(info()).unwrap();
        assert!(c.can_cache().unwrap());
        c.cache(3 << 20, 0).unwrap();
        assert_eq!(plugin.0.load(Ordering::Relaxed), 0);
        let c = chain(&plugin, "emulate").open(info()).unwrap();
        assert!(c.can_cache().unwrap());
        c.cache((3 << 20) + 5, 7).unwrap();
        assert_eq!(plugin.0.load(Ordering::Relaxed), (3 << 20) + 5);
    }
}

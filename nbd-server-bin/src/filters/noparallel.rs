//! The noparallel filter (nbdkit-noparallel-filter(1)): serialises work
//! the layers below could otherwise see in parallel. With
//! `serialize=requests` (the default) or `all-requests`, one request at a
//! time goes down, whichever connection sent it; with `connections`, one
//! connection at a time is served: a new client waits until the one
//! before has gone (and multi-conn is no longer advertised). `serialise`
//! is the same key in British spelling, and wins when both are given.

use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "noparallel",
    params: &[
        (
            "serialize",
            "what to serialise: requests, all-requests or connections",
        ),
        ("serialise", "the same as serialize"),
    ],
    open: |p, _| Ok(Arc::new(NoParallel::open(p)?)),
};

const MODES: &[&str] = &["requests", "all-requests", "connections"];

/// `serialize=requests|all-requests|connections`: one request (or one
/// connection) at a time.
pub struct NoParallel {
    connections: bool,
    lock: Mutex<()>,
    /// With `connections`: a connection holds the filter open.
    busy: Mutex<bool>,
    freed: Condvar,
}

impl NoParallel {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let a = p.take_enum("serialize", MODES)?;
        let b = p.take_enum("serialise", MODES)?;
        let mode = b.or(a).unwrap_or_else(|| "requests".into());
        Ok(NoParallel {
            connections: mode == "connections",
            lock: Mutex::new(()),
            busy: Mutex::new(false),
            freed: Condvar::new(),
        })
    }

    fn one<T>(&self, f: impl FnOnce() -> T) -> T {
        let _g = self.lock.lock();
        f()
    }

    /// Lets the next connection in.
    fn release(&self) {
        *self.busy.lock() = false;
        self.freed.notify_one();
    }
}

impl Filter for NoParallel {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        if self.connections {
            let mut b = self.busy.lock();
            while *b {
                self.freed.wait(&mut b);
            }
            *b = true;
        }
        if let Err(e) = next.open(info) {
            // No handle, so no close: give the slot back here.
            if self.connections {
                self.release();
            }
            return Err(e);
        }
        Ok(Box::new(self))
    }
}

impl FilterHandle for NoParallel {
    fn close(&self, _info: &ConnectionInfo) {
        if self.connections {
            self.release();
        }
    }
    fn can_multi_conn(&self, next: &dyn Backend) -> Result<bool> {
        if self.connections {
            Ok(false)
        } else {
            next.can_multi_conn()
        }
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        // Reads are copied, not lent: a lent read is sent to the client
        // while the layers below hold the data, which would keep the lock
        // for as long as the client takes to receive the reply.
        let off = r.offset;
        let buf = r.buf();
        self.one(|| next.pread(buf, off))
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.one(|| next.pwrite(buf, offset, fua))
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        self.one(|| next.flush())
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.one(|| next.trim(count, offset, fua))
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.one(|| next.zero(count, offset, flags))
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.one(|| next.cache(count, offset))
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        self.one(|| next.extents(count, offset, sink))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;
    use crate::chain::testing::{filter_over, info_id};
    use crate::chain::{Chain, Plugin};

    /// Records how many reads run at once, at most.
    #[derive(Default)]
    struct Slow {
        now: AtomicUsize,
        most: AtomicUsize,
    }
    impl Backend for Slow {
        fn size(&self) -> Result<u64> {
            Ok(1 << 20)
        }
        fn can_multi_conn(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(20));
            buf.fill(1);
            self.now.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        }
    }
    impl Plugin for Slow {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    fn chain(plugin: &Arc<Slow>, args: &[(&str, &str)]) -> Arc<Chain> {
        filter_over(&FILTER, args, plugin.clone())
    }

    #[test]
    fn requests_are_serialised_across_connections() {
        let plugin = Arc::new(Slow::default());
        let chain = chain(&plugin, &[]);
        let conns: Vec<_> = (0..2).map(|i| chain.open(info_id(i)).unwrap()).collect();
        assert!(conns[0].can_multi_conn().unwrap());
        std::thread::scope(|s| {
            for c in &conns {
                for _ in 0..2 {
                    s.spawn(move || {
                        let mut buf = [0u8; 16];
                        c.pread(&mut buf, 0).unwrap();
                        assert_eq!(buf, [1; 16]);
                    });
                }
            }
        });
        assert_eq!(plugin.most.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn connections_wait_for_the_one_before() {
        let plugin = Arc::new(Slow::default());
        let chain = chain(
            &plugin,
            &[("serialize", "requests"), ("serialise", "connections")],
        );
        let first = chain.open(info_id(1)).unwrap();
        assert!(!first.can_multi_conn().unwrap());
        let second_open = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                let c = chain.open(info_id(2)).unwrap();
                second_open.store(true, Ordering::SeqCst);
                drop(c);
            });
            std::thread::sleep(Duration::from_millis(100));
            assert!(!second_open.load(Ordering::SeqCst));
            drop(first);
        });
        assert!(second_open.load(Ordering::SeqCst));
        // Everyone gone: the next one gets in at once.
        drop(chain.open(info_id(3)).unwrap());
        let mut p = Params::new("noparallel", vec![("serialize".into(), "x".into())]);
        assert!((FILTER.open)(&mut p, false).is_err());
    }
}

//! The noparallel filter (nbdkit-noparallel-filter(1)): serialises work
//! the layers below could otherwise see in parallel. With
//! `serialize=requests` (the default), a connection has one request at a
//! time in the layers below, while different connections still run in
//! parallel (nbdkit's SERIALIZE_REQUESTS thread model); with
//! `all-requests`, one request at a time goes down, whichever connection
//! sent it; with `connections`, one connection at a time is served: a new
//! client waits until the one before has gone (and multi-conn is no longer
//! advertised). `serialise` is the same key in British spelling, and wins
//! when both are given.

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

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Mode {
    Requests,
    AllRequests,
    Connections,
}

/// `serialize=requests|all-requests|connections`: one request of a
/// connection, one request of any connection, or one connection at a time.
pub struct NoParallel {
    mode: Mode,
    /// With `all-requests` (and `connections`, where there is only one
    /// connection anyway): one request at a time, of any connection.
    lock: Mutex<()>,
    /// With `connections`: a connection holds the filter open.
    busy: Mutex<bool>,
    freed: Condvar,
}

impl NoParallel {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let a = p.take_enum("serialize", MODES)?;
        let b = p.take_enum("serialise", MODES)?;
        let mode = match b.or(a).as_deref() {
            Some("all-requests") => Mode::AllRequests,
            Some("connections") => Mode::Connections,
            _ => Mode::Requests,
        };
        Ok(NoParallel {
            mode,
            lock: Mutex::new(()),
            busy: Mutex::new(false),
            freed: Condvar::new(),
        })
    }

    /// Lets the next connection in.
    fn release(&self) {
        *self.busy.lock() = false;
        self.freed.notify_one();
    }
}

impl Filter for NoParallel {
    fn serializes_connections(&self) -> bool {
        self.mode == Mode::Connections
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        let connections = self.mode == Mode::Connections;
        if connections {
            let mut b = self.busy.lock();
            while *b {
                self.freed.wait(&mut b);
            }
            *b = true;
        }
        if let Err(e) = next.open(info) {
            // No handle, so no close: give the slot back here.
            if connections {
                self.release();
            }
            return Err(e);
        }
        Ok(Box::new(NoParallelHandle {
            filter: self,
            lock: Mutex::new(()),
        }))
    }
}

/// The filter opened for one connection.
struct NoParallelHandle {
    filter: Arc<NoParallel>,
    /// With `requests`: one request at a time of this connection. Other
    /// connections have locks of their own, so they are not held up.
    lock: Mutex<()>,
}

impl NoParallelHandle {
    fn one<T>(&self, f: impl FnOnce() -> T) -> T {
        let lock = match self.filter.mode {
            Mode::Requests => &self.lock,
            Mode::AllRequests | Mode::Connections => &self.filter.lock,
        };
        let _g = lock.lock();
        f()
    }
}

impl FilterHandle for NoParallelHandle {
    fn close(&self, _info: &ConnectionInfo) {
        if self.filter.mode == Mode::Connections {
            self.filter.release();
        }
    }
    fn can_multi_conn(&self, next: &dyn Backend) -> Result<bool> {
        if self.filter.mode == Mode::Connections {
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
    use std::time::{Duration, Instant};

    use super::*;
    use crate::chain::testing::{filter_over, info_id};
    use crate::chain::{Chain, Plugin};

    /// How many reads run at once, now and at most.
    #[derive(Default)]
    struct Count {
        now: AtomicUsize,
        most: AtomicUsize,
    }
    impl Count {
        fn enter(&self) -> usize {
            let n = self.now.fetch_add(1, Ordering::SeqCst) + 1;
            self.most.fetch_max(n, Ordering::SeqCst);
            n
        }
        fn leave(&self) {
            self.now.fetch_sub(1, Ordering::SeqCst);
        }
        fn most(&self) -> usize {
            self.most.load(Ordering::SeqCst)
        }
    }

    /// A slow disk that counts the reads running at once, over all
    /// connections and for each connection. A read waits (up to a few
    /// seconds) for `meet` reads to run at once, so that reads which may
    /// run in parallel surely overlap, however loaded the machine.
    #[derive(Default)]
    struct Slow {
        all: Count,
        meet: usize,
        conns: Mutex<Vec<Arc<Count>>>,
    }
    struct SlowConn {
        disk: Arc<Slow>,
        count: Arc<Count>,
    }
    impl Backend for SlowConn {
        fn size(&self) -> Result<u64> {
            Ok(1 << 20)
        }
        fn can_multi_conn(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _: u64) -> Result<()> {
            let all = &self.disk.all;
            all.enter();
            self.count.enter();
            let until = Instant::now() + Duration::from_secs(5);
            while all.now.load(Ordering::SeqCst) < self.disk.meet && Instant::now() < until {
                std::thread::sleep(Duration::from_millis(1));
            }
            std::thread::sleep(Duration::from_millis(20));
            buf.fill(1);
            self.count.leave();
            all.leave();
            Ok(())
        }
    }
    impl Plugin for Slow {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            let count = Arc::new(Count::default());
            self.conns.lock().push(count.clone());
            Ok(Box::new(SlowConn { disk: self, count }))
        }
    }

    fn chain(plugin: &Arc<Slow>, args: &[(&str, &str)]) -> Arc<Chain> {
        filter_over(&FILTER, args, plugin.clone())
    }

    /// Two reads at once on each of two connections.
    fn read_on_two_connections(chain: &Arc<Chain>) {
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
    }

    #[test]
    fn requests_are_serialised_within_a_connection() {
        // The default, `requests`: different connections run in parallel
        // (the reads of both meet in the plugin), but each connection has
        // one read at a time in the plugin.
        let plugin = Arc::new(Slow {
            meet: 2,
            ..Default::default()
        });
        read_on_two_connections(&chain(&plugin, &[]));
        assert_eq!(plugin.all.most(), 2);
        let conns = plugin.conns.lock();
        assert_eq!(conns.len(), 2);
        for c in conns.iter() {
            assert_eq!(c.most(), 1);
        }
    }

    #[test]
    fn all_requests_are_serialised_across_connections() {
        let plugin = Arc::new(Slow::default());
        read_on_two_connections(&chain(&plugin, &[("serialize", "all-requests")]));
        assert_eq!(plugin.all.most(), 1);
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

//! The scan filter: while a client is connected, a thread of the filter
//! walks the disk from start to end asking the layers below to prefetch
//! it with cache requests (nbdkit-scan-filter(1)).
//!
//! `scan-ahead=false`: do not skip ahead of the client (by default, a
//! read past the scan's position moves the scan to just after the read).
//! `scan-clock=false`: a new connection scans from the start (by default
//! the position is kept between connections, as a stopped clock).
//! `scan-forever=true`: start over at the end, for as long as a client is
//! connected (default: scan once). `scan-size=NN`: the size of each cache
//! request, a power of two from 512 to 32M (default 2M).
//!
//! Each connection to the default export gets its own thread, started
//! once the layers are open and stopped (and waited for) when the
//! connection closes. A connection to another export, or with layers
//! below that cannot cache, is not scanned; a warning says so.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender, TryRecvError};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use nbd_core::server::backend::{Backend, ConnectionInfo, Read, Result};

use crate::chain::{Filter, FilterHandle, Lower, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "scan",
    params: &[
        (
            "scan-ahead",
            "false: do not skip ahead of the client's reads (default true)",
        ),
        (
            "scan-clock",
            "false: each connection scans from the start (default true)",
        ),
        (
            "scan-forever",
            "true: scan again from the start at the end (default false)",
        ),
        (
            "scan-size",
            "the size of each prefetch, 512 to 32M (default 2M)",
        ),
    ],
    open: |p, _| Ok(Arc::new(Scan::open(p)?)),
};

pub struct Scan {
    ahead: bool,
    clock: bool,
    forever: bool,
    size: u32,
    /// Where the scan has got to, kept across connections.
    position: AtomicU64,
}

impl Scan {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let ahead = p.take_bool("scan-ahead")?.unwrap_or(true);
        let clock = p.take_bool("scan-clock")?.unwrap_or(true);
        let forever = p.take_bool("scan-forever")?.unwrap_or(false);
        let size = p.take_size("scan-size")?.unwrap_or(2 << 20);
        if !(512..=32 << 20).contains(&size) || !size.is_power_of_two() {
            return Err("scan-size parameter should be [512..32M] and a power of two".into());
        }
        Ok(Scan {
            ahead,
            clock,
            forever,
            size: size as u32,
            position: AtomicU64::new(0),
        })
    }

    /// The scan of one connection: runs until told to stop (the sender is
    /// dropped) or, unless scanning forever, until the end of the disk.
    fn run(&self, next: Lower, reads: Receiver<u64>) {
        let Ok(disk) = next.size() else { return };
        loop {
            let mut offset = if self.clock {
                self.position.load(Ordering::Relaxed)
            } else {
                0
            };
            while offset < disk {
                loop {
                    match reads.try_recv() {
                        Ok(end) => offset = offset.max(end),
                        Err(TryRecvError::Empty) => break,
                        Err(TryRecvError::Disconnected) => {
                            crate::log::debug!(
                                "scan: exiting background thread on connection close"
                            );
                            return;
                        }
                    }
                }
                self.position.fetch_max(offset, Ordering::Relaxed);
                if offset < disk {
                    let n = u64::from(self.size).min(disk - offset);
                    // A failed prefetch is no one's business.
                    let _ = next.cache(n as u32, offset);
                }
                offset += u64::from(self.size);
            }
            if !self.forever {
                crate::log::debug!("scan: finished scanning the plugin");
                return;
            }
            self.position.store(0, Ordering::Relaxed);
        }
    }
}

impl Filter for Scan {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(ScanHandle {
            scan: self,
            default_export: info.export_name.is_empty(),
            worker: Mutex::new(None),
        }))
    }
}

/// One connection's scan.
struct ScanHandle {
    scan: Arc<Scan>,
    default_export: bool,
    /// The thread and where to tell it of reads; `None` when not scanning.
    worker: Mutex<Option<(Sender<u64>, JoinHandle<()>)>>,
}

impl FilterHandle for ScanHandle {
    fn keep_next(&self, next: Lower) {
        if !self.default_export {
            crate::log::error!("scan: warning: not the default export, not scanning");
            return;
        }
        if !matches!(next.can_cache(), Ok(true)) {
            crate::log::error!(
                "scan: warning: underlying plugin does not support NBD_CMD_CACHE, not scanning; try adding --filter=cache after this filter"
            );
            return;
        }
        let (tx, rx) = channel();
        let scan = Arc::clone(&self.scan);
        match std::thread::Builder::new()
            .name("scan".into())
            .spawn(move || scan.run(next, rx))
        {
            Ok(t) => *self.worker.lock().unwrap() = Some((tx, t)),
            Err(e) => crate::log::error!("scan: pthread_create: {e}"),
        }
    }

    fn close(&self, _info: &ConnectionInfo) {
        if let Some((tx, t)) = self.worker.lock().unwrap().take() {
            drop(tx);
            let _ = t.join();
        }
    }

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        if self.scan.ahead {
            if let Some((tx, _)) = &*self.worker.lock().unwrap() {
                // The thread may have finished: nothing to tell it then.
                let _ = tx.send(r.offset + u64::from(r.count()));
            }
        }
        next.read(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter, filter_over, info_for};
    use crate::chain::{Chain, Plugin};
    use std::time::{Duration, Instant};

    /// A disk that records its cache requests.
    #[derive(Default)]
    struct Recorder {
        cached: Mutex<Vec<(u64, u32)>>,
    }

    /// A recorder whose prefetches take a while.
    #[derive(Default)]
    struct Slow(Recorder, std::sync::atomic::AtomicU32);

    impl Backend for Slow {
        fn size(&self) -> Result<u64> {
            self.0.size()
        }
        fn can_cache(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
            self.0.pread(buf, offset)
        }
        fn cache(&self, count: u32, offset: u64) -> Result<()> {
            self.1.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(100));
            self.0.cache(count, offset)
        }
    }

    impl Plugin for Slow {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    #[test]
    fn skips_ahead_of_the_client_unless_told() {
        for (ahead, want) in [
            ("true", vec![0, 9216, 9728]),
            ("false", (0..20).map(|i| i * 512).collect()),
        ] {
            let slow = Arc::new(Slow::default());
            let f = filter(&FILTER, &[("scan-size", "512"), ("scan-ahead", ahead)]);
            let chain = Arc::new(Chain::new(slow.clone(), vec![f]));
            let c = chain.open(info("")).unwrap();
            // Read while the first prefetch is running.
            while slow.1.load(Ordering::SeqCst) == 0 {
                std::thread::sleep(Duration::from_millis(1));
            }
            let mut buf = [0u8; 1024];
            c.pread(&mut buf, 8192).unwrap();
            wait_for(&slow.0, want.len());
            std::thread::sleep(Duration::from_millis(150));
            drop(c);
            let got: Vec<u64> = slow.0.cached.lock().unwrap().iter().map(|c| c.0).collect();
            assert_eq!(got, want, "scan-ahead={ahead}");
        }
    }

    impl Backend for Recorder {
        fn size(&self) -> Result<u64> {
            Ok(10 << 10)
        }
        fn can_cache(&self) -> Result<bool> {
            Ok(true)
        }
        fn pread(&self, buf: &mut [u8], _offset: u64) -> Result<()> {
            buf.fill(0);
            Ok(())
        }
        fn cache(&self, count: u32, offset: u64) -> Result<()> {
            self.cached.lock().unwrap().push((offset, count));
            Ok(())
        }
    }

    impl Plugin for Recorder {
        fn open(self: Arc<Self>, _: &ConnectionInfo) -> Result<Box<dyn Backend>> {
            Ok(Box::new(self))
        }
    }

    fn info(export: &str) -> ConnectionInfo {
        info_for(1, export, false)
    }

    fn wait_for(rec: &Recorder, n: usize) {
        let t = Instant::now();
        while rec.cached.lock().unwrap().len() < n {
            assert!(t.elapsed() < Duration::from_secs(10), "no prefetch");
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn prefetches_the_whole_disk_once() {
        let rec = Arc::new(Recorder::default());
        let chain = filter_over(&FILTER, &[("scan-size", "4K")], rec.clone());
        let c = chain.open(info("")).unwrap();
        wait_for(&rec, 3);
        drop(c);
        assert_eq!(
            *rec.cached.lock().unwrap(),
            vec![(0, 4096), (4096, 4096), (8192, 2048)]
        );
        // The clock kept the position (the last block's, as in nbdkit): a
        // new connection prefetches at most that block again.
        let c = chain.open(info("")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
        let cached = rec.cached.lock().unwrap();
        assert!(cached[3..].iter().all(|&c| c == (8192, 2048)), "{cached:?}");
        assert!(cached.len() <= 4);
    }

    #[test]
    fn without_the_clock_each_connection_starts_over() {
        let rec = Arc::new(Recorder::default());
        let f = filter(&FILTER, &[("scan-size", "4K"), ("scan-clock", "false")]);
        let chain = Arc::new(Chain::new(rec.clone(), vec![f]));
        drop(chain.open(info("")).unwrap());
        wait_for(&rec, 0);
        let before = rec.cached.lock().unwrap().len();
        let c = chain.open(info("")).unwrap();
        wait_for(&rec, before + 3);
        drop(c);
    }

    #[test]
    fn forever_stops_at_close_and_other_exports_are_not_scanned() {
        let rec = Arc::new(Recorder::default());
        let f = filter(&FILTER, &[("scan-size", "4K"), ("scan-forever", "true")]);
        let chain = Arc::new(Chain::new(rec.clone(), vec![f]));
        let c = chain.open(info("")).unwrap();
        wait_for(&rec, 10);
        // Closing stops (and waits for) the thread.
        drop(c);
        let n = rec.cached.lock().unwrap().len();
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(rec.cached.lock().unwrap().len(), n);
        let c = chain.open(info("other")).unwrap();
        std::thread::sleep(Duration::from_millis(20));
        drop(c);
        assert_eq!(rec.cached.lock().unwrap().len(), n);
    }

    #[test]
    fn bad_sizes() {
        for v in ["256", "3K", "64M", "x"] {
            let mut p = Params::new("scan", vec![("scan-size".into(), v.into())]);
            assert!((FILTER.open)(&mut p, false).is_err(), "{v}");
        }
    }
}

//! The stats filter: counts the requests of every kind, their bytes and
//! the time they took, and writes the totals to a file when the last
//! client goes and when the server exits (nbdkit-stats-filter(1)).
//!
//! `statsfile=FILE` (required), `statsappend=BOOL`, `statsthreshold=`
//! (accepted). The file is written from an atexit handler at exit,
//! because the server's exit path is `std::process::exit`.

use std::fs::OpenOptions;
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "stats",
    params: &[
        (
            "statsfile",
            "the file the statistics are written to (required)",
        ),
        (
            "statsappend",
            "append to the statistics file rather than truncate it",
        ),
        ("statsthreshold", "accepted and ignored"),
    ],
    open: |p, _| Ok(Arc::new(Stats::open(p)?)),
};

#[derive(Default, Clone, Copy)]
struct OpStat {
    ops: u64,
    bytes: u64,
    time: Duration,
}

struct StatsData {
    path: String,
    append: bool,
    start: Instant,
    /// read, write, trim, zero, extents, cache, flush
    ops: Mutex<[OpStat; 7]>,
    conns: AtomicU64,
}

const NAMES: [&str; 7] = ["read", "write", "trim", "zero", "extents", "cache", "flush"];
const READ: usize = 0;
const WRITE: usize = 1;
const TRIM: usize = 2;
const ZERO: usize = 3;
const EXTENTS: usize = 4;
const CACHE: usize = 5;
const FLUSH: usize = 6;

static REGISTRY: Mutex<Vec<Weak<StatsData>>> = Mutex::new(Vec::new());

extern "C" fn write_all_stats() {
    if let Some(list) = REGISTRY.try_lock() {
        for s in list.iter().filter_map(|w| w.upgrade()) {
            s.write();
        }
    }
}

fn human(b: f64) -> String {
    let units = ["bytes", "KiB", "MiB", "GiB", "TiB"];
    let mut v = b;
    let mut i = 0;
    while v >= 1024.0 && i < units.len() - 1 {
        v /= 1024.0;
        i += 1;
    }
    if i == 0 {
        format!("{} bytes", b as u64)
    } else {
        format!("{v:.2} {}", units[i])
    }
}

impl StatsData {
    fn report(&self) -> String {
        let ops = *self.ops.lock();
        let elapsed = self.start.elapsed().as_secs_f64();
        let total_ops: u64 = ops.iter().map(|o| o.ops).sum();
        let total_bytes: u64 = ops[..4].iter().map(|o| o.bytes).sum();
        let mut s = format!(
            "total: {total_ops} ops, {elapsed:.6} s, {}, {}/s\n",
            human(total_bytes as f64),
            human(total_bytes as f64 / elapsed.max(1e-9))
        );
        for (i, o) in ops.iter().enumerate() {
            if o.ops == 0 {
                continue;
            }
            let t = o.time.as_secs_f64();
            if i < 4 {
                s += &format!(
                    "{}: {} ops, {t:.6} s, {}, {}/s op, {}/s total\n",
                    NAMES[i],
                    o.ops,
                    human(o.bytes as f64),
                    human(o.bytes as f64 / t.max(1e-9)),
                    human(o.bytes as f64 / elapsed.max(1e-9))
                );
            } else {
                s += &format!("{}: {} ops, {t:.6} s\n", NAMES[i], o.ops);
            }
        }
        s
    }

    fn write(&self) {
        let mut o = OpenOptions::new();
        o.create(true);
        if self.append {
            o.append(true);
        } else {
            o.write(true).truncate(true);
        }
        if let Ok(mut f) = o.open(&self.path) {
            let _ = f.write_all(self.report().as_bytes());
        }
    }
}

/// The counts, shared by every connection; written again when the filter
/// is dropped.
pub struct Stats {
    data: Arc<StatsData>,
}

impl Stats {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let path = p
            .take("statsfile")
            .ok_or_else(|| p.err("the statsfile parameter is required"))?;
        let append = p.take_bool("statsappend")?.unwrap_or(false);
        p.take("statsthreshold");
        // Fail now rather than at exit if the file cannot be written.
        let mut o = OpenOptions::new();
        o.create(true).write(true);
        if append {
            o.append(true);
        }
        o.open(&path).map_err(|e| p.err(format!("{path}: {e}")))?;
        let data = Arc::new(StatsData {
            path,
            append,
            start: Instant::now(),
            ops: Mutex::new([OpStat::default(); 7]),
            conns: AtomicU64::new(0),
        });
        let mut reg = REGISTRY.lock();
        if reg.is_empty() {
            // SAFETY: registering a plain extern "C" function.
            unsafe { libc::atexit(write_all_stats) };
        }
        reg.push(Arc::downgrade(&data));
        Ok(Stats { data })
    }

    /// Runs `f`, and counts it under `i` if it succeeds.
    fn count<T>(&self, i: usize, bytes: u64, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let t = Instant::now();
        let r = f();
        if r.is_ok() {
            let mut o = self.data.ops.lock();
            o[i].ops += 1;
            o[i].bytes += bytes;
            o[i].time += t.elapsed();
        }
        r
    }
}

impl Drop for Stats {
    fn drop(&mut self) {
        self.data.write();
    }
}

impl Filter for Stats {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        self.data.conns.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(self))
    }
}

impl FilterHandle for Stats {
    fn close(&self, _info: &ConnectionInfo) {
        if self.data.conns.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.data.write();
        }
    }
    // A read passed on may be lent: it is counted either way.
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let n = r.count() as u64;
        self.count(READ, n, || next.read(r))
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.count(WRITE, buf.len() as u64, || next.pwrite(buf, offset, fua))
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.count(TRIM, count as u64, || next.trim(count, offset, fua))
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.count(ZERO, count as u64, || next.zero(count, offset, flags))
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        self.count(EXTENTS, count as u64, || next.extents(count, offset, sink))
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        self.count(CACHE, count as u64, || next.cache(count, offset))
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        self.count(FLUSH, 0, || next.flush())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::testing::{filter_over_memory, info_id};

    #[test]
    fn written_when_the_last_client_goes() {
        let path = std::env::temp_dir().join(format!("stats-filter-{}", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let file = path.display().to_string();
        let chain = filter_over_memory(&FILTER, &[("statsfile", &file)]);
        let a = chain.open(info_id(1)).unwrap();
        let b = chain.open(info_id(2)).unwrap();
        let mut buf = [0u8; 1024];
        a.pread(&mut buf, 0).unwrap();
        b.pwrite(&buf[..512], 0, false).unwrap();
        b.flush().unwrap();
        drop(a);
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "");
        drop(b);
        let s = std::fs::read_to_string(&path).unwrap();
        // Dropping the filter writes the file again.
        drop(chain);
        std::fs::remove_file(&path).unwrap();
        assert!(s.starts_with("total: 3 ops, "), "{s}");
        assert!(s.contains("\nread: 1 ops, "), "{s}");
        assert!(s.contains("\nwrite: 1 ops, "), "{s}");
        assert!(s.contains("\nflush: 1 ops, "), "{s}");
        assert!(!s.contains("zero"), "{s}");
    }

    #[test]
    fn statsfile_is_required() {
        let mut p = Params::new("stats", vec![]);
        let e = (FILTER.open)(&mut p, false).err().unwrap();
        assert!(e.contains("statsfile"), "{e}");
    }
}

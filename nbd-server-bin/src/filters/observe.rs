//! Filters that watch: log (one ENTER and one LEAVE line per request, in
//! nbdkit-log-filter's format) and stats (totals written to a file when
//! the last client goes and when the server exits).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Result, ZeroFlags};

use super::super::Params;

/// Local time as "YYYY-MM-DD HH:MM:SS.uuuuuu".
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = now.as_secs() as libc::time_t;
    // SAFETY: localtime_r fills the tm we pass; both live on this stack.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&t, &mut tm);
        tm
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{:06}",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros()
    )
}

fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM => "EPERM",
        libc::EIO => "EIO",
        libc::ENOMEM => "ENOMEM",
        libc::EINVAL => "EINVAL",
        libc::ENOSPC => "ENOSPC",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ENOTSUP => "ENOTSUP",
        libc::EOVERFLOW => "EOVERFLOW",
        libc::EROFS => "EROFS",
        _ => "EIO",
    }
}

/// `logfile=FILE`, `logappend=BOOL`. Request lines carry no
/// `connection=N` (requests do not know their connection in this server);
/// Connect and Disconnect lines do.
pub struct Log {
    inner: Arc<dyn Backend>,
    out: Option<Mutex<File>>,
    id: AtomicU64,
}

impl Log {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
        let append = p.take_bool("logappend")?.unwrap_or(false);
        if p.take("logscript").is_some() {
            return Err(p.err("logscript= is not supported by this nbdkit"));
        }
        let out = match p.take("logfile") {
            None => None,
            Some(f) => {
                let mut o = OpenOptions::new();
                o.create(true);
                if append {
                    o.append(true);
                } else {
                    o.write(true).truncate(true);
                }
                Some(Mutex::new(
                    o.open(&f).map_err(|e| p.err(format!("{f}: {e}")))?,
                ))
            }
        };
        Ok(Log {
            inner,
            out,
            id: AtomicU64::new(0),
        })
    }

    fn line(&self, s: &str) {
        if let Some(o) = &self.out {
            let mut f = o.lock();
            let _ = writeln!(f, "{} {s}", timestamp());
        }
    }

    fn call<T>(
        &self,
        act: &str,
        args: &str,
        f: impl FnOnce() -> Result<T>,
        extra: impl FnOnce(&T) -> String,
    ) -> Result<T> {
        if self.out.is_none() {
            return f();
        }
        let id = self.id.fetch_add(1, Ordering::Relaxed) + 1;
        let sep = if args.is_empty() { "" } else { " " };
        self.line(&format!("{act} id={id}{sep}{args} ..."));
        let r = f();
        match &r {
            Ok(v) => {
                let x = extra(v);
                let sep = if x.is_empty() { "" } else { " " };
                self.line(&format!("...{act} id={id}{sep}{x} return=0"));
            }
            Err(e) => self.line(&format!(
                "...{act} id={id} return=-1 ({})",
                errno_name(e.errno)
            )),
        }
        r
    }
}

fn none<T>(_: &T) -> String {
    String::new()
}

impl Backend for Log {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        self.inner.open_connection(info)?;
        let b = |r: Result<bool>| r.map(|x| x as u8).unwrap_or(0);
        self.line(&format!(
            "connection={} Connect export={:?} tls={} size={:#x} write={} flush={} rotational={} trim={} zero={} fua={} extents={} cache={} fast_zero={}",
            info.id,
            String::from_utf8_lossy(&info.export_name),
            info.tls as u8,
            self.inner.size().unwrap_or(0),
            b(self.inner.can_write().map(|w| w && !info.readonly)),
            b(self.inner.can_flush()),
            b(self.inner.is_rotational()),
            b(self.inner.can_trim()),
            b(self.inner.can_zero()),
            b(self.inner.can_fua()),
            b(self.inner.can_extents()),
            b(self.inner.can_cache()),
            b(self.inner.can_fast_zero()),
        ));
        Ok(())
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        self.line(&format!("connection={} Disconnect", info.id));
        self.inner.close_connection(info)
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let args = format!("offset={offset:#x} count={:#x}", buf.len());
        self.call("Read", &args, || self.inner.pread(buf, offset), none)
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={:#x} fua={}",
            buf.len(),
            fua as u8
        );
        self.call("Write", &args, || self.inner.pwrite(buf, offset, fua), none)
    }
    fn flush(&self) -> Result<()> {
        self.call("Flush", "", || self.inner.flush(), none)
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x} fua={}", fua as u8);
        self.call("Trim", &args, || self.inner.trim(count, offset, fua), none)
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={count:#x} trim={} fua={} fast={}",
            flags.may_trim as u8, flags.fua as u8, flags.fast as u8
        );
        self.call(
            "Zero",
            &args,
            || self.inner.zero(count, offset, flags),
            none,
        )
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.call("Cache", &args, || self.inner.cache(count, offset), none)
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.call(
            "Extents",
            &args,
            || self.inner.extents(count, offset, sink),
            none,
        )
    }
}

// ---- stats ----

#[derive(Default, Clone, Copy)]
struct OpStat {
    ops: u64,
    bytes: u64,
    time: Duration,
}

pub struct StatsData {
    path: String,
    append: bool,
    start: Instant,
    /// read, write, trim, zero, extents, cache, flush
    ops: Mutex<[OpStat; 7]>,
    conns: AtomicU64,
}

const NAMES: [&str; 7] = ["read", "write", "trim", "zero", "extents", "cache", "flush"];

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
        let total_time: f64 = ops.iter().map(|o| o.time.as_secs_f64()).sum();
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
        let _ = total_time;
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

/// `statsfile=FILE` (required), `statsappend=BOOL`, `statsthreshold=`
/// (accepted). The file is written when the last client disconnects and
/// when the server exits (from an atexit handler: the server's exit path
/// is `std::process::exit`).
pub struct Stats {
    inner: Arc<dyn Backend>,
    data: Arc<StatsData>,
}

impl Stats {
    pub fn open(p: &mut Params, inner: Arc<dyn Backend>) -> std::result::Result<Self, String> {
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
        Ok(Stats { inner, data })
    }

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

impl Backend for Stats {
    fn next(&self) -> Option<&dyn Backend> {
        Some(&*self.inner)
    }
    fn open_connection(&self, info: &ConnectionInfo) -> Result<()> {
        self.inner.open_connection(info)?;
        self.data.conns.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close_connection(&self, info: &ConnectionInfo) {
        self.inner.close_connection(info);
        if self.data.conns.fetch_sub(1, Ordering::SeqCst) == 1 {
            self.data.write();
        }
    }
    fn pread_lend(
        &self,
        count: u32,
        offset: u64,
        send: &mut dyn FnMut(&[&[u8]]) -> bool,
    ) -> Option<Result<()>> {
        let t = Instant::now();
        let r = self.inner.pread_lend(count, offset, send);
        if let Some(Ok(())) = r {
            let mut o = self.data.ops.lock();
            o[0].ops += 1;
            o[0].bytes += count as u64;
            o[0].time += t.elapsed();
        }
        r
    }
    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let n = buf.len() as u64;
        self.count(0, n, || self.inner.pread(buf, offset))
    }
    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        self.count(1, buf.len() as u64, || self.inner.pwrite(buf, offset, fua))
    }
    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        self.count(2, count as u64, || self.inner.trim(count, offset, fua))
    }
    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        self.count(3, count as u64, || self.inner.zero(count, offset, flags))
    }
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        self.count(4, count as u64, || self.inner.extents(count, offset, sink))
    }
    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        self.count(5, count as u64, || self.inner.cache(count, offset))
    }
    fn flush(&self) -> Result<()> {
        self.count(6, 0, || self.inner.flush())
    }
}

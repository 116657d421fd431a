//! The log filter: writes one line to a log file when a client connects
//! and disconnects, and one line when each request starts and one when it
//! ends, in nbdkit-log-filter(1)'s format.
//!
//! `logfile=FILE`, `logappend=BOOL`. Request lines carry no
//! `connection=N` (nbdkit's do; ours never have, and the tests read the
//! fields by position); Connect and Disconnect lines do.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};

use crate::chain::{Filter, FilterHandle, OpenNext};
use crate::params::Params;

use super::FilterSpec;

pub const FILTER: FilterSpec = FilterSpec {
    name: "log",
    params: &[
        ("logfile", "the file the log is written to"),
        (
            "logappend",
            "append to the log file rather than truncate it",
        ),
        (
            "logscript",
            "a script run for each log line (not supported)",
        ),
    ],
    open: |p, _| Ok(Arc::new(Log::open(p)?)),
};

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

/// The log file, and request ids counted over every connection.
pub struct Log {
    out: Option<Mutex<File>>,
    id: AtomicU64,
}

impl Log {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
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

impl Filter for Log {
    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        Ok(Box::new(self))
    }
}

impl FilterHandle for Log {
    /// The Connect line, once the layers below are open and can say what
    /// they offer.
    fn prepare(&self, next: &dyn Backend, info: &ConnectionInfo) -> Result<()> {
        if self.out.is_none() {
            return Ok(());
        }
        let b = |r: Result<bool>| r.map(|x| x as u8).unwrap_or(0);
        self.line(&format!(
            "connection={} Connect export={:?} tls={} size={:#x} write={} flush={} rotational={} trim={} zero={} fua={} extents={} cache={} fast_zero={}",
            info.id,
            String::from_utf8_lossy(&info.export_name),
            info.tls as u8,
            next.size().unwrap_or(0),
            b(next.can_write().map(|w| w && !info.readonly)),
            b(next.can_flush()),
            b(next.is_rotational()),
            b(next.can_trim()),
            b(next.can_zero()),
            b(next.can_fua()),
            b(next.can_extents()),
            b(next.can_cache()),
            b(next.can_fast_zero()),
        ));
        Ok(())
    }
    fn close(&self, info: &ConnectionInfo) {
        self.line(&format!("connection={} Disconnect", info.id));
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let args = format!("offset={:#x} count={:#x}", r.offset, r.count());
        self.call("Read", &args, || next.read(r), none)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={:#x} fua={}",
            buf.len(),
            fua as u8
        );
        self.call("Write", &args, || next.pwrite(buf, offset, fua), none)
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        self.call("Flush", "", || next.flush(), none)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x} fua={}", fua as u8);
        self.call("Trim", &args, || next.trim(count, offset, fua), none)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={count:#x} trim={} fua={} fast={}",
            flags.may_trim as u8, flags.fua as u8, flags.fast as u8
        );
        self.call("Zero", &args, || next.zero(count, offset, flags), none)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.call("Cache", &args, || next.cache(count, offset), none)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.call("Extents", &args, || next.extents(count, offset, sink), none)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::Chain;
    use crate::plugins::memory::Memory;
    use nbd_core::server::Peer;

    #[test]
    fn connect_requests_disconnect() {
        let path = std::env::temp_dir().join(format!("log-filter-{}", std::process::id()));
        let pairs = vec![("logfile".to_string(), path.display().to_string())];
        let mut p = Params::new("log", pairs);
        let f = (FILTER.open)(&mut p, false).unwrap();
        p.finish().unwrap();
        // An error filter below fails every cache request.
        let mut p = Params::new("error", vec![("error-cache-rate".into(), "1".into())]);
        let e = (crate::filters::error::FILTER.open)(&mut p, false).unwrap();
        let chain = Arc::new(Chain::new(Arc::new(Memory::new(1 << 20)), vec![f, e]));
        let info = ConnectionInfo {
            id: 7,
            peer: Peer::Other,
            export_name: b"e".to_vec(),
            readonly: true,
            tls: false,
        };
        let c = chain.open(info).unwrap();
        let mut buf = [0u8; 512];
        c.pread(&mut buf, 0x200).unwrap();
        assert!(c.cache(0x200, 0x400).is_err());
        drop(c);
        let s = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = s
            .lines()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap())
            .collect();
        assert_eq!(lines.len(), 6, "{s}");
        assert!(lines[0]
            .starts_with("connection=7 Connect export=\"e\" tls=0 size=0x100000 write=0 flush=1"));
        assert_eq!(lines[1], "Read id=1 offset=0x200 count=0x200 ...");
        assert_eq!(lines[2], "...Read id=1 return=0");
        assert_eq!(lines[3], "Cache id=2 offset=0x400 count=0x200 ...");
        assert_eq!(lines[4], "...Cache id=2 return=-1 (EIO)");
        assert_eq!(lines[5], "connection=7 Disconnect");
    }

    #[test]
    fn logscript_is_refused() {
        let mut p = Params::new("log", vec![("logscript".into(), "true".into())]);
        assert!((FILTER.open)(&mut p, false).is_err());
    }
}

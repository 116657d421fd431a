//! The log filter (nbdkit-log-filter(1)): writes every connection's
//! requests, and the server's Ready, Fork, Preconnect and ListExports
//! events, to a log file (`logfile=FILE`, `logappend=BOOL`), or hands
//! each line to a shell script (`logscript=SCRIPT`), in nbdkit 1.32's
//! format:
//!
//! ```text
//! 2020-08-06 02:07:23.080712 connection=1 Connect export="" tls=0 size=0x400 minsize=0x0 ...
//! 2020-08-06 02:07:23.080907 connection=1 Read id=1 offset=0x0 count=0x200 ...
//! 2020-08-06 02:07:23.080927 connection=1 ...Read id=1 return=0
//! 2020-08-06 02:07:23.081255 connection=1 Disconnect transactions=1
//! ```
//!
//! Timestamps are UTC, as nbdkit's. Connections are numbered from 1 in
//! the order they open this filter; request ids count from 1 on each
//! connection; Preconnect and ListExports have counters of their own.
//! Failures read `return=-1 error=EIO`, the errno named as the NBD error
//! it becomes on the wire (EROFS is EPERM, EDQUOT and EFBIG are ENOSPC,
//! anything unknown EINVAL), as nbdkit's.
//!
//! What we cannot tell as nbdkit does: `zero`, `fua` and `cache` in the
//! Connect line are 2 (native) or 0, since our layers answer yes or no,
//! not "emulated" (1); `Ready thread_model=3` always (our server is
//! always parallel to the filter).

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use parking_lot::Mutex;

use nbd_core::server::backend::{Backend, ConnectionInfo, Extents, Read, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use crate::chain::{Below, Filter, FilterHandle, OpenNext};
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
        ("logscript", "a shell script run for each log line"),
    ],
    open: |p, _| Ok(Arc::new(Log::open(p)?)),
};

/// UTC as "YYYY-MM-DD HH:MM:SS.uuuuuu", as nbdkit's log filter writes it.
fn timestamp() -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let t = now.as_secs() as libc::time_t;
    // SAFETY: gmtime_r fills the tm we pass; both live on this stack.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::gmtime_r(&t, &mut tm);
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

/// The name of the NBD error an errno becomes, as nbdkit's log filter
/// names a failure (what protocol.c:nbd_errno() decodes; anything else
/// is EINVAL there).
fn errno_name(e: i32) -> &'static str {
    match e {
        libc::EPERM | libc::EROFS => "EPERM",
        libc::EIO => "EIO",
        libc::ENOMEM => "ENOMEM",
        libc::ENOSPC | libc::EDQUOT | libc::EFBIG => "ENOSPC",
        libc::ESHUTDOWN => "ESHUTDOWN",
        libc::ENOTSUP => "ENOTSUP",
        libc::EOVERFLOW => "EOVERFLOW",
        _ => "EINVAL",
    }
}

/// A string as nbdkit's shell_quote writes it: as-is when every byte is
/// safe (and it is not empty), else in double quotes with `$`, `` ` ``,
/// `\` and `"` escaped.
fn shell_quote(s: &str) -> String {
    const SAFE: &str = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789%+,-./:=@_";
    if !s.is_empty() && s.chars().all(|c| SAFE.contains(c)) {
        return s.to_string();
    }
    let mut o = String::with_capacity(s.len() + 2);
    o.push('"');
    for c in s.chars() {
        if matches!(c, '$' | '`' | '\\' | '"') {
            o.push('\\');
        }
        o.push(c);
    }
    o.push('"');
    o
}

/// The fields of a leave line for a call that returns nothing else.
fn simple<T>(r: &Result<T>) -> String {
    match r {
        Ok(_) => "return=0".into(),
        Err(e) => format!("return=-1 error={}", errno_name(e.errno)),
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Enter,
    Leave,
    Print,
}

/// The log file or script, and the counters shared by every connection.
pub struct Log {
    out: Option<Mutex<File>>,
    script: Option<String>,
    /// Connections opened so far (the last one's number).
    connections: AtomicU64,
    preconnects: AtomicU64,
    lists: AtomicU64,
    /// The process that wrote Ready; Fork is written only from another.
    pid: u32,
}

impl Log {
    pub fn open(p: &mut Params) -> std::result::Result<Self, String> {
        let append = p.take_bool("logappend")?.unwrap_or(false);
        let script = p.take("logscript");
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
                    o.open(&f).map_err(|e| p.err(format!("open: {f}: {e}")))?,
                ))
            }
        };
        let log = Log {
            out,
            script,
            connections: AtomicU64::new(0),
            preconnects: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            pid: std::process::id(),
        };
        log.output(None, 0, "Ready", Kind::Print, "thread_model=3");
        Ok(log)
    }

    fn active(&self) -> bool {
        self.out.is_some() || self.script.is_some()
    }

    /// One log entry: a line of the file and a run of the script.
    fn output(&self, conn: Option<u64>, id: u64, act: &str, kind: Kind, args: &str) {
        if let Some(o) = &self.out {
            let mut l = timestamp();
            if let Some(c) = conn {
                l += &format!(" connection={c}");
            }
            l.push(' ');
            if kind == Kind::Leave {
                l += "...";
            }
            l += act;
            if id != 0 {
                l += &format!(" id={id}");
            }
            if !args.is_empty() {
                l.push(' ');
                l += args;
            }
            if kind == Kind::Enter {
                l += " ...";
            }
            l.push('\n');
            let mut f = o.lock();
            let _ = f.write_all(l.as_bytes());
        }
        if let Some(s) = &self.script {
            // The fields become shell variables: the script runs after
            // assignments of act, connection, type, id and the line's
            // own key=value fields, which are already shell-quoted.
            let mut c = format!("act={act}\n");
            if let Some(n) = conn {
                c += &format!("connection={n}\n");
            }
            let t = match kind {
                Kind::Enter => "ENTER",
                Kind::Leave => "LEAVE",
                Kind::Print => "PRINT",
            };
            c += &format!("type={t}\n");
            if id != 0 {
                c += &format!("id={id}\n");
            }
            if !args.is_empty() {
                c += args;
                c.push('\n');
            }
            c += s;
            c.push('\n');
            // As nbdkit, the script runs without being waited for (a
            // log cannot change or hold up a request, and a slow script
            // does not slow the server), so runs may finish in any
            // order; a thread reaps it. Its status is ignored.
            let child = std::process::Command::new("bash")
                .arg("-c")
                .arg(&c)
                .stdin(std::process::Stdio::null())
                .spawn();
            if let Ok(mut child) = child {
                let _ = std::thread::Builder::new()
                    .name("logscript".into())
                    .spawn(move || child.wait());
            }
        }
    }
}

impl Filter for Log {
    fn after_fork(&self) -> std::result::Result<(), String> {
        if std::process::id() != self.pid {
            self.output(None, 0, "Fork", Kind::Print, "");
        }
        Ok(())
    }

    fn preconnect(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<()> {
        if !self.active() {
            return next.preconnect(info);
        }
        let id = self.preconnects.fetch_add(1, Ordering::Relaxed) + 1;
        let args = format!("readonly={}", info.readonly as u8);
        self.output(None, id, "Preconnect", Kind::Enter, &args);
        let r = next.preconnect(info);
        self.output(None, id, "Preconnect", Kind::Leave, &simple(&r));
        r
    }

    fn list_exports(
        &self,
        next: &Below<'_>,
        info: &ConnectionInfo,
    ) -> Result<Option<Vec<(String, String)>>> {
        if !self.active() {
            return next.list_exports(info);
        }
        let id = self.lists.fetch_add(1, Ordering::Relaxed) + 1;
        let args = format!("readonly={} tls={}", info.readonly as u8, info.tls as u8);
        self.output(None, id, "ListExports", Kind::Enter, &args);
        let r = next.list_exports(info);
        let x = match &r {
            // Without a list of its own, a plugin offers the default
            // export, which nbdkit lists as "".
            Ok(None) => "exports=(\"\") return=0".to_string(),
            Ok(Some(l)) => {
                let names: Vec<String> = l.iter().map(|(n, _)| shell_quote(n)).collect();
                format!("exports=({}) return=0", names.join(" "))
            }
            Err(_) => simple(&r),
        };
        self.output(None, id, "ListExports", Kind::Leave, &x);
        r
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        next.open(info)?;
        let connection = self.connections.fetch_add(1, Ordering::Relaxed) + 1;
        Ok(Box::new(LogHandle {
            log: self,
            connection,
            ids: AtomicU64::new(0),
        }))
    }
}

/// The log filter on one connection: its number and its request ids.
struct LogHandle {
    log: Arc<Log>,
    connection: u64,
    /// Requests so far (the last one's id).
    ids: AtomicU64,
}

impl LogHandle {
    fn call<T>(
        &self,
        act: &str,
        args: &str,
        f: impl FnOnce() -> Result<T>,
        leave: impl FnOnce(&Result<T>) -> String,
    ) -> Result<T> {
        if !self.log.active() {
            return f();
        }
        let c = Some(self.connection);
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        self.log.output(c, id, act, Kind::Enter, args);
        let r = f();
        self.log.output(c, id, act, Kind::Leave, &leave(&r));
        r
    }
}

impl FilterHandle for LogHandle {
    /// The Connect line, once the layers below are open and can say what
    /// they offer.
    fn prepare(&self, next: &dyn Backend, info: &ConnectionInfo) -> Result<()> {
        if !self.log.active() {
            return Ok(());
        }
        let size = next.size()?;
        let (min, pref, max) = next.block_size()?.unwrap_or((0, 0, 0));
        let b = |x: bool| x as u8;
        // Native (2) or not at all: see the module's comment.
        let n = |x: bool| if x { 2 } else { 0 };
        // As nbdkit's backend answers them: nothing that writes on a
        // connection that cannot write.
        let w = next.can_write()? && !info.readonly;
        let zero = w && next.can_zero()?;
        let args = format!(
            "export={} tls={} size={size:#x} minsize={min:#x} prefsize={pref:#x} maxsize={max:#x} write={} flush={} rotational={} trim={} zero={} fua={} extents={} cache={} fast_zero={}",
            shell_quote(&String::from_utf8_lossy(&info.export_name)),
            b(info.tls),
            b(w),
            b(next.can_flush()?),
            b(next.is_rotational()?),
            b(w && next.can_trim()?),
            n(zero),
            n(w && next.can_fua()?),
            b(next.can_extents()?),
            n(next.can_cache()?),
            b(zero && next.can_fast_zero()?),
        );
        self.log
            .output(Some(self.connection), 0, "Connect", Kind::Print, &args);
        Ok(())
    }
    fn close(&self, _: &ConnectionInfo) {
        if self.log.active() {
            let args = format!("transactions={}", self.ids.load(Ordering::Relaxed));
            self.log
                .output(Some(self.connection), 0, "Disconnect", Kind::Print, &args);
        }
    }
    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let args = format!("offset={:#x} count={:#x}", r.offset, r.count());
        self.call("Read", &args, || next.read(r), simple)
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={:#x} fua={}",
            buf.len(),
            fua as u8
        );
        self.call("Write", &args, || next.pwrite(buf, offset, fua), simple)
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        self.call("Flush", "", || next.flush(), simple)
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x} fua={}", fua as u8);
        self.call("Trim", &args, || next.trim(count, offset, fua), simple)
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={count:#x} trim={} fua={} fast={}",
            flags.may_trim as u8, flags.fua as u8, flags.fast as u8
        );
        self.call("Zero", &args, || next.zero(count, offset, flags), simple)
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        let args = format!("offset={offset:#x} count={count:#x}");
        self.call("Cache", &args, || next.cache(count, offset), simple)
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let args = format!(
            "offset={offset:#x} count={count:#x} req_one={}",
            sink.req_one() as u8
        );
        if !self.log.active() {
            return next.extents(count, offset, sink);
        }
        let c = Some(self.connection);
        let id = self.ids.fetch_add(1, Ordering::Relaxed) + 1;
        self.log.output(c, id, "Extents", Kind::Enter, &args);
        let r = next.extents(count, offset, sink);
        let x = match &r {
            Ok(()) => {
                let mut at = sink.start();
                let mut l = Vec::new();
                for &(len, flags) in sink.as_slice() {
                    let mut t = Vec::new();
                    if flags & allocation::HOLE != 0 {
                        t.push("hole");
                    }
                    if flags & allocation::ZERO != 0 {
                        t.push("zero");
                    }
                    l.push(format!("{at:#x} {len:#x} \"{}\"", t.join(",")));
                    at += len;
                }
                format!("extents=({}) return=0", l.join(" "))
            }
            Err(_) => simple(&r),
        };
        self.log.output(c, id, "Extents", Kind::Leave, &x);
        r
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
        let c = chain.open(info.clone()).unwrap();
        let mut buf = [0u8; 512];
        c.pread(&mut buf, 0x200).unwrap();
        assert!(c.cache(0x200, 0x400).is_err());
        let mut sink = Extents::new();
        sink.reset(0, 0x2000, false);
        c.extents(0x2000, 0, &mut sink).unwrap();
        drop(c);
        // A second connection is number 2, whatever its id, and counts
        // its requests from 1.
        let c = chain.open(ConnectionInfo { id: 3, ..info }).unwrap();
        c.flush().unwrap();
        drop(c);
        let s = std::fs::read_to_string(&path).unwrap();
        std::fs::remove_file(&path).unwrap();
        let lines: Vec<&str> = s
            .lines()
            .map(|l| l.splitn(3, ' ').nth(2).unwrap())
            .collect();
        let connect = "Connect export=e tls=0 size=0x100000 minsize=0x0 prefsize=0x0 \
                       maxsize=0x0 write=0 flush=1 rotational=0 trim=0 zero=0 fua=0 \
                       extents=1 cache=2 fast_zero=0";
        let want = [
            "Ready thread_model=3".to_string(),
            format!("connection=1 {connect}"),
            "connection=1 Read id=1 offset=0x200 count=0x200 ...".into(),
            "connection=1 ...Read id=1 return=0".into(),
            "connection=1 Cache id=2 offset=0x400 count=0x200 ...".into(),
            "connection=1 ...Cache id=2 return=-1 error=EIO".into(),
            "connection=1 Extents id=3 offset=0x0 count=0x2000 req_one=0 ...".into(),
            "connection=1 ...Extents id=3 extents=(0x0 0x2000 \"hole,zero\") return=0".into(),
            "connection=1 Disconnect transactions=3".into(),
            format!("connection=2 {connect}"),
            "connection=2 Flush id=1 ...".into(),
            "connection=2 ...Flush id=1 return=0".into(),
            "connection=2 Disconnect transactions=1".into(),
        ];
        assert_eq!(lines, want, "{s}");
        // "YYYY-MM-DD HH:MM:SS.uuuuuu"
        let t: Vec<&str> = s.lines().next().unwrap().splitn(3, ' ').collect();
        assert_eq!((t[0].len(), t[1].len()), (10, 15), "{s}");
    }

    #[test]
    fn errors_are_named_as_on_the_wire() {
        assert_eq!(errno_name(libc::EIO), "EIO");
        assert_eq!(errno_name(libc::EROFS), "EPERM");
        assert_eq!(errno_name(libc::EDQUOT), "ENOSPC");
        assert_eq!(errno_name(libc::EFBIG), "ENOSPC");
        assert_eq!(errno_name(libc::ENOTSUP), "ENOTSUP");
        assert_eq!(errno_name(libc::ENOTTY), "EINVAL");
    }

    #[test]
    fn strings_are_shell_quoted() {
        assert_eq!(shell_quote(""), "\"\"");
        assert_eq!(shell_quote("foo/bar-1.img"), "foo/bar-1.img");
        assert_eq!(shell_quote("a b"), "\"a b\"");
        assert_eq!(shell_quote("x$y\"z`\\"), "\"x\\$y\\\"z\\`\\\\\"");
        assert_eq!(shell_quote("é"), "\"é\"");
    }

    #[test]
    fn logscript_gets_the_fields_as_shell_variables() {
        let dir = std::env::temp_dir().join(format!("log-script-{}", std::process::id()));
        let out = dir.display().to_string();
        let script = format!(
            "echo \"$type $act c=${{connection-}} id=${{id-}} off=${{offset-}} r=${{return-}} e=${{error-}} x=${{exports[*]-}}\" >> '{out}'"
        );
        let mut p = Params::new("log", vec![("logscript".into(), script)]);
        let f = (FILTER.open)(&mut p, false).unwrap();
        p.finish().unwrap();
        let mut p = Params::new("error", vec![("error-pread-rate".into(), "1".into())]);
        let e = (crate::filters::error::FILTER.open)(&mut p, false).unwrap();
        let chain = Arc::new(Chain::new(Arc::new(Memory::new(1 << 20)), vec![f, e]));
        let info = ConnectionInfo {
            id: 7,
            peer: Peer::Other,
            export_name: Vec::new(),
            readonly: false,
            tls: false,
        };
        chain.list_exports(&info).unwrap();
        let c = chain.open(info).unwrap();
        let mut buf = [0u8; 512];
        assert!(c.pread(&mut buf, 0x200).is_err());
        drop(c);
        // The runs are not waited for: wait for their seven lines.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        let s = loop {
            let s = std::fs::read_to_string(&dir).unwrap_or_default();
            if s.lines().count() >= 7 || std::time::Instant::now() > deadline {
                break s;
            }
            std::thread::sleep(std::time::Duration::from_millis(20));
        };
        std::fs::remove_file(&dir).unwrap();
        let mut got: Vec<&str> = s.lines().collect();
        got.sort_unstable();
        let want = "PRINT Ready c= id= off= r= e= x=\n\
                    ENTER ListExports c= id=1 off= r= e= x=\n\
                    LEAVE ListExports c= id=1 off= r=0 e= x=\n\
                    PRINT Connect c=1 id= off= r= e= x=\n\
                    ENTER Read c=1 id=1 off=0x200 r= e= x=\n\
                    LEAVE Read c=1 id=1 off= r=-1 e=EIO x=\n\
                    PRINT Disconnect c=1 id= off= r= e= x=\n";
        let mut want: Vec<&str> = want.lines().collect();
        want.sort_unstable();
        assert_eq!(got, want);
    }
}

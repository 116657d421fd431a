//! The script plugins' methods (nbdkit-sh-plugin(3), "Methods"): each a
//! call of the method's script with its arguments, its exit code read as
//! nbdkit's sh plugin reads it, and what nbdkit's server adds around a
//! plugin: FUA emulated by a flush, zero emulated by writes of zeroes,
//! cache emulated by reads, and the script's thread model enforced with
//! locks.

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex};

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};
use nbd_core::wire::consts::allocation;

use super::call::{self, Outcome};
use super::{chomp, parse_export_list, unexpected_false, Methods};
use crate::chain::Plugin;
use crate::cplugin::{
    THREAD_MODEL_PARALLEL, THREAD_MODEL_SERIALIZE_ALL_REQUESTS, THREAD_MODEL_SERIALIZE_CONNECTIONS,
    THREAD_MODEL_SERIALIZE_REQUESTS,
};
use crate::params::parse_size;

/// The largest write nbdkit makes when it emulates a zero with writes.
const MAX_REQUEST_SIZE: u32 = 64 * 1024 * 1024;

/// The answers of `can_fua` and `can_cache`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Level {
    None,
    Emulate,
    Native,
}

/// A configured script plugin, shared by every connection.
pub struct ScriptPlugin {
    tmpdir: PathBuf,
    methods: Methods,
    /// The script's thread model, asked once configured.
    model: OnceLock<i32>,
    /// SERIALIZE_ALL_REQUESTS (and below): one method at a time.
    all_requests: Mutex<()>,
    /// SERIALIZE_CONNECTIONS: whether a connection has the plugin open.
    connection_busy: Mutex<bool>,
    connection_freed: Condvar,
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "true"
    } else {
        "false"
    }
}

impl ScriptPlugin {
    pub fn new(tmpdir: PathBuf, methods: Methods) -> ScriptPlugin {
        ScriptPlugin {
            tmpdir,
            methods,
            model: OnceLock::new(),
            all_requests: Mutex::new(()),
            connection_busy: Mutex::new(false),
            connection_freed: Condvar::new(),
        }
    }

    fn run(&self, method: &str, args: &[&str], stdin: &[u8]) -> Result<Outcome> {
        call::call(
            &self.methods.script(method),
            &self.tmpdir,
            method,
            args,
            stdin,
        )
    }

    fn script(&self, method: &str) -> PathBuf {
        self.methods.script(method)
    }

    /// A method that only succeeds or fails, at start-up (load,
    /// config_complete, get_ready, after_fork): exit code 2 is success.
    fn startup(&self, method: &str, args: &[&str]) -> std::result::Result<(), String> {
        match self.run(method, args, b"") {
            Ok(Outcome::Ok(_) | Outcome::Missing) => Ok(()),
            Ok(Outcome::False) => Err(unexpected_false(&self.script(method), method).to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// sh's `load`, once the script is known.
    pub fn load(&self) -> std::result::Result<(), String> {
        self.startup("load", &[])
    }

    /// The script's own magic config key, if it has one.
    pub fn magic_config_key(&self) -> std::result::Result<Option<String>, String> {
        let m = "magic_config_key";
        match self.run(m, &[], b"") {
            Ok(Outcome::Ok(out)) => Ok(Some(chomp(&out)).filter(|k| !k.is_empty())),
            Ok(Outcome::Missing) => Ok(None),
            Ok(Outcome::False) => Err(unexpected_false(&self.script(m), m).to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `config KEY VALUE`. A script without it takes no parameters: sh
    /// says so in the words of nbdkit for a plugin without `config`,
    /// eval in its own.
    pub fn config(&self, key: &str, value: &str, eval: bool) -> std::result::Result<(), String> {
        let script = self.script("config");
        match self.run("config", &[key, value], b"") {
            Ok(Outcome::Ok(_)) => Ok(()),
            Ok(Outcome::Missing) if eval => Err(format!(
                "{}: callback '{key}' is unknown, and there is no 'config' callback to handle it",
                script.display()
            )),
            Ok(Outcome::Missing) => Err(format!(
                "{}: this plugin does not need command line configuration",
                script.display()
            )),
            Ok(Outcome::False) => Err(unexpected_false(&script, "config").to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    /// `config_complete`, `thread_model` and `get_ready`, in nbdkit's
    /// order: the plugin is then ready to serve.
    pub fn ready(self) -> std::result::Result<Arc<dyn Plugin>, String> {
        self.startup("config_complete", &[])?;
        let model = self.ask_thread_model()?;
        let _ = self.model.set(model);
        crate::log::debug!(
            "sh: using thread model: {}",
            crate::cplugin::thread_model_name(model)
        );
        self.startup("get_ready", &[])?;
        Ok(Arc::new(self))
    }

    /// For `--dump-plugin`: the script's thread model, and what its
    /// `dump_plugin` method prints (nothing when it has none or fails).
    pub fn dump(&self) -> std::result::Result<(i32, String), String> {
        let model = self.ask_thread_model()?;
        let out = match self.run("dump_plugin", &[], b"") {
            Ok(Outcome::Ok(o)) => String::from_utf8_lossy(&o).into_owned(),
            _ => String::new(),
        };
        Ok((model, out))
    }

    /// The script's `thread_model`; without one (or with an answer it
    /// does not know), the safe serialize_all_requests, as nbdkit.
    fn ask_thread_model(&self) -> std::result::Result<i32, String> {
        let m = "thread_model";
        match self.run(m, &[], b"") {
            Ok(Outcome::Ok(out)) => {
                let s = chomp(&out).to_ascii_lowercase().replace('-', "_");
                Ok(match s.as_str() {
                    "parallel" => THREAD_MODEL_PARALLEL,
                    "serialize_requests" => THREAD_MODEL_SERIALIZE_REQUESTS,
                    "serialize_all_requests" => THREAD_MODEL_SERIALIZE_ALL_REQUESTS,
                    "serialize_connections" => THREAD_MODEL_SERIALIZE_CONNECTIONS,
                    _ => {
                        crate::log::debug!(
                            "{}: ignoring unrecognized thread model: {s}",
                            self.script(m).display()
                        );
                        THREAD_MODEL_SERIALIZE_ALL_REQUESTS
                    }
                })
            }
            Ok(Outcome::Missing) => Ok(THREAD_MODEL_SERIALIZE_ALL_REQUESTS),
            Ok(Outcome::False) => Err(unexpected_false(&self.script(m), m).to_string()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn model(&self) -> i32 {
        *self
            .model
            .get()
            .unwrap_or(&THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
    }

    /// A method about exports (`list_exports`, `default_export`), with
    /// the connection's read-only and TLS facts; `None` when missing.
    fn exports_method(&self, method: &str, info: &ConnectionInfo) -> Result<Option<Vec<u8>>> {
        let _all =
            (self.model() <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS).then(|| self.all_requests.lock());
        match self.run(method, &[yes_no(info.readonly), yes_no(info.tls)], b"")? {
            Outcome::Ok(out) => Ok(Some(out)),
            Outcome::Missing => Ok(None),
            Outcome::False => Err(unexpected_false(&self.script(method), method)),
        }
    }

    fn release_connection(&self) {
        if self.model() == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            *self.connection_busy.lock() = false;
            self.connection_freed.notify_one();
        }
    }
}

impl Plugin for ScriptPlugin {
    fn thread_model(&self) -> i32 {
        self.model()
    }

    fn after_fork(&self) -> std::result::Result<(), String> {
        self.startup("after_fork", &[])
    }

    fn preconnect(&self, info: &ConnectionInfo) -> Result<()> {
        let m = "preconnect";
        match self.run(m, &[yes_no(info.readonly)], b"")? {
            Outcome::Ok(_) | Outcome::Missing => Ok(()),
            Outcome::False => Err(unexpected_false(&self.script(m), m)),
        }
    }

    /// Without `list_exports`, the one export is the default export (as
    /// nbdkit_use_default_export), whatever `-e` says.
    fn list_exports(&self, info: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        match self.exports_method("list_exports", info)? {
            Some(out) => Ok(Some(parse_export_list(&out))),
            None => {
                let name = self.default_export(info)?.unwrap_or_default();
                Ok(Some(vec![(name, String::new())]))
            }
        }
    }

    fn default_export(&self, info: &ConnectionInfo) -> Result<Option<String>> {
        Ok(self.exports_method("default_export", info)?.map(|out| {
            parse_export_list(&out)
                .into_iter()
                .next()
                .map(|(name, _)| name)
                .unwrap_or_default()
        }))
    }

    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        if self.model() == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            let mut busy = self.connection_busy.lock();
            while *busy {
                self.connection_freed.wait(&mut busy);
            }
            *busy = true;
        }
        let m = "open";
        let export = String::from_utf8_lossy(&info.export_name).into_owned();
        let opened = {
            let _all = (self.model() <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
                .then(|| self.all_requests.lock());
            self.run(m, &[yes_no(info.readonly), &export, yes_no(info.tls)], b"")
        };
        let h = match opened {
            Ok(Outcome::Ok(out)) => chomp(&out),
            Ok(Outcome::Missing) => String::new(),
            Ok(Outcome::False) => {
                self.release_connection();
                return Err(unexpected_false(&self.script(m), m));
            }
            Err(e) => {
                self.release_connection();
                return Err(e);
            }
        };
        if !h.is_empty() {
            crate::log::debug!("sh: handle: {h}");
        }
        Ok(Box::new(ScriptHandle {
            plugin: self,
            h,
            request: Mutex::new(()),
            can_write: OnceLock::new(),
            can_flush: OnceLock::new(),
            can_zero: OnceLock::new(),
            fua: OnceLock::new(),
            cache: OnceLock::new(),
        }))
    }
}

/// The plugin opened for one connection: the handle its `open` printed.
struct ScriptHandle {
    plugin: Arc<ScriptPlugin>,
    h: String,
    /// SERIALIZE_REQUESTS: one method at a time for this connection.
    request: Mutex<()>,
    /// Answers asked once per connection (nbdkit's server keeps
    /// can_write; its sh plugin can_flush and can_zero).
    can_write: OnceLock<bool>,
    can_flush: OnceLock<bool>,
    can_zero: OnceLock<bool>,
    fua: OnceLock<Level>,
    cache: OnceLock<Level>,
}

impl ScriptHandle {
    fn script(&self, method: &str) -> PathBuf {
        self.plugin.script(method)
    }

    /// Runs `method HANDLE ARGS...` under the thread model's locks.
    fn call(&self, method: &str, args: &[&str], stdin: &[u8]) -> Result<Outcome> {
        let model = self.plugin.model();
        let _all =
            (model <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS).then(|| self.plugin.all_requests.lock());
        let _one = (model == THREAD_MODEL_SERIALIZE_REQUESTS).then(|| self.request.lock());
        let mut argv = Vec::with_capacity(args.len() + 1);
        argv.push(self.h.as_str());
        argv.extend_from_slice(args);
        self.plugin.run(method, &argv, stdin)
    }

    /// A method whose output is its answer; exit code 3 is an error.
    fn output(&self, method: &str, args: &[&str]) -> Result<Option<Vec<u8>>> {
        match self.call(method, args, b"")? {
            Outcome::Ok(out) => Ok(Some(out)),
            Outcome::Missing => Ok(None),
            Outcome::False => Err(unexpected_false(&self.script(method), method)),
        }
    }

    /// A yes/no method: 0 yes, 3 no, 2 `default`.
    fn boolean(&self, method: &str, default: bool) -> Result<bool> {
        Ok(match self.call(method, &[], b"")? {
            Outcome::Ok(_) => true,
            Outcome::False => false,
            Outcome::Missing => default,
        })
    }

    fn cached(&self, cell: &OnceLock<bool>, method: &str) -> Result<bool> {
        if let Some(b) = cell.get() {
            return Ok(*b);
        }
        let b = self.boolean(method, false)?;
        Ok(*cell.get_or_init(|| b))
    }

    fn script_can_flush(&self) -> Result<bool> {
        self.cached(&self.can_flush, "can_flush")
    }

    fn script_can_zero(&self) -> Result<bool> {
        self.cached(&self.can_zero, "can_zero")
    }

    /// `can_fua` or `can_cache`: none, emulate or native.
    fn level(&self, method: &str) -> Result<Option<Level>> {
        let Some(out) = self.output(method, &[])? else {
            return Ok(None);
        };
        let s = chomp(&out);
        match s.to_ascii_lowercase().as_str() {
            "none" => Ok(Some(Level::None)),
            "emulate" => Ok(Some(Level::Emulate)),
            "native" => Ok(Some(Level::Native)),
            _ => Err(Error::new(
                libc::EIO,
                format!(
                    "{}: could not parse output from {method} method: {s}",
                    self.script(method).display()
                ),
            )),
        }
    }

    /// FUA: the script's answer; without one, emulated by a flush when
    /// the script can flush.
    fn fua_level(&self) -> Result<Level> {
        if let Some(l) = self.fua.get() {
            return Ok(*l);
        }
        let l = match self.level("can_fua")? {
            Some(l) => l,
            None if self.script_can_flush()? => Level::Emulate,
            None => Level::None,
        };
        Ok(*self.fua.get_or_init(|| l))
    }

    /// Caching: the script's answer; without one, none (emulating it by
    /// reads could be slow, nbdkit's reasoning).
    fn cache_level(&self) -> Result<Level> {
        if let Some(l) = self.cache.get() {
            return Ok(*l);
        }
        let l = self.level("can_cache")?.unwrap_or(Level::None);
        Ok(*self.cache.get_or_init(|| l))
    }

    /// A method with no output, where a missing method is success
    /// (flush, trim, cache).
    fn quiet(&self, method: &str, args: &[&str]) -> Result<()> {
        self.output(method, args).map(|_| ())
    }

    /// A write of `buf` at `offset` with the flags string `flags`.
    fn write(&self, buf: &[u8], offset: u64, flags: &str) -> Result<()> {
        let m = "pwrite";
        let (count, offset) = (buf.len().to_string(), offset.to_string());
        match self.call(m, &[&count, &offset, flags], buf)? {
            Outcome::Ok(_) => Ok(()),
            Outcome::Missing => Err(Error::new(libc::EIO, "pwrite not implemented")),
            Outcome::False => Err(unexpected_false(&self.script(m), m)),
        }
    }

    /// Whether a FUA request goes to the script as `fua` (true) or is
    /// followed by a flush (false).
    fn fua_native(&self) -> Result<bool> {
        Ok(self.fua_level()? == Level::Native)
    }

    fn parse_error(&self, method: &str, what: &str) -> Error {
        Error::new(
            libc::EINVAL,
            format!(
                "{}: could not parse output from {method} method: {what}",
                self.script(method).display()
            ),
        )
    }
}

/// The flags argument: the names of the flags set, comma-separated.
fn flags(list: &[(bool, &str)]) -> String {
    list.iter()
        .filter(|(on, _)| *on)
        .map(|(_, name)| *name)
        .collect::<Vec<_>>()
        .join(",")
}

/// An extent's type: a number, or words `hole` and `zero` separated by
/// commas; none is 0 (data).
fn extent_type(s: Option<&str>) -> Option<u32> {
    let Some(s) = s else {
        return Some(0);
    };
    if let Ok(n) = s.parse::<u32>() {
        return Some(n);
    }
    let mut t = 0;
    for w in s.split(',') {
        t |= match w {
            "hole" => allocation::HOLE,
            "zero" => allocation::ZERO,
            "" => 0,
            _ => return None,
        };
    }
    Some(t)
}

impl Backend for ScriptHandle {
    fn size(&self) -> Result<u64> {
        let m = "get_size";
        let Some(out) = self.output(m, &[])? else {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "{}: the get_size method is required",
                    self.script(m).display()
                ),
            ));
        };
        let s = chomp(&out);
        parse_size(&s).map_err(|_| {
            Error::new(
                libc::EIO,
                format!(
                    "{}: could not parse output from get_size method: {s}",
                    self.script(m).display()
                ),
            )
        })
    }

    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        let m = "block_size";
        let Some(out) = self.output(m, &[])? else {
            return Ok(None);
        };
        let text = String::from_utf8_lossy(&out).into_owned();
        let v: Vec<u32> = text
            .split_whitespace()
            .map(|w| parse_size(w).ok().and_then(|n| u32::try_from(n).ok()))
            .collect::<Option<_>>()
            .filter(|v: &Vec<u32>| v.len() == 3)
            .ok_or_else(|| self.parse_error(m, text.trim_end()))?;
        Ok((v[0] != 0).then_some((v[0], v[1], v[2])))
    }

    fn can_write(&self) -> Result<bool> {
        self.cached(&self.can_write, "can_write")
    }
    fn can_flush(&self) -> Result<bool> {
        self.script_can_flush()
    }
    fn can_fua(&self) -> Result<bool> {
        Ok(self.fua_level()? != Level::None)
    }
    fn can_trim(&self) -> Result<bool> {
        self.boolean("can_trim", false)
    }
    /// Zeroing is always possible on a writable export: without the
    /// script's `zero`, nbdkit writes zeroes.
    fn can_zero(&self) -> Result<bool> {
        self.can_write()
    }
    /// Without `can_fast_zero`, a fast zero fails fast exactly when the
    /// script cannot zero (it would be emulated by slow writes).
    fn can_fast_zero(&self) -> Result<bool> {
        match self.call("can_fast_zero", &[], b"")? {
            Outcome::Ok(_) => Ok(true),
            Outcome::False => Ok(false),
            Outcome::Missing => Ok(!self.script_can_zero()?),
        }
    }
    /// Never with serialize_connections, whatever the script says: a
    /// second connection would wait for the first to end (nbdkit's rule).
    fn can_multi_conn(&self) -> Result<bool> {
        if self.plugin.model() == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            return Ok(false);
        }
        self.boolean("can_multi_conn", false)
    }
    fn can_extents(&self) -> Result<bool> {
        self.boolean("can_extents", false)
    }
    fn can_cache(&self) -> Result<bool> {
        Ok(self.cache_level()? != Level::None)
    }
    fn is_rotational(&self) -> Result<bool> {
        self.boolean("is_rotational", false)
    }

    fn export_description(&self) -> Result<Option<String>> {
        Ok(self.output("export_description", &[])?.map(|o| chomp(&o)))
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let m = "pread";
        let (count, off) = (buf.len().to_string(), offset.to_string());
        let Some(data) = self.output(m, &[&count, &off])? else {
            return Err(Error::new(
                libc::EIO,
                format!("{}: the pread method is required", self.script(m).display()),
            ));
        };
        if data.len() != buf.len() {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "{}: incorrect amount of data read: expecting {} bytes but received {} bytes from the script",
                    self.script(m).display(),
                    buf.len(),
                    data.len()
                ),
            ));
        }
        buf.copy_from_slice(&data);
        Ok(())
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let native = fua && self.fua_native()?;
        self.write(buf, offset, &flags(&[(native, "fua")]))?;
        if fua && !native {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        self.quiet("flush", &[])
    }

    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let native = fua && self.fua_native()?;
        let (c, o) = (count.to_string(), offset.to_string());
        self.quiet("trim", &[&c, &o, &flags(&[(native, "fua")])])?;
        if fua && !native {
            self.flush()?;
        }
        Ok(())
    }

    /// The script's `zero` when it can zero; when it cannot, or says
    /// ENOTSUP/EOPNOTSUPP, writes of zeroes, unless the client asked for
    /// a fast zero, which then fails with ENOTSUP (nbdkit's plugin_zero).
    fn zero(&self, count: u32, offset: u64, f: ZeroFlags) -> Result<()> {
        if count == 0 {
            return Ok(());
        }
        let native = f.fua && self.fua_native()?;
        if self.script_can_zero()? {
            let m = "zero";
            let (c, o) = (count.to_string(), offset.to_string());
            let fl = flags(&[(native, "fua"), (f.may_trim, "may_trim"), (f.fast, "fast")]);
            let r = match self.call(m, &[&c, &o, &fl], b"") {
                Ok(Outcome::Ok(_)) => Ok(()),
                Ok(Outcome::Missing) => Err(Error::errno(libc::EOPNOTSUPP)),
                Ok(Outcome::False) => Err(unexpected_false(&self.script(m), m)),
                Err(e) => Err(e),
            };
            match r {
                Ok(()) => {
                    if f.fua && !native {
                        self.flush()?;
                    }
                    return Ok(());
                }
                Err(e) if e.errno != libc::ENOTSUP && e.errno != libc::EOPNOTSUPP => return Err(e),
                Err(_) => {}
            }
        }
        if f.fast {
            return Err(Error::errno(libc::EOPNOTSUPP));
        }
        let zeroes = vec![0u8; count.min(MAX_REQUEST_SIZE) as usize];
        let fl = flags(&[(native, "fua")]);
        let (mut left, mut at) = (count, offset);
        while left > 0 {
            let n = left.min(MAX_REQUEST_SIZE);
            self.write(&zeroes[..n as usize], at, &fl)?;
            left -= n;
            at += u64::from(n);
        }
        if f.fua && !native {
            self.flush()?;
        }
        Ok(())
    }

    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        match self.cache_level()? {
            Level::Native => {
                let (c, o) = (count.to_string(), offset.to_string());
                self.quiet("cache", &[&c, &o])
            }
            // nbdkit reads the range and throws the data away.
            Level::Emulate => {
                let mut buf = vec![0u8; count.min(MAX_REQUEST_SIZE) as usize];
                let (mut left, mut at) = (count, offset);
                while left > 0 {
                    let n = left.min(MAX_REQUEST_SIZE);
                    self.pread(&mut buf[..n as usize], at)?;
                    left -= n;
                    at += u64::from(n);
                }
                Ok(())
            }
            Level::None => Ok(()),
        }
    }

    /// The script prints `offset length [type]` lines (sizes in any form
    /// nbdkit_parse_size reads).
    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        let m = "extents";
        let (c, o) = (count.to_string(), offset.to_string());
        let fl = flags(&[(sink.req_one(), "req_one")]);
        let Some(out) = self.output(m, &[&c, &o, &fl])? else {
            return Err(Error::new(
                libc::EIO,
                format!(
                    "{}: the extents method is required",
                    self.script(m).display()
                ),
            ));
        };
        let text = String::from_utf8_lossy(&out).into_owned();
        for line in text.lines() {
            let mut w = line.split_whitespace();
            let (Some(off), Some(len)) = (w.next(), w.next()) else {
                return Err(self.parse_error(m, line));
            };
            let parsed = (parse_size(off), parse_size(len), extent_type(w.next()));
            let (Ok(off), Ok(len), Some(t)) = parsed else {
                return Err(self.parse_error(m, line));
            };
            sink.add(off, len, t)?;
        }
        if sink.is_empty() {
            return Err(Error::new(
                libc::EINVAL,
                format!(
                    "{}: extents method returned no extents",
                    self.script(m).display()
                ),
            ));
        }
        Ok(())
    }
}

impl Drop for ScriptHandle {
    /// The script's `close`; its outcome does not matter.
    fn drop(&mut self) {
        let _ = self.call("close", &[], b"");
        self.plugin.release_connection();
    }
}

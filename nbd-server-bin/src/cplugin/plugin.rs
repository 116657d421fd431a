//! A C plugin as a [`Plugin`]: each method calls the plugin's callback the
//! way nbdkit's server/plugins.c does, with its defaults for callbacks the
//! plugin leaves out, its emulation of FUA, zero and cache, and its thread
//! models enforced with locks around the calls.

use std::os::raw::{c_int, c_void};
use std::sync::{Arc, OnceLock};

use parking_lot::{Condvar, Mutex, RwLock, RwLockReadGuard};

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Result, ZeroFlags};

use super::abi::*;
use super::context::{self, Call};
use super::lists::{ExportsList, ExtentsList};
use super::load::{c_str, Library};
use crate::chain::Plugin;

const EIO: i32 = libc::EIO;
const EINVAL: i32 = libc::EINVAL;

/// A loaded and configured C plugin, shared by every connection.
pub struct CPlugin {
    pub lib: Library,
    /// The thread model in force: the lowest of the plugin's, its
    /// `thread_model` callback's and the filters' over it.
    model: c_int,
    /// SERIALIZE_ALL_REQUESTS (and below): one callback at a time.
    all_requests: Mutex<()>,
    /// SERIALIZE_CONNECTIONS: whether a connection has the plugin open,
    /// and the signal that it let go.
    connection_busy: Mutex<bool>,
    connection_freed: Condvar,
    /// Whether `unload` has run. Every callback holds this for reading
    /// while it runs, and `shut_down` for writing: the plugin is not
    /// unloaded under a callback still running on a connection's thread
    /// (nbdkit's lock_unload), and nothing calls it afterwards.
    unloaded: RwLock<bool>,
}

/// The error of a callback asked for after the plugin was unloaded (a
/// connection still open while the server exits).
const ESHUTDOWN: i32 = libc::ESHUTDOWN;

/// The errno a failed callback means (nbdkit's get_error): what the plugin
/// gave `nbdkit_set_error`, else `errno` if the plugin declares it
/// meaningful, else EIO. `saved_errno` is errno read right after the call.
fn callback_errno(errno_is_preserved: bool, saved_errno: i32) -> i32 {
    match context::take_error() {
        0 if errno_is_preserved && saved_errno != 0 => saved_errno,
        0 => EIO,
        e => e,
    }
}

fn errno_now() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

impl CPlugin {
    /// The plugin's thread model, lowered by its `thread_model` callback.
    pub fn own_thread_model(lib: &Library) -> std::result::Result<c_int, String> {
        let mut m = lib.s._thread_model;
        if let Some(cb) = lib.s.thread_model {
            let _call = Call::enter(None);
            // SAFETY: the plugin's callback, after config_complete.
            let r = unsafe { cb() };
            if r == -1 {
                return Err(format!("{}: thread_model failed", lib.name));
            }
            m = m.min(r);
        }
        Ok(m.clamp(THREAD_MODEL_SERIALIZE_CONNECTIONS, THREAD_MODEL_PARALLEL))
    }

    pub fn new(lib: Library, model: c_int) -> CPlugin {
        crate::log::debug!(
            "{}: using thread model: {}",
            lib.name,
            thread_model_name(model)
        );
        CPlugin {
            lib,
            model,
            all_requests: Mutex::new(()),
            connection_busy: Mutex::new(false),
            connection_freed: Condvar::new(),
            unloaded: RwLock::new(false),
        }
    }

    pub fn thread_model(&self) -> c_int {
        self.model
    }

    /// Keeps the plugin loaded while a callback runs; `None` once it was
    /// unloaded. Recursive, so that a waiting `shut_down` cannot block a
    /// thread that already holds it.
    fn loaded(&self) -> Option<RwLockReadGuard<'_, bool>> {
        let g = self.unloaded.read_recursive();
        (!*g).then_some(g)
    }

    fn errno_is_preserved(&self) -> bool {
        self.lib.s.errno_is_preserved != 0
    }

    /// Calls a connection-less callback returning an int status, with
    /// `info` as the current connection.
    fn status(&self, info: Option<&ConnectionInfo>, f: impl FnOnce() -> c_int) -> Result<c_int> {
        let Some(_loaded) = self.loaded() else {
            return Err(Error::errno(ESHUTDOWN));
        };
        let _call = Call::enter(info);
        let r = f();
        let saved = errno_now();
        if r == -1 {
            return Err(Error::errno(callback_errno(
                self.errno_is_preserved(),
                saved,
            )));
        }
        Ok(r)
    }

    fn release_connection(&self) {
        if self.model == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            *self.connection_busy.lock() = false;
            self.connection_freed.notify_one();
        }
    }

    /// At exit: `cleanup`, then `unload`, as nbdkit, once every callback
    /// running has returned.
    pub fn shut_down(&self) {
        let mut unloaded = self.unloaded.write();
        if *unloaded {
            return;
        }
        *unloaded = true;
        let _call = Call::enter(None);
        // SAFETY: the plugin's callbacks, once, at exit.
        unsafe {
            if let Some(cb) = self.lib.s.cleanup {
                cb();
            }
            if let Some(cb) = self.lib.s.unload {
                cb();
            }
        }
    }
}

impl Plugin for CPlugin {
    fn after_fork(&self) -> std::result::Result<(), String> {
        match self.lib.s.after_fork {
            // SAFETY: the plugin's callback.
            Some(cb) => self
                .status(None, || unsafe { cb() })
                .map(|_| ())
                .map_err(|_| format!("{}: after_fork failed", self.lib.name)),
            None => Ok(()),
        }
    }

    fn preconnect(&self, info: &ConnectionInfo) -> Result<()> {
        match self.lib.s.preconnect {
            // SAFETY: the plugin's callback.
            Some(cb) => self
                .status(Some(info), || unsafe { cb(info.readonly as c_int) })
                .map(|_| ()),
            None => Ok(()),
        }
    }

    fn list_exports(&self, info: &ConnectionInfo) -> Result<Option<Vec<(String, String)>>> {
        let Some(cb) = self.lib.s.list_exports else {
            return Ok(None);
        };
        let mut list = ExportsList::default();
        let ptr = &mut list as *mut ExportsList as *mut c_void;
        // SAFETY: the plugin's callback, with a list that outlives it.
        self.status(Some(info), || unsafe {
            cb(info.readonly as c_int, info.tls as c_int, ptr)
        })?;
        let mut out = list.pairs();
        if list.use_default {
            let name = self.default_export(info)?.unwrap_or_default();
            out.push((name, String::new()));
        }
        Ok(Some(out))
    }

    fn default_export(&self, info: &ConnectionInfo) -> Result<Option<String>> {
        let Some(cb) = self.lib.s.default_export else {
            return Ok(None);
        };
        let Some(_loaded) = self.loaded() else {
            return Err(Error::errno(ESHUTDOWN));
        };
        let _call = Call::enter(Some(info));
        // SAFETY: the plugin's callback.
        let p = unsafe { cb(info.readonly as c_int, info.tls as c_int) };
        let saved = errno_now();
        match c_str(p) {
            Some(s) => Ok(Some(s)),
            None => Err(Error::errno(callback_errno(
                self.errno_is_preserved(),
                saved,
            ))),
        }
    }

    fn serializes_connections(&self) -> bool {
        self.model == THREAD_MODEL_SERIALIZE_CONNECTIONS
    }

    fn open(self: Arc<Self>, info: &ConnectionInfo) -> Result<Box<dyn Backend>> {
        if self.model == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            let mut busy = self.connection_busy.lock();
            while *busy {
                self.connection_freed.wait(&mut busy);
            }
            *busy = true;
        }
        let open = self.lib.s.open.expect("checked when loaded");
        let h = {
            let Some(_loaded) = self.loaded() else {
                self.release_connection();
                return Err(Error::errno(ESHUTDOWN));
            };
            let _all = (self.model <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
                .then(|| self.all_requests.lock());
            let _call = Call::enter(Some(info));
            // SAFETY: the plugin's callback.
            let h = unsafe { open(info.readonly as c_int) };
            let saved = errno_now();
            if h.is_null() {
                let e = callback_errno(self.errno_is_preserved(), saved);
                drop(_call);
                drop(_all);
                self.release_connection();
                return Err(Error::errno(e));
            }
            h
        };
        Ok(Box::new(CHandle {
            plugin: self,
            h,
            info: info.clone(),
            request: Mutex::new(()),
            fua: OnceLock::new(),
            zero_native: OnceLock::new(),
            cache: OnceLock::new(),
            extents: OnceLock::new(),
        }))
    }
}

/// The plugin opened for one connection: its handle and the connection's
/// facts, which are current (for `nbdkit_export_name` and the like)
/// during each callback.
struct CHandle {
    plugin: Arc<CPlugin>,
    h: *mut c_void,
    info: ConnectionInfo,
    /// SERIALIZE_REQUESTS: one callback at a time for this connection.
    request: Mutex<()>,
    /// Levels asked once (errors are not kept).
    fua: OnceLock<c_int>,
    zero_native: OnceLock<bool>,
    cache: OnceLock<c_int>,
    extents: OnceLock<bool>,
}

// The plugin's handle is an opaque pointer that nbdkit, too, passes to
// callbacks on any of its threads; the thread model's locks (see
// `CHandle::call`) keep the plugin from seeing more parallelism than it
// declared.
unsafe impl Send for CHandle {}
unsafe impl Sync for CHandle {}

impl CHandle {
    fn s(&self) -> &PluginStruct {
        &self.plugin.lib.s
    }

    fn api1(&self) -> bool {
        self.s()._api_version == 1
    }

    /// Runs one callback `f` under the thread model's lock, with this
    /// connection current; a result of -1 is the plugin's error.
    fn call(&self, f: impl FnOnce(*mut c_void) -> c_int) -> Result<c_int> {
        let Some(_loaded) = self.plugin.loaded() else {
            return Err(Error::errno(ESHUTDOWN));
        };
        let model = self.plugin.model;
        let _all =
            (model <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS).then(|| self.plugin.all_requests.lock());
        let _one = (model == THREAD_MODEL_SERIALIZE_REQUESTS).then(|| self.request.lock());
        let _call = Call::enter(Some(&self.info));
        let r = f(self.h);
        let saved = errno_now();
        if r == -1 {
            return Err(Error::errno(callback_errno(
                self.plugin.errno_is_preserved(),
                saved,
            )));
        }
        Ok(r)
    }

    /// A yes/no capability: the callback's answer, else `default`.
    fn ask(
        &self,
        cb: Option<unsafe extern "C" fn(*mut c_void) -> c_int>,
        default: bool,
    ) -> Result<bool> {
        match cb {
            // SAFETY: the plugin's callback with its handle.
            Some(cb) => self.call(|h| unsafe { cb(h) }).map(|r| r != 0),
            None => Ok(default),
        }
    }

    fn fua_level(&self) -> Result<c_int> {
        if let Some(l) = self.fua.get() {
            return Ok(*l);
        }
        let s = self.s();
        let l = match s.can_fua {
            // SAFETY: the plugin's callback.
            Some(cb) => {
                let r = self.call(|h| unsafe { cb(h) })?;
                // An API 1 plugin cannot take the FUA flag.
                if self.api1() {
                    r.min(LEVEL_EMULATE)
                } else {
                    r
                }
            }
            // Emulated by a flush, even if can_flush says no.
            None if s.flush.is_some() || s.flush_v1.is_some() => LEVEL_EMULATE,
            None => LEVEL_NONE,
        };
        Ok(*self.fua.get_or_init(|| l))
    }

    fn zero_is_native(&self) -> Result<bool> {
        if let Some(z) = self.zero_native.get() {
            return Ok(*z);
        }
        let s = self.s();
        let z = match s.can_zero {
            Some(cb) => self.ask(Some(cb), false)?,
            None => s.zero.is_some() || s.zero_v1.is_some(),
        };
        Ok(*self.zero_native.get_or_init(|| z))
    }

    fn extents_supported(&self) -> Result<bool> {
        if let Some(e) = self.extents.get() {
            return Ok(*e);
        }
        let s = self.s();
        let e = self.ask(s.can_extents, s.extents.is_some())?;
        Ok(*self.extents.get_or_init(|| e))
    }

    fn cache_level(&self) -> Result<c_int> {
        if let Some(l) = self.cache.get() {
            return Ok(*l);
        }
        let l = match self.s().can_cache {
            // SAFETY: the plugin's callback.
            Some(cb) => self.call(|h| unsafe { cb(h) })?,
            None if self.s().cache.is_some() => LEVEL_NATIVE,
            None => LEVEL_NONE,
        };
        Ok(*self.cache.get_or_init(|| l))
    }

    /// The FUA flag to pass when the plugin takes it natively; `Ok(true)`
    /// in the second place when a flush must follow instead.
    fn fua_flags(&self, fua: bool) -> Result<(u32, bool)> {
        if !fua {
            return Ok((0, false));
        }
        Ok(match self.fua_level()? {
            LEVEL_NATIVE => (FLAG_FUA, false),
            _ => (0, true),
        })
    }

    fn write(&self, buf: &[u8], offset: u64, flags: u32) -> Result<()> {
        let s = self.s();
        let n = buf.len() as u32;
        let p = buf.as_ptr() as *const c_void;
        // SAFETY: the plugin's callbacks, with a buffer of `n` bytes.
        match (s.pwrite, s.pwrite_v1) {
            (Some(cb), _) => self.call(|h| unsafe { cb(h, p, n, offset, flags) }),
            (None, Some(cb)) => self.call(|h| unsafe { cb(h, p, n, offset) }),
            (None, None) => Err(Error::errno(nbd_core::server::backend::EROFS)),
        }
        .map(|_| ())
    }

    fn read_into(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let s = self.s();
        let n = buf.len() as u32;
        let p = buf.as_mut_ptr() as *mut c_void;
        // SAFETY: the plugin's callbacks, with a buffer of `n` bytes; one
        // of the two exists (checked when loaded).
        match (s.pread, s.pread_v1) {
            (Some(cb), _) => self.call(|h| unsafe { cb(h, p, n, offset, 0) }),
            (None, Some(cb)) => self.call(|h| unsafe { cb(h, p, n, offset) }),
            (None, None) => Err(Error::errno(EIO)),
        }
        .map(|_| ())
    }

    /// Zeroes by writing zeroes, as nbdkit does when the plugin cannot.
    fn zero_by_writing(&self, count: u32, offset: u64) -> Result<()> {
        const CHUNK: u32 = 1 << 20;
        let zeroes = vec![0u8; count.min(CHUNK) as usize];
        let mut done = 0;
        while done < count {
            let n = (count - done).min(CHUNK);
            self.write(&zeroes[..n as usize], offset + done as u64, 0)?;
            done += n;
        }
        Ok(())
    }
}

impl Drop for CHandle {
    fn drop(&mut self) {
        if let Some(close) = self.s().close {
            let _ = self.call(|h| {
                // SAFETY: the plugin's close, once, with its handle.
                unsafe { close(h) };
                0
            });
        }
        context::forget_connection(self.info.id);
        self.plugin.release_connection();
    }
}

impl Backend for CHandle {
    fn size(&self) -> Result<u64> {
        let cb = self.s().get_size.expect("checked when loaded");
        let mut size = 0i64;
        // SAFETY: the plugin's callback. Its i64 result is split into a
        // status (-1 is an error) and the size.
        self.call(|h| {
            size = unsafe { cb(h) };
            if size < -1 {
                // Neither a size nor the error value: nbdkit's words.
                crate::log::log_error_in(
                    &context::thread_name(),
                    format_args!(".get_size function returned invalid value ({size})"),
                );
            }
            if size < 0 {
                -1
            } else {
                0
            }
        })?;
        Ok(size as u64)
    }

    fn block_size(&self) -> Result<Option<(u32, u32, u32)>> {
        let Some(cb) = self.s().block_size else {
            return Ok(None);
        };
        let (mut a, mut b, mut c) = (0u32, 0u32, 0u32);
        // SAFETY: the plugin's callback with three valid out-pointers.
        self.call(|h| unsafe { cb(h, &mut a, &mut b, &mut c) })?;
        Ok((a != 0 || b != 0 || c != 0).then_some((a, b, c)))
    }

    fn can_write(&self) -> Result<bool> {
        let s = self.s();
        self.ask(s.can_write, s.pwrite.is_some() || s.pwrite_v1.is_some())
    }
    fn can_flush(&self) -> Result<bool> {
        let s = self.s();
        self.ask(s.can_flush, s.flush.is_some() || s.flush_v1.is_some())
    }
    fn can_fua(&self) -> Result<bool> {
        Ok(self.fua_level()? != LEVEL_NONE)
    }
    fn can_trim(&self) -> Result<bool> {
        let s = self.s();
        self.ask(s.can_trim, s.trim.is_some() || s.trim_v1.is_some())
    }
    /// Zeroing is always possible where writing is: natively or by
    /// writing zeroes.
    fn can_zero(&self) -> Result<bool> {
        self.zero_is_native()?;
        Ok(true)
    }
    /// Without a callback: a plugin that cannot zero natively fails a fast
    /// zero at once (rather than writing zeroes), so it is "fast".
    fn can_fast_zero(&self) -> Result<bool> {
        let s = self.s();
        match s.can_fast_zero {
            Some(cb) => self.ask(Some(cb), false),
            None if s.zero.is_none() => Ok(true),
            None => Ok(!self.zero_is_native()?),
        }
    }
    fn can_multi_conn(&self) -> Result<bool> {
        self.ask(self.s().can_multi_conn, false)
    }
    fn can_extents(&self) -> Result<bool> {
        self.extents_supported()
    }
    fn can_cache(&self) -> Result<bool> {
        Ok(self.cache_level()? != LEVEL_NONE)
    }
    fn is_rotational(&self) -> Result<bool> {
        self.ask(self.s().is_rotational, false)
    }
    fn export_description(&self) -> Result<Option<String>> {
        let Some(cb) = self.s().export_description else {
            return Ok(None);
        };
        let mut d = None;
        // SAFETY: the plugin's callback; the string it returns lives at
        // least until the connection closes.
        self.call(|h| {
            d = c_str(unsafe { cb(h) });
            0
        })?;
        Ok(d)
    }

    fn pread(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        self.read_into(buf, offset)
    }

    fn pwrite(&self, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let (flags, then_flush) = self.fua_flags(fua)?;
        self.write(buf, offset, flags)?;
        if then_flush {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        let s = self.s();
        // SAFETY: the plugin's callbacks.
        match (s.flush, s.flush_v1) {
            (Some(cb), _) => self.call(|h| unsafe { cb(h, 0) }),
            (None, Some(cb)) => self.call(|h| unsafe { cb(h) }),
            (None, None) => Err(Error::errno(EINVAL)),
        }
        .map(|_| ())
    }

    fn trim(&self, count: u32, offset: u64, fua: bool) -> Result<()> {
        let (flags, then_flush) = self.fua_flags(fua)?;
        let s = self.s();
        // SAFETY: the plugin's callbacks.
        match (s.trim, s.trim_v1) {
            (Some(cb), _) => self.call(|h| unsafe { cb(h, count, offset, flags) }),
            (None, Some(cb)) => self.call(|h| unsafe { cb(h, count, offset) }),
            (None, None) => Err(Error::errno(EINVAL)),
        }?;
        if then_flush {
            self.flush()?;
        }
        Ok(())
    }

    fn zero(&self, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let (fua_flag, then_flush) = self.fua_flags(flags.fua)?;
        let mut done = false;
        if self.zero_is_native()? {
            let s = self.s();
            let mut f = fua_flag;
            if flags.may_trim {
                f |= FLAG_MAY_TRIM;
            }
            if flags.fast {
                f |= FLAG_FAST_ZERO;
            }
            // SAFETY: the plugin's callbacks. An API 1 zero cannot be
            // asked to be fast, so a fast zero is refused as unsupported.
            let r = match (s.zero, s.zero_v1) {
                (Some(cb), _) => self.call(|h| unsafe { cb(h, count, offset, f) }),
                (None, Some(_)) if flags.fast => Err(Error::errno(libc::EOPNOTSUPP)),
                (None, Some(cb)) => {
                    self.call(|h| unsafe { cb(h, count, offset, flags.may_trim as c_int) })
                }
                (None, None) => Err(Error::errno(libc::EOPNOTSUPP)),
            };
            match r {
                Ok(_) => done = true,
                // "Not supported" falls back to writing zeroes.
                Err(e) if e.errno == libc::EOPNOTSUPP || e.errno == libc::ENOTSUP => {}
                Err(e) => return Err(e),
            }
        }
        if !done {
            if flags.fast {
                return Err(Error::errno(libc::ENOTSUP));
            }
            self.zero_by_writing(count, offset)?;
        }
        if then_flush || (!done && flags.fua) {
            self.flush()?;
        }
        Ok(())
    }

    fn cache(&self, count: u32, offset: u64) -> Result<()> {
        match self.cache_level()? {
            LEVEL_NATIVE => match self.s().cache {
                // SAFETY: the plugin's callback.
                Some(cb) => self
                    .call(|h| unsafe { cb(h, count, offset, 0) })
                    .map(|_| ()),
                None => Ok(()),
            },
            // Emulated by reading and discarding, as nbdkit.
            LEVEL_EMULATE => {
                let mut buf = vec![0u8; count.min(1 << 20) as usize];
                let mut done = 0u32;
                while done < count {
                    let n = (count - done).min(buf.len() as u32);
                    self.read_into(&mut buf[..n as usize], offset + done as u64)?;
                    done += n;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn extents(&self, count: u32, offset: u64, sink: &mut Extents) -> Result<()> {
        // Without extents the server answers for the plugin: all data.
        let cb = match self.s().extents {
            Some(cb) if self.extents_supported()? => cb,
            _ => return sink.add(offset, count as u64, 0).map(|_| ()),
        };
        let mut list =
            ExtentsList::new(offset, offset + count as u64).map_err(|m| Error::new(EINVAL, m))?;
        let flags = if sink.req_one() { FLAG_REQ_ONE } else { 0 };
        let ptr = &mut list as *mut ExtentsList as *mut c_void;
        // SAFETY: the plugin's callback, with a list that outlives it.
        self.call(|h| unsafe { cb(h, count, offset, flags, ptr) })?;
        if list.list.is_empty() {
            // Logged here, under the thread's name, as nbdkit does; the
            // error carries no message, so it is not logged twice.
            let _call = Call::enter(Some(&self.info));
            crate::log::log_error_in(
                &context::thread_name(),
                format_args!("extents: plugin must return at least one extent"),
            );
            return Err(Error::errno(EINVAL));
        }
        for e in &list.list {
            if !sink.add(e.offset, e.length, e.kind)? {
                break;
            }
        }
        Ok(())
    }
}

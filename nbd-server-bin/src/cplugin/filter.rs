//! Filters written in C against nbdkit-filter.h, loaded from their shared
//! objects unchanged (nbdkit-filter(3)): [`FilterLibrary`] is the loaded
//! and configured filter, [`CFilter`] the filter as a layer of our chain,
//! and its per-connection handle calls the filter's callbacks with the
//! next layer as the `nbdkit_next` object of `next.rs`.
//!
//! The life of a filter, as nbdkit's: `load` once dlopened; `config`
//! for each `key=value` (what it passes to `next` goes to the layers
//! below), `config_complete`, `thread_model`, `get_ready`; `after_fork`;
//! per connection `preconnect`, `open` (which opens the layers below
//! through `next_open`), `prepare` innermost first, requests, `finalize`
//! outermost first, `close`; at exit `cleanup` and `unload`.
//!
//! The thread model of the whole chain (the lowest of the plugin's and
//! every filter's) is enforced around each C filter's callbacks, as
//! nbdkit holds its locks around the whole request.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_int, c_void};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, Ordering};
use std::sync::Arc;

use parking_lot::{Condvar, Mutex};

use nbd_core::server::backend::{Backend, ConnectionInfo, Error, Extents, Read, Result, ZeroFlags};

use super::abi::{FLAG_FAST_ZERO, FLAG_FUA, FLAG_MAY_TRIM, FLAG_REQ_ONE};
use super::abi::{
    THREAD_MODEL_PARALLEL, THREAD_MODEL_SERIALIZE_ALL_REQUESTS, THREAD_MODEL_SERIALIZE_CONNECTIONS,
    THREAD_MODEL_SERIALIZE_REQUESTS,
};
use super::context::{self, Call};
use super::filter_abi::{FilterStruct, NextOps, FILTER_API_VERSION, ZERO_NONE};
use super::lists::{ExportsList, ExtentsList};
use super::load::{c_str, is_short_name};
use super::next::NextObj;
use super::NBDKIT_VERSION;
use crate::chain::{Below, Chain, Filter, FilterHandle, Lower, OpenNext};

/// Where Debian's nbdkit packages install filters.
pub const DEBIAN_FILTERDIR: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/filters";

/// The shared object for filter `name`: a path as given, or for a short
/// name `nbdkit-NAME-filter.so` in our filter directory, else Debian's.
pub fn find_filter(name: &str) -> Option<PathBuf> {
    if !is_short_name(name) {
        return Some(PathBuf::from(name));
    }
    let file = format!("nbdkit-{name}-filter.so");
    [super::filterdir(), DEBIAN_FILTERDIR.to_string()]
        .iter()
        .map(|d| Path::new(d).join(&file))
        .find(|p| p.exists())
}

/// The words for a filter that is neither built in nor found.
pub fn filter_not_found(name: &str, builtin_error: &str) -> String {
    format!(
        "{builtin_error}; nor is nbdkit-{name}-filter.so in {} or {DEBIAN_FILTERDIR}",
        super::filterdir()
    )
}

/// `nbdkit_backend *`: the layers below a filter, for opening contexts of
/// its own on them (`nbdkit_next_context_open`). Before any connection
/// (config, after_fork, cleanup) there is nothing to open.
pub struct BackendObj {
    below: Option<(Arc<Chain>, ConnectionInfo)>,
}

/// A loaded filter: the library stays open for the life of the process.
pub struct FilterLibrary {
    pub path: String,
    pub name: String,
    pub s: FilterStruct,
    /// Strings handed to the filter's `config`, which it may keep.
    kept: Vec<CString>,
    /// What its connection-less callbacks get as `nbdkit_backend *`.
    backend: Box<BackendObj>,
}

/// The key=value pairs a filter's `config` passed on to the layers below.
struct ConfigSink {
    pairs: Vec<(String, String)>,
}

unsafe extern "C" fn next_config(nx: *mut c_void, k: *const c_char, v: *const c_char) -> c_int {
    let sink = &mut *(nx as *mut ConfigSink);
    let s = |p: *const c_char| {
        if p.is_null() {
            String::new()
        } else {
            CStr::from_ptr(p).to_string_lossy().into_owned()
        }
    };
    sink.pairs.push((s(k), s(v)));
    0
}

unsafe extern "C" fn next_config_complete(_nx: *mut c_void) -> c_int {
    // The layers below complete their configuration when they are built,
    // after this filter's.
    0
}

impl FilterLibrary {
    /// Opens the shared object at `path`, calls its `filter_init` and
    /// checks the struct as nbdkit's server/filters.c does, with its
    /// messages; then the filter's `load`.
    pub fn open(path: &Path) -> std::result::Result<FilterLibrary, String> {
        let (handle, p, shown) = super::load::open_registered(path, c"filter_init", "filter")?;
        let p = p as *const FilterStruct;
        // SAFETY: every filter struct starts with the int API version and
        // the version string pointer; the rest is laid out by version, so
        // it is read only once both match ours.
        let (api, version) = unsafe { ((*p)._api_version, c_str((*p)._version)) };
        if api != FILTER_API_VERSION {
            return Err(format!(
                "{shown}: filter is incompatible with this version of nbdkit (_api_version = {api}, need {FILTER_API_VERSION})"
            ));
        }
        if version.as_deref() != Some(NBDKIT_VERSION) {
            return Err(format!(
                "{shown}: filter is incompatible with this version of nbdkit (_version = {}, need {NBDKIT_VERSION})",
                version.unwrap_or_else(|| "(null)".into())
            ));
        }
        // SAFETY: the same layout as ours (checked just above).
        let s = unsafe { *p };
        let name =
            c_str(s.name).ok_or_else(|| format!("{shown}: filter must have a .name field"))?;
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name {
            return Err(format!(
                "{shown}: filter.name ('{name}') field must contain only ASCII alphanumeric characters or dashes and must start with an alphabetic character"
            ));
        }
        let symbol = |sym: &str| {
            let c = CString::new(sym).ok()?;
            // SAFETY: a valid handle and symbol name.
            let p = unsafe { libc::dlsym(handle, c.as_ptr()) };
            (!p.is_null()).then_some(p)
        };
        super::set_debug_flags_of(&name, symbol)?;
        crate::log::debug!("registered filter {shown} (name {name})");
        if let Some(load) = s.load {
            let _call = Call::enter(None);
            // SAFETY: the filter's load, once, first.
            unsafe { load() };
        }
        Ok(FilterLibrary {
            path: shown,
            name,
            s,
            kept: Vec::new(),
            backend: Box::new(BackendObj { below: None }),
        })
    }

    /// `nbdkit --filter=F --version`'s line: its name and the version it
    /// was built for.
    pub fn version_line(&self) -> String {
        format!("{} {NBDKIT_VERSION}", self.name)
    }

    /// `--help`'s part for the filter, in nbdkit's words.
    pub fn help(&self) -> String {
        let mut out = match c_str(self.s.longname) {
            Some(l) => format!("filter: {} ({l})\n", self.name),
            None => format!("filter: {}\n", self.name),
        };
        out.push_str(&format!("({})\n", self.path));
        if let Some(h) = c_str(self.s.config_help) {
            out.push_str(&h);
            if !h.ends_with('\n') {
                out.push('\n');
            }
        }
        out
    }

    fn backend_ptr(&self) -> *mut c_void {
        &*self.backend as *const BackendObj as *mut c_void
    }

    /// Hands each `key=value` to the filter's `config` (all of them, as
    /// nbdkit does: the filter passes on what is not its own), then calls
    /// `config_complete`. Returns what it passed on. A failure was
    /// reported by the filter itself: the error is empty.
    pub fn configure(
        &mut self,
        pairs: Vec<(String, String)>,
    ) -> std::result::Result<Vec<(String, String)>, String> {
        let _call = Call::enter(None);
        let Some(config) = self.s.config else {
            return Ok(pairs);
        };
        let mut sink = ConfigSink { pairs: Vec::new() };
        let nx = &mut sink as *mut ConfigSink as *mut c_void;
        for (k, v) in pairs {
            let (ck, cv) = (
                CString::new(k.as_str()).map_err(|_| format!("{k}: invalid key"))?,
                CString::new(v.as_str()).map_err(|_| format!("{k}: invalid value"))?,
            );
            // SAFETY: the filter's callback with two C strings, kept as
            // long as the library (filters keep them, as plugins do).
            let r = unsafe { config(next_config, nx, ck.as_ptr(), cv.as_ptr()) };
            self.kept.push(ck);
            self.kept.push(cv);
            if r == -1 {
                return Err(String::new());
            }
        }
        if let Some(cc) = self.s.config_complete {
            // SAFETY: the filter's callback.
            if unsafe { cc(next_config_complete, nx) } == -1 {
                return Err(String::new());
            }
        }
        Ok(sink.pairs)
    }

    /// The filter's thread model (`thread_model`, else parallel).
    pub fn thread_model(&self) -> std::result::Result<c_int, String> {
        let Some(cb) = self.s.thread_model else {
            return Ok(THREAD_MODEL_PARALLEL);
        };
        let _call = Call::enter(None);
        // SAFETY: the filter's callback, after config_complete.
        match unsafe { cb() } {
            -1 => Err(format!("{}: thread_model failed", self.name)),
            m => Ok(m.clamp(THREAD_MODEL_SERIALIZE_CONNECTIONS, THREAD_MODEL_PARALLEL)),
        }
    }
}

/// The C filters the server loaded, outermost first, for `cleanup` and
/// `unload` at exit.
static LOADED: Mutex<Vec<Arc<CFilter>>> = Mutex::new(Vec::new());

/// At exit: each filter's `cleanup`, outermost first.
pub fn clean_up_filters() {
    for f in LOADED.lock().iter() {
        if let Some(cb) = f.lib.s.cleanup {
            let _call = Call::enter(None);
            // SAFETY: the filter's callback, once, at exit.
            unsafe { cb(f.lib.backend_ptr()) };
        }
    }
}

/// At exit, after the plugin's unload: each filter's `unload`.
pub fn unload_filters() {
    for f in LOADED.lock().drain(..) {
        if let Some(cb) = f.lib.s.unload {
            let _call = Call::enter(None);
            // SAFETY: the filter's callback, once, last.
            unsafe { cb() };
        }
    }
}

/// A configured C filter, shared by every connection.
pub struct CFilter {
    lib: FilterLibrary,
    /// The chain's thread model.
    model: c_int,
    all_requests: Mutex<()>,
    connection_busy: Mutex<bool>,
    connection_freed: Condvar,
}

impl CFilter {
    /// The configured filter, to serve with the chain's thread model
    /// `model`; [`CFilter::get_ready`] before it serves.
    pub fn new(lib: FilterLibrary, model: c_int) -> Arc<CFilter> {
        let f = Arc::new(CFilter {
            lib,
            model,
            all_requests: Mutex::new(()),
            connection_busy: Mutex::new(false),
            connection_freed: Condvar::new(),
        });
        LOADED.lock().push(Arc::clone(&f));
        f
    }

    /// The filter's `get_ready`, with the chain's thread model. nbdkit
    /// calls them from the innermost filter out; so does `chain::build`.
    /// Its failure was reported by the filter: the error is empty.
    pub fn get_ready(&self) -> std::result::Result<(), String> {
        if let Some(cb) = self.lib.s.get_ready {
            let _call = Call::enter(None);
            // SAFETY: the filter's callback.
            if unsafe { cb(self.model) } == -1 {
                return Err(String::new());
            }
        }
        Ok(())
    }

    fn s(&self) -> &FilterStruct {
        &self.lib.s
    }

    fn release_connection(&self) {
        if self.model == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            *self.connection_busy.lock() = false;
            self.connection_freed.notify_one();
        }
    }
}

/// The errno of a failed callback without an `*err`: what the filter
/// gave `nbdkit_set_error`, else EIO.
fn callback_error() -> Error {
    match context::take_error() {
        0 => Error::errno(libc::EIO),
        e => Error::errno(e),
    }
}

/// What the connection-less `next_*` functions reach: the layers below
/// and the connection, and the error they returned, to pass up as it
/// was when the filter fails with it.
struct ConnCall {
    below: *const c_void,
    info: ConnectionInfo,
    error: Option<Error>,
}

impl ConnCall {
    fn new(below: &Below<'_>, info: &ConnectionInfo) -> ConnCall {
        ConnCall {
            below: below as *const Below<'_> as *const c_void,
            info: info.clone(),
            error: None,
        }
    }

    /// # Safety
    /// `nx` is a live ConnCall whose `below` outlives the call.
    unsafe fn from<'a>(nx: *mut c_void) -> (&'a mut ConnCall, &'a Below<'a>) {
        let cc = &mut *(nx as *mut ConnCall);
        let below = &*(cc.below as *const Below<'a>);
        (cc, below)
    }

    fn failed(&mut self) -> Error {
        self.error.take().unwrap_or_else(callback_error)
    }
}

unsafe extern "C" fn next_preconnect(nx: *mut c_void, readonly: c_int) -> c_int {
    let (cc, below) = ConnCall::from(nx);
    let mut info = cc.info.clone();
    info.readonly = readonly != 0;
    match below.preconnect(&info) {
        Ok(()) => 0,
        Err(e) => {
            cc.error = Some(e);
            -1
        }
    }
}

unsafe extern "C" fn next_list_exports(nx: *mut c_void, readonly: c_int, x: *mut c_void) -> c_int {
    let (cc, below) = ConnCall::from(nx);
    let mut info = cc.info.clone();
    info.readonly = readonly != 0;
    let list = &mut *(x as *mut ExportsList);
    match below.list_exports(&info) {
        Ok(Some(exports)) => {
            for (n, d) in exports {
                if let Err(m) = list.add(n.as_bytes(), Some(d.as_bytes())) {
                    crate::log::error!("{m}");
                    return -1;
                }
            }
            0
        }
        // The layers below list only their default export.
        Ok(None) => {
            list.use_default = true;
            0
        }
        Err(e) => {
            cc.error = Some(e);
            -1
        }
    }
}

unsafe extern "C" fn next_default_export(nx: *mut c_void, readonly: c_int) -> *const c_char {
    let (cc, below) = ConnCall::from(nx);
    let mut info = cc.info.clone();
    info.readonly = readonly != 0;
    match below.default_export(&info) {
        Ok(name) => context::intern(CString::new(name.unwrap_or_default()).unwrap_or_default()),
        Err(e) => {
            cc.error = Some(e);
            std::ptr::null()
        }
    }
}

impl Filter for CFilter {
    fn after_fork(&self) -> std::result::Result<(), String> {
        let Some(cb) = self.s().after_fork else {
            return Ok(());
        };
        let _call = Call::enter(None);
        // SAFETY: the filter's callback.
        match unsafe { cb(self.lib.backend_ptr()) } {
            -1 => Err(format!("{}: after_fork failed", self.lib.name)),
            _ => Ok(()),
        }
    }

    fn preconnect(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<()> {
        let Some(cb) = self.s().preconnect else {
            return next.preconnect(info);
        };
        let mut cc = ConnCall::new(next, info);
        let _call = Call::enter(Some(info));
        let nx = &mut cc as *mut ConnCall as *mut c_void;
        // SAFETY: the filter's callback, with `cc` alive through it.
        match unsafe { cb(next_preconnect, nx, info.readonly as c_int) } {
            -1 => Err(cc.failed()),
            _ => Ok(()),
        }
    }

    fn list_exports(
        &self,
        next: &Below<'_>,
        info: &ConnectionInfo,
    ) -> Result<Option<Vec<(String, String)>>> {
        let Some(cb) = self.s().list_exports else {
            return next.list_exports(info);
        };
        let mut cc = ConnCall::new(next, info);
        let mut list = ExportsList::default();
        let r = {
            let _call = Call::enter(Some(info));
            let nx = &mut cc as *mut ConnCall as *mut c_void;
            let x = &mut list as *mut ExportsList as *mut c_void;
            // SAFETY: the filter's callback, with `cc` and `list` alive.
            unsafe {
                cb(
                    next_list_exports,
                    nx,
                    info.readonly as c_int,
                    info.tls as c_int,
                    x,
                )
            }
        };
        if r == -1 {
            return Err(cc.failed());
        }
        let mut out = list.pairs();
        if list.use_default {
            let name = self.default_export(next, info)?.unwrap_or_default();
            out.push((name, String::new()));
        }
        Ok(Some(out))
    }

    fn default_export(&self, next: &Below<'_>, info: &ConnectionInfo) -> Result<Option<String>> {
        let Some(cb) = self.s().default_export else {
            return next.default_export(info);
        };
        let mut cc = ConnCall::new(next, info);
        let _call = Call::enter(Some(info));
        let nx = &mut cc as *mut ConnCall as *mut c_void;
        // SAFETY: the filter's callback, with `cc` alive through it.
        let p = unsafe {
            cb(
                next_default_export,
                nx,
                info.readonly as c_int,
                info.tls as c_int,
            )
        };
        match c_str(p) {
            Some(s) => Ok(Some(s)),
            None => Err(cc.failed()),
        }
    }

    fn open(
        self: Arc<Self>,
        info: &ConnectionInfo,
        next: &mut OpenNext<'_>,
    ) -> Result<Box<dyn FilterHandle>> {
        if self.model == THREAD_MODEL_SERIALIZE_CONNECTIONS {
            let mut busy = self.connection_busy.lock();
            while *busy {
                self.connection_freed.wait(&mut busy);
            }
            *busy = true;
        }
        let mut ctx = Box::new(ContextObj {
            open_next: std::ptr::null_mut(),
            info: info.clone(),
            open_error: None,
            opened_readonly: info.readonly,
            backend: BackendObj {
                below: Some((next.chain_below(), info.clone())),
            },
            current: AtomicPtr::new(std::ptr::null_mut()),
        });
        ctx.open_next = next as *mut OpenNext<'_> as *mut c_void;
        let ctxp = &mut *ctx as *mut ContextObj as *mut c_void;
        let name = CString::new(info.export_name.clone()).unwrap_or_default();
        let h = match self.s().open {
            Some(open) => {
                let _all = (self.model <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
                    .then(|| self.all_requests.lock());
                let _call = Call::enter(Some(info));
                // SAFETY: the filter's callback; `ctx` (and the OpenNext
                // it points to) is alive through it.
                let h = unsafe {
                    open(
                        next_open,
                        ctxp,
                        info.readonly as c_int,
                        name.as_ptr(),
                        info.tls as c_int,
                    )
                };
                if h.is_null() {
                    let e = ctx.open_error.take().unwrap_or_else(callback_error);
                    drop(_call);
                    drop(_all);
                    self.release_connection();
                    return Err(e);
                }
                h
            }
            None => {
                // SAFETY: as above.
                if unsafe { next_open(ctxp, info.readonly as c_int, name.as_ptr()) } == -1 {
                    self.release_connection();
                    return Err(ctx.open_error.take().unwrap_or_else(callback_error));
                }
                // Any non-NULL handle: the filter has no callbacks to
                // receive it.
                ctxp
            }
        };
        ctx.open_next = std::ptr::null_mut();
        Ok(Box::new(CFilterHandle {
            filter: self,
            h,
            ctx,
            info: info.clone(),
            request: Mutex::new(()),
        }))
    }
}

/// `nbdkit_context *`: one connection's place in the chain at this
/// filter: how to open the layers below during `open`, and the next
/// layer the filter's callbacks get (which `nbdkit_context_set_next`
/// replaces).
struct ContextObj {
    /// The `OpenNext` of the filter's `open`, during it only.
    open_next: *mut c_void,
    info: ConnectionInfo,
    open_error: Option<Error>,
    /// `next_open` opened the layers below read-only.
    opened_readonly: bool,
    backend: BackendObj,
    current: AtomicPtr<NextOps>,
}

/// `next_open`: opens the layers below for this connection, perhaps
/// read-only or on another export.
unsafe extern "C" fn next_open(ctx: *mut c_void, readonly: c_int, name: *const c_char) -> c_int {
    let ctx = &mut *(ctx as *mut ContextObj);
    if ctx.open_next.is_null() {
        crate::log::error!("next_open: called outside the filter's open");
        return -1;
    }
    let next = &mut *(ctx.open_next as *mut OpenNext<'static>);
    let mut info = ctx.info.clone();
    info.readonly = info.readonly || readonly != 0;
    if !name.is_null() {
        info.export_name = CStr::from_ptr(name).to_bytes().to_vec();
    }
    ctx.opened_readonly = info.readonly;
    match next.open(&info) {
        Ok(()) => 0,
        Err(e) => {
            ctx.open_error = Some(e);
            -1
        }
    }
}

/// The filter opened for one connection.
struct CFilterHandle {
    filter: Arc<CFilter>,
    h: *mut c_void,
    ctx: Box<ContextObj>,
    info: ConnectionInfo,
    /// SERIALIZE_REQUESTS: one callback at a time for this connection.
    request: Mutex<()>,
}

// The filter's handle and next object are passed to callbacks on any
// thread, as nbdkit does; the thread model's locks keep the filter from
// seeing more parallelism than the chain allows.
unsafe impl Send for CFilterHandle {}
unsafe impl Sync for CFilterHandle {}

impl CFilterHandle {
    fn s(&self) -> &FilterStruct {
        &self.filter.lib.s
    }

    /// Runs a callback with the next layer and the handle, under the
    /// thread model's locks, with this connection current.
    fn call<T>(&self, f: impl FnOnce(*mut NextOps, *mut c_void) -> T) -> T {
        let model = self.filter.model;
        let _all =
            (model <= THREAD_MODEL_SERIALIZE_ALL_REQUESTS).then(|| self.filter.all_requests.lock());
        let _one = (model == THREAD_MODEL_SERIALIZE_REQUESTS).then(|| self.request.lock());
        let _call = Call::enter(Some(&self.info));
        f(self.ctx.current.load(Ordering::Acquire), self.h)
    }

    /// A callback returning an int status (or a yes/no answer).
    fn status(&self, f: impl FnOnce(*mut NextOps, *mut c_void) -> c_int) -> Result<c_int> {
        self.call(|n, h| match f(n, h) {
            -1 => Err(callback_error()),
            r => Ok(r),
        })
    }

    /// A request callback: -1 with the errno in `*err`.
    fn request(
        &self,
        f: impl FnOnce(*mut NextOps, *mut c_void, *mut c_int) -> c_int,
    ) -> Result<()> {
        let mut err: c_int = 0;
        let r = self.call(|n, h| f(n, h, &mut err));
        if r == -1 {
            return Err(Error::errno(if err != 0 { err } else { libc::EIO }));
        }
        Ok(())
    }

    /// A capability: the filter's callback, else (as nbdkit's default
    /// for a NULL callback) the next layer's answer through the
    /// `nbdkit_next` object, whose rules for a read-only next layer
    /// apply. `yes`: the answer counts as yes (levels).
    fn ask(
        &self,
        cb: Option<unsafe extern "C" fn(*mut NextOps, *mut c_void) -> c_int>,
        op: fn(&NextOps) -> unsafe extern "C" fn(*mut NextOps) -> c_int,
        yes: fn(c_int) -> bool,
    ) -> Result<bool> {
        let r = match cb {
            // SAFETY: the filter's callback with its next layer and handle.
            Some(cb) => self.status(|n, h| unsafe { cb(n, h) })?,
            None => {
                let n = self.ctx.current.load(Ordering::Acquire);
                if n.is_null() {
                    return Err(Error::new(libc::EIO, "filter: next layer not open"));
                }
                // SAFETY: a live next object of this connection.
                match unsafe { op(&*n)(n) } {
                    -1 => return Err(Error::errno(libc::EIO)),
                    r => r,
                }
            }
        };
        Ok(yes(r))
    }
}

fn nonzero(r: c_int) -> bool {
    r != 0
}

fn zero_level(r: c_int) -> bool {
    r != ZERO_NONE
}

fn fua_flag(fua: bool) -> u32 {
    if fua {
        FLAG_FUA
    } else {
        0
    }
}

/// Each layer's answers follow nbdkit's backend.c rules: trim, zero and
/// FUA need writing, fast zero needs zero.
impl FilterHandle for CFilterHandle {
    fn attach(&self, next: Lower) {
        if self.ctx.current.load(Ordering::Acquire).is_null() {
            let n = NextObj::new_raw(Box::new(next), self.ctx.opened_readonly);
            self.ctx.current.store(n, Ordering::Release);
        }
    }

    fn prepare(&self, _next: &dyn Backend, info: &ConnectionInfo) -> Result<()> {
        let Some(cb) = self.s().prepare else {
            return Ok(());
        };
        // SAFETY: the filter's callback.
        self.status(|n, h| unsafe { cb(n, h, info.readonly as c_int) })
            .map(|_| ())
    }

    fn finalize(&self, _next: &dyn Backend) -> Result<()> {
        let Some(cb) = self.s().finalize else {
            return Ok(());
        };
        // SAFETY: the filter's callback.
        self.status(|n, h| unsafe { cb(n, h) }).map(|_| ())
    }

    fn close(&self, _info: &ConnectionInfo) {
        if let Some(cb) = self.s().close {
            let _call = Call::enter(Some(&self.info));
            // SAFETY: the filter's close, once, with its handle.
            unsafe { cb(self.h) };
        }
        // The next layer the filter was using: ours to close now (it
        // holds the layers below open).
        let n = self
            .ctx
            .current
            .swap(std::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: made by NextObj::new_raw, no longer reachable.
        unsafe { NextObj::free(n) };
        self.filter.release_connection();
    }

    fn size(&self, next: &dyn Backend) -> Result<u64> {
        let Some(cb) = self.s().get_size else {
            return next.size();
        };
        // SAFETY: the filter's callback.
        let r = self.call(|n, h| unsafe { cb(n, h) });
        if r < 0 {
            return Err(callback_error());
        }
        Ok(r as u64)
    }

    fn block_size(&self, next: &dyn Backend) -> Result<Option<(u32, u32, u32)>> {
        let Some(cb) = self.s().block_size else {
            return next.block_size();
        };
        let (mut a, mut b, mut c) = (0u32, 0u32, 0u32);
        // SAFETY: the filter's callback with three valid out-pointers.
        self.status(|n, h| unsafe { cb(n, h, &mut a, &mut b, &mut c) })?;
        Ok((a != 0 || b != 0 || c != 0).then_some((a, b, c)))
    }

    fn can_write(&self, _next: &dyn Backend) -> Result<bool> {
        self.ask(self.s().can_write, |o| o.can_write, nonzero)
    }
    fn can_flush(&self, _next: &dyn Backend) -> Result<bool> {
        self.ask(self.s().can_flush, |o| o.can_flush, nonzero)
    }
    fn can_fua(&self, next: &dyn Backend) -> Result<bool> {
        if !self.can_write(next)? {
            return Ok(false);
        }
        self.ask(self.s().can_fua, |o| o.can_fua, nonzero)
    }
    fn can_trim(&self, next: &dyn Backend) -> Result<bool> {
        if !self.can_write(next)? {
            return Ok(false);
        }
        self.ask(self.s().can_trim, |o| o.can_trim, nonzero)
    }
    fn can_zero(&self, next: &dyn Backend) -> Result<bool> {
        if !self.can_write(next)? {
            return Ok(false);
        }
        self.ask(self.s().can_zero, |o| o.can_zero, zero_level)
    }
    fn can_fast_zero(&self, next: &dyn Backend) -> Result<bool> {
        if !self.can_zero(next)? {
            return Ok(false);
        }
        self.ask(self.s().can_fast_zero, |o| o.can_fast_zero, nonzero)
    }
    fn can_multi_conn(&self, _next: &dyn Backend) -> Result<bool> {
        self.ask(self.s().can_multi_conn, |o| o.can_multi_conn, nonzero)
    }
    fn can_extents(&self, _next: &dyn Backend) -> Result<bool> {
        self.ask(self.s().can_extents, |o| o.can_extents, nonzero)
    }
    fn can_cache(&self, _next: &dyn Backend) -> Result<bool> {
        self.ask(self.s().can_cache, |o| o.can_cache, nonzero)
    }
    fn is_rotational(&self, _next: &dyn Backend) -> Result<bool> {
        self.ask(self.s().is_rotational, |o| o.is_rotational, nonzero)
    }
    fn export_description(&self, next: &dyn Backend) -> Result<Option<String>> {
        let Some(cb) = self.s().export_description else {
            return next.export_description();
        };
        // SAFETY: the filter's callback; the string lives at least until
        // the connection closes.
        Ok(self.call(|n, h| c_str(unsafe { cb(n, h) })))
    }

    fn pread(&self, next: &dyn Backend, r: &mut Read<'_>) -> Result<()> {
        let Some(cb) = self.s().pread else {
            return next.read(r);
        };
        let offset = r.offset;
        let buf = r.buf();
        let (p, count) = (buf.as_mut_ptr() as *mut c_void, buf.len() as u32);
        // SAFETY: the filter's callback with a buffer of `count` bytes.
        self.request(|n, h, err| unsafe { cb(n, h, p, count, offset, 0, err) })
    }
    fn pwrite(&self, next: &dyn Backend, buf: &[u8], offset: u64, fua: bool) -> Result<()> {
        let Some(cb) = self.s().pwrite else {
            return next.pwrite(buf, offset, fua);
        };
        let (p, count) = (buf.as_ptr() as *const c_void, buf.len() as u32);
        // SAFETY: the filter's callback with a buffer of `count` bytes.
        self.request(|n, h, err| unsafe { cb(n, h, p, count, offset, fua_flag(fua), err) })
    }
    fn flush(&self, next: &dyn Backend) -> Result<()> {
        let Some(cb) = self.s().flush else {
            return next.flush();
        };
        // SAFETY: the filter's callback.
        self.request(|n, h, err| unsafe { cb(n, h, 0, err) })
    }
    fn trim(&self, next: &dyn Backend, count: u32, offset: u64, fua: bool) -> Result<()> {
        let Some(cb) = self.s().trim else {
            return next.trim(count, offset, fua);
        };
        // SAFETY: the filter's callback.
        self.request(|n, h, err| unsafe { cb(n, h, count, offset, fua_flag(fua), err) })
    }
    fn zero(&self, next: &dyn Backend, count: u32, offset: u64, flags: ZeroFlags) -> Result<()> {
        let Some(cb) = self.s().zero else {
            return next.zero(count, offset, flags);
        };
        let mut f = fua_flag(flags.fua);
        if flags.may_trim {
            f |= FLAG_MAY_TRIM;
        }
        if flags.fast {
            f |= FLAG_FAST_ZERO;
        }
        // SAFETY: the filter's callback.
        self.request(|n, h, err| unsafe { cb(n, h, count, offset, f, err) })
    }
    fn cache(&self, next: &dyn Backend, count: u32, offset: u64) -> Result<()> {
        let Some(cb) = self.s().cache else {
            return next.cache(count, offset);
        };
        // SAFETY: the filter's callback.
        self.request(|n, h, err| unsafe { cb(n, h, count, offset, 0, err) })
    }
    fn extents(
        &self,
        next: &dyn Backend,
        count: u32,
        offset: u64,
        sink: &mut Extents,
    ) -> Result<()> {
        let Some(cb) = self.s().extents else {
            return next.extents(count, offset, sink);
        };
        let mut list = ExtentsList::new(offset, offset + count as u64)
            .map_err(|m| Error::new(libc::EINVAL, m))?;
        let flags = if sink.req_one() { FLAG_REQ_ONE } else { 0 };
        let lp = &mut list as *mut ExtentsList as *mut c_void;
        // SAFETY: the filter's callback, with a list that outlives it.
        self.request(|n, h, err| unsafe { cb(n, h, count, offset, flags, lp, err) })?;
        if list.list.is_empty() {
            return Err(Error::new(
                libc::EIO,
                "extents: plugin must return at least one extent",
            ));
        }
        for e in &list.list {
            if !sink.add(e.offset, e.length, e.kind)? {
                break;
            }
        }
        Ok(())
    }
}

// ---- manual contexts (nbdkit_next_context_open and friends) --------

/// `nbdkit_context_get_backend`: the layers below the filter, for
/// opening contexts of its own.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_context_get_backend(context: *mut c_void) -> *mut c_void {
    if context.is_null() {
        return std::ptr::null_mut();
    }
    let ctx = &mut *(context as *mut ContextObj);
    &mut ctx.backend as *mut BackendObj as *mut c_void
}

/// `nbdkit_next_context_open`: a connection of the filter's own to the
/// layers below, opened and prepared; the filter closes it with
/// `nbdkit_next_context_close`. Only within a connection: there is no
/// chain to open before one.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_next_context_open(
    backend: *mut c_void,
    readonly: c_int,
    exportname: *const c_char,
    _shared: c_int,
) -> *mut NextOps {
    let b = (!backend.is_null()).then(|| &*(backend as *const BackendObj));
    let Some((chain, info)) = b.and_then(|b| b.below.as_ref()) else {
        crate::log::error!("nbdkit_next_context_open: no connection to open the next layer for");
        *libc::__errno_location() = libc::EINVAL;
        return std::ptr::null_mut();
    };
    let mut info = info.clone();
    info.readonly = info.readonly || readonly != 0;
    if !exportname.is_null() {
        info.export_name = CStr::from_ptr(exportname).to_bytes().to_vec();
    }
    let info_readonly = info.readonly;
    match chain.open(info) {
        Ok(opened) => NextObj::new_raw(Box::new(opened), info_readonly),
        Err(e) => {
            crate::log::error!("{}", e.message);
            *libc::__errno_location() = e.errno;
            std::ptr::null_mut()
        }
    }
}

/// `nbdkit_next_context_close`: finalizes and closes a next layer.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_next_context_close(next: *mut NextOps) {
    NextObj::free(next);
}

/// `nbdkit_context_set_next`: the next layer this connection's callbacks
/// get from now on; returns the one they got before, which the filter now
/// owns.
#[no_mangle]
pub unsafe extern "C" fn nbdkit_context_set_next(
    context: *mut c_void,
    next: *mut NextOps,
) -> *mut NextOps {
    if context.is_null() {
        return std::ptr::null_mut();
    }
    let ctx = &*(context as *const ContextObj);
    ctx.current.swap(next, Ordering::AcqRel)
}

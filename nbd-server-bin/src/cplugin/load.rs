//! Finding a plugin's shared object and loading it: dlopen, its
//! `plugin_init`, and the checks nbdkit makes on the struct it returns.

use std::ffi::{CStr, CString};
use std::os::raw::{c_char, c_void};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use super::abi::{PluginStruct, STRUCT_SIZE};

/// Where Debian's nbdkit packages install plugins: the plugins a
/// distribution ships load into our nbdkit too.
pub const DEBIAN_PLUGINDIR: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins";

/// Our own plugin directory, `$(LIBDIR)/nbdkit/plugins` (LIBDIR as the
/// build saw it, /usr/local/lib by default, as the Makefile's).
pub fn plugindir() -> String {
    format!(
        "{}/nbdkit/plugins",
        option_env!("LIBDIR").unwrap_or("/usr/local/lib")
    )
}

/// nbdkit's test for a plugin named rather than given by path: no `/`
/// and no `.`.
pub fn is_short_name(name: &str) -> bool {
    !name.contains('/') && !name.contains('.')
}

/// The shared object for plugin `name`: a path as given, or for a short
/// name `nbdkit-NAME-plugin.so` in our plugin directory, else in
/// Debian's. `None` when a short name is in neither.
pub fn find(name: &str) -> Option<PathBuf> {
    if !is_short_name(name) {
        return Some(PathBuf::from(name));
    }
    let file = format!("nbdkit-{name}-plugin.so");
    [plugindir(), DEBIAN_PLUGINDIR.to_string()]
        .iter()
        .map(|d| Path::new(d).join(&file))
        .find(|p| p.exists())
}

/// The words for a plugin that is neither built in (`builtin_error`,
/// which lists ours) nor found as a shared object.
pub fn not_found(name: &str, builtin_error: &str) -> String {
    format!(
        "{builtin_error}; nor is nbdkit-{name}-plugin.so in {} or {DEBIAN_PLUGINDIR}",
        plugindir()
    )
}

/// A loaded plugin: the library stays open for the life of the process
/// (nbdkit unloads only at exit), and the struct is our copy of the one
/// `plugin_init` returned, zero-extended to the full layout.
pub struct Library {
    pub path: String,
    pub name: String,
    pub s: PluginStruct,
    /// The plugin's own struct, for the size it declared.
    pub struct_size: u64,
    handle: *mut c_void,
    /// Strings handed to the plugin's `config`, which it may keep.
    kept: Vec<CString>,
}

// The handle is only used to look up symbols (dlsym is thread-safe).
unsafe impl Send for Library {}
unsafe impl Sync for Library {}

fn dlerror() -> String {
    // SAFETY: dlerror returns NULL or a NUL-terminated string.
    unsafe {
        let e = libc::dlerror();
        if e.is_null() {
            "unknown dlopen error".into()
        } else {
            CStr::from_ptr(e).to_string_lossy().into_owned()
        }
    }
}

/// Reads a plugin string field: NULL is `None`.
pub fn c_str(p: *const c_char) -> Option<String> {
    // SAFETY: the plugin's string fields are NULL or NUL-terminated
    // strings that live as long as the library.
    (!p.is_null()).then(|| unsafe { CStr::from_ptr(p) }.to_string_lossy().into_owned())
}

/// Opens the shared object at `path` (RTLD_NOW | RTLD_GLOBAL, as nbdkit:
/// language plugins load interpreters whose own modules resolve symbols
/// against them) and calls its registration function `init` (the
/// `plugin_init` or `filter_init` that NBDKIT_REGISTER_PLUGIN/FILTER
/// define), with nbdkit's messages. The handle, the non-NULL struct
/// pointer, and the path as shown in messages.
pub(super) fn open_registered(
    path: &Path,
    init: &CStr,
    what: &str,
) -> Result<(*mut c_void, *const c_void, String), String> {
    let shown = path.display().to_string();
    let cpath =
        CString::new(path.as_os_str().as_bytes()).map_err(|_| format!("{shown}: invalid path"))?;
    // SAFETY: dlopen with a valid C string; running the library's
    // constructors is what loading a plugin or filter means.
    let handle = unsafe { libc::dlopen(cpath.as_ptr(), libc::RTLD_NOW | libc::RTLD_GLOBAL) };
    if handle.is_null() {
        return Err(format!("{shown}: {}", dlerror()));
    }
    // SAFETY: a valid handle and symbol name.
    let sym = unsafe { libc::dlsym(handle, init.as_ptr()) };
    if sym.is_null() {
        return Err(format!(
            "{shown}: {shown}: could not find symbol \"{}\": {}",
            init.to_string_lossy(),
            dlerror()
        ));
    }
    // SAFETY: the registration functions take nothing and return a
    // pointer to the struct (NBDKIT_REGISTER_PLUGIN/FILTER define them).
    let sym: unsafe extern "C" fn() -> *const c_void = unsafe { std::mem::transmute(sym) };
    // SAFETY: calling the library's registration function.
    let p = unsafe { sym() };
    if p.is_null() {
        return Err(format!("{shown}: {what} registration function failed"));
    }
    Ok((handle, p, shown))
}

impl Library {
    /// Opens the shared object at `path` and calls its `plugin_init`, as
    /// nbdkit's server/plugins.c does, with its error messages. The
    /// plugin's `load` has not been called yet.
    pub fn open(path: &Path) -> Result<Library, String> {
        let (handle, p, shown) = open_registered(path, c"plugin_init", "plugin")?;
        let p = p as *const PluginStruct;
        // SAFETY: every plugin struct starts with the u64 size and the
        // int API version.
        let (struct_size, api) = unsafe {
            (
                std::ptr::read_unaligned(p as *const u64),
                std::ptr::read_unaligned((p as *const u8).add(8) as *const i32),
            )
        };
        if api != 1 && api != 2 {
            return Err(format!(
                "{shown}: plugin is incompatible with this version of nbdkit (_api_version = {api})"
            ));
        }
        let mut s = PluginStruct::zeroed();
        let n = (struct_size as usize).min(STRUCT_SIZE);
        // SAFETY: the plugin's struct is `struct_size` bytes long; we copy
        // at most that and at most our struct's size. Fields it does not
        // have stay zero (NULL callbacks).
        unsafe {
            std::ptr::copy_nonoverlapping(p as *const u8, &mut s as *mut PluginStruct as *mut u8, n)
        };
        let name =
            c_str(s.name).ok_or_else(|| format!("{shown}: plugin must have a .name field"))?;
        let valid_name = name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
        if !valid_name {
            return Err(format!(
                "{shown}: plugin.name ('{name}') field must contain only ASCII alphanumeric characters or dashes and must start with an alphabetic character"
            ));
        }
        let required = [
            (s.open.is_some(), "open"),
            (s.get_size.is_some(), "get_size"),
            (s.pread.is_some() || s.pread_v1.is_some(), "pread"),
        ];
        if let Some((_, cb)) = required.iter().find(|(has, _)| !has) {
            return Err(format!("{shown}: plugin must have a .{cb} callback"));
        }
        Ok(Library {
            path: shown,
            name,
            s,
            struct_size,
            handle,
            kept: Vec::new(),
        })
    }

    /// Keeps `s` alive as long as the library.
    pub fn keep(&mut self, s: CString) {
        self.kept.push(s);
    }

    /// The address of the plugin's symbol `name` (`-D` debug flags).
    pub fn symbol(&self, name: &str) -> Option<*mut c_void> {
        let c = CString::new(name).ok()?;
        // SAFETY: a valid handle and symbol name.
        let p = unsafe { libc::dlsym(self.handle, c.as_ptr()) };
        (!p.is_null()).then_some(p)
    }
}

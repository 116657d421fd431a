//! Plugins written in C against nbdkit's `nbdkit-plugin.h`, loaded from
//! their shared objects unchanged (nbdkit-plugin(3)).
//!
//! - `abi.rs`: the plugin struct field by field, and the constants.
//! - `load.rs`: where a plugin's .so is found (a path; else for a name,
//!   our plugin directory, then Debian's), dlopen and `plugin_init`.
//! - `plugin.rs`: [`CPlugin`], the loaded plugin as a [`crate::chain::Plugin`],
//!   with nbdkit's defaults, emulations and thread models.
//! - `context.rs`: what the plugin's calls back into the server see: the
//!   connection being served and the errno it set.
//! - `lists.rs`: the extents and exports lists plugins fill.
//! - `cc.rs`: the cc plugin, which compiles C source at start-up and
//!   loads the result as any other.
//! - `exports.rs` and `shim.c`: the `nbdkit_*` functions the plugins
//!   call, exported by the `nbdkit` binary (see build.rs).
//! - `filter_abi.rs`, `filter.rs`, `next.rs`: filters written against
//!   `nbdkit-filter.h` (their struct, the loaded filter as a layer of our
//!   chain, and the `nbdkit_next` object through which they call the
//!   layers below).
//!
//! The life of a plugin, as nbdkit's: `load` once dlopened; `config` for
//! each `key=value` and `config_complete`; `thread_model`; `get_ready`;
//! `after_fork` in the final process; per connection `preconnect`,
//! `open` … `close`; at exit `cleanup` then `unload`.

mod abi;
pub mod cc;
mod context;
mod dump;
mod exports;
mod filter;
mod filter_abi;
mod lists;
mod load;
mod next;
mod plugin;

use std::ffi::CString;
use std::os::raw::c_int;
use std::sync::{Arc, OnceLock};

use parking_lot::Mutex;

pub use abi::{
    thread_model_name, THREAD_MODEL_PARALLEL, THREAD_MODEL_SERIALIZE_ALL_REQUESTS,
    THREAD_MODEL_SERIALIZE_CONNECTIONS, THREAD_MODEL_SERIALIZE_REQUESTS,
};
pub use dump::{dump_plugin, plugin_help, plugin_version};
pub use exports::{set_stdio_safe, stdio_safe};
pub use filter::{filter_not_found, find_filter, CFilter, FilterLibrary, DEBIAN_FILTERDIR};
pub use load::{find, is_short_name, not_found, plugindir, Library, DEBIAN_PLUGINDIR};
pub use plugin::CPlugin;

use context::Call;

/// The nbdkit version we are: what filters must be built for.
pub const NBDKIT_VERSION: &str = "1.32.5";

/// Our own filter directory, `$(LIBDIR)/nbdkit/filters`.
pub fn filterdir() -> String {
    plugindir().replace("/nbdkit/plugins", "/nbdkit/filters")
}

/// The plugin the server loaded, for `cleanup` and `unload` at exit.
static LOADED: Mutex<Option<Arc<CPlugin>>> = Mutex::new(None);
static NAME: OnceLock<String> = OnceLock::new();

/// The loaded plugin's name (debug messages).
pub(crate) fn loaded_name() -> Option<String> {
    NAME.get().cloned()
}

/// The `-D NAME.FLAG=N` options of the command line.
static DEBUG_FLAGS: Mutex<Vec<String>> = Mutex::new(Vec::new());

/// Records the command line's `-D` options, for the plugin loaded later.
pub fn set_debug_flags(flags: &[String]) {
    *DEBUG_FLAGS.lock() = flags.to_vec();
}

/// Sets the plugin's debug flags (nbdkit-plugin(3), "Debug Flags"): for
/// `-D NAME.FLAG=N` naming this plugin, its global `int
/// NAME_debug_FLAG` (dots in FLAG read as underscores) becomes N. A flag
/// the plugin does not have is a warning, as in nbdkit.
fn apply_debug_flags(lib: &Library) -> Result<(), String> {
    set_debug_flags_of(&lib.name, |sym| lib.symbol(sym))
}

/// The same for any plugin or filter `name` whose symbols `lookup` finds.
pub(crate) fn set_debug_flags_of(
    name_of_object: &str,
    lookup: impl Fn(&str) -> Option<*mut std::os::raw::c_void>,
) -> Result<(), String> {
    for f in DEBUG_FLAGS.lock().iter() {
        let Some((name_flag, value)) = f.split_once('=') else {
            continue;
        };
        let Some((name, flag)) = name_flag.split_once('.') else {
            continue;
        };
        if name != name_of_object {
            continue;
        }
        let symbol = format!("{name}_debug_{}", flag.replace('.', "_"));
        let Some(p) = lookup(&symbol) else {
            crate::log::log_info(format_args!(
                "warning: -D {name_flag}: {name} does not contain a global variable called {symbol}"
            ));
            continue;
        };
        let v: c_int = parse_c_int(value)
            .ok_or_else(|| format!("-D {name_flag}: could not parse number: \"{value}\""))?;
        // SAFETY: a debug flag is a global C int of the plugin.
        unsafe { *(p as *mut c_int) = v };
    }
    Ok(())
}

/// An int as nbdkit_parse_int reads it: decimal, 0x hex or 0 octal.
fn parse_c_int(s: &str) -> Option<c_int> {
    let (neg, t) = match s.strip_prefix('-') {
        Some(t) => (true, t),
        None => (false, s.strip_prefix('+').unwrap_or(s)),
    };
    let v = if let Some(h) = t.strip_prefix("0x").or_else(|| t.strip_prefix("0X")) {
        i64::from_str_radix(h, 16).ok()?
    } else if t.len() > 1 && t.starts_with('0') {
        i64::from_str_radix(&t[1..], 8).ok()?
    } else {
        t.parse::<i64>().ok()?
    };
    c_int::try_from(if neg { -v } else { v }).ok()
}

/// Opens the plugin's shared object, sets its debug flags and calls its
/// `load`.
pub fn open(path: &std::path::Path) -> Result<Library, String> {
    let lib = Library::open(path)?;
    apply_debug_flags(&lib)?;
    let _ = NAME.set(lib.name.clone());
    crate::log::debug!("registered plugin {} (name {})", lib.path, lib.name);
    if let Some(load) = lib.s.load {
        let _call = Call::enter(None);
        // SAFETY: the plugin's load, once, first.
        unsafe { load() };
    }
    Ok(lib)
}

/// The plugin's magic config key, where a bare command-line value goes.
pub fn magic_config_key(lib: &Library) -> Option<String> {
    load::c_str(lib.s.magic_config_key)
}

/// Whether the plugin takes `key=value` parameters at all.
pub fn has_config(lib: &Library) -> bool {
    lib.s.config.is_some()
}

/// Hands each `key=value` to the plugin's `config`, then calls
/// `config_complete`. A failure was reported by the plugin itself, so the
/// error is empty: the server exits 1 with no words of its own, as
/// nbdkit.
pub fn configure(lib: &mut Library, pairs: &[(String, String)]) -> Result<(), String> {
    let _call = Call::enter(None);
    for (k, v) in pairs {
        let Some(config) = lib.s.config else {
            return Err(format!(
                "{}: this plugin does not need command line configuration",
                lib.path
            ));
        };
        let (ck, cv) = (
            CString::new(k.as_str()).map_err(|_| format!("{k}: invalid key"))?,
            CString::new(v.as_str()).map_err(|_| format!("{k}: invalid value"))?,
        );
        // SAFETY: the plugin's callback with two C strings. Plugins keep
        // these pointers (nbdkit passes its argv, which lives as long as
        // the process), so the strings are kept as long as the library.
        let r = unsafe { config(ck.as_ptr(), cv.as_ptr()) };
        lib.keep(ck);
        lib.keep(cv);
        if r == -1 {
            return Err(String::new());
        }
    }
    if let Some(cc) = lib.s.config_complete {
        // SAFETY: the plugin's callback.
        if unsafe { cc() } == -1 {
            return Err(String::new());
        }
    }
    Ok(())
}

/// Makes the configured plugin ready to serve with thread model
/// `model` (`get_ready`), and remembers it for the end.
pub fn ready(lib: Library, model: c_int) -> Result<Arc<CPlugin>, String> {
    if let Some(get_ready) = lib.s.get_ready {
        let _call = Call::enter(None);
        // SAFETY: the plugin's callback.
        if unsafe { get_ready() } == -1 {
            return Err(format!("{}: get_ready failed", lib.name));
        }
    }
    let p = Arc::new(CPlugin::new(lib, model));
    *LOADED.lock() = Some(Arc::clone(&p));
    Ok(p)
}

/// At exit: the plugin's `cleanup` and `unload` (once).
/// At exit: the filters' `cleanup`, then the plugin's `cleanup` and
/// `unload`, then the filters' `unload` (once).
pub fn shut_down() {
    filter::clean_up_filters();
    let p = LOADED.lock().take();
    if let Some(p) = p {
        p.shut_down();
    }
    filter::unload_filters();
}

/// Keeps every exported `nbdkit_*` function in the `nbdkit` binary: the
/// linker only takes the parts of a library something refers to, and
/// nothing in Rust calls these. `main` calls this once.
pub fn keep_exported_functions() -> usize {
    extern "C" {
        fn nbdkit_error();
        fn nbdkit_verror();
        fn nbdkit_debug();
        fn nbdkit_vdebug();
        fn nbdkit_printf_intern();
        fn nbdkit_vprintf_intern();
    }
    use exports::*;
    let table: &[*const ()] = &[
        nbdkit_error as *const (),
        nbdkit_verror as *const (),
        nbdkit_debug as *const (),
        nbdkit_vdebug as *const (),
        nbdkit_printf_intern as *const (),
        nbdkit_vprintf_intern as *const (),
        nbdkit_rs_error as *const (),
        nbdkit_rs_debug as *const (),
        nbdkit_set_error as *const (),
        nbdkit_parse_size as *const (),
        nbdkit_parse_bool as *const (),
        nbdkit_parse_probability as *const (),
        nbdkit_parse_int as *const (),
        nbdkit_parse_int8_t as *const (),
        nbdkit_parse_int16_t as *const (),
        nbdkit_parse_int32_t as *const (),
        nbdkit_parse_int64_t as *const (),
        nbdkit_parse_unsigned as *const (),
        nbdkit_parse_uint8_t as *const (),
        nbdkit_parse_uint16_t as *const (),
        nbdkit_parse_uint32_t as *const (),
        nbdkit_parse_uint64_t as *const (),
        nbdkit_absolute_path as *const (),
        nbdkit_realpath as *const (),
        nbdkit_read_password as *const (),
        nbdkit_export_name as *const (),
        nbdkit_is_tls as *const (),
        nbdkit_peer_name as *const (),
        nbdkit_peer_pid as *const (),
        nbdkit_peer_uid as *const (),
        nbdkit_peer_gid as *const (),
        nbdkit_shutdown as *const (),
        nbdkit_nanosleep as *const (),
        nbdkit_stdio_safe as *const (),
        nbdkit_strdup_intern as *const (),
        nbdkit_strndup_intern as *const (),
        nbdkit_extents_new as *const (),
        nbdkit_extents_free as *const (),
        nbdkit_extents_count as *const (),
        nbdkit_get_extent as *const (),
        nbdkit_add_extent as *const (),
        nbdkit_exports_new as *const (),
        nbdkit_exports_free as *const (),
        nbdkit_exports_count as *const (),
        nbdkit_get_export as *const (),
        nbdkit_add_export as *const (),
        nbdkit_use_default_export as *const (),
        next::nbdkit_extents_full as *const (),
        next::nbdkit_extents_aligned as *const (),
        filter::nbdkit_context_get_backend as *const (),
        filter::nbdkit_next_context_open as *const (),
        filter::nbdkit_next_context_close as *const (),
        filter::nbdkit_context_set_next as *const (),
    ];
    std::hint::black_box(table).len()
}

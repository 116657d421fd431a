//! `nbdkit PLUGIN --dump-plugin`: the plugin's facts as `key=value`
//! lines, in nbdkit's order, then whatever the plugin's own
//! `dump_plugin` prints. Built-in plugins answer the same keys as a
//! parallel, API 2 plugin with the callbacks they have.

use std::io::Write;
use std::os::raw::c_int;

use super::abi::thread_model_name;
use super::{load, CPlugin, Library};
use crate::plugins;

const VERSION: &str = "1.32.5";

/// Prints the facts of plugin `name` (built in, or loaded). Filters on
/// the command line lower the thread model printed to `filters_model`,
/// as nbdkit's.
pub fn dump_plugin(name: &str, params: &[String], filters_model: c_int) -> Result<(), String> {
    if name == "sh" || name == "eval" {
        return dump_script_plugin(name, params);
    }
    if name == "cc" {
        let exe = std::env::current_exe().unwrap_or_default();
        print!(
            "path={}\nname=cc\nversion={VERSION}\napi_version=2\nstruct_size={}\n\
             max_thread_model=parallel\nthread_model={}\nerrno_is_preserved=1\n\
             has_config=1\nhas_config_complete=1\nhas_config_help=1\n{}",
            exe.display(),
            super::abi::STRUCT_SIZE,
            super::abi::thread_model_name(filters_model),
            super::cc::dump_lines()
        );
        return Ok(());
    }
    if let Ok(spec) = plugins::find(name) {
        let exe = std::env::current_exe().unwrap_or_default();
        let mut out = format!(
            "path={}\nname={}\nversion={VERSION}\napi_version=2\nstruct_size={}\n\
             max_thread_model=parallel\nthread_model={}\nerrno_is_preserved=1\n",
            exe.display(),
            spec.name,
            super::abi::STRUCT_SIZE,
            thread_model_name(filters_model)
        );
        if let Some(m) = spec.magic {
            out.push_str(&format!("magic_config_key={m}\n"));
        }
        if !spec.params.is_empty() {
            out.push_str("has_config=1\nhas_config_complete=1\nhas_config_help=1\n");
        }
        out.push_str("has_open=1\nhas_close=1\nhas_get_size=1\nhas_pread=1\n");
        print!("{out}");
        return Ok(());
    }
    let path = load::find(name).ok_or_else(|| not_found(name))?;
    let lib = super::open(&path)?;
    print!("{}", facts(&lib, filters_model)?);
    let _ = std::io::stdout().flush();
    let _call = super::context::Call::enter(None);
    // SAFETY: the plugin's callbacks: dump_plugin prints its own lines;
    // unload, as at any exit after load.
    unsafe {
        if let Some(dump) = lib.s.dump_plugin {
            dump();
        }
        libc::fflush(std::ptr::null_mut());
        if let Some(unload) = lib.s.unload {
            unload();
        }
    }
    Ok(())
}

/// `nbdkit PLUGIN --version`'s line for the plugin: its name and
/// version (ours for a built-in plugin; a loaded one's own, if it says).
pub fn plugin_version(name: &str) -> Result<String, String> {
    if name == "cc" {
        return Ok(format!("cc {VERSION}"));
    }
    if let Ok(spec) = plugins::find(name) {
        return Ok(format!("{} {VERSION}", spec.name));
    }
    let path = load::find(name).ok_or_else(|| not_found(name))?;
    let lib = super::open(&path)?;
    let line = match load::c_str(lib.s.version) {
        Some(v) => format!("{} {v}", lib.name),
        None => lib.name.clone(),
    };
    let _call = super::context::Call::enter(None);
    if let Some(unload) = lib.s.unload {
        // SAFETY: the plugin's unload, once, after its load.
        unsafe { unload() };
    }
    Ok(line)
}

/// `nbdkit PLUGIN --help`'s part for the plugin: its name (and long
/// name), where it comes from, and its `config_help` (for a built-in
/// plugin, its declared keys).
pub fn plugin_help(name: &str) -> Result<String, String> {
    if name == "cc" {
        return Ok(format!(
            "plugin: cc (nbdkit C compiler plugin)\n(built in)\n{}",
            super::cc::CONFIG_HELP
        ));
    }
    if let Ok(spec) = plugins::find(name) {
        let mut out = format!("plugin: {}\n(built in)\n", spec.name);
        for (k, help) in spec.params {
            out.push_str(&format!("{k}=...  {help}\n"));
        }
        return Ok(out);
    }
    let path = load::find(name).ok_or_else(|| not_found(name))?;
    let lib = super::open(&path)?;
    let mut out = match load::c_str(lib.s.longname) {
        Some(l) => format!("plugin: {} ({l})\n", lib.name),
        None => format!("plugin: {}\n", lib.name),
    };
    out.push_str(&format!("({})\n", lib.path));
    if let Some(h) = load::c_str(lib.s.config_help) {
        out.push_str(&h);
        if !h.ends_with('\n') {
            out.push('\n');
        }
    }
    let _call = super::context::Call::enter(None);
    if let Some(unload) = lib.s.unload {
        // SAFETY: the plugin's unload, once, after its load.
        unsafe { unload() };
    }
    Ok(out)
}

/// The error for a plugin that is neither built in nor found: the
/// built-in lookup's words, which list our plugins.
fn not_found(name: &str) -> String {
    load::not_found(name, &plugins::find(name).err().unwrap_or_default())
}

/// nbdkit's lines for a loaded plugin.
fn facts(lib: &Library, filters_model: c_int) -> Result<String, String> {
    let s = &lib.s;
    let mut out = format!("path={}\nname={}\n", lib.path, lib.name);
    if let Some(v) = load::c_str(s.version) {
        out.push_str(&format!("version={v}\n"));
    }
    out.push_str(&format!(
        "api_version={}\nstruct_size={}\nmax_thread_model={}\nthread_model={}\nerrno_is_preserved={}\n",
        s._api_version,
        lib.struct_size,
        thread_model_name(s._thread_model),
        thread_model_name(CPlugin::own_thread_model(lib)?.min(filters_model)),
        (s.errno_is_preserved != 0) as i32
    ));
    if let Some(m) = load::c_str(s.magic_config_key) {
        out.push_str(&format!("magic_config_key={m}\n"));
    }
    let has = [
        ("longname", !s.longname.is_null()),
        ("load", s.load.is_some()),
        ("unload", s.unload.is_some()),
        ("dump_plugin", s.dump_plugin.is_some()),
        ("config", s.config.is_some()),
        ("config_complete", s.config_complete.is_some()),
        ("config_help", !s.config_help.is_null()),
        ("thread_model", s.thread_model.is_some()),
        ("get_ready", s.get_ready.is_some()),
        ("after_fork", s.after_fork.is_some()),
        ("cleanup", s.cleanup.is_some()),
        ("preconnect", s.preconnect.is_some()),
        ("list_exports", s.list_exports.is_some()),
        ("default_export", s.default_export.is_some()),
        ("open", s.open.is_some()),
        ("close", s.close.is_some()),
        ("export_description", s.export_description.is_some()),
        ("get_size", s.get_size.is_some()),
        ("block_size", s.block_size.is_some()),
        ("can_write", s.can_write.is_some()),
        ("can_flush", s.can_flush.is_some()),
        ("is_rotational", s.is_rotational.is_some()),
        ("can_trim", s.can_trim.is_some()),
        ("can_zero", s.can_zero.is_some()),
        ("can_fast_zero", s.can_fast_zero.is_some()),
        ("can_extents", s.can_extents.is_some()),
        ("can_fua", s.can_fua.is_some()),
        ("can_multi_conn", s.can_multi_conn.is_some()),
        ("can_cache", s.can_cache.is_some()),
        ("pread", s.pread.is_some()),
        ("pwrite", s.pwrite.is_some()),
        ("flush", s.flush.is_some()),
        ("trim", s.trim.is_some()),
        ("zero", s.zero.is_some()),
        ("extents", s.extents.is_some()),
        ("cache", s.cache.is_some()),
        // An API 1 plugin's data callbacks, last.
        ("_pread_v1", s.pread_v1.is_some()),
        ("_pwrite_v1", s.pwrite_v1.is_some()),
        ("_flush_v1", s.flush_v1.is_some()),
        ("_trim_v1", s.trim_v1.is_some()),
        ("_zero_v1", s.zero_v1.is_some()),
    ];
    for (k, present) in has {
        if present {
            out.push_str(&format!("has_{k}=1\n"));
        }
    }
    Ok(out)
}

/// The callbacks nbdkit's sh and eval plugins have, in `has_*` order.
const SCRIPT_CALLBACKS: &[&str] = &[
    "load",
    "unload",
    "dump_plugin",
    "config",
    "config_complete",
    "config_help",
    "thread_model",
    "get_ready",
    "after_fork",
    "preconnect",
    "list_exports",
    "default_export",
    "open",
    "close",
    "export_description",
    "get_size",
    "block_size",
    "can_write",
    "can_flush",
    "is_rotational",
    "can_trim",
    "can_zero",
    "can_fast_zero",
    "can_extents",
    "can_fua",
    "can_multi_conn",
    "can_cache",
    "pread",
    "pwrite",
    "flush",
    "trim",
    "zero",
    "extents",
    "cache",
];

/// `nbdkit sh|eval [ARGS] --dump-plugin`: nbdkit's lines for the
/// script plugin (the thread model is the script's, asked after its
/// parameters went to `config`), `max_known_status=3` (exit codes above 3
/// are errors), then what the script's `dump_plugin` prints.
fn dump_script_plugin(name: &str, params: &[String]) -> Result<(), String> {
    let (model, own) = plugins::sh::dump(name, params)?;
    let exe = std::env::current_exe().unwrap_or_default();
    let mut out = format!(
        "path={}\nname={name}\nversion={VERSION}\napi_version=2\nstruct_size={}\n\
         max_thread_model=parallel\nthread_model={}\nerrno_is_preserved=1\n",
        exe.display(),
        super::abi::STRUCT_SIZE,
        thread_model_name(model)
    );
    if name == "sh" {
        out.push_str("magic_config_key=script\n");
    }
    for cb in SCRIPT_CALLBACKS {
        out.push_str(&format!("has_{cb}=1\n"));
    }
    out.push_str("max_known_status=3\n");
    out.push_str(&own);
    print!("{out}");
    let _ = std::io::stdout().flush();
    Ok(())
}

//! The script plugins: sh (nbdkit-sh-plugin(3)), whose methods are one
//! script or executable called as `SCRIPT METHOD ARGS...`, and eval
//! (nbdkit-eval-plugin(1)), whose methods are shell fragments given on
//! the command line.
//!
//! Both run methods the same way (`call.rs`) and serve the same way
//! (`plugin.rs`); they differ only in where a method's script is:
//! - sh: the one script, for every method; a method it does not
//!   implement exits with code 2. A script given as `-` is read from
//!   standard input into `$tmpdir/inline-script.sh`.
//! - eval: each `METHOD=SCRIPT` parameter is written to `$tmpdir/METHOD`;
//!   a method without one runs `$tmpdir/missing` (`exit 2` unless
//!   `missing=` says otherwise). As nbdkit does for C plugins, a data
//!   method given without its `can_*` gets a `can_*` that says yes.
//!
//! `$tmpdir` is made when the plugin starts and removed when the server
//! exits, after the script's `unload` method ([`shut_down`]).

mod call;
mod plugin;

use std::collections::BTreeSet;
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use parking_lot::Mutex;

use super::PluginSpec;
use crate::chain::Plugin;
use crate::params::Params;

pub use plugin::ScriptPlugin;

pub const SH: PluginSpec = PluginSpec {
    name: "sh",
    magic: Some("script"),
    params: &[(
        "script",
        "the script or executable whose methods make the plugin (- reads it from standard input); other keys go to its config method",
    )],
    open: |p, _| open_sh(p),
};

pub const EVAL: PluginSpec = PluginSpec {
    name: "eval",
    magic: None,
    params: EVAL_PARAMS,
    open: |p, _| open_eval(p),
};

/// The methods eval takes as parameters, each a shell fragment; other
/// keys go to its `config` method.
const EVAL_PARAMS: &[crate::params::Param] = &[
    ("after_fork", "script of the after_fork method"),
    ("block_size", "script of the block_size method"),
    ("cache", "script of the cache method"),
    ("can_cache", "script of the can_cache method"),
    ("can_extents", "script of the can_extents method"),
    ("can_fast_zero", "script of the can_fast_zero method"),
    ("can_flush", "script of the can_flush method"),
    ("can_fua", "script of the can_fua method"),
    ("can_multi_conn", "script of the can_multi_conn method"),
    ("can_trim", "script of the can_trim method"),
    ("can_write", "script of the can_write method"),
    ("can_zero", "script of the can_zero method"),
    ("close", "script of the close method"),
    (
        "config",
        "script of the config method, for keys that are not methods",
    ),
    ("config_complete", "script of the config_complete method"),
    ("default_export", "script of the default_export method"),
    ("dump_plugin", "script of the dump_plugin method"),
    (
        "export_description",
        "script of the export_description method",
    ),
    ("extents", "script of the extents method"),
    ("flush", "script of the flush method"),
    ("get_ready", "script of the get_ready method"),
    ("get_size", "script of the get_size method"),
    ("is_rotational", "script of the is_rotational method"),
    ("list_exports", "script of the list_exports method"),
    (
        "missing",
        "script run for any method not given (default: exit 2)",
    ),
    ("open", "script of the open method"),
    ("pread", "script of the pread method"),
    ("preconnect", "script of the preconnect method"),
    ("pwrite", "script of the pwrite method"),
    ("thread_model", "script of the thread_model method"),
    ("trim", "script of the trim method"),
    ("unload", "script of the unload method"),
    ("zero", "script of the zero method"),
];

/// Where each method's script is.
pub enum Methods {
    /// sh: one script for all.
    Sh(PathBuf),
    /// eval: `$tmpdir/METHOD` for the methods given, else
    /// `$tmpdir/missing`.
    Eval {
        dir: PathBuf,
        given: BTreeSet<String>,
    },
}

impl Methods {
    /// The script to run for `method`.
    pub fn script(&self, method: &str) -> PathBuf {
        match self {
            Methods::Sh(s) => s.clone(),
            Methods::Eval { dir, given } if given.contains(method) => dir.join(method),
            Methods::Eval { dir, .. } => dir.join("missing"),
        }
    }
}

/// What the server's exit must undo: the temporary directory, and the
/// script whose `unload` runs first (once one is known).
struct AtExit {
    tmpdir: PathBuf,
    unload: Option<PathBuf>,
}

static AT_EXIT: Mutex<Option<AtExit>> = Mutex::new(None);

/// At the server's exit: the script's `unload` method (its errors are
/// ignored, as nbdkit does), then `$tmpdir` is removed.
pub fn shut_down() {
    let Some(a) = AT_EXIT.lock().take() else {
        return;
    };
    if let Some(script) = a.unload {
        let _ = call::call(&script, &a.tmpdir, "unload", &[], b"");
    }
    let _ = std::fs::remove_dir_all(&a.tmpdir);
}

/// Makes `$tmpdir` (in /tmp, as nbdkit) and registers it for removal.
fn make_tmpdir(template: &str) -> Result<PathBuf, String> {
    let dir = nix::unistd::mkdtemp(template).map_err(|e| format!("mkdtemp: /tmp: {e}"))?;
    crate::log::debug!("load: tmpdir: {}", dir.display());
    *AT_EXIT.lock() = Some(AtExit {
        tmpdir: dir.clone(),
        unload: None,
    });
    Ok(dir)
}

fn set_unload(script: PathBuf) {
    if let Some(a) = AT_EXIT.lock().as_mut() {
        a.unload = Some(script);
    }
}

/// Writes `text` to `path` as an executable (mode 0500, as nbdkit).
fn write_script(path: &Path, text: &[u8]) -> Result<(), String> {
    // An earlier file (a user's `missing=` over the default) is replaced.
    let _ = std::fs::remove_file(path);
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o500))
        .map_err(|e| format!("chmod: {}: {e}", path.display()))
}

/// The sh plugin: `script=` (the magic key: the first bare value) is the
/// script; the script's `load` runs once it is known; every other key,
/// in order, goes to its `config` method. A later bare value means the
/// script's own magic key (from its `magic_config_key` method).
fn open_sh(p: &mut Params) -> Result<Arc<dyn Plugin>, String> {
    configure_sh(p.take_rest())?.ready()
}

/// sh up to its `config` calls.
fn configure_sh(pairs: Vec<(String, String)>) -> Result<ScriptPlugin, String> {
    let tmpdir = make_tmpdir("/tmp/nbdkitXXXXXX")?;
    let mut pairs = pairs.into_iter();
    let script = match pairs.next() {
        Some((k, v)) if k == "script" => script_path(&v, &tmpdir)?,
        Some(_) => return Err("the first parameter must be script=/path/to/script".into()),
        None => return Err("missing script parameter".into()),
    };
    let methods = Methods::Sh(script.clone());
    set_unload(script.clone());
    let plugin = ScriptPlugin::new(tmpdir, methods);
    plugin.load()?;
    let magic = plugin.magic_config_key()?;
    for (k, v) in pairs {
        let k = match (k.as_str(), &magic) {
            ("script", Some(m)) => m.clone(),
            ("script", None) => {
                return Err(format!(
                    "{}: expecting key=value on the command line but got: {v}",
                    script.display()
                ))
            }
            _ => k,
        };
        plugin.config(&k, &v, false)?;
    }
    Ok(plugin)
}

/// The script's path, absolute and resolved (nbdkit_realpath) since the
/// server may change directory; `-` is read from standard input into
/// `$tmpdir/inline-script.sh`.
fn script_path(v: &str, tmpdir: &Path) -> Result<PathBuf, String> {
    if v == "-" {
        if !crate::cplugin::stdio_safe() {
            return Err("inline script is incompatible with -s".into());
        }
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|e| format!("sh: reading the script from standard input: {e}"))?;
        let path = tmpdir.join("inline-script.sh");
        write_script(&path, &text)?;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o700))
            .map_err(|e| format!("chmod: {}: {e}", path.display()))?;
        return Ok(path);
    }
    if v.is_empty() {
        return Err("sh: script parameter cannot be empty".into());
    }
    // nbdkit_realpath, in its words.
    std::fs::canonicalize(v).map_err(|e| {
        let why = e.raw_os_error().map_or_else(
            || e.to_string(),
            |c| nix::errno::Errno::from_raw(c).desc().to_string(),
        );
        format!("realpath: {v}: {why}")
    })
}

/// The eval plugin: each method key becomes `$tmpdir/METHOD`; any other
/// key goes, in command-line order, to the `config` method given so far.
fn open_eval(p: &mut Params) -> Result<Arc<dyn Plugin>, String> {
    configure_eval(p.take_rest())?.ready()
}

/// eval up to its `config` calls.
fn configure_eval(pairs: Vec<(String, String)>) -> Result<ScriptPlugin, String> {
    let tmpdir = make_tmpdir("/tmp/nbdkitXXXXXX")?;
    write_script(&tmpdir.join("missing"), b"exit 2\n")?;
    let mut given = BTreeSet::new();
    for (k, v) in pairs {
        if EVAL_PARAMS.iter().any(|(m, _)| *m == k) {
            if given.contains(&k) {
                return Err(format!(
                    "method {k} defined more than once on the command line"
                ));
            }
            write_script(&tmpdir.join(&k), v.as_bytes())?;
            given.insert(k);
            continue;
        }
        // A user key: nbdkit calls config now, with the methods given
        // before it.
        let so_far = Methods::Eval {
            dir: tmpdir.clone(),
            given: given.clone(),
        };
        ScriptPlugin::new(tmpdir.clone(), so_far).config(&k, &v, true)?;
    }
    // The `can_*` a C plugin would get from the server for a method it
    // has.
    for (method, can) in [
        ("pwrite", "can_write"),
        ("flush", "can_flush"),
        ("trim", "can_trim"),
        ("zero", "can_zero"),
        ("extents", "can_extents"),
    ] {
        if given.contains(method) && !given.contains(can) {
            write_script(&tmpdir.join(can), b"exit 0\n")?;
            given.insert(can.to_string());
        }
    }
    let methods = Methods::Eval {
        dir: tmpdir.clone(),
        given,
    };
    set_unload(methods.script("unload"));
    Ok(ScriptPlugin::new(tmpdir, methods))
}

/// For `nbdkit sh|eval [ARGS] --dump-plugin`, as nbdkit: the script's
/// thread model and what its `dump_plugin` method prints, once the
/// parameters went to `config` (no `config_complete`). Without a script,
/// sh is parallel, and eval (whose methods all run `missing`)
/// serialize_all_requests.
pub fn dump(name: &str, args: &[String]) -> Result<(i32, String), String> {
    let spec = if name == "sh" { &SH } else { &EVAL };
    let pairs = crate::params::split_params(name, spec.magic, args)?;
    if name == "sh" && pairs.is_empty() {
        return Ok((crate::cplugin::THREAD_MODEL_PARALLEL, String::new()));
    }
    let plugin = if name == "sh" {
        configure_sh(pairs)?
    } else {
        configure_eval(pairs)?
    };
    plugin.dump()
}

/// The first line of `out` without its newline (the form of a handle,
/// a size, a thread model, a description).
fn chomp(out: &[u8]) -> String {
    let s = String::from_utf8_lossy(out);
    s.strip_suffix('\n').unwrap_or(&s).to_string()
}

/// An export list in one of the forms of nbdkit-sh-plugin(3)'s
/// `list_exports`: a first line `NAMES`, `INTERLEAVED` or
/// `NAMES+DESCRIPTIONS`, else names only, starting at the first line.
fn parse_export_list(out: &[u8]) -> Vec<(String, String)> {
    let text = String::from_utf8_lossy(out);
    let mut lines: Vec<&str> = text.split('\n').collect();
    if lines.last() == Some(&"") {
        lines.pop();
    }
    let (mode, rest) = match lines.first() {
        Some(&m @ ("NAMES" | "INTERLEAVED" | "NAMES+DESCRIPTIONS")) => (m, &lines[1..]),
        _ => ("NAMES", &lines[..]),
    };
    let own = |s: &str| s.to_string();
    match mode {
        "INTERLEAVED" => rest
            .chunks(2)
            .map(|c| (own(c[0]), c.get(1).map_or_else(String::new, |d| own(d))))
            .collect(),
        "NAMES+DESCRIPTIONS" => {
            let half = rest.len().div_ceil(2);
            (0..half)
                .map(|i| {
                    let d = rest.get(half + i).map_or_else(String::new, |d| own(d));
                    (own(rest[i]), d)
                })
                .collect()
        }
        _ => rest.iter().map(|n| (own(n), String::new())).collect(),
    }
}

/// The error of a method that answered "false" where no yes/no is asked.
fn unexpected_false(script: &Path, method: &str) -> nbd_core::server::backend::Error {
    nbd_core::server::backend::Error::new(
        libc::EIO,
        format!(
            "{}: {method} method returned unexpected code (3/false)",
            script.display()
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn export_list_forms() {
        let l = parse_export_list(b"a\nb\n");
        assert_eq!(l, [("a".into(), "".into()), ("b".into(), "".into())]);
        let l = parse_export_list(b"NAMES\na\n");
        assert_eq!(l, [("a".into(), "".into())]);
        let l = parse_export_list(b"INTERLEAVED\na\nA\nb\nB\n");
        assert_eq!(l, [("a".into(), "A".into()), ("b".into(), "B".into())]);
        let l = parse_export_list(b"NAMES+DESCRIPTIONS\na\nb\nA\nB\n");
        assert_eq!(l, [("a".into(), "A".into()), ("b".into(), "B".into())]);
        assert!(parse_export_list(b"").is_empty());
    }

    #[test]
    fn eval_scripts_fall_back_to_missing() {
        let m = Methods::Eval {
            dir: "/t".into(),
            given: ["pread".to_string()].into(),
        };
        assert_eq!(m.script("pread"), Path::new("/t/pread"));
        assert_eq!(m.script("zero"), Path::new("/t/missing"));
    }
}

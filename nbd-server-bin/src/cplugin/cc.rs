//! The cc plugin (nbdkit-cc-plugin(3)): `nbdkit cc SOURCE.c [CC=...]
//! [CFLAGS=...] [EXTRA_CFLAGS=...] [KEY=VALUE...]` compiles the C source
//! when the server starts, into a temporary shared object, and loads that
//! as any C plugin (`load.rs`); the other parameters go to its `config`.
//!
//! The command is nbdkit's: `CC CFLAGS EXTRA_CFLAGS SOURCE -o PLUGIN.so`
//! run by the shell (so the flags may hold several words), with
//! `-I` our own nbdkit-plugin.h directory added last: our headers are
//! not on the compiler's default path the way Debian's
//! /usr/include/nbdkit-plugin.h is. The source read from standard input
//! (`-`) and the shared object live in a private directory under /tmp,
//! removed once the object is loaded.

use std::io::Read;
use std::path::{Path, PathBuf};

use super::Library;

/// The compiler when `CC=` is not given.
pub const DEFAULT_CC: &str = "cc";
/// The flags when `CFLAGS=` is not given (nbdkit prints its build's
/// flags in `--dump-plugin`, and adds `-fPIC -shared` to them).
pub const DEFAULT_CFLAGS: &str = "-g -O2";
const SHARED_FLAGS: &str = "-fPIC -shared";

/// The directory holding our nbdkit-plugin.h: `../include` beside the
/// installed binary's directory (`/usr/bin` → `/usr/include`), else the
/// source tree's `include/` (a binary run from the build tree).
pub fn include_dir() -> PathBuf {
    let installed = std::env::current_exe()
        .ok()
        .and_then(|e| Some(e.parent()?.parent()?.join("include")))
        .filter(|d| d.join("nbdkit-plugin.h").exists());
    installed.unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../include"))
}

/// Quotes `s` for the shell, as nbdkit's shell_quote.
fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// A private directory, removed when dropped.
struct Scratch(PathBuf);

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Compiles and loads the plugin `pairs` describe (the first must be
/// `script`, the source); returns it with the parameters meant for it.
pub fn compile(pairs: Vec<(String, String)>) -> Result<(Library, Vec<(String, String)>), String> {
    let mut pairs = pairs.into_iter();
    let source = match pairs.next() {
        Some((k, v)) if k == "script" => v,
        _ => return Err("cc: no C program name (or \"-\") given".into()),
    };
    let (mut cc, mut cflags, mut extra) = (DEFAULT_CC.to_string(), None, None);
    let mut rest = Vec::new();
    for (k, v) in pairs {
        match k.as_str() {
            "script" => return Err("cc: script parameter must appear only once".into()),
            "CC" => cc = v,
            "CFLAGS" => cflags = Some(v),
            "EXTRA_CFLAGS" => extra = Some(v),
            _ => rest.push((k, v)),
        }
    }
    let dir = nix::unistd::mkdtemp("/tmp/ccXXXXXX").map_err(|e| format!("mkdtemp: {e}"))?;
    let scratch = Scratch(dir);
    let source = if source == "-" {
        if !super::stdio_safe() {
            return Err("inline script is incompatible with -s".into());
        }
        let mut text = Vec::new();
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(|e| format!("cc: failed to copy inline script to temporary file: {e}"))?;
        let p = scratch.0.join("inline.c");
        std::fs::write(&p, text).map_err(|e| format!("{}: {e}", p.display()))?;
        p
    } else {
        std::fs::canonicalize(&source).map_err(|e| {
            let why = e.raw_os_error().map_or_else(
                || e.to_string(),
                |c| nix::errno::Errno::from_raw(c).desc().to_string(),
            );
            format!("realpath: {source}: {why}")
        })?
    };
    let so = scratch.0.join("plugin.so");
    let flags = cflags.unwrap_or_else(|| format!("{DEFAULT_CFLAGS} {SHARED_FLAGS}"));
    let command = format!(
        "{cc} {flags} {} -I{} {} -o {}",
        extra.unwrap_or_default(),
        shell_quote(&include_dir().to_string_lossy()),
        shell_quote(&source.to_string_lossy()),
        shell_quote(&so.to_string_lossy())
    );
    crate::log::debug!("cc: {command}");
    let status = std::process::Command::new("/bin/sh")
        .arg("-c")
        .arg(&command)
        .status()
        .map_err(|e| format!("cc: /bin/sh: {e}"))?;
    if !status.success() {
        return Err(match status.code() {
            Some(c) => format!("{cc}: command failed with exit code {c}"),
            None => format!("{cc}: command was killed by a signal"),
        });
    }
    let lib = super::open(&so).map_err(|e| format!("cannot open the compiled plugin: {e}"))?;
    if lib.s._api_version != 2 {
        return Err("plugin uses the wrong NBDKIT_API_VERSION, it must be 2".into());
    }
    // The object stays mapped after its file is gone.
    drop(scratch);
    Ok((lib, rest))
}

/// `nbdkit cc --dump-plugin`'s own lines, after the common ones.
pub fn dump_lines() -> String {
    format!("CC={DEFAULT_CC}\nCFLAGS={DEFAULT_CFLAGS}\n")
}

/// `nbdkit cc --help`'s parameters.
pub const CONFIG_HELP: &str =
    "[script=]<FILENAME>   (required) The C source to compile and load (- for standard input).\n\
CC=<CC>                          C compiler.\n\
CFLAGS=<CFLAGS>                  C compiler flags.\n\
EXTRA_CFLAGS=<CFLAGS>            Extra C compiler flags.\n\
[other arguments may be used by the plugin that you load]\n";

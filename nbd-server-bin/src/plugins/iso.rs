//! The iso plugin: a read-only CD-ROM image made from one or more
//! directories when the server starts (nbdkit-iso-plugin(1)).
//!
//! The image is made by `prog=`, else by the first of xorriso (run as
//! `xorriso -as mkisofs`), genisoimage and mkisofs that is installed, with
//! `-quiet`, then `params=` as the shell reads it (the manual warns that
//! it is not quoted), then each directory. Several directories are merged
//! into the image's root.

use std::sync::Arc;

use super::disk_command::quote;
use crate::scratch::{hidden_file, tmpdir};

use super::made_image::{find_program, run_shell, MadeImage};
use super::PluginSpec;

pub const PLUGIN: PluginSpec = PluginSpec {
    name: "iso",
    magic: Some("dir"),
    params: &[
        (
            "dir",
            "a directory whose files go into the image's root (required; may be repeated)",
        ),
        (
            "params",
            "more options for the ISO program, read by the shell (e.g. '-JrT')",
        ),
        (
            "prog",
            "the ISO program (default: xorriso, genisoimage or mkisofs, the first installed)",
        ),
    ],
    open: |p, _| {
        let dirs = p.take_all("dir");
        let params = p.take("params");
        let prog = p.take("prog");
        if dirs.is_empty() {
            return Err(p.err("you must supply the dir=<DIRECTORY> parameter after the plugin name on the command line"));
        }
        let mut real = Vec::new();
        for d in &dirs {
            let r = std::fs::canonicalize(d).map_err(|e| p.err(format!("realpath: {d}: {e}")))?;
            real.push(r.to_string_lossy().into_owned());
        }
        let prog = match prog {
            Some(prog) => prog,
            None => find_program(&["xorriso", "genisoimage", "mkisofs"]).ok_or_else(|| {
                p.err("none of xorriso, genisoimage or mkisofs is installed (or use prog=)")
            })?,
        };
        let mut script = quote(&prog);
        if prog.rsplit('/').next() == Some("xorriso") {
            script.push_str(" -as mkisofs");
        }
        script.push_str(" -quiet");
        if let Some(params) = &params {
            script.push(' ');
            script.push_str(params);
        }
        for d in &real {
            script.push(' ');
            script.push_str(&quote(d));
        }
        let path = tmpdir();
        let file = hidden_file(&path, "iso")
            .map_err(|e| p.err(format!("mkstemp: {}: {e}", path.display())))?;
        run_shell("iso", &script, &[], Some(&file)).map_err(|e| p.err(e))?;
        Ok(Arc::new(MadeImage::new(file, path)))
    },
};

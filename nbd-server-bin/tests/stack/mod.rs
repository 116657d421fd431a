//! Helpers for the plugin and filter tests: run our nbdkit (or Debian's)
//! with `-U - --run`, read a whole disk with nbdcopy, a map with nbdinfo.
#![allow(dead_code)]

use std::process::{Command, Output, Stdio};

use crate::common::{require, BIN};

/// Debian's nbdkit, the reference.
pub const DEBIAN_NBDKIT: &str = "/usr/bin/nbdkit";

/// Runs `bin -U - ARGS --run CMD`; returns its output.
pub fn run_with(bin: &str, args: &[&str], cmd: &str) -> Output {
    Command::new(bin)
        .arg("-U")
        .arg("-")
        .arg("--run")
        .arg(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nbdkit")
}

/// `bin` with ARGS and `--run CMD`: the command's stdout, or when it
/// fails, its stdout and stderr as the error.
pub fn run_output(bin: &str, args: &[&str], cmd: &str) -> Result<String, String> {
    let o = run_with(bin, args, cmd);
    if !o.status.success() {
        return Err(format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ));
    }
    Ok(String::from_utf8_lossy(&o.stdout).into_owned())
}

/// Our nbdkit with ARGS; the --run command must succeed; its stdout.
pub fn run(args: &[&str], cmd: &str) -> Vec<u8> {
    let o = run_with(BIN, args, cmd);
    assert!(o.status.success(), "nbdkit {args:?} --run {cmd:?}: {o:?}");
    o.stdout
}

/// The whole disk, through nbdcopy.
pub fn read_all_with(bin: &str, args: &[&str]) -> Vec<u8> {
    require("nbdcopy", "libnbd-bin");
    let o = run_with(bin, args, "nbdcopy \"$uri\" -");
    assert!(o.status.success(), "nbdcopy from {bin} {args:?}: {o:?}");
    o.stdout
}

pub fn read_all(args: &[&str]) -> Vec<u8> {
    read_all_with(BIN, args)
}

/// `nbdinfo --map` as (offset, length, type).
pub fn map_with(bin: &str, args: &[&str]) -> Vec<(u64, u64, u32)> {
    require("nbdinfo", "libnbd-bin");
    let o = run_with(bin, args, "nbdinfo --map \"$uri\"");
    assert!(o.status.success(), "nbdinfo --map {args:?}: {o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].parse().unwrap(),
                f[1].parse().unwrap(),
                f[2].parse().unwrap(),
            )
        })
        .collect()
}

pub fn map(args: &[&str]) -> Vec<(u64, u64, u32)> {
    map_with(BIN, args)
}

/// The first word of a field of `nbdinfo` (e.g. "export-size").
pub fn info(args: &[&str], field: &str) -> String {
    require("nbdinfo", "libnbd-bin");
    let out = run(args, "nbdinfo \"$uri\"");
    let s = String::from_utf8(out).unwrap();
    s.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}: "))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in nbdinfo output:\n{s}"))
}

/// A stack whose parameters are fine but which cannot be opened on the
/// disk below (a range past its end, a partition that is not there): as
/// in nbdkit, filters see the disk only when a client connects, so the
/// server starts and refuses the client. Checked against our nbdkit, which
/// must log an `nbdkit: error:` line containing `needle`, and against
/// Debian's, which must refuse the client too.
pub fn refused_on_open(args: &[&str], needle: &str) {
    require("nbdinfo", "libnbd-bin");
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(bin, args, "nbdinfo \"$uri\"");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            !o.status.success(),
            "{bin} {args:?} served the client: {o:?}"
        );
        assert!(
            err.contains("nbd_opt_go: server replied with error"),
            "{bin} {args:?}: {err}"
        );
        if bin == BIN {
            assert!(
                err.lines()
                    .any(|l| l.starts_with("nbdkit: error: ") && l.contains(needle)),
                "{args:?}: {err} (wanted {needle})"
            );
        }
    }
}

/// Runs our nbdkit with bad ARGS: exit 1 and one `nbdkit: error:` line
/// containing `needle`.
pub fn bad(args: &[&str], needle: &str) {
    let o = Command::new(BIN)
        .args(["-U", "-", "--run", "true"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {err}");
    let lines: Vec<&str> = err.lines().collect();
    assert_eq!(lines.len(), 1, "{args:?}: {err}");
    assert!(lines[0].starts_with("nbdkit: error: "), "{err}");
    assert!(
        lines[0].contains(needle),
        "{args:?}: {err} (wanted {needle})"
    );
}

/// The pattern plugin's bytes, computed here independently.
pub fn pattern_bytes(offset: u64, len: usize) -> Vec<u8> {
    (0..len as u64)
        .map(|i| {
            let p = offset + i;
            ((p & !7) >> (8 * (7 - (p & 7)))) as u8
        })
        .collect()
}

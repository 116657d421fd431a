//! Our own cc plugin (nbdkit-cc-plugin(3)): the C source in tests/cc/ is
//! compiled at start-up with `CC`, `CFLAGS` and `EXTRA_CFLAGS` and loaded
//! through our plugin interface; it serves what Debian's cc plugin
//! serves from the same source (bytes, size, flags, the errno of a
//! failure), and its parameters reach the compiled plugin.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::*;
use stack::DEBIAN_NBDKIT;

fn source() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/cc/disk.c")
}

fn run(bin: &str, args: &[&str], cmd: &str) -> Output {
    Command::new(bin)
        .args(["-U", "-", "--run", cmd])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nbdkit")
}

/// What a client sees: size, flags, bytes (hashed), and the errno of a
/// write the plugin refuses.
const CLIENT: &str = "set -e; T='timeout 60'; $T nbdinfo --size \"$uri\"; \
    $T nbdinfo \"$uri\" | grep -E '^[[:space:]]+(is_|can_)' | sort; \
    $T nbdcopy \"$uri\" - | md5sum; \
    $T /usr/bin/python3 -m nbd -u \"$uri\" -c '
h.pwrite(b\"xy\", 0)
h.zero(512, 4096)
try:
    h.pwrite(b\"z\", 0)
except nbd.Error as e:
    print(\"single byte:\", e.errno)
print(h.pread(4, 0), h.pread(2, 4096))
'";

fn compiler() -> bool {
    require("nbdinfo", "libnbd-bin");
    ["/usr/bin/cc", "/usr/bin/gcc"]
        .iter()
        .any(|c| Path::new(c).exists())
}

/// Both servers, the same source and parameters, the same answers.
#[test]
fn cc_serves_as_debian() {
    if !compiler() {
        return;
    }
    let src = source();
    let src = src.to_str().unwrap();
    for extra in [
        vec![],
        vec!["size=64K", "EXTRA_CFLAGS=-DFILL=0x41"],
        vec!["CFLAGS=-O0 -fPIC -shared", "size=2M"],
    ] {
        let mut args = vec!["cc", src];
        args.extend(&extra);
        let ours = run(BIN, &args, CLIENT);
        let o = String::from_utf8_lossy(&ours.stdout);
        assert!(
            ours.status.success(),
            "{o}{}",
            String::from_utf8_lossy(&ours.stderr)
        );
        assert!(o.contains("single byte: ENOSPC"), "{o}");
        if Path::new(DEBIAN_NBDKIT).exists() {
            let theirs = run(DEBIAN_NBDKIT, &args, CLIENT);
            assert_eq!(o, String::from_utf8_lossy(&theirs.stdout), "{extra:?}");
        }
        if extra.iter().any(|a| a.contains("FILL")) {
            assert!(o.contains("b'xyAA'"), "EXTRA_CFLAGS not used: {o}");
        }
    }
}

/// The built-in plugin ran, not Debian's .so: --dump-plugin names our
/// binary and our compiler defaults, and the compile command (in the
/// debug log) uses our headers.
#[test]
fn cc_is_built_in_and_uses_our_headers() {
    if !compiler() {
        return;
    }
    let o = Command::new(BIN)
        .args(["cc", "--dump-plugin"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    let path = text.lines().find_map(|l| l.strip_prefix("path=")).unwrap();
    assert_eq!(
        std::fs::canonicalize(path).unwrap(),
        std::fs::canonicalize(BIN).unwrap(),
        "{text}"
    );
    assert!(text.contains("\nCC=cc\n"), "{text}");
    let src = source();
    let o = run(
        BIN,
        &["-v", "cc", src.to_str().unwrap()],
        "nbdinfo --size \"$uri\"",
    );
    let log = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{log}");
    let ours = Path::new(env!("CARGO_MANIFEST_DIR")).join("../include");
    assert!(
        log.contains(&format!("-I'{}'", ours.display())),
        "our include directory not used: {log}"
    );
}

/// The source from standard input; a compiler that fails stops the
/// server (under both servers); unknown parameters reach the plugin's
/// config, which refuses them.
#[test]
fn cc_inline_source_and_failures() {
    if !compiler() {
        return;
    }
    let mut child = Command::new(BIN)
        .args([
            "-U",
            "-",
            "--run",
            "nbdinfo --size \"$uri\"",
            "cc",
            "-",
            "size=3K",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    let text = std::fs::read(source()).unwrap();
    child.stdin.take().unwrap().write_all(&text).unwrap();
    let o = child.wait_with_output().unwrap();
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "3072");

    let src = source();
    let src = src.to_str().unwrap();
    for bin in [BIN, DEBIAN_NBDKIT] {
        if !Path::new(bin).exists() {
            continue;
        }
        let o = run(bin, &["cc", src, "CC=false"], "true");
        assert!(!o.status.success(), "{bin}: CC=false served");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("false: command failed with exit code 1"),
            "{bin}: {err}"
        );
        let o = run(bin, &["cc", "nonexistent.c"], "true");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.ends_with("realpath: nonexistent.c: No such file or directory\n"),
            "{bin}: {err}"
        );
        let o = run(bin, &["cc", src, "colour=blue"], "true");
        assert!(!o.status.success(), "{bin}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("unknown parameter 'colour'"), "{bin}: {err}");
    }
}

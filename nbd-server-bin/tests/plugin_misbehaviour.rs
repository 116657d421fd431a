//! A C plugin that misbehaves in one of several ways (chosen by `mode=`)
//! gets the same treatment from our nbdkit as from Debian's: what the
//! client sees (the size, each read, block status, and whether a second
//! connection is served afterwards), the server's error messages, and its
//! exit status. A table is printed.
//!
//! What nbdkit 1.32 does, and so do we:
//! - a crash (SIGSEGV, abort) in a callback ends the server with the
//!   signal; the client's request fails with ENOTCONN (with --run,
//!   Debian's nbdkit exits 128 + N, or 0 when the command ended first;
//!   ours is killed by the signal, which a shell reports as 128 + N);
//! - a read returning neither 0 nor -1 (1, -2) counts as success;
//! - an error without `nbdkit_set_error`, with errno 0 or with errno set
//!   by a plugin that does not declare `errno_is_preserved`, is EIO, and
//!   other connections are still served;
//! - `get_size` returning -1, or another negative number (logged as
//!   invalid), refuses the export;
//! - `extents` adding no extent fails the request with EINVAL, logged.
//!
//! (`callback_errors_carry_nbdkits_errno` in cplugins.rs covers
//! `nbdkit_set_error` and a preserved errno.)

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use common::*;

const DEBIAN_NBDKIT: &str = "/usr/bin/nbdkit";

const C_SOURCE: &str = r#"
#define NBDKIT_API_VERSION 2
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static const char *mode = "";

static int g_config (const char *k, const char *v)
{
  if (strcmp (k, "mode") == 0) { mode = v; return 0; }
  nbdkit_error ("unknown parameter %s", k);
  return -1;
}
static void *g_open (int ro) { return NBDKIT_HANDLE_NOT_NEEDED; }
static int64_t g_get_size (void *h)
{
  if (strcmp (mode, "size-minus-one") == 0) { errno = 0; return -1; }
  if (strcmp (mode, "size-minus-five") == 0) return -5;
  return 1 << 20;
}
static int g_pread (void *h, void *buf, uint32_t n, uint64_t off, uint32_t f)
{
  memset (buf, 'g', n);
  if (off != 4096) return 0;
  if (strcmp (mode, "segv") == 0) { volatile int *p = NULL; *p = 1; }
  if (strcmp (mode, "abort") == 0) abort ();
  if (strcmp (mode, "pread-one") == 0) return 1;
  if (strcmp (mode, "pread-minus-two") == 0) return -2;
  if (strcmp (mode, "error-no-errno") == 0) {
    errno = 0;
    nbdkit_error ("failed without errno");
    return -1;
  }
  if (strcmp (mode, "errno-not-preserved") == 0) { errno = ENOSPC; return -1; }
  return 0;
}
static int g_extents (void *h, uint32_t n, uint64_t off, uint32_t f,
                      struct nbdkit_extents *e)
{
  if (strcmp (mode, "no-extents") == 0) return 0;
  return nbdkit_add_extent (e, off, n, 0);
}

static struct nbdkit_plugin plugin = {
  .name = "misbehaving",
  .config = g_config,
  .magic_config_key = "mode",
  .open = g_open,
  .get_size = g_get_size,
  .pread = g_pread,
  .extents = g_extents,
};
NBDKIT_REGISTER_PLUGIN (plugin)
"#;

/// The client: the size, a good read, the read the plugin spoils, block
/// status, then (unless the server is expected to be gone: after a crash
/// Debian's --run parent keeps the socket, so a connection would hang) a
/// second connection.
const CLIENT: &str = r#"
import errno, sys, nbd

def name(e):
    return errno.errorcode.get(e.errno, str(e.errno)) if isinstance(e.errno, int) else str(e.errno)

def connect():
    h = nbd.NBD()
    h.add_meta_context(nbd.CONTEXT_BASE_ALLOCATION)
    h.connect_uri(sys.argv[1])
    return h

try:
    h = connect()
except nbd.Error as e:
    print("connect:", name(e))
    sys.exit(0)
print("size", h.get_size())
for off in (0, 4096):
    try:
        print("pread", off, bytes(h.pread(4, off)))
    except nbd.Error as e:
        print("pread", off, "error", name(e))
try:
    got = []
    h.block_status(65536, 0, lambda c, o, ent, err: got.append(list(ent)))
    print("block status", got)
except nbd.Error as e:
    print("block status error", name(e))
if sys.argv[2] == "again":
    print("second connection", bytes(connect().pread(4, 0)))
"#;

fn compile(dir: &Path) -> PathBuf {
    require("cc", "gcc");
    assert!(
        Path::new("/usr/include/nbdkit-plugin.h").exists(),
        "nbdkit-plugin.h is missing: apt-get install nbdkit-plugin-dev"
    );
    let src = dir.join("misbehaving.c");
    let so = dir.join("misbehaving.so");
    std::fs::write(&src, C_SOURCE).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "cc: {o:?}");
    so
}

/// The exit status as a shell reports it: the code, or 128 + the signal
/// (Debian's nbdkit exits 128 + N when its server process was killed by
/// signal N; ours is killed by it).
fn shell_status(s: std::process::ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    s.code().unwrap_or_else(|| 128 + s.signal().unwrap_or(0))
}

/// The server's error lines, with the request worker's number (which
/// worker takes a request is up to the threads) left out.
fn error_lines(stderr: &[u8]) -> Vec<String> {
    String::from_utf8_lossy(stderr)
        .lines()
        .filter(|l| l.contains("error:"))
        .map(|l| {
            let mut out = String::new();
            let mut chars = l.chars().peekable();
            while let Some(c) = chars.next() {
                out.push(c);
                if c == '.' && chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                    while chars.peek().is_some_and(|d| d.is_ascii_digit()) {
                        chars.next();
                    }
                    out.push('W');
                }
            }
            out
        })
        .collect()
}

#[test]
fn misbehaving_plugins_get_nbdkits_treatment() {
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "install python3-libnbd"
    );
    let dir = TempDir::new("misbehaving");
    let so = compile(dir.path()).display().to_string();
    let client = dir.path().join("client.py");
    std::fs::write(&client, CLIENT).unwrap();
    // (mode, the server survives it, the status both exit with)
    let cases: &[(&str, bool, i32)] = &[
        ("segv", false, 128 + libc::SIGSEGV),
        ("abort", false, 128 + libc::SIGABRT),
        ("pread-one", true, 0),
        ("pread-minus-two", true, 0),
        ("error-no-errno", true, 0),
        ("errno-not-preserved", true, 0),
        ("size-minus-one", true, 0),
        ("size-minus-five", true, 0),
        ("no-extents", true, 0),
    ];
    let mut table = vec![format!(
        "{:<20} {:>6} {:<22} {:<16} result",
        "mode", "status", "read at 4096", "block status"
    )];
    let mut failures = Vec::new();
    for (mode, survives, status) in cases {
        let run = format!(
            "timeout 60 /usr/bin/python3 '{}' \"$uri\" {}",
            client.display(),
            if *survives { "again" } else { "once" }
        );
        let observe = |bin: &str| {
            let o = Command::new(bin)
                .args(["-U", "-", &so, mode, "--run", &run])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (
                shell_status(o.status),
                String::from_utf8_lossy(&o.stdout).into_owned(),
                error_lines(&o.stderr),
            )
        };
        let theirs = observe(DEBIAN_NBDKIT);
        let ours = observe(BIN);
        let line = |prefix: &str| {
            ours.1
                .lines()
                .find_map(|l| l.strip_prefix(prefix))
                .unwrap_or("-")
                .trim()
                .to_string()
        };
        // Debian's --run parent notices its server's death only if it
        // has already happened when the command ends (it does not wait),
        // so after a crash its status is 128 + N or 0. Ours is 128 + N.
        let same = theirs.1 == ours.1
            && theirs.2 == ours.2
            && ours.0 == *status
            && (theirs.0 == *status || (!*survives && theirs.0 == 0));
        // Where nbdkit keeps serving, so do we.
        let served_again = !*survives
            || ours.1.starts_with("connect:")
            || ours.1.contains("second connection b'gggg'");
        table.push(format!(
            "{:<20} {:>6} {:<22} {:<16} {}",
            mode,
            ours.0,
            line("pread 4096"),
            line("block status").chars().take(16).collect::<String>(),
            if same && served_again {
                "same"
            } else {
                "DIFFERENT"
            }
        ));
        if !same || !served_again {
            failures.push(format!("{mode}:\n Debian's {theirs:?}\n ours     {ours:?}"));
        }
    }
    println!("{}", table.join("\n"));
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

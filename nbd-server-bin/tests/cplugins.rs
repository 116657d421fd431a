//! Plugins written in C against nbdkit-plugin.h, loaded by our nbdkit
//! from their shared objects:
//!
//! - every plugin .so in Debian's plugin directory (nbdkit's package and
//!   the language plugins) serves the same size, flags, extents and bytes
//!   through our nbdkit as through Debian's, with the same arguments, or
//!   the table in the output says why it is left out (an outside service
//!   such as sshd or a BitTorrent swarm);
//! - a plugin this test writes and compiles against Debian's header, in
//!   API versions 1 and 2 and every thread model, counts concurrent calls
//!   under parallel clients, and records the order of its life's
//!   callbacks and the errno its errors reach the client with;
//! - every `nbdkit_*` symbol a Debian plugin or filter .so needs is
//!   exported by our binary.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::Command;

use common::*;
use stack::*;

const DEBIAN_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins";
const DEBIAN_FILTERS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/filters";

fn plugin_so(name: &str) -> String {
    format!("{DEBIAN_PLUGINS}/nbdkit-{name}-plugin.so")
}

fn have(program: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| Path::new(d).join(program).exists())
}

/// What a client sees of one export: size, flags, extents, the first MiB
/// (written to `first`) and a hash of everything.
fn observe(bin: &str, args: &[&str], first: &Path, contents: bool) -> Result<String, String> {
    // Bytes are read without block status: Debian's split plugin crashes
    // on nbdcopy's block status queries (under either server); the
    // extents are compared through nbdinfo --map. Every client has a
    // time limit, so that a crashed server fails the test, not hangs it.
    let cmd = format!(
        "set -e; T='timeout 60'; $T nbdinfo --size \"$uri\"; \
         $T nbdinfo \"$uri\" | grep -E '^[[:space:]]+(is_|can_)' | sort; \
         $T nbdinfo --map \"$uri\" | head -50; \
         {}",
        if contents {
            format!(
                "$T nbdcopy --no-extents \"$uri\" - | head -c 1048576 > '{}'; \
                 $T nbdcopy --no-extents \"$uri\" - | md5sum",
                first.display()
            )
        } else {
            String::new()
        }
    );
    run_output(bin, args, &cmd)
}

/// (a) Debian's plugins, through both servers.
#[test]
fn debian_plugins_serve_the_same_through_our_nbdkit() {
    require("nbdinfo", "libnbd-bin");
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("cplugins");
    let d = dir.path();
    let f1 = d.join("f1.img");
    let f2 = d.join("f2.img");
    std::fs::write(&f1, pattern(3 << 20, 1)).unwrap();
    std::fs::write(&f2, pattern(1 << 20, 2)).unwrap();
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello, world\n").unwrap();
    std::fs::write(tree.join("data.bin"), pattern(100_000, 3)).unwrap();
    let script = d.join("plugin.sh");
    std::fs::write(
        &script,
        "#!/bin/bash\ncase \"$1\" in\n  get_size) echo 1M ;;\n  \
         pread) head -c $3 /dev/zero | tr '\\0' 'x' ;;\n  *) exit 2 ;;\nesac\n",
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let csrc = d.join("plugin.c");
    // The cc plugin takes API version 2 plugins only.
    let api2 = format!(
        "#define NBDKIT_API_VERSION 2\n{}",
        C_SOURCE.replace("@THREAD_MODEL@", "PARALLEL")
    );
    std::fs::write(&csrc, api2).unwrap();
    let ondemand = d.join("ondemand");
    std::fs::create_dir(&ondemand).unwrap();
    let s = |p: &Path| p.display().to_string();
    // The nbd plugin's server: our nbdkit on a Unix socket in a tempdir.
    let upstream = Server::start(&["pattern", "3M"]);
    let language = |script: &str| {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("tests/language_plugins")
            .join(script)
            .display()
            .to_string()
    };

    // Every plugin .so of Debian's directory has a case below or a
    // reason here.
    let skipped: &[(&str, &str)] = &[
        (
            "ssh",
            "needs an sshd on a TCP port: compared in tests/plugin_ssh.rs \
             (debians_ssh_plugin_so_serves_the_same_through_our_nbdkit)",
        ),
        ("torrent", "needs a BitTorrent tracker and a seeding peer"),
        ("cdi", "needs podman and a container registry"),
        (
            "ruby",
            "serves only under -s under Debian's nbdkit: tests/language_plugins.rs",
        ),
    ];

    // (plugin, arguments, compare contents, programs it needs).
    // tmpdisk and linuxdisk make file systems with random UUIDs, and iso
    // stamps its image with the time it was made: their size, flags and
    // extents are compared, not their bytes.
    let cases: Vec<(&str, Vec<String>, bool, &[&str])> = vec![
        ("null", vec!["size=1M".into()], true, &[]),
        ("zero", vec![], true, &[]),
        ("full", vec!["size=1M".into()], true, &[]),
        ("memory", vec!["size=1M".into()], true, &[]),
        ("pattern", vec!["size=3M".into()], true, &[]),
        ("random", vec!["size=2M".into(), "seed=7".into()], true, &[]),
        (
            "sparse-random",
            vec!["size=16M".into(), "seed=7".into()],
            true,
            &[],
        ),
        (
            "data",
            vec![
                "data=1 2 3 @4096 4 5 @^512 \"hello\"".into(),
                "size=8K".into(),
            ],
            true,
            &[],
        ),
        ("file", vec![s(&f1)], true, &[]),
        ("info", vec!["mode=exportname".into()], true, &[]),
        ("split", vec![s(&f1), s(&f2)], true, &[]),
        ("partitioning", vec![s(&f1), s(&f2)], true, &[]),
        ("floppy", vec![s(&tree)], true, &[]),
        ("iso", vec![s(&tree)], false, &["xorriso"]),
        ("linuxdisk", vec![s(&tree)], false, &["mke2fs"]),
        ("tmpdisk", vec!["size=1M".into()], false, &["mkfs"]),
        (
            "ondemand",
            vec![format!("dir={}", s(&ondemand)), "size=1M".into()],
            true,
            &["mkfs"],
        ),
        (
            "eval",
            vec![
                "get_size=echo 1M".into(),
                "pread=head -c $3 /dev/zero | tr '\\0' y".into(),
            ],
            true,
            &[],
        ),
        ("sh", vec![s(&script)], true, &[]),
        ("cc", vec![s(&csrc), "size=1M".into()], true, &["cc"]),
        ("example1", vec![], true, &[]),
        ("example2", vec![format!("file={}", s(&f2))], true, &[]),
        ("example3", vec!["size=2M".into()], true, &[]),
        ("curl", vec![format!("file://{}", s(&f1))], true, &[]),
        (
            "nbd",
            vec![format!("socket={}", s(&upstream.sock))],
            true,
            &[],
        ),
        // The scripts of tests/language_plugins.rs.
        ("python", vec![language("disk.py")], true, &[]),
        ("perl", vec![language("disk.pl")], true, &[]),
        ("lua", vec![language("disk.lua")], true, &[]),
        ("tcl", vec![language("disk.tcl")], true, &[]),
    ];
    let mut uncovered = Vec::new();
    for entry in std::fs::read_dir(DEBIAN_PLUGINS).unwrap() {
        let file = entry.unwrap().file_name().to_string_lossy().into_owned();
        let Some(name) = file
            .strip_prefix("nbdkit-")
            .and_then(|f| f.strip_suffix("-plugin.so"))
        else {
            // Scripts (example4, S3) are not shared objects.
            continue;
        };
        if !cases.iter().any(|c| c.0 == name) && !skipped.iter().any(|c| c.0 == name) {
            uncovered.push(name.to_string());
        }
    }
    assert!(
        uncovered.is_empty(),
        "plugins with neither a case nor a reason: {uncovered:?}"
    );

    let mut table = vec![format!(
        "{:<14} {:>10} {:>8} {:<34} result",
        "plugin", "size", "extents", "md5"
    )];
    let mut failures = Vec::new();
    let mut compared = 0;
    for (name, args, contents, needs) in &cases {
        let so = plugin_so(name);
        if !Path::new(&so).exists() {
            table.push(format!("{name:<14} (not in Debian's nbdkit package here)"));
            continue;
        }
        if let Some(missing) = needs.iter().find(|p| !have(p)) {
            table.push(format!("{name:<14} skipped: needs {missing}"));
            continue;
        }
        let mut argv: Vec<&str> = vec![&so];
        argv.extend(args.iter().map(String::as_str));
        let (fa, fb) = (
            d.join(format!("{name}.debian")),
            d.join(format!("{name}.ours")),
        );
        let theirs = observe(DEBIAN_NBDKIT, &argv, &fa, *contents);
        let ours = observe(BIN, &argv, &fb, *contents);
        compared += 1;
        let same = match (&theirs, &ours) {
            (Ok(a), Ok(b)) => {
                a == b && (!contents || std::fs::read(&fa).unwrap() == std::fs::read(&fb).unwrap())
            }
            _ => false,
        };
        let summary = ours.as_ref().map_or_else(
            |e| format!("failed: {}", e.lines().next().unwrap_or("")),
            |o| {
                let lines: Vec<&str> = o.lines().collect();
                // nbdinfo --map lines: offset, length, type, description.
                let extents = lines
                    .iter()
                    .filter(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.len() >= 4 && w[..3].iter().all(|x| x.parse::<u64>().is_ok())
                    })
                    .count();
                let md5 = lines
                    .last()
                    .filter(|_| *contents)
                    .map(|l| l.split_whitespace().next().unwrap_or(""))
                    .unwrap_or("(not compared)");
                format!(
                    "{:>10} {:>8} {:<34}",
                    lines.first().copied().unwrap_or(""),
                    extents,
                    md5
                )
            },
        );
        table.push(format!(
            "{name:<14} {summary} {}",
            if same { "same" } else { "DIFFERENT" }
        ));
        if !same {
            failures.push(format!("{name}: Debian's {theirs:?}\nours {ours:?}"));
        }
    }
    for (name, why) in skipped {
        table.push(format!("{name:<14} skipped: {why}"));
    }
    println!("{}", table.join("\n"));
    assert!(
        compared >= 15,
        "too few plugins compared:\n{}",
        table.join("\n")
    );
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}

/// The plugin the next tests compile: a 4 MiB disk whose bytes are a
/// function of the offset. Every data callback sleeps a little and counts
/// how many calls are in the plugin at once, overall and per handle, and
/// how many handles are open at once; `unload` writes the maxima and the
/// order of the life-cycle callbacks to the file given as `log=`. A write
/// to offset 0 fails with ENOSPC through nbdkit_set_error, a write to
/// offset 4096 with errno alone (EPERM; `errno_is_preserved`), and a
/// write elsewhere with neither (EIO).
const C_SOURCE: &str = r#"
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_@THREAD_MODEL@

static int64_t size = 4 << 20;
static const char *log_path;
static char events[1024];
static int in_plugin, max_in_plugin, open_handles, max_open_handles;
static int max_in_handle;

struct handle { int in_handle; char export[64]; };

static void event (const char *e) { strcat (events, e); strcat (events, " "); }

static void track (int *counter, int *max, int d)
{
  int v = __atomic_add_fetch (counter, d, __ATOMIC_SEQ_CST);
  int m = __atomic_load_n (max, __ATOMIC_SEQ_CST);
  while (v > m && !__atomic_compare_exchange_n (max, &m, v, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
    ;
}

static void enter (struct handle *h)
{
  struct timespec ts = { 0, 3000000 };
  track (&in_plugin, &max_in_plugin, 1);
  track (&h->in_handle, &max_in_handle, 1);
  nanosleep (&ts, NULL);
}
static void leave (struct handle *h)
{
  __atomic_sub_fetch (&h->in_handle, 1, __ATOMIC_SEQ_CST);
  __atomic_sub_fetch (&in_plugin, 1, __ATOMIC_SEQ_CST);
}

static void t_load (void) { event ("load"); }
static void t_unload (void)
{
  FILE *f;
  event ("unload");
  if (log_path && (f = fopen (log_path, "w")) != NULL) {
    fprintf (f, "max_in_plugin=%d\nmax_in_handle=%d\nmax_open_handles=%d\nevents=%s\n",
             max_in_plugin, max_in_handle, max_open_handles, events);
    fclose (f);
  }
}
static int t_config (const char *key, const char *value)
{
  if (strcmp (key, "size") == 0) {
    size = nbdkit_parse_size (value);
    return size == -1 ? -1 : 0;
  }
  if (strcmp (key, "log") == 0) { log_path = value; return 0; }
  nbdkit_error ("unknown parameter %s", key);
  return -1;
}
static int t_config_complete (void) { event ("config_complete"); return 0; }
static int t_get_ready (void) { event ("get_ready"); return 0; }
static int t_after_fork (void) { event ("after_fork"); return 0; }
static void t_cleanup (void) { event ("cleanup"); }

static void *t_open (int readonly)
{
  struct handle *h = calloc (1, sizeof *h);
  snprintf (h->export, sizeof h->export, "%s", nbdkit_export_name ());
  track (&open_handles, &max_open_handles, 1);
  return h;
}
static void t_close (void *hv)
{
  __atomic_sub_fetch (&open_handles, 1, __ATOMIC_SEQ_CST);
  free (hv);
}
static int64_t t_get_size (void *h) { return size; }
static int t_can_write (void *h) { return 1; }
static int t_can_multi_conn (void *h) { return 1; }

static void fill (char *buf, uint32_t count, uint64_t offset)
{
  for (uint32_t i = 0; i < count; i++)
    buf[i] = (char) ((offset + i) * 7 / 4096 + 'A');
}

#if NBDKIT_API_VERSION == 2
static int t_pread (void *hv, void *buf, uint32_t count, uint64_t offset, uint32_t flags)
#else
static int t_pread (void *hv, void *buf, uint32_t count, uint64_t offset)
#endif
{
  struct handle *h = hv;
  enter (h);
  fill (buf, count, offset);
  leave (h);
  return 0;
}

#if NBDKIT_API_VERSION == 2
static int t_pwrite (void *hv, const void *buf, uint32_t count, uint64_t offset, uint32_t flags)
#else
static int t_pwrite (void *hv, const void *buf, uint32_t count, uint64_t offset)
#endif
{
  if (offset == 0) {
    nbdkit_error ("no space at %d", 0);
    nbdkit_set_error (ENOSPC);
    return -1;
  }
  if (offset == 4096) {
    errno = EPERM;
    return -1;
  }
  errno = 0;
  return -1;
}

static struct nbdkit_plugin plugin = {
  .name = "counter",
  .version = "1.0",
  .load = t_load,
  .unload = t_unload,
  .config = t_config,
  .config_complete = t_config_complete,
  .magic_config_key = "size",
  .get_ready = t_get_ready,
  .after_fork = t_after_fork,
  .cleanup = t_cleanup,
  .open = t_open,
  .close = t_close,
  .get_size = t_get_size,
  .can_write = t_can_write,
  .can_multi_conn = t_can_multi_conn,
  .pread = t_pread,
  .pwrite = t_pwrite,
  .errno_is_preserved = 1,
};
NBDKIT_REGISTER_PLUGIN (plugin)
"#;

/// Compiles the counting plugin with `model` and `api`.
fn compile(dir: &Path, model: &str, api: u32) -> PathBuf {
    require("cc", "gcc");
    assert!(
        Path::new("/usr/include/nbdkit-plugin.h").exists(),
        "nbdkit-plugin.h is missing: apt-get install nbdkit-plugin-dev"
    );
    let src = dir.join(format!("counter-{model}-{api}.c"));
    let so = dir.join(format!("counter-{model}-{api}.so"));
    std::fs::write(&src, C_SOURCE.replace("@THREAD_MODEL@", model)).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-O1"])
        .arg(format!("-DNBDKIT_API_VERSION={api}"))
        .arg("-o")
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "cc: {o:?}");
    so
}

/// Runs `bin` on the counting plugin with four parallel nbdcopy clients,
/// each with many requests in flight, and returns the plugin's log.
fn count_concurrency(bin: &str, so: &Path, log: &Path) -> Vec<(String, String)> {
    let _ = std::fs::remove_file(log);
    let so_s = so.display().to_string();
    let log_arg = format!("log={}", log.display());
    let o = run_with(
        bin,
        &[&so_s, "16M", &log_arg],
        // One connection per nbdcopy: with SERIALIZE_CONNECTIONS a second
        // connection of the same nbdcopy would wait for the first forever.
        "set -e; for i in 1 2 3 4; do timeout 60 nbdcopy --connections=1 --requests=8 \"$uri\" null: & done; wait",
    );
    assert!(o.status.success(), "{bin} {so_s}: {o:?}");
    let text = std::fs::read_to_string(log)
        .unwrap_or_else(|e| panic!("{bin}: the plugin's unload wrote no log ({e}): {o:?}"));
    text.lines()
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim().to_string()))
        .collect()
}

fn get<'a>(log: &'a [(String, String)], key: &str) -> &'a str {
    &log.iter().find(|(k, _)| k == key).unwrap().1
}

/// (b) The four thread models, in both API versions, under parallel
/// clients: what the plugin saw at once, through our nbdkit and through
/// Debian's.
#[test]
fn thread_models_are_enforced_for_a_plugin_built_against_the_header() {
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("cplugin-models");
    let mut table = vec![format!(
        "{:<24} {:>3} {:<8} {:>9} {:>9} {:>8}",
        "thread model", "api", "server", "in plugin", "in handle", "handles"
    )];
    for model in [
        "SERIALIZE_CONNECTIONS",
        "SERIALIZE_ALL_REQUESTS",
        "SERIALIZE_REQUESTS",
        "PARALLEL",
    ] {
        for api in [1, 2] {
            let so = compile(dir.path(), model, api);
            for (server, bin) in [("ours", BIN), ("Debian's", DEBIAN_NBDKIT)] {
                let log = count_concurrency(bin, &so, &dir.path().join("log"));
                let n = |k: &str| get(&log, k).parse::<u32>().unwrap();
                let (plugin, handle, handles) = (
                    n("max_in_plugin"),
                    n("max_in_handle"),
                    n("max_open_handles"),
                );
                table.push(format!(
                    "{model:<24} {api:>3} {server:<8} {plugin:>9} {handle:>9} {handles:>8}"
                ));
                let what = format!("{model} API {api} via {server}: {log:?}");
                match model {
                    "SERIALIZE_CONNECTIONS" => {
                        assert_eq!(handles, 1, "{what}");
                        assert_eq!(plugin, 1, "{what}");
                    }
                    "SERIALIZE_ALL_REQUESTS" => {
                        assert_eq!(plugin, 1, "{what}");
                        assert!(handles > 1, "{what}");
                    }
                    "SERIALIZE_REQUESTS" => {
                        assert_eq!(handle, 1, "{what}");
                        assert!(plugin > 1, "{what}");
                    }
                    _ => assert!(handle > 1 && plugin > 1, "{what}"),
                }
                // The life cycle, in nbdkit's order, ending at exit.
                assert_eq!(
                    get(&log, "events"),
                    "load config_complete get_ready after_fork cleanup unload",
                    "{what}"
                );
            }
        }
    }
    println!("{}", table.join("\n"));
}

/// A failed callback's errno reaches the client as nbdkit chooses it:
/// nbdkit_set_error's, else errno when the plugin says errno is
/// preserved, else EIO. Both API versions, both servers.
#[test]
fn callback_errors_carry_nbdkits_errno() {
    assert!(
        Path::new("/usr/bin/python3").exists(),
        "install python3-libnbd"
    );
    let dir = TempDir::new("cplugin-errors");
    let check = "import errno\n\
                 def w(off):\n\
                 \x20   try:\n\
                 \x20       h.pwrite(b'x' * 512, off)\n\
                 \x20   except nbd.Error as e:\n\
                 \x20       return errno.errorcode.get(e.errnum, str(e.errnum))\n\
                 \x20   return 'ok'\n\
                 print(w(0), w(4096), w(8192))\n\
                 print(h.pread(4, 4096))\n";
    for api in [1, 2] {
        let so = compile(dir.path(), "PARALLEL", api);
        let so_s = so.display().to_string();
        let mut outs = Vec::new();
        for bin in [BIN, DEBIAN_NBDKIT] {
            let script = dir.path().join("check.py");
            std::fs::write(&script, check).unwrap();
            let o = run_with(
                bin,
                &[&so_s],
                &format!(
                    "timeout 60 /usr/bin/python3 -m nbd -u \"$uri\" -c 'exec(open(\"{}\").read())'",
                    script.display()
                ),
            );
            assert!(o.status.success(), "{bin} API {api}: {o:?}");
            let out = String::from_utf8_lossy(&o.stdout).into_owned();
            assert!(
                out.starts_with("ENOSPC EPERM EIO\n"),
                "{bin} API {api}: {out}"
            );
            // The plugin's nbdkit_error message is logged.
            assert!(
                String::from_utf8_lossy(&o.stderr).contains("no space at 0"),
                "{bin} API {api}: {o:?}"
            );
            outs.push(out);
        }
        assert_eq!(outs[0], outs[1], "API {api}");
    }
}

/// The `nbdkit_*` symbols a shared object needs from the server.
fn undefined_nbdkit_symbols(so: &Path) -> Vec<String> {
    let o = Command::new("nm")
        .args(["-D", "--undefined-only"])
        .arg(so)
        .output()
        .unwrap();
    assert!(o.status.success(), "nm {}: {o:?}", so.display());
    String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter_map(|l| l.split_whitespace().last())
        .filter(|s| s.starts_with("nbdkit_"))
        .map(str::to_string)
        .collect()
}

/// (c) Our binary exports every nbdkit_* function that any plugin or
/// filter of Debian's calls.
#[test]
fn our_binary_exports_every_function_debians_plugins_and_filters_call() {
    require("nm", "binutils");
    let o = Command::new("nm")
        .args(["-D", "--defined-only"])
        .arg(BIN)
        .output()
        .unwrap();
    assert!(o.status.success(), "nm {BIN}: {o:?}");
    let ours: std::collections::BTreeSet<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .filter(|l| l.split_whitespace().nth(1) == Some("T"))
        .filter_map(|l| l.split_whitespace().last())
        .map(str::to_string)
        .collect();
    let mut needed = std::collections::BTreeMap::<String, Vec<String>>::new();
    let mut files = 0;
    for dir in [DEBIAN_PLUGINS, DEBIAN_FILTERS] {
        for e in std::fs::read_dir(dir).unwrap() {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "so") {
                files += 1;
                for s in undefined_nbdkit_symbols(&p) {
                    let who = p.file_name().unwrap().to_string_lossy().into_owned();
                    needed.entry(s).or_default().push(who);
                }
            }
        }
    }
    assert!(files > 40, "only {files} plugins and filters found");
    let missing: Vec<String> = needed
        .iter()
        .filter(|(s, _)| !ours.contains(*s))
        .map(|(s, who)| format!("{s} (needed by {})", who.join(", ")))
        .collect();
    println!(
        "{} nbdkit_* symbols needed by {files} Debian plugins and filters; {} exported by ours",
        needed.len(),
        ours.iter().filter(|s| s.starts_with("nbdkit_")).count()
    );
    assert!(
        missing.is_empty(),
        "missing from {BIN}:\n{}",
        missing.join("\n")
    );
    // And everything the plugin header declares.
    let header = std::fs::read_to_string("/usr/include/nbdkit-common.h").unwrap()
        + &std::fs::read_to_string("/usr/include/nbdkit-plugin.h").unwrap()
        + &std::fs::read_to_string("/usr/include/nbdkit-filter.h").unwrap();
    let declared: Vec<&str> = header
        .split("NBDKIT_EXTERN_DECL")
        .skip(1)
        .filter_map(|d| d.split(',').nth(1))
        .map(str::trim)
        .filter(|n| n.starts_with("nbdkit_"))
        .collect();
    assert!(declared.len() > 40, "{declared:?}");
    let undeclared: Vec<&&str> = declared.iter().filter(|n| !ours.contains(**n)).collect();
    assert!(
        undeclared.is_empty(),
        "declared by the headers, not exported: {undeclared:?}"
    );
}

/// A plugin built against an older header: its struct ends before
/// `magic_config_key`, so the callbacks after it (can_multi_conn,
/// export_description …) do not exist even though this test's compiler
/// laid them out. Both servers must ignore them.
#[test]
fn a_shorter_struct_means_the_trailing_callbacks_are_absent() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("cplugin-short");
    let src = dir.path().join("short.c");
    let so = dir.path().join("short.so");
    std::fs::write(
        &src,
        r#"
#define NBDKIT_API_VERSION 2
#include <stddef.h>
#include <string.h>
#include <nbdkit-plugin.h>
static void *t_open (int readonly) { return NBDKIT_HANDLE_NOT_NEEDED; }
static int64_t t_get_size (void *h) { return 1 << 20; }
static int t_pread (void *h, void *buf, uint32_t n, uint64_t off, uint32_t flags)
{ memset (buf, 's', n); return 0; }
static int t_pwrite (void *h, const void *buf, uint32_t n, uint64_t off, uint32_t flags)
{ return 0; }
static int t_yes (void *h) { return 1; }
static const char *t_description (void *h) { return "beyond the struct"; }
static struct nbdkit_plugin plugin = {
  .name = "short", .open = t_open, .get_size = t_get_size,
  .pread = t_pread, .pwrite = t_pwrite,
  /* Past the end of the declared struct: */
  .magic_config_key = "size", .can_multi_conn = t_yes, .can_cache = t_yes,
  .export_description = t_description,
};
struct nbdkit_plugin *plugin_init (void)
{
  plugin._struct_size = offsetof (struct nbdkit_plugin, magic_config_key);
  plugin._api_version = 2;
  plugin._thread_model = NBDKIT_THREAD_MODEL_PARALLEL;
  return &plugin;
}
"#,
    )
    .unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "cc: {o:?}");
    let so_s = so.display().to_string();
    let mut outs = Vec::new();
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(
            bin,
            &[&so_s],
            "timeout 60 nbdinfo \"$uri\" | grep -E 'description|can_multi_conn|can_cache|is_read_only' | sort",
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        assert!(!out.contains("beyond the struct"), "{bin}: {out}");
        assert!(out.contains("can_multi_conn: false"), "{bin}: {out}");
        assert!(out.contains("is_read_only: false"), "{bin}: {out}");
        // And no magic key: a bare parameter is refused.
        let o = run_with(bin, &[&so_s, "1M"], "true");
        assert_eq!(o.status.code(), Some(1), "{bin}: {o:?}");
        outs.push(out);
    }
    assert_eq!(outs[0], outs[1]);
}

/// `-D NAME.FLAG=N` sets the loaded plugin's global `NAME_debug_FLAG`
/// (dots in FLAG as underscores), and warns about a flag it lacks.
#[test]
fn debug_flags_set_the_plugins_globals() {
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("cplugin-debug");
    let src = dir.path().join("flagged.c");
    let so = dir.path().join("flagged.so");
    std::fs::write(
        &src,
        r#"
#include <string.h>
#include <nbdkit-plugin.h>
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
int flagged_debug_fill_byte = 'a';
static void *t_open (int readonly) { return NBDKIT_HANDLE_NOT_NEEDED; }
static int64_t t_get_size (void *h) { return 4; }
static int t_pread (void *h, void *buf, uint32_t n, uint64_t off)
{ memset (buf, flagged_debug_fill_byte, n); return 0; }
static struct nbdkit_plugin plugin = {
  .name = "flagged", .open = t_open, .get_size = t_get_size, .pread = t_pread,
};
NBDKIT_REGISTER_PLUGIN (plugin)
"#,
    )
    .unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "cc: {o:?}");
    let so_s = so.display().to_string();
    for bin in [BIN, DEBIAN_NBDKIT] {
        let read = |flags: &[&str]| {
            let mut args: Vec<&str> = flags.to_vec();
            args.push(&so_s);
            let o = run_with(bin, &args, "timeout 60 nbdcopy \"$uri\" -");
            assert!(o.status.success(), "{bin} {args:?}: {o:?}");
            (o.stdout, String::from_utf8_lossy(&o.stderr).into_owned())
        };
        assert_eq!(read(&[]).0, b"aaaa", "{bin}");
        assert_eq!(read(&["-D", "flagged.fill.byte=0x62"]).0, b"bbbb", "{bin}");
        assert_eq!(read(&["-D", "flagged.fill_byte=99"]).0, b"cccc", "{bin}");
        let (data, err) = read(&["-D", "flagged.nosuch=1"]);
        assert_eq!(data, b"aaaa", "{bin}");
        assert!(
            err.contains(
                "warning: -D flagged.nosuch: flagged does not contain a global variable called flagged_debug_nosuch"
            ),
            "{bin}: {err}"
        );
    }
}

/// `--dump-plugin` of every plugin .so Debian ships (example4 is a Perl
/// script, not a .so) prints the same lines through both servers:
/// nbdkit's keys in nbdkit's order, then the plugin's own.
#[test]
fn dump_plugin_prints_what_debians_nbdkit_prints() {
    let mut n = 0;
    for e in std::fs::read_dir(DEBIAN_PLUGINS).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(short) = name
            .strip_prefix("nbdkit-")
            .and_then(|x| x.strip_suffix("-plugin.so"))
        else {
            continue;
        };
        let theirs = Command::new(DEBIAN_NBDKIT)
            .args([short, "--dump-plugin"])
            .output()
            .unwrap();
        let ours = Command::new(BIN)
            .arg(&p)
            .arg("--dump-plugin")
            .output()
            .unwrap();
        assert!(theirs.status.success(), "{short}: {theirs:?}");
        assert!(ours.status.success(), "{short}: {ours:?}");
        assert_eq!(
            String::from_utf8_lossy(&ours.stdout),
            String::from_utf8_lossy(&theirs.stdout),
            "{short}"
        );
        n += 1;
    }
    assert!(n >= 20, "only {n} plugins");
}

/// `nbdkit PLUGIN --version` names the plugin's version, and the
/// filters', as Debian's; a plugin or filter that does not exist fails.
#[test]
fn version_after_a_plugin_names_it() {
    let example1 = plugin_so("example1");
    let cases: [(&[&str], bool); 5] = [
        (&["memory", "--version"], true),
        (&["--version", "--filter=cow", "memory"], true),
        (&[&example1, "--version"], true),
        (&["nosuchplugin", "--version"], false),
        (&["--filter=nosuchfilter", "memory", "--version"], false),
    ];
    for (args, ok) in cases {
        let ours = Command::new(BIN).args(args).output().unwrap();
        let theirs = Command::new(DEBIAN_NBDKIT).args(args).output().unwrap();
        assert_eq!(ours.status.success(), ok, "{args:?}: {ours:?}");
        assert_eq!(theirs.status.success(), ok, "{args:?}: {theirs:?}");
        if ok {
            // The first line is each server's own version.
            let tail = |o: &std::process::Output| {
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .skip(1)
                    .map(str::to_string)
                    .collect::<Vec<_>>()
            };
            assert_eq!(tail(&ours), tail(&theirs), "{args:?}");
            assert!(!tail(&ours).is_empty(), "{args:?}");
        } else {
            assert!(ours.stdout.is_empty(), "{args:?}: {ours:?}");
        }
    }
}

/// What a plugin learns about its connection through the server's
/// functions (nbdkit_export_name, nbdkit_is_tls, nbdkit_peer_name and
/// nbdkit_peer_pid/uid) and its lists (nbdkit_add_export,
/// nbdkit_use_default_export, nbdkit_add_extent), the same through both
/// servers. The plugin serves its findings as the export's contents.
#[test]
fn a_plugin_sees_its_connection_and_fills_lists() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("cplugin-conn");
    let src = dir.path().join("conn.c");
    let so = dir.path().join("conn.so");
    std::fs::write(
        &src,
        r#"
#define NBDKIT_API_VERSION 2
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <nbdkit-plugin.h>
#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL
struct h { char text[512]; };
static struct h the;
static void *t_open (int readonly)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  int family = nbdkit_peer_name ((struct sockaddr *) &ss, &len) == 0 ? ss.ss_family : -1;
  const char *interned = nbdkit_printf_intern ("%s-%d", "interned", 42);
  snprintf (the.text, sizeof the.text,
            "export=%s tls=%d family=%d pid_ok=%d uid=%lld %s\n",
            nbdkit_export_name (), nbdkit_is_tls (), family,
            nbdkit_peer_pid () > 0, (long long) nbdkit_peer_uid (), interned);
  return &the;
}
static int64_t t_get_size (void *h) { return strlen (((struct h *) h)->text); }
static int t_pread (void *h, void *buf, uint32_t n, uint64_t off, uint32_t flags)
{ memcpy (buf, ((struct h *) h)->text + off, n); return 0; }
static int t_list_exports (int readonly, int is_tls, struct nbdkit_exports *e)
{
  if (nbdkit_add_export (e, "first", "the first one") == -1) return -1;
  if (nbdkit_add_export (e, "second", NULL) == -1) return -1;
  return nbdkit_use_default_export (e);
}
static const char *t_default_export (int readonly, int is_tls) { return "first"; }
static int t_can_extents (void *h) { return 1; }
static int t_extents (void *h, uint32_t n, uint64_t off, uint32_t flags,
                      struct nbdkit_extents *e)
{
  /* Two extents per 8 bytes, starting before the request. */
  for (uint64_t o = off & ~7; o < off + n; o += 8) {
    if (nbdkit_add_extent (e, o, 4, 0) == -1) return -1;
    if (nbdkit_add_extent (e, o + 4, 4, NBDKIT_EXTENT_ZERO) == -1) return -1;
  }
  return 0;
}
static struct nbdkit_plugin plugin = {
  .name = "conn", .open = t_open, .get_size = t_get_size, .pread = t_pread,
  .list_exports = t_list_exports, .default_export = t_default_export,
  .can_extents = t_can_extents, .extents = t_extents,
};
NBDKIT_REGISTER_PLUGIN (plugin)
"#,
    )
    .unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-o"])
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "cc: {o:?}");
    let so_s = so.display().to_string();
    let script = "set -e; T='timeout 60'; \
                  $T nbdcopy --no-extents \"nbd+unix:///second?socket=$unixsocket\" -; \
                  $T nbdcopy --no-extents \"$uri\" -; \
                  $T nbdinfo --list \"$uri\" | grep -E '^export=|description:'; \
                  $T nbdinfo --map \"nbd+unix:///second?socket=$unixsocket\"";
    let mut outs = Vec::new();
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(bin, &[&so_s], script);
        assert!(o.status.success(), "{bin}: {o:?}");
        outs.push(String::from_utf8_lossy(&o.stdout).into_owned());
    }
    let ours = &outs[0];
    let uid = unsafe { libc::getuid() };
    assert!(
        ours.starts_with(&format!(
            "export=second tls=0 family=1 pid_ok=1 uid={uid} interned-42\n\
             export=first tls=0 family=1"
        )),
        "{ours}"
    );
    assert!(ours.contains("export=\"second\""), "{ours}");
    assert!(ours.contains("description: the first one"), "{ours}");
    assert_eq!(outs[0], outs[1], "ours vs Debian's");
}

/// `nbdkit PLUGIN --help` ends with the plugin's part, as Debian's
/// prints it: its name and long name, its path, its config_help.
#[test]
fn help_after_a_plugin_prints_its_config_help() {
    let plugin_part = |o: std::process::Output| {
        assert!(o.status.success(), "{o:?}");
        let s = String::from_utf8_lossy(&o.stdout).into_owned();
        let at = s.find("\nplugin: ").unwrap_or_else(|| panic!("{s}"));
        s[at..].to_string()
    };
    let mut n = 0;
    for e in std::fs::read_dir(DEBIAN_PLUGINS).unwrap() {
        let p = e.unwrap().path();
        let name = p.file_name().unwrap().to_string_lossy().into_owned();
        let Some(short) = name
            .strip_prefix("nbdkit-")
            .and_then(|x| x.strip_suffix("-plugin.so"))
        else {
            continue;
        };
        let theirs = Command::new(DEBIAN_NBDKIT)
            .args([short, "--help"])
            .output()
            .unwrap();
        let ours = Command::new(BIN).arg(&p).arg("--help").output().unwrap();
        assert_eq!(plugin_part(ours), plugin_part(theirs), "{short}");
        n += 1;
    }
    assert!(n >= 20, "only {n} plugins");
}

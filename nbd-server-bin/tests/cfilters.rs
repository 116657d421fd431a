//! Filters written in C against nbdkit-filter.h, loaded by our nbdkit
//! from their shared objects:
//!
//! - every filter .so of Debian's nbdkit package, given by path, stacked
//!   on one of our built-in plugins (or on a Debian plugin .so), serves
//!   the same size, flags, extents and bytes through our nbdkit as
//!   through Debian's with the same arguments (a table in the output);
//!   built-in and loaded filters mix in one stack;
//! - a filter this test writes against our include/nbdkit-filter.h
//!   records its life's callbacks (one filter, and two stacked) in
//!   nbdkit's order, and shows a filter .so's thread model lowering the
//!   chain's;
//! - the retry filter reopens the layers below (manual contexts); a
//!   filter's errno reaches the client; `-D` debug flags reach filters;
//! - `--version`, `--help` and `--dump-plugin` after `--filter`, and a
//!   filter that does not exist.

mod common;
mod stack;

use std::path::Path;
use std::process::Command;

use common::*;
use stack::*;

const DEBIAN_FILTERS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/filters";
const DEBIAN_PLUGINS: &str = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins";

fn filter_so(name: &str) -> String {
    format!("{DEBIAN_FILTERS}/nbdkit-{name}-filter.so")
}

fn plugin_so(name: &str) -> String {
    format!("{DEBIAN_PLUGINS}/nbdkit-{name}-plugin.so")
}

/// A disk of 1 MiB with data and holes, from the data plugin.
const DATA: &[&str] = &[
    "data",
    "data=1 2 3 @65536 4 5 @^512 \"hello\" @262144 ( 0x55 0xaa )*4096",
    "size=1M",
];

/// What a client sees of one export: nbdinfo's JSON (flags, sizes, block
/// sizes; not the URI, whose socket differs), the map, and a hash of the
/// bytes. `one_client`: the export takes one connection only (exitlast).
fn observe(bin: &str, args: &[&str], one_client: bool) -> Result<String, String> {
    // One connection, straight to NBD_OPT_GO (nbdinfo would ask
    // NBD_OPT_INFO first, a connection of its own to the filters).
    let cmd = if one_client {
        "timeout 60 /usr/bin/python3 -m nbd -u \"$uri\" -c 'print(h.get_size(), h.is_read_only(), \
         h.can_flush(), h.can_trim(), h.can_zero(), h.can_fua(), h.can_multi_conn(), \
         h.can_cache(), h.can_meta_context(\"base:allocation\"))'"
            .to_string()
    } else {
        "set -e; T='timeout 60'; $T nbdinfo --json \"$uri\" | grep -v '\"uri\"'; \
         $T nbdinfo --map \"$uri\" | head -100; \
         $T nbdcopy --no-extents \"$uri\" - | md5sum"
            .to_string()
    };
    run_output(bin, args, &cmd)
}

/// Our server advertises the block sizes it enforces (1, 4096, 64 MiB)
/// when no layer sets any, where nbdkit 1.32 advertises none (a
/// difference README lists): those three lines of ours are dropped when
/// Debian's output has no block sizes.
fn without_our_default_block_sizes(theirs: &str, ours: &str) -> String {
    if theirs.contains("block_size_") {
        return ours.to_string();
    }
    let defaults = [
        "\t\"block_size_minimum\": 1,",
        "\t\"block_size_preferred\": 4096,",
        "\t\"block_size_maximum\": 67108864,",
    ];
    ours.lines()
        .filter(|l| !defaults.contains(l))
        .map(|l| format!("{l}\n"))
        .collect()
}

/// The lines that differ between the two servers' outputs.
fn diff(name: &str, theirs: &Result<String, String>, ours: &Result<String, String>) -> String {
    match (theirs, ours) {
        (Ok(t), Ok(o)) => {
            let (t, o): (Vec<&str>, Vec<&str>) = (t.lines().collect(), o.lines().collect());
            let only_t: Vec<&&str> = t.iter().filter(|l| !o.contains(l)).collect();
            let only_o: Vec<&&str> = o.iter().filter(|l| !t.contains(l)).collect();
            format!("{name}: only Debian's: {only_t:?}; only ours: {only_o:?}")
        }
        _ => format!("{name}: Debian's {theirs:?}\nours {ours:?}"),
    }
}

fn sh(cmd: &str) {
    let st = Command::new("sh").arg("-c").arg(cmd).status().unwrap();
    assert!(st.success(), "{cmd}");
}

/// Every Debian filter, through both servers.
#[test]
fn debian_filters_serve_the_same_through_our_nbdkit() {
    require("nbdinfo", "libnbd-bin");
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("cfilters");
    let d = dir.path();
    let s = |p: &Path| p.display().to_string();

    // Images some filters read.
    let tree = d.join("tree");
    std::fs::create_dir(&tree).unwrap();
    std::fs::write(tree.join("hello.txt"), b"hello, world\n").unwrap();
    std::fs::write(tree.join("data.bin"), pattern(300_000, 3)).unwrap();
    let raw = d.join("raw.img");
    std::fs::write(&raw, pattern(2 << 20, 5)).unwrap();
    let gz = d.join("raw.img.gz");
    let xz = d.join("raw.img.xz");
    let tar = d.join("tree.tar");
    let ext2 = d.join("ext2.img");
    let luks = d.join("luks.img");
    let mapfile = d.join("ddrescue.map");
    let extentlist = d.join("extents.list");
    let mut missing: Vec<(&str, String)> = Vec::new();
    let mut tool = |name: &'static str, program: &str, cmd: String| {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {program}"))
            .output()
            .is_ok_and(|o| o.status.success())
        {
            sh(&cmd);
        } else {
            missing.push((name, format!("needs {program}")));
        }
    };
    tool("gzip", "gzip", format!("gzip -c {} > {}", s(&raw), s(&gz)));
    tool(
        "xz",
        "xz",
        format!("xz --block-size=65536 -c {} > {}", s(&raw), s(&xz)),
    );
    tool(
        "tar",
        "tar",
        format!("tar -C {} -cf {} hello.txt data.bin", s(&tree), s(&tar)),
    );
    tool(
        "ext2",
        "mke2fs",
        format!(
            "mke2fs -q -t ext2 -U 2c8f0b63-2c8f-4d8a-8d4c-5d2c7a3c6a01 -E root_owner=0:0 -d {} {} 4M >/dev/null",
            s(&tree),
            s(&ext2)
        ),
    );
    tool(
        "luks",
        "qemu-img",
        format!(
            "qemu-img create -q -f luks --object secret,id=sec0,data=topsecret \
             -o key-secret=sec0,iter-time=10 {} 1M && \
             qemu-io --object secret,id=sec0,data=topsecret \
             --image-opts driver=luks,key-secret=sec0,file.filename={} \
             -c 'write -P 0x5a 0 65536' >/dev/null",
            s(&luks),
            s(&luks)
        ),
    );
    std::fs::write(
        &mapfile,
        "# Mapfile\n0x00000000     ?\n#      pos        size  status\n\
         0x00000000  0x00080000  +\n0x00080000  0x00080000  +\n",
    )
    .unwrap();
    std::fs::write(
        &extentlist,
        "0 65536\n65536 131072 hole,zero\n524288 4096\n",
    )
    .unwrap();

    let data = || DATA.iter().map(|a| a.to_string()).collect::<Vec<_>>();
    let file = |p: &Path| vec!["file".to_string(), s(p)];
    // Debian's file plugin, for filters whose answers depend on its
    // can_fast_zero (false for a regular file; our file plugin says true).
    let file_so = |p: &Path| vec![plugin_so("file"), s(p)];
    let with = |mut v: Vec<String>, extra: &[&str]| {
        v.extend(extra.iter().map(|e| e.to_string()));
        v
    };
    // (filter, plugin and arguments, one client only). `@D@` is a
    // directory of each server's own (control sockets, log files).
    let cases: Vec<(&str, Vec<String>, bool)> = vec![
        (
            "blocksize",
            with(data(), &["minblock=4096", "maxdata=65536"]),
            false,
        ),
        (
            "blocksize-policy",
            with(
                data(),
                &[
                    "blocksize-minimum=512",
                    "blocksize-preferred=4096",
                    "blocksize-maximum=65536",
                ],
            ),
            false,
        ),
        ("cache", with(data(), &["cache=writeback"]), false),
        ("cacheextents", data(), false),
        ("checkwrite", data(), false),
        ("cow", vec![plugin_so("memory"), "size=1M".into()], false),
        (
            "ddrescue",
            with(data(), &[&format!("ddrescue-mapfile={}", s(&mapfile))]),
            false,
        ),
        ("delay", with(data(), &["rdelay=1ms"]), false),
        ("error", with(data(), &["error-pwrite-rate=100%"]), false),
        ("exitlast", data(), true),
        (
            "exitwhen",
            with(data(), &["exitwhen-file-created=@D@/exit-now"]),
            false,
        ),
        ("exportname", with(data(), &["exportname=a"]), false),
        ("ext2", with(file_so(&ext2), &["ext2file=/data.bin"]), false),
        (
            "extentlist",
            with(data(), &[&format!("extentlist={}", s(&extentlist))]),
            false,
        ),
        ("fua", with(data(), &["fuamode=emulate"]), false),
        ("gzip", file(&gz), false),
        ("ip", with(data(), &["allow=all"]), false),
        ("limit", with(data(), &["limit=1"]), false),
        ("log", with(data(), &["logfile=@D@/log"]), false),
        ("luks", with(file(&luks), &["passphrase=topsecret"]), false),
        (
            "multi-conn",
            with(data(), &["multi-conn-mode=emulate"]),
            false,
        ),
        ("nocache", with(data(), &["cachemode=none"]), false),
        ("noextents", data(), false),
        ("nofilter", data(), false),
        ("noparallel", with(data(), &["serialize=requests"]), false),
        ("nozero", with(data(), &["zeromode=none"]), false),
        // Debian's data plugin: nbdkit's sparse array calls the zero tail
        // of an allocated page "zero", ours "data".
        (
            "offset",
            vec![
                plugin_so("data"),
                DATA[1].into(),
                DATA[2].into(),
                "offset=4096".into(),
                "range=300000".into(),
            ],
            false,
        ),
        (
            "partition",
            vec![
                plugin_so("partitioning"),
                s(&raw),
                s(&tar),
                "partition=2".into(),
            ],
            false,
        ),
        (
            "pause",
            with(data(), &["pause-control=@D@/pause.sock"]),
            false,
        ),
        ("protect", with(data(), &["protect=0-1023"]), false),
        ("rate", with(data(), &["rate=100M"]), false),
        ("readahead", data(), false),
        ("retry", with(data(), &["retries=2"]), false),
        ("retry-request", with(data(), &["retries=2"]), false),
        ("scan", data(), false),
        ("stats", with(data(), &["statsfile=@D@/stats"]), false),
        (
            "swab",
            vec![
                plugin_so("pattern"),
                "size=1M".into(),
                "swab-bits=32".into(),
            ],
            false,
        ),
        ("tar", with(file_so(&tar), &["tar-entry=data.bin"]), false),
        ("tls-fallback", with(data(), &["tlsreadme=hello"]), false),
        ("truncate", with(data(), &["truncate=300000"]), false),
        ("xz", file(&xz), false),
    ];

    let mut filters: Vec<String> = std::fs::read_dir(DEBIAN_FILTERS)
        .unwrap()
        .filter_map(|e| {
            let n = e.unwrap().file_name().to_string_lossy().into_owned();
            n.strip_prefix("nbdkit-")
                .and_then(|n| n.strip_suffix("-filter.so"))
                .map(str::to_string)
        })
        .collect();
    filters.sort();
    assert!(filters.len() >= 40, "{filters:?}");

    let mut table = vec![format!(
        "{:<17} {:<13} {:>8} {:>8} {:<34} result",
        "filter", "plugin", "size", "extents", "md5"
    )];
    let mut failures = Vec::new();
    let mut compared = 0;
    for name in &filters {
        if let Some((_, why)) = missing.iter().find(|(n, _)| n == name) {
            table.push(format!("{name:<17} skipped: {why}"));
            continue;
        }
        let Some((_, args, one)) = cases.iter().find(|(n, _, _)| n == name) else {
            failures.push(format!("{name}: no case in this test's table"));
            table.push(format!("{name:<17} NO CASE"));
            continue;
        };
        let so = filter_so(name);
        let run = |bin: &str, who: &str| {
            let own = d.join(format!("{name}-{who}"));
            std::fs::create_dir_all(&own).unwrap();
            let args: Vec<String> = args.iter().map(|a| a.replace("@D@", &s(&own))).collect();
            let mut argv: Vec<&str> = vec!["--filter", &so];
            argv.extend(args.iter().map(String::as_str));
            observe(bin, &argv, *one)
        };
        let theirs = run(DEBIAN_NBDKIT, "debian");
        let ours = run(BIN, "ours");
        compared += 1;
        let ours = match (&theirs, ours) {
            (Ok(t), Ok(o)) => Ok(without_our_default_block_sizes(t, &o)),
            (_, o) => o,
        };
        let same = matches!((&theirs, &ours), (Ok(a), Ok(b)) if a == b);
        let plugin = Path::new(&args[0])
            .file_name()
            .map(|f| {
                f.to_string_lossy()
                    .replace("nbdkit-", "")
                    .replace("-plugin", "")
            })
            .unwrap_or_default();
        let summary = ours.as_ref().map_or_else(
            |e| format!("failed: {}", e.lines().last().unwrap_or("")),
            |o| {
                let lines: Vec<&str> = o.lines().collect();
                // nbdinfo's JSON, or the one client's first word.
                let size = lines
                    .iter()
                    .find_map(|l| l.trim().strip_prefix("\"export-size\": "))
                    .or_else(|| lines.first().and_then(|l| l.split_whitespace().next()))
                    .unwrap_or("")
                    .trim_end_matches(',');
                let extents = lines
                    .iter()
                    .filter(|l| {
                        let w: Vec<&str> = l.split_whitespace().collect();
                        w.len() >= 4 && w[..3].iter().all(|x| x.parse::<u64>().is_ok())
                    })
                    .count();
                let md5 = if *one {
                    "(one client: flags only)"
                } else {
                    lines
                        .last()
                        .and_then(|l| l.split_whitespace().next())
                        .unwrap_or("")
                };
                format!("{size:>8} {extents:>8} {md5:<34}")
            },
        );
        table.push(format!(
            "{name:<17} {plugin:<13} {summary} {}",
            if same { "same" } else { "DIFFERENT" }
        ));
        if !same {
            failures.push(diff(name, &theirs, &ours));
        }
    }
    println!("{}", table.join("\n"));
    assert!(
        compared >= 35,
        "too few filters compared:\n{}",
        table.join("\n")
    );
    assert!(
        failures.is_empty(),
        "{}\n\n{}",
        table.join("\n"),
        failures.join("\n\n")
    );
}

/// A filter this test compiles against our include/nbdkit-filter.h. It
/// records its life's callbacks in order, passes on the keys that are not
/// its own, and counts how many preads are in it at once (each sleeps a
/// little, so that parallel requests overlap). `unload` writes the record
/// to `orderlog=`.
const ORDER_FILTER: &str = r#"
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <nbdkit-filter.h>

/* Built twice for stacking: another name, passing orderlog= on to the
 * copy below, and appending each event to orderlog.seq as it happens. */
#ifndef FNAME
#define FNAME "order"
#endif
#ifndef PASS_LOG
#define PASS_LOG 0
#endif

static char *log_path;
static char events[8192];
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static int in_pread, max_in_pread;

static void
event (const char *e)
{
  pthread_mutex_lock (&lock);
  if (strlen (events) + strlen (e) + 2 < sizeof events) {
    strcat (events, e);
    strcat (events, " ");
  }
#ifdef APPEND
  if (log_path) {
    char seq[4096];
    FILE *f;
    snprintf (seq, sizeof seq, "%s.seq", log_path);
    f = fopen (seq, "a");
    if (f) {
      fprintf (f, "%s:%s\n", FNAME, e);
      fclose (f);
    }
  }
#endif
  pthread_mutex_unlock (&lock);
}

static void order_load (void) { event ("load"); }

static void
order_unload (void)
{
  FILE *f = fopen (log_path, "w");
  if (f) {
    fprintf (f, "%s\nmax_in_pread=%d\n", events, max_in_pread);
    fclose (f);
  }
  free (log_path);
}

static int
order_config (nbdkit_next_config *next, nbdkit_backend *nxdata,
              const char *key, const char *value)
{
  if (strcmp (key, "orderlog") == 0) {
    log_path = strdup (value);
    return PASS_LOG ? next (nxdata, key, value) : 0;
  }
  event ("config-passed-on");
  return next (nxdata, key, value);
}

static int
order_config_complete (nbdkit_next_config_complete *next,
                       nbdkit_backend *nxdata)
{
  if (log_path == NULL) {
    nbdkit_error ("orderlog= is required");
    return -1;
  }
  event ("config_complete");
  return next (nxdata);
}

static int
order_get_ready (int thread_model)
{
  char s[64];
  snprintf (s, sizeof s, "get_ready(%d)", thread_model);
  event (s);
  return 0;
}

static int
order_after_fork (nbdkit_backend *backend)
{
  event ("after_fork");
  return 0;
}

static void order_cleanup (nbdkit_backend *backend) { event ("cleanup"); }

static int
order_preconnect (nbdkit_next_preconnect *next, nbdkit_backend *nxdata,
                  int readonly)
{
  event ("preconnect");
  return next (nxdata, readonly);
}

static void *
order_open (nbdkit_next_open *next, nbdkit_context *context,
            int readonly, const char *exportname, int is_tls)
{
  event ("open");
  if (next (context, readonly, exportname) == -1)
    return NULL;
  event ("next-opened");
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static void order_close (void *handle) { event ("close"); }

static int
order_prepare (nbdkit_next *next, void *handle, int readonly)
{
  char s[64];
  snprintf (s, sizeof s, "prepare(size=%ld)", (long) next->get_size (next));
  event (s);
  return 0;
}

static int
order_finalize (nbdkit_next *next, void *handle)
{
  event ("finalize");
  return 0;
}

static int
order_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  struct timespec ts = { 0, 5000000 };
  int r;

  pthread_mutex_lock (&lock);
  if (++in_pread > max_in_pread)
    max_in_pread = in_pread;
  pthread_mutex_unlock (&lock);
  nanosleep (&ts, NULL);
  r = next->pread (next, buf, count, offset, flags, err);
  pthread_mutex_lock (&lock);
  in_pread--;
  pthread_mutex_unlock (&lock);
  return r;
}

static struct nbdkit_filter filter = {
  .name = FNAME,
  .longname = "the life-cycle order test filter",
  .load = order_load,
  .unload = order_unload,
  .config = order_config,
  .config_complete = order_config_complete,
  .get_ready = order_get_ready,
  .after_fork = order_after_fork,
  .cleanup = order_cleanup,
  .preconnect = order_preconnect,
  .open = order_open,
  .close = order_close,
  .prepare = order_prepare,
  .finalize = order_finalize,
  .pread = order_pread,
};

NBDKIT_REGISTER_FILTER (filter)
"#;

/// Compiles ORDER_FILTER into `dir`; its path.
fn order_filter(dir: &Path) -> String {
    order_filter_with(dir, "order", &[])
}

/// Compiles ORDER_FILTER as filter `name` with the C macros `defines`.
fn order_filter_with(dir: &Path, name: &str, defines: &[&str]) -> String {
    require("cc", "gcc");
    let src = dir.join(format!("{name}.c"));
    let so = dir.join(format!("nbdkit-{name}-filter.so"));
    std::fs::write(&src, ORDER_FILTER).unwrap();
    let include = concat!(env!("CARGO_MANIFEST_DIR"), "/../include");
    let st = Command::new("cc")
        .args(defines)
        .args(["-shared", "-fPIC", "-Wall", "-Werror", "-I", include, "-o"])
        .arg(&so)
        .arg(&src)
        .arg("-lpthread")
        .status()
        .unwrap();
    assert!(st.success(), "cc order.c");
    so.display().to_string()
}

/// Runs `bin` with ARGS and the client command `cmd`; the filter's record.
fn order_record(bin: &str, args: &[&str], cmd: &str, log: &Path) -> String {
    let _ = std::fs::remove_file(log);
    let o = run_with(bin, args, cmd);
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    std::fs::read_to_string(log).unwrap_or_else(|e| panic!("{bin}: {}: {e}", log.display()))
}

/// The filter's life, through both servers, for one client connection:
/// the same callbacks in the same order (and its `config` passes the
/// plugin's key on to it).
#[test]
fn a_c_filters_life_in_nbdkits_order() {
    let dir = TempDir::new("cfilter-order");
    let so = order_filter(dir.path());
    let log = dir.path().join("order.log");
    let logarg = format!("orderlog={}", log.display());
    let args = ["--filter", &so, "memory", "size=1M", &logarg];
    let cmd = "/usr/bin/python3 -m nbd -u \"$uri\" -c 'h.pread(4096, 0)'";
    let ours = order_record(BIN, &args, cmd, &log);
    let theirs = order_record(DEBIAN_NBDKIT, &args, cmd, &log);
    println!("ours:     {ours}Debian's: {theirs}");
    let events = |r: &str| r.lines().next().unwrap_or("").to_string();
    // Debian's nbdkit may exit (after --run) before its connection
    // thread has called close: compared without it.
    let without_close = |r: &str| events(r).replace(" close ", " ");
    assert_eq!(without_close(&ours), without_close(&theirs));
    assert!(
        events(&ours).contains(
            "after_fork preconnect open next-opened prepare(size=1048576) finalize close cleanup"
        ),
        "{ours}"
    );
    assert!(events(&ours).starts_with("load config-passed-on config_complete get_ready(3)"));
}

/// Two C filters stacked: each opens the one below from its own open,
/// prepares innermost first, and at the end every filter finalizes,
/// outermost first, before any closes, as nbdkit's backend.c does.
#[test]
fn two_c_filters_open_prepare_finalize_close_in_nbdkits_order() {
    let dir = TempDir::new("cfilter-two");
    let a = order_filter_with(
        dir.path(),
        "a",
        &["-DFNAME=\"a\"", "-DPASS_LOG=1", "-DAPPEND"],
    );
    let b = order_filter_with(dir.path(), "b", &["-DFNAME=\"b\"", "-DAPPEND"]);
    let log = dir.path().join("order.log");
    let seq = dir.path().join("order.log.seq");
    let logarg = format!("orderlog={}", log.display());
    let args = ["--filter", &a, "--filter", &b, "memory", "size=1M", &logarg];
    let cmd = "/usr/bin/python3 -m nbd -u \"$uri\" -c 'h.pread(512, 0)'";
    let sequence = |bin: &str| {
        let _ = std::fs::remove_file(&seq);
        order_record(bin, &args, cmd, &log);
        std::fs::read_to_string(&seq).unwrap()
    };
    let ours = sequence(BIN);
    let theirs = sequence(DEBIAN_NBDKIT);
    println!("ours:\n{ours}\nDebian's:\n{theirs}");
    // Up to the finalizes: Debian's nbdkit may exit (after --run) before
    // its connection thread has called close.
    let until_finalized = |s: &str| -> Vec<String> {
        let mut v: Vec<String> = Vec::new();
        for l in s.lines() {
            v.push(l.to_string());
            if l == "b:finalize" {
                break;
            }
        }
        v
    };
    assert_eq!(until_finalized(&ours), until_finalized(&theirs));
    let connection: Vec<&str> = ours
        .lines()
        .skip_while(|l| !l.ends_with(":open"))
        .take(10)
        .collect();
    assert_eq!(
        connection,
        [
            "a:open",
            "b:open",
            "b:next-opened",
            "a:next-opened",
            "b:prepare(size=1048576)",
            "a:prepare(size=1048576)",
            "a:finalize",
            "b:finalize",
            "a:close",
            "b:close"
        ]
    );
}

/// The chain's thread model is the lowest of every layer's: Debian's
/// noparallel filter .so (serialize=requests, from its thread_model
/// callback) below the test's filter serializes the requests the test's
/// filter sees, under parallel requests of one client, through both
/// servers; without it, they overlap.
#[test]
fn a_filters_thread_model_lowers_the_chains() {
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("cfilter-model");
    let so = order_filter(dir.path());
    let log = dir.path().join("order.log");
    let logarg = format!("orderlog={}", log.display());
    let noparallel = filter_so("noparallel");
    let cmd =
        "nbdcopy --no-extents --connections=1 --requests=8 --request-size=4096 \"$uri\" null:";
    let max = |r: &str| {
        r.lines()
            .find_map(|l| l.strip_prefix("max_in_pread="))
            .and_then(|n| n.parse::<u32>().ok())
            .unwrap_or_else(|| panic!("{r}"))
    };
    for bin in [BIN, DEBIAN_NBDKIT] {
        let serialized = [
            "--filter",
            &so,
            "--filter",
            &noparallel,
            "memory",
            "size=1M",
            &logarg,
            "serialize=requests",
        ];
        let r = order_record(bin, &serialized, cmd, &log);
        assert!(r.contains("get_ready(2)"), "{bin}: {r}");
        assert_eq!(max(&r), 1, "{bin}: {r}");
        let parallel = ["--filter", &so, "memory", "size=1M", &logarg];
        let r = order_record(bin, &parallel, cmd, &log);
        assert!(r.contains("get_ready(3)"), "{bin}: {r}");
        assert!(max(&r) > 1, "{bin}: {r}");
    }
}

/// `--filter=NAME --version` names the filter's version (a .so by path
/// too), and fails for a filter that does not exist, as Debian's.
#[test]
fn version_names_loaded_filters_and_fails_for_missing_ones() {
    let xz = filter_so("xz");
    let cases: [(&[&str], bool); 4] = [
        (&["--filter", &xz, "memory", "--version"], true),
        (
            &["--filter=xz", "--filter=offset", "memory", "--version"],
            true,
        ),
        (&["--filter=nosuch", "memory", "--version"], false),
        (
            &[
                "--filter=/nonexistent/nbdkit-x-filter.so",
                "memory",
                "--version",
            ],
            false,
        ),
    ];
    for (args, ok) in cases {
        let ours = Command::new(BIN).args(args).output().unwrap();
        let theirs = Command::new(DEBIAN_NBDKIT).args(args).output().unwrap();
        assert_eq!(ours.status.success(), ok, "{args:?}: {ours:?}");
        assert_eq!(theirs.status.success(), ok, "{args:?}: {theirs:?}");
        let tail = |o: &std::process::Output| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .skip(1)
                .map(str::to_string)
                .collect::<Vec<_>>()
        };
        assert_eq!(tail(&ours), tail(&theirs), "{args:?}");
    }
}

/// `--dump-plugin` after filters given as .so files prints the thread
/// model their `thread_model` lowers it to, as Debian's.
#[test]
fn dump_plugin_shows_the_thread_model_filters_lower() {
    let memory_so = plugin_so("memory");
    for f in ["xz", "ext2", "noparallel", "offset"] {
        let so = filter_so(f);
        for plugin in ["memory", memory_so.as_str()] {
            let args = ["--filter", &so, plugin, "--dump-plugin"];
            let model = |bin: &str| {
                let o = Command::new(bin).args(args).output().unwrap();
                assert!(o.status.success(), "{bin} {args:?}: {o:?}");
                String::from_utf8_lossy(&o.stdout)
                    .lines()
                    .find(|l| l.starts_with("thread_model="))
                    .map(str::to_string)
            };
            let ours = model(BIN);
            assert!(ours.is_some(), "{args:?}");
            assert_eq!(ours, model(DEBIAN_NBDKIT), "{args:?}");
        }
    }
}

/// Debian's retry filter .so reopens the layers below it after a failure
/// (nbdkit_next_context_open, nbdkit_context_set_next,
/// nbdkit_next_context_close): over a built-in error filter failing half
/// the reads, every read comes through in the end, with the same bytes
/// as without errors, through both servers.
#[test]
fn the_retry_filter_reopens_the_layers_below() {
    require("nbdcopy", "libnbd-bin");
    let retry = filter_so("retry");
    let plain: Vec<&str> = vec!["data", DATA[1], "size=16K"];
    let mut failing = vec!["--filter", &retry, "--filter=error"];
    failing.extend(&plain);
    failing.extend([
        "retries=50",
        "retry-delay=1",
        "retry-exponential=no",
        "error-pread-rate=50%",
        "error=EIO",
    ]);
    let cmd = "nbdcopy --no-extents --request-size=4096 --requests=1 \"$uri\" - | md5sum";
    let md5 = |bin: &str, args: &[&str]| {
        let o = run_with(bin, args, cmd);
        assert!(o.status.success(), "{bin} {args:?}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let expected = md5(BIN, &plain);
    assert_eq!(md5(BIN, &failing), expected);
    assert_eq!(md5(DEBIAN_NBDKIT, &failing), expected);
}

/// `-D NAME.FLAG=N` sets a filter .so's debug flag (protect's
/// `protect_debug_write`), as for plugins: the flag's messages appear
/// with it only, through both servers.
#[test]
fn debug_flags_reach_filters() {
    let protect = filter_so("protect");
    let cmd = "/usr/bin/python3 -m nbd -u \"$uri\" -c 'h.pwrite(bytearray(512), 4096)'";
    for bin in [BIN, DEBIAN_NBDKIT] {
        for (flag, shown) in [(Some("protect.write=1"), true), (None, false)] {
            let mut args = vec!["-v"];
            if let Some(f) = flag {
                args.extend(["-D", f]);
            }
            args.extend(["--filter", &protect, "memory", "1M", "protect=0-511"]);
            let o = run_with(bin, &args, cmd);
            assert!(o.status.success(), "{bin} {args:?}: {o:?}");
            let stderr = String::from_utf8_lossy(&o.stderr);
            assert_eq!(
                stderr.contains("skipping unprotected region offset 4096 length 512"),
                shown,
                "{bin} {args:?}"
            );
        }
    }
}

/// `--help` after filters given as .so files prints each one's name,
/// path and `config_help` before the plugin's, as Debian's.
#[test]
fn help_prints_each_filters_config_help() {
    let offset = filter_so("offset");
    let xz = filter_so("xz");
    let args = ["--filter", &offset, "--filter", &xz, "memory", "--help"];
    let filters_part = |bin: &str| {
        let o = Command::new(bin).args(args).output().unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        let out = String::from_utf8_lossy(&o.stdout).into_owned();
        let start = out
            .find("filter: ")
            .unwrap_or_else(|| panic!("{bin}: {out}"));
        let end = out
            .find("plugin: ")
            .unwrap_or_else(|| panic!("{bin}: {out}"));
        out[start..end].to_string()
    };
    let ours = filters_part(BIN);
    assert!(ours.contains("filter: xz (nbdkit XZ filter)"), "{ours}");
    assert_eq!(ours, filters_part(DEBIAN_NBDKIT));
}

/// Built-in filters and filter .so files mixed in one stack, in both
/// orders, with keys for each of them and the plugin: the same as
/// Debian's (where every filter is a .so).
#[test]
fn built_in_and_loaded_filters_stack_together() {
    require("nbdinfo", "libnbd-bin");
    require("nbdcopy", "libnbd-bin");
    let swab = filter_so("swab");
    let truncate = filter_so("truncate");
    let offset = filter_so("offset");
    let stacks: [Vec<&str>; 2] = [
        vec!["--filter=offset", "--filter", &swab, "--filter=truncate"],
        vec!["--filter", &truncate, "--filter=swab", "--filter", &offset],
    ];
    for filters in stacks {
        // Debian's data plugin: with an offset, nbdkit's sparse array
        // calls the zero tail of an allocated page "zero", ours "data".
        let data_so = plugin_so("data");
        let mut args = filters.clone();
        args.extend([data_so.as_str(), DATA[1], DATA[2]]);
        args.extend(["offset=4096", "swab-bits=16", "truncate=100000"]);
        let ours = observe(BIN, &args, false);
        let theirs = observe(DEBIAN_NBDKIT, &args, false);
        let (Ok(t), Ok(o)) = (&theirs, &ours) else {
            panic!("{args:?}: Debian's {theirs:?}\nours {ours:?}");
        };
        assert_eq!(
            without_our_default_block_sizes(t, o),
            *t,
            "{args:?}: {}",
            diff("stack", &theirs, &ours)
        );
    }
}

/// A filter .so's failed request reaches the client with the errno it
/// set in `*err` (Debian's error filter), through both servers.
#[test]
fn a_filters_errno_reaches_the_client() {
    let error = filter_so("error");
    let cmd = "/usr/bin/python3 -m nbd -u \"$uri\" -c '\ntry:\n  h.pwrite(bytearray(512), 0)\nexcept nbd.Error as e:\n  print(e.errno)\n'";
    for errno in ["ENOSPC", "EINVAL"] {
        let e = format!("error={errno}");
        let args = [
            "--filter",
            &error,
            "memory",
            "1M",
            "error-pwrite-rate=100%",
            &e,
        ];
        for bin in [BIN, DEBIAN_NBDKIT] {
            let o = run_with(bin, &args, cmd);
            assert!(o.status.success(), "{bin} {args:?}: {o:?}");
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), errno, "{bin}");
        }
    }
}

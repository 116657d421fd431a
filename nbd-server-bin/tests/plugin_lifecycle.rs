//! The life of a C plugin around the server's own: a plugin compiled
//! here against nbdkit-plugin.h logs every life-cycle callback with its
//! process and whether it ran on the process's main thread, and each
//! scenario runs under our nbdkit and Debian's:
//!
//! - `--run`: `cleanup` then `unload`, after the command, on the main
//!   thread (python, perl and tcl tear their interpreters down there);
//! - daemonised (no `-f`, with `--pidfile`): `after_fork`, the
//!   connection and the end (SIGTERM) all in the process whose pid the
//!   pid file holds; `load`, `config` and `get_ready` before the fork;
//! - in the foreground, SIGTERM: `cleanup` and `unload` before exit;
//! - `-s`: the connection, and requests, on the main thread.
//!
//! The logs are compared with the processes named in order of
//! appearance (A, B, ...), so the two servers must agree on which
//! callbacks run in which process and thread, and in what order.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEBIAN_NBDKIT: &str = "/usr/bin/nbdkit";

/// Logs `NAME PID main|thread` to $LIFECYCLE_LOG, one write(2) per line
/// (O_APPEND), for each callback of the plugin's life.
const C_SOURCE: &str = r#"
#define NBDKIT_API_VERSION 2
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <time.h>
#include <sys/syscall.h>
#include <nbdkit-plugin.h>

#ifndef MODEL
#define MODEL PARALLEL
#endif
#define CONCAT(a, b) a##b
#define MODEL_OF(m) CONCAT(NBDKIT_THREAD_MODEL_, m)
#define THREAD_MODEL MODEL_OF(MODEL)

static void event (const char *name)
{
  const char *path = getenv ("LIFECYCLE_LOG");
  char line[128];
  int fd, n;
  if (path == NULL) return;
  n = snprintf (line, sizeof line, "%s %ld %s\n", name, (long) getpid (),
                syscall (SYS_gettid) == getpid () ? "main" : "thread");
  fd = open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
  if (fd >= 0) {
    if (write (fd, line, n) != n) abort ();
    close (fd);
  }
}

static void l_load (void) { event ("load"); }
static void l_unload (void) { event ("unload"); }
static int l_config (const char *k, const char *v) { event ("config"); return 0; }
static int l_config_complete (void) { event ("config_complete"); return 0; }
static int l_get_ready (void) { event ("get_ready"); return 0; }
static int l_after_fork (void) { event ("after_fork"); return 0; }
static void l_cleanup (void) { event ("cleanup"); }
static int l_preconnect (int ro) { event ("preconnect"); return 0; }
static void *l_open (int ro) { event ("open"); return NBDKIT_HANDLE_NOT_NEEDED; }
static void l_close (void *h) { event ("close"); }
static int64_t l_get_size (void *h) { return 1 << 20; }
static int l_pread (void *h, void *buf, uint32_t n, uint64_t off, uint32_t f)
{
  memset (buf, 'L', n);
  /* A slow read, for a signal to arrive while it runs. */
  if (off == 8192) {
    struct timespec ts = { 1, 0 };
    event ("pread_start");
    nanosleep (&ts, NULL);
    event ("pread_end");
  }
  return 0;
}
static int l_flush (void *h, uint32_t f) { event ("flush"); return 0; }

static struct nbdkit_plugin plugin = {
  .name = "lifecycle",
  .version = "1.0",
  .load = l_load,
  .unload = l_unload,
  .config = l_config,
  .config_complete = l_config_complete,
  .get_ready = l_get_ready,
  .after_fork = l_after_fork,
  .cleanup = l_cleanup,
  .preconnect = l_preconnect,
  .open = l_open,
  .close = l_close,
  .get_size = l_get_size,
  .pread = l_pread,
  .flush = l_flush,
};
NBDKIT_REGISTER_PLUGIN (plugin)
"#;

/// The plugin, with thread model `model` (nbdkit's name without
/// `NBDKIT_THREAD_MODEL_`).
fn compile(dir: &Path, model: &str) -> PathBuf {
    require("cc", "gcc");
    assert!(
        Path::new("/usr/include/nbdkit-plugin.h").exists(),
        "nbdkit-plugin.h is missing: apt-get install nbdkit-plugin-dev"
    );
    let src = dir.join("lifecycle.c");
    let so = dir.join("lifecycle.so");
    std::fs::write(&src, C_SOURCE).unwrap();
    let o = Command::new("cc")
        .args(["-shared", "-fPIC", "-Wall", "-Werror"])
        .arg(format!("-DMODEL={model}"))
        .arg("-o")
        .arg(&so)
        .arg(&src)
        .output()
        .unwrap();
    assert!(o.status.success(), "cc: {o:?}");
    so
}

/// Polls `cond` for up to a minute (an upper bound only).
fn wait_for(mut cond: impl FnMut() -> bool) -> bool {
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(60) {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    cond()
}

/// One logged callback: its name, its process, whether on the main thread.
#[derive(Debug, Clone, PartialEq)]
struct Event {
    name: String,
    pid: i32,
    main: bool,
}

/// Every connection opened so far has closed (nbdinfo makes two: one to
/// ask, one to read). Waiting for this before a signal keeps the order of
/// the logs from depending on whether the server had noticed its last
/// client go: Debian's nbdkit, signalled first, exits without closing that
/// connection's handle.
fn all_closed(log: &Path) -> bool {
    let events = read_log(log);
    let count = |name: &str| events.iter().filter(|e| e.name == name).count();
    count("open") > 0 && count("close") == count("open")
}

fn read_log(log: &Path) -> Vec<Event> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(|l| {
            let w: Vec<&str> = l.split_whitespace().collect();
            Event {
                name: w[0].to_string(),
                pid: w[1].parse().unwrap(),
                main: w[2] == "main",
            }
        })
        .collect()
}

/// The log with processes named A, B, ... in order of appearance:
/// `name@A` on the main thread, `name@A/t` on another; without
/// `processes`, `name` and `name/t`.
fn normalised(events: &[Event], processes: bool) -> Vec<String> {
    let mut pids: Vec<i32> = Vec::new();
    events
        .iter()
        .map(|e| {
            let i = pids.iter().position(|p| *p == e.pid).unwrap_or_else(|| {
                pids.push(e.pid);
                pids.len() - 1
            });
            let process = format!("@{}", (b'A' + i as u8) as char);
            format!(
                "{}{}{}",
                e.name,
                if processes { process.as_str() } else { "" },
                if e.main { "" } else { "/t" }
            )
        })
        .collect()
}

fn names(events: &[Event]) -> Vec<&str> {
    events.iter().map(|e| e.name.as_str()).collect()
}

fn find<'a>(events: &'a [Event], name: &str) -> &'a Event {
    events
        .iter()
        .find(|e| e.name == name)
        .unwrap_or_else(|| panic!("no {name} in {events:?}"))
}

/// `cleanup` then `unload`, last, both on the main thread of `pid`.
fn ends_with_cleanup_then_unload(events: &[Event], pid: i32, what: &str) {
    let n = events.len();
    assert!(n >= 2, "{what}: {events:?}");
    assert_eq!(
        names(&events[n - 2..]),
        ["cleanup", "unload"],
        "{what}: {events:?}"
    );
    for e in &events[n - 2..] {
        assert_eq!(e.pid, pid, "{what}: {events:?}");
        assert!(e.main, "{what}: not on the main thread: {events:?}");
    }
}

fn run_scenario(
    bin: &str,
    dir: &Path,
    tag: &str,
    scenario: &dyn Fn(&str, &Path, &Path) -> i32,
) -> Vec<Event> {
    let log = dir.join(format!("{tag}.log"));
    let _ = std::fs::remove_file(&log);
    let pid = scenario(bin, dir, &log);
    let events = read_log(&log);
    let what = format!("{tag} under {bin}");
    ends_with_cleanup_then_unload(&events, pid, &what);
    events
}

/// Runs `scenario` under both servers and compares their logs (which
/// callbacks run in which process, with `processes`, and on which
/// thread); returns both.
fn both(
    dir: &Path,
    tag: &str,
    processes: bool,
    scenario: &dyn Fn(&str, &Path, &Path) -> i32,
) -> (Vec<Event>, Vec<Event>) {
    let theirs = run_scenario(DEBIAN_NBDKIT, dir, &format!("{tag}-debian"), scenario);
    let ours = run_scenario(BIN, dir, &format!("{tag}-ours"), scenario);
    let (t, o) = (normalised(&theirs, true), normalised(&ours, true));
    println!("{tag}:\n  Debian's: {t:?}\n  ours:     {o:?}");
    let mut ours_compared = ours.clone();
    if last_close_skipped(&theirs) && !last_close_skipped(&ours) {
        // Debian's nbdkit, exiting just as its last client went (the end
        // of --run, or a signal), sometimes does not close that
        // connection's handle, and sometimes does: a race in nbdkit. Ours
        // always closes it first (process/live.rs). Compare the rest.
        let at = ours.iter().rposition(|e| e.name == "close").unwrap();
        println!("  (Debian's skipped its last close this time; compared without ours)");
        ours_compared.remove(at);
    }
    assert_eq!(
        normalised(&theirs, processes),
        normalised(&ours_compared, processes),
        "{tag}"
    );
    (theirs, ours)
}

/// One connection opened and never closed, the last to open.
fn last_close_skipped(events: &[Event]) -> bool {
    let count = |name: &str| events.iter().filter(|e| e.name == name).count();
    let last_open = events.iter().rposition(|e| e.name == "open");
    let last_close = events.iter().rposition(|e| e.name == "close");
    count("open") == count("close") + 1 && last_open > last_close
}

#[test]
fn cleanup_and_unload_run_on_the_main_thread_after_run() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("lifecycle-run");
    let so = compile(dir.path(), "PARALLEL").display().to_string();
    // Debian's nbdkit forks for --run: the parent runs the command and the
    // child serves, so load, config and get_ready run in one process and
    // the rest in another. Ours serves in the process that loaded the
    // plugin (README, "Differences"), so only threads and order are
    // compared.
    let (theirs, ours) = both(dir.path(), "run", false, &|bin, _dir, log| {
        let o = Command::new(bin)
            .env("LIFECYCLE_LOG", log)
            .args([
                "-U",
                "-",
                &so,
                "k=v",
                "--run",
                "timeout 60 nbdinfo \"$uri\" >/dev/null",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        // The server's process is the one that ran after_fork.
        find(&read_log(log), "after_fork").pid
    });
    for events in [&theirs, &ours] {
        assert_eq!(
            names(&events[..5]),
            [
                "load",
                "config",
                "config_complete",
                "get_ready",
                "after_fork"
            ],
            "{events:?}"
        );
        // Every connection's callbacks came before the end.
        assert!(names(events).contains(&"close"), "{events:?}");
    }
}

#[test]
fn after_fork_runs_in_the_daemon_whose_pid_is_in_the_pid_file() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("lifecycle-daemon");
    let so = compile(dir.path(), "PARALLEL").display().to_string();
    let (_, ours) = both(dir.path(), "daemon", true, &|bin, dir, log| {
        let sock = dir.join(format!("{}.sock", log.display()));
        let pidfile = dir.join(format!("{}.pid", log.display()));
        let _ = std::fs::remove_file(&pidfile);
        // Without -f the server forks; the parent returns once the
        // daemon listens and has written its pid file.
        let o = Command::new(bin)
            .env("LIFECYCLE_LOG", log)
            .arg("-U")
            .arg(&sock)
            .arg("--pidfile")
            .arg(&pidfile)
            .arg(&so)
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        assert!(wait_for(
            || std::fs::read_to_string(&pidfile).is_ok_and(|s| s.ends_with('\n'))
        ));
        let pid: i32 = std::fs::read_to_string(&pidfile)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        let o = Command::new("timeout")
            .args(["60", "nbdinfo", &uri])
            .output()
            .unwrap();
        assert!(o.status.success(), "nbdinfo: {o:?}");
        // The daemon ran after_fork and served the client.
        let before = read_log(log);
        let fork = find(&before, "after_fork");
        assert_eq!(
            fork.pid, pid,
            "{bin}: after_fork not in the daemon: {before:?}"
        );
        assert!(find(&before, "load").pid != pid, "{bin}: {before:?}");
        assert_eq!(find(&before, "open").pid, pid, "{bin}: {before:?}");
        assert!(wait_for(|| all_closed(log)), "{bin}: {:?}", read_log(log));
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        assert!(wait_for(|| !pid_alive(pid)), "{bin}: still running");
        pid
    });
    assert_eq!(
        names(&ours[..4]),
        ["load", "config_complete", "get_ready", "after_fork"],
        "{ours:?}"
    );
}

#[test]
fn cleanup_and_unload_run_before_exit_on_sigterm() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("lifecycle-term");
    let so = compile(dir.path(), "PARALLEL").display().to_string();
    both(dir.path(), "sigterm", true, &|bin, dir, log| {
        let sock = dir.join(format!("{}.sock", log.display()));
        let mut child = Command::new(bin)
            .env("LIFECYCLE_LOG", log)
            .arg("-f")
            .arg("-U")
            .arg(&sock)
            .arg(&so)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(|| sock.exists()), "{bin}: no socket");
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        let o = Command::new("timeout")
            .args(["60", "nbdinfo", &uri])
            .output()
            .unwrap();
        assert!(o.status.success(), "nbdinfo: {o:?}");
        assert!(wait_for(|| all_closed(log)), "{bin}: {:?}", read_log(log));
        let pid = child.id() as i32;
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let status = child.wait().unwrap();
        assert!(status.code().is_some(), "{bin}: killed: {status:?}");
        pid
    });
}

#[test]
fn with_s_and_serialized_requests_the_connection_is_served_on_the_main_thread() {
    let dir = TempDir::new("lifecycle-stdin");
    // Below the parallel model nbdkit starts no worker threads, so under
    // -s every callback runs on the main thread: what the ruby plugin
    // needs. (With a parallel plugin Debian's nbdkit runs requests on
    // worker threads even under -s, ours on the main thread.)
    let so = compile(dir.path(), "SERIALIZE_ALL_REQUESTS")
        .display()
        .to_string();
    let (_, events) = both(dir.path(), "stdin", true, &|bin, _dir, log| {
        // nbdkit -s, started by the client on a socket pair.
        let o = Command::new("timeout")
            .args(["60", "/usr/bin/python3", "-c"])
            .arg(
                "import nbd, sys\n\
                 h = nbd.NBD()\n\
                 h.connect_command(sys.argv[1:])\n\
                 assert h.pread(512, 0) == b'L' * 512\n\
                 h.flush()\n\
                 h.shutdown()\n",
            )
            .args([bin, "-s", &so])
            .env("LIFECYCLE_LOG", log)
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        find(&read_log(log), "load").pid
    });
    for name in ["open", "flush", "close"] {
        assert!(find(&events, name).main, "{name}: {events:?}");
    }
}

#[test]
fn unload_waits_for_a_callback_still_running() {
    let dir = TempDir::new("lifecycle-inflight");
    let so = compile(dir.path(), "PARALLEL").display().to_string();
    let (theirs, ours) = both(dir.path(), "in-flight", true, &|bin, dir, log| {
        let sock = dir.join(format!("{}.sock", log.display()));
        let mut server = Command::new(bin)
            .env("LIFECYCLE_LOG", log)
            .arg("-f")
            .arg("-U")
            .arg(&sock)
            .arg(&so)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(|| sock.exists()), "{bin}: no socket");
        let uri = format!("nbd+unix:///?socket={}", sock.display());
        // A read the plugin takes a second over; the client may see it
        // fail when the server goes.
        let mut client = Command::new("timeout")
            .args(["60", "/usr/bin/python3", "-c"])
            .arg("import nbd, sys\nh = nbd.NBD()\nh.connect_uri(sys.argv[1])\nh.pread(512, 8192)\n")
            .arg(&uri)
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        assert!(wait_for(|| read_log(log)
            .iter()
            .any(|e| e.name == "pread_start")));
        let pid = server.id() as i32;
        // SAFETY: kill(2) with a pid and a signal number.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let _ = server.wait();
        let _ = client.wait();
        pid
    });
    for events in [&theirs, &ours] {
        let n = names(events);
        let end = n.iter().position(|e| *e == "pread_end");
        let unload = n.iter().position(|e| *e == "unload");
        assert!(end.is_some() && end < unload, "{n:?}");
    }
}

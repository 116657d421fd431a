//! The log filter's file and script against Debian's nbdkit 1.32: the
//! same client against both, the logs compared line by line.

mod common;
mod stack;

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use stack::*;

/// A client that makes every kind of request, one of them failing (the
/// error filter below the log fails every read with EIO and every trim
/// with ENOSPC), then a map, a block status with REQ_ONE and an export
/// list, each on a connection of its own.
const CLIENT: &str = r#"PATH=/usr/bin:$PATH nbdsh -u "$uri" -c '
try:
    h.pread(512, 0)
except nbd.Error:
    pass
h.pwrite(b"a" * 512, 0, nbd.CMD_FLAG_FUA)
h.zero(512, 0, nbd.CMD_FLAG_FAST_ZERO | nbd.CMD_FLAG_NO_HOLE)
h.zero(512, 4096)
try:
    h.trim(512, 0)
except nbd.Error:
    pass
h.cache(512, 0)
h.flush()
' &&
nbdinfo --map "$uri" >/dev/null &&
PATH=/usr/bin:$PATH nbdsh -c '
h.add_meta_context("base:allocation")
h.connect_uri("'"$uri"'")
h.block_status(65536, 0, lambda *a: 0, nbd.CMD_FLAG_REQ_ONE)
' &&
nbdinfo --list "$uri" >/dev/null"#;

/// The server's arguments: always a log file (the client waits on it),
/// and a log script if given.
fn args(logfile: &Path, logscript: Option<&str>) -> Vec<String> {
    [
        "--filter=log",
        "--filter=error",
        "memory",
        "1M",
        "error-pread-rate=1",
        "error-pread=EIO",
        "error-trim-rate=1",
        "error-trim=ENOSPC",
    ]
    .iter()
    .map(|s| s.to_string())
    .chain([format!("logfile={}", logfile.display())])
    .chain(logscript.map(|s| format!("logscript={s}")))
    .collect()
}

/// Runs the client against `bin`. Once the client is done, the command
/// waits for the last connection's Disconnect line: our server exits as
/// soon as the --run command does, and may do so before the last
/// connection is closed (and its Disconnect logged); nbdkit waits for
/// its connections. That is the server's, not the filter's.
fn run_client(bin: &str, args: &[String], logfile: &Path) {
    let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let cmd = format!(
        "{CLIENT} && for i in $(seq 100); do \
         grep -q 'connection=4 Disconnect' '{}' && break; sleep 0.1; done",
        logfile.display()
    );
    let o = run_with(bin, &a, &cmd);
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
}

/// The log written by `bin`, normalised: timestamps removed (the first
/// two words of a line), and the `Fork` line dropped: nbdkit forks for
/// --run (the server runs in a child of the process that got ready),
/// ours serves --run from the process that started, so it has no fork
/// to report (it does write Fork when it daemonises).
fn log_of(bin: &str) -> Vec<String> {
    require("nbdsh", "python3-libnbd");
    require("nbdinfo", "libnbd-bin");
    let tmp = TempDir::new("log-filter");
    let log = tmp.path().join("log");
    run_client(bin, &args(&log, None), &log);
    let s = std::fs::read_to_string(&log).unwrap();
    s.lines()
        .map(|l| {
            let f: Vec<&str> = l.splitn(3, ' ').collect();
            assert_eq!(f.len(), 3, "{l}");
            // "YYYY-MM-DD HH:MM:SS.uuuuuu"
            assert_eq!((f[0].len(), f[1].len()), (10, 15), "{l}");
            f[2].to_string()
        })
        .filter(|l| l != "Fork")
        .collect()
}

#[test]
fn log_file_matches_debian() {
    let ours = log_of(BIN);
    let theirs = log_of(DEBIAN_NBDKIT);
    // Line by line within each connection, and within the lines of no
    // connection (Ready, Preconnect, ListExports): between them the order
    // is a race in both servers (a client's next connection may be
    // accepted, and its Preconnect logged, before the server has closed
    // the one the client just left).
    let by_source = |log: &[String]| {
        let mut m: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for l in log {
            let key = match l.split(' ').next() {
                Some(c) if c.starts_with("connection=") => c.to_string(),
                _ => "server".to_string(),
            };
            m.entry(key).or_default().push(l.clone());
        }
        m
    };
    let (o, t) = (by_source(&ours), by_source(&theirs));
    assert_eq!(o.keys().collect::<Vec<_>>(), t.keys().collect::<Vec<_>>());
    for (k, o) in &o {
        let t = &t[k];
        for (i, (ol, tl)) in o.iter().zip(t).enumerate() {
            assert_eq!(
                ol, tl,
                "{k}, line {i}\nours:\n{ours:#?}\nDebian's:\n{theirs:#?}"
            );
        }
        assert_eq!(
            o.len(),
            t.len(),
            "{k}\nours:\n{ours:#?}\nDebian's:\n{theirs:#?}"
        );
    }
    // The client's requests are all there, the failures named.
    for want in [
        "connection=1 ...Read id=1 return=-1 error=EIO",
        "connection=1 ...Trim id=5 return=-1 error=ENOSPC",
        "connection=1 Disconnect transactions=7",
        "connection=3 Extents id=1 offset=0x0 count=0x10000 req_one=1 ...",
        "...ListExports id=1 exports=(\"\") return=0",
        "connection=4 Disconnect transactions=0",
    ] {
        assert!(ours.iter().any(|l| l == want), "no {want:?} in {ours:#?}");
    }
}

/// What the log script sees: one line per entry with the variables the
/// manual names and some of the entries' own fields. Both servers start
/// each run of the script without waiting for it, so runs finish (and
/// append their lines) in any order, some after the server has gone:
/// wait for `n` lines, and sort them.
fn script_of(bin: &str, n: usize) -> Vec<String> {
    require("nbdsh", "python3-libnbd");
    require("nbdinfo", "libnbd-bin");
    let tmp = TempDir::new("log-script");
    let out = tmp.path().join("out");
    let script = format!(
        "echo \"$type $act c=${{connection-}} id=${{id-}} off=${{offset-}} count=${{count-}} \
         r=${{return-}} e=${{error-}} export=${{export-}} size=${{size-}} x=${{exports[*]-}}\" \
         >> '{}'",
        out.display()
    );
    let log = tmp.path().join("log");
    run_client(bin, &args(&log, Some(&script)), &log);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut lines: Vec<String> = loop {
        let s = std::fs::read_to_string(&out).unwrap_or_default();
        // Our server has no fork to report under --run (see log_of).
        let l: Vec<String> = s
            .lines()
            .filter(|l| !l.starts_with("PRINT Fork "))
            .map(str::to_string)
            .collect();
        if l.len() >= n || Instant::now() > deadline {
            break l;
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    lines.sort();
    lines
}

#[test]
fn log_script_matches_debian() {
    // As many runs as lines in the file.
    let n = log_of(BIN).len();
    let ours = script_of(BIN, n);
    let theirs = script_of(DEBIAN_NBDKIT, n);
    assert_eq!(ours.len(), n, "{ours:#?}");
    assert_eq!(ours, theirs);
    for want in [
        "LEAVE Read c=1 id=1 off= count= r=-1 e=EIO export= size= x=",
        "PRINT Connect c=1 id= off= count= r= e= export= size=0x100000 x=",
        "LEAVE ListExports c= id=1 off= count= r=0 e= export= size= x=",
    ] {
        assert!(ours.iter().any(|l| l == want), "no {want:?} in {ours:#?}");
    }
}

/// A read-only server (nothing that writes is offered: trim, zero, fua
/// and fast_zero are 0 as write is), block size limits and an export
/// name that needs quoting, in the Connect line.
#[test]
fn connect_line_matches_debian_read_only() {
    require("nbdinfo", "libnbd-bin");
    let logs: Vec<Vec<String>> = [BIN, DEBIAN_NBDKIT]
        .iter()
        .map(|bin| {
            let tmp = TempDir::new("log-ro");
            let log = tmp.path().join("log");
            let logfile = format!("logfile={}", log.display());
            let o = run_with(
                bin,
                &[
                    "-r",
                    "--filter=log",
                    "--filter=blocksize-policy",
                    "memory",
                    "1M",
                    "blocksize-minimum=512",
                    "blocksize-preferred=4096",
                    "blocksize-maximum=1M",
                    &logfile,
                ],
                r#"nbdinfo "nbd+unix:///foo%20bar?socket=$unixsocket" >/dev/null"#,
            );
            assert!(o.status.success(), "{bin}: {o:?}");
            let s = std::fs::read_to_string(&log).unwrap();
            s.lines()
                .map(|l| l.splitn(3, ' ').nth(2).unwrap().to_string())
                // Only the Connect lines: the rest is covered above, and
                // its order between connections is a race here too.
                .filter(|l| l.contains(" Connect "))
                .collect()
        })
        .collect();
    assert_eq!(logs[0], logs[1]);
    assert!(
        logs[0].iter().any(|l| l
            == "connection=1 Connect export=\"foo bar\" tls=0 size=0x100000 minsize=0x200 \
                prefsize=0x1000 maxsize=0x100000 write=0 flush=1 rotational=0 trim=0 zero=0 \
                fua=0 extents=1 cache=2 fast_zero=0"),
        "{:#?}",
        logs[0]
    );
}

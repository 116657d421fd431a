//! The filters through the server binary and real clients, against
//! results computed here and, where useful, Debian's nbdkit.

mod common;
mod stack;

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nbd_core::wire::consts::{cmd, cmd_flags, tx_flags};

use common::*;
use stack::*;

const HOLE_ZERO: u32 = 3;

#[test]
fn offset_and_range() {
    let args = [
        "--filter=offset",
        "pattern",
        "1M",
        "offset=4100",
        "range=64K",
    ];
    let ours = read_all(&args);
    assert_eq!(ours, pattern_bytes(4100, 65536));
    assert_eq!(ours, read_all_with(DEBIAN_NBDKIT, &args));
    let tail = read_all(&["--filter=offset", "pattern", "1M", "offset=1040000"]);
    assert_eq!(tail, pattern_bytes(1040000, (1 << 20) - 1040000));
    // Extents move with the window.
    let srv = Server::start(&["--filter=offset", "memory", "1M", "offset=65536"]);
    let mut c = srv.client();
    c.write(32768, b"x");
    c.disconnect();
    let m = map(&[
        "--filter=offset",
        "--filter=offset",
        "memory",
        "1M",
        "offset=65536",
    ]);
    assert_eq!(m, vec![(0, (1 << 20) - 65536, HOLE_ZERO)]);
    refused_on_open(&["--filter=offset", "null", "1M", "offset=2M"], "beyond");
    bad(&["--filter=offset", "null", "1M", "range=1x"], "range");
}

#[test]
fn truncate_pads_and_rounds() {
    let d = read_all(&["--filter=truncate", "pattern", "1000", "round-up=512"]);
    assert_eq!(d.len(), 1024);
    assert_eq!(&d[..1000], &pattern_bytes(0, 1000)[..]);
    assert!(d[1000..].iter().all(|&b| b == 0));
    assert_eq!(
        info(
            &["--filter=truncate", "pattern", "1000", "round-down=512"],
            "export-size"
        ),
        "512"
    );
    assert_eq!(
        info(
            &["--filter=truncate", "pattern", "1000", "truncate=10K"],
            "export-size"
        ),
        "10240"
    );
    let m = map(&[
        "--filter=truncate",
        "data",
        "1 2 3",
        "size=4096",
        "truncate=8192",
    ]);
    assert_eq!(m.last().copied(), Some((4096, 4096, HOLE_ZERO)));
    let srv = Server::start(&["--filter=truncate", "memory", "4096", "truncate=8192"]);
    let mut c = srv.client();
    c.write(6000, &[0; 10]); // zeroes past the end are fine
    assert_eq!(c.cmd(cmd::WRITE, 0, 6000, 1, &[1]).error, 28);
    c.disconnect();
    bad(
        &["--filter=truncate", "null", "1M", "round-up=3"],
        "power of 2",
    );
}

/// Writes a partition table with util-linux's sfdisk.
fn sfdisk(img: &Path, script: &str) {
    use std::io::Write;
    let bin = require("sfdisk", "fdisk");
    let mut ch = Command::new(bin)
        .arg("--quiet")
        .arg(img)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    ch.stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(ch.wait().unwrap().success(), "sfdisk {script}");
}

#[test]
fn partition_mbr_and_gpt() {
    let tmp = TempDir::new("part");
    for label in ["dos", "gpt"] {
        let img = tmp.path().join(format!("{label}.img"));
        std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
        let script = format!("label: {label}\nstart=2048, size=4096\nstart=8192, size=2048\n");
        sfdisk(&img, &script);
        let mut d = std::fs::read(&img).unwrap();
        let p2 = pattern(2048 * 512, 9);
        d[8192 * 512..8192 * 512 + p2.len()].copy_from_slice(&p2);
        std::fs::write(&img, &d).unwrap();
        let im = img.to_str().unwrap();
        let args = ["--filter=partition", "file", im, "partition=2"];
        assert_eq!(read_all(&args), p2, "{label}");
        assert_eq!(read_all_with(DEBIAN_NBDKIT, &args), p2, "{label}");
        assert_eq!(
            info(
                &["--filter=partition", "file", im, "partition=1"],
                "export-size"
            ),
            "2097152"
        );
        refused_on_open(
            &["--filter=partition", "file", im, "partition=3"],
            "partition 3",
        );
    }
    refused_on_open(
        &["--filter=partition", "null", "1M", "partition=1"],
        "partition table",
    );
}

#[test]
fn partition_mbr_logical_partitions_match_debian() {
    let tmp = TempDir::new("part-logical");
    let img = tmp.path().join("dos.img");
    std::fs::write(&img, vec![0u8; 8 << 20]).unwrap();
    // A primary partition, then an extended one holding three logical
    // partitions (5, 6, 7), each with its own EBR in front.
    let script = "label: dos\nstart=2048, size=1024\nstart=4096, size=12288, type=5\n\
                  start=6144, size=1024\nstart=10240, size=2048\nstart=14336, size=512\n";
    sfdisk(&img, script);
    let mut d = std::fs::read(&img).unwrap();
    let parts = [
        (6144usize, 1024usize, 5u8),
        (10240, 2048, 6),
        (14336, 512, 7),
    ];
    for &(start, size, seed) in &parts {
        let p = pattern(size * 512, seed);
        d[start * 512..(start + size) * 512].copy_from_slice(&p);
    }
    std::fs::write(&img, &d).unwrap();
    let im = img.to_str().unwrap();
    for &(start, size, seed) in &parts {
        let n = format!("partition={seed}");
        let args = ["--filter=partition", "file", im, n.as_str()];
        let want = &d[start * 512..(start + size) * 512];
        assert_eq!(read_all(&args), want, "{n}");
        assert_eq!(read_all_with(DEBIAN_NBDKIT, &args), want, "{n}");
    }
    refused_on_open(
        &["--filter=partition", "file", im, "partition=8"],
        "partition 8",
    );
}

#[test]
fn cow_never_writes_below() {
    let tmp = TempDir::new("cow");
    let base = tmp.path().join("base");
    let orig = pattern(1 << 20, 4);
    std::fs::write(&base, &orig).unwrap();
    let srv = Server::start(&["--filter=cow", "file", base.to_str().unwrap()]);
    let mut c = srv.client();
    c.write(70000, b"copy on write");
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 200000, 100000, &[]).error, 0);
    assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
    let mut want = orig.clone();
    want[70000..70013].copy_from_slice(b"copy on write");
    want[200000..300000].fill(0);
    assert_eq!(c.read(0, 1 << 20), want);
    c.disconnect();
    drop(srv);
    assert_eq!(std::fs::read(&base).unwrap(), orig);
    // Also over a read-only plugin: the client may write.
    let srv = Server::start(&["--filter=cow", "pattern", "1M"]);
    let mut c = srv.client();
    assert_eq!(c.flags & tx_flags::READ_ONLY, 0);
    c.write(5, b"abc");
    let mut want = pattern_bytes(0, 64);
    want[5..8].copy_from_slice(b"abc");
    assert_eq!(c.read(0, 64), want);
    c.disconnect();
}

fn flags_of(args: &[&str]) -> u16 {
    let srv = Server::start(args);
    let c = srv.client();
    let f = c.flags;
    c.disconnect();
    f
}

#[test]
fn feature_filters_change_flags() {
    let mem = ["memory", "1M"];
    // --filter=X first, then the plugin, then the parameters.
    let with = |f: &[&str]| -> u16 {
        let (filters, params): (Vec<&str>, Vec<&str>) = f.iter().partition(|a| a.starts_with("--"));
        flags_of(&[&filters[..], &mem[..], &params[..]].concat())
    };
    assert_ne!(with(&[]) & tx_flags::SEND_WRITE_ZEROES, 0);
    assert_eq!(with(&["--filter=nozero"]) & tx_flags::SEND_WRITE_ZEROES, 0);
    assert_ne!(
        with(&["--filter=nozero", "zeromode=emulate"]) & tx_flags::SEND_WRITE_ZEROES,
        0
    );
    assert_eq!(with(&["--filter=nocache"]) & tx_flags::SEND_CACHE, 0);
    assert_ne!(
        with(&["--filter=nocache", "cachemode=nop"]) & tx_flags::SEND_CACHE,
        0
    );
    assert_eq!(
        with(&["--filter=multi-conn", "multi-conn-mode=disable"]) & tx_flags::CAN_MULTI_CONN,
        0
    );
    assert_ne!(
        flags_of(&[
            "--filter=multi-conn",
            "pattern",
            "1M",
            "multi-conn-mode=emulate"
        ]) & tx_flags::CAN_MULTI_CONN,
        0
    );
    // fuamode=none: listed by nbdkit's manual, refused by 1.32.5.
    assert_eq!(
        with(&["--filter=fua", "fuamode=none"]) & tx_flags::SEND_FUA,
        0
    );
    let debian = run_with(
        DEBIAN_NBDKIT,
        &["--filter=fua", "null", "1M", "fuamode=none"],
        "true",
    );
    assert!(
        !debian.status.success(),
        "nbdkit 1.32.5 accepts fuamode=none now?"
    );
    assert_ne!(
        with(&["--filter=fua", "fuamode=force"]) & tx_flags::SEND_FUA,
        0
    );
    bad(&["--filter=fua", "null", "fuamode=sometimes"], "fuamode");
    // Emulated zero through nozero writes real zeroes.
    let srv = Server::start(&["--filter=nozero", "memory", "1M", "zeromode=emulate"]);
    let mut c = srv.client();
    c.write(0, &[5u8; 4096]);
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 1000, 1000, &[]).error, 0);
    let r = c.cmd(cmd::WRITE_ZEROES, cmd_flags::FAST_ZERO, 0, 10, &[]);
    assert_eq!(r.error, 95, "fast zero refused with ENOTSUP");
    let got = c.read(0, 4096);
    assert!(got[..1000].iter().all(|&b| b == 5) && got[1000..2000].iter().all(|&b| b == 0));
    c.disconnect();
    // noparallel, readahead, multi-conn and fua keep the data intact.
    for f in [
        &["--filter=noparallel"][..],
        &["--filter=readahead"],
        &["--filter=fua", "fuamode=emulate"],
        &["--filter=noparallel", "serialize=connections"],
    ] {
        let (filters, params): (Vec<&str>, Vec<&str>) = f.iter().partition(|a| a.starts_with("--"));
        let srv = Server::start(&[&filters[..], &mem[..], &params[..]].concat());
        let mut c = srv.client();
        c.write(1000, b"hello");
        assert_eq!(c.read(990, 20)[10..15], *b"hello", "{f:?}");
        c.write(1002, b"LL");
        assert_eq!(c.read(1000, 5), b"heLLo", "{f:?}");
        c.disconnect();
    }
}

#[test]
fn noextents_reports_all_data() {
    // memory 1M has holes; through noextents it is all data, as with
    // Debian's nbdkit (which still offers base:allocation).
    assert_eq!(map(&["memory", "1M"]), vec![(0, 1 << 20, HOLE_ZERO)]);
    let ours = map(&["--filter=noextents", "memory", "1M"]);
    assert_eq!(ours, vec![(0, 1 << 20, 0)]);
    assert_eq!(
        ours,
        map_with(DEBIAN_NBDKIT, &["--filter=noextents", "memory", "1M"])
    );
}

#[test]
fn blocksize_read_modify_write() {
    let srv = Server::start(&[
        "--filter=blocksize",
        "memory",
        "1M",
        "minblock=4096",
        "maxdata=8192",
    ]);
    let mut c = srv.client();
    let p = pattern(20000, 1);
    c.write(1234, &p);
    assert_eq!(c.read(1234, 20000), p);
    assert_eq!(c.read(1230, 4), vec![0; 4]);
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 1300, 100, &[]).error, 0);
    let mut want = p.clone();
    want[66..166].fill(0);
    assert_eq!(c.read(1234, 20000), want);
    c.disconnect();
    bad(
        &["--filter=blocksize", "null", "1M", "minblock=3"],
        "minblock",
    );
}

#[test]
fn protect_refuses_changes_to_protected_bytes() {
    let srv = Server::start(&[
        "--filter=protect",
        "data",
        "\"bootsector\" @505 1",
        "size=64K",
        "protect=0-511",
    ]);
    let mut c = srv.client();
    assert_eq!(c.cmd(cmd::WRITE, 0, 0, 4, b"BOOT").error, 1, "EPERM");
    c.write(0, b"boot"); // unchanged: allowed
    c.write(512, b"free");
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 500, 100, &[]).error, 1);
    assert_eq!(c.cmd(cmd::WRITE_ZEROES, 0, 512, 100, &[]).error, 0);
    assert_eq!(c.read(0, 10), b"bootsector");
    c.disconnect();
    bad(&["--filter=protect", "null", "1M", "protect=9-3"], "range");
}

#[test]
fn cache_writeback_reaches_the_disk_on_flush() {
    let tmp = TempDir::new("cache");
    let f = tmp.path().join("disk");
    std::fs::write(&f, vec![0u8; 1 << 20]).unwrap();
    for mode in ["writeback", "writethrough"] {
        let srv = Server::start(&[
            "--filter=cache",
            "file",
            f.to_str().unwrap(),
            &format!("cache={mode}"),
        ]);
        let mut c = srv.client();
        c.write(100_000, mode.as_bytes());
        assert_eq!(c.read(100_000, mode.len() as u32), mode.as_bytes());
        if mode == "writeback" {
            let on_disk = std::fs::read(&f).unwrap();
            assert!(
                on_disk[100_000..100_009].iter().all(|&b| b == 0),
                "written before flush"
            );
        }
        assert_eq!(c.cmd(cmd::FLUSH, 0, 0, 0, &[]).error, 0);
        assert_eq!(
            &std::fs::read(&f).unwrap()[100_000..100_000 + mode.len()],
            mode.as_bytes()
        );
        c.disconnect();
    }
}

#[test]
fn error_injection() {
    let srv = Server::start(&["--filter=error", "memory", "1M", "error-rate=100%"]);
    let mut c = srv.client();
    assert_eq!(c.cmd(cmd::READ, 0, 0, 512, &[]).error, 5, "EIO");
    c.disconnect();
    let srv = Server::start(&[
        "--filter=error",
        "memory",
        "1M",
        "error-pwrite=ENOSPC",
        "error-pwrite-rate=1",
    ]);
    let mut c = srv.client();
    assert_eq!(c.read(0, 512), vec![0; 512]);
    assert_eq!(c.cmd(cmd::WRITE, 0, 0, 1, &[1]).error, 28);
    c.disconnect();
    let tmp = TempDir::new("errfile");
    let trigger = tmp.path().join("trigger");
    let srv = Server::start(&[
        "--filter=error",
        "memory",
        "1M",
        "error-rate=100%",
        &format!("error-file={}", trigger.display()),
    ]);
    let mut c = srv.client();
    assert_eq!(c.cmd(cmd::READ, 0, 0, 512, &[]).error, 0);
    std::fs::write(&trigger, "").unwrap();
    assert_eq!(c.cmd(cmd::READ, 0, 0, 512, &[]).error, 5);
    std::fs::remove_file(&trigger).unwrap();
    assert_eq!(c.cmd(cmd::READ, 0, 0, 512, &[]).error, 0);
    c.disconnect();
    // Each injected error is logged, by us as by nbdkit.
    for bin in [BIN, DEBIAN_NBDKIT] {
        let args = ["--filter=error", "pattern", "1M", "error-pread-rate=1"];
        let o = run_with(bin, &args, "nbdcopy \"$uri\" - >/dev/null");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("error: injecting EIO error into pread"),
            "{bin}: {err}"
        );
        let args = [
            "--filter=error",
            "memory",
            "1M",
            "error-extents=ENOSPC",
            "error-extents-rate=1",
        ];
        let o = run_with(bin, &args, "nbdinfo --map \"$uri\"");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(
            err.contains("error: injecting ENOSPC error into extents"),
            "{bin}: {err}"
        );
    }
    bad(&["--filter=error", "null", "error=EFOO"], "EFOO");
    bad(
        &["--filter=error", "null", "error-rate=150%"],
        "probability",
    );
}

#[test]
fn retry_rides_out_errors_with_fractional_delays() {
    // Half the reads below fail; 30 retries make a failure of every
    // attempt vanishingly unlikely (2^-31).
    let srv = Server::start(&[
        "--filter=retry",
        "--filter=error",
        "pattern",
        "1M",
        "error-pread-rate=50%",
        "retries=30",
        "retry-delay=0.001",
        "retry-exponential=no",
    ]);
    let mut c = srv.client();
    for i in 0..20u64 {
        assert_eq!(c.read(i * 4096, 64), pattern_bytes(i * 4096, 64));
    }
    c.disconnect();
    let debian = run_with(
        DEBIAN_NBDKIT,
        &["--filter=retry", "null", "retry-delay=0.5"],
        "true",
    );
    assert!(
        !debian.status.success(),
        "nbdkit 1.32.5 takes fractional retry-delay now?"
    );
    bad(
        &["--filter=retry", "null", "retry-delay=soon"],
        "retry-delay",
    );
}

#[test]
fn delay_and_key_routing() {
    // Keys go to the layer that knows them: rdelay to delay, offset to
    // offset, size (magic) to the plugin.
    let d = read_all(&[
        "--filter=delay",
        "--filter=offset",
        "pattern",
        "64K",
        "rdelay=1ms",
        "offset=8",
        "wdelay=2ms",
    ]);
    assert_eq!(d, pattern_bytes(8, 65536 - 8));
    bad(&["--filter=delay", "null", "rdelay=fast"], "rdelay");
    bad(&["--filter=delay", "null", "1M", "speed=3"], "speed");
    bad(&["--filter=nosuchfilter", "null"], "nosuchfilter");
}

#[test]
fn log_writes_enter_and_leave_lines() {
    let tmp = TempDir::new("log");
    let log = tmp.path().join("log");
    run(
        &[
            "--filter=log",
            "pattern",
            "1M",
            &format!("logfile={}", log.display()),
        ],
        // The server exits when the command does, which may be before it
        // has closed the connection and logged the Disconnect: wait for it.
        &format!(
            "nbdcopy \"$uri\" - >/dev/null && for i in $(seq 100); do \
             grep -q Disconnect '{}' && break; sleep 0.1; done",
            log.display()
        ),
    );
    let s = std::fs::read_to_string(&log).unwrap();
    let enter = s.lines().find(|l| l.contains(" Read id=")).expect(&s);
    // "YYYY-MM-DD HH:MM:SS.uuuuuu connection=1 Read id=N offset=0x0 count=0x... ..."
    let f: Vec<&str> = enter.split(' ').collect();
    assert_eq!(f[0].len(), 10, "{enter}");
    assert_eq!(f[1].len(), 15, "{enter}");
    assert_eq!(f[2], "connection=1", "{enter}");
    assert_eq!(f[3], "Read", "{enter}");
    assert!(
        f[4].starts_with("id=") && f[5].starts_with("offset=0x") && f[6].starts_with("count=0x"),
        "{enter}"
    );
    assert_eq!(*f.last().unwrap(), "...");
    let id = f[4];
    assert!(
        s.lines()
            .any(|l| l.ends_with(&format!(" connection=1 ...Read {id} return=0"))),
        "{s}"
    );
    let words = |l: &str| l.splitn(3, ' ').nth(2).unwrap().to_string();
    let lines: Vec<String> = s.lines().map(words).collect();
    assert_eq!(lines[0], "Ready thread_model=3", "{s}");
    assert_eq!(lines[1], "Preconnect id=1 readonly=0 ...", "{s}");
    assert_eq!(lines[2], "...Preconnect id=1 return=0", "{s}");
    assert!(lines[3].starts_with("connection=1 Connect export=\"\" tls=0 size=0x100000 "));
    let requests = lines
        .iter()
        .filter(|l| l.starts_with("connection=1 ") && l.ends_with(" ..."))
        .count();
    assert_eq!(
        lines.last().unwrap(),
        &format!("connection=1 Disconnect transactions={requests}"),
        "{s}"
    );
}

#[test]
fn stats_file_is_written_at_exit() {
    let tmp = TempDir::new("stats");
    let st = tmp.path().join("stats");
    run(
        &[
            "--filter=stats",
            "pattern",
            "1M",
            &format!("statsfile={}", st.display()),
        ],
        "nbdcopy \"$uri\" - >/dev/null",
    );
    let s = std::fs::read_to_string(&st).unwrap();
    assert!(s.starts_with("total: "), "{s}");
    let read = s.lines().find(|l| l.starts_with("read: ")).expect(&s);
    assert!(read.contains("1.00 MiB"), "{read}");
    bad(&["--filter=stats", "null"], "statsfile");
}

#[test]
fn tar_entry_read_and_overwrite() {
    let tmp = TempDir::new("tar");
    let d = tmp.path();
    std::fs::write(d.join("a.txt"), b"first file").unwrap();
    let disk = pattern(10000, 7);
    std::fs::write(d.join("disk.img"), &disk).unwrap();
    let st = Command::new("tar")
        .current_dir(d)
        .args(["cf", "t.tar", "a.txt", "disk.img"])
        .status()
        .unwrap();
    assert!(st.success());
    let tar = d.join("t.tar");
    let before = std::fs::read(&tar).unwrap();
    let t = tar.to_str().unwrap();
    assert_eq!(
        read_all(&["--filter=tar", "file", t, "tar-entry=disk.img"]),
        disk
    );
    assert_eq!(
        read_all_with(
            DEBIAN_NBDKIT,
            &["--filter=tar", "file", t, "tar-entry=disk.img"]
        ),
        disk
    );
    // Overwrite the file inside the tar with new data of the same size.
    let new = pattern(10000, 8);
    let srv = Server::start(&["--filter=tar", "file", t, "tar-entry=disk.img"]);
    let mut c = srv.client();
    c.write(0, &new);
    c.disconnect();
    drop(srv);
    std::fs::remove_file(d.join("disk.img")).unwrap();
    assert!(Command::new("tar")
        .current_dir(d)
        .args(["xf", "t.tar", "disk.img"])
        .status()
        .unwrap()
        .success());
    assert_eq!(std::fs::read(d.join("disk.img")).unwrap(), new);
    let after = std::fs::read(&tar).unwrap();
    assert_eq!(after.len(), before.len());
    assert_eq!(
        after.iter().zip(&before).filter(|(a, b)| a != b).count(),
        new.iter().zip(&disk).filter(|(a, b)| a != b).count()
    );
    refused_on_open(
        &["--filter=tar", "file", t, "tar-entry=missing"],
        "not found",
    );
}

#[test]
fn exitwhen_file_created_stops_the_server() {
    let tmp = TempDir::new("exitwhen");
    let f = tmp.path().join("stop");
    let sock = tmp.path().join("sock");
    let mut child = Command::new(BIN)
        .args(["-f", "-U"])
        .arg(&sock)
        .args(["--filter=exitwhen", "null", "1M", "exit-when-poll=0.05"])
        .arg(format!("exit-when-file-created={}", f.display()))
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    while !sock.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "server did not start"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(child.try_wait().unwrap().is_none());
    std::fs::write(&f, "").unwrap();
    let t = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        if t.elapsed() > Duration::from_secs(20) {
            let _ = child.kill();
            panic!("server did not exit after the file was created");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    assert!(status.success(), "{status:?}");
}

/// In the background (no -f), the poller runs in the forked server from
/// the start: the file appears before any client connected, and the
/// server exits.
#[test]
fn exitwhen_polls_in_the_forked_server_before_any_connection() {
    let tmp = TempDir::new("exitwhen-fork");
    let f = tmp.path().join("stop");
    let sock = tmp.path().join("sock");
    let pidfile = tmp.path().join("pid");
    let st = Command::new(BIN)
        .arg("-U")
        .arg(&sock)
        .arg("-P")
        .arg(&pidfile)
        .args(["--filter=exitwhen", "null", "1M", "exit-when-poll=0.05"])
        .arg(format!("exit-when-file-created={}", f.display()))
        .stdin(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    assert!(eventually(|| std::fs::read_to_string(&pidfile)
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false)));
    let pid: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(pid_alive(pid));
    std::fs::write(&f, "").unwrap();
    let t = Instant::now();
    while pid_alive(pid) {
        if t.elapsed() > Duration::from_secs(20) {
            // SAFETY: kill(2) of the server this test started.
            unsafe { libc::kill(pid, libc::SIGKILL) };
            panic!("the forked server did not exit after the file was created");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn ip_parses_literal_addresses() {
    // nbdkit 1.32.5 cannot parse allow=127.0.0.1; ours takes it (the
    // rules themselves are checked at preconnect: see the unit tests).
    let args = [
        "--filter=ip",
        "null",
        "1M",
        "allow=127.0.0.1,::1,10.0.0.0/8,unix,uid:0,gid:0",
        "deny=all",
    ];
    let debian = run_with(DEBIAN_NBDKIT, &args, "true");
    assert!(
        !debian.status.success(),
        "nbdkit 1.32.5 parses literal addresses now?"
    );
    run(&args, "true");
    bad(&["--filter=ip", "null", "allow=300.1.1.1"], "300.1.1.1");
    bad(&["--filter=ip", "null", "deny=10.0.0.0/40"], "prefix");
    run(
        &["--filter=limit", "--filter=exitlast", "null", "limit=2"],
        "nbdinfo --size \"$uri\" >/dev/null",
    );
    bad(&["--filter=limit", "null", "limit=-1"], "limit");
}

/// A GO for the default export on a fresh connection: the reply type.
fn go_reply(srv: &Server) -> u32 {
    let mut s = srv.raw();
    greet(&mut s, nbd_core::wire::consts::client_flags::ALL);
    let go = nbd_core::wire::option::GoRequest {
        export_name: b"",
        info_requests: vec![],
    }
    .encode();
    send_option(&mut s, nbd_core::wire::consts::opt::GO, &go);
    loop {
        let (_, t, _) = option_reply(&mut s);
        if t != nbd_core::wire::consts::rep::INFO {
            return t;
        }
    }
}

#[test]
fn ip_refuses_a_denied_peer_before_the_handshake() {
    // Over a Unix socket: `deny=unix` closes the connection at once, before
    // a byte of greeting; `allow=unix` before `deny=all` lets it in.
    let srv = Server::start(&["--filter=ip", "null", "1M", "deny=unix"]);
    let mut s = srv.raw();
    assert!(is_closed(&mut s), "a denied client got a greeting");
    let srv = Server::start(&["--filter=ip", "null", "1M", "allow=unix", "deny=all"]);
    let c = srv.client();
    c.disconnect();
}

#[test]
fn limit_refuses_clients_over_the_limit() {
    let srv = Server::start(&["--filter=limit", "memory", "1M", "limit=1"]);
    let first = srv.client();
    let t = go_reply(&srv);
    assert!(
        nbd_core::wire::consts::rep::is_error(t),
        "second client's GO answered {t:#x}"
    );
    first.disconnect();
    // Once the first has gone, another may connect.
    assert!(eventually(
        || go_reply(&srv) == nbd_core::wire::consts::rep::ACK
    ));
}

#[test]
fn exitlast_stops_the_server_when_the_last_client_goes() {
    let srv = Server::start(&["--filter=exitlast", "memory", "1M"]);
    let pid = srv.pid() as i32;
    let a = srv.client();
    let b = srv.client();
    a.disconnect();
    std::thread::sleep(Duration::from_millis(200));
    assert!(pid_alive(pid), "exited while a client was still connected");
    b.disconnect();
    assert!(
        eventually(|| !pid_alive(pid)),
        "still running after the last client left"
    );
}

//! nbdkit-tls-fallback-filter(1) with `--tls=on` and PSK keys made here:
//! a plain-text client gets a 512-byte read-only message and reaches
//! nothing below the filter; a TLS client gets the plugin. Checked with
//! our raw client and Debian's nbdinfo and nbdcopy, against Debian's
//! nbdkit where it has the same filter.

mod common;
mod psk;
mod stack;

use std::path::Path;
use std::process::Command;

use nbd_core::wire::consts::{cmd, tx_flags};

use common::*;
use stack::*;

const DEFAULT_README: &[u8] =
    b"This NBD server requires TLS authentication before it will serve useful data.\n";

/// What a plain-text client reads: the message cut or padded to 512 bytes.
fn readme(msg: &[u8]) -> Vec<u8> {
    let mut v = msg[..msg.len().min(512)].to_vec();
    v.resize(512, 0);
    v
}

fn output(cmd: &mut Command) -> Vec<u8> {
    let o = cmd.output().expect("run client");
    assert!(o.status.success(), "{cmd:?}: {o:?}");
    o.stdout
}

fn nbdcopy_out(uri: &str) -> Vec<u8> {
    output(
        Command::new(require("nbdcopy", "libnbd-bin"))
            .arg(uri)
            .arg("-"),
    )
}

/// `nbdinfo ARGS`, without the lines that differ by design (see
/// [`comparable`]).
fn nbdinfo(args: &[&str]) -> String {
    comparable(output(
        Command::new(require("nbdinfo", "libnbd-bin")).args(args),
    ))
}

/// nbdinfo's output without the lines that differ by design between our
/// nbdkit and Debian's (the URI names a private socket; we advertise
/// block sizes, see README.md).
fn comparable(stdout: Vec<u8>) -> String {
    String::from_utf8(stdout)
        .unwrap()
        .lines()
        .filter(|l| {
            let t = l.trim_start();
            !t.starts_with("uri:") && !t.starts_with("block_size_")
        })
        .map(|l| format!("{l}\n"))
        .collect()
}

fn tls_args(keys: &Path) -> Vec<String> {
    vec![
        "--tls=on".into(),
        format!("--tls-psk={}", keys.display()),
        "--filter=tls-fallback".into(),
    ]
}

#[test]
fn plain_client_reads_the_message_tls_client_the_disk() {
    let dir = TempDir::new("tlsfb");
    let keys = psk::make_keys(dir.path());
    let disk = dir.path().join("disk.img");
    let data = pattern(1 << 20, 5);
    std::fs::write(&disk, &data).unwrap();
    let log = dir.path().join("log");
    let mut args = tls_args(&keys);
    args.extend([
        "--filter=log".into(),
        "file".into(),
        disk.display().to_string(),
        format!("logfile={}", log.display()),
    ]);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let srv = Server::start(&args);
    let sock = srv.sock.to_str().unwrap();

    // Plain text, our client: 512 read-only bytes; writes are refused.
    let mut c = srv.client();
    assert_eq!(c.size, 512);
    assert_ne!(c.flags & tx_flags::READ_ONLY, 0);
    assert_eq!(
        c.flags
            & (tx_flags::SEND_FLUSH
                | tx_flags::SEND_TRIM
                | tx_flags::SEND_WRITE_ZEROES
                | tx_flags::SEND_CACHE
                | tx_flags::CAN_MULTI_CONN),
        0
    );
    assert_eq!(c.read(0, 512), readme(DEFAULT_README));
    assert_eq!(
        c.cmd(cmd::WRITE, 0, 0, 4, b"evil").error,
        libc::EPERM as u32
    );
    assert_ne!(c.cmd(cmd::TRIM, 0, 0, 512, &[]).error, 0);
    assert_ne!(c.cmd(cmd::READ, 0, 0, 513, &[]).error, 0);
    let bs = c.cmd(cmd::BLOCK_STATUS, 0, 0, 512, &[]);
    assert_eq!(bs.extents, [(512, 0)]);
    c.disconnect();
    // Plain text, Debian's clients: the same bytes, whatever the export
    // name, and a list of one export "" with no description.
    assert_eq!(nbdcopy_out(&srv.uri()), readme(DEFAULT_README));
    let other = format!("nbd+unix:///secret?socket={sock}");
    assert_eq!(nbdcopy_out(&other), readme(DEFAULT_README));
    let list = nbdinfo(&["--list", &srv.uri()]);
    assert_eq!(
        list.lines()
            .filter(|l| l.starts_with("export="))
            .collect::<Vec<_>>(),
        ["export=\"\":"],
        "{list}"
    );
    assert!(!list.contains("description"), "{list}");
    let w = Command::new(require("nbdcopy", "libnbd-bin"))
        .arg(&disk)
        .arg(srv.uri())
        .output()
        .unwrap();
    assert!(!w.status.success(), "nbdcopy wrote in plain text: {w:?}");
    // Nothing reached the layers below tls-fallback: the log filter there
    // saw no connection and no request (only its Ready line and the
    // Preconnect calls, which tls-fallback passes on, as nbdkit's does),
    // and the disk is unchanged.
    let logged = std::fs::read_to_string(&log).unwrap();
    let reached: Vec<&str> = logged
        .lines()
        .filter(|l| !l.contains(" Ready ") && !l.contains("Preconnect "))
        .collect();
    assert!(reached.is_empty(), "{logged}");
    assert!(logged.contains(" Preconnect id=1 "), "{logged}");
    assert!(std::fs::read(&disk).unwrap() == data);

    // TLS: the disk itself, readable and writable.
    let tls = psk::tls_uri(sock, "", &keys);
    assert!(nbdcopy_out(&tls) == data, "TLS read differs from the disk");
    let new = pattern(1 << 20, 6);
    let src = dir.path().join("new.img");
    std::fs::write(&src, &new).unwrap();
    output(
        Command::new(require("nbdcopy", "libnbd-bin"))
            .arg(&src)
            .arg(&tls),
    );
    assert!(std::fs::read(&disk).unwrap() == new, "TLS write missing");
    let l = std::fs::read_to_string(&log).unwrap();
    assert!(
        l.lines()
            .any(|c| c.contains(" Connect export=\"\" tls=1 size=0x100000 ")
                && c.contains(" write=1 ")),
        "{l}"
    );
    assert!(l.contains(" Write id="), "{l}");
    // And plain text still gets only the message.
    assert_eq!(nbdcopy_out(&srv.uri()), readme(DEFAULT_README));
}

/// `tlsreadme=` is cut to 512 bytes and padded with NULs, as Debian's
/// nbdkit does; without TLS at all every client gets the message.
#[test]
fn tlsreadme_and_tls_off_as_debian() {
    let dir = TempDir::new("tlsfb-readme");
    let keys = psk::make_keys(dir.path());
    let short = "tlsreadme=Ask the admin for a key.";
    let long = format!("tlsreadme={}", "0123456789".repeat(60));
    for msg in [short, long.as_str()] {
        let mut args = tls_args(&keys);
        args.extend(["memory".into(), "1M".into(), msg.into()]);
        let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        let want = readme(msg.strip_prefix("tlsreadme=").unwrap().as_bytes());
        assert_eq!(read_all(&args), want);
        assert_eq!(read_all_with(DEBIAN_NBDKIT, &args), want);
    }
    let off = ["--filter=tls-fallback", "memory", "1M"];
    assert_eq!(read_all(&off), readme(DEFAULT_README));
    assert_eq!(read_all_with(DEBIAN_NBDKIT, &off), readme(DEFAULT_README));
}

/// nbdinfo prints the same for ours and Debian's, in plain text (with and
/// without --list, under another export name) and over TLS.
#[test]
fn nbdinfo_matches_debian() {
    let dir = TempDir::new("tlsfb-info");
    let keys = psk::make_keys(dir.path());
    let mut args = tls_args(&keys);
    args.extend(["memory".into(), "1M".into()]);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let script = format!(
        "nbdinfo --list \"$uri\" && echo --- && \
         nbdinfo \"nbd+unix:///other?socket=$unixsocket\" && echo --- && \
         nbdinfo --list \"nbds+unix://{u}@/?socket=$unixsocket&tls-psk-file={k}\"",
        u = psk::USER,
        k = keys.display()
    );
    require("nbdinfo", "libnbd-bin");
    let strip = |o: std::process::Output, who: &str| {
        assert!(o.status.success(), "{who}: {o:?}");
        comparable(o.stdout)
    };
    let ours = strip(run_with(BIN, &args, &script), "ours");
    let debian = strip(run_with(DEBIAN_NBDKIT, &args, &script), "Debian's");
    assert_eq!(ours, debian);
    let parts: Vec<&str> = ours.split("---\n").collect();
    assert!(parts[0].contains("export-size: 512"), "{ours}");
    assert!(parts[1].contains("export=\"other\":"), "{ours}");
    assert!(parts[1].contains("content: ASCII text"), "{ours}");
    assert!(parts[2].contains("with TLS"), "{ours}");
    assert!(parts[2].contains("export-size: 1048576"), "{ours}");
}

/// With the file plugin's `dir=`, a plain-text client sees only "" and
/// the message, whatever name it asks for (the plugin opens nothing for
/// it: a name that is not a file would fail there); a TLS client sees
/// the files, and is refused the empty name.
#[test]
fn several_exports() {
    let dir = TempDir::new("tlsfb-dir");
    let keys = psk::make_keys(dir.path());
    let d = dir.path().join("exports");
    std::fs::create_dir(&d).unwrap();
    std::fs::write(d.join("a"), b"first").unwrap();
    std::fs::write(d.join("b"), b"second").unwrap();
    let mut args = tls_args(&keys);
    args.extend(["file".into(), format!("dir={}", d.display())]);
    let args: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
    let srv = Server::start(&args);
    let sock = srv.sock.to_str().unwrap();
    let names = |uri: &str| {
        let l = nbdinfo(&["--list", uri]);
        l.lines()
            .filter(|l| l.starts_with("export="))
            .map(String::from)
            .collect::<Vec<_>>()
    };
    assert_eq!(names(&srv.uri()), ["export=\"\":"]);
    for name in ["", "b", "no-such-file"] {
        let uri = format!("nbd+unix:///{name}?socket={sock}");
        assert_eq!(nbdcopy_out(&uri), readme(DEFAULT_README), "{name}");
    }
    assert_eq!(
        names(&psk::tls_uri(sock, "", &keys)),
        ["export=\"a\":", "export=\"b\":"]
    );
    assert_eq!(nbdcopy_out(&psk::tls_uri(sock, "b", &keys)), b"second");
    // The file plugin's dir= refuses the empty name, as nbdkit's does.
    let o = Command::new(require("nbdcopy", "libnbd-bin"))
        .arg(psk::tls_uri(sock, "", &keys))
        .arg("-")
        .output()
        .unwrap();
    assert!(!o.status.success(), "{o:?}");
}

/// A bad parameter fails at startup like any filter's, and so does a
/// stack that serves one connection at a time (as Debian's nbdkit: a
/// plain-text client could lock out the others).
#[test]
fn refused_at_startup() {
    bad(
        &["--filter=tls-fallback", "memory", "1M", "tlsreadme2=x"],
        "tlsreadme2",
    );
    for order in [
        ["--filter=tls-fallback", "--filter=noparallel"],
        ["--filter=noparallel", "--filter=tls-fallback"],
    ] {
        let args = [order[0], order[1], "memory", "1M", "serialize=connections"];
        bad(
            &args,
            "the tls-fallback filter requires parallel connection support",
        );
        let o = run_with(DEBIAN_NBDKIT, &args, "true");
        assert_eq!(o.status.code(), Some(1), "Debian's: {o:?}");
        assert!(String::from_utf8_lossy(&o.stderr).contains("requires parallel connection"));
    }
    // Serialized requests are fine.
    let args = [
        "--filter=tls-fallback",
        "--filter=noparallel",
        "memory",
        "1M",
    ];
    assert_eq!(read_all(&args), readme(DEFAULT_README));
}

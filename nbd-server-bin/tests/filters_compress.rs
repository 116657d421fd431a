//! The gzip, xz and luks filters through the server binary, on files
//! made by the real tools (gzip, xz, cryptsetup, qemu-img), each compared
//! with the original bytes and with what Debian's nbdkit serves with the
//! same filter.

mod common;
mod stack;

use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::*;
use stack::*;

/// Test data with runs of zeros between varied bytes, so compressors
/// make blocks of different sizes.
fn sample(len: usize) -> Vec<u8> {
    let mut v = pattern(len, 11);
    for (i, b) in v.iter_mut().enumerate() {
        if (i / 65536) % 3 == 1 {
            *b = 0;
        }
    }
    v
}

/// Runs a tool that must succeed.
fn tool(cmd: &mut Command) -> Output {
    let o = cmd.stdin(Stdio::null()).output().expect("run tool");
    assert!(o.status.success(), "{cmd:?}: {o:?}");
    o
}

/// `nbdinfo --json`'s lines about the export's flags and size.
fn flags_with(bin: &str, args: &[&str]) -> Vec<String> {
    require("nbdinfo", "libnbd-bin");
    let o = run_with(bin, args, "nbdinfo --json \"$uri\"");
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    String::from_utf8(o.stdout)
        .unwrap()
        .lines()
        .filter(|l| l.contains("\"can_") || l.contains("is_") || l.contains("export-size\""))
        .map(str::to_string)
        .collect()
}

/// Both servers serve exactly `want` with ARGS, with the same flags.
fn both_serve(args: &[&str], want: &[u8]) {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let got = read_all_with(bin, args);
        assert!(
            got == want,
            "{bin} {args:?}: bytes differ from the original"
        );
    }
    let ours = flags_with(BIN, args);
    assert!(ours.iter().any(|l| l.contains("\"is_read_only\": true")));
    assert_eq!(ours, flags_with(DEBIAN_NBDKIT, args), "{args:?}");
}

/// Debian's nbdkit refuses ARGS at start-up too (exit status 1).
fn debian_refuses(args: &[&str]) {
    let o = Command::new(DEBIAN_NBDKIT)
        .args(["-U", "-", "--run", "true"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(o.status.code(), Some(1), "Debian accepted {args:?}: {o:?}");
}

fn file_arg(p: &Path) -> String {
    format!("file={}", p.display())
}

// ---- gzip ----

#[test]
fn gzip_serves_the_uncompressed_file() {
    require("gzip", "gzip");
    let dir = TempDir::new("gzip");
    let data = sample(1_000_003);
    let plain = dir.path().join("disk.img");
    std::fs::write(&plain, &data).unwrap();
    tool(Command::new("gzip").arg("-k").arg(&plain));
    let gz = dir.path().join("disk.img.gz");
    let file = file_arg(&gz);
    both_serve(&["--filter=gzip", "file", &file], &data);

    // A file that is not gzip is refused when a client opens it.
    refused_on_open(
        &["--filter=gzip", "file", &file_arg(&plain)],
        "gzip: inflate: ",
    );
}

// ---- xz ----

#[test]
fn xz_reads_blocks_of_several_streams() {
    require("xz", "xz-utils");
    let dir = TempDir::new("xz");
    let a = sample(700_001);
    let b = pattern(300_000, 5);
    for (name, data) in [("a", &a), ("b", &b)] {
        let p = dir.path().join(name);
        std::fs::write(&p, data).unwrap();
        tool(
            Command::new("xz")
                .args(["-k", "-T1", "--block-size=65536"])
                .arg(&p),
        );
    }
    // Two streams with stream padding between them, as `cat a.xz b.xz`
    // with padding would make.
    let mut both = std::fs::read(dir.path().join("a.xz")).unwrap();
    both.extend_from_slice(&[0u8; 12]);
    both.extend(std::fs::read(dir.path().join("b.xz")).unwrap());
    let xzfile = dir.path().join("ab.xz");
    std::fs::write(&xzfile, &both).unwrap();
    let list = tool(Command::new("xz").arg("--list").arg("--robot").arg(&xzfile));
    let list = String::from_utf8(list.stdout).unwrap();
    assert!(list.contains("totals\t2\t"), "two streams: {list}");

    let mut want = a.clone();
    want.extend(&b);
    let file = file_arg(&xzfile);
    // A small cache, so that blocks are evicted and decoded again.
    both_serve(&["--filter=xz", "file", &file, "xz-max-depth=2"], &want);

    // Reads at scattered offsets (crossing block and stream boundaries),
    // in an order that defeats the cache.
    let script = "for off in [999980, 65530, 700000, 3, 699999, 131070, 400000]: \
                  import sys; sys.stdout.write(h.pread(20, off).hex() + chr(10))";
    let mut outs = Vec::new();
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(
            bin,
            &["--filter=xz", "file", &file, "xz-max-depth=1"],
            &format!("/usr/bin/python3 -m nbd -u \"$uri\" -c '{script}'"),
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        outs.push(String::from_utf8(o.stdout).unwrap());
    }
    assert_eq!(outs[0], outs[1]);
    let first: Vec<u8> = (0..20).map(|i| want[999_980 + i]).collect();
    assert!(outs[0].starts_with(&hex(&first)), "{}", outs[0]);
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn xz_refuses_big_blocks_bad_files_and_bad_parameters() {
    require("xz", "xz-utils");
    let dir = TempDir::new("xzbad");
    let p = dir.path().join("one");
    std::fs::write(&p, sample(300_000)).unwrap();
    tool(Command::new("xz").args(["-k", "-T1"]).arg(&p));
    let file = file_arg(&dir.path().join("one.xz"));
    // One block of 300000 bytes, over a limit of 100000.
    refused_on_open(
        &["--filter=xz", "file", &file, "xz-max-block=100000"],
        "largest block is bigger than maxblock",
    );
    refused_on_open(&["--filter=xz", "file", &file_arg(&p)], "not an xz file");
    for arg in ["xz-max-depth=0", "xz-max-block=foo"] {
        let args = ["--filter=xz", "file", &file, arg];
        bad(&args, arg.split('=').next().unwrap());
        debian_refuses(&args);
    }
}

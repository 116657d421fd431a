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

// ---- luks ----

const SECRET: &str = "correct horse";

/// A LUKSv1 image of `mib` MiB made by cryptsetup with the passphrase
/// SECRET and few PBKDF2 iterations (the test is about the format, not
/// about slowing down attackers).
fn cryptsetup_image(dir: &Path, name: &str, mib: u64, extra: &[&str]) -> std::path::PathBuf {
    require("cryptsetup", "cryptsetup-bin");
    let img = dir.join(name);
    let f = std::fs::File::create(&img).unwrap();
    f.set_len(mib << 20).unwrap();
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&key, SECRET).unwrap();
    tool(
        Command::new("cryptsetup")
            .args(["luksFormat", "-q", "--type", "luks1"])
            .args(["--pbkdf-force-iterations", "1000", "--key-file"])
            .arg(&key)
            .args(extra)
            .arg(&img),
    );
    img
}

/// `data` encrypted by qemu-img into a LUKSv1 image with the given
/// cipher options.
fn qemu_image(dir: &Path, name: &str, data: &[u8], opts: &str) -> std::path::PathBuf {
    require("qemu-img", "qemu-utils");
    let raw = dir.join(format!("{name}.raw"));
    std::fs::write(&raw, data).unwrap();
    let img = dir.join(name);
    tool(
        Command::new("qemu-img")
            .args(["convert", "-f", "raw", "-O", "luks", "--object"])
            .arg(format!("secret,data={SECRET},id=sec0"))
            .arg("-o")
            .arg(format!("key-secret=sec0,iter-time=10,{opts}"))
            .arg(&raw)
            .arg(&img),
    );
    img
}

fn luks_args(file: &str) -> Vec<String> {
    vec![
        "--filter=luks".into(),
        "file".into(),
        file.into(),
        format!("passphrase={SECRET}"),
    ]
}

/// Runs nbdcopy writing `src` to the export of `bin ARGS`.
fn copy_in(bin: &str, args: &[&str], src: &Path) {
    let o = run_with(bin, args, &format!("nbdcopy {} \"$uri\"", src.display()));
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
}

#[test]
fn luks_cryptsetup_image_reads_and_writes_like_debians() {
    let dir = TempDir::new("luks");
    let img = cryptsetup_image(dir.path(), "disk.img", 6, &[]);
    // cryptsetup 2's LUKS1 payload starts at 2 MiB.
    let data = sample(4 << 20);
    let src = dir.path().join("payload");
    std::fs::write(&src, &data).unwrap();

    // Written by Debian's nbdkit, read by ours; and the same write made
    // through ours on a copy of the image gives the same bytes on disk.
    let copy = dir.path().join("copy.img");
    std::fs::copy(&img, &copy).unwrap();
    let a = luks_args(&file_arg(&img));
    let a: Vec<&str> = a.iter().map(String::as_str).collect();
    let b = luks_args(&file_arg(&copy));
    let b: Vec<&str> = b.iter().map(String::as_str).collect();
    copy_in(DEBIAN_NBDKIT, &a, &src);
    copy_in(BIN, &b, &src);
    assert!(
        std::fs::read(&img).unwrap() == std::fs::read(&copy).unwrap(),
        "the images written by Debian's nbdkit and ours differ"
    );
    both_serve_rw(&a, &data);

    // A write that does not cover whole sectors, through ours, read back
    // by ours and by Debian's (libnbd would refuse to send it, being under
    // the minimum block size, without strict alignment turned off).
    let script = "h.set_strict_mode(h.get_strict_mode() & ~nbd.STRICT_ALIGN); h.pwrite(b\"unaligned write\", 1000); h.pwrite(bytes(600), 4000); h.zero(1536, 8192); h.flush(); \
                  print(bytes(h.pread(15, 1000)), sum(h.pread(700, 3950)))";
    let o = run_with(BIN, &a, &nbdsh(script));
    assert!(o.status.success(), "{o:?}");
    let mut want = data.clone();
    want[1000..1015].copy_from_slice(b"unaligned write");
    want[4000..4600].fill(0);
    want[8192..9728].fill(0);
    let sum: u64 = want[3950..4650].iter().map(|&x| x as u64).sum();
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        format!("b'unaligned write' {sum}")
    );
    both_serve_rw(&a, &want);
    // The header and key material are untouched, the payload is not
    // stored in clear.
    let disk = std::fs::read(&img).unwrap();
    assert_eq!(disk[..6], *b"LUKS\xba\xbe");
    assert!(disk[2 << 20..].windows(15).all(|w| w != b"unaligned write"));
}

/// Both servers serve `want` (read-write stacks), with the same flags.
fn both_serve_rw(args: &[&str], want: &[u8]) {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let got = read_all_with(bin, args);
        assert!(got == want, "{bin} {args:?}: bytes differ");
    }
    assert_eq!(flags_with(BIN, args), flags_with(DEBIAN_NBDKIT, args));
}

fn nbdsh(script: &str) -> String {
    require("nbdinfo", "libnbd-bin");
    assert!(!script.contains('\''));
    format!("/usr/bin/python3 -m nbd -u \"$uri\" -c '{script}'")
}

#[test]
fn luks_qemu_images() {
    let dir = TempDir::new("luksq");
    let data = sample(1 << 20);
    for (name, opts, debian_too) in [
        (
            "xts.img",
            "cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain64",
            true,
        ),
        (
            "cbc.img",
            "cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=plain64,hash-alg=sha1",
            true,
        ),
        (
            "plain.img",
            "cipher-alg=aes-256,cipher-mode=xts,ivgen-alg=plain",
            true,
        ),
        // ESSIV, which Debian's nbdkit 1.32.5 does not read.
        (
            "essiv.img",
            "cipher-alg=aes-256,cipher-mode=cbc,ivgen-alg=essiv,ivgen-hash-alg=sha256",
            false,
        ),
    ] {
        let img = qemu_image(dir.path(), name, &data, opts);
        let a = luks_args(&file_arg(&img));
        let a: Vec<&str> = a.iter().map(String::as_str).collect();
        let ours = read_all_with(BIN, &a);
        assert!(ours == data, "{name}: not the original bytes");
        if debian_too {
            assert!(read_all_with(DEBIAN_NBDKIT, &a) == ours, "{name}");
        }
    }
}

#[test]
fn luks_passphrase_forms_and_refusals() {
    let dir = TempDir::new("luksp");
    let img = cryptsetup_image(dir.path(), "disk.img", 3, &[]);
    let file = file_arg(&img);
    let pwfile = dir.path().join("pw");
    std::fs::write(&pwfile, format!("{SECRET}\n")).unwrap();
    // +FILE and -FD (descriptor 3 opened by the shell).
    for bin in [BIN, DEBIAN_NBDKIT] {
        let plus = format!("passphrase=+{}", pwfile.display());
        let o = run_with(
            bin,
            &["--filter=luks", "file", &file, &plus],
            "nbdinfo \"$uri\"",
        );
        assert!(o.status.success(), "{bin} +FILE: {o:?}");
        let sh = format!(
            "exec 3<{pw}; exec {bin} -U - --filter=luks file {f} passphrase=-3 \
             --run 'nbdinfo --size \"$uri\"'",
            pw = pwfile.display(),
            f = shell_quote(&file),
        );
        let o = tool(Command::new("sh").arg("-c").arg(&sh));
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "1048576",
            "{bin}"
        );
    }

    // A wrong passphrase: the client is refused by both; ours says why.
    let wrong = ["--filter=luks", "file", &file, "passphrase=wrong"];
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(bin, &wrong, "timeout 30 nbdinfo \"$uri\"");
        assert!(!o.status.success(), "{bin} served with a wrong passphrase");
        if bin == BIN {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(
                err.contains("LUKS passphrase is not correct, no key slot could be unlocked"),
                "{err}"
            );
        }
    }
    // Not a LUKS disk.
    let plain = dir.path().join("plain");
    std::fs::write(&plain, vec![0u8; 1 << 20]).unwrap();
    let o = run_with(
        BIN,
        &["--filter=luks", "file", &file_arg(&plain), "passphrase=x"],
        "nbdinfo \"$uri\"",
    );
    assert!(!o.status.success());
    assert!(String::from_utf8_lossy(&o.stderr).contains("does not contain a LUKS header"));
    // No passphrase at all: refused at start-up.
    let none = ["--filter=luks", "file", &file];
    bad(&none, "passphrase");
    debian_refuses(&none);
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

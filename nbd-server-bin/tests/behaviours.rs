//! Behaviours where we used to differ from nbdkit 1.32: each checked
//! against our nbdkit and Debian's with the same arguments.

mod common;
mod stack;

use common::*;
use stack::*;

/// A field of `nbdinfo` (its first word) from BIN with ARGS.
fn info_of(bin: &str, args: &[&str], field: &str) -> String {
    require("nbdinfo", "libnbd-bin");
    let o = run_with(bin, args, "nbdinfo \"$uri\"");
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    let s = String::from_utf8(o.stdout).unwrap();
    s.lines()
        .find_map(|l| {
            l.trim()
                .strip_prefix(&format!("{field}: "))
                .map(|v| v.split_whitespace().next().unwrap_or("").to_string())
        })
        .unwrap_or_else(|| panic!("no {field} in nbdinfo output:\n{s}"))
}

/// The same field from ours and Debian's; returns it.
fn same_info(args: &[&str], field: &str) -> String {
    let ours = info_of(BIN, args, field);
    let theirs = info_of(DEBIAN_NBDKIT, args, field);
    assert_eq!(ours, theirs, "{field} of {args:?}");
    ours
}

#[test]
fn fua_default_mode_is_none() {
    // Without fuamode, FUA is hidden and flush kept, in both (the memory
    // plugin has native FUA, so this is not the plugin's own answer).
    let args = ["--filter=fua", "memory", "1M"];
    assert_eq!(same_info(&args, "can_fua"), "false");
    assert_eq!(same_info(&args, "can_flush"), "true");
    // The other modes agree too.
    for m in ["emulate", "native", "force", "pass", "discard"] {
        let args = ["--filter=fua", "memory", "1M", &format!("fuamode={m}")];
        assert_eq!(same_info(&args, "can_fua"), "true", "{m}");
    }
    // fuamode=none, listed by the manual, is the default's behaviour
    // here; Debian's 1.32.5 refuses the word (see filters/fua.rs).
    assert_eq!(
        info_of(
            BIN,
            &["--filter=fua", "memory", "1M", "fuamode=none"],
            "can_fua"
        ),
        "false"
    );
    bad(&["--filter=fua", "null", "fuamode=sometimes"], "fuamode");
}

#[test]
fn file_size_is_read_at_each_connection() {
    let dir = TempDir::new("grow");
    let f = dir.path().join("disk.img");
    for bin in [BIN, DEBIAN_NBDKIT] {
        std::fs::write(&f, vec![7u8; 65536]).unwrap();
        let fs = f.to_str().unwrap();
        let o = run_with(
            bin,
            &["file", fs],
            &format!(
                "nbdinfo --size \"$uri\" && truncate -s 1M {fs} && nbdinfo --size \"$uri\" \
                 && nbdcopy \"$uri\" - | wc -c"
            ),
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "65536\n1048576\n1048576\n",
            "{bin}"
        );
    }
}

#[test]
fn file_directory_is_dir() {
    let dir = TempDir::new("directory");
    std::fs::write(dir.path().join("a.img"), pattern(4096, 1)).unwrap();
    std::fs::write(dir.path().join("b.img"), pattern(8192, 2)).unwrap();
    let script = "nbdinfo --list \"$uri\" | grep '^export=' | sort && \
                  nbdcopy \"nbd+unix:///b.img?socket=$unixsocket\" - | md5sum";
    let mut outs = Vec::new();
    for bin in [BIN, DEBIAN_NBDKIT] {
        for key in ["dir", "directory"] {
            let arg = format!("{key}={}", dir.path().display());
            let o = run_with(bin, &["file", &arg], script);
            assert!(o.status.success(), "{bin} {key}: {o:?}");
            outs.push(String::from_utf8(o.stdout).unwrap());
        }
    }
    assert!(
        outs[0].starts_with("export=\"a.img\":\nexport=\"b.img\":\n"),
        "{}",
        outs[0]
    );
    assert!(outs.iter().all(|o| *o == outs[0]), "{outs:?}");
    // Both spellings at once are refused.
    let d = format!("dir={}", dir.path().display());
    let d2 = format!("directory={}", dir.path().display());
    bad(&["file", &d, &d2], "directory");
}

/// The nbd plugin connects when a client opens its export: the front
/// server starts before the back one, and each client connection makes
/// its own connection to the back server.
#[test]
fn nbd_connects_per_client_connection() {
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("nbdlate");
    let mut outs = Vec::new();
    for bin in [BIN, DEBIAN_NBDKIT] {
        let sock = dir.path().join("back.sock");
        let log = dir.path().join("back.log");
        let _ = std::fs::remove_file(&log);
        let _ = std::fs::remove_file(&sock);
        let script = format!(
            "front=\"$uri\"; {DEBIAN_NBDKIT} -U {s} --filter=log pattern 1M logfile={l} \
             --run \"nbdcopy '$front' - | md5sum && nbdinfo --size '$front'\"",
            s = sock.display(),
            l = log.display(),
        );
        let o = run_with(
            bin,
            &["nbd", &format!("socket={}", sock.display())],
            &script,
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        let out = String::from_utf8(o.stdout).unwrap();
        assert!(out.ends_with("  -\n1048576\n"), "{bin}: {out}");
        outs.push(out);
        let log = std::fs::read_to_string(&log).unwrap();
        let connects = log.lines().filter(|l| l.contains(" Connect ")).count();
        assert_eq!(connects, 2, "{bin}: {log}");
    }
    assert_eq!(outs[0], outs[1]);
    // Bad parameters are still refused at start-up.
    bad(&["nbd", "socket=/a", "hostname=b"], "cannot mix");
    bad(&["nbd", "hostname=b", "port=http"], "port");
    bad(
        &["nbd", "uri=nbds://localhost/?tls-certificates=/c"],
        "local file access",
    );
    bad(&["nbd"], "required");
}

/// Writes a pattern through the disk and reads it back, with block
/// status turned off (Debian's allocator=zstd crashes on block status).
fn round_trip(bin: &str, args: &[&str]) -> Vec<u8> {
    require("nbdcopy", "libnbd-bin");
    let dir = TempDir::new("memrt");
    let src = dir.path().join("src");
    std::fs::write(&src, pattern(300_000, 9)).unwrap();
    let o = run_with(
        bin,
        args,
        &format!(
            "nbdcopy {} \"$uri\" && nbdcopy --no-extents \"$uri\" -",
            src.display()
        ),
    );
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    o.stdout
}

#[test]
fn memory_allocators() {
    for a in [
        "allocator=sparse",
        "allocator=malloc",
        "allocator=malloc,mlock=true",
        "allocator=malloc,mlock=false",
        "allocator=zstd",
    ] {
        let args = ["memory", "1M", a];
        let ours = round_trip(BIN, &args);
        assert_eq!(ours.len(), 1 << 20, "{a}");
        assert_eq!(ours[..300_000], pattern(300_000, 9)[..], "{a}");
        assert_eq!(ours, round_trip(DEBIAN_NBDKIT, &args), "{a}");
    }
    // malloc is not sparse: all data; sparse has holes.
    for a in ["allocator=malloc", "allocator=sparse"] {
        let args = ["memory", "1M", a];
        assert_eq!(map(&args), map_with(DEBIAN_NBDKIT, &args), "{a}");
    }
    assert_eq!(
        map(&["memory", "1M", "allocator=malloc"]),
        [(0, 1 << 20, 0)]
    );
    // Bad values, refused at start-up by both.
    for (a, needle) in [
        ("allocator=bogus", "unknown allocator"),
        (
            "allocator=sparse,mlock=true",
            "does not take extra parameters",
        ),
        ("allocator=malloc,foo=1", "unknown parameter"),
        ("allocator=malloc,mlock=maybe", "boolean"),
        // mlock is part of the allocator's value, not a parameter.
        ("mlock=true", "mlock"),
    ] {
        bad(&["memory", "1M", a], needle);
        let d = run_with(DEBIAN_NBDKIT, &["memory", "1M", a], "true");
        assert_eq!(d.status.code(), Some(1), "Debian's with {a}: {d:?}");
    }
}

/// mlock=true fails clearly when the pages may not be locked: here, no
/// CAP_IPC_LOCK and a 64 KiB limit.
#[test]
fn memory_mlock_failure() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = std::process::Command::new("prlimit")
            .args([
                "--memlock=65536:65536",
                "setpriv",
                "--bounding-set=-ipc_lock",
            ])
            .args([
                bin,
                "-U",
                "-",
                "memory",
                "16M",
                "allocator=malloc,mlock=true",
            ])
            .args(["--run", "true"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(o.status.code(), Some(1), "{bin}: {err}");
        assert!(
            err.lines()
                .any(|l| l.starts_with("nbdkit: error: ") && l.contains("mlock")),
            "{bin}: {err}"
        );
    }
}

/// BIN in the foreground on a Unix socket in DIR; killed on drop.
struct Fg(std::process::Child, std::path::PathBuf);

impl Fg {
    fn start(bin: &str, dir: &std::path::Path, args: &[&str]) -> Fg {
        let tag = bin.replace('/', "_");
        let sock = dir.join(format!("fg-{tag}.sock"));
        let pid = dir.join(format!("fg-{tag}.pid"));
        let _ = std::fs::remove_file(&sock);
        let _ = std::fs::remove_file(&pid);
        let child = std::process::Command::new(bin)
            .arg("-f")
            .arg("-U")
            .arg(&sock)
            .arg("-P")
            .arg(&pid)
            .args(args)
            .stdin(std::process::Stdio::null())
            .spawn()
            .unwrap();
        // The pid file is written once the server accepts.
        let t = std::time::Instant::now();
        while !pid.exists() {
            assert!(t.elapsed().as_secs() < 10, "{bin} did not start");
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        Fg(child, sock)
    }

    fn client(&self) -> Client {
        let s = std::os::unix::net::UnixStream::connect(&self.1).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        Client::connect(s, true, true)
    }
}

impl Drop for Fg {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Block status of COUNT bytes at OFFSET with FLAGS from each binary.
fn block_status(
    bin: &str,
    args: &[&str],
    dir: &std::path::Path,
    q: &[(u16, u64, u32)],
) -> Vec<Vec<(u32, u32)>> {
    use nbd_core::wire::consts::cmd;
    let srv = Fg::start(bin, dir, args);
    let mut c = srv.client();
    let out = q
        .iter()
        .map(|&(flags, offset, count)| {
            let r = c.cmd(cmd::BLOCK_STATUS, flags, offset, count, &[]);
            assert_eq!(r.error, 0, "{bin} {args:?}");
            r.extents
        })
        .collect();
    c.disconnect();
    out
}

#[test]
fn split_req_one_stays_in_one_file() {
    use nbd_core::wire::consts::cmd_flags::REQ_ONE;
    let dir = TempDir::new("splitone");
    let a = dir.path().join("a");
    let b = dir.path().join("b");
    let c = dir.path().join("c");
    std::fs::write(&a, pattern(65536, 1)).unwrap();
    std::fs::write(&b, pattern(65536, 2)).unwrap();
    // c: a hole, then data.
    let f = std::fs::File::create(&c).unwrap();
    f.set_len(131072).unwrap();
    use std::os::unix::fs::FileExt;
    f.write_all_at(&pattern(65536, 3), 65536).unwrap();
    drop(f);
    let (a, b, c) = (
        a.to_str().unwrap(),
        b.to_str().unwrap(),
        c.to_str().unwrap(),
    );
    let args = ["split", a, b, c];
    let q = [
        (REQ_ONE, 0, 262144),
        (REQ_ONE, 4096, 258048),
        (REQ_ONE, 65536, 196608),
        (REQ_ONE, 131072, 131072),
        (0, 0, 262144),
        (0, 65536, 131072),
    ];
    let ours = block_status(BIN, &args, dir.path(), &q);
    let theirs = block_status(DEBIAN_NBDKIT, &args, dir.path(), &q);
    assert_eq!(ours[0], [(65536, 0)]);
    assert_eq!(ours[1], [(61440, 0)]);
    assert_eq!(ours[2], [(65536, 0)]);
    assert_eq!(ours[3], [(65536, 3)]);
    assert_eq!(ours, theirs);
}

/// The data plugin stores explicit bytes as nbdkit does: a single byte or
/// a file's bytes allocate their page even when zero (ZERO, not a hole,
/// in block status), a run of zeroes does not (nbdkit makes it a fill).
#[test]
fn data_block_status_and_bytes_as_nbdkit() {
    let dir = TempDir::new("datamap");
    let z = dir.path().join("zeroes");
    std::fs::write(&z, [0u8; 100]).unwrap();
    let p = dir.path().join("pat");
    std::fs::write(&p, pattern(5000, 4)).unwrap();
    let (z, p) = (z.to_str().unwrap(), p.to_str().unwrap());
    let cases = [
        "0".to_string(),
        "0 0 0".into(),
        "@4096 1".into(),
        "@40000 0".into(),
        "( 0 )*70000".into(),
        "1 @100000 0".into(),
        "@40000 0 0".into(),
        "@40000 le32:0".into(),
        "@40000 (0)*2".into(),
        "@40000 (1)*0 0".into(),
        "@40000 0 @70000 1".into(),
        "@40000 (0 1)[0:1]".into(),
        "@40000 0 @+1 0".into(),
        "@40000 0 ( 0 )".into(),
        "1 1 @0 0 0".into(),
        "@32767 0 0".into(),
        format!("@40000 <{z}"),
        format!("@40000 <{z}[0:4]"),
        format!("@40000 (<{z})"),
        format!("@70000 <{p}[100:4000] @^4096 <{p}[4990:]"),
    ];
    for d in &cases {
        let args = ["data", d.as_str()];
        assert_eq!(map(&args), map_with(DEBIAN_NBDKIT, &args), "{d}");
        assert_eq!(read_all(&args), read_all_with(DEBIAN_NBDKIT, &args), "{d}");
    }
    assert_eq!(
        map(&["data", "@40000 0"]),
        [(0, 32768, 3), (32768, 7233, 2)]
    );
    let args = ["data", "base64=AAAA"];
    assert_eq!(map(&args), map_with(DEBIAN_NBDKIT, &args));
}

/// `<FILE[N:M]` reads only what the slice needs: an endless file works.
#[test]
fn data_file_slices_read_only_what_they_need() {
    for bin in [BIN, DEBIAN_NBDKIT] {
        for (d, size) in [
            ("</dev/urandom[:4]", "4"),
            ("</dev/urandom[4096:4100] @8192 </dev/zero[:10]", "8202"),
        ] {
            let o = run_with(bin, &["data", d], "nbdinfo --size \"$uri\"");
            assert!(o.status.success(), "{bin} {d}: {o:?}");
            assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), size, "{bin} {d}");
        }
    }
    let dir = TempDir::new("dataslice");
    let f = dir.path().join("f");
    std::fs::write(&f, b"0123456789").unwrap();
    let f = f.to_str().unwrap();
    assert_eq!(
        read_all(&["data", &format!("<{f}[2:5] <{f}[8:]")]),
        b"23489"
    );
    bad(&["data", &format!("<{f}[2:50]")], "out of range");
    bad(&["data", &format!("<{f}[5:2]")], "out of range");
    bad(&["data", "</nonexistent/file"], "/nonexistent/file");
}

/// Assignments, names and `$VAR` (a command-line parameter, else the
/// environment), as nbdkit-data-plugin(1) describes them.
#[test]
fn data_assignments_and_variables() {
    let cases: &[&[&str]] = &[
        &["data", "$pattern*16", "pattern=0x55 0xAA"],
        &[
            "data",
            "( 0x55 0xAA ) -> \\boot-signature \
             ( @0x1fe \\boot-signature ) -> \\sector \\sector \\sector",
        ],
        &["data", "1 -> \\a ( \\a 2 -> \\a \\a ) \\a"],
        &["data", "$a", "a=$b 1", "b=2 3"],
        &["data", "(1 2) -> \\a \\a[1:2] \\a*3"],
        &["data", "1 -> \\x-y_z @100 \\x-y_z*3"],
    ];
    for args in cases {
        assert_eq!(
            read_all(args),
            read_all_with(DEBIAN_NBDKIT, args),
            "{args:?}"
        );
        assert_eq!(map(args), map_with(DEBIAN_NBDKIT, args), "{args:?}");
    }
    assert_eq!(
        read_all(&["data", "$pattern*2", "pattern=0x55 0xAA"]),
        [0x55, 0xaa, 0x55, 0xaa]
    );
    // From the environment, when not on the command line.
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = std::process::Command::new(bin)
            .args(["-U", "-", "data", "$nbd_rs_test_var*2", "--run"])
            .arg("nbdcopy \"$uri\" - | od -An -tx1")
            .env("nbd_rs_test_var", "7 8")
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "07 08 07 08",
            "{bin}"
        );
    }
    // Errors, refused at start-up by both.
    for (d, needle) in [
        ("\\nope", "\\nope"),
        ("( 1 -> \\a ) \\a", "\\a"),
        ("$nbd_rs_no_such_var", "nbd_rs_no_such_var"),
        ("1 -> 2", "->"),
    ] {
        bad(&["data", d], needle);
        let o = run_with(DEBIAN_NBDKIT, &["data", d], "true");
        assert_eq!(o.status.code(), Some(1), "Debian's with {d}: {o:?}");
    }
    // A variable that refers to itself ends with an error (Debian's
    // 1.32.5 crashes).
    bad(&["data", "$a", "a=$a"], "too deep");
}

/// `<(SCRIPT)` inserts what the shell script writes, stored as a file's
/// bytes; `[:N]` stops an endless script after N bytes.
#[test]
fn data_scripts() {
    let cases = [
        "<(printf abc)",
        "( <(echo x) ) <(echo a)*3 <(printf \"(a)\")",
        "<(printf '\\0\\0\\0\\0') @8192 <(head -c 5 /dev/zero)[:1] @16384 1",
        "<(i=0; while :; do printf %04d $i; i=$((i+1)); done)[:12]",
        "<(printf abcd)[:10] <(printf abcd)[2:]",
        "<(head -c 70000 /dev/zero) 1",
    ];
    for d in cases {
        let args = ["data", d];
        assert_eq!(read_all(&args), read_all_with(DEBIAN_NBDKIT, &args), "{d}");
        assert_eq!(map(&args), map_with(DEBIAN_NBDKIT, &args), "{d}");
    }
    assert_eq!(
        read_all(&[
            "data",
            "<(i=0; while :; do printf %04d $i; i=$((i+1)); done)[:12]"
        ]),
        b"000000010002"
    );
    // Refused at start-up by both: a failing script, an unterminated
    // one, a slice beyond the output.
    for (d, needle) in [
        ("<(printf abc; exit 3)", "failed"),
        ("<(printf abc", "unterminated"),
        ("<(printf abcd)[2:10]", "out of range"),
        ("<(printf abcd)[6:]", "out of range"),
    ] {
        bad(&["data", d], needle);
        let o = run_with(DEBIAN_NBDKIT, &["data", d], "true");
        assert_eq!(o.status.code(), Some(1), "Debian's with {d}: {o:?}");
    }
}

/// retry=N waits for a server that starts late; shared=true makes one
/// connection at start-up for every client.
#[test]
fn nbd_retry_and_shared() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("nbdretry");
    let sock = dir.path().join("back.sock");
    for bin in [BIN, DEBIAN_NBDKIT] {
        let _ = std::fs::remove_file(&sock);
        let script = format!(
            "(sleep 1; exec {DEBIAN_NBDKIT} -f -U {s} pattern 1M) & back=$!; \
             nbdinfo --size \"$uri\"; r=$?; kill $back; exit $r",
            s = sock.display()
        );
        let o = run_with(
            bin,
            &["nbd", &format!("socket={}", sock.display()), "retry=5"],
            &script,
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout), "1048576\n", "{bin}");
    }
    // shared=true: two clients, one connection to the back server.
    let log = dir.path().join("back.log");
    let _ = std::fs::remove_file(&sock);
    let pid = dir.path().join("back.pid");
    let back = std::process::Command::new(DEBIAN_NBDKIT)
        .args(["-f", "-U"])
        .arg(&sock)
        .arg("-P")
        .arg(&pid)
        .args(["--filter=log", "pattern", "1M"])
        .arg(format!("logfile={}", log.display()))
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let _back = Kill(back);
    let t = std::time::Instant::now();
    // The pid file is written once the server accepts.
    while !pid.exists() {
        assert!(t.elapsed().as_secs() < 10, "back server did not start");
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let before = std::fs::read_to_string(&log)
        .unwrap_or_default()
        .lines()
        .filter(|l| l.contains(" Connect "))
        .count();
    let o = run_with(
        BIN,
        &["nbd", &format!("socket={}", sock.display()), "shared=true"],
        "nbdinfo --size \"$uri\" && nbdinfo --size \"$uri\"",
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(String::from_utf8_lossy(&o.stdout), "1048576\n1048576\n");
    let after = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .filter(|l| l.contains(" Connect "))
        .count();
    assert_eq!(after - before, 1);
    // shared=true connects at start-up: a missing server fails there.
    bad(
        &["nbd", "socket=/nonexistent/sock", "shared=true"],
        "/nonexistent/sock",
    );
    bad(&["nbd", "socket=/a", "retry=x"], "retry");
    bad(&["nbd", "socket=/a", "shared=maybe"], "shared");
}

/// A delay in progress ends when its client hangs up, so under
/// `noparallel serialize=connections` the next client is served at once
/// instead of after the 30 s the first client's read would have taken.
#[test]
fn delay_ends_when_the_client_hangs_up() {
    require("nbdinfo", "libnbd-bin");
    let args = [
        "--filter=noparallel",
        "--filter=delay",
        "memory",
        "1M",
        "serialize=connections",
        "rdelay=30",
    ];
    for bin in [BIN, DEBIAN_NBDKIT] {
        let srv = Server::start_bin(std::path::Path::new(bin), &args);
        let mut first = srv.client();
        first.send(nbd_core::wire::consts::cmd::READ, 0, 0, 512, &[]);
        // Give the read time to reach the delay (if it has not, the
        // server sees the hang-up between requests, which passes too).
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(first);
        // Served well before the first client's 30 s delay would end.
        let o = std::process::Command::new("timeout")
            .args(["20", "nbdinfo", "--size", &srv.uri()])
            .output()
            .unwrap();
        assert!(o.status.success(), "{bin}: second client not served: {o:?}");
        assert_eq!(String::from_utf8_lossy(&o.stdout).trim(), "1048576");
    }
}

/// command= runs the server itself, handing it a listening socket by
/// systemd socket activation; socket-fd= uses a connection this process
/// inherited. Both make one shared connection, as in Debian's nbdkit.
#[test]
fn nbd_command_and_socket_fd() {
    use std::os::unix::io::AsRawFd;
    use std::os::unix::process::CommandExt;
    require("nbdcopy", "libnbd-bin");
    let want = read_all_with(DEBIAN_NBDKIT, &["pattern", "1M"]);
    let dir = TempDir::new("nbdcommand");
    let raw = dir.path().join("disk.raw");
    std::fs::write(&raw, &want).unwrap();
    let raw_arg = format!("arg={}", raw.display());
    let qemu_nbd = require("qemu-nbd", "qemu-utils");
    let qemu_nbd = format!("command={}", qemu_nbd.display());
    for bin in [BIN, DEBIAN_NBDKIT] {
        let args = ["nbd", "command=/usr/bin/nbdkit", "arg=pattern", "arg=1M"];
        assert_eq!(read_all_with(bin, &args), want, "{bin} {args:?}");
        // qemu-nbd, found on $PATH, with a filter over it.
        let args = [
            "--filter=offset",
            "nbd",
            &qemu_nbd,
            "arg=-f",
            "arg=raw",
            &raw_arg,
            "offset=4096",
        ];
        assert_eq!(read_all_with(bin, &args), want[4096..], "{bin} {args:?}");

        let back = Server::start_bin(std::path::Path::new(DEBIAN_NBDKIT), &["pattern", "1M"]);
        let conn = back.raw();
        let fd = conn.as_raw_fd();
        let mut cmd = std::process::Command::new(bin);
        cmd.args([
            "-U",
            "-",
            "nbd",
            "socket-fd=3",
            "--run",
            "nbdcopy \"$uri\" -",
        ]);
        // SAFETY: dup2 and fcntl only, between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                // dup2 onto itself would keep close-on-exec.
                let r = if fd == 3 {
                    libc::fcntl(3, libc::F_SETFD, 0)
                } else {
                    libc::dup2(fd, 3)
                };
                if r == -1 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let o = cmd.output().unwrap();
        assert!(o.status.success(), "{bin} socket-fd=: {o:?}");
        assert!(o.stdout == want, "{bin} socket-fd=: wrong bytes");
    }
    // Bad forms, refused at start-up by both.
    for (args, needle) in [
        (&["nbd", "vsock=x"][..], "vsock"),
        (&["nbd", "vsock=2", "port=x"], "port"),
        (&["nbd", "vsock=2", "port=99999999999"], "port"),
        (&["nbd", "socket-fd=x"], "socket-fd"),
        (&["nbd", "socket=/x", "command=true"], "cannot mix"),
        (&["nbd", "vsock=2", "socket=/x"], "cannot mix"),
        (&["nbd", "arg=foo", "socket=/x"], "cannot mix"),
    ] {
        bad(args, needle);
        let o = run_with(DEBIAN_NBDKIT, args, "true");
        assert_eq!(o.status.code(), Some(1), "Debian's with {args:?}: {o:?}");
    }
    // Where Debian's starts and then fails after forking (and, with
    // --run, hangs), ours refuses at once.
    bad(&["nbd", "socket-fd=99"], "socket-fd=99");
    let o = run_with(BIN, &["nbd", "command=/nonexistent/nbd-server"], "true");
    assert_eq!(o.status.code(), Some(1), "{o:?}");
    assert!(String::from_utf8_lossy(&o.stderr).contains("nbdkit: error: "));
}

/// With a layer that serves one connection at a time (noparallel
/// serialize=connections), a second client waits before the greeting,
/// as in nbdkit, and gets it once the first has gone.
#[test]
fn serialized_connections_wait_before_the_greeting() {
    use std::io::Read;
    let args = [
        "--filter=noparallel",
        "memory",
        "1M",
        "serialize=connections",
    ];
    for bin in [BIN, DEBIAN_NBDKIT] {
        let srv = Server::start_bin(std::path::Path::new(bin), &args);
        let first = srv.client();
        let mut second = srv.raw();
        second
            .set_read_timeout(Some(std::time::Duration::from_secs(1)))
            .unwrap();
        let mut magic = [0u8; 8];
        let early = second.read(&mut magic);
        assert!(
            matches!(&early, Err(e) if e.kind() == std::io::ErrorKind::WouldBlock),
            "{bin}: the second client was greeted while the first was served: {early:?}"
        );
        first.disconnect();
        second
            .set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        second.read_exact(&mut magic).unwrap();
        assert_eq!(&magic, b"NBDMAGIC", "{bin}");
    }
}

/// TLS to the server forwarded to, with a Pre-Shared Key made here by
/// psktool: ours and Debian's nbdkit as the front, each over ours and
/// Debian's as a back server that requires TLS.
#[test]
fn nbd_tls_psk_to_the_server() {
    require("nbdcopy", "libnbd-bin");
    let psktool = require("psktool", "gnutls-bin");
    let dir = TempDir::new("nbdtls");
    let keys = dir.path().join("keys.psk");
    let o = std::process::Command::new(psktool)
        .args(["-u", "alice", "-p"])
        .arg(&keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "psktool: {o:?}");
    let want = read_all_with(DEBIAN_NBDKIT, &["pattern", "1M"]);
    let psk_opt = format!("--tls-psk={}", keys.display());
    let psk = format!("tls-psk={}", keys.display());
    for back_bin in [BIN, DEBIAN_NBDKIT] {
        let back = Server::start_bin(
            std::path::Path::new(back_bin),
            &["--tls=require", &psk_opt, "pattern", "1M"],
        );
        let sock = format!("socket={}", back.sock.display());
        for front in [BIN, DEBIAN_NBDKIT] {
            for tls in ["tls=require", "tls=on"] {
                let args = ["nbd", &sock, tls, &psk, "tls-username=alice"];
                assert!(
                    read_all_with(front, &args) == want,
                    "{front} over {back_bin} {args:?}"
                );
            }
            // The same through an nbds+unix URI naming the user.
            let uri = format!("nbds+unix://alice@/?socket={}", back.sock.display());
            assert!(
                read_all_with(front, &["nbd", &uri, &psk]) == want,
                "{front} over {back_bin} {uri}"
            );
            // Without TLS, the back server refuses: no export.
            let o = run_with(front, &["nbd", &sock], "nbdinfo --size \"$uri\"");
            assert!(!o.status.success(), "{front} over {back_bin} in plain text");
        }
    }
    // tls=on falls back to plain text with a server without TLS.
    let plain = Server::start_bin(std::path::Path::new(DEBIAN_NBDKIT), &["pattern", "1M"]);
    let sock = format!("socket={}", plain.sock.display());
    for front in [BIN, DEBIAN_NBDKIT] {
        let args = ["nbd", &sock, "tls=on", &psk, "tls-username=alice"];
        assert!(read_all_with(front, &args) == want, "{front} {args:?}");
    }
    bad(&["nbd", "socket=/x", "tls=maybe"], "tls");
    bad(&["nbd", "socket=/x", &psk, "tls-username=bob"], "bob");
}

/// TLS to the server with X.509 certificates made here
/// (scripts/gen-tls-keys.sh): ours and Debian's nbdkit as the front,
/// each over ours and Debian's as a back server that requires TLS.
#[test]
fn nbd_tls_x509_to_the_server() {
    require("nbdcopy", "libnbd-bin");
    require("psktool", "gnutls-bin");
    require("certtool", "gnutls-bin");
    let dir = TempDir::new("nbdx509");
    let keys = dir.path().join("keys");
    let o = std::process::Command::new("bash")
        .arg(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../scripts/gen-tls-keys.sh"
        ))
        .arg(&keys)
        .output()
        .unwrap();
    assert!(o.status.success(), "gen-tls-keys.sh: {o:?}");
    let pki = keys.join("pki");
    let want = read_all_with(DEBIAN_NBDKIT, &["pattern", "1M"]);
    let certs_opt = format!("--tls-certificates={}", pki.display());
    let certs = format!("tls-certificates={}", pki.display());
    for back_bin in [BIN, DEBIAN_NBDKIT] {
        let back = Server::start_bin(
            std::path::Path::new(back_bin),
            &["--tls=require", &certs_opt, "pattern", "1M"],
        );
        let sock = format!("socket={}", back.sock.display());
        for front in [BIN, DEBIAN_NBDKIT] {
            for extra in ["tls=require", "tls-verify=false"] {
                let args = ["nbd", &sock, &certs, extra];
                assert!(
                    read_all_with(front, &args) == want,
                    "{front} over {back_bin} {args:?}"
                );
            }
        }
    }
    bad(&["nbd", "socket=/x", "tls-verify=perhaps"], "tls-verify");
}

/// nbd plugin, dynamic-export=true: each client's connection asks the
/// back server for the export that client asked for; with export= or
/// shared=true it is refused in nbdkit's words. Ours and Debian's.
#[test]
fn nbd_dynamic_export() {
    require("nbdinfo", "libnbd-bin");
    let dir = TempDir::new("nbddynamic");
    let exports = dir.path().join("exports");
    std::fs::create_dir(&exports).unwrap();
    std::fs::write(exports.join("a"), vec![1u8; 1 << 20]).unwrap();
    std::fs::write(exports.join("b"), vec![2u8; 3 << 20]).unwrap();
    let dir_arg = format!("dir={}", exports.display());
    let back = Server::start_bin(std::path::Path::new(DEBIAN_NBDKIT), &["file", &dir_arg]);
    let socket = format!("socket={}", back.sock.display());
    let cmd = "nbdinfo --size \"nbd+unix:///a?socket=$unixsocket\"; \
               nbdinfo --size \"nbd+unix:///b?socket=$unixsocket\"";
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(bin, &["nbd", &socket, "dynamic-export=true"], cmd);
        assert!(o.status.success(), "{bin}: {o:?}");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout),
            "1048576\n3145728\n",
            "{bin}"
        );
        // The export list is the back server's.
        let o = run_with(
            bin,
            &["nbd", &socket, "dynamic-export=true"],
            "nbdinfo --list --json \"$uri\" | grep '\"export-name\"' | sort",
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        let list = String::from_utf8_lossy(&o.stdout).replace([' ', '\t'], "");
        assert_eq!(
            list, "\"export-name\":\"a\",\n\"export-name\":\"b\",\n",
            "{bin}"
        );
        for (extra, words) in [
            (
                "export=a",
                "cannot mix 'dynamic-export' with explicit export name",
            ),
            (
                "shared=true",
                "cannot use 'dynamic-export' with shared connection",
            ),
        ] {
            let o = run_with(bin, &["nbd", &socket, "dynamic-export=true", extra], "true");
            assert_eq!(o.status.code(), Some(1), "{bin} {extra}: {o:?}");
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(err.contains(words), "{bin} {extra}: {err}");
        }
    }
}

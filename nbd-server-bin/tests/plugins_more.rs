//! The info, tmpdisk, ondemand and partitioning plugins, each run as ours
//! and as Debian's nbdkit with the same arguments and the same clients
//! (nbdcopy, nbdinfo, sfdisk, blkid), comparing bytes, sizes, flags and
//! refusals.

mod common;
mod stack;

use std::path::Path;
use std::process::{Command, Output};

use nbd_core::wire::consts::cmd;

use common::*;
use stack::*;

/// Both servers.
const BOTH: [&str; 2] = [BIN, DEBIAN_NBDKIT];

/// `nbdinfo` of URI (a shell word using `$unixsocket` or `$uri`): the
/// size and the flags, sorted (not the block size, which Debian's nbdkit
/// does not send).
fn flags_with(bin: &str, args: &[&str], uri: &str) -> Vec<String> {
    require("nbdinfo", "libnbd-bin");
    let o = run_with(bin, args, &format!("nbdinfo {uri}"));
    assert!(o.status.success(), "{bin} {args:?}: {o:?}");
    let mut v: Vec<String> = String::from_utf8_lossy(&o.stdout)
        .lines()
        .map(str::trim)
        .filter(|l| l.starts_with("can_") || l.starts_with("is_") || l.starts_with("export-size"))
        .map(String::from)
        .collect();
    v.sort();
    v
}

/// Runs `cmd` under both servers; their outputs, ours first.
fn both(args: &[&str], cmd: &str) -> [Output; 2] {
    BOTH.map(|bin| run_with(bin, args, cmd))
}

fn stdout(o: &Output) -> String {
    assert!(o.status.success(), "{o:?}");
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A URI for export NAME (already %-encoded) of the `--run` server.
fn export_uri(name: &str) -> String {
    format!("\"nbd+unix:///{name}?socket=$unixsocket\"")
}

// ---- info ----

#[test]
fn info_reflects_the_export_name() {
    require("nbdcopy", "libnbd-bin");
    let cmd = format!(
        "nbdcopy {} - && echo && nbdcopy {} -",
        export_uri("hello%20world"),
        export_uri("")
    );
    let [ours, theirs] = both(&["info"], &cmd);
    assert_eq!(stdout(&ours), "hello world\n");
    assert_eq!(ours.stdout, theirs.stdout);
    for args in [&["info"][..], &["info", "mode=EXPORT-NAME"]] {
        assert_eq!(
            flags_with(BIN, args, &export_uri("hello")),
            flags_with(DEBIAN_NBDKIT, args, &export_uri("hello"))
        );
    }
    assert!(flags_with(BIN, &["info"], &export_uri("hello"))
        .contains(&"is_read_only: true".to_string()));
}

#[test]
fn info_decodes_base64_as_gnutls_does() {
    require("nbdcopy", "libnbd-bin");
    // Good names: whitespace is skipped.
    let cmd = ["aGVsbG8=", "aGVsbA==", "aGV%20sbG8=", "aGVs%0AbG8="]
        .map(|n| format!("nbdcopy {} - && echo", export_uri(n)))
        .join(" && ");
    let [ours, theirs] = both(&["info", "base64exportname"], &cmd);
    assert_eq!(stdout(&ours), "hello\nhell\nhello\nhello\n");
    assert_eq!(ours.stdout, theirs.stdout);
    // Bad names: each client is refused, by both.
    for bad in ["aGVsbG8", "YQ", "aGVsbG8==", "a%3DGVsbG8", "!!!"] {
        let cmd = format!("nbdcopy {} - && echo served", export_uri(bad));
        for (bin, o) in BOTH
            .iter()
            .zip(both(&["info", "mode=base64exportname"], &cmd))
        {
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{bin} served {bad}");
            assert!(
                err.contains("base64: Base64 decoding error."),
                "{bin}: {err}"
            );
        }
    }
}

#[test]
fn info_address_is_the_clients() {
    require("nbdcopy", "libnbd-bin");
    let [ours, theirs] = both(&["info", "address"], "nbdcopy \"$uri\" -");
    assert_eq!(stdout(&ours), "unix");
    assert_eq!(ours.stdout, theirs.stdout);
    // Over TCP: "127.0.0.1:PORT", the client's port.
    for bin in BOTH {
        let (_, o) = on_free_port(|port| {
            Command::new(bin)
                .args(["-p", port, "-i", "127.0.0.1", "--run"])
                .arg(format!("nbdcopy nbd://127.0.0.1:{port} -"))
                .args(["info", "address"])
                .output()
                .unwrap()
        });
        let s = stdout(&o);
        let (ip, p) = s.split_once(':').unwrap_or_else(|| panic!("{bin}: {s}"));
        assert_eq!(ip, "127.0.0.1", "{bin}: {s}");
        assert!(p.parse::<u16>().is_ok(), "{bin}: {s}");
    }
    assert_eq!(
        flags_with(BIN, &["info", "address"], "\"$uri\""),
        flags_with(DEBIAN_NBDKIT, &["info", "address"], "\"$uri\"")
    );
}

#[test]
fn info_clocks() {
    require("nbdcopy", "libnbd-bin");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    for bin in BOTH {
        for mode in ["time", "uptime", "conntime"] {
            let o = run_with(bin, &["info", mode], "nbdcopy \"$uri\" -");
            let b = o.stdout.clone();
            assert_eq!(b.len(), 12, "{bin} {mode}: {o:?}");
            let secs = u64::from_be_bytes(b[..8].try_into().unwrap());
            let usecs = u32::from_be_bytes(b[8..].try_into().unwrap());
            assert!(usecs < 1_000_000, "{bin} {mode}: {usecs}");
            match mode {
                "time" => assert!(secs.abs_diff(now) < 60, "{bin}: {secs} vs {now}"),
                _ => assert!(secs < 30, "{bin} {mode}: {secs}"),
            }
        }
        for mode in ["time", "uptime", "conntime"] {
            assert_eq!(
                flags_with(BIN, &["info", mode], "\"$uri\""),
                flags_with(DEBIAN_NBDKIT, &["info", mode], "\"$uri\"")
            );
        }
    }
}

#[test]
fn info_bad_arguments() {
    bad(&["info", "mode=bad"], "unknown mode: 'bad'");
    bad(&["info", "foo=1"], "unknown parameter 'foo'");
    for bin in BOTH {
        let o = run_with(bin, &["info", "mode=bad"], "true");
        assert_eq!(o.status.code(), Some(1), "{bin}");
    }
}

// ---- tmpdisk ----

/// Runs `cmd` under BIN with ARGS and `TMPDIR` set.
fn run_tmpdir(bin: &str, tmpdir: &Path, args: &[&str], cmd: &str) -> Output {
    Command::new(bin)
        .env("TMPDIR", tmpdir)
        .args(["-U", "-", "--run", cmd])
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn tmpdisk_makes_a_filesystem_per_client() {
    require("blkid", "util-linux");
    let t = TempDir::new("tmpdisk");
    for bin in BOTH {
        let dir = t.path().join(if bin == BIN { "ours" } else { "theirs" });
        std::fs::create_dir_all(&dir).unwrap();
        let img = dir.join("img");
        // The disk is made under $TMPDIR and unlinked once open.
        let cmd = format!(
            "nbdcopy \"$uri\" {img} && blkid -p -o export {img} && \
             ls {dir} | grep -c tmpdisk || true",
            img = img.display(),
            dir = dir.display()
        );
        let o = run_tmpdir(bin, &dir, &["tmpdisk", "1M", "label=hello"], &cmd);
        let s = stdout(&o);
        assert!(s.contains("TYPE=ext4"), "{bin}: {s}");
        assert!(s.contains("LABEL=hello"), "{bin}: {s}");
        assert!(s.ends_with("\n0\n"), "{bin}: {s}");
        assert_eq!(std::fs::metadata(&img).unwrap().len(), 1 << 20);
        // Nothing left behind.
        let left: Vec<_> = std::fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .filter(|n| n.to_string_lossy().starts_with("tmpdisk"))
            .collect();
        assert!(left.is_empty(), "{bin}: {left:?}");
        // Another type.
        let o = run_tmpdir(
            bin,
            &dir,
            &["tmpdisk", "2M", "type=ext2"],
            &format!(
                "nbdcopy \"$uri\" {img} && blkid -p -o export {img}",
                img = img.display()
            ),
        );
        assert!(stdout(&o).contains("TYPE=ext2"), "{bin}: {o:?}");
    }
    assert_eq!(
        flags_with(BIN, &["tmpdisk", "1M"], "\"$uri\""),
        flags_with(DEBIAN_NBDKIT, &["tmpdisk", "1M"], "\"$uri\"")
    );
}

#[test]
fn tmpdisk_command_and_its_variables() {
    require("nbdcopy", "libnbd-bin");
    let t = TempDir::new("tmpdisk-cmd");
    let base = t.path().join("base");
    std::fs::write(&base, b"the template disk").unwrap();
    let base_arg = format!("base={}", base.display());
    // A template copied per client, as the manual shows.
    let args = [
        "tmpdisk",
        "size=0",
        &base_arg,
        "command=cp --sparse=always \"$base\" \"$disk\"",
    ];
    let [ours, theirs] = both(&args, "nbdcopy \"$uri\" -");
    assert_eq!(stdout(&ours), "the template disk");
    assert_eq!(ours.stdout, theirs.stdout);
    // $size, quoting of odd values, and each client's own disk.
    let args = [
        "tmpdisk",
        "1k",
        "word=it's $HOME; `x`",
        "command=printf '%s/%s' \"$word\" \"$size\" > \"$disk\"",
    ];
    let cmd = "nbdcopy \"$uri\" - && echo && nbdcopy \"$uri\" -";
    let [ours, theirs] = both(&args, cmd);
    assert_eq!(stdout(&ours), "it's $HOME; `x`/1024\nit's $HOME; `x`/1024");
    assert_eq!(ours.stdout, theirs.stdout);
    // A write is the client's only.
    let srv = Server::start(&["tmpdisk", "4k", "command=truncate -s $size \"$disk\""]);
    let mut a = srv.client();
    a.write(0, b"mine");
    assert_eq!(a.read(0, 4), b"mine");
    let mut b = srv.client();
    assert_eq!(b.read(0, 4), [0; 4]);
    a.disconnect();
    b.disconnect();
}

#[test]
fn tmpdisk_failures() {
    // The client is refused, by both (as refused_on_open checks, but
    // with $TMPDIR of our own: Debian's leaves its directory behind).
    let t = TempDir::new("tmpdisk-fail");
    for bin in BOTH {
        let o = run_tmpdir(
            bin,
            t.path(),
            &["tmpdisk", "1M", "command=exit 3"],
            "nbdinfo \"$uri\"",
        );
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bin} served the client");
        assert!(err.contains("command exited with code 3"), "{bin}: {err}");
        if bin == BIN {
            assert!(
                err.lines().any(|l| l.starts_with("nbdkit: error: ")),
                "{err}"
            );
            let left: Vec<_> = std::fs::read_dir(t.path())
                .unwrap()
                .flatten()
                .map(|e| e.file_name())
                .filter(|n| n.to_string_lossy().starts_with("tmpdisk"))
                .collect();
            assert!(left.is_empty(), "{left:?}");
        }
    }
    bad(&["tmpdisk"], "size parameter is required");
    bad(
        &["tmpdisk", "1M", "disk=/tmp/x"],
        "'disk' parameter cannot be set",
    );
    bad(&["tmpdisk", "size=1Q"], "size");
    for bin in BOTH {
        for args in [&["tmpdisk"][..], &["tmpdisk", "1M", "disk=/tmp/x"]] {
            let o = run_with(bin, args, "true");
            assert_eq!(o.status.code(), Some(1), "{bin} {args:?}");
        }
    }
}

// ---- ondemand ----

#[test]
fn ondemand_makes_disks_once_and_keeps_them() {
    require("nbdcopy", "libnbd-bin");
    let t = TempDir::new("ondemand");
    let data = t.path().join("data");
    std::fs::write(&data, vec![0x5a; 4096]).unwrap();
    for bin in BOTH {
        let dir = t.path().join(if bin == BIN { "ours" } else { "theirs" });
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = format!("dir={}", dir.display());
        let args = ["ondemand", &dir_arg, "1M"];
        // First use makes an ext4 disk; a write to it stays.
        let cmd = format!(
            "nbdinfo --size {e1} && nbdcopy {data} {e1} && nbdinfo --size \"$uri\"",
            e1 = export_uri("e1"),
            data = data.display()
        );
        let o = run_with(bin, &args, &cmd);
        assert_eq!(stdout(&o), "1048576\n1048576\n", "{bin}");
        let e1 = std::fs::read(dir.join("e1")).unwrap();
        assert_eq!(e1.len(), 1 << 20);
        assert_eq!(&e1[..4096], &[0x5a; 4096][..]);
        // The empty name's disk, made by mkfs as ext4.
        let o = Command::new("blkid")
            .args(["-p", "-o", "export"])
            .arg(dir.join("default"))
            .output()
            .unwrap();
        assert!(stdout(&o).contains("TYPE=ext4"), "{bin}: {o:?}");
        // Later: the same disk, not made again.
        let o = run_with(bin, &args, &format!("nbdcopy {} -", export_uri("e1")));
        assert_eq!(&o.stdout[..4096], &[0x5a; 4096][..], "{bin}");
        // Files with '.' or ':' are not listed; "" is "default".
        std::fs::write(dir.join("x.y"), b"").unwrap();
        std::fs::write(dir.join("p:q"), b"").unwrap();
        let o = run_with(bin, &args, "nbdinfo --list --json \"$uri\"");
        let mut names: Vec<String> = stdout(&o)
            .lines()
            .filter_map(|l| l.trim().strip_prefix("\"export-name\": "))
            .map(|n| n.trim_end_matches(',').to_string())
            .collect();
        names.sort();
        assert_eq!(names, ["\"default\"", "\"e1\""], "{bin}");
    }
    let dir_arg = format!("dir={}", t.path().join("ours").display());
    let dir_arg2 = format!("dir={}", t.path().join("theirs").display());
    assert_eq!(
        flags_with(BIN, &["ondemand", &dir_arg, "1M"], &export_uri("e1")),
        flags_with(
            DEBIAN_NBDKIT,
            &["ondemand", &dir_arg2, "1M"],
            &export_uri("e1")
        )
    );
}

#[test]
fn ondemand_refuses_bad_names_and_locked_disks() {
    require("nbdcopy", "libnbd-bin");
    let t = TempDir::new("ondemand-lock");
    for bin in BOTH {
        let dir = t.path().join(if bin == BIN { "ours" } else { "theirs" });
        std::fs::create_dir_all(&dir).unwrap();
        let dir_arg = format!("dir={}", dir.display());
        let args = [
            "ondemand",
            &dir_arg,
            "1M",
            "command=truncate -s $size \"$disk\"",
        ];
        for name in ["a.b", "a:b", "%2E%2E"] {
            let o = run_with(bin, &args, &format!("nbdinfo --size {}", export_uri(name)));
            let err = String::from_utf8_lossy(&o.stderr);
            assert!(!o.status.success(), "{bin} served {name}");
            assert!(err.contains("invalid exportname"), "{bin} {name}: {err}");
        }
        // A client holds "held" (nbdcopy blocks on the full pipe) while
        // another asks for it.
        let cmd = format!(
            "nbdcopy {e} - | {{ sleep 2; if nbdinfo --size {e}; then echo second; \
             else echo refused; fi; cat >/dev/null; }}",
            e = export_uri("held")
        );
        let o = run_with(bin, &args, &cmd);
        let err = String::from_utf8_lossy(&o.stderr);
        assert_eq!(stdout(&o), "refused\n", "{bin}: {err}");
        assert!(
            err.contains("held: filesystem is locked by another client"),
            "{bin}: {err}"
        );
        // Read-only (-r), readers share the disk.
        let mut rargs = vec!["-r"];
        rargs.extend(args);
        let o = run_with(bin, &rargs, &cmd);
        assert_eq!(stdout(&o), "1048576\nsecond\n", "{bin}: {o:?}");
        // With wait=true the second client waits its turn.
        let mut wargs = args.to_vec();
        wargs.push("wait=true");
        let cmd = format!(
            "nbdcopy {e} - | {{ sleep 1; cat >/dev/null; }} & sleep 0.3; \
             nbdinfo --size {e}; wait",
            e = export_uri("held")
        );
        assert_eq!(stdout(&run_with(bin, &wargs, &cmd)), "1048576\n", "{bin}");
    }
}

#[test]
fn ondemand_bad_arguments() {
    let t = TempDir::new("ondemand-bad");
    let dir_arg = format!("dir={}", t.path().display());
    let missing = format!("dir={}/missing", t.path().display());
    let file = t.path().join("f");
    std::fs::write(&file, b"").unwrap();
    let not_dir = format!("dir={}", file.display());
    let cases: [(&[&str], &str); 5] = [
        (&["ondemand", "1M"], "dir and size parameters are required"),
        (
            &["ondemand", &dir_arg],
            "dir and size parameters are required",
        ),
        (&["ondemand", &missing, "1M"], "realpath"),
        (&["ondemand", &not_dir, "1M"], "opendir"),
        (
            &["ondemand", &dir_arg, "1M", "wait=foo"],
            "could not decipher boolean",
        ),
    ];
    for (args, needle) in cases {
        bad(args, needle);
        let o = run_with(DEBIAN_NBDKIT, args, "true");
        assert_eq!(o.status.code(), Some(1), "Debian {args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "Debian {args:?}: {o:?}"
        );
    }
    bad(&["ondemand", &dir_arg, "1M", "disk=x"], "'disk' parameter");
}

// ---- partitioning ----

/// Files of the given sizes, filled with a pattern, named p0, p1...
fn part_files(dir: &Path, sizes: &[usize]) -> Vec<String> {
    sizes
        .iter()
        .enumerate()
        .map(|(i, &n)| {
            let p = dir.join(format!("p{i}"));
            std::fs::write(&p, pattern(n, i as u8 + 1)).unwrap();
            p.to_string_lossy().into_owned()
        })
        .collect()
}

/// The whole disk from both servers. GPT's unique GUIDs come from a
/// generator seeded with the time in seconds, so the two are started in
/// the same second: a pair that straddles a second is tried again.
fn same_disk(args: &[&str]) -> Vec<u8> {
    for _ in 0..5 {
        let a: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        let theirs = std::thread::spawn(move || {
            let a: Vec<&str> = a.iter().map(String::as_str).collect();
            read_all_with(DEBIAN_NBDKIT, &a)
        });
        let ours = read_all(args);
        let theirs = theirs.join().unwrap();
        if ours == theirs {
            return ours;
        }
        assert_eq!(ours.len(), theirs.len(), "{args:?}");
    }
    panic!("{args:?}: our disk differs from Debian's");
}

/// `sfdisk -J` of an image: (label, [(start, size, type)]).
fn sfdisk(img: &Path) -> (String, Vec<(u64, u64, String)>) {
    require("sfdisk", "fdisk");
    let o = Command::new("sfdisk").arg("-J").arg(img).output().unwrap();
    let s = stdout(&o);
    let label = s
        .lines()
        .find_map(|l| l.trim().strip_prefix("\"label\": \""))
        .map(|l| l.trim_end_matches("\",").to_string())
        .unwrap();
    // One field a line: "start", then "size", then "type".
    let mut parts: Vec<(u64, u64, String)> = Vec::new();
    for l in s.lines() {
        let Some((k, v)) = l.trim().split_once(": ") else {
            continue;
        };
        let v = v.trim_end_matches(',').trim_matches('"');
        match k {
            "\"start\"" => parts.push((v.parse().unwrap(), 0, String::new())),
            "\"size\"" => parts.last_mut().unwrap().1 = v.parse().unwrap(),
            "\"type\"" => parts.last_mut().unwrap().2 = v.to_string(),
            _ => {}
        }
    }
    (label, parts)
}

fn check_partitions(t: &TempDir, args: &[&str], files: &[String], want_label: &str) -> Vec<u8> {
    let disk = same_disk(args);
    let img = t.path().join("img");
    std::fs::write(&img, &disk).unwrap();
    let (label, parts) = sfdisk(&img);
    assert_eq!(label, want_label, "{args:?}");
    // Every file is a partition holding its bytes (extended entries
    // aside), in order.
    let data_parts: Vec<_> = parts
        .iter()
        .filter(|(_, _, ty)| ty != "f" && ty != "5")
        .collect();
    assert_eq!(data_parts.len(), files.len(), "{args:?}: {parts:?}");
    for ((start, size, _), f) in data_parts.iter().zip(files) {
        let want = std::fs::read(f).unwrap();
        let at = (*start * 512) as usize;
        assert_eq!(*size, want.len().div_ceil(512) as u64);
        assert_eq!(&disk[at..at + want.len()], &want[..], "{f}");
    }
    disk
}

#[test]
fn partitioning_mbr_and_gpt_match_debian() {
    require("nbdcopy", "libnbd-bin");
    let t = TempDir::new("partitioning");
    let files = part_files(t.path(), &[1 << 20, 3000, 512, 70_000, 1, 5000]);
    let f = |n: usize| -> Vec<&str> { files[..n].iter().map(String::as_str).collect() };
    let mut args = vec!["partitioning"];
    args.extend(f(2));
    check_partitions(&t, &args, &files[..2], "dos");
    let mut args = vec!["partitioning", "partition-type=gpt"];
    args.extend(f(2));
    check_partitions(&t, &args, &files[..2], "gpt");
    // More than four: GPT by default, or MBR with logical partitions.
    let mut args = vec!["partitioning"];
    args.extend(f(6));
    check_partitions(&t, &args, &files, "gpt");
    let mut args = vec!["partitioning", "partition-type=mbr"];
    args.extend(f(6));
    check_partitions(&t, &args, &files, "dos");
    // Types and alignment apply to the files after them.
    for ty in ["mbr", "gpt"] {
        let pt = format!("partition-type={ty}");
        let args = [
            "partitioning",
            &pt,
            "alignment=4096",
            &files[0],
            "mbr-id=0x82",
            "type-guid=C12A7328-F81F-11D2-BA4B-00A0C93EC93B",
            &files[1],
            "alignment=512",
            "mbr-id=default",
            "type-guid=default",
            &files[2],
        ];
        let disk = check_partitions(
            &t,
            &args,
            &files[..3],
            if ty == "mbr" { "dos" } else { "gpt" },
        );
        let img = t.path().join("img");
        std::fs::write(&img, &disk).unwrap();
        let (_, parts) = sfdisk(&img);
        // The first 4096-aligned sector after the table (1 or 34 sectors).
        assert_eq!(parts[0].0, if ty == "mbr" { 8 } else { 40 });
        let types: Vec<&str> = parts.iter().map(|p| p.2.as_str()).collect();
        if ty == "mbr" {
            assert_eq!(types, ["83", "82", "83"]);
        } else {
            assert_eq!(types[1], "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
            assert_eq!(types[2], "0FC63DAF-8483-4772-8E79-3D69D8477DE4");
        }
    }
    let mut args = vec!["partitioning"];
    args.extend(f(3));
    assert_eq!(
        flags_with(BIN, &args, "\"$uri\""),
        flags_with(DEBIAN_NBDKIT, &args, "\"$uri\"")
    );
}

#[test]
fn partitioning_writes_reach_files_but_not_tables() {
    let t = TempDir::new("partitioning-w");
    let files = part_files(t.path(), &[4096, 1000]);
    let srv = Server::start(&["partitioning", &files[0], &files[1]]);
    let mut c = srv.client();
    // Partition 1 starts at 1 MiB.
    c.write((1 << 20) + 10, b"new!");
    assert_eq!(&std::fs::read(&files[0]).unwrap()[10..14], b"new!");
    // The table may be rewritten only as it is.
    let mbr = c.read(0, 512);
    c.write(0, &mbr);
    let mut changed = mbr.clone();
    changed[0x1c2] ^= 1;
    assert_eq!(c.cmd(cmd::WRITE, 0, 0, 512, &changed).error, 5, "EIO");
    // Padding takes zeroes only.
    c.write(4096, &[0; 512]);
    assert_eq!(c.cmd(cmd::WRITE, 0, 4096, 1, &[1]).error, 5, "EIO");
    // Past the end of the second file, to the sector's end: padding.
    let p2 = (2 << 20) + 1000;
    c.write(p2, &[0; 24]);
    assert_eq!(c.cmd(cmd::WRITE, 0, p2, 1, &[1]).error, 5);
    c.disconnect();
    // Through nbdcopy, both servers take the whole disk back with new
    // partition data, and refuse it with the table changed.
    for bin in BOTH {
        let args = ["partitioning", &files[0], &files[1]];
        let mut disk = read_all_with(bin, &args);
        disk[(1 << 20)..(1 << 20) + 4096].copy_from_slice(&pattern(4096, 9));
        let img = t.path().join("img");
        std::fs::write(&img, &disk).unwrap();
        let copy = format!("nbdcopy {} \"$uri\"", img.display());
        let o = run_with(bin, &args, &copy);
        assert!(o.status.success(), "{bin}: {o:?}");
        assert_eq!(std::fs::read(&files[0]).unwrap(), pattern(4096, 9), "{bin}");
        disk[0x1c2] ^= 1;
        std::fs::write(&img, &disk).unwrap();
        let o = run_with(bin, &args, &copy);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{bin} let the table change");
        assert!(
            err.contains("write at offset 0 failed: Input/output error"),
            "{bin}: {err}"
        );
    }
}

#[test]
fn partitioning_bad_arguments() {
    let t = TempDir::new("partitioning-bad");
    let files = part_files(t.path(), &[1000]);
    let empty = t.path().join("empty");
    std::fs::write(&empty, b"").unwrap();
    let empty = empty.to_string_lossy().into_owned();
    let f = files[0].as_str();
    let cases: [(&[&str], &str); 9] = [
        (
            &["partitioning"],
            "at least one file= parameter must be supplied",
        ),
        (
            &["partitioning", &empty],
            "zero length partitions are not allowed",
        ),
        (
            &["partitioning", "/nonexistent"],
            "/nonexistent: No such file",
        ),
        (
            &["partitioning", f, "partition-type=x"],
            "unknown partition-type: x",
        ),
        (
            &["partitioning", "alignment=100", f],
            "should be >= sector size 512",
        ),
        (
            &["partitioning", "alignment=4M", f],
            "<= maximum alignment 1048576",
        ),
        (
            &["partitioning", "mbr-id=300", f],
            "mbr-id: could not parse number",
        ),
        (&["partitioning", "mbr-id=abc", f], "mbr-id: empty string"),
        (
            &["partitioning", "type-guid=xyz", f],
            "could not validate GUID: xyz",
        ),
    ];
    for (args, needle) in cases {
        bad(args, needle);
        let o = run_with(DEBIAN_NBDKIT, args, "true");
        assert_eq!(o.status.code(), Some(1), "Debian {args:?}");
        assert!(
            String::from_utf8_lossy(&o.stderr).contains(needle),
            "Debian {args:?}: {o:?}"
        );
    }
    // Too big for MBR: GPT unless MBR is asked for, which is refused.
    let big = t.path().join("big");
    std::fs::File::create(&big)
        .unwrap()
        .set_len(3 << 40)
        .unwrap();
    let big = big.to_string_lossy().into_owned();
    bad(
        &["partitioning", "partition-type=mbr", &big],
        "MBR partition table type supports a maximum virtual disk size of about 2 TB",
    );
    let o = run_with(
        DEBIAN_NBDKIT,
        &["partitioning", "partition-type=mbr", &big],
        "true",
    );
    assert_eq!(o.status.code(), Some(1));
    let [ours, theirs] = both(
        &["partitioning", &big],
        "nbdinfo --size \"$uri\" && nbdcopy \"$uri\" - 2>/dev/null | head -c 520 | tail -c 8",
    );
    assert_eq!(stdout(&ours), stdout(&theirs));
    assert_eq!(stdout(&ours), "3298535948800\nEFI PART");
    // Debian's 1.32 aborts on an alignment that is not a power of two;
    // ours refuses it.
    bad(&["partitioning", "alignment=1536", f], "power of 2");
}

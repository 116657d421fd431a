//! Options about the server process and its sockets, each run against
//! our nbdkit and Debian's with the same arguments: `-u`/`-g` (dropping
//! privileges after binding), `-4`/`-6` (one address family),
//! `--swap` (locked into memory) and `--selinux-label`.

mod common;

use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};

use common::*;

const DEBIAN_NBDKIT: &str = "/usr/bin/nbdkit";

/// Both servers: ours, then Debian's.
fn both() -> [&'static Path; 2] {
    require("nbdkit", "nbdkit");
    [Path::new(BIN), Path::new(DEBIAN_NBDKIT)]
}

fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// A line of /proc/PID/status, such as "Uid", without its name.
fn status_field(pid: u32, name: &str) -> String {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find_map(|l| l.strip_prefix(&format!("{name}:")))
        .map(|v| v.split_whitespace().collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// Runs `bin` to completion; its exit status and standard error.
fn run(bin: &Path, args: &[&str]) -> (Option<i32>, String) {
    let tmp = TempDir::new("proc-run");
    let out = Command::new(bin)
        .current_dir(tmp.path())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run nbdkit");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn user_and_group_are_taken_after_binding() {
    if !is_root() {
        eprintln!("SKIPPED: -u/-g need root to change to another user");
        return;
    }
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    let nogroup = nix::unistd::Group::from_name("nogroup").unwrap().unwrap();
    let want_uid = vec![nobody.uid.to_string(); 4].join(" ");
    let want_gid = vec![nogroup.gid.to_string(); 4].join(" ");
    for bin in both() {
        // Names, and the same as numbers.
        for (u, g) in [
            ("nobody".to_string(), "nogroup".to_string()),
            (nobody.uid.to_string(), nogroup.gid.to_string()),
        ] {
            let srv = Server::start_bin(bin, &["-u", &u, "-g", &g, "memory", "1M"]);
            let pid = srv.pid();
            assert!(
                eventually(|| status_field(pid, "Uid") == want_uid),
                "{}: Uid {}",
                bin.display(),
                status_field(pid, "Uid")
            );
            assert_eq!(status_field(pid, "Gid"), want_gid, "{}", bin.display());
            // Root's supplementary groups are gone.
            assert_eq!(
                status_field(pid, "Groups"),
                nogroup.gid.to_string(),
                "{}",
                bin.display()
            );
            // The socket was bound as root, and still serves.
            let mut c = srv.client();
            c.write(0, &[7u8; 512]);
            assert_eq!(c.read(0, 512), vec![7u8; 512], "{}", bin.display());
        }
    }
}

#[test]
fn unknown_user_or_group_is_an_error() {
    for bin in both() {
        for (opt, name, msg) in [
            (
                "-u",
                "no-such-user-here",
                "-u option: no-such-user-here is not a valid user name or uid",
            ),
            (
                "--group",
                "no-such-group-here",
                "-g option: no-such-group-here is not a valid group name or gid",
            ),
        ] {
            let (code, err) = run(bin, &[opt, name, "-U", "sock", "memory", "1M"]);
            assert_eq!(code, Some(1), "{}: {err}", bin.display());
            assert!(err.contains(msg), "{}: {err}", bin.display());
        }
    }
}

/// The TCP ports a process listens on, with whether each is IPv6: its
/// socket descriptors matched with /proc/net/tcp and tcp6.
fn listening_ports(pid: u32) -> Vec<(bool, u16)> {
    let mut inodes = Vec::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap() {
        let link = std::fs::read_link(e.unwrap().path()).unwrap_or_default();
        let link = link.to_string_lossy();
        if let Some(i) = link
            .strip_prefix("socket:[")
            .and_then(|r| r.strip_suffix(']'))
        {
            inodes.push(i.to_string());
        }
    }
    let mut ports = Vec::new();
    for (v6, table) in [(false, "/proc/net/tcp"), (true, "/proc/net/tcp6")] {
        let t = std::fs::read_to_string(table).unwrap_or_default();
        for l in t.lines().skip(1) {
            let f: Vec<&str> = l.split_whitespace().collect();
            // local address, state (0A: LISTEN), inode.
            if f.len() > 9 && f[3] == "0A" && inodes.iter().any(|i| i == f[9]) {
                let port = f[1].rsplit(':').next().unwrap();
                ports.push((v6, u16::from_str_radix(port, 16).unwrap()));
            }
        }
    }
    ports.sort();
    ports
}

/// A server on `-p 0` (the kernel picks the port) in the foreground.
fn start_tcp(bin: &Path, args: &[&str]) -> (Child, Vec<(bool, u16)>) {
    let mut child = Command::new(bin)
        .args(["-f", "-p", "0"])
        .args(args)
        .args(["memory", "1M"])
        .stdin(Stdio::null())
        .spawn()
        .expect("start nbdkit");
    let pid = child.id();
    let mut ports = Vec::new();
    let found = eventually(|| {
        ports = listening_ports(pid);
        !ports.is_empty()
    });
    if !found {
        let _ = child.kill();
        panic!("{}: not listening", bin.display());
    }
    (child, ports)
}

/// Whether the server answers with NBD's greeting at `addr`.
fn greets(addr: &str) -> bool {
    match TcpStream::connect(addr) {
        Ok(mut s) => {
            s.set_read_timeout(Some(std::time::Duration::from_secs(20)))
                .unwrap();
            read_exact_tcp(&mut s, 8) == b"NBDMAGIC"
        }
        Err(_) => false,
    }
}

fn read_exact_tcp(s: &mut TcpStream, n: usize) -> Vec<u8> {
    use std::io::Read;
    let mut b = vec![0u8; n];
    s.read_exact(&mut b).map(|()| b).unwrap_or_default()
}

/// What a server started with `args` listens on and whom it answers:
/// (families of its sockets, IPv4 loopback answered, IPv6 loopback
/// answered).
fn reach(bin: &Path, args: &[&str]) -> (Vec<bool>, bool, bool) {
    let (mut child, ports) = start_tcp(bin, args);
    let port = ports[0].1;
    let r = (
        ports.iter().map(|p| p.0).collect(),
        greets(&format!("127.0.0.1:{port}")),
        greets(&format!("[::1]:{port}")),
    );
    let _ = child.kill();
    let _ = child.wait();
    r
}

#[test]
fn ipv4_only_and_ipv6_only() {
    if TcpStream::connect("[::1]:1").is_err_and(|e| e.raw_os_error() == Some(libc::EADDRNOTAVAIL)) {
        eprintln!("SKIPPED: no IPv6 loopback address");
        return;
    }
    for bin in both() {
        let b = bin.display();
        // -4: one IPv4 socket on 0.0.0.0; IPv6 clients are refused.
        assert_eq!(reach(bin, &["-4"]), (vec![false], true, false), "{b} -4");
        assert_eq!(
            reach(bin, &["--ipv4-only"]),
            (vec![false], true, false),
            "{b}"
        );
        // -6: one IPv6 socket on [::], v6-only: IPv4 clients are refused.
        assert_eq!(reach(bin, &["-6"]), (vec![true], false, true), "{b} -6");
        assert_eq!(
            reach(bin, &["--ipv6-only"]),
            (vec![true], false, true),
            "{b}"
        );
        // With -i, only the addresses of that family are bound.
        assert_eq!(
            reach(bin, &["-4", "-i", "127.0.0.1"]),
            (vec![false], true, false),
            "{b} -4 -i"
        );
        assert_eq!(
            reach(bin, &["-6", "-i", "::1"]),
            (vec![true], false, true),
            "{b} -6 -i"
        );
    }
    // An address of the other family leaves nothing to bind.
    for bin in both() {
        let (code, err) = run(bin, &["-4", "-i", "::1", "-p", "0", "memory", "1M"]);
        assert_eq!(code, Some(1), "{}: {err}", bin.display());
        assert!(err.contains("getaddrinfo: ::1"), "{}: {err}", bin.display());
    }
}

#[test]
fn swap_locks_the_server_into_memory() {
    if !is_root() {
        eprintln!("SKIPPED: --swap needs root (or a large RLIMIT_MEMLOCK)");
        return;
    }
    let locked_kb = |pid: u32| -> u64 {
        status_field(pid, "VmLck")
            .trim_end_matches(" kB")
            .parse()
            .unwrap()
    };
    for bin in both() {
        let srv = Server::start_bin(bin, &["--swap", "memory", "1M"]);
        let _c = srv.client();
        assert!(locked_kb(srv.pid()) > 0, "{}", bin.display());
        let srv = Server::start_bin(bin, &["memory", "1M"]);
        let _c = srv.client();
        assert_eq!(locked_kb(srv.pid()), 0, "{}", bin.display());
    }
}

#[test]
fn selinux_label_without_selinux_fails_the_same() {
    // Debian's nbdkit is built with libselinux; on a host without
    // SELinux, setsockcreatecon_raw refuses any label.
    if Path::new("/sys/fs/selinux/enforce").exists() {
        eprintln!("SKIPPED: SELinux is enabled here");
        return;
    }
    let mut seen = Vec::new();
    for bin in both() {
        let (code, err) = run(
            bin,
            &[
                "--selinux-label=system_u:object_r:svirt_socket_t:s0",
                "-U",
                "sock",
                "memory",
                "1M",
            ],
        );
        assert_eq!(code, Some(1), "{}: {err}", bin.display());
        seen.push(err);
    }
    assert_eq!(seen[0], seen[1]);
    assert!(
        seen[0].starts_with("selinux-label: setsockcreatecon_raw:"),
        "{}",
        seen[0]
    );
}

#[test]
fn run_command_keeps_the_starting_user() {
    if !is_root() {
        eprintln!("SKIPPED: -u/-g need root to change to another user");
        return;
    }
    require("nbdinfo", "libnbd-bin");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for bin in both() {
        let tmp = TempDir::new("proc-run-u");
        let sock = tmp.path().join("sock");
        // The command's own uid, then the server's (the highest uid of
        // the nbdkit processes started here: Debian's first process
        // stays root while its child serves), then what a client reads.
        let out = Command::new(bin)
            .args(["-u", "nobody", "-g", "nogroup", "-U"])
            .arg(&sock)
            .args([
                "memory",
                "1M",
                "--run",
                "id -u; for p in $(pgrep -x nbdkit); do \
                   grep -qF \"$unixsocket\" /proc/$p/cmdline && \
                   awk '/^Uid:/ {print $2}' /proc/$p/status; done | sort -n -u | tail -1; \
                 nbdinfo --size \"$uri\"",
            ])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(0), "{}: {out:?}", bin.display());
        let s = String::from_utf8_lossy(&out.stdout);
        let lines: Vec<&str> = s.lines().collect();
        assert_eq!(
            lines,
            vec![
                "0".to_string(),
                nobody.uid.to_string(),
                "1048576".to_string()
            ],
            "{}: {out:?}",
            bin.display()
        );
    }
}

/// A plugin script that records in `uid_file` who runs it.
fn uid_recording_plugin(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    // Writable by nobody.
    std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o1777)).unwrap();
    let script = dir.join("plugin.sh");
    let uid_file = dir.join("uid");
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\ncase \"$1\" in\n  get_size) id -u > {}; echo 512 ;;\n  pread) head -c \"$3\" /dev/zero ;;\n  *) exit 2 ;;\nesac\n",
            uid_file.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    (script, uid_file)
}

#[test]
fn single_and_socket_activated_modes_also_change_user() {
    if !is_root() {
        eprintln!("SKIPPED: -u/-g need root to change to another user");
        return;
    }
    require("nbdinfo", "libnbd-bin");
    let nobody = nix::unistd::User::from_name("nobody").unwrap().unwrap();
    for bin in both() {
        // -s: the client on standard input and output.
        let tmp = TempDir::new("proc-single-u");
        let (script, uid_file) = uid_recording_plugin(tmp.path());
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let mut child = Command::new(bin)
            .args(["-s", "-u", "nobody", "-g", "nogroup", "sh"])
            .arg(&script)
            .stdin(Stdio::from(std::os::fd::OwnedFd::from(
                theirs.try_clone().unwrap(),
            )))
            .stdout(Stdio::from(std::os::fd::OwnedFd::from(theirs)))
            .spawn()
            .unwrap();
        ours.set_read_timeout(Some(std::time::Duration::from_secs(20)))
            .unwrap();
        let mut c = Client::connect(ours, true, false);
        assert_eq!(c.read(0, 512), vec![0u8; 512], "{}", bin.display());
        c.disconnect();
        let _ = child.wait();
        assert_eq!(
            std::fs::read_to_string(&uid_file).unwrap().trim(),
            nobody.uid.to_string(),
            "{} -s",
            bin.display()
        );

        // Socket activation (nbdinfo's [ CMD ] form).
        let tmp = TempDir::new("proc-activated-u");
        let (script, uid_file) = uid_recording_plugin(tmp.path());
        let out = Command::new("nbdinfo")
            .args(["--size", "--", "["])
            .arg(bin)
            .args(["-u", "nobody", "-g", "nogroup", "sh"])
            .arg(&script)
            .arg("]")
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout).trim(),
            "512",
            "{}: {out:?}",
            bin.display()
        );
        assert_eq!(
            std::fs::read_to_string(&uid_file).unwrap().trim(),
            nobody.uid.to_string(),
            "{} activated",
            bin.display()
        );
    }
}

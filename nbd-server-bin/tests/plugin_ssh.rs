//! The ssh plugin against a real OpenSSH server that the test starts on a
//! loopback port, with its own host key, client key and known_hosts, and
//! Debian's nbdkit ssh plugin beside ours with the same arguments.

mod common;
mod stack;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;
use stack::*;

/// A running sshd, killed on drop.
struct Sshd {
    child: Child,
    port: u16,
    dir: PathBuf,
}

impl Drop for Sshd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn keygen(path: &Path) {
    let o = Command::new(require("ssh-keygen", "openssh-client"))
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
}

impl Sshd {
    /// Keys in `dir` (host key, a client key authorized to log in as the
    /// current user, known_hosts naming this server), then sshd.
    fn start(dir: &Path) -> Sshd {
        let sshd = require("sshd", "openssh-server");
        keygen(&dir.join("host_key"));
        keygen(&dir.join("client_key"));
        std::fs::copy(dir.join("client_key.pub"), dir.join("authorized_keys")).unwrap();
        // sshd refuses to start without its privilege separation directory.
        let _ = std::fs::create_dir_all("/run/sshd");
        for _ in 0..5 {
            let port = free_port();
            let config = dir.join("sshd_config");
            std::fs::write(
                &config,
                format!(
                    "Port {port}\nListenAddress 127.0.0.1\nHostKey {d}/host_key\n\
                     AuthorizedKeysFile {d}/authorized_keys\nPidFile none\nUsePAM no\n\
                     StrictModes no\nPermitRootLogin yes\nPasswordAuthentication no\n\
                     KbdInteractiveAuthentication no\nSubsystem sftp internal-sftp\n",
                    d = dir.display()
                ),
            )
            .unwrap();
            let child = Command::new(&sshd)
                .args(["-D", "-e", "-f"])
                .arg(&config)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(std::fs::File::create(dir.join("sshd.log")).unwrap())
                .spawn()
                .unwrap();
            let mut s = Sshd {
                child,
                port,
                dir: dir.to_path_buf(),
            };
            let t0 = Instant::now();
            while t0.elapsed() < Duration::from_secs(10) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    let key = std::fs::read_to_string(dir.join("host_key.pub")).unwrap();
                    let key: Vec<&str> = key.split_whitespace().take(2).collect();
                    std::fs::write(
                        dir.join("known_hosts"),
                        format!("[127.0.0.1]:{port} {}\n", key.join(" ")),
                    )
                    .unwrap();
                    return s;
                }
                if s.child.try_wait().unwrap().is_some() {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            let log = std::fs::read_to_string(dir.join("sshd.log")).unwrap_or_default();
            if !log.contains("Address already in use") {
                panic!("sshd did not start: {log}");
            }
        }
        panic!("no free port for sshd in 5 tries");
    }

    /// The plugin arguments that reach `path` on this server.
    fn args(&self, path: &Path) -> Vec<String> {
        let d = self.dir.display();
        vec![
            "ssh".into(),
            "host=127.0.0.1".into(),
            format!("port={}", self.port),
            format!("user={}", whoami()),
            format!("identity={d}/client_key"),
            format!("known-hosts={d}/known_hosts"),
            "config=".into(),
            path.display().to_string(),
        ]
    }
}

fn whoami() -> String {
    let o = Command::new("id").arg("-un").output().unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

#[test]
fn ssh_reads_and_writes_a_remote_file_as_debian_does() {
    let t = TempDir::new("ssh");
    let sshd = Sshd::start(t.path());
    let disk = t.path().join("disk.img");
    let data = pattern(3 << 20, 11);
    std::fs::write(&disk, &data).unwrap();
    let args = sshd.args(&disk);
    for bin in [BIN, DEBIAN_NBDKIT] {
        assert_eq!(read_all_with(bin, &strs(&args)), data, "{bin}");
        let o = run_with(bin, &strs(&args), "nbdinfo --size \"$uri\"");
        assert_eq!(
            String::from_utf8_lossy(&o.stdout).trim(),
            "3145728",
            "{bin}"
        );
    }
    // Writes reach the remote file; flush works (OpenSSH has fsync@).
    let src = t.path().join("new");
    let new = pattern(3 << 20, 12);
    std::fs::write(&src, &new).unwrap();
    let o = run_with(
        BIN,
        &strs(&args),
        &format!("nbdcopy --flush {} \"$uri\"", src.display()),
    );
    assert!(o.status.success(), "{o:?}");
    assert_eq!(std::fs::read(&disk).unwrap(), new);
    // With -r nothing is written.
    let mut ro = vec!["-r".to_string()];
    ro.extend(args.clone());
    let o = run_with(
        BIN,
        &strs(&ro),
        &format!("nbdcopy {} \"$uri\"", src.display()),
    );
    assert!(!o.status.success());
}

#[test]
fn ssh_checks_the_host_key_and_creates_files() {
    let t = TempDir::new("ssh-keys");
    let sshd = Sshd::start(t.path());
    let disk = t.path().join("disk.img");
    std::fs::write(&disk, vec![1u8; 4096]).unwrap();
    // An unknown host key: refused by both, unless verification is off.
    std::fs::write(t.path().join("known_hosts"), "").unwrap();
    let args = sshd.args(&disk);
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(bin, &strs(&args), "nbdinfo --size \"$uri\"");
        assert!(!o.status.success(), "{bin}: an unknown host was trusted");
    }
    let mut noverify = args.clone();
    noverify.push("verify-remote-host=false".into());
    assert_eq!(read_all(&strs(&noverify)), vec![1u8; 4096]);
    // create=true makes the file at the first connection.
    let made = t.path().join("made.img");
    let mut create = sshd.args(&made);
    create.push("verify-remote-host=false".into());
    create.extend([
        "create=true".into(),
        "create-size=1M".into(),
        "create-mode=0640".into(),
    ]);
    assert!(!made.exists());
    let o = run_with(BIN, &strs(&create), "nbdinfo --size \"$uri\"");
    assert_eq!(
        String::from_utf8_lossy(&o.stdout).trim(),
        "1048576",
        "{o:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let meta = std::fs::metadata(&made).unwrap();
    assert_eq!(meta.len(), 1 << 20);
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    // A missing file, and missing parameters.
    let mut missing = sshd.args(&t.path().join("nope"));
    missing.push("verify-remote-host=false".into());
    let o = run_with(BIN, &strs(&missing), "nbdinfo --size \"$uri\"");
    assert!(!o.status.success());
    assert!(
        String::from_utf8_lossy(&o.stderr).contains("cannot open file"),
        "{o:?}"
    );
    bad(&["ssh", "disk.img"], "host");
    bad(&["ssh", "host=x", "path=y", "create=true"], "create-size");
}

/// Debian's ssh plugin .so, loaded by our nbdkit through the plugin
/// interface, serves the same bytes, size and map as under Debian's
/// nbdkit (the row that tests/cplugins.rs's table leaves to this file,
/// which starts an sshd).
#[test]
fn debians_ssh_plugin_so_serves_the_same_through_our_nbdkit() {
    let so = "/usr/lib/x86_64-linux-gnu/nbdkit/plugins/nbdkit-ssh-plugin.so";
    assert!(
        Path::new(so).exists(),
        "{so} is missing: install the Debian package nbdkit"
    );
    let t = TempDir::new("ssh-so");
    let sshd = Sshd::start(t.path());
    let disk = t.path().join("disk.img");
    let mut data = pattern(2 << 20, 13);
    // A hole in the middle, so the map has more than one extent to show
    // if a server reported any.
    data[1 << 20..(1 << 20) + 65536].fill(0);
    std::fs::write(&disk, &data).unwrap();
    let mut args = sshd.args(&disk);
    args[0] = so.to_string();
    let args = strs(&args);
    let facts = |bin: &str| {
        let o = run_with(
            bin,
            &args,
            "nbdinfo --size \"$uri\"; nbdinfo --can write \"$uri\" && echo can-write; \
             nbdinfo --map \"$uri\"",
        );
        assert!(o.status.success(), "{bin}: {o:?}");
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let ours = facts(BIN);
    let theirs = facts(DEBIAN_NBDKIT);
    println!("ours:\n{ours}Debian's:\n{theirs}");
    assert!(ours.starts_with("2097152\n"), "{ours}");
    assert_eq!(ours, theirs);
    assert_eq!(read_all_with(BIN, &args), data);
    assert_eq!(read_all_with(DEBIAN_NBDKIT, &args), data);
}

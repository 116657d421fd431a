//! The curl plugin against a local HTTP server (tests/curl/http_server.py,
//! which logs each request's headers), run with our nbdkit and Debian's
//! with the same arguments: writes as range uploads, `protocols=`, the
//! password and cookie forms (`+FILE`, `-FD`), header and cookie
//! scripts with renewal, and the bad-argument cases.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const DEBIAN_NBDKIT: &str = "/usr/bin/nbdkit";
const DISK_SIZE: usize = 1 << 20;

fn both() -> [&'static Path; 2] {
    require("nbdkit", "nbdkit");
    [Path::new(BIN), Path::new(DEBIAN_NBDKIT)]
}

/// The Python HTTP server on a port it bound itself; killed on drop.
struct Http {
    child: Child,
    port: u16,
    disk: PathBuf,
    log: PathBuf,
}

impl Http {
    fn start(dir: &Path) -> Http {
        Http::start_with(dir, &[])
    }

    /// With `tls`: the certificate and key files, for HTTPS.
    fn start_with(dir: &Path, tls: &[&Path]) -> Http {
        let disk = dir.join("disk.img");
        std::fs::write(&disk, pattern(DISK_SIZE, 3)).unwrap();
        let log = dir.join("requests.log");
        let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/curl/http_server.py");
        let mut child = Command::new("python3")
            .arg(script)
            .arg(&disk)
            .arg(&log)
            .args(tls)
            .stdout(Stdio::piped())
            .spawn()
            .expect("start python3");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let port = line.trim().parse().expect("the server's port");
        Http {
            child,
            port,
            disk,
            log,
        }
    }

    fn url(&self) -> String {
        format!("http://127.0.0.1:{}/disk.img", self.port)
    }

    fn https_url(&self) -> String {
        format!("https://127.0.0.1:{}/disk.img", self.port)
    }

    /// The requests so far, as (method, headers as sorted "name: value").
    fn requests(&self) -> Vec<(String, Vec<String>)> {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        text.lines()
            .map(|l| {
                // One JSON object per line: {"method": "...", "headers": {...}}.
                let method = l
                    .split("\"method\": \"")
                    .nth(1)
                    .and_then(|r| r.split('"').next())
                    .unwrap()
                    .to_string();
                let hdrs = l.split("\"headers\": {").nth(1).unwrap();
                let hdrs = hdrs.trim_end_matches('}').trim_end_matches('}');
                let mut v: Vec<String> = hdrs
                    .split("\", \"")
                    .filter(|kv| !kv.is_empty())
                    .map(|kv| kv.trim_matches('"').replacen("\": \"", ": ", 1))
                    .collect();
                v.sort();
                (method, v)
            })
            .collect()
    }

    /// Asserts that there were requests, and that every one carried each
    /// of `headers` (`Name: value`); `what` names the case in failures.
    fn assert_every_request_has(&self, headers: &[&str], what: &str) {
        let reqs = self.requests();
        assert!(!reqs.is_empty(), "{what}: no request");
        for (m, h) in &reqs {
            for want in headers {
                assert!(
                    h.iter().any(|x| x == want),
                    "{what}: {m} {h:?} lacks {want}"
                );
            }
        }
    }

    fn clear_log(&self) {
        let _ = std::fs::remove_file(&self.log);
    }
}

impl Drop for Http {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `bin -f -U SOCK ARGS…` through `sh -c SHELL_PREFIX`, so a test can
/// give it descriptors; waits for the socket. Killed on drop.
struct Nbdkit {
    child: Child,
    sock: PathBuf,
}

impl Nbdkit {
    fn start(bin: &Path, dir: &Path, redirect: &str, args: &[&str]) -> Nbdkit {
        let sock = dir.join(format!("sock-{}", std::process::id()));
        let _ = std::fs::remove_file(&sock);
        let mut child = Command::new("/bin/sh")
            .arg("-c")
            .arg(format!("exec \"$@\" {redirect}"))
            .arg("sh")
            .arg(bin)
            .arg("-f")
            .arg("-U")
            .arg(&sock)
            .args(args)
            .stdin(Stdio::null())
            .spawn()
            .unwrap();
        let t = Instant::now();
        while !sock.exists() {
            if let Ok(Some(st)) = child.try_wait() {
                panic!("{}: exited: {st}", bin.display());
            }
            assert!(t.elapsed() < Duration::from_secs(20), "not started");
            std::thread::sleep(Duration::from_millis(5));
        }
        Nbdkit { child, sock }
    }

    fn client(&self) -> Client {
        let t = Instant::now();
        loop {
            match std::os::unix::net::UnixStream::connect(&self.sock) {
                Ok(s) => {
                    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
                    return Client::connect(s, true, false);
                }
                Err(_) if t.elapsed() < Duration::from_secs(10) => {
                    std::thread::sleep(Duration::from_millis(5))
                }
                Err(e) => panic!("connect: {e}"),
            }
        }
    }
}

impl Drop for Nbdkit {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The headers of each request, without the range headers (nbdkit 1.32
/// asks for one byte more than it needs; ours asks for what it needs).
fn without_ranges(reqs: &[(String, Vec<String>)]) -> Vec<(String, Vec<String>)> {
    reqs.iter()
        .map(|(m, h)| {
            (
                m.clone(),
                h.iter()
                    .filter(|h| !h.starts_with("Range:") && !h.starts_with("Content-Range:"))
                    .cloned()
                    .collect(),
            )
        })
        .collect()
}

#[test]
fn writes_are_range_uploads() {
    let mut disks = Vec::new();
    for bin in both() {
        let tmp = TempDir::new("curl-write");
        let http = Http::start(tmp.path());
        let srv = Nbdkit::start(bin, tmp.path(), "", &["curl", &http.url()]);
        let mut c = srv.client();
        let data = pattern(4096, 9);
        c.write(8192, &data);
        c.write(DISK_SIZE as u64 - 512, &data[..512]);
        assert_eq!(c.read(8192, 4096), data, "{}", bin.display());
        c.disconnect();
        let disk = std::fs::read(&http.disk).unwrap();
        assert_eq!(&disk[8192..8192 + 4096], &data[..], "{}", bin.display());
        // The writes were PUTs of the range, starting at its offset.
        let puts: Vec<String> = http
            .requests()
            .into_iter()
            .filter(|(m, _)| m == "PUT")
            .flat_map(|(_, h)| h)
            .filter(|h| h.starts_with("Content-Range:"))
            .collect();
        assert_eq!(puts.len(), 2, "{}: {puts:?}", bin.display());
        assert!(
            puts[0].starts_with("Content-Range: bytes 8192-"),
            "{puts:?}"
        );
        disks.push(disk);
    }
    assert!(disks[0] == disks[1], "the same writes left different disks");
}

#[test]
fn password_and_cookie_from_files_and_descriptors() {
    for bin in both() {
        let tmp = TempDir::new("curl-secret");
        let http = Http::start(tmp.path());
        let pw = tmp.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let cookie = tmp.path().join("cookie");
        std::fs::write(&cookie, "session=abc; k=v\n").unwrap();
        let url = http.url();
        let pw_file = format!("password=+{}", pw.display());
        let cookie_file = format!("cookie=+{}", cookie.display());
        let cases: [(&str, Vec<&str>); 3] = [
            (
                "",
                vec!["user=me", "password=s3cret", "cookie=session=abc; k=v"],
            ),
            ("", vec!["user=me", &pw_file, &cookie_file]),
            (
                "5<\"$0.pw\" 6<\"$0.cookie\"",
                vec!["user=me", "password=-5", "cookie=-6"],
            ),
        ];
        for (redirect, params) in cases {
            // "$0" in the redirections is the path prefix of the files.
            let redirect = redirect.replace("$0", &tmp.path().join("x").display().to_string());
            std::fs::copy(&pw, tmp.path().join("x.pw")).unwrap();
            std::fs::copy(&cookie, tmp.path().join("x.cookie")).unwrap();
            http.clear_log();
            let mut args = vec!["curl", url.as_str()];
            args.extend(params.iter().copied());
            let srv = Nbdkit::start(bin, tmp.path(), &redirect, &args);
            let mut c = srv.client();
            assert_eq!(c.read(0, 512), pattern(DISK_SIZE, 3)[..512].to_vec());
            c.disconnect();
            // base64("me:s3cret")
            http.assert_every_request_has(
                &[
                    "Authorization: Basic bWU6czNjcmV0",
                    "Cookie: session=abc; k=v",
                ],
                &format!("{} {params:?}", bin.display()),
            );
        }
    }
}

#[test]
fn header_and_cookie_scripts_with_renewal() {
    let mut seen = Vec::new();
    for bin in both() {
        let tmp = TempDir::new("curl-scripts");
        let http = Http::start(tmp.path());
        let srv = Nbdkit::start(
            bin,
            tmp.path(),
            "",
            &[
                "curl",
                &http.url(),
                // $url and $iteration, two headers, blank lines ignored.
                "header-script=echo \"X-Url: $url\"; echo; echo \"X-Iter: $iteration\"",
                "cookie-script=echo \"c=$iteration\"",
                "cookie-script-renew=1",
            ],
        );
        let mut c = srv.client();
        c.read(0, 512);
        // Past the renewal time, the cookie script runs again; the
        // header script (no renewal) does not.
        std::thread::sleep(Duration::from_millis(2100));
        c.read(512, 512);
        c.disconnect();
        let reqs = without_ranges(&http.requests());
        let url = http.url();
        let last = &reqs.last().unwrap().1;
        assert!(last.contains(&"Cookie: c=1".to_string()), "{reqs:?}");
        assert!(last.contains(&"X-Iter: 0".to_string()), "{reqs:?}");
        assert!(last.contains(&format!("X-Url: {url}")), "{reqs:?}");
        // The port differs between the two runs: compare without it.
        seen.push(
            reqs.into_iter()
                .map(|(m, h)| {
                    (
                        m,
                        h.into_iter()
                            .map(|h| h.replace(&url, "URL"))
                            .collect::<Vec<_>>(),
                    )
                })
                .collect::<Vec<_>>(),
        );
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn a_failing_script_is_reported() {
    for bin in both() {
        let tmp = TempDir::new("curl-script-fails");
        let http = Http::start(tmp.path());
        // Debian's runs the script when a client connects, ours at
        // start-up: both report its first line of errors.
        let out = Command::new(bin)
            .args(["-U", "-", "curl", &http.url()])
            .arg("header-script=echo 'no token today' >&2; exit 3")
            .args(["--run", "nbdinfo --size \"$uri\""])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{}: {err}", bin.display());
        assert!(
            err.contains("header-script failed: no token today"),
            "{}: {err}",
            bin.display()
        );
    }
}

#[test]
fn protocols_limit_the_url() {
    for bin in both() {
        let tmp = TempDir::new("curl-protocols");
        let http = Http::start(tmp.path());
        let size = |proto: &str| {
            Command::new(bin)
                .args(["-U", "-", "curl", &http.url(), proto])
                .args(["--run", "nbdinfo --size \"$uri\""])
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let ok = size("protocols=http,https");
        assert_eq!(
            String::from_utf8_lossy(&ok.stdout).trim(),
            DISK_SIZE.to_string(),
            "{}: {ok:?}",
            bin.display()
        );
        let refused = size("protocols=https,ftp");
        assert!(!refused.status.success(), "{}", bin.display());
        assert!(
            String::from_utf8_lossy(&refused.stderr).contains("Unsupported protocol"),
            "{}: {refused:?}",
            bin.display()
        );
    }
}

#[test]
fn bad_arguments_fail_the_same() {
    for args in [
        &["header=X-A: b", "header-script=true"][..],
        &["header-script-renew=3"],
        &["cookie=a=b", "cookie-script=true"],
        &["cookie-script-renew=2"],
        &["protocols=gopherx"],
        &["protocols="],
        &["protocols=http,,nope"],
        &["password=+/nonexistent/pw"],
        &["cookiefile=-"],
        &["cookiejar=-"],
    ] {
        let mut outs = Vec::new();
        for bin in both() {
            let tmp = TempDir::new("curl-bad");
            let out = Command::new(bin)
                .current_dir(tmp.path())
                .args(["-U", "sock", "curl", "http://127.0.0.1:9/x"])
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap();
            assert_eq!(
                out.status.code(),
                Some(1),
                "{} {args:?}: {out:?}",
                bin.display()
            );
            let err = String::from_utf8_lossy(&out.stderr).into_owned();
            assert_eq!(err.lines().count(), 1, "{} {args:?}: {err}", bin.display());
            outs.push(err);
        }
        if args[0].starts_with("password") {
            // Both name the file; the wording of the error differs.
            assert!(
                outs.iter().all(|e| e.contains("/nonexistent/pw")),
                "{outs:?}"
            );
        } else {
            assert_eq!(outs[0], outs[1], "{args:?}");
        }
    }
}

#[test]
fn cookie_file_user_agent_and_connection_settings() {
    let mut seen = Vec::new();
    for bin in both() {
        let tmp = TempDir::new("curl-settings");
        let http = Http::start(tmp.path());
        // A cookie file in the Netscape format libcurl reads.
        let jar = tmp.path().join("cookies.txt");
        std::fs::write(&jar, "127.0.0.1\tFALSE\t/\tFALSE\t0\tfrom\tfile\n").unwrap();
        let cookiefile = format!("cookiefile={}", jar.display());
        let srv = Nbdkit::start(
            bin,
            tmp.path(),
            "",
            &[
                "curl",
                &http.url(),
                &cookiefile,
                "user-agent=nbd-test/1",
                "tcp-keepalive=true",
                "tcp-nodelay=false",
                "ssl-version=tlsv1.2",
                "proxy-user=nobody",
            ],
        );
        let mut c = srv.client();
        assert_eq!(
            c.read(4096, 512),
            pattern(DISK_SIZE, 3)[4096..4608].to_vec()
        );
        c.disconnect();
        let reqs = without_ranges(&http.requests());
        for (m, h) in &reqs {
            assert!(h.contains(&"Cookie: from=file".to_string()), "{m} {h:?}");
            assert!(
                h.contains(&"User-Agent: nbd-test/1".to_string()),
                "{m} {h:?}"
            );
        }
        seen.push(reqs);
    }
    assert_eq!(seen[0], seen[1]);
}

#[test]
fn cookiejar_keeps_the_cookies_the_server_set() {
    for bin in both() {
        let tmp = TempDir::new("curl-jar");
        let http = Http::start(tmp.path());
        let jar = tmp.path().join("jar.txt");
        let cookiejar = format!("cookiejar={}", jar.display());
        let url = format!("{}?setcookie", http.url());
        let srv = Nbdkit::start(bin, tmp.path(), "", &["curl", &url, &cookiejar]);
        let mut c = srv.client();
        c.read(0, 512);
        c.read(512, 512);
        c.disconnect();
        // Written once the client is gone.
        assert!(
            eventually(|| std::fs::read_to_string(&jar)
                .unwrap_or_default()
                .contains("served\tyes")),
            "{}: {:?}",
            bin.display(),
            std::fs::read_to_string(&jar)
        );
        // The cookie went back with the requests after the first.
        let reqs = http.requests();
        assert!(
            reqs.last()
                .unwrap()
                .1
                .contains(&"Cookie: served=yes".to_string()),
            "{}: {reqs:?}",
            bin.display()
        );
        drop(srv);
    }
}

#[test]
fn password_asked_on_the_terminal() {
    require("nbdinfo", "libnbd-bin");
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/curl/on_terminal.py");
    for bin in both() {
        let tmp = TempDir::new("curl-tty");
        let http = Http::start(tmp.path());
        let out = Command::new("python3")
            .arg(&helper)
            .arg("s3cret")
            .arg(bin)
            .args(["-U", "-", "curl", &http.url(), "user=me", "password=-"])
            .args(["--run", "nbdinfo --size \"$uri\""])
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert!(out.status.success(), "{}: {out:?}", bin.display());
        assert!(
            String::from_utf8_lossy(&out.stdout).contains(&DISK_SIZE.to_string()),
            "{}: {out:?}",
            bin.display()
        );
        // The answer was not echoed, and it was the password sent.
        assert!(!String::from_utf8_lossy(&out.stdout).contains("s3cret"));
        http.assert_every_request_has(
            &["Authorization: Basic bWU6czNjcmV0"],
            &bin.display().to_string(),
        );
    }
}

#[test]
fn https_with_the_tls_settings() {
    require("openssl", "openssl");
    let tmp = TempDir::new("curl-https");
    let (cert, key) = (tmp.path().join("cert.pem"), tmp.path().join("key.pem"));
    let o = Command::new("openssl")
        .args([
            "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2",
        ])
        .args([
            "-subj",
            "/CN=127.0.0.1",
            "-addext",
            "subjectAltName=IP:127.0.0.1",
        ])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(o.status.success(), "{o:?}");
    let cainfo = format!("cainfo={}", cert.display());
    for bin in both() {
        let dir = TempDir::new("curl-https-srv");
        let http = Http::start_with(dir.path(), &[&cert, &key]);
        let url = http.https_url();
        let size = |extra: &[&str]| {
            let out = Command::new(bin)
                .args(["-U", "-", "curl", &url])
                .args(extra)
                .args(["--run", "nbdinfo --size \"$uri\""])
                .stdin(Stdio::null())
                .output()
                .unwrap();
            (
                out.status.success(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            )
        };
        let want = (true, DISK_SIZE.to_string());
        let b = bin.display();
        // An unknown CA is refused, unless told to trust it or not check.
        assert!(!size(&[]).0, "{b}: a self-signed certificate was accepted");
        assert_eq!(size(&[&cainfo]), want, "{b} cainfo");
        assert_eq!(size(&["sslverify=false"]), want, "{b} sslverify=false");
        assert_eq!(
            size(&[
                &cainfo,
                "ssl-version=tlsv1.2",
                "ssl-cipher-list=ECDHE-RSA-AES128-GCM-SHA256:ECDHE-RSA-AES256-GCM-SHA384"
            ]),
            want,
            "{b} ssl-version, ssl-cipher-list"
        );
        assert_eq!(
            size(&[&cainfo, "tls13-ciphers=TLS_AES_128_GCM_SHA256"]),
            want,
            "{b} tls13-ciphers"
        );
        // A version libcurl does not know: refused (Debian's when the
        // client connects, ours at start-up).
        assert!(
            !size(&[&cainfo, "ssl-version=tlsv9"]).0,
            "{b}: ssl-version=tlsv9 was accepted"
        );
    }
}

#[test]
fn through_a_proxy_with_its_credentials() {
    for bin in both() {
        let tmp = TempDir::new("curl-proxy");
        // The test server answers a proxy's requests with its disk.
        let http = Http::start(tmp.path());
        let pw = tmp.path().join("proxy-pw");
        std::fs::write(&pw, "pp\n").unwrap();
        let proxy = format!("proxy=http://127.0.0.1:{}", http.port);
        let proxy_password = format!("proxy-password=+{}", pw.display());
        let srv = Nbdkit::start(
            bin,
            tmp.path(),
            "",
            &[
                "curl",
                "http://disk.invalid/disk.img",
                &proxy,
                "proxy-user=pu",
                &proxy_password,
            ],
        );
        let mut c = srv.client();
        assert_eq!(c.read(0, 512), pattern(DISK_SIZE, 3)[..512].to_vec());
        c.disconnect();
        // base64("pu:pp")
        http.assert_every_request_has(
            &["Proxy-Authorization: Basic cHU6cHA="],
            &bin.display().to_string(),
        );
    }
}

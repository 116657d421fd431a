//! The built-in plugins through the server binary and real clients
//! (nbdcopy, nbdinfo, qemu-io, our raw client), checked against results
//! computed here and, where useful, against Debian's nbdkit.

mod common;
mod stack;

use std::process::{Command, Stdio};

use nbd_core::wire::consts::{cmd, tx_flags};

use common::*;
use stack::*;

const HOLE_ZERO: u32 = 3;

#[test]
fn null_and_zero() {
    assert_eq!(read_all(&["null", "64K"]), vec![0u8; 65536]);
    assert_eq!(map(&["null", "size=1M"]), vec![(0, 1 << 20, HOLE_ZERO)]);
    assert_eq!(info(&["zero"], "export-size"), "0");
    let srv = Server::start(&["null", "1M"]);
    let mut c = srv.client();
    c.write(4096, &[7u8; 512]); // discarded
    assert_eq!(c.read(4096, 512), vec![0u8; 512]);
    c.disconnect();
    bad(&["zero", "1M"], "zero");
    bad(&["null", "size=1Q"], "size");
}

#[test]
fn full_fails_writes_with_enospc() {
    let srv = Server::start(&["full", "1M"]);
    let mut c = srv.client();
    assert_eq!(c.read(0, 4096), vec![0u8; 4096]);
    let r = c.cmd(cmd::WRITE, 0, 0, 512, &[1u8; 512]);
    assert_eq!(r.error, 28, "ENOSPC");
    let r = c.cmd(cmd::WRITE_ZEROES, 0, 0, 512, &[]);
    assert_eq!(r.error, 28);
    let r = c.cmd(cmd::TRIM, 0, 0, 512, &[]);
    assert_eq!(r.error, 28);
    c.disconnect();
    bad(&["full"], "size");
}

#[test]
fn pattern_matches_its_definition_and_debian() {
    let size = 100_003; // not a multiple of 8: the last word is cut
    let ours = read_all(&["pattern", &size.to_string()]);
    assert_eq!(ours, pattern_bytes(0, size));
    assert_eq!(&ours[0x28..0x30], &[0, 0, 0, 0, 0, 0, 0, 0x28]);
    let theirs = read_all_with(DEBIAN_NBDKIT, &["pattern", &size.to_string()]);
    assert_eq!(ours, theirs);
    // A huge one: reads far out are right.
    let srv = Server::start(&["pattern", "9223372036854775807"]);
    let mut c = srv.client();
    let off = 0x7fff_ffff_ffff_0000u64 + 5;
    assert_eq!(c.read(off, 19), pattern_bytes(off, 19));
    assert!(c.flags & tx_flags::READ_ONLY != 0);
    c.disconnect();
}

#[test]
fn data_syntax() {
    let d = r#"1 2 0x10 017 @0x10 "Hi\n" ( 0x55 0xAA )*2 le16:0x0102 be32:0x01020304 @^8"#;
    let mut want = vec![1u8, 2, 0x10, 0o17];
    want.resize(0x10, 0);
    want.extend_from_slice(b"Hi\n");
    want.extend_from_slice(&[0x55, 0xaa, 0x55, 0xaa, 2, 1, 1, 2, 3, 4]);
    want.resize(want.len().div_ceil(8) * 8, 0);
    let ours = read_all(&["data", d]);
    assert_eq!(ours, want);
    assert_eq!(ours, read_all_with(DEBIAN_NBDKIT, &["data", d]));
    // size= pads; raw= and base64=.
    let padded = read_all(&["data", "data=1 2 3", "size=1K"]);
    assert_eq!(padded.len(), 1024);
    assert_eq!(&padded[..4], &[1, 2, 3, 0]);
    assert_eq!(read_all(&["data", "raw=hello"]), b"hello");
    assert_eq!(
        read_all(&["data", "base64=aGVsbG8gbmJka2l0IHVzZXI="]),
        b"hello nbdkit user"
    );
    // The manual's MBR example.
    let mbr = read_all(&[
        "data",
        "@0x1be 0 0 2 0 0x83 0x20 0x20 0 le32:1 le32:0x7ff @0x1fe 0x55 0xaa",
        "size=1M",
    ]);
    assert_eq!(mbr.len(), 1 << 20);
    assert_eq!(&mbr[0x1fe..0x200], &[0x55, 0xaa]);
    assert_eq!(&mbr[0x1c6..0x1ce], &[1, 0, 0, 0, 0xff, 7, 0, 0]);
    // Writable, writes lost at exit.
    let srv = Server::start(&["data", "1 2 3 4", "size=4096"]);
    let mut c = srv.client();
    c.write(1, &[9, 9]);
    assert_eq!(c.read(0, 4), vec![1, 9, 9, 4]);
    c.disconnect();
    bad(&["data", "1 256"], "0 and 255");
    // $VAR is supported; an unset one is refused.
    bad(&["data", "$nbd_rs_unset_var"], "nbd_rs_unset_var");
    bad(&["data", "( 1 2"], "unterminated");
    bad(&["data", "raw=x", "base64=eA=="], "only one");
}

#[test]
fn random_is_deterministic_and_matches_debian() {
    let a = read_all(&["random", "64K", "seed=42"]);
    assert_eq!(a, read_all(&["random", "64K", "seed=42"]));
    assert_ne!(a, read_all(&["random", "64K", "seed=43"]));
    assert_eq!(
        a,
        read_all_with(DEBIAN_NBDKIT, &["random", "64K", "seed=42"])
    );
    // Writes of the same data succeed (a copy onto itself), others fail.
    run(&["random", "1M", "seed=1"], "nbdcopy \"$uri\" \"$uri\"");
    let srv = Server::start(&["random", "1M", "seed=1"]);
    let mut c = srv.client();
    let cur = c.read(100, 10);
    c.write(100, &cur);
    let other: Vec<u8> = cur.iter().map(|b| b ^ 1).collect();
    assert_eq!(c.cmd(cmd::WRITE, 0, 100, 10, &other).error, 5, "EIO");
    c.disconnect();
}

#[test]
fn sparse_random_shape_and_copy() {
    let args = [
        "sparse-random",
        "16M",
        "seed=7",
        "percent=30",
        "runlength=256K",
    ];
    let data = read_all(&args);
    assert_eq!(data, read_all(&args));
    let m = map(&args);
    let mut data_bytes = 0;
    for &(off, len, t) in &m {
        let r = &data[off as usize..(off + len) as usize];
        if t == 0 {
            data_bytes += len;
            // Each 4K block of data is one non-zero byte repeated.
            for b in r.chunks(4096) {
                assert!(b[0] != 0 && b.iter().all(|&x| x == b[0]));
            }
        } else {
            assert_eq!(t, HOLE_ZERO);
            assert!(r.iter().all(|&x| x == 0));
        }
    }
    let pct = data_bytes as f64 * 100.0 / data.len() as f64;
    assert!((15.0..=45.0).contains(&pct), "{pct}% data");
    assert!(m.len() > 4, "runs of data and holes: {m:?}");
    // Writes of what is there succeed, others fail EIO.
    let srv = Server::start(&args);
    let mut c = srv.client();
    let (off, len, _) = m.iter().find(|e| e.2 == 0).copied().unwrap();
    let cur = c.read(off + len - 8192, 16384); // data then hole
    c.write(off + len - 8192, &cur);
    assert_eq!(c.cmd(cmd::WRITE, 0, off + len, 1, &[1]).error, 5);
    c.disconnect();
    assert_eq!(
        map(&["sparse-random", "1M", "percent=0"]),
        vec![(0, 1 << 20, HOLE_ZERO)]
    );
    assert_eq!(
        map(&["sparse-random", "1M", "percent=100"]),
        vec![(0, 1 << 20, 0)]
    );
    bad(&["sparse-random", "1M", "percent=101"], "percent");
}

/// Three files of 4K, 8K, 4K; a write across every boundary must land in
/// each file at the offset within that file. nbdkit 1.32.5 writes to the
/// second and later files at the disk offset instead.
#[test]
fn split_writes_at_the_right_offset_in_each_file() {
    let tmp = TempDir::new("split");
    let sizes = [4096usize, 8192, 4096];
    let files: Vec<String> = (0..3)
        .map(|i| {
            let p = tmp.path().join(format!("f{i}"));
            std::fs::write(&p, pattern(sizes[i], i as u8)).unwrap();
            p.to_str().unwrap().to_string()
        })
        .collect();
    let mut disk: Vec<u8> = (0..3).flat_map(|i| pattern(sizes[i], i as u8)).collect();
    let args: Vec<&str> = std::iter::once("split")
        .chain(files.iter().map(|s| s.as_str()))
        .collect();
    assert_eq!(read_all(&args), disk);

    let srv = Server::start(&args);
    let mut c = srv.client();
    assert_eq!(c.size, 16384);
    let w = pattern(10000, 0x5a);
    c.write(3000, &w); // 3000..13000: spans all three files
    disk[3000..13000].copy_from_slice(&w);
    assert_eq!(c.read(0, 16384), disk);
    c.disconnect();
    drop(srv);
    let mut off = 0;
    for (i, f) in files.iter().enumerate() {
        let got = std::fs::read(f).unwrap();
        assert_eq!(got.len(), sizes[i], "file {i} changed size");
        assert_eq!(got, &disk[off..off + sizes[i]], "file {i}");
        off += sizes[i];
    }

    // Debian's nbdkit gets this wrong: the second file grows.
    if std::path::Path::new(DEBIAN_NBDKIT).exists() && which("qemu-io") {
        for (i, f) in files.iter().enumerate() {
            std::fs::write(f, vec![0u8; sizes[i]]).unwrap();
        }
        let o = run_with(
            DEBIAN_NBDKIT,
            &args,
            "qemu-io -f raw -c 'write -P 0x41 5000 100' \"$uri\"",
        );
        assert!(o.status.success(), "{o:?}");
        let b = std::fs::read(&files[1]).unwrap();
        // It lands at 5000 in the second file, not at 5000 - 4096.
        assert!(
            b[904..1004].iter().all(|&x| x == 0) && b[5000..5100].iter().all(|&x| x == 0x41),
            "nbdkit 1.32.5's split bug is fixed there?"
        );
        // Ours, same write: the second file holds it at 5000 - 4096.
        for (i, f) in files.iter().enumerate() {
            std::fs::write(f, vec![0u8; sizes[i]]).unwrap();
        }
        run(
            &args,
            "qemu-io -f raw -c 'write -P 0x41 5000 100' \"$uri\" >/dev/null",
        );
        let b = std::fs::read(&files[1]).unwrap();
        assert_eq!(b.len(), sizes[1]);
        assert!(b[904..1004].iter().all(|&x| x == 0x41));
        assert!(b[..904].iter().chain(&b[1004..]).all(|&x| x == 0));
    }
    bad(&["split"], "file");
}

fn which(bin: &str) -> bool {
    std::env::var("PATH")
        .unwrap_or_default()
        .split(':')
        .any(|d| std::path::Path::new(d).join(bin).exists())
}

#[test]
fn nbd_proxies_to_another_server() {
    let back = Server::start(&["memory", "1M"]);
    let sock = back.sock.to_str().unwrap().to_string();
    {
        let mut c = back.client();
        c.write(8192, b"through the proxy");
        c.disconnect();
    }
    // socket=, and uri= (the magic key) with nbd+unix.
    let uri = format!("nbd+unix:///?socket={sock}");
    for how in [format!("socket={sock}"), uri.clone()] {
        let proxy = Server::start(&["nbd", &how]);
        let mut c = proxy.client();
        assert_eq!(c.size, 1 << 20);
        assert_eq!(c.read(8192, 17), b"through the proxy");
        c.write(0, b"back");
        let r = c.cmd(cmd::FLUSH, 0, 0, 0, &[]);
        assert_eq!(r.error, 0);
        c.disconnect();
    }
    let mut c = back.client();
    assert_eq!(c.read(0, 4), b"back");
    c.disconnect();
    // Block status passes through: memory reports holes.
    let m = map(&["nbd", &format!("socket={sock}")]);
    assert_eq!(m[0], (0, 32768, 0)); // memory's page
    assert!(m.iter().any(|&(_, _, t)| t == HOLE_ZERO));
    // Over TCP to qemu-nbd-free peer: our own server on a port.
    let out = Command::new(BIN)
        .args(["-p", "0", "-i", "127.0.0.1", "--run"])
        .arg(format!(
            "{BIN} -U - nbd hostname=127.0.0.1 port=$port --run 'nbdinfo --size \"$uri\"' && \
             {BIN} -U - nbd \"$uri\" --run 'nbdinfo --size \"$uri\"'"
        ))
        .args(["pattern", "12345"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "12345\n12345\n");
    bad(
        &[
            "nbd",
            "uri=nbds://alice@localhost/?tls-psk-file=/nonexistent/k",
        ],
        "local file access",
    );
    bad(&["nbd", "uri=http://localhost/"], "scheme");
    bad(&["nbd"], "required");
    // A missing server is found when a client connects, as in nbdkit.
    refused_on_open(&["nbd", "socket=/nonexistent/sock"], "/nonexistent/sock");
}

#[test]
fn file_cache_and_fadvise() {
    let tmp = TempDir::new("filecache");
    let p = tmp.path().join("disk");
    std::fs::write(&p, pattern(1 << 20, 3)).unwrap();
    let ps = p.to_str().unwrap();
    for extra in [
        ["cache=none", "fadvise=random"],
        ["cache=default", "fadvise=sequential"],
    ] {
        let srv = Server::start(&["file", ps, extra[0], extra[1]]);
        let mut c = srv.client();
        assert_eq!(c.read(4096, 4096), pattern(1 << 20, 3)[4096..8192].to_vec());
        c.write(0, b"written");
        c.disconnect();
        assert_eq!(&std::fs::read(&p).unwrap()[..7], b"written");
    }
    bad(&["file", ps, "cache=bogus"], "cache");
    bad(&["file", ps, "fadvise=always"], "fadvise");
    bad(&["file", ps, "dir=/tmp"], "together");
}

#[test]
fn unknown_plugin_and_keys() {
    bad(&["nosuchplugin"], "nosuchplugin");
    bad(&["pattern", "1M", "colour=blue"], "colour");
    bad(&["pattern", "1M", "seed=1"], "seed");
}

#[test]
fn file_dir_lists_and_serves_each_export() {
    // One export per regular file: NBD_OPT_LIST names them all, and each
    // name is served with its own size and data; the empty name is
    // refused, by us as by nbdkit.
    let dir = tempfile_dir("dir-plugin");
    std::fs::write(dir.join("a.img"), vec![0xaa; 4096]).unwrap();
    std::fs::write(dir.join("b.img"), vec![0xbb; 8192]).unwrap();
    std::fs::create_dir(dir.join("not-a-file")).unwrap();
    let d = format!("dir={}", dir.display());
    let out = run(
        &["file", &d],
        "nbdinfo --list --json \"$uri\" && \
         nbdinfo --size \"nbd+unix:///b.img?socket=$unixsocket\" && \
         nbdcopy \"nbd+unix:///b.img?socket=$unixsocket\" - | od -An -tx1 | head -n1",
    );
    let s = String::from_utf8(out).unwrap();
    assert!(s.contains("\"export-name\": \"a.img\""), "{s}");
    assert!(s.contains("\"export-name\": \"b.img\""), "{s}");
    assert!(!s.contains("not-a-file"), "{s}");
    assert!(s.lines().any(|l| l.trim() == "8192"), "{s}");
    assert!(s.contains("bb bb bb bb"), "{s}");
    for bin in [BIN, DEBIAN_NBDKIT] {
        let o = run_with(bin, &["file", &d], "nbdinfo --size \"$uri\"");
        assert!(!o.status.success(), "{bin}: the default export was served");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("No such file or directory"), "{bin}: {err}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn blocksize_filters_advertise_their_limits() {
    assert_eq!(
        info(
            &["--filter=blocksize", "memory", "1M", "maxdata=65536"],
            "block_size_maximum"
        ),
        "65536"
    );
    assert_eq!(
        info(
            &[
                "--filter=blocksize-policy",
                "memory",
                "1M",
                "blocksize-minimum=512"
            ],
            "block_size_minimum"
        ),
        "512"
    );
}

fn tempfile_dir(tag: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("nbd-rs-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn sparse_random_offers_what_nbdkit_offers_and_copies_onto_itself() {
    // Copying tools choose their paths by these flags: nbdcopy 1.14 falls
    // back to writing zeroes itself, from a second thread, when the target
    // cannot zero, and that path of its own fails against Debian's nbdkit
    // too (nozero filter). So offer what Debian's plugin offers.
    let flags = [
        "can_flush",
        "can_fua",
        "can_trim",
        "can_zero",
        "can_multi_conn",
    ];
    let ours = run(&["sparse-random", "64M"], "nbdinfo --json \"$uri\"");
    let theirs = run_with(
        DEBIAN_NBDKIT,
        &["sparse-random", "64M"],
        "nbdinfo --json \"$uri\"",
    );
    let (ours, theirs) = (
        String::from_utf8(ours).unwrap(),
        String::from_utf8(theirs.stdout).unwrap(),
    );
    for f in flags {
        let line = |s: &str| {
            s.lines()
                .find(|l| l.contains(f))
                .map(str::trim)
                .map(String::from)
        };
        assert_eq!(line(&ours), line(&theirs), "{f}");
    }
    // The manual's example: the plugin verifies what is written back.
    for seed in ["seed=6", "seed=8"] {
        run(
            &["sparse-random", "256M", seed],
            "nbdcopy \"$uri\" \"$uri\"",
        );
    }
}

/// A small HTTP/1.1 server for the curl plugin's tests, with what the
/// standard library's http.server lacks: Range requests (206 Partial
/// Content). With `ranges=0` it ignores Range, as some servers do.
const RANGE_SERVER: &str = r#"
import http.server, os, sys
root, ranges = sys.argv[1], sys.argv[2] == "1"
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def _file(self):
        p = os.path.join(root, self.path.lstrip("/"))
        if not os.path.isfile(p):
            self.send_error(404); return None
        return p
    def do_HEAD(self):
        p = self._file()
        if p is None: return
        self.send_response(200)
        self.send_header("Content-Length", str(os.path.getsize(p)))
        self.send_header("Accept-Ranges", "bytes" if ranges else "none")
        self.end_headers()
    def do_GET(self):
        p = self._file()
        if p is None: return
        size = os.path.getsize(p)
        r = self.headers.get("Range")
        with open(p, "rb") as f:
            if ranges and r and r.startswith("bytes="):
                a, b = r[6:].split("-")
                a, b = int(a), min(int(b), size - 1)
                f.seek(a); data = f.read(b - a + 1)
                self.send_response(206)
                self.send_header("Content-Range", "bytes %d-%d/%d" % (a, b, size))
            else:
                data = f.read()
                self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
# Port 0: the kernel picks a free port, which we print for the test.
srv = http.server.ThreadingHTTPServer(("127.0.0.1", 0), H)
print(srv.server_address[1], flush=True)
srv.serve_forever()
"#;

struct HttpServer {
    child: std::process::Child,
    port: u16,
}

impl HttpServer {
    fn start(root: &std::path::Path, ranges: bool) -> HttpServer {
        let script = root.join("range_server.py");
        std::fs::write(&script, RANGE_SERVER).unwrap();
        let mut child = Command::new("/usr/bin/python3")
            .arg(&script)
            .arg(root)
            .arg(if ranges { "1" } else { "0" })
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        // The server listens before it prints its port: no race with
        // other tests for a port chosen here.
        let mut line = String::new();
        std::io::BufRead::read_line(
            &mut std::io::BufReader::new(child.stdout.take().unwrap()),
            &mut line,
        )
        .unwrap();
        let port: u16 = line
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("the test's HTTP server did not start: {line:?}"));
        HttpServer { child, port }
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn curl_serves_http_and_file_urls() {
    let dir = tempfile_dir("curl");
    let image: Vec<u8> = (0..(3 << 20) + 12345u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(dir.join("disk.img"), &image).unwrap();
    let http = HttpServer::start(&dir, true);
    let url = format!("url=http://127.0.0.1:{}/disk.img", http.port);
    assert_eq!(read_all(&["curl", &url]), image, "over HTTP with ranges");
    // Partial reads land at the right offsets (nbdcopy reads in pieces
    // with several connections; qemu-img compares independently).
    let out = dir.join("out.img");
    run(
        &["curl", &url],
        &format!(
            "nbdcopy --connections=4 --request-size=65536 \"$uri\" {} && qemu-img compare -f raw -F raw \"$uri\" {}",
            out.display(),
            dir.join("disk.img").display()
        ),
    );
    assert_eq!(std::fs::read(&out).unwrap(), image);
    let file_url = format!("url=file://{}", dir.join("disk.img").display());
    assert_eq!(read_all(&["curl", &file_url]), image, "file://");
    // A missing image: one line, exit 1.
    bad(
        &[
            "curl",
            &format!("url=http://127.0.0.1:{}/nope.img", http.port),
        ],
        "nope.img",
    );
    drop(http);
    // A server that ignores Range: reads fail clearly, nothing is served
    // from the wrong offset.
    let http = HttpServer::start(&dir, false);
    let url = format!("url=http://127.0.0.1:{}/disk.img", http.port);
    let o = run_with(BIN, &["curl", &url], "nbdcopy \"$uri\" - >/dev/null");
    assert!(!o.status.success(), "a range-ignoring server was served");
    drop(http);
    let _ = std::fs::remove_dir_all(&dir);
}

//! libnbd's exact semantics in corners where ours used to differ (issue 11,
//! section 3), through the exported functions, against Debian's nbdkit.

mod common;

use common::*;
use nbd::*;
use std::os::raw::{c_int, c_void};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

macro_rules! need_nbdkit {
    () => {
        if !have_nbdkit() {
            eprintln!("skipped: {NBDKIT} is not installed");
            return;
        }
    };
}

/// A fresh directory made by mkdtemp(3), removed on drop.
struct TempDir(std::path::PathBuf);

impl TempDir {
    fn new() -> TempDir {
        let mut template = std::env::temp_dir()
            .join("nbd-sem-XXXXXX")
            .into_os_string()
            .into_encoded_bytes();
        template.push(0);
        let p = unsafe { libc::mkdtemp(template.as_mut_ptr().cast()) };
        assert!(!p.is_null(), "mkdtemp failed");
        template.pop();
        TempDir(std::path::PathBuf::from(
            String::from_utf8(template).unwrap(),
        ))
    }

    fn path(&self) -> &std::path::Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A child process killed and reaped when the test ends, pass or fail.
struct Reaped(Child);

impl Drop for Reaped {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The errors each command completed with, in completion order.
#[derive(Default)]
struct Completions(Mutex<Vec<c_int>>);

impl Completions {
    fn errors(&self) -> Vec<c_int> {
        self.0.lock().unwrap().clone()
    }
}

unsafe extern "C" fn record(p: *mut c_void, error: *mut c_int) -> c_int {
    (*(p as *const Completions)).0.lock().unwrap().push(*error);
    1
}

fn recording(c: &Completions) -> nbd_completion_callback {
    nbd_completion_callback {
        callback: Some(record),
        user_data: c as *const Completions as *mut c_void,
        free: None,
    }
}

fn no_completion() -> nbd_completion_callback {
    nbd_completion_callback {
        callback: None,
        user_data: std::ptr::null_mut(),
        free: None,
    }
}

/// Item 1: With pread-initialize on, the buffer is zeroed even when the read is
/// refused for the handle's state or its arguments.
#[test]
fn refused_reads_still_zero_the_buffer() {
    need_nbdkit!();
    let h = unsafe { nbd_create() };
    let mut buf = vec![0xffu8; 512];
    // Not connected.
    assert_eq!(
        unsafe { nbd_pread(h, buf.as_mut_ptr().cast(), buf.len(), 0, 0) },
        -1
    );
    assert!(buf.iter().all(|b| *b == 0), "nbd_pread left the buffer");
    buf.fill(0xff);
    let r = unsafe { nbd_aio_pread(h, buf.as_mut_ptr().cast(), buf.len(), 0, no_completion(), 0) };
    assert_eq!(r, -1);
    assert!(buf.iter().all(|b| *b == 0), "nbd_aio_pread left the buffer");
    let no_chunk = || nbd_chunk_callback {
        callback: None,
        user_data: std::ptr::null_mut(),
        free: None,
    };
    buf.fill(0xff);
    let r = unsafe { nbd_pread_structured(h, buf.as_mut_ptr().cast(), 512, 0, no_chunk(), 0) };
    assert_eq!(r, -1);
    assert!(
        buf.iter().all(|b| *b == 0),
        "nbd_pread_structured left the buffer"
    );
    buf.fill(0xff);
    let r = unsafe {
        nbd_aio_pread_structured(
            h,
            buf.as_mut_ptr().cast(),
            512,
            0,
            no_chunk(),
            no_completion(),
            0,
        )
    };
    assert_eq!(r, -1);
    assert!(
        buf.iter().all(|b| *b == 0),
        "nbd_aio_pread_structured left the buffer"
    );
    unsafe { nbd_close(h) };

    // Connected, but a bad flag or out of bounds.
    let c = Conn::memory("1M");
    buf.fill(0xff);
    assert_eq!(
        unsafe { nbd_pread(c.0, buf.as_mut_ptr().cast(), buf.len(), 0, 0x8000) },
        -1
    );
    assert!(buf.iter().all(|b| *b == 0), "bad flag: buffer left");
    buf.fill(0xff);
    assert_eq!(
        unsafe { nbd_pread(c.0, buf.as_mut_ptr().cast(), buf.len(), 1 << 30, 0) },
        -1
    );
    assert_eq!(errno(), libc::EINVAL);
    assert!(buf.iter().all(|b| *b == 0), "out of bounds: buffer left");
}

/// Item 2: Notifying a direction the handle is not waiting for is EINVAL.
#[test]
fn notify_for_a_direction_not_wanted_is_einval() {
    need_nbdkit!();
    let c = Conn::memory("1M");
    // Idle and ready: waiting to read only.
    let dir = unsafe { nbd_aio_get_direction(c.0) };
    assert_eq!(dir, LIBNBD_AIO_DIRECTION_READ as u32);
    assert_eq!(unsafe { nbd_aio_notify_write(c.0) }, -1);
    assert_eq!(errno(), libc::EINVAL, "{}", last_error());
    // The handle still works.
    let mut buf = [0u8; 512];
    assert_eq!(
        unsafe { nbd_pread(c.0, buf.as_mut_ptr().cast(), 512, 0, 0) },
        0,
        "{}",
        last_error()
    );
    // Not connected at all: neither direction.
    let h = unsafe { nbd_create() };
    assert_eq!(unsafe { nbd_aio_notify_read(h) }, -1);
    assert_eq!(errno(), libc::EINVAL);
    unsafe { nbd_close(h) };
}

/// Item 3: After nbd_aio_disconnect, even while NBD_CMD_DISC is still queued
/// behind other commands, every new command and a second disconnect fail
/// with EINVAL.
#[test]
fn nothing_after_disconnect() {
    need_nbdkit!();
    // One server thread: nbdkit reads NBD_CMD_DISC only after answering
    // the writes (with more, it may answer a write ESHUTDOWN).
    let c = Conn::command(&[
        NBDKIT,
        "-s",
        "--exit-with-parent",
        "-t",
        "1",
        "memory",
        "64M",
    ]);
    let data = vec![0x5au8; 32 << 20];
    let done = Completions::default();
    for i in 0..2u64 {
        let r = unsafe {
            nbd_aio_pwrite(
                c.0,
                data.as_ptr().cast(),
                data.len(),
                i * data.len() as u64,
                recording(&done),
                0,
            )
        };
        assert!(r > 0, "{}", last_error());
    }
    assert_eq!(unsafe { nbd_aio_disconnect(c.0, 0) }, 0, "{}", last_error());
    let mut buf = [0u8; 512];
    assert_eq!(
        unsafe { nbd_aio_pread(c.0, buf.as_mut_ptr().cast(), 512, 0, no_completion(), 0) },
        -1
    );
    assert_eq!(errno(), libc::EINVAL);
    assert!(
        last_error().contains("cannot request more commands after NBD_CMD_DISC"),
        "{}",
        last_error()
    );
    assert_eq!(unsafe { nbd_flush(c.0, 0) }, -1);
    assert_eq!(errno(), libc::EINVAL);
    assert_eq!(unsafe { nbd_aio_disconnect(c.0, 0) }, -1);
    assert_eq!(errno(), libc::EINVAL);
    // nbd_shutdown does not ask again: it waits for the writes queued
    // before the disconnect, which still complete, and for the close.
    assert_eq!(unsafe { nbd_shutdown(c.0, 0) }, 0, "{}", last_error());
    assert_eq!(done.errors(), vec![0, 0]);
    assert_eq!(unsafe { nbd_aio_is_closed(c.0) }, 1);
}

/// Item 4: nbd_shutdown(ABANDON_PENDING) sends nothing still queued on the
/// client side: those commands complete with ENOTCONN.
#[test]
fn shutdown_abandon_pending_sends_nothing_queued() {
    need_nbdkit!();
    let dir = TempDir::new();
    let file = dir.path().join("disk");
    const CHUNK: usize = 8 << 20;
    const N: usize = 16;
    std::fs::write(&file, vec![0u8; CHUNK * N]).unwrap();
    let file_arg = format!("file={}", file.display());
    let c = Conn::command(&[NBDKIT, "-s", "--exit-with-parent", "file", &file_arg]);
    let data = vec![0xa5u8; CHUNK];
    // One record per write, so completion order does not matter.
    let done: Vec<Completions> = (0..N).map(|_| Completions::default()).collect();
    for (i, done) in done.iter().enumerate() {
        let r = unsafe {
            nbd_aio_pwrite(
                c.0,
                data.as_ptr().cast(),
                CHUNK,
                (i * CHUNK) as u64,
                recording(done),
                0,
            )
        };
        assert!(r > 0, "{}", last_error());
    }
    assert_eq!(
        unsafe { nbd_shutdown(c.0, LIBNBD_SHUTDOWN_ABANDON_PENDING) },
        0,
        "{}",
        last_error()
    );
    let each: Vec<Vec<c_int>> = done.iter().map(|d| d.errors()).collect();
    assert!(
        each.iter().all(|e| e.len() == 1),
        "every command completed once: {each:?}"
    );
    let errors: Vec<c_int> = each.iter().map(|e| e[0]).collect();
    let abandoned = errors.iter().filter(|e| **e == libc::ENOTCONN).count();
    assert!(abandoned > 0, "nothing was abandoned: {errors:?}");
    // errors[i] is the write at i * CHUNK. An abandoned one
    // never reached the file; a successful one did. (nbdkit may answer a
    // write it was reading when NBD_CMD_DISC came with ESHUTDOWN.)
    drop(c);
    let disk = std::fs::read(&file).unwrap();
    for (i, chunk) in disk.chunks(CHUNK).enumerate() {
        let written = chunk.iter().any(|b| *b != 0);
        match errors[i] {
            libc::ENOTCONN => assert!(!written, "abandoned write {i} arrived: {errors:?}"),
            0 => assert!(written, "write {i} succeeded but is not there"),
            _ => {}
        }
    }
}

/// An nbdkit listening on a Unix socket in `dir`, as a child we can kill.
fn nbdkit_on_socket(dir: &std::path::Path, args: &[&str]) -> (Child, std::path::PathBuf) {
    let sock = dir.join("sock");
    let child = Command::new(NBDKIT)
        .args(["-f", "-U"])
        .arg(&sock)
        .args(args)
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while !sock.exists() {
        assert!(Instant::now() < deadline, "nbdkit did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (child, sock)
}

/// Item 5: Commands stranded by a server that dies complete once each with
/// ENOTCONN, not with the socket's error.
#[test]
fn stranded_commands_complete_with_enotconn() {
    need_nbdkit!();
    let dir = TempDir::new();
    let (mut server, sock) = nbdkit_on_socket(
        dir.path(),
        &["--filter=delay", "memory", "1M", "delay-read=30"],
    );
    let h = unsafe { nbd_create() };
    let path = cstring(sock.to_str().unwrap());
    assert_eq!(
        unsafe { nbd_connect_unix(h, path.as_ptr()) },
        0,
        "{}",
        last_error()
    );
    let done = Completions::default();
    let mut bufs = vec![[0u8; 512]; 3];
    for b in bufs.iter_mut() {
        let r = unsafe { nbd_aio_pread(h, b.as_mut_ptr().cast(), 512, 0, recording(&done), 0) };
        assert!(r > 0, "{}", last_error());
    }
    // Let the requests reach the server, then kill it.
    while unsafe { nbd_aio_get_direction(h) } & LIBNBD_AIO_DIRECTION_WRITE as u32 != 0 {
        unsafe { nbd_poll(h, 100) };
    }
    std::thread::sleep(Duration::from_millis(300));
    server.kill().unwrap();
    server.wait().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while done.errors().len() < 3 && Instant::now() < deadline {
        if unsafe { nbd_poll(h, 1000) } == -1 {
            break;
        }
    }
    assert_eq!(done.errors(), vec![libc::ENOTCONN; 3]);
    unsafe { nbd_close(h) };
}

/// Item 5, the sync side: a sync call whose server dies while it waits
/// reports why the connection ended (as libnbd's poll does), not the
/// ENOTCONN its command completed with.
#[test]
fn sync_call_reports_why_the_connection_ended() {
    need_nbdkit!();
    let dir = TempDir::new();
    let (server, sock) = nbdkit_on_socket(
        dir.path(),
        &["--filter=delay", "memory", "1M", "delay-read=30"],
    );
    let pid = server.id() as libc::pid_t;
    let _server = Reaped(server);
    let h = unsafe { nbd_create() };
    let path = cstring(sock.to_str().unwrap());
    assert_eq!(
        unsafe { nbd_connect_unix(h, path.as_ptr()) },
        0,
        "{}",
        last_error()
    );
    let killer = std::thread::spawn(move || {
        std::thread::sleep(Duration::from_millis(500));
        unsafe { libc::kill(pid, libc::SIGKILL) };
    });
    let mut buf = [0u8; 512];
    let r = unsafe { nbd_pread(h, buf.as_mut_ptr().cast(), 512, 0, 0) };
    let (e, msg) = (errno(), last_error());
    killer.join().unwrap();
    unsafe { nbd_close(h) };
    assert_eq!(r, -1);
    assert!(e != 0 && e != libc::ENOTCONN, "errno {e}: {msg}");
}

/// nbdkit on a TCP port the kernel picks, handed over by socket
/// activation, so no port is chosen in advance. Returns it and the port.
fn nbdkit_on_tcp() -> (Child, u16) {
    use std::os::fd::AsRawFd;
    use std::os::unix::process::CommandExt;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let fd = listener.as_raw_fd();
    let mut cmd = Command::new("/bin/sh");
    cmd.args([
        "-c",
        &format!("LISTEN_PID=$$ LISTEN_FDS=1 exec {NBDKIT} -f memory 1M"),
    ]);
    // SAFETY: dup2 and fcntl are async-signal-safe.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep FD_CLOEXEC.
            if fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0);
            } else if libc::dup2(fd, 3) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = cmd.stdout(Stdio::null()).spawn().unwrap();
    (server, port)
}

/// nbd_get_uri's answer, or why there is none.
fn uri_of(h: *mut nbd_handle) -> String {
    let uri = unsafe { nbd_get_uri(h) };
    if uri.is_null() {
        return format!("NULL: {}", last_error());
    }
    let s = unsafe { std::ffi::CStr::from_ptr(uri) }
        .to_string_lossy()
        .into_owned();
    unsafe { libc::free(uri.cast()) };
    s
}

/// Item 7: nbd_get_uri after nbd_connect_tcp builds nbd://HOST:PORT/.
#[test]
fn get_uri_after_connect_tcp() {
    need_nbdkit!();
    let (server, port) = nbdkit_on_tcp();
    let _server = Reaped(server);
    let h = unsafe { nbd_create() };
    let host = cstring("127.0.0.1");
    let port_s = cstring(&port.to_string());
    let r = unsafe { nbd_connect_tcp(h, host.as_ptr(), port_s.as_ptr()) };
    let msg = last_error();
    let got = uri_of(h);
    unsafe { nbd_close(h) };
    assert_eq!(r, 0, "{msg}");
    assert_eq!(got, format!("nbd://127.0.0.1:{port}/"));
}

/// Item 7: and after nbd_aio_connect with a TCP socket address.
#[test]
fn get_uri_after_aio_connect_sockaddr() {
    need_nbdkit!();
    let (server, port) = nbdkit_on_tcp();
    let _server = Reaped(server);
    let h = unsafe { nbd_create() };
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from(std::net::Ipv4Addr::LOCALHOST).to_be(),
        },
        sin_zero: [0; 8],
    };
    let r = unsafe {
        nbd_aio_connect(
            h,
            (&sin as *const libc::sockaddr_in).cast(),
            std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    };
    let msg = last_error();
    let deadline = Instant::now() + Duration::from_secs(30);
    while r == 0 && unsafe { nbd_aio_is_connecting(h) } == 1 && Instant::now() < deadline {
        if unsafe { nbd_poll(h, 1000) } == -1 {
            break;
        }
    }
    let ready = unsafe { nbd_aio_is_ready(h) };
    let why = last_error();
    let got = uri_of(h);
    unsafe { nbd_close(h) };
    assert_eq!(r, 0, "{msg}");
    assert_eq!(ready, 1, "{why}");
    assert_eq!(got, format!("nbd://127.0.0.1:{port}/"));
}

/// Item 8: with debugging on, state transitions are traced as libnbd
/// traces them ("transition: A -> B", in the call that made them), not
/// only calls.
#[test]
fn debug_traces_state_transitions() {
    need_nbdkit!();
    let log = DebugLog::default();
    let h = unsafe { nbd_create() };
    unsafe { log.attach(h) };
    let args: Vec<std::ffi::CString> = [NBDKIT, "-s", "--exit-with-parent", "memory", "1M"]
        .iter()
        .map(|a| cstring(a))
        .collect();
    let mut argv: Vec<*mut std::os::raw::c_char> =
        args.iter().map(|a| a.as_ptr() as *mut _).collect();
    argv.push(std::ptr::null_mut());
    assert_eq!(
        unsafe { nbd_connect_command(h, argv.as_mut_ptr()) },
        0,
        "{}",
        last_error()
    );
    let mut buf = [0u8; 512];
    assert_eq!(
        unsafe { nbd_pread(h, buf.as_mut_ptr().cast(), 512, 0, 0) },
        0
    );
    assert_eq!(unsafe { nbd_shutdown(h, 0) }, 0);
    unsafe { nbd_close(h) };
    let lines = log.0.lock().unwrap().clone();
    let transitions: Vec<&(String, String)> = lines
        .iter()
        .filter(|(_, m)| m.starts_with("transition: "))
        .collect();
    let during = |call: &str| {
        transitions
            .iter()
            .filter(|(c, _)| c == call)
            .map(|(_, m)| m.as_str())
            .collect::<Vec<_>>()
    };
    let connect = during("nbd_connect_command");
    assert!(
        connect
            .first()
            .is_some_and(|m| m.starts_with("transition: START -> ")),
        "{lines:#?}"
    );
    // The handshake goes through several states before it is ready.
    assert!(connect.len() >= 3, "{connect:#?}");
    assert!(
        connect.last().unwrap().ends_with("-> READY"),
        "{connect:#?}"
    );
    // Each line is "A -> B" and the next starts where it ended.
    for pair in connect.windows(2) {
        let to = pair[0].rsplit(" -> ").next().unwrap();
        assert!(
            pair[1].starts_with(&format!("transition: {to} -> ")),
            "{pair:?}"
        );
    }
    assert!(!during("nbd_pread").is_empty(), "{lines:#?}");
    assert!(
        during("nbd_shutdown")
            .last()
            .is_some_and(|m| m.ends_with("-> CLOSED")),
        "{lines:#?}"
    );
}

/// A server that speaks newstyle without the fixed-newstyle flag, on a
/// Unix socket, for `conns` connections one after another. It reports
/// each option it receives on stdout as `option CODE NAME`, serves
/// NBD_OPT_EXPORT_NAME with a 1 MiB export, and then reads until the
/// client goes.
const UNFIXED_SERVER: &str = r#"
import socket, struct, sys
path, conns = sys.argv[1], int(sys.argv[2])
ls = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
ls.bind(path)
ls.listen(1)
print("listening", flush=True)
def recv(c, n):
    b = b""
    while len(b) < n:
        d = c.recv(n - len(b))
        if not d:
            raise EOFError
        b += d
    return b
for _ in range(conns):
    c, _ = ls.accept()
    try:
        c.sendall(b"NBDMAGIC" + struct.pack(">QH", 0x49484156454F5054, 0))
        recv(c, 4)
        while True:
            _, opt, n = struct.unpack(">QII", recv(c, 16))
            data = recv(c, n)
            print("option %d %s" % (opt, data.decode()), flush=True)
            if opt == 1:
                c.sendall(struct.pack(">QH", 1 << 20, 1) + bytes(124))
                while c.recv(4096):
                    pass
                break
    except EOFError:
        pass
    print("closed", flush=True)
    c.close()
"#;

unsafe extern "C" fn list_entry(
    _p: *mut c_void,
    _name: *const std::os::raw::c_char,
    _desc: *const std::os::raw::c_char,
) -> c_int {
    0
}

/// Item 6: option mode against a server without fixed newstyle stops in
/// the negotiating state, as libnbd's does: LIST and INFO are ENOTSUP
/// (nothing is sent), ABORT leaves the handle dead, GO sends the export
/// name (NBD_OPT_EXPORT_NAME).
#[test]
fn option_mode_without_fixed_newstyle() {
    if Command::new("python3").arg("-c").arg("").status().is_err() {
        eprintln!("skipped: python3 is not installed");
        return;
    }
    use std::io::BufRead;
    let dir = TempDir::new();
    let sock = dir.path().join("sock");
    let mut server = Reaped(
        Command::new("python3")
            .arg("-c")
            .arg(UNFIXED_SERVER)
            .arg(&sock)
            .arg("2")
            .stdout(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let mut out = std::io::BufReader::new(server.0.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "listening");
    let path = cstring(sock.to_str().unwrap());
    let export = cstring("e1");

    // First connection: LIST and INFO refused, then GO.
    let h = unsafe { nbd_create() };
    assert_eq!(unsafe { nbd_set_opt_mode(h, true) }, 0);
    assert_eq!(unsafe { nbd_set_export_name(h, export.as_ptr()) }, 0);
    assert_eq!(
        unsafe { nbd_connect_unix(h, path.as_ptr()) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(unsafe { nbd_aio_is_negotiating(h) }, 1);
    let proto = unsafe { std::ffi::CStr::from_ptr(nbd_get_protocol(h)) };
    assert_eq!(proto.to_str().unwrap(), "newstyle");
    let list = nbd_list_callback {
        callback: Some(list_entry),
        user_data: std::ptr::null_mut(),
        free: None,
    };
    assert_eq!(unsafe { nbd_opt_list(h, list) }, -1);
    assert_eq!(errno(), libc::ENOTSUP, "{}", last_error());
    assert_eq!(unsafe { nbd_opt_info(h) }, -1);
    assert_eq!(errno(), libc::ENOTSUP, "{}", last_error());
    assert_eq!(unsafe { nbd_aio_is_negotiating(h) }, 1);
    assert_eq!(unsafe { nbd_opt_go(h) }, 0, "{}", last_error());
    assert_eq!(unsafe { nbd_aio_is_ready(h) }, 1);
    assert_eq!(unsafe { nbd_get_size(h) }, 1 << 20);
    unsafe { nbd_close(h) };
    let mut lines = Vec::new();
    loop {
        line.clear();
        out.read_line(&mut line).unwrap();
        lines.push(line.trim().to_string());
        if line.trim() == "closed" || line.is_empty() {
            break;
        }
    }
    assert_eq!(lines, ["option 1 e1", "closed"]);

    // Second connection: ABORT cannot be said; the handle is dead.
    let h = unsafe { nbd_create() };
    assert_eq!(unsafe { nbd_set_opt_mode(h, true) }, 0);
    assert_eq!(
        unsafe { nbd_connect_unix(h, path.as_ptr()) },
        0,
        "{}",
        last_error()
    );
    assert_eq!(unsafe { nbd_aio_is_negotiating(h) }, 1);
    unsafe { nbd_opt_abort(h) };
    assert_eq!(unsafe { nbd_aio_is_dead(h) }, 1);
    unsafe { nbd_close(h) };
    line.clear();
    out.read_line(&mut line).unwrap();
    assert_eq!(line.trim(), "closed", "the server got an option");
}

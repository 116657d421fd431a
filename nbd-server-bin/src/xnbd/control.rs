//! The control socket of a proxy (`CONTROL_SOCKET_PATH`), our own line
//! protocol over a Unix stream socket, spoken by `xnbd-bgctl`.
//!
//! The client sends one command line; the server answers with lines and
//! ends with a last line `ok` or `error: MESSAGE`, then closes. Lines end
//! in `\n`; words are separated by one space.
//!
//! ```text
//! query               -> key=value lines, then ok:
//!                        mode=proxy|target  disk=CACHE_IMAGE
//!                        bitmap=CACHE_BITMAP_IMAGE  size=BYTES
//!                        remote_host=HOST  remote_port=PORT
//!                        remote_export=NAME  cached=N  blocks=M
//!                        queue=N  max_queue=M  (requests held now, limit)
//!                        buffer=N  max_buffer=M  (bytes held now, limit;
//!                        a limit of 0 is none)
//! cache-all [N]       -> "progress N M" lines as blocks arrive (N of M
//!                        cached), then ok once every block is cached.
//!                        The fetch runs on the server while clients go
//!                        on; it continues if the control client goes.
//!                        N: at most N blocks per request to the remote
//!                        (xnbd-bgctl --blocks-per-request; default and
//!                        most 256).
//! switch [force]      -> ok once the cache image is the disk (the remote
//!                        is never consulted again; clients stay
//!                        connected), or error while blocks are missing
//!                        and force was not given.
//! reconnect HOST PORT [EXPORT]
//!                     -> ok once blocks come from the NBD server at
//!                        HOST PORT (export EXPORT, default ""), which
//!                        must serve a disk of the same size; error
//!                        otherwise (the old remote stays).
//! ```
//!
//! Any other line gets `error: unknown command`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::Path;
use std::sync::Arc;

use crate::filters::xnbd_cache::XnbdCache;

/// What `query` reports about the remote.
#[derive(Clone, Debug)]
pub struct Remote {
    pub host: String,
    pub port: u16,
    pub export: String,
}

pub struct Control {
    pub cache: Arc<XnbdCache>,
    pub remote: parking_lot::Mutex<Remote>,
    /// The server's `--max-queue-size` and `--max-buf-size`, and their use.
    pub limits: Arc<crate::conn::Limits>,
}

/// Whether a Unix socket at `path` has a live server behind it; `Err`
/// when the path exists and is something else, or cannot be used.
pub fn check_free(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::FileTypeExt;
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(format!("control socket {}: {e}", path.display())),
        Ok(m) if !m.file_type().is_socket() => Err(format!(
            "control socket {}: the path exists and is not a socket",
            path.display()
        )),
        Ok(_) => match UnixStream::connect(path) {
            Ok(_) => Err(format!(
                "control socket {}: in use by a running server",
                path.display()
            )),
            // A stale socket of a server that is gone.
            Err(_) => Ok(()),
        },
    }
}

/// Binds the control socket (a stale socket file is replaced).
pub fn bind(path: &Path) -> Result<UnixListener, String> {
    check_free(path)?;
    if path.exists() {
        let _ = std::fs::remove_file(path);
    }
    UnixListener::bind(path).map_err(|e| format!("control socket {}: {e}", path.display()))
}

/// One command line of the control protocol, read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Request {
    Query,
    /// At most this many blocks per request to the remote; 0: the default.
    CacheAll(u64),
    Switch {
        force: bool,
    },
    Reconnect {
        host: String,
        port: u16,
        export: String,
    },
}

impl Request {
    /// Reads one command line (its `\n` included or not). The error is
    /// the message sent back after `error: `.
    pub fn parse(line: &str) -> Result<Request, String> {
        let words: Vec<&str> = line.split_whitespace().collect();
        let port = |p: &str| {
            p.parse::<u16>()
                .map_err(|_| format!("not a port number: {p}"))
        };
        Ok(match words.as_slice() {
            ["query"] => Request::Query,
            ["cache-all"] => Request::CacheAll(0),
            ["cache-all", n] => match n.parse::<u64>() {
                Ok(n) if n > 0 => Request::CacheAll(n),
                _ => return Err(format!("not a block count: {n}")),
            },
            ["switch"] => Request::Switch { force: false },
            ["switch", "force"] => Request::Switch { force: true },
            ["reconnect", host, p] => Request::Reconnect {
                host: host.to_string(),
                port: port(p)?,
                export: String::new(),
            },
            ["reconnect", host, p, export] => Request::Reconnect {
                host: host.to_string(),
                port: port(p)?,
                export: export.to_string(),
            },
            _ => return Err(format!("unknown command: {}", line.trim())),
        })
    }

    /// The line that asks for this request, without its `\n`.
    pub fn line(&self) -> String {
        match self {
            Request::Query => "query".into(),
            Request::CacheAll(0) => "cache-all".into(),
            Request::CacheAll(n) => format!("cache-all {n}"),
            Request::Switch { force: false } => "switch".into(),
            Request::Switch { force: true } => "switch force".into(),
            Request::Reconnect { host, port, export } if export.is_empty() => {
                format!("reconnect {host} {port}")
            }
            Request::Reconnect { host, port, export } => {
                format!("reconnect {host} {port} {export}")
            }
        }
    }
}

/// The longest command line read; a longer one is refused, so a client
/// that never sends a newline cannot make the server hold its bytes.
pub const MAX_LINE: usize = 4096;

/// Reads the client's command line, at most [`MAX_LINE`] bytes of it.
fn read_command(rd: impl BufRead) -> Result<String, String> {
    let mut line = Vec::new();
    rd.take(MAX_LINE as u64 + 1)
        .read_until(b'\n', &mut line)
        .map_err(|e| e.to_string())?;
    if line.len() > MAX_LINE {
        return Err(format!("command line longer than {MAX_LINE} bytes"));
    }
    String::from_utf8(line).map_err(|_| "command line is not UTF-8".to_string())
}

impl Control {
    /// Serves control clients forever, each on its own thread.
    pub fn serve(self: Arc<Self>, l: UnixListener) {
        for s in l.incoming() {
            match s {
                Ok(s) => {
                    let me = Arc::clone(&self);
                    std::thread::spawn(move || me.handle(s));
                }
                Err(e) => {
                    crate::log::error!("control socket: accept: {e}");
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
            }
        }
    }

    fn handle(&self, s: UnixStream) {
        let rd = BufReader::new(match s.try_clone() {
            Ok(r) => r,
            Err(_) => return,
        });
        let line = read_command(rd);
        let mut out = s;
        let r = match line.and_then(|l| Request::parse(&l)) {
            Ok(Request::Query) => self.query(&mut out),
            Ok(Request::CacheAll(n)) => self.cache_all(&mut out, n),
            Ok(Request::Switch { force }) => self.cache.switch(force),
            Ok(Request::Reconnect { host, port, export }) => self.reconnect(&host, port, &export),
            Err(e) => Err(e),
        };
        let last = match r {
            Ok(()) => "ok\n".to_string(),
            Err(e) => format!("error: {e}\n"),
        };
        let _ = out.write_all(last.as_bytes());
    }

    fn reconnect(&self, host: &str, port: u16, export: &str) -> Result<(), String> {
        let mut p = crate::params::Params::new(
            "nbd",
            vec![
                ("hostname".into(), host.to_string()),
                ("port".into(), port.to_string()),
                ("export".into(), export.to_string()),
            ],
        );
        let b = crate::plugins::nbd::NbdPlugin::open(&mut p, true)
            .map_err(|e| format!("cannot connect to {host} port {port}: {e}"))?;
        self.cache.set_source(Arc::new(b))?;
        *self.remote.lock() = Remote {
            host: host.to_string(),
            port,
            export: export.to_string(),
        };
        crate::log::log_info(format_args!("reconnected to {host} port {port}"));
        Ok(())
    }

    fn query(&self, out: &mut UnixStream) -> Result<(), String> {
        let o = self.cache.options();
        let (n, m) = self.cache.progress();
        let size = self.cache.disk_size().ok_or("the cache is not started")?;
        let mode = if self.cache.is_switched() {
            "target"
        } else {
            "proxy"
        };
        let remote = self.remote.lock().clone();
        let (queue, buffer) = self.limits.usage();
        let text = format!(
            "mode={mode}\ndisk={}\nbitmap={}\nsize={size}\nremote_host={}\nremote_port={}\nremote_export={}\ncached={n}\nblocks={m}\nqueue={queue}\nmax_queue={}\nbuffer={buffer}\nmax_buffer={}\n",
            o.cache.display(),
            o.bitmap.display(),
            remote.host,
            remote.port,
            remote.export,
            self.limits.max_queue,
            self.limits.max_buf,
        );
        out.write_all(text.as_bytes()).map_err(|e| e.to_string())
    }

    fn cache_all(&self, out: &mut UnixStream, blocks_per_request: u64) -> Result<(), String> {
        let mut last = u64::MAX;
        let mut gone = false;
        let mut report = |n: u64, m: u64| {
            if n != last && !gone {
                last = n;
                gone = out
                    .write_all(format!("progress {n} {m}\n").as_bytes())
                    .is_err();
            }
            true
        };
        self.cache
            .cache_all(blocks_per_request, &mut report)
            .map_err(|e| {
                crate::log::error!("cache-all: {e}");
                e.to_string()
            })?;
        let (n, m) = self.cache.progress();
        if n < m && !self.cache.is_switched() {
            return Err(format!("{} of {m} blocks are still missing", m - n));
        }
        Ok(())
    }
}

#[cfg(test)]
mod request_tests {
    use super::{read_command, Request, MAX_LINE};

    /// A client that sends no newline gets an error after MAX_LINE bytes
    /// (the server used to read, and hold, the line until the client
    /// stopped).
    #[test]
    fn command_lines_are_bounded() {
        let endless = std::io::repeat(b'q');
        let r = read_command(std::io::BufReader::new(endless));
        assert_eq!(r, Err(format!("command line longer than {MAX_LINE} bytes")));
        let long = format!("query{}\n", " ".repeat(MAX_LINE - 6));
        assert_eq!(read_command(long.as_bytes()), Ok(long.clone()));
        assert_eq!(read_command(&b"query\nrest"[..]), Ok("query\n".into()));
        assert!(read_command(&b"\xff\n"[..]).is_err());
    }

    #[test]
    fn lines_read_as_requests_and_back() {
        for (line, r) in [
            ("query\n", Request::Query),
            ("cache-all", Request::CacheAll(0)),
            ("cache-all 16\n", Request::CacheAll(16)),
            ("switch", Request::Switch { force: false }),
            ("switch force\n", Request::Switch { force: true }),
            (
                "reconnect h 10809",
                Request::Reconnect {
                    host: "h".into(),
                    port: 10809,
                    export: String::new(),
                },
            ),
            (
                "reconnect h 1 disk\n",
                Request::Reconnect {
                    host: "h".into(),
                    port: 1,
                    export: "disk".into(),
                },
            ),
        ] {
            assert_eq!(Request::parse(line).as_ref(), Ok(&r), "{line:?}");
            assert_eq!(Request::parse(&r.line()), Ok(r));
        }
        for (line, err) in [
            ("cache-all 0", "not a block count: 0"),
            ("reconnect h 65536", "not a port number: 65536"),
            ("switch now\n", "unknown command: switch now"),
            ("", "unknown command: "),
        ] {
            assert_eq!(Request::parse(line), Err(err.to_string()), "{line:?}");
        }
    }
}

//! `xnbd-bgctl`: controls a proxy `xnbd-server` through its control socket
//! (xnbd-bgctl(1); the protocol is in `control.rs`).
//!
//! ```text
//! xnbd-bgctl --query CONTROL_SOCKET
//! xnbd-bgctl [--force] --switch CONTROL_SOCKET
//! xnbd-bgctl [--progress] [--blocks-per-request N] --cache-all CONTROL_SOCKET
//! xnbd-bgctl [--exportname NAME] --reconnect CONTROL_SOCKET HOST PORT
//! ```
//!
//! Exit status 0 on success, 1 with one line on standard error otherwise.

use super::progress::{percent, Progress};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

pub const USAGE: &str = "\
Usage:
  xnbd-bgctl --query CONTROL_SOCKET
  xnbd-bgctl [--force] --switch CONTROL_SOCKET
  xnbd-bgctl [--progress] [--blocks-per-request N] --cache-all CONTROL_SOCKET
  xnbd-bgctl [--exportname NAME] --reconnect CONTROL_SOCKET REMOTE_HOST REMOTE_PORT

Options:
  --progress                show progress on standard error: a bar on a
                            terminal, else a line per percent
  --blocks-per-request N    fetch at most N blocks (4096 bytes each) per
                            request to the remote (default and most: 256)
  --force                   switch even if blocks are not cached yet
  --exportname NAME         the export to ask the new remote for
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Query,
    Switch,
    CacheAll,
    Reconnect,
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("xnbd-bgctl: error: {msg}");
    std::process::exit(1)
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut cmd, mut force, mut progress) = (None, false, false);
    let mut pos: Vec<String> = Vec::new();
    let mut export = None;
    let mut per_request = 0u64;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let c = match a.as_str() {
            "--help" | "-h" => {
                print!("{USAGE}");
                return;
            }
            "--version" => {
                println!("xnbd-bgctl (nbd-rs {})", env!("CARGO_PKG_VERSION"));
                return;
            }
            "--query" => Some(Cmd::Query),
            "--switch" | "--shutdown" => Some(Cmd::Switch),
            "--cache-all" => Some(Cmd::CacheAll),
            "--force" => {
                force = true;
                None
            }
            "--progress" => {
                progress = true;
                None
            }
            "--reconnect" => Some(Cmd::Reconnect),
            "--exportname" => {
                let v = it
                    .next()
                    .unwrap_or_else(|| die("--exportname needs a value"));
                export = Some(v.clone());
                None
            }
            "--blocks-per-request" => {
                let v = it
                    .next()
                    .unwrap_or_else(|| die("--blocks-per-request needs a value"));
                per_request = v.parse().ok().filter(|n| *n > 0).unwrap_or_else(|| {
                    die(format!(
                        "--blocks-per-request: not a block count greater than zero: {v}"
                    ))
                });
                None
            }
            "--cache-all2" => die(format!("{a} is not supported")),
            s if s.starts_with("--") => die(format!("unknown option {s} (see --help)")),
            s => {
                pos.push(s.to_string());
                None
            }
        };
        if let Some(c) = c {
            if cmd.replace(c).is_some_and(|old| old != c) {
                die("give one of --query, --switch, --cache-all, --reconnect");
            }
        }
    }
    let cmd = cmd.unwrap_or_else(|| {
        die("give one of --query, --switch, --cache-all, --reconnect (see --help)")
    });
    let want = if cmd == Cmd::Reconnect { 3 } else { 1 };
    if pos.len() != want {
        die(if want == 3 {
            "--reconnect needs CONTROL_SOCKET REMOTE_HOST REMOTE_PORT"
        } else {
            "give one CONTROL_SOCKET"
        });
    }
    let sock = pos[0].clone();
    let line = match cmd {
        Cmd::Query => "query".to_string(),
        Cmd::Switch if force => "switch force".into(),
        Cmd::Switch => "switch".into(),
        Cmd::CacheAll if per_request > 0 => format!("cache-all {per_request}"),
        Cmd::CacheAll => "cache-all".into(),
        Cmd::Reconnect => {
            let ok = |w: &str| !w.is_empty() && !w.contains(char::is_whitespace);
            let e = export.unwrap_or_default();
            if !ok(&pos[1]) || !ok(&pos[2]) || e.contains(char::is_whitespace) {
                die("REMOTE_HOST, REMOTE_PORT and NAME cannot contain spaces");
            }
            format!("reconnect {} {} {e}", pos[1], pos[2])
                .trim_end()
                .to_string()
        }
    };
    let mut s = UnixStream::connect(&sock).unwrap_or_else(|e| die(format!("{sock}: {e}")));
    s.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| die(format!("{sock}: {e}")));
    let mut kv = Vec::new();
    let mut display = Progress::on_stderr();
    for l in BufReader::new(s).lines() {
        let l = l.unwrap_or_else(|e| die(format!("{sock}: {e}")));
        if l == "ok" {
            display.finish();
            if cmd == Cmd::Query {
                print_query(&kv);
            }
            return;
        }
        if let Some(e) = l.strip_prefix("error: ") {
            display.finish();
            die(e);
        }
        if let Some(p) = l.strip_prefix("progress ") {
            if progress {
                let mut w = p.split(' ').filter_map(|x| x.parse::<u64>().ok());
                if let (Some(n), Some(m)) = (w.next(), w.next()) {
                    display.update(n, m);
                }
            }
            continue;
        }
        if let Some((k, v)) = l.split_once('=') {
            kv.push((k.to_string(), v.to_string()));
        }
    }
    die(format!("{sock}: the server closed the connection"));
}

/// `n` as a percentage of a limit `m` (> 0), rounded down; over 100 when
/// a request alone went past the limit.
fn percent_of(n: u64, m: u64) -> u64 {
    (n as u128 * 100 / m as u128) as u64
}

fn print_query(kv: &[(String, String)]) {
    let get = |k: &str| {
        kv.iter()
            .find(|(x, _)| x == k)
            .map(|(_, v)| v.as_str())
            .unwrap_or("")
    };
    let n: u64 = get("cached").parse().unwrap_or(0);
    let m: u64 = get("blocks").parse().unwrap_or(0);
    let mut out = format!(
        "mode: {}\ndisk: {}\nbitmap: {}\nsize: {} bytes\nremote: {} port {}\n",
        get("mode"),
        get("disk"),
        get("bitmap"),
        get("size"),
        get("remote_host"),
        get("remote_port"),
    );
    if !get("remote_export").is_empty() {
        out.push_str(&format!("remote export: {}\n", get("remote_export")));
    }
    out.push_str(&format!("cached blocks: {n} / {m} ({}%)\n", percent(n, m)));
    // As xnbd-bgctl: what the server holds now, against its limits.
    let num = |k: &str| get(k).parse::<u64>().unwrap_or(0);
    let usage = |now: u64, max: u64, unit: &str| {
        if max == 0 {
            format!("{now}{unit} (no limit)")
        } else {
            format!("{now}{unit} / {max}{unit} ({}%)", percent_of(now, max))
        }
    };
    out.push_str(&format!(
        "pending request count: {}\ninternal buffer usage: {}\n",
        usage(num("queue"), num("max_queue"), ""),
        usage(num("buffer"), num("max_buffer"), " bytes"),
    ));
    print!("{out}");
}

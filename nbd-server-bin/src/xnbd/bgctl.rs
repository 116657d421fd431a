//! `xnbd-bgctl`: controls a proxy `xnbd-server` through its control socket
//! (xnbd-bgctl(1); the protocol is in `control.rs`).
//!
//! ```text
//! xnbd-bgctl --query CONTROL_SOCKET
//! xnbd-bgctl [--force] --switch CONTROL_SOCKET
//! xnbd-bgctl [--progress] --cache-all CONTROL_SOCKET
//! ```
//!
//! Exit status 0 on success, 1 with one line on standard error otherwise.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;

pub const USAGE: &str = "\
Usage:
  xnbd-bgctl --query CONTROL_SOCKET
  xnbd-bgctl [--force] --switch CONTROL_SOCKET
  xnbd-bgctl [--progress] --cache-all CONTROL_SOCKET
";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Cmd {
    Query,
    Switch,
    CacheAll,
}

fn die(msg: impl std::fmt::Display) -> ! {
    eprintln!("xnbd-bgctl: error: {msg}");
    std::process::exit(1)
}

pub fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut cmd, mut force, mut progress, mut sock) = (None, false, false, None);
    for a in &args {
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
            "--cache-all2" | "--reconnect" => die(format!("{a} is not supported")),
            s if s.starts_with("--") => die(format!("unknown option {s} (see --help)")),
            s => {
                if sock.replace(s.to_string()).is_some() {
                    die("give one CONTROL_SOCKET");
                }
                None
            }
        };
        if let Some(c) = c {
            if cmd.replace(c).is_some_and(|old| old != c) {
                die("give one of --query, --switch, --cache-all");
            }
        }
    }
    let cmd = cmd.unwrap_or_else(|| die("give one of --query, --switch, --cache-all (see --help)"));
    let sock = sock.unwrap_or_else(|| die("CONTROL_SOCKET is missing"));
    let line = match cmd {
        Cmd::Query => "query",
        Cmd::Switch if force => "switch force",
        Cmd::Switch => "switch",
        Cmd::CacheAll => "cache-all",
    };
    let mut s = UnixStream::connect(&sock).unwrap_or_else(|e| die(format!("{sock}: {e}")));
    s.write_all(format!("{line}\n").as_bytes())
        .unwrap_or_else(|e| die(format!("{sock}: {e}")));
    let mut kv = Vec::new();
    let mut shown = false;
    for l in BufReader::new(s).lines() {
        let l = l.unwrap_or_else(|e| die(format!("{sock}: {e}")));
        if l == "ok" {
            if shown {
                eprintln!();
            }
            if cmd == Cmd::Query {
                print_query(&kv);
            }
            return;
        }
        if let Some(e) = l.strip_prefix("error: ") {
            if shown {
                eprintln!();
            }
            die(e);
        }
        if let Some(p) = l.strip_prefix("progress ") {
            if progress {
                let mut w = p.split(' ').filter_map(|x| x.parse::<u64>().ok());
                if let (Some(n), Some(m)) = (w.next(), w.next()) {
                    eprint!("\rcaching: {n} / {m} blocks ({}%)", percent(n, m));
                    shown = true;
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

/// The percentage of `n` of `m`, rounded down (100 for an empty disk).
pub fn percent(n: u64, m: u64) -> u64 {
    if m == 0 {
        100
    } else {
        (n as u128 * 100 / m as u128) as u64
    }
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
    print!("{out}");
}

#[cfg(test)]
mod tests {
    #[test]
    fn percent_rounds_down() {
        assert_eq!(super::percent(0, 3), 0);
        assert_eq!(super::percent(2, 3), 66);
        assert_eq!(super::percent(3, 3), 100);
        assert_eq!(super::percent(0, 0), 100);
    }
}

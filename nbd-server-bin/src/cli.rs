//! The command line, as nbdkit(1) has it:
//! `nbdkit [OPTIONS] PLUGIN [key=value ...]`.
//!
//! Options may come before or after the plugin name (`--` ends them);
//! short options take their value attached (`-Ufoo`) or as the next word,
//! long options as `--opt value` or `--opt=value`; short flags combine
//! (`-fv`).

pub const USAGE: &str = "\
nbdkit [-4|--ipv4-only] [-6|--ipv6-only]
       [-D|--debug PLUGIN|FILTER|nbdkit.FLAG=N]
       [-e|--exportname EXPORTNAME] [--exit-with-parent]
       [--filter FILTER ...] [-f|--foreground] [-i|--ipaddr IPADDR]
       [--keep-alive] [--log stderr|syslog|null] [--mask-handshake MASK]
       [-n|--newstyle] [--no-sr] [-o|--oldstyle] [-P|--pidfile PIDFILE]
       [-p|--port PORT] [--print-uri] [-r|--readonly] [--run CMD]
       [--selinux-label LABEL] [-s|--single] [--swap]
       [-t|--threads THREADS] [-U|--unix SOCKET|-] [-u|--user USER]
       [-g|--group GROUP]
       [--tls=off|on|require] [--tls-certificates /path/to/certificates]
       [--tls-psk /path/to/pskfile] [--tls-verify-peer]
       [-v|--verbose] [--vsock]
       PLUGIN [[KEY=]VALUE [KEY=VALUE [...]]]

nbdkit --dump-config
nbdkit --help
nbdkit --version

Manual pages: nbdkit(1) for the options, nbdkit-PLUGIN-plugin(1) and
nbdkit-FILTER-filter(1) for each built-in plugin and filter (for
example nbdkit-memory-plugin(1), nbdkit-cow-filter(1)), nbdkit-captive(1)
for --run, nbdkit-service(1), nbdkit-tls(1), nbdkit-plugin(3).
";

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cli {
    pub plugin: String,
    pub params: Vec<String>,
    pub unix: Option<String>,
    pub port: Option<String>,
    pub ipaddr: Option<String>,
    pub readonly: bool,
    pub foreground: bool,
    pub exportname: String,
    pub single: bool,
    pub exit_with_parent: bool,
    pub run: Option<String>,
    pub pidfile: Option<String>,
    pub threads: usize,
    pub verbose: bool,
    pub mask_handshake: Option<u16>,
    /// `--filter`, in command-line order (outermost first).
    pub filters: Vec<String>,
    /// `--log`; `None`: stderr in the foreground, syslog once forked.
    pub log: Option<LogDest>,
    pub vsock: bool,
    pub print_uri: bool,
    pub keep_alive: bool,
    pub no_sr: bool,
    /// `--no-eh` (ours, not nbdkit's): refuse extended headers.
    pub no_eh: bool,
    pub oldstyle: bool,
    /// `--tls=off|on|require` (None: off), `--tls-certificates`,
    /// `--tls-psk`, `--tls-verify-peer` (see `tls.rs`).
    pub tls: Option<String>,
    pub tls_certificates: Option<String>,
    pub tls_psk: Option<String>,
    pub tls_verify_peer: bool,
    /// `-D NAME.FLAG=N`, as given: debug flags of loaded plugins.
    pub debug_flags: Vec<String>,
    /// `--dump-plugin`: print the plugin's facts instead of serving.
    pub dump_plugin: bool,
    /// `--version` with a plugin: print its version and the filters'.
    pub version: bool,
    /// `--help` with a plugin: the usage, then the plugin's parameters.
    pub help: bool,
    /// `-4`/`-6`: IPv4 or IPv6 only (binding and name resolution).
    pub ipv4_only: bool,
    pub ipv6_only: bool,
    /// `-u USER`, `-g GROUP`: become them after binding.
    pub user: Option<String>,
    pub group: Option<String>,
    /// `--swap`: lock the process into memory.
    pub swap: bool,
    /// `--selinux-label`: the label of the listening sockets.
    pub selinux_label: Option<String>,
}

/// Where error messages go (`--log`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LogDest {
    Stderr,
    Syslog,
    Null,
}

#[derive(Debug, PartialEq, Eq)]
pub enum Action {
    Serve(Box<Cli>),
    Help,
    Version,
    DumpConfig,
    /// `--short-options`: [`SHORT_OPTIONS`], one a line.
    ShortOptions,
    /// `--long-options`: [`LONG_OPTIONS`], one a line.
    LongOptions,
}

/// The short options, as `--short-options` lists them: nbdkit 1.32's
/// list (it leaves out `-h`, which it accepts all the same). Bash
/// completion and scripts read it.
pub const SHORT_OPTIONS: &[&str] = &[
    "-4", "-6", "-D", "-e", "-f", "-g", "-i", "-n", "-o", "-p", "-P", "-r", "-s", "-t", "-u", "-U",
    "-v", "-V",
];

/// The long options, as `--long-options` lists them: nbdkit 1.32's, in
/// its order, then the ones only ours has (`--keep-alive`, `--no-eh`,
/// `--print-uri`).
pub const LONG_OPTIONS: &[&str] = &[
    "--ipv4-only",
    "--ipv6-only",
    "--debug",
    "--dump-config",
    "--dump-plugin",
    "--exit-with-parent",
    "--export",
    "--export-name",
    "--exportname",
    "--filter",
    "--foreground",
    "--no-fork",
    "--group",
    "--help",
    "--ip-addr",
    "--ipaddr",
    "--log",
    "--mask-handshake",
    "--new-style",
    "--newstyle",
    "--no-sr",
    "--old-style",
    "--oldstyle",
    "--pid-file",
    "--pidfile",
    "--port",
    "--read-only",
    "--readonly",
    "--run",
    "--selinux-label",
    "--single",
    "--stdin",
    "--swap",
    "--threads",
    "--tls",
    "--tls-certificates",
    "--tls-psk",
    "--tls-verify-peer",
    "--unix",
    "--user",
    "--verbose",
    "--version",
    "--vsock",
    "--keep-alive",
    "--no-eh",
    "--print-uri",
];

fn parse_num<T: std::str::FromStr>(opt: &str, v: &str) -> Result<T, String> {
    let v = v.trim();
    let r = if let Some(h) = v.strip_prefix("0x") {
        u64::from_str_radix(h, 16)
            .ok()
            .and_then(|n| n.to_string().parse().ok())
    } else {
        v.parse().ok()
    };
    r.ok_or_else(|| format!("{opt}: could not parse number: {v}"))
}

pub fn parse(args: &[String]) -> Result<Action, String> {
    let mut c = Cli {
        threads: 16,
        ..Cli::default()
    };
    let mut positional: Vec<String> = Vec::new();
    let mut i = 0;
    let mut only_positional = false;
    while i < args.len() {
        let a = &args[i];
        i += 1;
        if only_positional || !a.starts_with('-') || a == "-" {
            positional.push(a.clone());
            continue;
        }
        if a == "--" {
            only_positional = true;
            continue;
        }
        // Normalise to (name, attached value).
        let mut items: Vec<(String, Option<String>)> = Vec::new();
        if let Some(long) = a.strip_prefix("--") {
            match long.split_once('=') {
                Some((n, v)) => items.push((n.to_string(), Some(v.to_string()))),
                None => items.push((long.to_string(), None)),
            }
        } else {
            let chars: Vec<char> = a[1..].chars().collect();
            let mut j = 0;
            while j < chars.len() {
                let o = chars[j].to_string();
                j += 1;
                if "UpiePtDug".contains(&o) {
                    let rest: String = chars[j..].iter().collect();
                    items.push((o, if rest.is_empty() { None } else { Some(rest) }));
                    break;
                }
                items.push((o, None));
            }
        }
        for (name, attached) in items {
            let takes_value = matches!(
                name.as_str(),
                "U" | "unix"
                    | "p"
                    | "port"
                    | "i"
                    | "ipaddr"
                    | "ip-addr"
                    | "e"
                    | "exportname"
                    | "export-name"
                    | "export"
                    | "run"
                    | "P"
                    | "pidfile"
                    | "pid-file"
                    | "t"
                    | "threads"
                    | "mask-handshake"
                    | "D"
                    | "debug"
                    | "filter"
                    | "log"
                    | "tls"
                    | "tls-certificates"
                    | "tls-psk"
                    | "u"
                    | "user"
                    | "g"
                    | "group"
                    | "selinux-label"
            );
            let value = if takes_value {
                match attached {
                    Some(v) => Some(v),
                    None => {
                        let v = args
                            .get(i)
                            .ok_or_else(|| format!("option '{a}' requires an argument"))?;
                        i += 1;
                        Some(v.clone())
                    }
                }
            } else {
                if attached.is_some() {
                    return Err(format!("option '--{name}' doesn't allow an argument"));
                }
                None
            };
            let v = value.unwrap_or_default();
            match name.as_str() {
                "h" | "help" => c.help = true,
                "V" | "version" => c.version = true,
                "dump-config" => return Ok(Action::DumpConfig),
                "short-options" => return Ok(Action::ShortOptions),
                "long-options" => return Ok(Action::LongOptions),
                "U" | "unix" => c.unix = Some(v),
                "p" | "port" => c.port = Some(v),
                "i" | "ipaddr" | "ip-addr" => c.ipaddr = Some(v),
                "e" | "exportname" | "export-name" | "export" => c.exportname = v,
                "filter" => {
                    if v.is_empty() {
                        return Err("--filter: filter name is empty".into());
                    }
                    c.filters.push(v)
                }
                "log" => {
                    c.log = Some(match v.as_str() {
                        "stderr" => LogDest::Stderr,
                        "syslog" => LogDest::Syslog,
                        "null" => LogDest::Null,
                        _ => {
                            return Err(format!(
                                "--log must be \"stderr\", \"syslog\" or \"null\", not \"{v}\""
                            ))
                        }
                    })
                }
                "vsock" => c.vsock = true,
                "print-uri" => c.print_uri = true,
                "keep-alive" | "keepalive" => c.keep_alive = true,
                "no-sr" => c.no_sr = true,
                "no-eh" => c.no_eh = true,
                "tls" => c.tls = Some(v),
                "tls-certificates" => c.tls_certificates = Some(v),
                "tls-psk" => c.tls_psk = Some(v),
                "tls-verify-peer" => c.tls_verify_peer = true,
                "run" => c.run = Some(v),
                "P" | "pidfile" | "pid-file" => c.pidfile = Some(v),
                "t" | "threads" => {
                    let t: usize = parse_num("--threads", &v)?;
                    if t > 1024 {
                        return Err(format!("--threads: too many threads: {t}"));
                    }
                    c.threads = if t == 0 { 16 } else { t };
                }
                "mask-handshake" => c.mask_handshake = Some(parse_num("--mask-handshake", &v)?),
                // Debug flags of plugins, filters and the server: a loaded
                // plugin's are set in it (cplugin::set_debug_flags); our
                // own layers declare none.
                "D" | "debug" => {
                    if !v.contains('=') {
                        return Err(format!(
                            "-D (Debug Flag) must have the format NAME.FLAG=N: {v}"
                        ));
                    }
                    c.debug_flags.push(v);
                }
                "r" | "readonly" | "read-only" => c.readonly = true,
                // The last of -4 and -6 wins, as in nbdkit.
                "4" | "ipv4-only" | "ipv4" => (c.ipv4_only, c.ipv6_only) = (true, false),
                "6" | "ipv6-only" | "ipv6" => (c.ipv4_only, c.ipv6_only) = (false, true),
                "u" | "user" => c.user = Some(v),
                "g" | "group" => c.group = Some(v),
                "swap" => c.swap = true,
                "selinux-label" => c.selinux_label = Some(v),
                "dump-plugin" => c.dump_plugin = true,
                "f" | "foreground" | "no-fork" => c.foreground = true,
                "s" | "single" | "stdin" => c.single = true,
                "exit-with-parent" => c.exit_with_parent = true,
                "v" | "verbose" => c.verbose = true,
                "n" | "newstyle" | "new-style" => c.oldstyle = false,
                "o" | "oldstyle" | "old-style" => c.oldstyle = true,
                _ => return Err(format!("unrecognized option '{a}'")),
            }
        }
    }
    // `--version` alone is the server's; after a plugin name it names the
    // plugin's and filters' versions too (`Cli::version`).
    if c.help && positional.is_empty() {
        return Ok(Action::Help);
    }
    if c.version && positional.is_empty() {
        return Ok(Action::Version);
    }
    let mut pos = positional.into_iter();
    c.plugin = pos
        .next()
        .ok_or("no plugins given on the command line.\nUse 'nbdkit --help' for usage.")?;
    c.params = pos.collect();
    if c.unix.is_some() && (c.port.is_some() || c.ipaddr.is_some()) {
        return Err("-p/-i and -U options cannot be used together".into());
    }
    if c.vsock && c.unix.is_some() {
        return Err("--vsock and -U options cannot be used together".into());
    }
    if c.vsock && c.ipaddr.is_some() {
        return Err("--vsock and -i options cannot be used together".into());
    }
    if c.single
        && (c.unix.is_some()
            || c.port.is_some()
            || c.ipaddr.is_some()
            || c.run.is_some()
            || c.vsock
            || c.print_uri)
    {
        return Err(
            "-s option cannot be used with -U, -p, -i, --run, --vsock or --print-uri".into(),
        );
    }
    if let Some(p) = &c.port {
        let ok = if c.vsock {
            p.parse::<u32>().is_ok()
        } else {
            p.parse::<u16>().is_ok()
        };
        if !ok {
            return Err(format!("could not parse port number: {p}"));
        }
    }
    if c.oldstyle
        && c.tls
            .as_deref()
            .is_some_and(|t| !matches!(t, "off" | "no" | "false" | "0"))
    {
        return Err("--tls cannot be used with --oldstyle (oldstyle has no STARTTLS)".into());
    }
    if c.oldstyle && !c.exportname.is_empty() {
        return Err("-e option cannot be used with --oldstyle (no export names)".into());
    }
    if c.exportname.len() > nbd_core::limits::MAX_STRING {
        return Err("export name too long".into());
    }
    Ok(Action::Serve(Box::new(c)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(s: &[&str]) -> Result<Action, String> {
        parse(&s.iter().map(|x| x.to_string()).collect::<Vec<_>>())
    }

    fn cli(s: &[&str]) -> Cli {
        match p(s).unwrap() {
            Action::Serve(c) => *c,
            a => panic!("{a:?}"),
        }
    }

    #[test]
    fn forms() {
        let c = cli(&["-U", "-", "--run", "echo $uri", "memory", "1G"]);
        assert_eq!(c.unix.as_deref(), Some("-"));
        assert_eq!(c.run.as_deref(), Some("echo $uri"));
        assert_eq!(
            (c.plugin.as_str(), c.params.clone()),
            ("memory", vec!["1G".into()])
        );
        let c = cli(&[
            "-fvr",
            "-Usock",
            "--threads=4",
            "file",
            "file=x",
            "-e",
            "foo",
        ]);
        assert!(c.foreground && c.verbose && c.readonly);
        assert_eq!(c.unix.as_deref(), Some("sock"));
        assert_eq!(c.threads, 4);
        assert_eq!(c.exportname, "foo");
        let c = cli(&[
            "--port=0",
            "--ipaddr",
            "127.0.0.1",
            "--pidfile=/p",
            "memory",
            "size=1",
        ]);
        assert_eq!(c.port.as_deref(), Some("0"));
        assert_eq!(c.pidfile.as_deref(), Some("/p"));
        let c = cli(&["--mask-handshake=0", "-s", "memory", "1"]);
        assert_eq!(c.mask_handshake, Some(0));
        assert_eq!(p(&["--version"]), Ok(Action::Version));
        assert_eq!(p(&["--help"]), Ok(Action::Help));
        assert!(cli(&["memory", "--help"]).help);
        assert!(p(&["--bogus", "memory"]).is_err());
        assert!(p(&[]).is_err());
        assert!(p(&["-U"]).is_err());
        assert!(p(&["-U", "s", "-p", "1", "memory"]).is_err());
    }

    #[test]
    fn tls_options() {
        let c = cli(&[
            "--tls=require",
            "--tls-certificates",
            "/d",
            "--tls-psk=/k.psk",
            "--tls-verify-peer",
            "memory",
            "1M",
        ]);
        assert_eq!(c.tls.as_deref(), Some("require"));
        assert_eq!(c.tls_certificates.as_deref(), Some("/d"));
        assert_eq!(c.tls_psk.as_deref(), Some("/k.psk"));
        assert!(c.tls_verify_peer);
        assert!(p(&["--tls=on", "--oldstyle", "memory", "1M"]).is_err());
        assert!(p(&["--tls=off", "--oldstyle", "memory", "1M"]).is_ok());
    }

    #[test]
    fn service_options() {
        let c = cli(&[
            "--filter=a",
            "--filter",
            "b",
            "--log=syslog",
            "--vsock",
            "-p",
            "4294967295",
            "--print-uri",
            "--keep-alive",
            "--no-sr",
            "--no-eh",
            "-o",
            "-D",
            "nbdkit.backend.datapath=0",
            "-Dfoo.bar=1",
            "memory",
            "1M",
        ]);
        assert_eq!(c.filters, vec!["a", "b"]);
        assert_eq!(c.log, Some(LogDest::Syslog));
        assert!(c.vsock && c.print_uri && c.keep_alive && c.no_sr && c.no_eh && c.oldstyle);
        assert_eq!(c.port.as_deref(), Some("4294967295"));
        assert_eq!(p(&["--dump-config"]), Ok(Action::DumpConfig));
        assert_eq!(p(&["--short-options"]), Ok(Action::ShortOptions));
        assert_eq!(p(&["--long-options"]), Ok(Action::LongOptions));
        for bad in [
            &["--log=foo", "memory", "1"][..],
            &["--vsock", "-U", "s", "memory", "1"],
            &["-s", "-U", "s", "memory", "1"],
            &["-s", "--run", "x", "memory", "1"],
            &["-s", "--vsock", "memory", "1"],
            &["-p", "65536", "memory", "1"],
            &["-p", "x", "memory", "1"],
            &["--vsock", "-p", "-1", "memory", "1"],
            &["-t", "x", "memory", "1"],
            &["-D", "noequals", "memory", "1"],
            &["-o", "-e", "x", "memory", "1"],
            &["--filter=", "memory", "1"],
        ] {
            assert!(p(bad).is_err(), "{bad:?}");
        }
    }

    /// Every option that --short-options and --long-options list is one
    /// the parser takes (with a value where it needs one).
    #[test]
    fn every_listed_option_is_accepted() {
        for o in SHORT_OPTIONS.iter().chain(LONG_OPTIONS) {
            let with_value = [*o, "1", "memory", "1M"];
            let alone = [*o, "memory", "1M"];
            let unrecognized = |r: Result<Action, String>| matches!(r, Err(e) if e.starts_with("unrecognized option"));
            assert!(
                !unrecognized(p(&alone)) || !unrecognized(p(&with_value)),
                "{o} is listed but not accepted"
            );
        }
    }
}

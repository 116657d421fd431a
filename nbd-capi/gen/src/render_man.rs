//! Renders the manual page of each C call, nbd_NAME(3), as POD: the facts
//! (prototype, flags, states, version, errors) come from the API table in
//! `api.rs`, the prose from `docs.rs`. `make man` turns the POD into roff
//! with pod2man.
//!
//! A call of the 1.24 symbol list may have no implemented row in the table
//! yet (another branch adds it, or it is a `todo` row with no signature):
//! its page is built from its `docs.rs` entry, whose `synopsis` gives the
//! prototype, and the version from the symbol list.
//!
//! Only wildcard matches on the table's enums, and the table's names come
//! from `render.rs`'s helpers, so that new kinds of arguments or return
//! values added to the table still render (with a generic sentence).
#![allow(dead_code)]

use crate::api::{Arg, Call, FlagSet, Status, CALLS};
use crate::docs::{Doc, DOCS};
use crate::render;
use std::fmt::Write;

/// libnbd 1.24's exported calls with their version (`1.16`), in the order
/// of the reference list `nbd-capi/gen/libnbd-1.24-symbols.tsv`.
pub fn symbols() -> Vec<(&'static str, &'static str)> {
    include_str!("../libnbd-1.24-symbols.tsv")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (sym, node) = l.split_once('\t')?;
            let name = sym.strip_prefix("nbd_")?;
            let version = node.trim().strip_prefix("LIBNBD_")?;
            Some((name, version))
        })
        .collect()
}

pub fn doc(name: &str) -> Option<&'static Doc> {
    DOCS.iter().find(|(n, _)| *n == name).map(|(_, d)| d)
}

/// The table's row for a call, when it has a real signature.
fn implemented(name: &str) -> Option<&'static Call> {
    CALLS
        .iter()
        .find(|c| c.name == name && c.status == Status::Implemented)
}

/// The C type of one of `render::c_params`'s Rust types.
fn c_type(rust: &str) -> String {
    match rust {
        "*mut nbd_handle" => "struct nbd_handle *",
        "bool" => "bool",
        "u32" => "uint32_t",
        "u64" => "uint64_t",
        "i64" => "int64_t",
        "c_int" => "int",
        "c_uint" => "unsigned",
        "usize" => "size_t",
        "*const c_char" => "const char *",
        "*mut c_char" => "char *",
        "*mut *mut c_char" => "char **",
        "*const c_void" => "const void *",
        "*mut c_void" => "void *",
        "libc::uintptr_t" => "uintptr_t",
        "libc::ssize_t" => "ssize_t",
        "*const libc::sockaddr" => "const struct sockaddr *",
        "libc::socklen_t" => "socklen_t",
        "()" => "void",
        // Callback structs have the same name in C.
        other => other,
    }
    .to_string()
}

/// `TYPE NAME` with the `*` against the name, as libnbd.h writes it.
fn c_decl(ty: &str, name: &str) -> String {
    if ty.ends_with('*') {
        format!("{ty}{name}")
    } else {
        format!("{ty} {name}")
    }
}

/// The C return type and parameters of a table row.
fn table_prototype(c: &Call) -> (String, Vec<String>) {
    let params = render::c_params(c)
        .iter()
        .map(|p| {
            let (name, ty) = p.split_once(": ").expect("name: type");
            c_decl(&c_type(ty), name)
        })
        .collect();
    (c_type(render::c_ret(c.ret)), params)
}

/// Splits a one-line C prototype from `docs.rs`
/// (`int nbd_x (struct nbd_handle *h, int y);`) into its return type and
/// parameters.
fn parse_prototype(text: &str, name: &str) -> Option<(String, Vec<String>)> {
    let cname = format!("nbd_{name}");
    let (head, rest) = text.split_once('(')?;
    let ret = head.trim().strip_suffix(&cname)?.trim().to_string();
    let inner = rest.trim().strip_suffix(';')?.trim().strip_suffix(')')?;
    let params = inner
        .split(',')
        .map(|p| p.trim().to_string())
        .filter(|p| !p.is_empty() && p != "void")
        .collect();
    Some((ret, params))
}

/// The prototype as a POD verbatim block: on one line when it fits in 72
/// columns (man renders at 80 with its indent), else the parameters
/// wrapped on lines of their own, indented.
fn format_prototype(ret: &str, name: &str, params: &[String]) -> String {
    let sep = if ret.ends_with('*') { "" } else { " " };
    let head = format!(" {ret}{sep}nbd_{name} (");
    let params: Vec<String> = if params.is_empty() {
        vec!["void".to_string()]
    } else {
        params.to_vec()
    };
    let one_line = format!("{head}{});", params.join(", "));
    if one_line.len() <= 72 {
        return one_line;
    }
    let indent = "       ";
    let mut lines = vec![head];
    let mut line = String::new();
    for (i, p) in params.iter().enumerate() {
        let last = i + 1 == params.len();
        let piece = format!("{p}{}", if last { ");" } else { "," });
        if !line.is_empty() && indent.len() + line.len() + 1 + piece.len() > 72 {
            lines.push(format!("{indent}{line}"));
            line.clear();
        }
        if !line.is_empty() {
            line.push(' ');
        }
        line.push_str(&piece);
    }
    lines.push(format!("{indent}{line}"));
    lines.join("\n")
}

/// The prototype of a call: from the table when it has a row, else from
/// its `docs.rs` synopsis. None when neither has it.
pub fn prototype(name: &str) -> Option<String> {
    if let Some(c) = implemented(name) {
        let (ret, params) = table_prototype(c);
        return Some(format_prototype(&ret, name, &params));
    }
    let (ret, params) = parse_prototype(doc(name)?.synopsis?, name)?;
    Some(format_prototype(&ret, name, &params))
}

/// What a callback struct's function looks like, by the struct's name.
fn callback_signature(kind: &str) -> Option<&'static str> {
    Some(match kind {
        "nbd_completion_callback" => "int (*callback) (void *user_data, int *error);",
        "nbd_chunk_callback" => {
            "int (*callback) (void *user_data, const void *subbuf,\n\
             \x20                 size_t count, uint64_t offset,\n\
             \x20                 unsigned status, int *error);"
        }
        "nbd_extent_callback" => {
            "int (*callback) (void *user_data, const char *metacontext,\n\
             \x20                 uint64_t offset, uint32_t *entries,\n\
             \x20                 size_t nr_entries, int *error);"
        }
        "nbd_extent64_callback" => {
            "int (*callback) (void *user_data, const char *metacontext,\n\
             \x20                 uint64_t offset, nbd_extent *entries,\n\
             \x20                 size_t nr_entries, int *error);"
        }
        "nbd_list_callback" => {
            "int (*callback) (void *user_data, const char *name,\n\
             \x20                 const char *description);"
        }
        "nbd_context_callback" => "int (*callback) (void *user_data, const char *name);",
        "nbd_debug_callback" => {
            "int (*callback) (void *user_data, const char *context,\n\
             \x20                 const char *msg);"
        }
        _ => return None,
    })
}

/// The callback structs a prototype takes, found by their type name so
/// that a `docs.rs` synopsis gets the same treatment as a table row.
fn callbacks_of(params: &[String]) -> Vec<(String, String)> {
    params
        .iter()
        .filter_map(|p| {
            let (ty, name) = p.split_once(' ')?;
            (ty.starts_with("nbd_") && ty.ends_with("_callback"))
                .then(|| (ty.to_string(), name.trim().to_string()))
        })
        .collect()
}

fn callback_section(out: &mut String, params: &[String]) {
    let cbs = callbacks_of(params);
    if cbs.is_empty() {
        return;
    }
    let _ = writeln!(out, "=head2 Callbacks\n");
    for (ty, name) in &cbs {
        let _ = writeln!(
            out,
            "C<{name}> has the type C<{ty}>: a struct of the function \
             C<callback>, an opaque C<user_data> pointer passed to it, and an \
             optional C<free> function (may be NULL) called with C<user_data> \
             when the library no longer needs the callback.\n"
        );
        if let Some(sig) = callback_signature(ty) {
            let sig = sig
                .lines()
                .map(|l| format!(" {l}"))
                .collect::<Vec<_>>()
                .join("\n");
            let _ = writeln!(out, "{sig}\n");
        }
    }
    let _ = writeln!(
        out,
        "The library calls C<free> exactly once for each callback passed \
         here, even when this call fails (including when it fails before \
         doing anything), so the caller never frees C<user_data> itself; \
         see L<libnbd(3)/CALLBACKS>.\n"
    );
    for (ty, name) in &cbs {
        let text = match ty.as_str() {
            "nbd_completion_callback" => {
                "runs once, when the command has finished. C<*error> holds the \
                 command's errno, 0 when it succeeded. Returning 1 retires the \
                 command at once (L<nbd_aio_command_completed(3)> will not \
                 report it); returning -1 after storing an errno in C<*error> \
                 makes the command fail with it; otherwise return 0."
            }
            "nbd_chunk_callback" | "nbd_extent_callback" | "nbd_extent64_callback" => {
                "may run several times, once per piece of the reply. C<*error> \
                 holds the errno of the command so far (0 if none). Returning -1 \
                 makes the command fail, with the errno stored in C<*error>, or \
                 C<EPROTO> when that is 0; return 0 otherwise."
            }
            _ => continue,
        };
        let _ = writeln!(
            out,
            "C<{name}.callback> {text} It runs with the handle locked and must \
             not call libnbd on the same handle.\n"
        );
    }
}

fn cmd_flag_meaning(flag: &str) -> &'static str {
    match flag {
        "LIBNBD_CMD_FLAG_FUA" => {
            "Force unit access: the server replies only once the data is on \
             stable storage. Needs L<nbd_can_fua(3)>."
        }
        "LIBNBD_CMD_FLAG_NO_HOLE" => {
            "The zeroed range must be allocated, not punched out as a hole."
        }
        "LIBNBD_CMD_FLAG_DF" => {
            "Do not fragment: the server sends the reply as one chunk. Needs \
             L<nbd_can_df(3)>."
        }
        "LIBNBD_CMD_FLAG_REQ_ONE" => {
            "Ask the server for one extent only (the reply may then cover less \
             than C<count>)."
        }
        "LIBNBD_CMD_FLAG_FAST_ZERO" => {
            "Fail at once (with C<ENOTSUP>) rather than zero slowly, when the \
             server cannot zero faster than writing. Needs \
             L<nbd_can_fast_zero(3)>."
        }
        "LIBNBD_CMD_FLAG_PAYLOAD_LEN" => {
            "Send the length of the write payload in the request header \
             (extended headers only); libnbd sets it itself where needed."
        }
        _ => "",
    }
}

fn flags_section(out: &mut String, c: &Call) {
    for a in c.args {
        let (n, set) = match a {
            Arg::Flags(n, set) => (*n, *set),
            _ => continue,
        };
        let _ = writeln!(out, "=head2 Flags\n");
        let names: Vec<(String, &str)> = match set {
            FlagSet::Cmd(ok) => ok
                .iter()
                .map(|f| {
                    let name = render::cmd_flag(*f);
                    (name.to_string(), cmd_flag_meaning(name))
                })
                .collect(),
            FlagSet::Handshake => vec![
                (
                    "LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE".into(),
                    "Use (and require) the fixed newstyle handshake.",
                ),
                (
                    "LIBNBD_HANDSHAKE_FLAG_NO_ZEROES".into(),
                    "Ask the server to omit the 124 bytes of zeroes at the end \
                     of the handshake.",
                ),
            ],
            FlagSet::Strict => vec![
                (
                    "LIBNBD_STRICT_COMMANDS".into(),
                    "Refuse commands the server did not advertise.",
                ),
                (
                    "LIBNBD_STRICT_FLAGS".into(),
                    "Refuse flags the command does not accept.",
                ),
                (
                    "LIBNBD_STRICT_BOUNDS".into(),
                    "Refuse requests past the end of the export.",
                ),
                (
                    "LIBNBD_STRICT_ZERO_SIZE".into(),
                    "Refuse requests of zero length.",
                ),
                (
                    "LIBNBD_STRICT_ALIGN".into(),
                    "Refuse requests not aligned to the minimum block size.",
                ),
            ],
            FlagSet::AllowTransport => vec![
                (
                    "LIBNBD_ALLOW_TRANSPORT_TCP".into(),
                    "C<nbd://> and C<nbds://>.",
                ),
                (
                    "LIBNBD_ALLOW_TRANSPORT_UNIX".into(),
                    "C<nbd+unix://> and C<nbds+unix://>.",
                ),
                (
                    "LIBNBD_ALLOW_TRANSPORT_VSOCK".into(),
                    "C<nbd+vsock://> and C<nbds+vsock://>.",
                ),
            ],
            FlagSet::Shutdown => vec![(
                "LIBNBD_SHUTDOWN_ABANDON_PENDING".into(),
                "Drop commands not yet sent to the server instead of sending \
                 them before the disconnect request.",
            )],
            #[allow(unreachable_patterns)]
            _ => Vec::new(),
        };
        if names.is_empty() {
            let _ = writeln!(
                out,
                "C<{n}> must be 0: this command takes no flags. Any other bit is \
                 refused with C<EINVAL> (see L<nbd_set_strict_mode(3)>).\n"
            );
            continue;
        }
        let _ = writeln!(
            out,
            "C<{n}> is 0 or a bitwise or of these flags; other bits are refused \
             with C<EINVAL>:\n\n=over 4\n"
        );
        for (name, meaning) in names {
            let _ = writeln!(out, "=item C<{name}>\n");
            if !meaning.is_empty() {
                let _ = writeln!(out, "{meaning}\n");
            }
        }
        let _ = writeln!(out, "=back\n");
    }
}

fn enum_section(out: &mut String, c: &Call) {
    for a in c.args {
        if let Arg::Enum(n, e) = a {
            let values: Vec<String> = render::enum_values(*e)
                .iter()
                .map(|v| format!("C<{v}>"))
                .collect();
            let _ = writeln!(
                out,
                "C<{n}> is one of {}; any other value is refused with C<EINVAL>.\n",
                values.join(", ")
            );
        }
    }
}

/// The return value of a call, by the C type and table kind.
fn return_text(name: &str, kind: Option<&str>, ret: &str) -> String {
    let cookie = name.starts_with("aio_") && ret == "int64_t";
    let text = match kind {
        Some("Void") => "This call returns nothing.",
        Some("Err") => "The call returns 0 on success and -1 on error.",
        Some("Bool") => "The call returns 1 for true, 0 for false, and -1 on error.",
        Some("Int64") if cookie => {
            "The call returns the command's cookie, a number E<gt>= 1 that \
             identifies it for L<nbd_aio_command_completed(3)>, or -1 on error."
        }
        Some("Int64") | Some("Int") | Some("SSize") => {
            "The call returns a number E<gt>= 0 on success and -1 on error."
        }
        Some("StaticString") => {
            "The call returns a string that the library owns and that lives as \
             long as the library is loaded: do not free it. It returns NULL on \
             error."
        }
        Some("String") => {
            "The call returns a newly allocated string that the caller must free \
             with L<free(3)>, or NULL on error."
        }
        Some("Handle") => "The call returns a new handle, or NULL on error.",
        Some("PlainInt")
        | Some("PlainConstString")
        | Some("UInt")
        | Some("UInt32")
        | Some("UIntPtr")
        | Some("UInt64") => "This call cannot fail.",
        _ => match ret {
            "int" => "The call returns a number E<gt>= 0 on success and -1 on error.",
            "int64_t" if cookie => {
                "The call returns the command's cookie, a number E<gt>= 1, or -1 \
                 on error."
            }
            "int64_t" | "ssize_t" => {
                "The call returns a number E<gt>= 0 on success and -1 on error."
            }
            "char *" => {
                "The call returns a newly allocated string that the caller must \
                 free with L<free(3)>, or NULL on error."
            }
            "const char *" => "The call returns a string the library owns: do not free it.",
            "uint64_t" => "This call cannot fail.",
            _ => "",
        },
    };
    text.to_string()
}

fn state_text(s: &str) -> &'static str {
    match s {
        "State::Created" => "created, before connecting",
        "State::Connecting" => "connecting",
        "State::Negotiating" => "negotiating (in option mode, see L<nbd_set_opt_mode(3)>)",
        "State::Connected" => "connected and ready for commands",
        "State::Closed" => "shut down",
        "State::Dead" => "dead after a fatal error",
        _ => "",
    }
}

/// Other calls a page points to: those its text links, its set/get
/// partner, and its synchronous or asynchronous twin.
fn see_also(name: &str, text: &str) -> Vec<String> {
    let mut v: Vec<String> = Vec::new();
    let mut push = |n: String| {
        if n != name && !v.contains(&n) && symbols().iter().any(|(s, _)| *s == n) {
            v.push(n);
        }
    };
    let mut rest = text;
    while let Some(i) = rest.find("L<nbd_") {
        rest = &rest[i + 6..];
        if let Some(end) = rest.find("(3)>") {
            push(rest[..end].to_string());
        }
    }
    for (a, b) in [("set_", "get_"), ("get_", "set_"), ("aio_", "")] {
        if let Some(stem) = name.strip_prefix(a) {
            push(format!("{b}{stem}"));
        }
    }
    push(format!("aio_{name}"));
    v.sort();
    let mut links: Vec<String> = v.iter().map(|n| format!("L<nbd_{n}(3)>")).collect();
    links.push("L<libnbd(3)>".to_string());
    links
}

/// The POD of nbd_NAME(3). None when the call has neither a table row
/// nor a docs entry with a synopsis.
pub fn page(name: &str) -> Option<String> {
    let d = doc(name)?;
    let version = implemented(name)
        .map(|c| c.version)
        .or_else(|| symbols().iter().find(|(n, _)| *n == name).map(|(_, v)| *v))?;
    let proto = prototype(name)?;
    let (ret, params) = match implemented(name) {
        Some(c) => table_prototype(c),
        None => parse_prototype(d.synopsis?, name)?,
    };
    let upper = name.to_uppercase();
    let mut out = String::new();
    let _ = writeln!(out, "=encoding utf8\n");
    let _ = writeln!(out, "=head1 NAME\n\nnbd_{name} - {}\n", d.summary);
    let _ = writeln!(out, "=head1 SYNOPSIS\n\n #include <libnbd.h>\n\n{proto}\n");
    let _ = writeln!(out, "=head1 DESCRIPTION\n\n{}\n", d.description.trim());
    if let Some(c) = implemented(name) {
        enum_section(&mut out, c);
        flags_section(&mut out, c);
    }
    callback_section(&mut out, &params);

    let _ = writeln!(out, "=head1 RETURN VALUE\n");
    let kind = implemented(name).map(|c| render::ret_kind(c.ret));
    let generic = return_text(name, kind, &ret);
    let extra = d.returns.trim();
    let text = [generic.as_str(), extra]
        .iter()
        .filter(|t| !t.is_empty())
        .copied()
        .collect::<Vec<_>>()
        .join(" ");
    let _ = writeln!(out, "{text}\n");

    let _ = writeln!(out, "=head1 ERRORS\n");
    let may_fail = !generic.contains("cannot fail");
    let sets_error = !matches!(implemented(name), Some(c) if !c.may_set_error);
    if may_fail && sets_error {
        let _ = writeln!(
            out,
            "On error the call records a message and an errno value for the \
             calling thread, which L<nbd_get_error(3)> and L<nbd_get_errno(3)> \
             return until the thread's next libnbd call that fails; see \
             L<libnbd(3)/ERRORS>.\n"
        );
    } else {
        let _ = writeln!(
            out,
            "This call does not touch the thread's error (L<nbd_get_error(3)>).\n"
        );
    }
    let pointers: Vec<String> = params
        .iter()
        .filter(|p| p.contains('*') && callbacks_of(std::slice::from_ref(p)).is_empty())
        .map(|p| {
            let name = p.rsplit(['*', ' ']).next().unwrap_or(p);
            format!("C<{name}>")
        })
        .collect();
    if !pointers.is_empty() && sets_error {
        let _ = writeln!(
            out,
            "These pointers must not be NULL: {}. A NULL one makes the call fail \
             with C<EFAULT>.\n",
            pointers.join(", ")
        );
    }

    if let Some(c) = implemented(name) {
        let states: Vec<&str> = c
            .states
            .iter()
            .map(|s| state_text(render::state(*s)))
            .filter(|s| !s.is_empty())
            .collect();
        let _ = writeln!(out, "=head1 HANDLE STATE\n");
        if !c.handle {
            let _ = writeln!(out, "This call does not take a handle.\n");
        } else if states.is_empty() {
            let _ = writeln!(out, "This call may be made in any state of the handle.\n");
        } else {
            let _ = writeln!(
                out,
                "The handle must be {}. In any other state the call fails: with \
                 C<ENOTCONN> before connecting, otherwise with C<EINVAL>.\n",
                join_or(&states)
            );
        }
    }

    let _ = writeln!(
        out,
        "=head1 VERSION\n\nThis function first appeared in libnbd {version}.\n\n\
         To test at compile time whether it is available, check that this \
         macro is defined:\n\n #define LIBNBD_HAVE_NBD_{upper} 1\n"
    );
    if let Some(example) = d.example {
        let code = example
            .trim_matches('\n')
            .lines()
            .map(|l| {
                if l.is_empty() {
                    String::new()
                } else {
                    format!(" {l}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        let _ = writeln!(out, "=head1 EXAMPLE\n\n{code}\n");
    }
    let all = format!("{} {}", d.description, d.returns);
    let _ = writeln!(
        out,
        "=head1 SEE ALSO\n\n{}.\n",
        see_also(name, &all).join(",\n")
    );
    Some(out)
}

fn join_or(items: &[&str]) -> String {
    match items {
        [] => String::new(),
        [one] => one.to_string(),
        [init @ .., last] => format!("{}, or {last}", init.join(", ")),
    }
}

/// Every page: (file name, POD), one per call of the 1.24 symbol list that
/// has what a page needs.
pub fn pages() -> Vec<(String, String)> {
    symbols()
        .iter()
        .filter_map(|(name, _)| page(name).map(|p| (format!("nbd_{name}.3.pod"), p)))
        .collect()
}

/// The C types of a declaration list, names dropped and spaces normalised:
/// `["struct nbd_handle *", "uint64_t"]`.
fn types_only(ret: &str, params: &[String]) -> Vec<String> {
    let norm = |s: &str| s.split_whitespace().collect::<Vec<_>>().join(" ");
    let mut v = vec![norm(ret)];
    for p in params {
        let cut = p.rfind(['*', ' ']).map_or(0, |i| i + 1);
        v.push(norm(&p[..cut]).replace(" *", "*"));
    }
    v
}

/// The C types of a call's prototype from the table, if it has a row.
pub fn table_types(name: &str) -> Option<Vec<String>> {
    let (ret, params) = table_prototype(implemented(name)?);
    Some(types_only(&ret, &params))
}

/// The C types of a written one-line prototype.
pub fn synopsis_types(text: &str, name: &str) -> Option<Vec<String>> {
    let (ret, params) = parse_prototype(text, name)?;
    Some(types_only(&ret, &params))
}

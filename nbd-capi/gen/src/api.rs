//! The libnbd C API as one table: the single source of truth for the
//! exported wrappers (`nbd-capi/src/generated/exports.rs`), the linker
//! version script (`nbd-capi/libnbd.syms`) and, through cbindgen, the
//! header (`include/libnbd.h`).
//!
//! Each call is described once: its arguments by meaning, its return kind,
//! the ELF version node it was introduced in (libnbd 1.14.2's), the handle
//! states it may run in, and where its hand-written body lives. Calls not
//! yet implemented are listed with their version node only, so the table
//! covers the whole reference symbol list and the version script has every
//! node, but they are neither exported nor declared.
//!
//! This file is plain data with no dependencies: the generator binary and
//! nbd-capi's drift test both include it with `#[path]`.
#![allow(dead_code)]

/// An argument, by meaning. The C types follow libnbd's header.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// `bool NAME`.
    Bool(&'static str),
    /// `uint32_t NAME`.
    UInt32(&'static str),
    /// `uint64_t NAME`.
    UInt64(&'static str),
    /// `uint32_t NAME`: a bit set of the named set. The wrapper refuses bits
    /// the call does not accept (EINVAL), as libnbd's generated wrappers do.
    Flags(&'static str, FlagSet),
    /// `int NAME`: one of the named set's values, anything else is EINVAL.
    Enum(&'static str, EnumSet),
    /// `const char *NAME`, never NULL (EFAULT); the body gets `&CStr`.
    String(&'static str),
    /// `char **NAME`: a NULL-terminated list of strings, never NULL
    /// (EFAULT); the body gets `Vec<&CStr>`.
    StringList(&'static str),
    /// `const void *BUF, size_t COUNT`: the body gets `&[u8]`.
    BytesIn(&'static str, &'static str),
    /// `void *BUF, size_t COUNT`: the body gets `&mut [u8]`.
    BytesOut(&'static str, &'static str),
    /// `int NAME`.
    Int(&'static str),
    /// `size_t NAME`.
    SizeT(&'static str),
    /// `uintptr_t NAME`.
    UIntPtr(&'static str),
    /// `const struct sockaddr *ADDR, socklen_t LEN`, ADDR never NULL
    /// (EFAULT); the body gets the raw pointer and the length.
    SockAddr(&'static str, &'static str),
    /// A callback struct passed by value (`nbd_completion_callback NAME`
    /// ...). The wrapper takes it over before anything else, so its free
    /// function runs exactly once even when the call fails.
    Closure(&'static str, Callback),
}

/// The flag sets of libnbd.h, with what a call accepts of each.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FlagSet {
    /// LIBNBD_CMD_FLAG_*: the flags this command accepts (libnbd's
    /// `OFlags (_, cmd_flags, Some [...])`). Others are EINVAL when
    /// LIBNBD_STRICT_FLAGS is on (the default), and always above 16 bits.
    Cmd(&'static [CmdFlag]),
    /// LIBNBD_HANDSHAKE_FLAG_*, all of them; others are always EINVAL.
    Handshake,
    /// LIBNBD_STRICT_*.
    Strict,
    /// LIBNBD_ALLOW_TRANSPORT_*.
    AllowTransport,
    /// LIBNBD_SHUTDOWN_*.
    Shutdown,
}

/// One LIBNBD_CMD_FLAG_*.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CmdFlag {
    Fua,
    NoHole,
    Df,
    ReqOne,
    FastZero,
    /// LIBNBD_CMD_FLAG_PAYLOAD_LEN (libnbd 1.18).
    PayloadLen,
}

/// The enums of libnbd.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EnumSet {
    /// LIBNBD_TLS_DISABLE, _ALLOW, _REQUIRE.
    Tls,
    /// LIBNBD_SIZE_MINIMUM, _PREFERRED, _MAXIMUM (libnbd 1.14's).
    Size,
}

/// The callback structs of libnbd.h.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Callback {
    Completion,
    Chunk,
    Extent,
    /// nbd_extent64_callback (libnbd 1.18).
    Extent64,
    List,
    Context,
    Debug,
}

/// What a call returns, and so what it returns on error.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ret {
    /// `void`; no error.
    Void,
    /// `int`: 0 or -1.
    Err,
    /// `int`: 0 (false), 1 (true) or -1.
    Bool,
    /// `int64_t`: a value >= 0 or -1.
    Int64,
    /// `const char *` the library owns, NULL on error.
    StaticString,
    /// `char *` the caller frees, NULL on error.
    String,
    /// `struct nbd_handle *`, NULL on error.
    Handle,
    /// `int` that cannot fail (nbd_get_errno).
    PlainInt,
    /// `const char *` that may be NULL and cannot fail (nbd_get_error).
    PlainConstString,
    /// `int`: a value >= 0 or -1.
    Int,
    /// `unsigned` that cannot fail (nbd_aio_get_direction).
    UInt,
    /// `uint32_t` that cannot fail (bit sets: nbd_get_strict_mode).
    UInt32,
    /// `uintptr_t` that cannot fail (nbd_get_private_data).
    UIntPtr,
    /// `ssize_t`: a value >= 0 or -1.
    SSize,
    /// `uint64_t` that cannot fail (the nbd_stats_* counters).
    UInt64,
}

/// Where the handle stands, as the state checks see it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    /// Created, not yet connected: calls not allowed here fail with ENOTCONN.
    Created,
    /// Connecting or negotiating (before the export is ready).
    Connecting,
    /// Negotiating in opt mode (nbd_set_opt_mode, not in this stage).
    Negotiating,
    /// Ready or processing commands.
    Connected,
    /// Shut down cleanly.
    Closed,
    /// A fatal error happened.
    Dead,
}

/// Whether a call is exported yet.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    Implemented,
    /// Listed (it is in libnbd 1.24.4) but neither exported nor declared.
    Todo,
}

#[derive(Clone, Copy, Debug)]
pub struct Call {
    /// The C name without the `nbd_` prefix.
    pub name: &'static str,
    /// The libnbd version that introduced it: its ELF node is LIBNBD_<version>.
    pub version: &'static str,
    /// Whether the first argument is `struct nbd_handle *h`. Such a call
    /// runs under the handle lock, held once for the state and flags checks
    /// and the body together (libnbd's wrappers hold `h->lock` likewise):
    /// the body gets `h` and the held lock (`g: &mut Held`), and releases
    /// the lock only while blocked in poll(2). nbd_close, which frees the
    /// handle, is the exception: its body gets the raw pointer.
    pub handle: bool,
    pub args: &'static [Arg],
    pub ret: Ret,
    /// The states the call may run in; empty means any.
    pub states: &'static [State],
    /// Whether the call sets the thread's error context (libnbd's
    /// may_set_error): nbd_get_error and friends must not.
    pub may_set_error: bool,
    /// The module under `nbd-capi/src/calls/` with the body, which is a
    /// function of the same name as the call (without `nbd_`).
    pub module: &'static str,
    pub status: Status,
}

use Arg::*;
use Callback as Cl;
use CmdFlag as F;
use State::*;

const ANY: &[State] = &[];
const NEW: &[State] = &[Created];
/// Where libnbd answers questions about the export: after negotiation.
const INFO: &[State] = &[Negotiating, Connected, Closed];
const CONNECTED: &[State] = &[Connected];
/// Option mode, paused for the caller's next option.
const NEG: &[State] = &[Negotiating];

const fn call(
    name: &'static str,
    version: &'static str,
    args: &'static [Arg],
    ret: Ret,
    states: &'static [State],
    module: &'static str,
) -> Call {
    Call {
        name,
        version,
        handle: true,
        args,
        ret,
        states,
        may_set_error: true,
        module,
        status: Status::Implemented,
    }
}

/// A call of libnbd 1.24.4 we do not implement yet.
const fn todo(name: &'static str, version: &'static str) -> Call {
    Call {
        name,
        version,
        handle: true,
        args: &[],
        ret: Ret::Err,
        states: ANY,
        may_set_error: true,
        module: "",
        status: Status::Todo,
    }
}

const fn can(name: &'static str, version: &'static str) -> Call {
    call(name, version, &[], Ret::Bool, INFO, "info")
}

/// Every version node of libnbd 1.24.4, oldest first. Each node inherits
/// from the one before it in the version script.
pub const VERSIONS: &[&str] = &[
    "1.0", "1.2", "1.4", "1.6", "1.8", "1.12", "1.16", "1.18", "1.22", "1.24",
];

pub const CALLS: &[Call] = &[
    // Handles and errors.
    Call {
        handle: false,
        ..call("create", "1.0", &[], Ret::Handle, ANY, "handle")
    },
    Call {
        may_set_error: false,
        ..call("close", "1.0", &[], Ret::Void, ANY, "handle")
    },
    Call {
        handle: false,
        may_set_error: false,
        ..call(
            "get_error",
            "1.0",
            &[],
            Ret::PlainConstString,
            ANY,
            "handle",
        )
    },
    Call {
        handle: false,
        may_set_error: false,
        ..call("get_errno", "1.0", &[], Ret::PlainInt, ANY, "handle")
    },
    // Settings.
    call(
        "set_debug",
        "1.0",
        &[Bool("debug")],
        Ret::Err,
        ANY,
        "settings",
    ),
    call("get_debug", "1.0", &[], Ret::Bool, ANY, "settings"),
    call(
        "set_debug_callback",
        "1.0",
        &[Closure("debug_callback", Cl::Debug)],
        Ret::Err,
        ANY,
        "settings",
    ),
    call(
        "clear_debug_callback",
        "1.0",
        &[],
        Ret::Err,
        ANY,
        "settings",
    ),
    call(
        "set_handle_name",
        "1.0",
        &[String("handle_name")],
        Ret::Err,
        ANY,
        "settings",
    ),
    call("get_handle_name", "1.0", &[], Ret::String, ANY, "settings"),
    Call {
        may_set_error: false,
        ..call(
            "set_private_data",
            "1.8",
            &[UIntPtr("private_data")],
            Ret::UIntPtr,
            ANY,
            "settings",
        )
    },
    Call {
        may_set_error: false,
        ..call(
            "get_private_data",
            "1.8",
            &[],
            Ret::UIntPtr,
            ANY,
            "settings",
        )
    },
    call(
        "set_export_name",
        "1.0",
        &[String("export_name")],
        Ret::Err,
        &[Created, Negotiating],
        "settings",
    ),
    call("get_export_name", "1.0", &[], Ret::String, ANY, "settings"),
    call(
        "set_request_block_size",
        "1.12",
        &[Bool("request")],
        Ret::Err,
        &[Created, Negotiating],
        "settings",
    ),
    call(
        "get_request_block_size",
        "1.12",
        &[],
        Ret::Bool,
        ANY,
        "settings",
    ),
    call(
        "set_full_info",
        "1.4",
        &[Bool("request")],
        Ret::Err,
        &[Created, Negotiating],
        "settings",
    ),
    call("get_full_info", "1.4", &[], Ret::Bool, ANY, "settings"),
    call(
        "get_canonical_export_name",
        "1.4",
        &[],
        Ret::String,
        INFO,
        "info",
    ),
    call(
        "get_export_description",
        "1.4",
        &[],
        Ret::String,
        INFO,
        "info",
    ),
    call(
        "set_tls",
        "1.0",
        &[Enum("tls", EnumSet::Tls)],
        Ret::Err,
        NEW,
        "tls",
    ),
    call("get_tls", "1.0", &[], Ret::Int, ANY, "tls"),
    call(
        "get_tls_negotiated",
        "1.2",
        &[],
        Ret::Bool,
        &[Negotiating, Connected, Closed],
        "tls",
    ),
    call(
        "set_tls_certificates",
        "1.0",
        &[String("dir")],
        Ret::Err,
        NEW,
        "tls",
    ),
    call(
        "set_tls_verify_peer",
        "1.0",
        &[Bool("verify")],
        Ret::Err,
        NEW,
        "tls",
    ),
    call("get_tls_verify_peer", "1.0", &[], Ret::Bool, ANY, "tls"),
    call(
        "set_tls_username",
        "1.0",
        &[String("username")],
        Ret::Err,
        NEW,
        "tls",
    ),
    call("get_tls_username", "1.0", &[], Ret::String, ANY, "tls"),
    call(
        "set_tls_psk_file",
        "1.0",
        &[String("filename")],
        Ret::Err,
        NEW,
        "tls",
    ),
    call(
        "set_request_structured_replies",
        "1.2",
        &[Bool("request")],
        Ret::Err,
        NEW,
        "settings",
    ),
    call(
        "get_request_structured_replies",
        "1.2",
        &[],
        Ret::Bool,
        ANY,
        "settings",
    ),
    call(
        "get_structured_replies_negotiated",
        "1.2",
        &[],
        Ret::Bool,
        INFO,
        "info",
    ),
    call(
        "set_handshake_flags",
        "1.2",
        &[Flags("flags", FlagSet::Handshake)],
        Ret::Err,
        NEW,
        "settings",
    ),
    call(
        "get_handshake_flags",
        "1.2",
        &[],
        Ret::UInt32,
        ANY,
        "settings",
    ),
    call(
        "set_pread_initialize",
        "1.12",
        &[Bool("request")],
        Ret::Err,
        ANY,
        "settings",
    ),
    call(
        "get_pread_initialize",
        "1.12",
        &[],
        Ret::Bool,
        ANY,
        "settings",
    ),
    call(
        "set_strict_mode",
        "1.6",
        &[Flags("flags", FlagSet::Strict)],
        Ret::Err,
        ANY,
        "settings",
    ),
    call("get_strict_mode", "1.6", &[], Ret::UInt32, ANY, "settings"),
    call(
        "set_opt_mode",
        "1.4",
        &[Bool("enable")],
        Ret::Err,
        NEW,
        "settings",
    ),
    call("get_opt_mode", "1.4", &[], Ret::Bool, ANY, "settings"),
    call("opt_go", "1.4", &[], Ret::Err, NEG, "opt"),
    call("opt_abort", "1.4", &[], Ret::Err, NEG, "opt"),
    call(
        "opt_list",
        "1.4",
        &[Closure("list_callback", Cl::List)],
        Ret::Int,
        NEG,
        "opt",
    ),
    call("opt_info", "1.4", &[], Ret::Err, NEG, "opt"),
    call(
        "opt_list_meta_context",
        "1.6",
        &[Closure("context_callback", Cl::Context)],
        Ret::Int,
        NEG,
        "opt",
    ),
    call(
        "add_meta_context",
        "1.0",
        &[String("name")],
        Ret::Err,
        &[Created, Negotiating],
        "settings",
    ),
    call(
        "get_nr_meta_contexts",
        "1.6",
        &[],
        Ret::SSize,
        ANY,
        "settings",
    ),
    call(
        "get_meta_context",
        "1.6",
        &[SizeT("i")],
        Ret::String,
        ANY,
        "settings",
    ),
    call(
        "clear_meta_contexts",
        "1.6",
        &[],
        Ret::Err,
        &[Created, Negotiating],
        "settings",
    ),
    call(
        "set_uri_allow_transports",
        "1.2",
        &[Flags("mask", FlagSet::AllowTransport)],
        Ret::Err,
        NEW,
        "uri",
    ),
    call(
        "set_uri_allow_tls",
        "1.2",
        &[Enum("tls", EnumSet::Tls)],
        Ret::Err,
        NEW,
        "uri",
    ),
    call(
        "set_uri_allow_local_file",
        "1.2",
        &[Bool("allow")],
        Ret::Err,
        NEW,
        "uri",
    ),
    // Connecting.
    call(
        "connect_uri",
        "1.0",
        &[String("uri")],
        Ret::Err,
        NEW,
        "connect",
    ),
    call(
        "connect_unix",
        "1.0",
        &[String("unixsocket")],
        Ret::Err,
        NEW,
        "connect",
    ),
    call(
        "connect_vsock",
        "1.2",
        &[UInt32("cid"), UInt32("port")],
        Ret::Err,
        NEW,
        "connect",
    ),
    call(
        "connect_tcp",
        "1.0",
        &[String("hostname"), String("port")],
        Ret::Err,
        NEW,
        "connect",
    ),
    call(
        "connect_socket",
        "1.2",
        &[Int("sock")],
        Ret::Err,
        NEW,
        "connect",
    ),
    call(
        "connect_command",
        "1.0",
        &[StringList("argv")],
        Ret::Err,
        NEW,
        "connect",
    ),
    call(
        "connect_systemd_socket_activation",
        "1.2",
        &[StringList("argv")],
        Ret::Err,
        NEW,
        "connect",
    ),
    // What the server offers.
    can("is_read_only", "1.0"),
    can("can_flush", "1.0"),
    can("can_fua", "1.0"),
    can("is_rotational", "1.0"),
    can("can_trim", "1.0"),
    can("can_zero", "1.0"),
    can("can_fast_zero", "1.2"),
    can("can_df", "1.0"),
    can("can_multi_conn", "1.0"),
    can("can_cache", "1.0"),
    call(
        "can_meta_context",
        "1.0",
        &[String("metacontext")],
        Ret::Bool,
        INFO,
        "info",
    ),
    call("get_protocol", "1.2", &[], Ret::StaticString, INFO, "info"),
    call("get_size", "1.0", &[], Ret::Int64, INFO, "info"),
    call(
        "get_block_size",
        "1.4",
        &[Enum("size_type", EnumSet::Size)],
        Ret::Int64,
        INFO,
        "info",
    ),
    // Data.
    call(
        "pread",
        "1.0",
        &[
            BytesOut("buf", "count"),
            UInt64("offset"),
            Flags("flags", FlagSet::Cmd(&[])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "pread_structured",
        "1.0",
        &[
            BytesOut("buf", "count"),
            UInt64("offset"),
            Closure("chunk_callback", Cl::Chunk),
            Flags("flags", FlagSet::Cmd(&[F::Df])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "pwrite",
        "1.0",
        &[
            BytesIn("buf", "count"),
            UInt64("offset"),
            Flags("flags", FlagSet::Cmd(&[F::Fua, F::PayloadLen])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "shutdown",
        "1.0",
        &[Flags("flags", FlagSet::Shutdown)],
        Ret::Err,
        &[Connected, Closed, Dead],
        "data",
    ),
    call(
        "flush",
        "1.0",
        &[Flags("flags", FlagSet::Cmd(&[]))],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "trim",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Flags("flags", FlagSet::Cmd(&[F::Fua])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "cache",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Flags("flags", FlagSet::Cmd(&[])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "zero",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Flags("flags", FlagSet::Cmd(&[F::Fua, F::NoHole, F::FastZero])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "block_status",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("extent_callback", Cl::Extent),
            Flags("flags", FlagSet::Cmd(&[F::ReqOne])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call("poll", "1.0", &[Int("timeout")], Ret::Int, ANY, "aio"),
    // AIO.
    call(
        "aio_connect",
        "1.0",
        &[SockAddr("addr", "addrlen")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_uri",
        "1.0",
        &[String("uri")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_unix",
        "1.0",
        &[String("unixsocket")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_vsock",
        "1.2",
        &[UInt32("cid"), UInt32("port")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_tcp",
        "1.0",
        &[String("hostname"), String("port")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_socket",
        "1.2",
        &[Int("sock")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_command",
        "1.0",
        &[StringList("argv")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_connect_systemd_socket_activation",
        "1.2",
        &[StringList("argv")],
        Ret::Err,
        NEW,
        "aio_connect",
    ),
    call(
        "aio_opt_go",
        "1.4",
        &[Closure("completion_callback", Cl::Completion)],
        Ret::Err,
        NEG,
        "opt",
    ),
    call("aio_opt_abort", "1.4", &[], Ret::Err, NEG, "opt"),
    call(
        "aio_opt_list",
        "1.4",
        &[
            Closure("list_callback", Cl::List),
            Closure("completion_callback", Cl::Completion),
        ],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_info",
        "1.4",
        &[Closure("completion_callback", Cl::Completion)],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_list_meta_context",
        "1.6",
        &[
            Closure("context_callback", Cl::Context),
            Closure("completion_callback", Cl::Completion),
        ],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_pread",
        "1.0",
        &[
            BytesOut("buf", "count"),
            UInt64("offset"),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_pread_structured",
        "1.0",
        &[
            BytesOut("buf", "count"),
            UInt64("offset"),
            Closure("chunk_callback", Cl::Chunk),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::Df])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_pwrite",
        "1.0",
        &[
            BytesIn("buf", "count"),
            UInt64("offset"),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::Fua, F::PayloadLen])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_disconnect",
        "1.0",
        &[Flags("flags", FlagSet::Cmd(&[]))],
        Ret::Err,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_flush",
        "1.0",
        &[
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_trim",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::Fua])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_cache",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_zero",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::Fua, F::NoHole, F::FastZero])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "aio_block_status",
        "1.0",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("extent_callback", Cl::Extent),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::ReqOne])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call("aio_get_fd", "1.0", &[], Ret::Int, ANY, "aio"),
    Call {
        may_set_error: false,
        ..call("aio_get_direction", "1.0", &[], Ret::UInt, ANY, "aio")
    },
    call("aio_notify_read", "1.0", &[], Ret::Err, ANY, "aio"),
    call("aio_notify_write", "1.0", &[], Ret::Err, ANY, "aio"),
    Call {
        may_set_error: false,
        ..call("aio_is_created", "1.0", &[], Ret::Bool, ANY, "aio")
    },
    Call {
        may_set_error: false,
        ..call("aio_is_connecting", "1.0", &[], Ret::Bool, ANY, "aio")
    },
    Call {
        may_set_error: false,
        ..call("aio_is_negotiating", "1.4", &[], Ret::Bool, ANY, "aio")
    },
    Call {
        may_set_error: false,
        ..call("aio_is_ready", "1.0", &[], Ret::Bool, ANY, "aio")
    },
    Call {
        may_set_error: false,
        ..call("aio_is_processing", "1.0", &[], Ret::Bool, ANY, "aio")
    },
    Call {
        may_set_error: false,
        ..call("aio_is_dead", "1.0", &[], Ret::Bool, ANY, "aio")
    },
    Call {
        may_set_error: false,
        ..call("aio_is_closed", "1.0", &[], Ret::Bool, ANY, "aio")
    },
    call(
        "aio_command_completed",
        "1.0",
        &[UInt64("cookie")],
        Ret::Bool,
        ANY,
        "aio",
    ),
    call(
        "aio_peek_command_completed",
        "1.0",
        &[],
        Ret::Int64,
        ANY,
        "aio",
    ),
    call(
        "aio_in_flight",
        "1.0",
        &[],
        Ret::Int,
        &[Connected, Closed, Dead],
        "aio",
    ),
    call(
        "connection_state",
        "1.0",
        &[],
        Ret::StaticString,
        ANY,
        "aio",
    ),
    // About the library.
    call(
        "get_package_name",
        "1.0",
        &[],
        Ret::StaticString,
        ANY,
        "info",
    ),
    call("get_version", "1.0", &[], Ret::StaticString, ANY, "info"),
    call(
        "kill_subprocess",
        "1.0",
        &[Int("signum")],
        Ret::Err,
        ANY,
        "connect",
    ),
    call("supports_tls", "1.0", &[], Ret::Bool, ANY, "tls"),
    call("supports_uri", "1.0", &[], Ret::Bool, ANY, "uri"),
    call(
        "get_uri",
        "1.8",
        &[],
        Ret::String,
        &[Connecting, Negotiating, Connected, Closed, Dead],
        "uri",
    ),
    // libnbd 1.16.
    call(
        "set_request_meta_context",
        "1.16",
        &[Bool("request")],
        Ret::Err,
        &[Created, Negotiating],
        "settings",
    ),
    call(
        "get_request_meta_context",
        "1.16",
        &[],
        Ret::Bool,
        ANY,
        "settings",
    ),
    call(
        "set_socket_activation_name",
        "1.16",
        &[String("socket_name")],
        Ret::Err,
        NEW,
        "settings",
    ),
    call(
        "get_socket_activation_name",
        "1.16",
        &[],
        Ret::String,
        ANY,
        "settings",
    ),
    call("opt_starttls", "1.16", &[], Ret::Bool, NEG, "opt"),
    call("opt_structured_reply", "1.16", &[], Ret::Bool, NEG, "opt"),
    call(
        "opt_set_meta_context",
        "1.16",
        &[Closure("context_callback", Cl::Context)],
        Ret::Int,
        NEG,
        "opt",
    ),
    call(
        "opt_set_meta_context_queries",
        "1.16",
        &[
            StringList("queries"),
            Closure("context_callback", Cl::Context),
        ],
        Ret::Int,
        NEG,
        "opt",
    ),
    call(
        "opt_list_meta_context_queries",
        "1.16",
        &[
            StringList("queries"),
            Closure("context_callback", Cl::Context),
        ],
        Ret::Int,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_starttls",
        "1.16",
        &[Closure("completion_callback", Cl::Completion)],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_structured_reply",
        "1.16",
        &[Closure("completion_callback", Cl::Completion)],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_set_meta_context",
        "1.16",
        &[
            Closure("context_callback", Cl::Context),
            Closure("completion_callback", Cl::Completion),
        ],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_set_meta_context_queries",
        "1.16",
        &[
            StringList("queries"),
            Closure("context_callback", Cl::Context),
            Closure("completion_callback", Cl::Completion),
        ],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "aio_opt_list_meta_context_queries",
        "1.16",
        &[
            StringList("queries"),
            Closure("context_callback", Cl::Context),
            Closure("completion_callback", Cl::Completion),
        ],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "poll2",
        "1.16",
        &[Int("fd"), Int("timeout")],
        Ret::Int,
        ANY,
        "aio",
    ),
    Call {
        may_set_error: false,
        ..call("stats_bytes_sent", "1.16", &[], Ret::UInt64, ANY, "stats")
    },
    Call {
        may_set_error: false,
        ..call("stats_chunks_sent", "1.16", &[], Ret::UInt64, ANY, "stats")
    },
    Call {
        may_set_error: false,
        ..call(
            "stats_bytes_received",
            "1.16",
            &[],
            Ret::UInt64,
            ANY,
            "stats",
        )
    },
    Call {
        may_set_error: false,
        ..call(
            "stats_chunks_received",
            "1.16",
            &[],
            Ret::UInt64,
            ANY,
            "stats",
        )
    },
    call("supports_vsock", "1.16", &[], Ret::Bool, ANY, "connect"),
    // LIBNBD_1.18: extended headers.
    call(
        "set_request_extended_headers",
        "1.18",
        &[Bool("request")],
        Ret::Err,
        NEW,
        "settings",
    ),
    call(
        "get_request_extended_headers",
        "1.18",
        &[],
        Ret::Bool,
        ANY,
        "settings",
    ),
    call(
        "get_extended_headers_negotiated",
        "1.18",
        &[],
        Ret::Bool,
        INFO,
        "info",
    ),
    can("can_block_status_payload", "1.18"),
    call("opt_extended_headers", "1.18", &[], Ret::Bool, NEG, "opt"),
    call(
        "aio_opt_extended_headers",
        "1.18",
        &[Closure("completion_callback", Cl::Completion)],
        Ret::Err,
        NEG,
        "opt",
    ),
    call(
        "block_status_64",
        "1.18",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("extent64_callback", Cl::Extent64),
            Flags("flags", FlagSet::Cmd(&[F::ReqOne])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "aio_block_status_64",
        "1.18",
        &[
            UInt64("count"),
            UInt64("offset"),
            Closure("extent64_callback", Cl::Extent64),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::ReqOne])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    call(
        "block_status_filter",
        "1.18",
        &[
            UInt64("count"),
            UInt64("offset"),
            StringList("contexts"),
            Closure("extent64_callback", Cl::Extent64),
            Flags("flags", FlagSet::Cmd(&[F::ReqOne, F::PayloadLen])),
        ],
        Ret::Err,
        CONNECTED,
        "data",
    ),
    call(
        "aio_block_status_filter",
        "1.18",
        &[
            UInt64("count"),
            UInt64("offset"),
            StringList("contexts"),
            Closure("extent64_callback", Cl::Extent64),
            Closure("completion_callback", Cl::Completion),
            Flags("flags", FlagSet::Cmd(&[F::ReqOne, F::PayloadLen])),
        ],
        Ret::Int64,
        CONNECTED,
        "aio",
    ),
    // libnbd 1.22.
    call(
        "get_subprocess_pid",
        "1.22",
        &[],
        Ret::Int64,
        ANY,
        "connect",
    ),
    call(
        "set_tls_hostname",
        "1.22",
        &[String("hostname")],
        Ret::Err,
        NEW,
        "tls",
    ),
    call("get_tls_hostname", "1.22", &[], Ret::String, ANY, "tls"),
    call("is_uri", "1.22", &[String("uri")], Ret::Bool, ANY, "uri"),
    // libnbd 1.24.
    call(
        "set_tls_priority",
        "1.24",
        &[String("priority")],
        Ret::Err,
        NEW,
        "tls",
    ),
    call("get_tls_priority", "1.24", &[], Ret::String, ANY, "tls"),
    call(
        "set_uri_allow_tls_priority",
        "1.24",
        &[Bool("allow")],
        Ret::Err,
        NEW,
        "uri",
    ),
    call(
        "get_version_extra",
        "1.24",
        &[],
        Ret::StaticString,
        ANY,
        "info",
    ),
    Call {
        may_set_error: false,
        ..call("get_handle_size", "1.24", &[], Ret::SSize, ANY, "info")
    },
];

/// The table checks itself: names unique, versions known, implemented calls
/// have a body module. Returns the problems found.
pub fn check() -> Vec<std::string::String> {
    let mut problems = Vec::new();
    for (i, c) in CALLS.iter().enumerate() {
        if CALLS[..i].iter().any(|d| d.name == c.name) {
            problems.push(format!("nbd_{}: listed twice", c.name));
        }
        if !VERSIONS.contains(&c.version) {
            problems.push(format!("nbd_{}: unknown version {}", c.name, c.version));
        }
        if c.status == Status::Implemented && c.module.is_empty() {
            problems.push(format!("nbd_{}: implemented but has no module", c.name));
        }
        if !c.handle && !c.args.is_empty() {
            problems.push(format!("nbd_{}: arguments without a handle", c.name));
        }
        for a in c.args {
            if let Arg::Flags(n, FlagSet::Cmd(ok)) = a {
                if ok.iter().enumerate().any(|(i, f)| ok[..i].contains(f)) {
                    problems.push(format!("nbd_{}: {n}: a command flag listed twice", c.name));
                }
            }
        }
    }
    problems
}

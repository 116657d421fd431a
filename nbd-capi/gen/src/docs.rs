//! What each libnbd C call does, in our own words: the prose of the
//! nbd_NAME(3) manual pages. The facts a page also shows (prototype, flags,
//! states, version) come from the API table in `api.rs`; `render_man.rs`
//! puts the two together.
//!
//! One entry per call of libnbd 1.24 (`libnbd-1.24-symbols.tsv`), keyed by
//! the name without `nbd_`. The text is POD: C<code>, L<nbd_x(3)>,
//! I<emphasis>; paragraphs are separated by a blank line and a line that
//! starts with a space is a verbatim (code) line. `synopsis` is the one-line
//! C prototype, used only while the table has no implemented row for the
//! call. nbd-capi's `man_pages` test checks that every table call has an
//! entry, every entry is a libnbd 1.24 call, and no text is empty.
#![allow(dead_code)]

#[derive(Clone, Copy, Debug)]
pub struct Doc {
    /// The NAME line: what the call does, lower case, no full stop.
    pub summary: &'static str,
    /// What the call does and what its arguments mean.
    pub description: &'static str,
    /// Notes on the return value and errors beyond what its type says.
    pub returns: &'static str,
    /// A C example, flush left (the page indents it).
    pub example: Option<&'static str>,
    /// The C prototype, for a call the table does not describe yet.
    pub synopsis: Option<&'static str>,
}

const fn doc(summary: &'static str, description: &'static str) -> Doc {
    Doc {
        summary,
        description,
        returns: "",
        example: None,
        synopsis: None,
    }
}

impl Doc {
    const fn returns(self, returns: &'static str) -> Doc {
        Doc { returns, ..self }
    }
    const fn example(self, example: &'static str) -> Doc {
        Doc {
            example: Some(example),
            ..self
        }
    }
    const fn synopsis(self, synopsis: &'static str) -> Doc {
        Doc {
            synopsis: Some(synopsis),
            ..self
        }
    }
}

pub const DOCS: &[(&str, Doc)] = &[
    // ------------------------------------------------------------ handles
    (
        "create",
        doc(
            "create a libnbd handle",
            "Allocates a new handle, not yet connected to any server. Every \
             other call of the library works on a handle, and a handle serves \
             one connection to one NBD server: to talk to several servers, or \
             to open several connections to one, create several handles.\n\n\
             The new handle has default settings: no TLS, the empty export \
             name, structured replies requested, no meta context, and \
             debugging on only when C<LIBNBD_DEBUG=1> is in the environment. Change them with the C<nbd_set_*> calls, then \
             connect with one of the C<nbd_connect_*> calls.\n\n\
             Free the handle with L<nbd_close(3)> when done.",
        )
        .returns("When the call fails (out of memory), L<nbd_get_error(3)> says why.")
        .example(
            r#"struct nbd_handle *nbd = nbd_create ();
if (nbd == NULL) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}
/* ... connect and use the handle ... */
nbd_close (nbd);"#,
        ),
    ),
    (
        "close",
        doc(
            "close a libnbd handle",
            "Closes the connection of the handle C<h>, if it has one, and frees \
             the handle and everything it holds. Commands still in flight are \
             abandoned: their completion callbacks are not called, but the \
             C<free> functions of all callbacks the handle still holds run \
             before this call returns. If the handle started a server with \
             L<nbd_connect_command(3)> or \
             L<nbd_connect_systemd_socket_activation(3)>, that process is \
             reaped.\n\n\
             To flush outstanding writes and disconnect cleanly first, call \
             L<nbd_shutdown(3)>. Passing NULL is allowed and does nothing. The \
             handle must not be used, by any thread, after this call.",
        ),
    ),
    (
        "get_error",
        doc(
            "the error message of the last failed call in this thread",
            "Returns the message describing the most recent failure of a libnbd \
             call made by the calling thread. The message names the call that \
             failed. Errors are kept per thread, so a failure in one thread \
             never overwrites the message another thread is about to read.\n\n\
             The string belongs to the library. It stays valid until another \
             libnbd call fails in the same thread; libnbd itself promises only \
             until the thread's next libnbd call, so portable programs copy it \
             at once if they keep it.",
        )
        .returns("It returns NULL when no libnbd call has failed in this thread yet.")
        .example(
            r#"if (nbd_flush (nbd, 0) == -1) {
  fprintf (stderr, "flush failed: %s (errno %d)\n",
           nbd_get_error (), nbd_get_errno ());
  exit (EXIT_FAILURE);
}"#,
        )
    ),
    (
        "get_errno",
        doc(
            "the errno of the last failed call in this thread",
            "Returns the C<errno> value that goes with the most recent failure \
             of a libnbd call in the calling thread, such as C<ENOTCONN>, \
             C<EINVAL> or the errno the server sent for a failed command. Like \
             L<nbd_get_error(3)> it is kept per thread.",
        )
        .returns("It returns 0 when the failure carried no errno value."),
    ),
    (
        "get_handle_size",
        doc(
            "an estimate of the memory a handle uses",
            "Returns roughly how many bytes the handle C<h> has allocated, \
             counting the handle itself and the buffers and settings it holds. \
             Language bindings with a garbage collector use it to tell the \
             collector how much a handle weighs.",
        )
        .synopsis("ssize_t nbd_get_handle_size (struct nbd_handle *h);"),
    ),
    // ------------------------------------------------------------ debugging
    (
        "set_debug",
        doc(
            "turn debug messages on or off",
            "When C<debug> is true the handle emits debug messages: every call \
             made on it with its arguments and result, the state transitions \
             of the connection and the protocol traffic. They go to the \
             callback set by L<nbd_set_debug_callback(3)>, or to standard error \
             when none is set, each prefixed with the handle's name (see \
             L<nbd_set_handle_name(3)>).\n\n\
             A new handle starts with debugging on exactly when the environment \
             variable C<LIBNBD_DEBUG> is C<1>.",
        ),
    ),
    (
        "get_debug",
        doc(
            "whether debug messages are on",
            "Returns the debug flag of the handle, as set by \
             L<nbd_set_debug(3)> or by C<LIBNBD_DEBUG=1> when the handle was \
             created.",
        ),
    ),
    (
        "set_debug_callback",
        doc(
            "send debug messages to a function",
            "Makes the handle pass its debug messages to \
             C<debug_callback.callback> instead of printing them on standard \
             error. The function gets C<user_data>, the name of the libnbd call \
             that produced the message (C<context>) and the message \
             (C<msg>). Messages are produced only while debugging is on (see \
             L<nbd_set_debug(3)>).\n\n\
             The function is called with the handle locked: it must not call \
             libnbd on the same handle. Setting a new callback replaces (and \
             frees) the previous one.",
        ),
    ),
    (
        "clear_debug_callback",
        doc(
            "stop sending debug messages to a function",
            "Removes the debug callback set by L<nbd_set_debug_callback(3)>, \
             calling its C<free> function, so that debug messages go to \
             standard error again. Without a callback set this does nothing.",
        ),
    ),
    (
        "set_handle_name",
        doc(
            "name the handle in debug messages",
            "Sets the name that prefixes the handle's debug messages to \
             C<handle_name> (the library keeps a copy). Without it each handle \
             gets a generated name, C<nbd1>, C<nbd2> and so on, unique within \
             the process; a meaningful name helps when a program uses many \
             handles.",
        ),
    ),
    (
        "get_handle_name",
        doc(
            "the handle's name in debug messages",
            "Returns the name set with L<nbd_set_handle_name(3)>, or the \
             generated one (C<nbd1>, ...) when none was set.",
        ),
    ),
    (
        "set_private_data",
        doc(
            "attach a value of the caller's to the handle",
            "Stores C<private_data> in the handle, where \
             L<nbd_get_private_data(3)> finds it again. The library never looks \
             at the value; it is there for the program, for instance to find \
             its own state from a handle. A new handle holds 0.",
        )
        .returns("It returns the value stored before this call."),
    ),
    (
        "get_private_data",
        doc(
            "the value of the caller's attached to the handle",
            "Returns the value last stored with L<nbd_set_private_data(3)>, or 0 \
             if none was.",
        ),
    ),
    // ------------------------------------------------------------ export and negotiation settings
    (
        "set_export_name",
        doc(
            "choose the export to connect to",
            "Sets the name of the export the handle asks the server for, \
             C<export_name> (at most 4096 bytes, UTF-8). A server may offer \
             several exports, or insist on a name; the default is the empty \
             string, which servers take as their default export. The oldstyle \
             protocol has no export names and ignores it.\n\n\
             In option mode (L<nbd_set_opt_mode(3)>) the name may be changed \
             between options, to ask about or select another export. \
             L<nbd_connect_uri(3)> sets the name from the URI's path.",
        ),
    ),
    (
        "get_export_name",
        doc(
            "the export name the handle asks for",
            "Returns the export name the handle will request (or requested), \
             as set by L<nbd_set_export_name(3)> or taken from a URI.",
        ),
    ),
    (
        "set_request_block_size",
        doc(
            "whether to ask the server for its block size constraints",
            "When C<request> is true (the default), the handle tells the server \
             during negotiation that it will honour the block size constraints \
             the server advertises (the C<NBD_INFO_BLOCK_SIZE> request). Some \
             servers refuse to serve clients that do not say so. Set it to \
             false only to test how a server behaves without it.",
        ),
    ),
    (
        "get_request_block_size",
        doc(
            "whether the handle asks for block size constraints",
            "Returns the flag set by L<nbd_set_request_block_size(3)>.",
        ),
    ),
    (
        "set_full_info",
        doc(
            "whether to ask the server for every piece of export information",
            "When C<request> is true, the handle asks the server during \
             negotiation for the export's canonical name and description as \
             well, which L<nbd_get_canonical_export_name(3)> and \
             L<nbd_get_export_description(3)> then return. It is false by \
             default: most programs do not need the extra information.",
        ),
    ),
    (
        "get_full_info",
        doc(
            "whether the handle asks for every piece of export information",
            "Returns the flag set by L<nbd_set_full_info(3)>.",
        ),
    ),
    (
        "get_canonical_export_name",
        doc(
            "the export's name as the server reports it",
            "Returns the name the server gave the export during negotiation. It \
             may differ from the name requested, for example when the empty \
             name selected the server's default export. The server reports it \
             only when asked, so call L<nbd_set_full_info(3)> with true before \
             connecting.",
        )
        .returns("It fails with C<ENOTSUP> when the server did not report a name."),
    ),
    (
        "get_export_description",
        doc(
            "the export's description as the server reports it",
            "Returns the human readable description the server gave the export \
             during negotiation. Servers send one only if they have one and, \
             usually, only when L<nbd_set_full_info(3)> asked for it.",
        )
        .returns("It fails with C<ENOTSUP> when the server sent no description."),
    ),
    (
        "set_request_structured_replies",
        doc(
            "whether to negotiate structured replies",
            "When C<request> is true (the default) the handle asks the server \
             for structured replies during negotiation. They are needed for \
             L<nbd_block_status(3)>, for sparse reads \
             (L<nbd_pread_structured(3)>) and for L<nbd_can_df(3)>. Turning \
             this off is mainly useful to test servers.",
        ),
    ),
    (
        "get_request_structured_replies",
        doc(
            "whether the handle asks for structured replies",
            "Returns the flag set by L<nbd_set_request_structured_replies(3)>. \
             To learn whether the server agreed, use \
             L<nbd_get_structured_replies_negotiated(3)>.",
        ),
    ),
    (
        "get_structured_replies_negotiated",
        doc(
            "whether structured replies are in use",
            "Returns true when the server agreed to send structured replies on \
             this connection, during the handshake or through \
             L<nbd_opt_structured_reply(3)>.",
        ),
    ),
    (
        "set_handshake_flags",
        doc(
            "choose the handshake flags the client may use",
            "Limits which of the newstyle handshake's flags the client uses \
             when the server offers them. By default both are allowed. \
             Clearing them lets a program test a server's handling of older \
             clients; without C<LIBNBD_HANDSHAKE_FLAG_FIXED_NEWSTYLE> the \
             client cannot send options such as TLS or structured replies.",
        ),
    ),
    (
        "get_handshake_flags",
        doc(
            "the handshake flags the client may use",
            "Returns the flags set by L<nbd_set_handshake_flags(3)>. After \
             connecting they are narrowed to the ones the server also offered.",
        ),
    ),
    (
        "set_pread_initialize",
        doc(
            "whether reads clear the buffer first",
            "When C<request> is true (the default), every read call fills its \
             buffer with zeroes before sending the command, so that a program \
             that ignores a failed read never sees the old contents of its \
             memory. Programs that always check for errors may turn it off to \
             save the time the clearing costs on large buffers.",
        ),
    ),
    (
        "get_pread_initialize",
        doc(
            "whether reads clear the buffer first",
            "Returns the flag set by L<nbd_set_pread_initialize(3)>.",
        ),
    ),
    (
        "set_strict_mode",
        doc(
            "choose which client-side checks are made before sending",
            "Sets which requests the library refuses itself (with C<EINVAL> or \
             C<ENOTSUP>) before sending them, rather than letting the server \
             judge them. The default is all of them. Turning \
             checks off is useful for testing how a server copes with bad \
             requests; regular programs leave the default. Besides the \
             checks of libnbd 1.14, C<LIBNBD_STRICT_PAYLOAD> refuses with \
             C<ERANGE> a write larger than C<LIBNBD_SIZE_PAYLOAD> of \
             L<nbd_get_block_size(3)>, and C<LIBNBD_STRICT_AUTO_FLAG> puts \
             C<LIBNBD_CMD_FLAG_PAYLOAD_LEN> on the wire exactly where the \
             negotiated headers need it (writes under extended headers, \
             filtered block status) whatever the caller passed; with it off \
             the caller's flag is sent as given.",
        ),
    ),
    (
        "get_strict_mode",
        doc(
            "the client-side checks made before sending",
            "Returns the flags set by L<nbd_set_strict_mode(3)>.",
        ),
    ),
    (
        "set_opt_mode",
        doc(
            "stop after the handshake to send options by hand",
            "When C<enable> is true, connecting stops in the negotiating state \
             after the server's greeting, instead of going straight to the \
             export. The program may then send options one at a time: list the \
             exports (L<nbd_opt_list(3)>), ask about one \
             (L<nbd_opt_info(3)>), list meta contexts \
             (L<nbd_opt_list_meta_context(3)>), and finally select an export \
             with L<nbd_opt_go(3)> or give up with L<nbd_opt_abort(3)>.\n\n\
             Option mode needs the fixed newstyle protocol; with an oldstyle \
             server the connection goes straight to the ready state.",
        ),
    ),
    (
        "get_opt_mode",
        doc(
            "whether connecting stops for options",
            "Returns the flag set by L<nbd_set_opt_mode(3)>.",
        ),
    ),
    // ------------------------------------------------------------ TLS
    (
        "set_tls",
        doc(
            "choose whether the connection uses TLS",
            "Sets whether the handle encrypts and authenticates its connection \
             with TLS. C<tls> is one of:\n\n\
             =over 4\n\n\
             =item C<LIBNBD_TLS_DISABLE>\n\n\
             Never use TLS. This is the default, except after \
             L<nbd_connect_uri(3)> with an C<nbds:> URI.\n\n\
             =item C<LIBNBD_TLS_ALLOW>\n\n\
             Use TLS when the server offers it, and carry on in plain text \
             when it does not. This protects against nobody who can tamper \
             with the connection; use it only when plain text is acceptable. \
             Whether TLS was used is told by L<nbd_get_tls_negotiated(3)>.\n\n\
             =item C<LIBNBD_TLS_REQUIRE>\n\n\
             Use TLS or fail to connect.\n\n\
             =back\n\n\
             Credentials come from a certificates directory \
             (L<nbd_set_tls_certificates(3)>) or from a pre-shared keys file \
             (L<nbd_set_tls_psk_file(3)>). A level above C<LIBNBD_TLS_DISABLE> \
             fails when the library was built without TLS support (see \
             L<nbd_supports_tls(3)>).",
        )
        .example(
            r#"if (nbd_set_tls (nbd, LIBNBD_TLS_REQUIRE) == -1 ||
    nbd_set_tls_psk_file (nbd, "/etc/nbd/keys.psk") == -1 ||
    nbd_set_tls_username (nbd, "alice") == -1 ||
    nbd_connect_tcp (nbd, "server.example.com", "10809") == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}"#,
        )
    ),
    (
        "get_tls",
        doc(
            "the TLS setting of the handle",
            "Returns the TLS level set by L<nbd_set_tls(3)> (or by an C<nbds:> \
             URI): C<LIBNBD_TLS_DISABLE>, C<LIBNBD_TLS_ALLOW> or \
             C<LIBNBD_TLS_REQUIRE>. It says what was asked for, not what \
             happened; see L<nbd_get_tls_negotiated(3)> for that.",
        ),
    ),
    (
        "get_tls_negotiated",
        doc(
            "whether the connection uses TLS",
            "Returns true when the handshake with the server switched the \
             connection to TLS. It matters after asking for \
             C<LIBNBD_TLS_ALLOW>, where the connection may have gone on in \
             plain text; with C<LIBNBD_TLS_REQUIRE> it is always true once \
             connected, with C<LIBNBD_TLS_DISABLE> always false.",
        ),
    ),
    (
        "set_tls_certificates",
        doc(
            "choose the directory of TLS certificates",
            "Sets the directory C<dir> holding the X.509 files used for TLS: \
             the certificate authority C<ca-cert.pem>, and for a client that \
             authenticates with a certificate C<client-cert.pem> and \
             C<client-key.pem> (optionally C<ca-crl.pem>). Without it the \
             library looks in C</etc/pki/libnbd> when run as root, else in \
             C<$HOME/.pki/libnbd> then C<$HOME/.config/pki/libnbd>, and \
             trusts the system's certificate authorities when none \
             exists.\n\n\
             It has no effect unless TLS is enabled with L<nbd_set_tls(3)>.",
        ),
    ),
    (
        "set_tls_verify_peer",
        doc(
            "choose whether to verify the server's certificate",
            "When C<verify> is true (the default) and TLS uses certificates, \
             the handle checks that the server's certificate is signed by a \
             trusted authority and names the host connected to (see \
             L<nbd_set_tls_hostname(3)>). Turning it off makes the connection \
             encrypted but unauthenticated, open to a man in the middle.",
        ),
    ),
    (
        "get_tls_verify_peer",
        doc(
            "whether the server's certificate is verified",
            "Returns the flag set by L<nbd_set_tls_verify_peer(3)>.",
        ),
    ),
    (
        "set_tls_username",
        doc(
            "choose the user name for TLS pre-shared keys",
            "Sets the name under which the client looks up its key in the \
             pre-shared keys file (see L<nbd_set_tls_psk_file(3)>) and \
             presents itself to the server. Without it the name of the local \
             user running the program is used.",
        ),
    ),
    (
        "get_tls_username",
        doc(
            "the user name for TLS pre-shared keys",
            "Returns the name set with L<nbd_set_tls_username(3)>, or the local \
             user's login name when none was set.",
        ),
    ),
    (
        "set_tls_psk_file",
        doc(
            "use TLS pre-shared keys from a file",
            "Makes TLS authenticate with a pre-shared key instead of \
             certificates. C<filename> names a file of C<username:key> lines \
             (keys in hexadecimal) in the format of GnuTLS's L<psktool(1)>; \
             the line of the user set by L<nbd_set_tls_username(3)> is used. \
             The server must know the same key.\n\n\
             It has no effect unless TLS is enabled with L<nbd_set_tls(3)>.",
        ),
    ),
    (
        "set_tls_hostname",
        doc(
            "choose the host name the server's certificate must name",
            "Sets the name checked against the server's certificate when the \
             handle verifies it (L<nbd_set_tls_verify_peer(3)>). By default it \
             is the host name given to L<nbd_connect_tcp(3)> or found in the \
             URI; set it when connecting some other way, such as over a socket \
             passed to L<nbd_connect_socket(3)>, or through a tunnel whose \
             local name differs from the server's.",
        )
        .synopsis("int nbd_set_tls_hostname (struct nbd_handle *h, const char *hostname);"),
    ),
    (
        "get_tls_hostname",
        doc(
            "the host name the server's certificate must name",
            "Returns the name set with L<nbd_set_tls_hostname(3)>, or else the \
             host name the handle connected to.",
        )
        .synopsis("char *nbd_get_tls_hostname (struct nbd_handle *h);"),
    ),
    (
        "set_tls_priority",
        doc(
            "choose the TLS priority string",
            "Sets the GnuTLS priority string, C<priority>, that decides which \
             protocol versions, ciphers, key exchanges and MACs TLS may use, \
             and in which order (see \"Priority strings\" in the GnuTLS \
             manual). The default, chosen when the library is built, is \
             normally C<NORMAL>.\n\n\
             Change it only with reason: a priority string can weaken TLS, and \
             may name local configuration files, so it must not come from an \
             untrusted source. It has no effect unless TLS is enabled with \
             L<nbd_set_tls(3)>.",
        )
        .synopsis("int nbd_set_tls_priority (struct nbd_handle *h, const char *priority);"),
    ),
    (
        "get_tls_priority",
        doc(
            "the TLS priority string",
            "Returns the priority string set with L<nbd_set_tls_priority(3)>, \
             or the default built into the library.",
        )
        .synopsis("char *nbd_get_tls_priority (struct nbd_handle *h);"),
    ),
    (
        "supports_tls",
        doc(
            "whether the library was built with TLS support",
            "Returns true when this libnbd can use TLS (it was built with \
             GnuTLS). Without it L<nbd_set_tls(3)> refuses any level but \
             C<LIBNBD_TLS_DISABLE> and C<nbds:> URIs fail.",
        ),
    ),
    // ------------------------------------------------------------ option mode
    (
        "opt_go",
        doc(
            "end option mode and select the export",
            "In option mode (L<nbd_set_opt_mode(3)>), asks the server to serve \
             the export named by L<nbd_set_export_name(3)>, with the meta \
             contexts added by L<nbd_add_meta_context(3)>. On success the \
             handle leaves negotiation and is ready for data commands; the \
             export's size and flags are then known.\n\n\
             If the server refuses (the export does not exist, say), the call \
             fails but the handle stays in option mode, so the program may try \
             another name or give up with L<nbd_opt_abort(3)>.",
        )
        .example(
            r#"nbd_set_opt_mode (nbd, true);
if (nbd_connect_uri (nbd, "nbd://localhost") == -1 ||
    nbd_set_export_name (nbd, "disk2") == -1 ||
    nbd_opt_go (nbd) == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}"#,
        ),
    ),
    (
        "opt_abort",
        doc(
            "end option mode without selecting an export",
            "In option mode, tells the server the client is leaving \
             (C<NBD_OPT_ABORT>) and closes the connection. The handle is then \
             closed and can only be freed with L<nbd_close(3)>. Use it after \
             listing exports when no data is needed.",
        ),
    ),
    (
        "opt_list",
        doc(
            "list the exports the server offers",
            "In option mode, asks the server for its list of exports \
             (C<NBD_OPT_LIST>) and calls C<list_callback.callback> once for \
             each, with the export's name and its description (the empty \
             string when the server gives none). The list is only what the \
             server chooses to advertise: some servers list nothing, or \
             refuse.\n\n\
             The handle stays in option mode afterwards.",
        )
        .returns(
            "On success the number is how many exports the server listed. If \
             the server refuses the option the call fails.",
        )
        .example(
            r#"static int
print_export (void *user_data, const char *name, const char *description)
{
  printf ("%s\t%s\n", name, description);
  return 0;
}

/* ... after nbd_set_opt_mode (nbd, true) and connecting: */
nbd_list_callback cb = { .callback = print_export };
if (nbd_opt_list (nbd, cb) == -1)
  fprintf (stderr, "%s\n", nbd_get_error ());
nbd_opt_abort (nbd);"#,
        ),
    ),
    (
        "opt_info",
        doc(
            "ask about an export without selecting it",
            "In option mode, asks the server about the export named by \
             L<nbd_set_export_name(3)> (C<NBD_OPT_INFO>). On success the \
             export's size, flags and block sizes can be read with \
             L<nbd_get_size(3)>, L<nbd_is_read_only(3)> and the other \
             information calls, and L<nbd_can_meta_context(3)> tells which \
             added meta contexts the server would give. The handle stays in \
             option mode, so several exports can be examined before choosing \
             one with L<nbd_opt_go(3)>.",
        )
        .returns(
            "If the server refuses (for example the export does not exist), \
             the call fails and the handle stays in option mode.",
        ),
    ),
    (
        "opt_list_meta_context",
        doc(
            "list the meta contexts the server offers for the export",
            "In option mode, asks the server which meta contexts it has for the \
             current export (C<NBD_OPT_LIST_META_CONTEXT>), querying the \
             names added with L<nbd_add_meta_context(3)>, or every context when \
             none was added. C<context_callback.callback> is called once per \
             context the server names. Listing does not select them: that is \
             done by L<nbd_opt_go(3)> or L<nbd_opt_set_meta_context(3)>.",
        )
        .returns("On success the number is how many contexts the server replied with."),
    ),
    (
        "opt_list_meta_context_queries",
        doc(
            "list the server's meta contexts matching given queries",
            "Like L<nbd_opt_list_meta_context(3)>, but queries the names in the \
             NULL-terminated list C<queries> instead of those added to the \
             handle. An empty list asks for every context the server has. A \
             query may name a namespace, such as C<qemu:>, to list all of its \
             contexts.",
        )
        .returns("On success the number is how many contexts the server replied with.")
        .synopsis(
            "int nbd_opt_list_meta_context_queries (struct nbd_handle *h, char **queries, \
             nbd_context_callback context_callback);",
        ),
    ),
    (
        "opt_set_meta_context",
        doc(
            "select meta contexts for the export",
            "In option mode, asks the server to use the meta contexts added \
             with L<nbd_add_meta_context(3)> for the current export \
             (C<NBD_OPT_SET_META_CONTEXT>), and calls \
             C<context_callback.callback> for each one the server accepted. \
             Those are the contexts L<nbd_block_status(3)> reports once the \
             export is selected, unless the export name or the list changes \
             before L<nbd_opt_go(3)>.\n\n\
             Normally L<nbd_opt_go(3)> does this by itself; see \
             L<nbd_set_request_meta_context(3)>. Structured replies must have \
             been negotiated.",
        )
        .returns("On success the number is how many contexts the server accepted.")
        .synopsis(
            "int nbd_opt_set_meta_context (struct nbd_handle *h, \
             nbd_context_callback context_callback);",
        ),
    ),
    (
        "opt_set_meta_context_queries",
        doc(
            "select the meta contexts named in a list",
            "Like L<nbd_opt_set_meta_context(3)>, but asks for the contexts \
             named in the NULL-terminated list C<queries> instead of those \
             added to the handle.",
        )
        .returns("On success the number is how many contexts the server accepted.")
        .synopsis(
            "int nbd_opt_set_meta_context_queries (struct nbd_handle *h, char **queries, \
             nbd_context_callback context_callback);",
        ),
    ),
    (
        "opt_starttls",
        doc(
            "switch the connection to TLS in option mode",
            "In option mode, asks the server to upgrade the connection to TLS \
             (C<NBD_OPT_STARTTLS>) and performs the TLS handshake, using the \
             credentials configured on the handle. Normally connecting does \
             this by itself when L<nbd_set_tls(3)> asks for TLS; this call is \
             for programs that drive negotiation themselves, for example to \
             see what a server offers before and after TLS.",
        )
        .returns(
            "It returns true when TLS is now in use, false when the server \
             declined and the connection goes on in plain text. A failed TLS \
             handshake kills the connection.",
        )
        .synopsis("int nbd_opt_starttls (struct nbd_handle *h);"),
    ),
    (
        "opt_structured_reply",
        doc(
            "ask for structured replies in option mode",
            "In option mode, asks the server for structured replies \
             (C<NBD_OPT_STRUCTURED_REPLY>). Normally connecting does this by \
             itself unless L<nbd_set_request_structured_replies(3)> turned it \
             off. Asking again after they were negotiated does not resend the \
             option.",
        )
        .returns(
            "It returns true when structured replies are in use, false when the \
             server declined.",
        )
        .synopsis("int nbd_opt_structured_reply (struct nbd_handle *h);"),
    ),
    (
        "opt_extended_headers",
        doc(
            "ask for extended headers in option mode",
            "In option mode, asks the server for extended headers \
             (C<NBD_OPT_EXTENDED_HEADERS>): 64-bit lengths in requests and \
             replies, needed for block status replies with 64-bit extents \
             (L<nbd_block_status_64(3)>) and for filtered block status. \
             Normally connecting asks by itself, see \
             L<nbd_set_request_extended_headers(3)>. Extended headers imply \
             structured replies.",
        )
        .returns(
            "It returns true when extended headers are in use, false when the \
             server declined.",
        )
        .synopsis("int nbd_opt_extended_headers (struct nbd_handle *h);"),
    ),
    (
        "set_request_extended_headers",
        doc(
            "whether to negotiate extended headers",
            "When C<request> is true (the default) the handle asks the server \
             for extended headers during negotiation, and falls back to \
             structured replies when the server does not know them. Turn it \
             off to test servers, or to compare with older clients.",
        )
        .synopsis("int nbd_set_request_extended_headers (struct nbd_handle *h, bool request);"),
    ),
    (
        "get_request_extended_headers",
        doc(
            "whether the handle asks for extended headers",
            "Returns the flag set by L<nbd_set_request_extended_headers(3)>; \
             L<nbd_get_extended_headers_negotiated(3)> tells whether the server \
             agreed.",
        )
        .synopsis("int nbd_get_request_extended_headers (struct nbd_handle *h);"),
    ),
    (
        "get_extended_headers_negotiated",
        doc(
            "whether extended headers are in use",
            "Returns true when the server agreed to extended headers on this \
             connection, during the handshake or through \
             L<nbd_opt_extended_headers(3)>.",
        )
        .synopsis("int nbd_get_extended_headers_negotiated (struct nbd_handle *h);"),
    ),
    (
        "set_request_meta_context",
        doc(
            "whether selecting an export also selects meta contexts",
            "When C<request> is true (the default), L<nbd_opt_go(3)> and \
             L<nbd_opt_info(3)> first send C<NBD_OPT_SET_META_CONTEXT> for the \
             contexts added with L<nbd_add_meta_context(3)>, as connecting \
             without option mode always does. Turn it off in option mode when \
             the program selects contexts itself with \
             L<nbd_opt_set_meta_context(3)>.",
        )
        .synopsis("int nbd_set_request_meta_context (struct nbd_handle *h, bool request);"),
    ),
    (
        "get_request_meta_context",
        doc(
            "whether selecting an export also selects meta contexts",
            "Returns the flag set by L<nbd_set_request_meta_context(3)>.",
        )
        .synopsis("int nbd_get_request_meta_context (struct nbd_handle *h);"),
    ),
    // ------------------------------------------------------------ meta contexts
    (
        "add_meta_context",
        doc(
            "ask for a meta context when connecting",
            "Adds C<name> to the meta contexts the handle asks the server for \
             during negotiation. A meta context is a kind of block status \
             information: C<base:allocation> (the constant \
             C<LIBNBD_CONTEXT_BASE_ALLOCATION>) tells holes and zeroes, \
             C<qemu:dirty-bitmap:NAME> a dirty bitmap of qemu's, and so on. \
             After connecting, L<nbd_can_meta_context(3)> tells which ones the \
             server agreed to, and L<nbd_block_status(3)> reports them.\n\n\
             Meta contexts need structured replies (see \
             L<nbd_set_request_structured_replies(3)>).",
        )
        .example(
            r#"nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION);
nbd_connect_uri (nbd, uri);
if (nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
  /* nbd_block_status will report holes and zeroes. */;"#,
        ),
    ),
    (
        "get_nr_meta_contexts",
        doc(
            "how many meta contexts the handle asks for",
            "Returns the number of meta context names added with \
             L<nbd_add_meta_context(3)> (and not cleared since). Each can be \
             read with L<nbd_get_meta_context(3)>.",
        ),
    ),
    (
        "get_meta_context",
        doc(
            "one of the meta contexts the handle asks for",
            "Returns the name of the meta context at index C<i> (from 0) of \
             the list built by L<nbd_add_meta_context(3)>.",
        )
        .returns(
            "It fails with C<EINVAL> when C<i> is not below \
             L<nbd_get_nr_meta_contexts(3)>.",
        ),
    ),
    (
        "clear_meta_contexts",
        doc(
            "forget the meta contexts the handle asks for",
            "Empties the list of meta contexts built by \
             L<nbd_add_meta_context(3)>. In option mode this lets a program \
             ask about one set of contexts, then select another.",
        ),
    ),
    (
        "can_meta_context",
        doc(
            "whether the server provides a meta context",
            "Returns true when the server agreed, during negotiation, to report \
             the meta context C<metacontext> (one added with \
             L<nbd_add_meta_context(3)>), so that L<nbd_block_status(3)> \
             returns its extents.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_block_status_payload",
        doc(
            "whether the server accepts filtered block status requests",
            "Returns true when the server advertises that a block status \
             request may carry a payload naming the meta contexts wanted, \
             which L<nbd_block_status_filter(3)> needs. Servers advertise it \
             only with extended headers.\n\n\
             The answer comes from the handshake: this call does not block.",
        )
        .synopsis("int nbd_can_block_status_payload (struct nbd_handle *h);"),
    ),
    // ------------------------------------------------------------ URIs
    (
        "set_uri_allow_transports",
        doc(
            "choose which kinds of URI may be connected to",
            "Limits the transports L<nbd_connect_uri(3)> accepts to those in \
             C<mask>; a URI of another kind fails with C<EPERM>. By default \
             all are allowed. A program that takes URIs from users may, for \
             example, allow only TCP.",
        ),
    ),
    (
        "set_uri_allow_tls",
        doc(
            "choose whether URIs may use TLS",
            "Limits which TLS levels a URI may ask for: with \
             C<LIBNBD_TLS_DISABLE>, C<nbds:> URIs are refused; with \
             C<LIBNBD_TLS_REQUIRE>, only C<nbds:> URIs are accepted; with \
             C<LIBNBD_TLS_ALLOW> (the default) both are.",
        ),
    ),
    (
        "set_uri_allow_local_file",
        doc(
            "choose whether URIs may name local files",
            "When C<allow> is true, URI query parameters that make the library \
             read a local file, such as C<tls-psk-file>, are accepted; by \
             default they are refused (C<EPERM>), because a URI from an \
             untrusted source could otherwise make the program read any \
             file.",
        ),
    ),
    (
        "set_uri_allow_tls_priority",
        doc(
            "choose whether URIs may set the TLS priority",
            "When C<allow> is true, a URI may set the TLS priority string with \
             the query parameter C<tls-priority> (see \
             L<nbd_set_tls_priority(3)>). It is refused by default, because a \
             priority string can weaken TLS or name local files.",
        )
        .synopsis("int nbd_set_uri_allow_tls_priority (struct nbd_handle *h, bool allow);"),
    ),
    (
        "supports_uri",
        doc(
            "whether the library was built with URI support",
            "Returns true when this libnbd can parse NBD URIs, so that \
             L<nbd_connect_uri(3)> and L<nbd_get_uri(3)> work.",
        ),
    ),
    (
        "is_uri",
        doc(
            "whether a string looks like an NBD URI",
            "Returns true when C<uri> has the form of an NBD URI (C<nbd://...>, \
             C<nbds+unix://...> and the other schemes L<nbd_connect_uri(3)> \
             takes), false otherwise. It only looks at the string: it connects \
             to nothing and does not check that every part of the URI is \
             valid. Programs that accept either a URI or a file name use it to \
             tell them apart.",
        )
        .synopsis("int nbd_is_uri (struct nbd_handle *h, const char *uri);"),
    ),
    (
        "get_uri",
        doc(
            "a URI for the current connection",
            "Returns an NBD URI describing how the handle connected: the \
             transport, host and port or socket path, export name and whether \
             TLS was asked for. Passing it to L<nbd_connect_uri(3)> on another \
             handle connects to the same export. Connections for which no URI \
             exists, such as L<nbd_connect_command(3)> or \
             L<nbd_connect_socket(3)>, fail with C<EINVAL>.",
        ),
    ),
    // ------------------------------------------------------------ connecting
    (
        "connect_uri",
        doc(
            "connect to the server named by a URI",
            "Connects to the NBD server described by C<uri> and completes the \
             handshake, blocking until the export is ready (or, in option \
             mode, until options may be sent). The URI also sets what it \
             names: the export name from its path, TLS from an C<nbds> \
             scheme, and TLS settings from query parameters. The forms \
             accepted are, for example:\n\n\
             \x20nbd://example.com\n\
             \x20nbd://example.com:10810/disk\n\
             \x20nbds://alice@example.com/disk?tls-psk-file=keys.psk\n\
             \x20nbd+unix:///disk?socket=/tmp/nbd.sock\n\
             \x20nbd+vsock://2:10809\n\n\
             What a URI may ask for can be limited with \
             L<nbd_set_uri_allow_transports(3)>, L<nbd_set_uri_allow_tls(3)> \
             and L<nbd_set_uri_allow_local_file(3)>. The syntax is described \
             in L<libnbd(3)/URIS>.",
        )
        .example(
            r#"struct nbd_handle *nbd = nbd_create ();
if (nbd == NULL ||
    nbd_connect_uri (nbd, "nbd+unix:///?socket=/tmp/sock") == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}
printf ("size: %" PRIi64 "\n", nbd_get_size (nbd));
nbd_close (nbd);"#,
        ),
    ),
    (
        "connect_unix",
        doc(
            "connect to a server over a Unix domain socket",
            "Connects to the NBD server listening on the Unix domain socket \
             C<unixsocket> and completes the handshake, blocking until the \
             export is ready (or, in option mode, until options may be sent).",
        ),
    ),
    (
        "connect_vsock",
        doc(
            "connect to a server over AF_VSOCK",
            "Connects to the NBD server listening on the L<vsock(7)> address \
             C<cid>:C<port> (for example the host, CID 2, as seen from a \
             virtual machine) and completes the handshake, blocking until the \
             export is ready. Not every system supports vsock; see \
             L<nbd_supports_vsock(3)>.",
        ),
    ),
    (
        "connect_tcp",
        doc(
            "connect to a server over TCP",
            "Resolves C<hostname> and C<port> (a number or a service name such \
             as C<nbd>) with L<getaddrinfo(3)>, connects to the first address \
             that answers and completes the handshake, blocking until the \
             export is ready (or, in option mode, until options may be \
             sent).",
        )
        .example(
            r#"if (nbd_connect_tcp (nbd, "server.example.com", "nbd") == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}"#,
        )
    ),
    (
        "connect_socket",
        doc(
            "talk to a server over a socket the caller opened",
            "Uses the connected socket C<sock> for the connection and completes \
             the handshake on it. The handle takes the socket over and closes \
             it when the handle is closed. This lets a program connect in ways \
             the library does not know, or hand over a socket received from \
             elsewhere.",
        ),
    ),
    (
        "connect_command",
        doc(
            "start a server and talk to it over its standard input and output",
            "Runs the command C<argv> (a NULL-terminated list; C<argv[0]> is \
             looked up in C<$PATH>) as a child process whose standard input \
             and output are a socket connected to the handle, then completes \
             the handshake. The server must serve NBD on its standard input \
             and output, as C<nbdkit -s> does. \
             The child is killed and reaped when the handle is closed.",
        )
        .example(
            r#"char *args[] = { "nbdkit", "-s", "--exit-with-parent",
                 "memory", "size=1M", NULL };
if (nbd_connect_command (nbd, args) == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}"#,
        ),
    ),
    (
        "connect_systemd_socket_activation",
        doc(
            "start a server with systemd socket activation",
            "Creates a listening Unix domain socket in a private temporary \
             directory, runs the command C<argv> (a NULL-terminated list) with \
             the socket passed as file descriptor 3 and the environment \
             variables C<LISTEN_PID> and C<LISTEN_FDS> set as systemd does, \
             then connects to it and completes the handshake. Servers that \
             support socket activation, such as nbdkit and qemu-nbd, need no \
             further arguments to find the socket. The name passed in \
             C<LISTEN_FDNAMES> can be set with \
             L<nbd_set_socket_activation_name(3)>.\n\n\
             The child is killed and reaped when the handle is closed.",
        ),
    ),
    (
        "set_socket_activation_name",
        doc(
            "name the socket passed by socket activation",
            "Sets the name given to the socket in the C<LISTEN_FDNAMES> \
             environment variable when L<nbd_connect_systemd_socket_activation(3)> \
             starts the server. By default the variable is not set. Some \
             servers use the name to tell several sockets apart.",
        )
        .synopsis(
            "int nbd_set_socket_activation_name (struct nbd_handle *h, \
             const char *socket_name);",
        ),
    ),
    (
        "get_socket_activation_name",
        doc(
            "the name of the socket passed by socket activation",
            "Returns the name set with L<nbd_set_socket_activation_name(3)>, \
             or the empty string when none is set.",
        )
        .synopsis("char *nbd_get_socket_activation_name (struct nbd_handle *h);"),
    ),
    (
        "kill_subprocess",
        doc(
            "send a signal to the server the handle started",
            "Sends signal C<signum> to the child process started by \
             L<nbd_connect_command(3)> or \
             L<nbd_connect_systemd_socket_activation(3)>; when C<signum> is 0, \
             C<SIGTERM> is sent. It does not wait for the process: \
             L<nbd_close(3)> reaps it. The call is for programs that want the \
             server stopped before closing the handle.",
        )
        .returns("It fails with C<ESRCH> when the handle started no process."),
    ),
    (
        "get_subprocess_pid",
        doc(
            "the process ID of the server the handle started",
            "Returns the PID of the child process started by \
             L<nbd_connect_command(3)> or \
             L<nbd_connect_systemd_socket_activation(3)>. It is mostly a \
             debugging aid, for instance to attach a debugger to the \
             server.",
        )
        .returns("It fails with C<ESRCH> when the handle started no process.")
        .synopsis("int64_t nbd_get_subprocess_pid (struct nbd_handle *h);"),
    ),
    (
        "supports_vsock",
        doc(
            "whether the library can connect over AF_VSOCK",
            "Returns true when this libnbd was built for a system with \
             L<vsock(7)> sockets, so that L<nbd_connect_vsock(3)> and \
             C<nbd+vsock:> URIs can work. The running kernel must also have \
             the vsock transport.",
        )
        .synopsis("int nbd_supports_vsock (struct nbd_handle *h);"),
    ),
    // ------------------------------------------------------------ the export
    (
        "is_read_only",
        doc(
            "whether the export is read-only",
            "Returns true when the server said the export may not be written: \
             writes, trims and zeroes would fail with C<EPERM>.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_flush",
        doc(
            "whether the server supports the flush command",
            "Returns true when the server accepts L<nbd_flush(3)>, which makes \
             earlier writes durable.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_fua",
        doc(
            "whether the server supports forced unit access",
            "Returns true when the server accepts the C<LIBNBD_CMD_FLAG_FUA> \
             flag on writes, trims and zeroes, making that one request durable \
             before the reply.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "is_rotational",
        doc(
            "whether the export is on rotating media",
            "Returns true when the server says the export lives on a disk with \
             seek times, so that clients may prefer sequential access. It is \
             only a hint.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_trim",
        doc(
            "whether the server supports the trim command",
            "Returns true when the server accepts L<nbd_trim(3)>, which tells \
             it a range's contents are no longer needed.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_zero",
        doc(
            "whether the server supports the write zeroes command",
            "Returns true when the server accepts L<nbd_zero(3)>, which zeroes \
             a range without sending a buffer of zeroes.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_fast_zero",
        doc(
            "whether the server supports fast zeroing",
            "Returns true when the server accepts the \
             C<LIBNBD_CMD_FLAG_FAST_ZERO> flag of L<nbd_zero(3)>, promising to \
             fail quickly rather than zero slowly.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_df",
        doc(
            "whether the server supports unfragmented reads",
            "Returns true when the server accepts the C<LIBNBD_CMD_FLAG_DF> \
             flag of L<nbd_pread_structured(3)>, sending a read's reply as a \
             single chunk. It needs structured replies.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_multi_conn",
        doc(
            "whether several connections to the export are consistent",
            "Returns true when the server promises that several connections to \
             the same export see each other's writes once a flush on any of \
             them completes. Only then may a client spread its requests over \
             several handles safely.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "can_cache",
        doc(
            "whether the server supports the cache command",
            "Returns true when the server accepts L<nbd_cache(3)>, asking it to \
             prefetch a range.\n\n\
             The answer comes from the handshake: this call does not block.",
        ),
    ),
    (
        "get_protocol",
        doc(
            "the protocol variant of the connection",
            "Returns C<\"newstyle-fixed\">, C<\"newstyle\"> or \
             C<\"oldstyle\">, the handshake the server used.",
        ),
    ),
    (
        "get_size",
        doc(
            "the size of the export",
            "Returns the size of the export in bytes, as the server announced \
             it in the handshake.\n\n\
             The answer comes from the handshake: this call does not block.",
        )
        .returns(
            "It fails with C<EOVERFLOW> for a size too large for a signed 64 bit \
             integer.",
        )
        .example(
            r#"int64_t size = nbd_get_size (nbd);

if (size == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}
printf ("%" PRIi64 " bytes\n", size);"#,
        )
    ),
    (
        "get_block_size",
        doc(
            "the block sizes the server asks clients to use",
            "Returns one of the export's block size constraints, as the server \
             announced them: with C<LIBNBD_SIZE_MINIMUM> the smallest size a \
             request should be aligned to, with C<LIBNBD_SIZE_PREFERRED> the \
             size that performs best, with C<LIBNBD_SIZE_MAXIMUM> the largest \
             payload of a read or write. The server sends them only when \
             asked, see L<nbd_set_request_block_size(3)>. \
             C<LIBNBD_SIZE_PAYLOAD> is not the server's but the client's: the \
             largest write it sends while C<LIBNBD_STRICT_PAYLOAD> is on (see \
             L<nbd_set_strict_mode(3)>), the server's maximum brought within \
             1 MiB to 64 MiB, or 64 MiB when the server announced none.",
        )
        .returns(
            "It returns 0 when the server did not announce the size \
             (never for C<LIBNBD_SIZE_PAYLOAD>).",
        ),
    ),
    // ------------------------------------------------------------ commands
    (
        "pread",
        doc(
            "read from the export",
            "Reads C<count> bytes at C<offset> of the export into C<buf>, \
             blocking until the whole read is done. The range must lie within \
             the export (see L<nbd_get_size(3)>), and C<count> be no larger \
             than the server's maximum (64 MiB at most).\n\n\
             The buffer is filled with zeroes first unless \
             L<nbd_set_pread_initialize(3)> turned that off, so that a failed \
             read leaves no stale data behind.",
        )
        .example(
            r#"char buf[512];

if (nbd_pread (nbd, buf, sizeof buf, 0, 0) == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}"#,
        ),
    ),
    (
        "pread_structured",
        doc(
            "read from the export, chunk by chunk",
            "Like L<nbd_pread(3)>, but also calls C<chunk_callback.callback> \
             for each piece of the reply as it arrives: with C<subbuf> and \
             C<count> the piece of C<buf> it covers, C<offset> its position in \
             the export, and C<status> one of C<LIBNBD_READ_DATA> (data was \
             read), C<LIBNBD_READ_HOLE> (the range reads as zeroes) or \
             C<LIBNBD_READ_ERROR> (the server failed this part, with its errno \
             in C<*error>). Without structured replies the whole read is one \
             data chunk.",
        ),
    ),
    (
        "pwrite",
        doc(
            "write to the export",
            "Writes the C<count> bytes at C<buf> to the export at C<offset>, \
             blocking until the server has replied. The range must lie within \
             the export, which must not be read-only. Without \
             C<LIBNBD_CMD_FLAG_FUA> the data may still be in the server's \
             cache when the call returns; see L<nbd_flush(3)>.",
        ),
    ),
    (
        "shutdown",
        doc(
            "disconnect from the server cleanly",
            "Sends the commands still queued, waits for their replies, then \
             tells the server the client is leaving (C<NBD_CMD_DISC>) and \
             closes the connection, so that the server can finish its work on \
             the export in an orderly way. With \
             C<LIBNBD_SHUTDOWN_ABANDON_PENDING> commands not yet sent are \
             dropped instead.\n\n\
             The handle must still be freed with L<nbd_close(3)>.",
        )
        .example(
            r#"if (nbd_shutdown (nbd, 0) == -1) {
  fprintf (stderr, "%s\n", nbd_get_error ());
  exit (EXIT_FAILURE);
}
nbd_close (nbd);"#,
        )
    ),
    (
        "flush",
        doc(
            "make earlier writes durable",
            "Asks the server to write everything it has acknowledged so far to \
             stable storage, and blocks until it has. The server must support \
             it (L<nbd_can_flush(3)>).",
        ),
    ),
    (
        "trim",
        doc(
            "discard a range of the export",
            "Tells the server that the C<count> bytes at C<offset> are no \
             longer needed, so it may free the space. What they read as \
             afterwards is unspecified until they are written again; use \
             L<nbd_zero(3)> to get zeroes. The server must support it \
             (L<nbd_can_trim(3)>).",
        ),
    ),
    (
        "cache",
        doc(
            "ask the server to prefetch a range",
            "Asks the server to load the C<count> bytes at C<offset> into its \
             cache, in advance of reads. It transfers no data. The server must \
             support it (L<nbd_can_cache(3)>).",
        ),
    ),
    (
        "zero",
        doc(
            "write zeroes to a range of the export",
            "Makes the C<count> bytes at C<offset> read as zeroes, without \
             sending them. The server may punch a hole to do so unless \
             C<LIBNBD_CMD_FLAG_NO_HOLE> is given. The server must support it \
             (L<nbd_can_zero(3)>).",
        ),
    ),
    (
        "block_status",
        doc(
            "learn the allocation state of a range",
            "Asks the server for the status of the C<count> bytes at C<offset> \
             in each meta context negotiated (see \
             L<nbd_add_meta_context(3)>), and calls \
             C<extent_callback.callback> once per context with the context's \
             name, the starting C<offset>, and C<entries>, an array of \
             C<nr_entries> 32 bit numbers taken in pairs: the length of an \
             extent, then its flags. For C<base:allocation> the flags are \
             C<LIBNBD_STATE_HOLE> (not allocated) and C<LIBNBD_STATE_ZERO> \
             (reads as zeroes).\n\n\
             The server may answer for less than C<count> bytes, or (without \
             C<LIBNBD_CMD_FLAG_REQ_ONE>) for a little more. Extents are \
             limited to 32 bit lengths; L<nbd_block_status_64(3)> has none of \
             that limit.",
        )
        .example(
            r#"static int
print_extents (void *user_data, const char *metacontext, uint64_t offset,
               uint32_t *entries, size_t nr_entries, int *error)
{
  for (size_t i = 0; i < nr_entries; i += 2) {
    printf ("%s: %" PRIu64 " +%" PRIu32 " flags %" PRIu32 "\n",
            metacontext, offset, entries[i], entries[i+1]);
    offset += entries[i];
  }
  return 0;
}

/* ... */
nbd_block_status (nbd, nbd_get_size (nbd), 0,
                  (nbd_extent_callback) { .callback = print_extents }, 0);"#,
        ),
    ),
    (
        "block_status_64",
        doc(
            "learn the allocation state of a range, with 64 bit extents",
            "Like L<nbd_block_status(3)>, but C<extent64_callback.callback> \
             receives C<entries> as an array of C<nr_entries> C<nbd_extent> \
             structs, each with a 64 bit C<length> and a 64 bit C<flags>. \
             When extended headers are in use (see \
             L<nbd_get_extended_headers_negotiated(3)>) the server may report \
             extents larger than 4 GiB in one go.",
        )
        .synopsis(
            "int nbd_block_status_64 (struct nbd_handle *h, uint64_t count, uint64_t offset, \
             nbd_extent64_callback extent64_callback, uint32_t flags);",
        ),
    ),
    (
        "block_status_filter",
        doc(
            "learn the status of a range for some meta contexts only",
            "Like L<nbd_block_status_64(3)>, but asks the server to report only \
             the meta contexts named in the NULL-terminated list C<contexts>, \
             each of which must have been negotiated. It needs extended \
             headers and a server that accepts a payload with block status \
             requests (L<nbd_can_block_status_payload(3)>).",
        )
        .synopsis(
            "int nbd_block_status_filter (struct nbd_handle *h, uint64_t count, \
             uint64_t offset, char **contexts, nbd_extent64_callback extent64_callback, \
             uint32_t flags);",
        ),
    ),
    (
        "poll",
        doc(
            "wait for the connection to make progress",
            "Waits until the connection's socket is ready in the direction \
             the handle needs (see L<nbd_aio_get_direction(3)>), or C<timeout> \
             milliseconds have passed (-1 waits for ever), then lets the \
             handle read or write what it can. It is the main loop of \
             programs that use the asynchronous calls but no event loop of \
             their own.",
        )
        .returns("It returns 1 when the handle made progress and 0 on timeout.")
        .example(
            r#"int64_t cookie = nbd_aio_pread (nbd, buf, sizeof buf, 0,
                                NBD_NULL_COMPLETION, 0);
if (cookie == -1) goto error;
while (nbd_aio_command_completed (nbd, cookie) == 0)
  if (nbd_poll (nbd, -1) == -1) goto error;"#,
        ),
    ),
    (
        "poll2",
        doc(
            "wait for the connection or another file descriptor",
            "Like L<nbd_poll(3)>, but also wakes up when the file descriptor \
             C<fd> becomes readable, for example an L<eventfd(2)> another \
             thread signals to interrupt the wait. Pass -1 as C<fd> to wait \
             for the connection only.",
        )
        .returns(
            "It returns 1 when the handle made progress or C<fd> became \
             readable, and 0 on timeout.",
        )
        .synopsis("int nbd_poll2 (struct nbd_handle *h, int fd, int timeout);"),
    ),
    // ------------------------------------------------------------ asynchronous connecting
    (
        "aio_connect",
        doc(
            "start connecting to a socket address",
            "Starts connecting to the server at the socket address C<addr> of \
             C<addrlen> bytes (IPv4, IPv6 or Unix) and returns at once; the \
             connection and handshake proceed as the program drives the handle \
             (L<nbd_poll(3)>, or L<nbd_aio_notify_read(3)> and \
             L<nbd_aio_notify_write(3)> from its own loop). It is finished \
             when L<nbd_aio_is_ready(3)> (or, in option mode, \
             L<nbd_aio_is_negotiating(3)>) is true, and has failed when \
             L<nbd_aio_is_dead(3)> is.",
        ),
    ),
    (
        "aio_connect_uri",
        doc(
            "start connecting to the server named by a URI",
            "The asynchronous form of L<nbd_connect_uri(3)>: takes the same \
             URI, applies its settings, starts connecting and returns at once. \
             Drive the handle until L<nbd_aio_is_ready(3)> is true.",
        )
        .example(
            r#"if (nbd_aio_connect_uri (nbd, "nbd://localhost") == -1)
  goto error;
while (!nbd_aio_is_ready (nbd)) {
  if (nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd))
    goto error;
  if (nbd_poll (nbd, -1) == -1)
    goto error;
}"#,
        )
    ),
    (
        "aio_connect_unix",
        doc(
            "start connecting over a Unix domain socket",
            "The asynchronous form of L<nbd_connect_unix(3)>: starts \
             connecting to C<unixsocket> and returns at once. Drive the handle \
             until L<nbd_aio_is_ready(3)> is true.",
        ),
    ),
    (
        "aio_connect_vsock",
        doc(
            "start connecting over AF_VSOCK",
            "The asynchronous form of L<nbd_connect_vsock(3)>: starts \
             connecting to C<cid>:C<port> and returns at once. Drive the \
             handle until L<nbd_aio_is_ready(3)> is true.",
        ),
    ),
    (
        "aio_connect_tcp",
        doc(
            "start connecting over TCP",
            "The asynchronous form of L<nbd_connect_tcp(3)>: looks up \
             C<hostname> and C<port>, starts connecting and returns. Drive the handle until L<nbd_aio_is_ready(3)> is true; \
             further addresses are tried when one fails.",
        ),
    ),
    (
        "aio_connect_socket",
        doc(
            "start the handshake over a socket the caller opened",
            "The asynchronous form of L<nbd_connect_socket(3)>: takes over the \
             connected socket C<sock> and returns at once. Drive the handle \
             until L<nbd_aio_is_ready(3)> is true.",
        ),
    ),
    (
        "aio_connect_command",
        doc(
            "start a server and begin the handshake with it",
            "The asynchronous form of L<nbd_connect_command(3)>: starts the \
             command C<argv> and returns at once. Drive the handle until \
             L<nbd_aio_is_ready(3)> is true.",
        ),
    ),
    (
        "aio_connect_systemd_socket_activation",
        doc(
            "start a socket-activated server and begin the handshake",
            "The asynchronous form of \
             L<nbd_connect_systemd_socket_activation(3)>: starts the command \
             C<argv> with a listening socket and returns at once. Drive the \
             handle until L<nbd_aio_is_ready(3)> is true.",
        ),
    ),
    // ------------------------------------------------------------ asynchronous options
    (
        "aio_opt_go",
        doc(
            "select the export, without waiting",
            "The asynchronous form of L<nbd_opt_go(3)>: sends the option and \
             returns. When the server has answered, \
             C<completion_callback.callback> runs with C<*error> 0 on success \
             or the errno of the refusal, and the handle is either ready or \
             back in option mode.",
        ),
    ),
    (
        "aio_opt_abort",
        doc(
            "end option mode, without waiting",
            "The asynchronous form of L<nbd_opt_abort(3)>: sends \
             C<NBD_OPT_ABORT> and returns; the handle moves on to closed as it \
             is driven.",
        ),
    ),
    (
        "aio_opt_list",
        doc(
            "list the server's exports, without waiting",
            "The asynchronous form of L<nbd_opt_list(3)>: \
             C<list_callback.callback> runs once per export as replies arrive, \
             then C<completion_callback.callback> once the list is complete \
             (with C<*error> set if the server refused).",
        ),
    ),
    (
        "aio_opt_info",
        doc(
            "ask about an export, without waiting",
            "The asynchronous form of L<nbd_opt_info(3)>: \
             C<completion_callback.callback> runs when the server has \
             answered, after which the export's information can be read.",
        ),
    ),
    (
        "aio_opt_list_meta_context",
        doc(
            "list the export's meta contexts, without waiting",
            "The asynchronous form of L<nbd_opt_list_meta_context(3)>: \
             C<context_callback.callback> runs once per context, then \
             C<completion_callback.callback> when the reply is complete.",
        ),
    ),
    (
        "aio_opt_list_meta_context_queries",
        doc(
            "list meta contexts matching queries, without waiting",
            "The asynchronous form of L<nbd_opt_list_meta_context_queries(3)>.",
        )
        .synopsis(
            "int nbd_aio_opt_list_meta_context_queries (struct nbd_handle *h, \
             char **queries, nbd_context_callback context_callback, \
             nbd_completion_callback completion_callback);",
        ),
    ),
    (
        "aio_opt_set_meta_context",
        doc(
            "select meta contexts, without waiting",
            "The asynchronous form of L<nbd_opt_set_meta_context(3)>: \
             C<context_callback.callback> runs once per context the server \
             accepted, then C<completion_callback.callback>.",
        )
        .synopsis(
            "int nbd_aio_opt_set_meta_context (struct nbd_handle *h, \
             nbd_context_callback context_callback, \
             nbd_completion_callback completion_callback);",
        ),
    ),
    (
        "aio_opt_set_meta_context_queries",
        doc(
            "select the meta contexts of a list, without waiting",
            "The asynchronous form of L<nbd_opt_set_meta_context_queries(3)>.",
        )
        .synopsis(
            "int nbd_aio_opt_set_meta_context_queries (struct nbd_handle *h, \
             char **queries, nbd_context_callback context_callback, \
             nbd_completion_callback completion_callback);",
        ),
    ),
    (
        "aio_opt_starttls",
        doc(
            "switch to TLS in option mode, without waiting",
            "The asynchronous form of L<nbd_opt_starttls(3)>: \
             C<completion_callback.callback> runs when the exchange is over; \
             L<nbd_get_tls_negotiated(3)> then says whether TLS is in use.",
        )
        .synopsis(
            "int nbd_aio_opt_starttls (struct nbd_handle *h, \
             nbd_completion_callback completion_callback);",
        ),
    ),
    (
        "aio_opt_structured_reply",
        doc(
            "ask for structured replies, without waiting",
            "The asynchronous form of L<nbd_opt_structured_reply(3)>: \
             C<completion_callback.callback> runs when the server has \
             answered; L<nbd_get_structured_replies_negotiated(3)> then says \
             whether they are in use.",
        )
        .synopsis(
            "int nbd_aio_opt_structured_reply (struct nbd_handle *h, \
             nbd_completion_callback completion_callback);",
        ),
    ),
    (
        "aio_opt_extended_headers",
        doc(
            "ask for extended headers, without waiting",
            "The asynchronous form of L<nbd_opt_extended_headers(3)>: \
             C<completion_callback.callback> runs when the server has \
             answered; L<nbd_get_extended_headers_negotiated(3)> then says \
             whether they are in use.",
        )
        .synopsis(
            "int nbd_aio_opt_extended_headers (struct nbd_handle *h, \
             nbd_completion_callback completion_callback);",
        ),
    ),
    // ------------------------------------------------------------ asynchronous commands
    (
        "aio_pread",
        doc(
            "start a read",
            "Queues a read of C<count> bytes at C<offset> into C<buf> and \
             returns at once. C<buf> must stay valid, and untouched, until the \
             command completes: then C<completion_callback.callback> runs (if \
             given; pass C<NBD_NULL_COMPLETION> for none), and \
             L<nbd_aio_command_completed(3)> reports the result. Everything \
             else is as for L<nbd_pread(3)>.",
        )
        .example(
            r#"static int
read_done (void *user_data, int *error)
{
  if (*error)
    fprintf (stderr, "read failed: %s\n", strerror (*error));
  return 1;   /* retire the command: no nbd_aio_command_completed needed */
}

/* ... */
if (nbd_aio_pread (nbd, buf, sizeof buf, 0,
                   (nbd_completion_callback) { .callback = read_done },
                   0) == -1)
  fprintf (stderr, "%s\n", nbd_get_error ());"#,
        ),
    ),
    (
        "aio_pread_structured",
        doc(
            "start a read, chunk by chunk",
            "The asynchronous form of L<nbd_pread_structured(3)>: \
             C<chunk_callback.callback> runs for each piece of the reply as it \
             arrives, then C<completion_callback.callback> once the command is \
             done.",
        ),
    ),
    (
        "aio_pwrite",
        doc(
            "start a write",
            "Queues a write of the C<count> bytes at C<buf> to C<offset> and \
             returns at once. C<buf> must stay valid and unchanged until the \
             command completes. Everything else is as for L<nbd_pwrite(3)>.",
        ),
    ),
    (
        "aio_disconnect",
        doc(
            "start disconnecting",
            "Queues the disconnect request (C<NBD_CMD_DISC>) behind the \
             commands already queued and returns at once; no new command may \
             be issued afterwards. The server closes the connection once it \
             has answered the earlier commands, and the handle then becomes \
             closed. See L<nbd_shutdown(3)> for the blocking form.",
        ),
    ),
    (
        "aio_flush",
        doc("start a flush", "The asynchronous form of L<nbd_flush(3)>."),
    ),
    (
        "aio_trim",
        doc("start a trim", "The asynchronous form of L<nbd_trim(3)>."),
    ),
    (
        "aio_cache",
        doc(
            "start a cache request",
            "The asynchronous form of L<nbd_cache(3)>.",
        ),
    ),
    (
        "aio_zero",
        doc(
            "start zeroing a range",
            "The asynchronous form of L<nbd_zero(3)>.",
        ),
    ),
    (
        "aio_block_status",
        doc(
            "start a block status request",
            "The asynchronous form of L<nbd_block_status(3)>: \
             C<extent_callback.callback> runs for each context's extents as \
             they arrive, then C<completion_callback.callback>.",
        ),
    ),
    (
        "aio_block_status_64",
        doc(
            "start a block status request with 64 bit extents",
            "The asynchronous form of L<nbd_block_status_64(3)>.",
        )
        .synopsis(
            "int64_t nbd_aio_block_status_64 (struct nbd_handle *h, uint64_t count, \
             uint64_t offset, nbd_extent64_callback extent64_callback, \
             nbd_completion_callback completion_callback, uint32_t flags);",
        ),
    ),
    (
        "aio_block_status_filter",
        doc(
            "start a block status request for some meta contexts",
            "The asynchronous form of L<nbd_block_status_filter(3)>.",
        )
        .synopsis(
            "int64_t nbd_aio_block_status_filter (struct nbd_handle *h, uint64_t count, \
             uint64_t offset, char **contexts, nbd_extent64_callback extent64_callback, \
             nbd_completion_callback completion_callback, uint32_t flags);",
        ),
    ),
    // ------------------------------------------------------------ driving the handle
    (
        "aio_get_fd",
        doc(
            "the file descriptor to watch in an event loop",
            "Returns the file descriptor of the connection's socket, for \
             programs that run their own event loop: watch it in the \
             direction L<nbd_aio_get_direction(3)> gives, and call \
             L<nbd_aio_notify_read(3)> or L<nbd_aio_notify_write(3)> when it \
             is ready. Do not read, write or close it yourself.",
        )
        .returns("It fails when the handle has no socket (not yet connecting, or closed)."),
    ),
    (
        "aio_get_direction",
        doc(
            "which way the handle waits for its socket",
            "Returns what the handle is waiting for on its socket: \
             C<LIBNBD_AIO_DIRECTION_READ>, C<LIBNBD_AIO_DIRECTION_WRITE>, both \
             (C<LIBNBD_AIO_DIRECTION_BOTH>) or nothing (0). The answer changes \
             after every call that makes progress, so ask again each time \
             round the event loop.",
        )
        .example(
            r#"struct pollfd pfd = { .fd = nbd_aio_get_fd (nbd) };
unsigned dir = nbd_aio_get_direction (nbd);

if (dir & LIBNBD_AIO_DIRECTION_READ)  pfd.events |= POLLIN;
if (dir & LIBNBD_AIO_DIRECTION_WRITE) pfd.events |= POLLOUT;
if (poll (&pfd, 1, -1) == -1) goto error;
if ((pfd.revents & POLLIN) && nbd_aio_notify_read (nbd) == -1)
  goto error;
else if ((pfd.revents & POLLOUT) && nbd_aio_notify_write (nbd) == -1)
  goto error;"#,
        )
    ),
    (
        "aio_notify_read",
        doc(
            "tell the handle its socket is readable",
            "Called from a program's event loop when the socket of \
             L<nbd_aio_get_fd(3)> is readable: the handle reads what it can \
             and moves its state machine on, running callbacks of commands \
             that complete.",
        ),
    ),
    (
        "aio_notify_write",
        doc(
            "tell the handle its socket is writable",
            "Called from a program's event loop when the socket of \
             L<nbd_aio_get_fd(3)> is writable: the handle sends what it can \
             of the queued requests.",
        ),
    ),
    (
        "aio_is_created",
        doc(
            "whether the handle has not started connecting",
            "Returns true while the handle is freshly created: no connection \
             has been started yet.",
        ),
    ),
    (
        "aio_is_connecting",
        doc(
            "whether the handle is connecting",
            "Returns true while the handle is connecting or in the handshake, \
             not yet ready (and not stopped for options).",
        ),
    ),
    (
        "aio_is_negotiating",
        doc(
            "whether the handle waits for options",
            "Returns true when the handle is in option mode, stopped between \
             options (see L<nbd_set_opt_mode(3)>).",
        ),
    ),
    (
        "aio_is_ready",
        doc(
            "whether the handle is connected and idle",
            "Returns true when the handle is connected to the export with no \
             command in flight: a new command may be issued.",
        ),
    ),
    (
        "aio_is_processing",
        doc(
            "whether the handle is connected and busy",
            "Returns true when the handle is connected to the export and \
             commands are in flight. New commands may still be issued; they \
             are queued.",
        ),
    ),
    (
        "aio_is_dead",
        doc(
            "whether the connection failed",
            "Returns true when the connection has hit a fatal error; the \
             handle can only be closed. L<nbd_get_error(3)> after the call \
             that failed tells why.",
        ),
    ),
    (
        "aio_is_closed",
        doc(
            "whether the connection was shut down",
            "Returns true when the connection was closed in an orderly way, \
             after L<nbd_aio_disconnect(3)> or L<nbd_shutdown(3)>.",
        ),
    ),
    (
        "aio_command_completed",
        doc(
            "check whether a command has finished, and retire it",
            "Looks up the command whose cookie is C<cookie>. If it has \
             finished, the command is retired (its cookie becomes unknown) and \
             the call returns 1 when it succeeded, or fails with the command's \
             errno when it did not. If it has not finished, it returns 0.\n\n\
             A command whose completion callback returned 1 retires itself \
             and is not found here.",
        )
        .returns("An unknown cookie fails with C<EINVAL>."),
    ),
    (
        "aio_peek_command_completed",
        doc(
            "the cookie of a finished command",
            "Returns the cookie of a command that has finished but has not \
             been retired yet, without retiring it; pass it to \
             L<nbd_aio_command_completed(3)> to learn the result.",
        )
        .returns(
            "It returns 0 when commands are in flight but none has finished, \
             and fails with C<EINVAL> when no command is in flight or \
             waiting to be retired.",
        ),
    ),
    (
        "aio_in_flight",
        doc(
            "how many commands are unfinished",
            "Returns the number of commands issued and not yet finished: \
             queued, sent, or waiting for their reply. Finished commands not \
             yet retired do not count.",
        ),
    ),
    (
        "connection_state",
        doc(
            "a description of the handle's state",
            "Returns a short text naming the state the handle's state machine \
             is in, with an explanation, such as \
             C<READY: Connection is ready to process NBD commands>. It is meant for debugging messages; \
             programs must not parse it.",
        ),
    ),
    // ------------------------------------------------------------ the library
    (
        "get_package_name",
        doc("the name of the library", "Returns C<\"libnbd\">."),
    ),
    (
        "get_version",
        doc(
            "the version of the library",
            "Returns the version of libnbd that this library is compatible \
             with, as C<\"MAJOR.MINOR.RELEASE\"> (for example C<\"1.24.4\">). \
             An even minor number marks a stable release.",
        ),
    ),
    (
        "get_version_extra",
        doc(
            "extra version information from the packager",
            "Returns a free-form string a packager may set when building the \
             library, for example the exact version of a distribution's \
             package, or the empty string when there is none.",
        )
        .synopsis("const char *nbd_get_version_extra (struct nbd_handle *h);"),
    ),
    // ------------------------------------------------------------ statistics
    (
        "stats_bytes_sent",
        doc(
            "how many bytes the handle has sent",
            "Returns the number of bytes the handle has written to its \
             connection so far: handshake, requests and payloads, counted \
             before any TLS encryption.",
        )
        .synopsis("uint64_t nbd_stats_bytes_sent (struct nbd_handle *h);"),
    ),
    (
        "stats_chunks_sent",
        doc(
            "how many messages the handle has sent",
            "Returns the number of protocol messages the handle has sent: \
             the handshake's options and the command requests, each counted \
             once whatever its payload.",
        )
        .synopsis("uint64_t nbd_stats_chunks_sent (struct nbd_handle *h);"),
    ),
    (
        "stats_bytes_received",
        doc(
            "how many bytes the handle has received",
            "Returns the number of bytes the handle has read from its \
             connection so far, counted after any TLS decryption.",
        )
        .synopsis("uint64_t nbd_stats_bytes_received (struct nbd_handle *h);"),
    ),
    (
        "stats_chunks_received",
        doc(
            "how many messages the handle has received",
            "Returns the number of protocol messages the handle has received: \
             the handshake's replies, simple replies, and each chunk of a \
             structured reply.",
        )
        .synopsis("uint64_t nbd_stats_chunks_received (struct nbd_handle *h);"),
    ),
];

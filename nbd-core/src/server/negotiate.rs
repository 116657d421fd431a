//! The server's side of the handshake and option haggling, as a sans-IO
//! state machine.
//!
//! ```text
//!   driver                                  Negotiation
//!   ------                                  -----------
//!   loop match want():
//!     Want::Write  => write_all(output())   -> output_done(n)
//!     Want::Read   => read(recv_buf())      -> received(n, &exports)  (n = 0: EOF)
//!     Want::Done   => take_result()         -> Negotiated: start transmission
//!     Want::Closed => close the connection  (close_reason() says why)
//! ```
//!
//! The machine asks for exactly the bytes of the message it is reading, so
//! it never consumes bytes that belong to the transmission phase: the
//! driver may hand the socket over to a buffered reader afterwards.
//!
//! Export information comes from an [`Exports`] provider, which the binary
//! implements: listing is cheap, and describing an export (INFO, GO) is
//! where the binary opens its backend for the connection, as nbdkit does.

use crate::limits::{MAX_OPTIONS, MAX_OPTION_DRAIN, MAX_OPTION_LEN, MAX_REQUEST_LEN, MAX_STRING};
use crate::wire::codec::Reader;
use crate::wire::consts::{client_flags, handshake_flags, info, tx_flags, CONTEXT_BASE_ALLOCATION};
use crate::wire::handshake::{
    encode_export_name_reply, encode_newstyle_greeting, encode_oldstyle_greeting,
};
use crate::wire::option::{
    encode_option_reply, encode_rep_meta_context, encode_rep_server, GoRequest, InfoReply,
    MetaContextRequest, OptionHeader, OPTION_HEADER_LEN,
};
use crate::wire::{OptionCode, ReplyType};

use super::backend::{Backend, Result as BackendResult};

/// What an export can do. Computed from a backend (see
/// [`Caps::from_backend`]) or given directly by an [`Exports`] provider.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Caps {
    pub read_only: bool,
    pub flush: bool,
    pub fua: bool,
    pub trim: bool,
    pub zero: bool,
    pub fast_zero: bool,
    pub multi_conn: bool,
    pub cache: bool,
    pub rotational: bool,
}

impl Caps {
    /// Asks a backend. `read_only` forces a read-only export (`-r`); a
    /// backend that cannot write makes one anyway, and then the write-like
    /// capabilities are off too.
    pub fn from_backend(b: &dyn Backend, read_only: bool) -> BackendResult<Caps> {
        let read_only = read_only || !b.can_write()?;
        let w = !read_only;
        Ok(Caps {
            read_only,
            flush: b.can_flush()?,
            fua: w && b.can_fua()?,
            trim: w && b.can_trim()?,
            zero: w && b.can_zero()?,
            fast_zero: w && b.can_zero()? && b.can_fast_zero()?,
            multi_conn: b.can_multi_conn()?,
            cache: b.can_cache()?,
            rotational: b.is_rotational()?,
        })
    }

    /// The transmission flags. DF is offered when structured replies were
    /// negotiated (reads are always sent as one chunk), block status
    /// filtered by a payload when extended headers were.
    pub fn tx_flags(&self, structured_replies: bool, extended_headers: bool) -> u16 {
        let mut f = tx_flags::HAS_FLAGS;
        let mut set = |c: bool, bit: u16| {
            if c {
                f |= bit
            }
        };
        set(self.read_only, tx_flags::READ_ONLY);
        set(self.flush, tx_flags::SEND_FLUSH);
        set(self.fua, tx_flags::SEND_FUA);
        set(self.rotational, tx_flags::ROTATIONAL);
        set(self.trim, tx_flags::SEND_TRIM);
        set(self.zero, tx_flags::SEND_WRITE_ZEROES);
        set(structured_replies, tx_flags::SEND_DF);
        set(self.multi_conn, tx_flags::CAN_MULTI_CONN);
        set(self.cache, tx_flags::SEND_CACHE);
        set(self.fast_zero, tx_flags::SEND_FAST_ZERO);
        set(extended_headers, tx_flags::BLOCK_STATUS_PAYLOAD);
        f
    }
}

/// What the server tells a client about one export.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ExportDetails {
    pub size: u64,
    pub caps: Caps,
    /// Canonical name for NBD_INFO_NAME; `None`: the name the client used.
    pub canonical_name: Option<Vec<u8>>,
    pub description: Option<Vec<u8>>,
    /// (minimum, preferred, maximum); `None`: 1, 4096, MAX_REQUEST_LEN.
    pub block_size: Option<(u32, u32, u32)>,
}

/// Exports as listed: (name, description).
pub type ExportList = Vec<(Vec<u8>, Vec<u8>)>;

/// The binary's say in what exports exist. Must be cheap: it is asked
/// before the client has proven anything.
pub trait Exports {
    /// The exports to list, as (name, description).
    fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)>;
    /// As [`Exports::list`], or `Err(message)` when the list cannot be
    /// given: the client gets NBD_REP_ERR_PLATFORM, as from nbdkit.
    fn try_list(&self) -> Result<ExportList, String> {
        Ok(self.list())
    }
    /// An export by name, or `Err(message)` if there is no such export or
    /// it cannot be described (or opened: nbdkit opens the backend to
    /// answer INFO and GO, and so may the provider).
    fn lookup(&self, name: &[u8]) -> Result<ExportDetails, String>;
    /// Called when the client chooses export `name` (GO, EXPORT_NAME, or
    /// the oldstyle greeting), before negotiation ends: the place to open
    /// the connection on the backend. `Err(message)`: the client gets the
    /// message in an error reply (GO) or is disconnected (EXPORT_NAME,
    /// oldstyle), and negotiation does not end.
    fn open(&self, _name: &[u8]) -> Result<(), String> {
        Ok(())
    }
}

/// How the server presents itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Config {
    /// Handshake flags offered in the greeting (`--mask-handshake`).
    pub handshake_flags: u16,
    /// Refuse NBD_OPT_STRUCTURED_REPLY with ERR_UNSUP (`--no-sr`). Since
    /// extended headers imply structured replies, they are refused too.
    pub no_structured_replies: bool,
    /// Refuse NBD_OPT_EXTENDED_HEADERS with ERR_UNSUP, so clients fall
    /// back to structured replies (`NBDKIT_NO_EXTENDED_HEADERS=1`).
    pub no_extended_headers: bool,
    /// NBD_OPT_STARTTLS (`--tls`).
    pub tls: Tls,
}

/// The server's TLS policy (nbdkit's `--tls=off|on|require`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Tls {
    /// STARTTLS is refused with ERR_POLICY.
    #[default]
    Off,
    /// STARTTLS is accepted; plain text works too.
    On,
    /// Before TLS is up, every option but STARTTLS and ABORT gets
    /// ERR_TLS_REQD (EXPORT_NAME, which cannot be refused, a hang-up), so
    /// nothing about the exports is told in plain text.
    Require,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            handshake_flags: handshake_flags::ALL,
            no_structured_replies: false,
            no_extended_headers: false,
            tls: Tls::Off,
        }
    }
}

/// The id our server gives base:allocation in SET_META_CONTEXT.
pub const BASE_ALLOCATION_ID: u32 = 1;

/// The outcome of a successful negotiation.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Negotiated {
    pub export_name: Vec<u8>,
    pub details: ExportDetails,
    /// Transmission flags sent to the client.
    pub tx_flags: u16,
    pub structured_replies: bool,
    /// 32-byte request and reply headers (they imply structured replies).
    pub extended_headers: bool,
    /// The id of base:allocation, if the client selected it.
    pub meta_context: Option<u32>,
    pub no_zeroes: bool,
    /// Whether the client used the fixed newstyle protocol.
    pub fixed_newstyle: bool,
}

/// What the driver should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Want {
    Write,
    Read,
    /// The client's STARTTLS was acknowledged (and the ACK sent): run the
    /// TLS handshake on the connection now, send and receive everything
    /// after it through TLS, and call [`Negotiation::tls_done`].
    StartTls,
    Done,
    Closed,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    ClientFlags,
    OptHeader,
    OptPayload {
        option: u32,
    },
    /// Discarding an oversized option's payload, then replying ERR_TOO_BIG.
    Drain {
        option: u32,
        remaining: u32,
    },
    /// Waiting for the driver's TLS handshake.
    StartTls,
    Done,
    Closed,
}

/// The handshake of one connection.
pub struct Negotiation {
    phase: Phase,
    out: Vec<u8>,
    out_pos: usize,
    inbuf: Vec<u8>,
    have: usize,
    offered: u16,
    fixed_newstyle: bool,
    no_zeroes: bool,
    /// Options received, and how many the client may send (MAX_OPTIONS,
    /// raised by LIST).
    options: usize,
    options_allowed: usize,
    /// LIST has raised `options_allowed` once already.
    listed: bool,
    structured: bool,
    no_structured_replies: bool,
    extended: bool,
    no_extended_headers: bool,
    meta: Option<(Vec<u8>, u32)>,
    result: Option<Negotiated>,
    close_reason: Option<String>,
    tls: Tls,
    /// TLS is up.
    tls_active: bool,
}

const DRAIN_CHUNK: usize = 64 * 1024;

impl Negotiation {
    /// Starts a connection: the greeting is queued for sending.
    pub fn new(cfg: Config) -> Self {
        let offered = cfg.handshake_flags & handshake_flags::ALL;
        let mut n = Negotiation {
            phase: Phase::ClientFlags,
            out: Vec::with_capacity(256),
            out_pos: 0,
            inbuf: Vec::new(),
            have: 0,
            offered,
            fixed_newstyle: false,
            no_zeroes: false,
            options: 0,
            options_allowed: MAX_OPTIONS,
            listed: false,
            structured: false,
            no_structured_replies: cfg.no_structured_replies,
            extended: false,
            no_extended_headers: cfg.no_extended_headers,
            meta: None,
            result: None,
            close_reason: None,
            tls: cfg.tls,
            tls_active: false,
        };
        n.out.extend_from_slice(&encode_newstyle_greeting(offered));
        n.expect(4);
        n
    }

    /// Starts an oldstyle connection (`--oldstyle`): the greeting carries
    /// the size and flags of the default export, and negotiation is over
    /// once it is sent (or closed at once if the export cannot be opened).
    pub fn oldstyle(exports: &dyn Exports) -> Self {
        let mut n = Negotiation::new(Config::default());
        n.out.clear();
        let details = match exports
            .lookup(b"")
            .and_then(|d| exports.open(b"").map(|()| d))
        {
            Ok(d) => d,
            Err(e) => {
                n.close(format!("oldstyle: {e}"));
                return n;
            }
        };
        let tx = details.caps.tx_flags(false, false);
        n.out
            .extend_from_slice(&encode_oldstyle_greeting(details.size, tx as u32));
        n.finish(Vec::new(), details, tx);
        n
    }

    /// A connection whose handshake happened elsewhere (xnbd-server's
    /// `--connected-fd`: xnbd-wrapper negotiated with the client, then
    /// handed the socket over). Nothing is sent; the transmission phase
    /// starts at once on the default export, with simple replies and no
    /// meta context (all a handshake without options can have set up),
    /// and every command the export can do allowed, since what the other
    /// party advertised is not known. Closed at once if the export cannot
    /// be opened.
    pub fn pre_negotiated(exports: &dyn Exports) -> Self {
        let mut n = Negotiation::new(Config::default());
        n.out.clear();
        match exports
            .lookup(b"")
            .and_then(|d| exports.open(b"").map(|()| d))
        {
            Ok(details) => {
                let tx = details.caps.tx_flags(false, false);
                n.finish(Vec::new(), details, tx);
            }
            Err(e) => n.close(format!("pre-negotiated connection: {e}")),
        }
        n
    }

    pub fn want(&self) -> Want {
        if self.out_pos < self.out.len() {
            return Want::Write;
        }
        match self.phase {
            Phase::Done => Want::Done,
            Phase::Closed => Want::Closed,
            Phase::StartTls => Want::StartTls,
            _ => Want::Read,
        }
    }

    /// The driver finished the TLS handshake after [`Want::StartTls`].
    /// What the client set up in plain text is forgotten, and the options
    /// go on, inside TLS.
    pub fn tls_done(&mut self) {
        if self.phase != Phase::StartTls {
            return;
        }
        self.tls_active = true;
        self.structured = false;
        self.extended = false;
        self.meta = None;
        self.next_option();
    }

    /// Whether TLS is up on this connection.
    pub fn tls_active(&self) -> bool {
        self.tls_active
    }

    /// Bytes to send.
    pub fn output(&self) -> &[u8] {
        &self.out[self.out_pos..]
    }

    /// `n` bytes of [`Self::output`] were sent.
    pub fn output_done(&mut self, n: usize) {
        self.out_pos = (self.out_pos + n).min(self.out.len());
        if self.out_pos == self.out.len() {
            self.out.clear();
            self.out_pos = 0;
        }
    }

    /// Where the next bytes from the client go: exactly what the current
    /// message still lacks (empty unless `want()` is `Read`).
    pub fn recv_buf(&mut self) -> &mut [u8] {
        if self.want() != Want::Read {
            return &mut [];
        }
        &mut self.inbuf[self.have..]
    }

    /// `n` bytes were received into [`Self::recv_buf`]; `n == 0` is EOF.
    pub fn received(&mut self, n: usize, exports: &dyn Exports) {
        if self.want() != Want::Read {
            return;
        }
        if n == 0 {
            return self.close("client closed the connection during negotiation");
        }
        self.have = (self.have + n).min(self.inbuf.len());
        if self.have == self.inbuf.len() {
            self.step(exports);
        }
    }

    /// The result, once `want()` is `Done`.
    pub fn take_result(&mut self) -> Option<Negotiated> {
        self.result.take()
    }

    /// Why the connection is to be closed, once `want()` is `Closed`.
    pub fn close_reason(&self) -> Option<&str> {
        self.close_reason.as_deref()
    }

    /// Feeds bytes from a buffer; returns how many were used. A helper for
    /// drivers that read in bulk and for tests.
    pub fn feed(&mut self, mut data: &[u8], exports: &dyn Exports) -> usize {
        let total = data.len();
        while !data.is_empty() && self.want() == Want::Read {
            let buf = self.recv_buf();
            let n = buf.len().min(data.len());
            buf[..n].copy_from_slice(&data[..n]);
            data = &data[n..];
            self.received(n, exports);
        }
        total - data.len()
    }

    fn expect(&mut self, n: usize) {
        self.inbuf.clear();
        self.inbuf.resize(n, 0);
        self.have = 0;
    }

    fn close(&mut self, why: impl Into<String>) {
        self.phase = Phase::Closed;
        self.close_reason = Some(why.into());
    }

    fn reply(&mut self, option: u32, reply_type: ReplyType, payload: &[u8]) {
        encode_option_reply(&mut self.out, option, reply_type.to_wire(), payload);
    }

    fn reply_err(&mut self, option: u32, reply_type: ReplyType, msg: &str) {
        self.reply(option, reply_type, msg.as_bytes());
    }

    fn next_option(&mut self) {
        self.phase = Phase::OptHeader;
        self.expect(OPTION_HEADER_LEN);
    }

    fn step(&mut self, exports: &dyn Exports) {
        match self.phase {
            Phase::ClientFlags => {
                let mut r = Reader::new(&self.inbuf);
                let flags = r.u32().unwrap_or(0);
                let known = client_flags::ALL & self.offered as u32;
                if flags & !known != 0 {
                    return self.close(format!("unknown client flags {flags:#x}"));
                }
                self.fixed_newstyle = flags & client_flags::FIXED_NEWSTYLE != 0;
                self.no_zeroes = flags & client_flags::NO_ZEROES != 0;
                self.next_option();
            }
            Phase::OptHeader => {
                let mut h = [0u8; OPTION_HEADER_LEN];
                h.copy_from_slice(&self.inbuf);
                let hdr = match OptionHeader::decode(&h) {
                    Ok(h) => h,
                    Err(e) => return self.close(e.to_string()),
                };
                self.options += 1;
                if hdr.len as usize > MAX_OPTION_DRAIN {
                    return self.close(format!("option of {} bytes", hdr.len));
                }
                if hdr.len as usize > MAX_OPTION_LEN {
                    if OptionCode::from_wire(hdr.option) == OptionCode::ExportName {
                        return self.close("export name too long");
                    }
                    self.phase = Phase::Drain {
                        option: hdr.option,
                        remaining: hdr.len,
                    };
                    self.expect((hdr.len as usize).min(DRAIN_CHUNK));
                    return;
                }
                self.phase = Phase::OptPayload { option: hdr.option };
                self.expect(hdr.len as usize);
                if hdr.len == 0 {
                    self.step(exports);
                }
            }
            Phase::Drain { option, remaining } => {
                let remaining = remaining - self.inbuf.len() as u32;
                if remaining == 0 {
                    self.reply_err(option, ReplyType::ErrTooBig, "option too long");
                    self.next_option();
                } else {
                    self.phase = Phase::Drain { option, remaining };
                    self.expect((remaining as usize).min(DRAIN_CHUNK));
                }
            }
            Phase::OptPayload { option } => {
                let payload = std::mem::take(&mut self.inbuf);
                self.handle_option(option, &payload, exports);
                if self.phase == (Phase::OptPayload { option }) {
                    self.next_option();
                }
            }
            Phase::StartTls | Phase::Done | Phase::Closed => {}
        }
        // As nbdkit: once the client has used its allowance of options
        // without picking an export, the connection ends after the last
        // answer (the next option is not read).
        if self.phase == Phase::OptHeader && self.options >= self.options_allowed {
            self.close("too many options without picking an export");
        }
    }

    fn handle_option(&mut self, option: u32, payload: &[u8], exports: &dyn Exports) {
        let code = OptionCode::from_wire(option);
        if self.tls == Tls::Require
            && !self.tls_active
            && code != OptionCode::StartTls
            && code != OptionCode::Abort
        {
            if code == OptionCode::ExportName {
                return self.close("client sent NBD_OPT_EXPORT_NAME before TLS (--tls=require)");
            }
            return self.reply_err(option, ReplyType::ErrTlsReqd, "TLS is required");
        }
        match code {
            OptionCode::ExportName => {
                // proto.md: a client with extended headers must use GO;
                // EXPORT_NAME cannot be refused, so the connection ends.
                if self.extended {
                    return self.close("NBD_OPT_EXPORT_NAME after extended headers");
                }
                if payload.len() > MAX_STRING {
                    return self.close("export name too long");
                }
                if payload.contains(&0) {
                    return self.close("export name contains NUL");
                }
                let details = match exports.lookup(payload) {
                    Ok(d) => d,
                    Err(e) => return self.close(format!("unknown export: {e}")),
                };
                if let Err(e) = exports.open(payload) {
                    return self.close(format!("cannot open export: {e}"));
                }
                let tx = details.caps.tx_flags(self.structured, self.extended);
                let no_zeroes = self.no_zeroes;
                self.out
                    .extend_from_slice(&encode_export_name_reply(details.size, tx, no_zeroes));
                self.finish(payload.to_vec(), details, tx);
            }
            OptionCode::Abort => {
                if payload.is_empty() {
                    self.reply(option, ReplyType::Ack, &[]);
                }
                self.close("client sent NBD_OPT_ABORT");
            }
            OptionCode::List => {
                if !payload.is_empty() {
                    return self.reply_err(option, ReplyType::ErrInvalid, "LIST takes no payload");
                }
                let list = match exports.try_list() {
                    Ok(list) => list,
                    Err(e) => return self.reply_err(option, ReplyType::ErrPlatform, &e),
                };
                if !self.listed {
                    // Room to ask INFO (and more) about each export.
                    self.listed = true;
                    self.options_allowed += MAX_OPTIONS * list.len();
                }
                for (name, desc) in list {
                    let p = encode_rep_server(&name, &desc);
                    self.reply(option, ReplyType::Server, &p);
                }
                self.reply(option, ReplyType::Ack, &[]);
            }
            OptionCode::StartTls => {
                if !payload.is_empty() {
                    return self.reply_err(
                        option,
                        ReplyType::ErrInvalid,
                        "STARTTLS takes no payload",
                    );
                }
                if self.tls == Tls::Off {
                    return self.reply_err(option, ReplyType::ErrPolicy, "TLS is not enabled");
                }
                if self.tls_active {
                    return self.reply_err(
                        option,
                        ReplyType::ErrInvalid,
                        "TLS is already negotiated",
                    );
                }
                self.reply(option, ReplyType::Ack, &[]);
                self.phase = Phase::StartTls;
            }
            OptionCode::Info | OptionCode::Go => self.info_or_go(option, payload, exports),
            OptionCode::StructuredReply => {
                if !payload.is_empty() {
                    return self.reply_err(
                        option,
                        ReplyType::ErrInvalid,
                        "STRUCTURED_REPLY takes no payload",
                    );
                }
                if self.no_structured_replies {
                    return self.reply_err(
                        option,
                        ReplyType::ErrUnsup,
                        "structured replies are disabled (--no-sr)",
                    );
                }
                if self.extended {
                    // proto.md: structured replies are part of extended
                    // headers; asking for them alone cannot downgrade.
                    return self.reply_err(
                        option,
                        ReplyType::ErrExtHeaderReqd,
                        "extended headers already negotiated",
                    );
                }
                if self.structured {
                    return self.reply_err(
                        option,
                        ReplyType::ErrInvalid,
                        "structured replies already negotiated",
                    );
                }
                self.structured = true;
                self.reply(option, ReplyType::Ack, &[]);
            }
            OptionCode::ExtendedHeaders => {
                if !payload.is_empty() {
                    return self.reply_err(
                        option,
                        ReplyType::ErrInvalid,
                        "EXTENDED_HEADERS takes no payload",
                    );
                }
                if self.no_extended_headers || self.no_structured_replies {
                    return self.reply_err(
                        option,
                        ReplyType::ErrUnsup,
                        "extended headers are disabled",
                    );
                }
                if self.extended {
                    return self.reply_err(
                        option,
                        ReplyType::ErrInvalid,
                        "extended headers already negotiated",
                    );
                }
                self.extended = true;
                self.structured = true;
                self.reply(option, ReplyType::Ack, &[]);
            }
            OptionCode::ListMetaContext | OptionCode::SetMetaContext => {
                self.meta_context(option, payload)
            }
            _ => self.reply_err(option, ReplyType::ErrUnsup, "option not supported"),
        }
    }

    fn info_or_go(&mut self, option: u32, payload: &[u8], exports: &dyn Exports) {
        let req = match GoRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => return self.reply_err(option, ReplyType::ErrInvalid, &e.to_string()),
        };
        if req.export_name.contains(&0) {
            return self.reply_err(option, ReplyType::ErrInvalid, "export name contains NUL");
        }
        let details = match exports.lookup(req.export_name) {
            Ok(d) => d,
            Err(e) => return self.reply_err(option, ReplyType::ErrUnknown, &e),
        };
        if OptionCode::from_wire(option) == OptionCode::Go {
            // Opened before anything is sent, so that a failure is an
            // error reply rather than an ACK followed by a hang-up.
            if let Err(e) = exports.open(req.export_name) {
                return self.reply_err(option, ReplyType::ErrUnknown, &e);
            }
        }
        let tx = details.caps.tx_flags(self.structured, self.extended);
        let mut p = InfoReply::Export {
            size: details.size,
            flags: tx,
        }
        .encode();
        self.reply(option, ReplyType::Info, &p);
        let (mut want_name, mut want_desc) = (false, false);
        for i in &req.info_requests {
            match *i {
                info::NAME => want_name = true,
                info::DESCRIPTION => want_desc = true,
                _ => {}
            }
        }
        if want_name {
            let name = details.canonical_name.as_deref().unwrap_or(req.export_name);
            p = InfoReply::Name(name).encode();
            self.reply(option, ReplyType::Info, &p);
        }
        if want_desc {
            if let Some(d) = details.description.as_deref() {
                p = InfoReply::Description(d).encode();
                self.reply(option, ReplyType::Info, &p);
            }
        }
        let (minimum, preferred, maximum) =
            details.block_size.unwrap_or((1, 4096, MAX_REQUEST_LEN));
        p = InfoReply::BlockSize {
            minimum,
            preferred,
            maximum,
        }
        .encode();
        self.reply(option, ReplyType::Info, &p);
        self.reply(option, ReplyType::Ack, &[]);
        if OptionCode::from_wire(option) == OptionCode::Go {
            let name = req.export_name.to_vec();
            self.finish(name, details, tx);
        }
    }

    fn meta_context(&mut self, option: u32, payload: &[u8]) {
        if !self.structured {
            return self.reply_err(
                option,
                ReplyType::ErrInvalid,
                "structured replies must be negotiated first",
            );
        }
        let req = match MetaContextRequest::decode(payload) {
            Ok(r) => r,
            Err(e) => return self.reply_err(option, ReplyType::ErrInvalid, &e.to_string()),
        };
        if req.export_name.contains(&0) || req.queries.iter().any(|q| q.contains(&0)) {
            return self.reply_err(option, ReplyType::ErrInvalid, "string contains NUL");
        }
        let base = CONTEXT_BASE_ALLOCATION.as_bytes();
        if OptionCode::from_wire(option) == OptionCode::ListMetaContext {
            let all = req.queries.is_empty();
            let listed = all || req.queries.iter().any(|q| *q == base || *q == b"base:");
            if listed {
                let p = encode_rep_meta_context(0, base);
                self.reply(option, ReplyType::MetaContext, &p);
            }
        } else {
            let selected = req.queries.contains(&base);
            if selected {
                let p = encode_rep_meta_context(BASE_ALLOCATION_ID, base);
                self.reply(option, ReplyType::MetaContext, &p);
                self.meta = Some((req.export_name.to_vec(), BASE_ALLOCATION_ID));
            } else {
                self.meta = None;
            }
        }
        self.reply(option, ReplyType::Ack, &[]);
    }

    fn finish(&mut self, export_name: Vec<u8>, details: ExportDetails, tx: u16) {
        // Contexts chosen for another export do not apply to this one.
        let meta_context = match &self.meta {
            Some((name, id)) if *name == export_name && self.structured => Some(*id),
            _ => None,
        };
        self.result = Some(Negotiated {
            export_name,
            details,
            tx_flags: tx,
            structured_replies: self.structured,
            extended_headers: self.extended,
            meta_context,
            no_zeroes: self.no_zeroes,
            fixed_newstyle: self.fixed_newstyle,
        });
        self.phase = Phase::Done;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::codec::PutBe;
    use crate::wire::consts::{opt, rep, IHAVEOPT, NBDMAGIC};
    use crate::wire::option::{encode_option, OptionReplyHeader, OPTION_REPLY_HEADER_LEN};

    struct OneExport;
    impl Exports for OneExport {
        fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
            vec![(b"a".to_vec(), b"first".to_vec()), (b"b".to_vec(), vec![])]
        }
        fn lookup(&self, name: &[u8]) -> Result<ExportDetails, String> {
            match name {
                b"a" | b"" => Ok(ExportDetails {
                    size: 1 << 20,
                    caps: Caps {
                        flush: true,
                        multi_conn: true,
                        ..Caps::default()
                    },
                    description: Some(b"first".to_vec()),
                    ..ExportDetails::default()
                }),
                _ => Err("no such export".into()),
            }
        }
    }

    /// Runs the machine on `input`; returns everything it sent after the
    /// greeting, and the final state.
    fn run(n: &mut Negotiation, input: &[u8]) -> (Vec<u8>, Want) {
        let mut sent = Vec::new();
        let mut input = input;
        loop {
            match n.want() {
                Want::Write => {
                    let o = n.output().to_vec();
                    n.output_done(o.len());
                    sent.extend_from_slice(&o);
                }
                Want::Read => {
                    if input.is_empty() {
                        return (sent, Want::Read);
                    }
                    let used = n.feed(input, &OneExport);
                    input = &input[used..];
                }
                w => return (sent, w),
            }
        }
    }

    fn start(flags: u32) -> (Negotiation, Vec<u8>) {
        let mut n = Negotiation::new(Config::default());
        let mut i = Vec::new();
        i.put_u32(flags);
        let (greeting, w) = run(&mut n, &i);
        assert_eq!(greeting.len(), 18);
        assert_eq!(&greeting[..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&greeting[8..16], &IHAVEOPT.to_be_bytes());
        assert_eq!(&greeting[16..], &[0, 3]);
        assert_eq!(w, Want::Read);
        (n, Vec::new())
    }

    /// Splits option replies into (option, type, payload).
    fn replies(mut b: &[u8]) -> Vec<(u32, u32, Vec<u8>)> {
        let mut v = Vec::new();
        while b.len() >= OPTION_REPLY_HEADER_LEN {
            let h: [u8; OPTION_REPLY_HEADER_LEN] = b[..20].try_into().unwrap();
            let h = OptionReplyHeader::decode(&h).unwrap();
            let end = 20 + h.len as usize;
            v.push((h.option, h.reply_type, b[20..end].to_vec()));
            b = &b[end..];
        }
        assert!(b.is_empty());
        v
    }

    fn go(name: &[u8], infos: Vec<u16>) -> Vec<u8> {
        let mut o = Vec::new();
        let p = GoRequest {
            export_name: name,
            info_requests: infos,
        }
        .encode();
        encode_option(&mut o, opt::GO, &p);
        o
    }

    #[test]
    fn go_with_structured_and_meta() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        encode_option(&mut i, opt::STRUCTURED_REPLY, &[]);
        let m = MetaContextRequest {
            export_name: b"a",
            queries: vec![b"base:allocation", b"qemu:dirty-bitmap:x"],
        }
        .encode();
        encode_option(&mut i, opt::SET_META_CONTEXT, &m);
        i.extend(go(b"a", vec![info::NAME, info::DESCRIPTION]));
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Done);
        let r = replies(&out);
        assert_eq!(r[0], (opt::STRUCTURED_REPLY, rep::ACK, vec![]));
        assert_eq!(r[1].1, rep::META_CONTEXT);
        assert_eq!(
            r[1].2,
            encode_rep_meta_context(BASE_ALLOCATION_ID, b"base:allocation")
        );
        assert_eq!(r[2], (opt::SET_META_CONTEXT, rep::ACK, vec![]));
        let infos: Vec<_> = r[3..r.len() - 1]
            .iter()
            .map(|x| InfoReply::decode(&x.2).unwrap().encode())
            .collect();
        let tx = tx_flags::HAS_FLAGS
            | tx_flags::SEND_FLUSH
            | tx_flags::CAN_MULTI_CONN
            | tx_flags::SEND_DF;
        assert_eq!(
            infos[0],
            InfoReply::Export {
                size: 1 << 20,
                flags: tx
            }
            .encode()
        );
        assert_eq!(infos[1], InfoReply::Name(b"a").encode());
        assert_eq!(infos[2], InfoReply::Description(b"first").encode());
        assert_eq!(
            infos[3],
            InfoReply::BlockSize {
                minimum: 1,
                preferred: 4096,
                maximum: MAX_REQUEST_LEN
            }
            .encode()
        );
        assert_eq!(r.last().unwrap(), &(opt::GO, rep::ACK, vec![]));
        let res = n.take_result().unwrap();
        assert!(res.structured_replies);
        assert_eq!(res.meta_context, Some(BASE_ALLOCATION_ID));
        assert!(res.no_zeroes);
        assert_eq!(res.tx_flags, tx);
        assert_eq!(res.export_name, b"a");
    }

    #[test]
    fn meta_for_another_export_is_dropped() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        encode_option(&mut i, opt::STRUCTURED_REPLY, &[]);
        let m = MetaContextRequest {
            export_name: b"b",
            queries: vec![b"base:allocation"],
        }
        .encode();
        encode_option(&mut i, opt::SET_META_CONTEXT, &m);
        i.extend(go(b"", vec![]));
        let (_, w) = run(&mut n, &i);
        assert_eq!(w, Want::Done);
        assert_eq!(n.take_result().unwrap().meta_context, None);
    }

    #[test]
    fn meta_needs_structured_and_list_prefix() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        let m = MetaContextRequest {
            export_name: b"",
            queries: vec![b"base:"],
        }
        .encode();
        encode_option(&mut i, opt::LIST_META_CONTEXT, &m);
        encode_option(&mut i, opt::STRUCTURED_REPLY, &[]);
        encode_option(&mut i, opt::STRUCTURED_REPLY, &[]);
        encode_option(&mut i, opt::LIST_META_CONTEXT, &m);
        // SET with a namespace only selects nothing.
        encode_option(&mut i, opt::SET_META_CONTEXT, &m);
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Read);
        let r = replies(&out);
        assert_eq!(r[0].1, rep::ERR_INVALID);
        assert_eq!(r[1].1, rep::ACK);
        assert_eq!(r[2].1, rep::ERR_INVALID);
        assert_eq!(r[3].1, rep::META_CONTEXT);
        assert_eq!(r[3].2, encode_rep_meta_context(0, b"base:allocation"));
        assert_eq!(r[4].1, rep::ACK);
        assert_eq!(r[5], (opt::SET_META_CONTEXT, rep::ACK, vec![]));
    }

    /// An export provider that refuses to list.
    struct Unlisted;
    impl Exports for Unlisted {
        fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
            Vec::new()
        }
        fn try_list(&self) -> Result<ExportList, String> {
            Err("no list".into())
        }
        fn lookup(&self, name: &[u8]) -> Result<ExportDetails, String> {
            OneExport.lookup(name)
        }
    }

    #[test]
    fn a_refused_list_is_err_platform() {
        let (mut n, _) = start(1);
        let mut i = Vec::new();
        encode_option(&mut i, opt::LIST, &[]);
        let used = n.feed(&i, &Unlisted);
        assert_eq!(used, i.len());
        let out = n.output().to_vec();
        let r = replies(&out);
        assert_eq!(r.len(), 1);
        assert_eq!((r[0].0, r[0].1), (opt::LIST, rep::ERR_PLATFORM));
    }

    #[test]
    fn list_info_starttls_unknown() {
        let (mut n, _) = start(1);
        let mut i = Vec::new();
        encode_option(&mut i, opt::LIST, &[]);
        encode_option(&mut i, opt::LIST, b"x");
        encode_option(&mut i, opt::STARTTLS, &[]);
        encode_option(&mut i, 99, b"junk");
        encode_option(&mut i, opt::PEEK_EXPORT, &[]);
        let p = GoRequest {
            export_name: b"nope",
            info_requests: vec![],
        }
        .encode();
        encode_option(&mut i, opt::INFO, &p);
        encode_option(&mut i, opt::INFO, &go(b"a", vec![])[16..]);
        encode_option(&mut i, opt::GO, &[0, 0]);
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Read);
        let r = replies(&out);
        assert_eq!(r[0].1, rep::SERVER);
        assert_eq!(r[0].2, encode_rep_server(b"a", b"first"));
        assert_eq!(r[1].1, rep::SERVER);
        assert_eq!(r[2], (opt::LIST, rep::ACK, vec![]));
        assert_eq!(r[3].1, rep::ERR_INVALID);
        assert_eq!(r[4].1, rep::ERR_POLICY);
        assert_eq!((r[5].0, r[5].1), (99, rep::ERR_UNSUP));
        assert_eq!(r[6].1, rep::ERR_UNSUP);
        assert_eq!((r[7].0, r[7].1), (opt::INFO, rep::ERR_UNKNOWN));
        assert_eq!(r[8].1, rep::INFO);
        assert_eq!(r[9].1, rep::INFO); // block size
        assert_eq!(r[10], (opt::INFO, rep::ACK, vec![]));
        assert_eq!((r[11].0, r[11].1), (opt::GO, rep::ERR_INVALID));
        // INFO does not end negotiation; without NO_ZEROES it is recorded.
        let (_, w) = run(&mut n, &go(b"a", vec![]));
        assert_eq!(w, Want::Done);
        let res = n.take_result().unwrap();
        assert!(!res.no_zeroes && !res.structured_replies);
        assert_eq!(res.tx_flags & tx_flags::SEND_DF, 0);
    }

    #[test]
    fn unknown_client_flags_disconnect() {
        let mut n = Negotiation::new(Config::default());
        let (_, w) = run(&mut n, &[0, 0, 0, 4]);
        assert_eq!(w, Want::Closed);
        // NO_ZEROES is unknown when it was masked out of the greeting.
        let mut n = Negotiation::new(Config {
            handshake_flags: handshake_flags::FIXED_NEWSTYLE,
            ..Config::default()
        });
        let (g, w) = run(&mut n, &[0, 0, 0, 3]);
        assert_eq!(&g[16..], &[0, 1]);
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn bad_option_magic_disconnects() {
        let (mut n, _) = start(3);
        let (_, w) = run(&mut n, &[0u8; 16]);
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn too_long_option_is_drained() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        let len = MAX_OPTION_LEN + 100_000;
        OptionHeader {
            option: opt::GO,
            len: len as u32,
        }
        .encode(&mut i);
        i.resize(i.len() + len, 7);
        encode_option(&mut i, opt::LIST, &[]);
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Read);
        let r = replies(&out);
        assert_eq!((r[0].0, r[0].1), (opt::GO, rep::ERR_TOO_BIG));
        assert_eq!(r.last().unwrap(), &(opt::LIST, rep::ACK, vec![]));
        // A too-long EXPORT_NAME cannot be answered: disconnect.
        let mut i = Vec::new();
        OptionHeader {
            option: opt::EXPORT_NAME,
            len: len as u32,
        }
        .encode(&mut i);
        let (_, w) = run(&mut n, &i);
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn too_many_options_disconnect() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        for _ in 0..MAX_OPTIONS - 1 {
            encode_option(&mut i, 99, &[]);
        }
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Read);
        assert_eq!(replies(&out).len(), MAX_OPTIONS - 1);
        // The last one allowed is answered, then the connection ends.
        let mut i = Vec::new();
        encode_option(&mut i, 99, &[]);
        let (out, w) = run(&mut n, &i);
        assert_eq!(replies(&out).len(), 1);
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn list_allows_more_options_per_export() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        encode_option(&mut i, opt::LIST, &[]);
        // Two exports listed: 32 more options each.
        for _ in 0..MAX_OPTIONS * 3 - 2 {
            encode_option(&mut i, 99, &[]);
        }
        let (_, w) = run(&mut n, &i);
        assert_eq!(w, Want::Read);
        let (_, w) = run(&mut n, &go(b"a", vec![]));
        assert_eq!(w, Want::Done);
    }

    #[test]
    fn absurd_option_length_disconnects_at_once() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        OptionHeader {
            option: opt::LIST,
            len: MAX_OPTION_DRAIN as u32 + 1,
        }
        .encode(&mut i);
        let (out, w) = run(&mut n, &i);
        assert!(out.is_empty());
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn nul_in_names_is_invalid() {
        let (mut n, _) = start(3);
        let (out, w) = run(&mut n, &go(b"a\0", vec![]));
        assert_eq!(w, Want::Read);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXPORT_NAME, b"a\0");
        let (out, w) = run(&mut n, &i);
        assert!(out.is_empty());
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn long_export_names() {
        let name = vec![b'x'; 5000];
        let (mut n, _) = start(3);
        let (out, w) = run(&mut n, &go(&name, vec![]));
        assert_eq!(w, Want::Read);
        assert_eq!(replies(&out)[0].1, rep::ERR_INVALID);
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXPORT_NAME, &name);
        let (_, w) = run(&mut n, &i);
        assert_eq!(w, Want::Closed);
    }

    #[test]
    fn export_name_ends_negotiation() {
        let (mut n, _) = start(1);
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXPORT_NAME, b"a");
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Done);
        assert_eq!(out.len(), 10 + 124);
        let (mut n, _) = start(3);
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Done);
        assert_eq!(out.len(), 10);
        assert_eq!(&out[..8], &(1u64 << 20).to_be_bytes());
        let mut n2 = start(3).0;
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXPORT_NAME, b"zzz");
        assert_eq!(run(&mut n2, &i).1, Want::Closed);
    }

    #[test]
    fn abort_acks_and_closes() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        encode_option(&mut i, opt::ABORT, &[]);
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Closed);
        assert_eq!(replies(&out), vec![(opt::ABORT, rep::ACK, vec![])]);
    }

    #[test]
    fn eof_closes() {
        let (mut n, _) = start(3);
        n.received(0, &OneExport);
        assert_eq!(n.want(), Want::Closed);
    }

    #[test]
    fn no_sr_refuses_structured_replies() {
        let mut n = Negotiation::new(Config {
            no_structured_replies: true,
            ..Config::default()
        });
        let _ = run(&mut n, &[0, 0, 0, 3]);
        let mut i = Vec::new();
        encode_option(&mut i, opt::STRUCTURED_REPLY, &[]);
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Read);
        assert_eq!(replies(&out)[0].1, rep::ERR_UNSUP);
        let (_, w) = run(&mut n, &go(b"", vec![]));
        assert_eq!(w, Want::Done);
        let res = n.take_result().unwrap();
        assert!(!res.structured_replies);
        assert_eq!(res.tx_flags & tx_flags::SEND_DF, 0);
    }

    #[test]
    fn extended_headers_imply_structured_replies() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXTENDED_HEADERS, &[]);
        encode_option(&mut i, opt::STRUCTURED_REPLY, &[]);
        encode_option(&mut i, opt::EXTENDED_HEADERS, &[]);
        encode_option(&mut i, opt::EXTENDED_HEADERS, b"x");
        i.extend(go(b"a", vec![]));
        let (out, w) = run(&mut n, &i);
        assert_eq!(w, Want::Done);
        let r = replies(&out);
        assert_eq!(r[0], (opt::EXTENDED_HEADERS, rep::ACK, vec![]));
        // No downgrade to structured replies alone, no second time, and
        // the option takes no payload.
        assert_eq!(r[1].1, rep::ERR_EXT_HEADER_REQD);
        assert_eq!(r[2].1, rep::ERR_INVALID);
        assert_eq!(r[3].1, rep::ERR_INVALID);
        let res = n.take_result().unwrap();
        assert!(res.extended_headers && res.structured_replies);
        assert_ne!(res.tx_flags & tx_flags::BLOCK_STATUS_PAYLOAD, 0);
        assert_ne!(res.tx_flags & tx_flags::SEND_DF, 0);
    }

    #[test]
    fn export_name_after_extended_headers_hangs_up() {
        let (mut n, _) = start(3);
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXTENDED_HEADERS, &[]);
        encode_option(&mut i, opt::EXPORT_NAME, b"a");
        let (_, w) = run(&mut n, &i);
        assert_eq!(w, Want::Closed);
        assert!(n.take_result().is_none());
    }

    #[test]
    fn extended_headers_can_be_refused() {
        for cfg in [
            Config {
                no_extended_headers: true,
                ..Config::default()
            },
            Config {
                no_structured_replies: true,
                ..Config::default()
            },
        ] {
            let mut n = Negotiation::new(cfg);
            let _ = run(&mut n, &[0, 0, 0, 3]);
            let mut i = Vec::new();
            encode_option(&mut i, opt::EXTENDED_HEADERS, &[]);
            let (out, _) = run(&mut n, &i);
            assert_eq!(replies(&out)[0].1, rep::ERR_UNSUP);
            let (_, w) = run(&mut n, &go(b"", vec![]));
            assert_eq!(w, Want::Done);
            let res = n.take_result().unwrap();
            assert!(!res.extended_headers);
            assert_eq!(res.tx_flags & tx_flags::BLOCK_STATUS_PAYLOAD, 0);
        }
    }

    #[test]
    fn oldstyle_greeting_ends_negotiation() {
        let mut n = Negotiation::oldstyle(&OneExport);
        let (out, w) = run(&mut n, &[]);
        assert_eq!(w, Want::Done);
        assert_eq!(out.len(), 16 + 8 + 4 + 124);
        assert_eq!(&out[..8], &NBDMAGIC.to_be_bytes());
        assert_eq!(&out[8..16], &0x0000_4202_8186_1253u64.to_be_bytes());
        assert_eq!(&out[16..24], &(1u64 << 20).to_be_bytes());
        let flags = u32::from_be_bytes(out[24..28].try_into().unwrap());
        assert_eq!(
            flags,
            (tx_flags::HAS_FLAGS | tx_flags::SEND_FLUSH | tx_flags::CAN_MULTI_CONN) as u32
        );
        assert!(out[28..].iter().all(|&b| b == 0));
        let res = n.take_result().unwrap();
        assert!(!res.structured_replies && !res.fixed_newstyle);
    }

    #[test]
    fn pre_negotiated_sends_nothing_and_is_done() {
        let mut n = Negotiation::pre_negotiated(&OneExport);
        assert_eq!(n.want(), Want::Done);
        assert!(n.output().is_empty());
        let res = n.take_result().unwrap();
        assert!(!res.structured_replies && res.meta_context.is_none());
        assert_eq!(res.details.size, 1 << 20);
        assert_eq!(
            res.tx_flags,
            tx_flags::HAS_FLAGS | tx_flags::SEND_FLUSH | tx_flags::CAN_MULTI_CONN
        );
    }

    /// Refuses to open export "a" until `allow` is set.
    struct Picky {
        allow: std::cell::Cell<bool>,
    }
    impl Exports for Picky {
        fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
            OneExport.list()
        }
        fn lookup(&self, name: &[u8]) -> Result<ExportDetails, String> {
            OneExport.lookup(name)
        }
        fn open(&self, _name: &[u8]) -> Result<(), String> {
            if self.allow.get() {
                Ok(())
            } else {
                Err("go away".into())
            }
        }
    }

    #[test]
    fn open_failure_is_an_error_reply_or_a_hang_up() {
        let picky = Picky {
            allow: std::cell::Cell::new(false),
        };
        let mut n = Negotiation::new(Config::default());
        let o = n.output().len();
        n.output_done(o);
        n.feed(&[0, 0, 0, 3], &picky);
        n.feed(&go(b"a", vec![]), &picky);
        let out = n.output().to_vec();
        n.output_done(out.len());
        assert_eq!(
            replies(&out),
            vec![(opt::GO, rep::ERR_UNKNOWN, b"go away".to_vec())]
        );
        assert_eq!(n.want(), Want::Read);
        picky.allow.set(true);
        n.feed(&go(b"a", vec![]), &picky);
        assert_eq!(n.want(), Want::Write);
        let out = n.output().to_vec();
        n.output_done(out.len());
        assert_eq!(n.want(), Want::Done);
        // EXPORT_NAME cannot carry an error: the client is disconnected.
        picky.allow.set(false);
        let mut n = Negotiation::new(Config::default());
        let o = n.output().len();
        n.output_done(o);
        n.feed(&[0, 0, 0, 3], &picky);
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXPORT_NAME, b"a");
        n.feed(&i, &picky);
        assert_eq!(n.want(), Want::Closed);
        // Oldstyle and pre-negotiated: closed at once.
        let n = Negotiation::oldstyle(&picky);
        assert_eq!(n.want(), Want::Closed);
        let n = Negotiation::pre_negotiated(&picky);
        assert_eq!(n.want(), Want::Closed);
        assert!(n.output().is_empty());
    }

    #[test]
    fn caps_from_backend_read_only() {
        struct B;
        impl Backend for B {
            fn size(&self) -> BackendResult<u64> {
                Ok(0)
            }
            fn pread(&self, _: &mut [u8], _: u64) -> BackendResult<()> {
                Ok(())
            }
            fn can_write(&self) -> BackendResult<bool> {
                Ok(true)
            }
            fn can_trim(&self) -> BackendResult<bool> {
                Ok(true)
            }
        }
        let c = Caps::from_backend(&B, false).unwrap();
        assert!(c.trim && !c.read_only);
        let c = Caps::from_backend(&B, true).unwrap();
        assert!(!c.trim && c.read_only);
        assert_ne!(c.tx_flags(false, false) & tx_flags::READ_ONLY, 0);
    }
}

#[cfg(test)]
mod tls_tests {
    use super::*;
    use crate::wire::consts::{opt, rep};
    use crate::wire::option::{encode_option, OptionReplyHeader, OPTION_REPLY_HEADER_LEN};

    struct OneExport;
    impl Exports for OneExport {
        fn list(&self) -> Vec<(Vec<u8>, Vec<u8>)> {
            panic!("listed exports before TLS")
        }
        fn lookup(&self, _: &[u8]) -> Result<ExportDetails, String> {
            Ok(ExportDetails {
                size: 4096,
                ..Default::default()
            })
        }
    }

    fn drain(n: &mut Negotiation) -> Vec<(u32, u32)> {
        let mut out = Vec::new();
        while n.want() == Want::Write {
            let o = n.output().to_vec();
            n.output_done(o.len());
            out.extend_from_slice(&o);
        }
        let mut r = Vec::new();
        let mut o = &out[..];
        if o.len() >= 18 && o[..8] == *b"NBDMAGIC" {
            o = &o[18..];
        }
        while o.len() >= OPTION_REPLY_HEADER_LEN {
            let h = OptionReplyHeader::decode(o[..OPTION_REPLY_HEADER_LEN].try_into().unwrap())
                .unwrap();
            r.push((h.option, h.reply_type));
            o = &o[OPTION_REPLY_HEADER_LEN + h.len as usize..];
        }
        r
    }

    /// Feeds `input`, sending replies as they come; returns the replies.
    fn talk(n: &mut Negotiation, mut input: &[u8]) -> Vec<(u32, u32)> {
        let mut r = Vec::new();
        loop {
            r.extend(drain(n));
            if input.is_empty() || n.want() != Want::Read {
                return r;
            }
            let k = n.feed(input, &OneExport);
            input = &input[k..];
        }
    }

    fn tls_server(tls: Tls) -> Negotiation {
        let mut n = Negotiation::new(Config {
            tls,
            ..Config::default()
        });
        drain(&mut n);
        n.feed(&[0, 0, 0, 3], &OneExport);
        n
    }

    #[test]
    fn require_refuses_everything_before_starttls() {
        let mut n = tls_server(Tls::Require);
        let mut i = Vec::new();
        for o in [
            opt::LIST,
            opt::INFO,
            opt::GO,
            opt::STRUCTURED_REPLY,
            opt::SET_META_CONTEXT,
            99,
        ] {
            encode_option(&mut i, o, &[]);
        }
        let r = talk(&mut n, &i);
        assert_eq!(r.len(), 6);
        assert!(r.iter().all(|(_, t)| *t == rep::ERR_TLS_REQD), "{r:?}");
        // EXPORT_NAME cannot be refused: hang up.
        let mut i = Vec::new();
        encode_option(&mut i, opt::EXPORT_NAME, b"");
        talk(&mut n, &i);
        assert_eq!(n.want(), Want::Closed);
    }

    #[test]
    fn starttls_then_options_inside_tls() {
        let mut n = tls_server(Tls::Require);
        let mut i = Vec::new();
        encode_option(&mut i, opt::STARTTLS, &[]);
        // Bytes after STARTTLS are not read in plain text.
        encode_option(&mut i, opt::GO, &[0, 0, 0, 0, 0, 0]);
        let used = n.feed(&i, &OneExport);
        assert_eq!(used, 16);
        assert_eq!(n.want(), Want::Write);
        assert_eq!(drain(&mut n), vec![(opt::STARTTLS, rep::ACK)]);
        assert_eq!(n.want(), Want::StartTls);
        assert!(n.recv_buf().is_empty());
        n.tls_done();
        assert!(n.tls_active());
        let mut i = Vec::new();
        encode_option(&mut i, opt::STARTTLS, &[]);
        encode_option(&mut i, opt::GO, &[0, 0, 0, 0, 0, 0]);
        let r = talk(&mut n, &i);
        assert_eq!(r[0], (opt::STARTTLS, rep::ERR_INVALID));
        assert_eq!(r.last(), Some(&(opt::GO, rep::ACK)));
        assert_eq!(n.want(), Want::Done);
    }

    #[test]
    fn off_refuses_starttls_and_on_allows_plain_text() {
        let mut n = tls_server(Tls::Off);
        let mut i = Vec::new();
        encode_option(&mut i, opt::STARTTLS, &[]);
        assert_eq!(talk(&mut n, &i), vec![(opt::STARTTLS, rep::ERR_POLICY)]);
        let mut n = tls_server(Tls::On);
        let mut i = Vec::new();
        encode_option(&mut i, opt::GO, &[0, 0, 0, 0, 0, 0]);
        assert_eq!(talk(&mut n, &i).last(), Some(&(opt::GO, rep::ACK)));
    }
}

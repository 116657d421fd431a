//! The handshake, from the server's greeting to the transmission phase.
//!
//! Oldstyle servers send everything in their greeting. Newstyle servers
//! send their handshake flags; we answer with ours and, when both sides
//! speak fixed newstyle, run these options in order:
//!
//! 0. STARTTLS, if TLS is allowed or required. On ACK the client stops
//!    until the driver has run the TLS handshake
//!    ([`Client::tls_handshake_wanted`], [`Client::tls_handshake_done`]),
//!    then forgets everything the server said in plain text and runs the
//!    options below inside TLS. STARTTLS is never sent twice. A refusal is
//!    fatal when TLS is required and means plain text when it is allowed;
//!    with TLS required nothing but STARTTLS is sent before TLS is up, and
//!    a server that cannot negotiate options (oldstyle, or newstyle without
//!    the fixed bit) is refused outright;
//! 1. EXTENDED_HEADERS, if asked for (with structured replies); on ACK
//!    structured replies come with it; on a refusal, or when only
//!    structured replies are asked for, STRUCTURED_REPLY follows, and
//!    without either replies stay simple, as libnbd 1.24 does;
//! 2. SET_META_CONTEXT, if contexts were asked for and step 1 succeeded;
//! 3. GO, which ends negotiation; a server that does not know GO gets
//!    EXPORT_NAME instead, as does a server without fixed newstyle.
//!
//! In option mode (nbd_set_opt_mode) the client pauses after step 1 and
//! the caller chooses: GO (steps 2 and 3), INFO (step 2, then INFO), LIST,
//! LIST_META_CONTEXT, ABORT, or one of the steps on its own: STARTTLS,
//! STRUCTURED_REPLY, SET_META_CONTEXT. The outcome of each is an
//! [`Event::OptionDone`]; a server's refusal is the option's failure and
//! the client pauses again, whereas a malformed reply is fatal as always.
//!
//! Step 2 is skipped when [`Config::request_meta_context`] is off: then
//! only the caller's own SET_META_CONTEXT selects contexts, and what it
//! selected is kept for GO.

use super::state::TlsState;
use super::state::{Dest, NegStep, Stage};
use super::{Client, CommandBuffer, Error, Protocol, Tls};
use crate::errno::host;
use crate::limits::{MAX_EXPORT_SIZE, MAX_OPTION_LEN};
use crate::wire::codec::PutBe;
use crate::wire::consts::{client_flags, handshake_flags, info, tx_flags};
use crate::wire::handshake::{self, GreetingKind};
use crate::wire::option::{
    encode_option, parse_rep_meta_context, parse_rep_server, GoRequest, InfoReply,
    MetaContextRequest, OptionReplyHeader, OPTION_REPLY_HEADER_LEN,
};
use crate::wire::{OptionCode, ReplyType};

/// Replies a server may send to one option before we call it hostile. A
/// SET_META_CONTEXT can legitimately answer with one reply per context.
const MAX_REPLIES_PER_OPTION: usize = 65_536;

/// The option being negotiated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Opt {
    StartTls,
    ExtendedHeaders,
    StructuredReply,
    SetMetaContext,
    Go,
    Info,
    ExportName,
    List,
    ListMetaContext,
}

impl Opt {
    /// The option's code on the wire.
    fn code(self) -> OptionCode {
        match self {
            Opt::StartTls => OptionCode::StartTls,
            Opt::ExtendedHeaders => OptionCode::ExtendedHeaders,
            Opt::StructuredReply => OptionCode::StructuredReply,
            Opt::SetMetaContext => OptionCode::SetMetaContext,
            Opt::Go => OptionCode::Go,
            Opt::Info => OptionCode::Info,
            Opt::ExportName => OptionCode::ExportName,
            Opt::List => OptionCode::List,
            Opt::ListMetaContext => OptionCode::ListMetaContext,
        }
    }
}

/// What the caller asked for in option mode.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UserOption {
    /// NBD_OPT_EXTENDED_HEADERS (nbd_opt_extended_headers): `Ok(1)` when
    /// the server agreed, `Ok(0)` when it refused.
    ExtendedHeaders,
    Go,
    Info,
    List,
    ListMetaContext,
    Abort,
    /// NBD_OPT_STARTTLS: Ok(1) once the TLS handshake is done.
    StartTls,
    /// NBD_OPT_STRUCTURED_REPLY: Ok(1) when the server agreed.
    StructuredReply,
    /// NBD_OPT_SET_META_CONTEXT: Ok(number of contexts selected).
    SetMetaContext,
}

/// Negotiation progress.
#[derive(Debug, Default)]
pub(super) struct Negotiation {
    current: Option<Opt>,
    reply: Option<OptionReplyHeader>,
    replies: usize,
    no_zeroes: bool,
    /// Option mode: waiting for the caller.
    pub(super) paused: bool,
    /// Option mode: the caller's option under way.
    user: Option<UserOption>,
    /// Entries listed so far by LIST or LIST_META_CONTEXT.
    listed: u32,
    /// NBD_OPT_ABORT is on its way out; close once it is sent.
    pub(super) aborting: bool,
    /// The caller's own queries for the option under way
    /// (nbd_opt_*_meta_context_queries), instead of the configured ones.
    queries: Option<Vec<Vec<u8>>>,
}

impl Negotiation {
    /// The option under way, if any (for the debug trace, trace.rs).
    pub(super) fn current_option(&self) -> Option<Opt> {
        self.current
    }
}

impl<C: CommandBuffer> Client<C> {
    pub(super) fn negotiate_step(&mut self, step: NegStep, b: &[u8]) -> Result<(), Error> {
        match step {
            NegStep::GreetingPrefix => {
                let prefix: &[u8; 16] = b.try_into().map_err(|_| short())?;
                self.stats.chunks_received += 1;
                match handshake::parse_greeting_prefix(prefix).map_err(Self::protocol_error)? {
                    GreetingKind::Oldstyle => {
                        self.protocol = Some(Protocol::Oldstyle);
                        self.refuse_plain_text("server is oldstyle")?;
                        self.expect(handshake::OLDSTYLE_REST_LEN, NegStep::OldstyleRest);
                    }
                    GreetingKind::Newstyle => {
                        self.expect(handshake::NEWSTYLE_REST_LEN, NegStep::NewstyleFlags);
                    }
                }
            }
            NegStep::OldstyleRest => {
                let rest = b.try_into().map_err(|_| short())?;
                let (size, flags) = handshake::parse_oldstyle_rest(rest);
                self.stage.facts_mut().size = size;
                // The low 16 bits are the transmission flags.
                self.stage.facts_mut().flags = flags as u16;
                self.finish_negotiation()?;
            }
            NegStep::NewstyleFlags => {
                let server = u16::from_be_bytes([b[0], b[1]]);
                let ours = u32::from(server & handshake_flags::ALL)
                    & self.config.handshake_flags
                    & client_flags::ALL;
                self.negotiation.no_zeroes = ours & client_flags::NO_ZEROES != 0;
                self.out.put_u32(ours);
                if ours & client_flags::FIXED_NEWSTYLE != 0 {
                    self.protocol = Some(Protocol::FixedNewstyle);
                    self.next_option();
                } else {
                    self.protocol = Some(Protocol::Newstyle);
                    self.refuse_plain_text("server is not using fixed newstyle")?;
                    // Option mode still stops for the caller, as libnbd's
                    // does; only GO (sent as EXPORT_NAME) or ABORT can follow.
                    if self.config.opt_mode {
                        self.pause();
                    } else {
                        self.start_option(Opt::ExportName);
                    }
                }
            }
            NegStep::OptionReplyHeader => {
                let h: &[u8; OPTION_REPLY_HEADER_LEN] = b.try_into().map_err(|_| short())?;
                let h = OptionReplyHeader::decode(h).map_err(Self::protocol_error)?;
                let want = self.negotiation.current.map(|o| o.code().to_wire());
                if Some(h.option) != want {
                    return Err(Error::new(
                        host::EPROTO,
                        format!(
                            "handshake: server replied to option {} while we sent {}",
                            h.option,
                            want.unwrap_or(0)
                        ),
                    ));
                }
                if h.len as usize > MAX_OPTION_LEN {
                    return Err(Error::new(
                        host::EPROTO,
                        format!("handshake: option reply of {} bytes is too long", h.len),
                    ));
                }
                self.negotiation.replies += 1;
                if self.negotiation.replies > MAX_REPLIES_PER_OPTION {
                    return Err(Error::new(
                        host::EPROTO,
                        "handshake: server sent too many replies to one option",
                    ));
                }
                self.negotiation.reply = Some(h);
                self.expect_payload(Dest::Scratch, h.len as usize, NegStep::OptionReplyPayload);
            }
            NegStep::OptionReplyPayload => {
                let payload = std::mem::take(&mut self.scratch);
                let r = self.handle_option_reply(&payload);
                self.scratch = payload;
                r?;
            }
            NegStep::ExportNameReply => {
                let reply = b.try_into().map_err(|_| short())?;
                let (size, flags) = handshake::parse_export_name_reply(reply);
                self.stage.facts_mut().size = size;
                self.stage.facts_mut().flags = flags;
                if self.negotiation.no_zeroes {
                    self.finish_negotiation()?;
                } else {
                    self.expect(handshake::ZEROES_LEN, NegStep::ExportNameZeroes);
                }
            }
            NegStep::ExportNameZeroes => self.finish_negotiation()?,
        }
        Ok(())
    }

    /// Picks the option that follows the current one and sends it.
    fn next_option(&mut self) {
        let meta_or_go = if self.wants_meta_context() {
            Opt::SetMetaContext
        } else {
            Opt::Go
        };
        let after_meta = if self.negotiation.user == Some(UserOption::Info) {
            Opt::Info
        } else {
            Opt::Go
        };
        let next = match self.negotiation.current {
            None if self.tls == TlsState::NotTried && self.config.tls != Tls::Disable => {
                Opt::StartTls
            }
            None if self.config.request_structured_replies
                && self.config.request_extended_headers =>
            {
                Opt::ExtendedHeaders
            }
            None if self.config.request_structured_replies => Opt::StructuredReply,
            Some(Opt::ExtendedHeaders) if !self.stage.facts().extended_headers => {
                Opt::StructuredReply
            }
            None | Some(Opt::ExtendedHeaders | Opt::StructuredReply) if self.config.opt_mode => {
                self.pause();
                return;
            }
            None | Some(Opt::ExtendedHeaders | Opt::StructuredReply) => meta_or_go,
            Some(Opt::SetMetaContext) => after_meta,
            _ => return,
        };
        self.start_option(next);
    }

    /// Whether GO or INFO is preceded by our own SET_META_CONTEXT.
    fn wants_meta_context(&self) -> bool {
        self.stage.facts().structured_replies
            && self.config.request_meta_context
            && !self.config.meta_contexts.is_empty()
    }

    /// The meta context queries of the option under way.
    fn queries(&self) -> &[Vec<u8>] {
        self.negotiation
            .queries
            .as_deref()
            .unwrap_or(&self.config.meta_contexts)
    }

    /// Option mode: wait for the caller's next option.
    fn pause(&mut self) {
        self.negotiation.paused = true;
        self.negotiation.current = None;
        self.rx = super::state::Rx::Idle;
    }

    /// Option mode: the caller's option is finished.
    fn user_done(&mut self, result: Result<u32, Error>) {
        if self.negotiation.user.take().is_some() {
            self.events.push_back(super::Event::OptionDone { result });
        }
        if !self.in_transmission() && self.fatal.is_none() && !self.closed {
            self.pause();
        }
    }

    /// Option mode: runs the caller's option. Fails unless the client is
    /// paused for one (the driver maps that onto libnbd's state errors).
    pub fn start_user_option(&mut self, o: UserOption) -> Result<(), Error> {
        self.start_user_option_with(o, None)
    }

    /// As [`Client::start_user_option`], with the caller's own meta
    /// context queries for LIST_META_CONTEXT or SET_META_CONTEXT in
    /// place of [`Config::meta_contexts`].
    pub fn start_user_option_with(
        &mut self,
        o: UserOption,
        queries: Option<Vec<Vec<u8>>>,
    ) -> Result<(), Error> {
        if !self.negotiation.paused {
            return Err(Error::new(
                host::EINVAL,
                "not in option mode, or an option is already under way",
            ));
        }
        if self.protocol == Some(Protocol::Newstyle) {
            return self.start_unfixed_option(o);
        }
        let sr = self.stage.facts().structured_replies;
        let meta = matches!(o, UserOption::ListMetaContext | UserOption::SetMetaContext);
        if meta && !sr {
            return Err(Error::new(
                host::ENOTSUP,
                "server lacks structured replies, so it cannot negotiate meta contexts",
            ));
        }
        self.negotiation.paused = false;
        self.negotiation.user = Some(o);
        self.negotiation.listed = 0;
        self.negotiation.queries = queries;
        match o {
            UserOption::Go | UserOption::Info => {
                // Forget what an earlier INFO learnt: this answer replaces
                // it. The meta contexts selected are kept: without
                // request_meta_context they are the caller's own choice.
                let structured_replies = self.stage.facts().structured_replies;
                let contexts = std::mem::take(&mut self.stage.facts_mut().meta_contexts);
                let extended_headers = self.stage.facts().extended_headers;
                self.stage = Stage::negotiating();
                self.stage.facts_mut().structured_replies = structured_replies;
                self.stage.facts_mut().extended_headers = extended_headers;
                self.stage.facts_mut().meta_contexts = contexts;
                let first = if self.wants_meta_context() {
                    Opt::SetMetaContext
                } else if o == UserOption::Info {
                    Opt::Info
                } else {
                    Opt::Go
                };
                self.start_option(first);
            }
            UserOption::ExtendedHeaders => self.start_option(Opt::ExtendedHeaders),
            UserOption::List => self.start_option(Opt::List),
            UserOption::ListMetaContext => self.start_option(Opt::ListMetaContext),
            UserOption::SetMetaContext => self.start_option(Opt::SetMetaContext),
            UserOption::StartTls => self.start_option(Opt::StartTls),
            UserOption::StructuredReply => self.start_option(Opt::StructuredReply),
            UserOption::Abort => {
                encode_option(&mut self.out, OptionCode::Abort.to_wire(), &[]);
                self.stats.chunks_sent += 1;
                self.negotiation.aborting = true;
                self.rx = super::state::Rx::Idle;
            }
        }
        Ok(())
    }

    /// Option mode against a server without fixed newstyle, which knows
    /// no option but NBD_OPT_EXPORT_NAME: GO is sent as EXPORT_NAME (the
    /// export, or the end of the connection if the server refuses it),
    /// ABORT cannot be said and leaves the connection dead, and anything
    /// else is ENOTSUP with nothing sent, as in libnbd.
    fn start_unfixed_option(&mut self, o: UserOption) -> Result<(), Error> {
        match o {
            UserOption::Go => {
                self.negotiation.paused = false;
                self.negotiation.user = Some(o);
                self.start_option(Opt::ExportName);
                Ok(())
            }
            UserOption::Abort => {
                self.die(Error::new(
                    host::ENOTSUP,
                    "handshake: server is not using fixed newstyle",
                ));
                Ok(())
            }
            _ => Err(Error::new(
                host::ENOTSUP,
                "server is not using fixed newstyle protocol",
            )),
        }
    }

    fn start_option(&mut self, o: Opt) {
        self.negotiation.current = Some(o);
        self.negotiation.replies = 0;
        self.stats.chunks_sent += 1;
        let name = self.config.export_name.clone();
        match o {
            Opt::StartTls => encode_option(&mut self.out, o.code().to_wire(), &[]),
            Opt::ExtendedHeaders | Opt::StructuredReply => {
                encode_option(&mut self.out, o.code().to_wire(), &[])
            }
            Opt::SetMetaContext => {
                // A new selection replaces the old one, whatever the outcome.
                self.stage.facts_mut().meta_contexts.clear();
                let payload = MetaContextRequest {
                    export_name: &name,
                    queries: self.queries().iter().map(|q| &q[..]).collect(),
                }
                .encode();
                encode_option(&mut self.out, o.code().to_wire(), &payload);
            }
            Opt::List => encode_option(&mut self.out, o.code().to_wire(), &[]),
            Opt::ListMetaContext => {
                let payload = MetaContextRequest {
                    export_name: &name,
                    queries: self.queries().iter().map(|q| &q[..]).collect(),
                }
                .encode();
                encode_option(&mut self.out, o.code().to_wire(), &payload);
            }
            Opt::Go | Opt::Info => {
                let mut info_requests = Vec::new();
                if self.config.request_block_size {
                    info_requests.push(info::BLOCK_SIZE);
                }
                if self.config.full_info {
                    info_requests.push(info::NAME);
                    info_requests.push(info::DESCRIPTION);
                }
                let payload = GoRequest {
                    export_name: &name,
                    info_requests,
                }
                .encode();
                encode_option(&mut self.out, o.code().to_wire(), &payload);
            }
            Opt::ExportName => {
                encode_option(&mut self.out, o.code().to_wire(), &name);
                self.expect(handshake::EXPORT_NAME_REPLY_LEN, NegStep::ExportNameReply);
                return;
            }
        }
        self.expect(OPTION_REPLY_HEADER_LEN, NegStep::OptionReplyHeader);
    }

    fn handle_option_reply(&mut self, payload: &[u8]) -> Result<(), Error> {
        let (Some(o), Some(h)) = (self.negotiation.current, self.negotiation.reply) else {
            return Err(Error::new(
                host::EPROTO,
                "handshake: unexpected option reply",
            ));
        };
        let unexpected = || {
            Error::new(
                host::EPROTO,
                format!(
                    "handshake: unexpected reply type {:#x} to option {}",
                    h.reply_type, h.option
                ),
            )
        };
        match (o, ReplyType::from_wire(h.reply_type)) {
            (Opt::StartTls, ReplyType::Ack) => {
                if !payload.is_empty() {
                    return Err(Error::new(
                        host::EPROTO,
                        "handshake: server's ACK to NBD_OPT_STARTTLS carries a payload",
                    ));
                }
                if self.buffered() != 0 {
                    // Unreachable with exact reads, kept as a guard: bytes
                    // read in plain text must never be taken as TLS's.
                    return Err(Error::new(
                        host::EPROTO,
                        "handshake: server sent data after its ACK to NBD_OPT_STARTTLS",
                    ));
                }
                self.tls = TlsState::Handshake;
                self.negotiation.current = None;
                self.rx = super::state::Rx::Idle;
            }
            (Opt::StartTls, t) if t.is_error() && self.user_is(UserOption::StartTls) => {
                // The caller's own STARTTLS: a refusal is its answer,
                // whatever nbd_set_tls says.
                self.negotiation.current = None;
                self.user_done(Err(option_error(t, payload)));
            }
            (Opt::StartTls, t) if t.is_error() => {
                if self.config.tls == Tls::Require {
                    let why = match t {
                        ReplyType::ErrPolicy => "policy",
                        ReplyType::ErrUnsup => "not supported",
                        _ => "error",
                    };
                    return Err(Error::new(
                        host::ENOTSUP,
                        format!(
                            "handshake: server refused TLS ({why}), but handle TLS setting \
                             is 'require' (2)"
                        ),
                    ));
                }
                self.tls = TlsState::Refused;
                self.negotiation.current = None;
                self.next_option();
            }
            (Opt::ExtendedHeaders, ReplyType::Ack) => {
                if !payload.is_empty() {
                    return Err(Error::new(
                        host::EPROTO,
                        "handshake: server's ACK to NBD_OPT_EXTENDED_HEADERS carries a payload",
                    ));
                }
                // Extended headers imply structured replies.
                self.stage.facts_mut().extended_headers = true;
                self.stage.facts_mut().structured_replies = true;
                if self.negotiation.user.is_some() {
                    self.user_done(Ok(1));
                } else {
                    self.next_option();
                }
            }
            // A refusal leaves what was negotiated before as it was (a
            // second request refused as a duplicate keeps them on).
            (Opt::ExtendedHeaders, t) if t.is_error() => {
                if self.negotiation.user.is_some() {
                    self.user_done(Ok(0));
                } else {
                    self.next_option();
                }
            }
            (Opt::StructuredReply, ReplyType::Ack) => {
                self.stage.facts_mut().structured_replies = true;
                if self.user_is(UserOption::StructuredReply) {
                    self.user_done(Ok(1));
                } else {
                    self.next_option();
                }
            }
            (Opt::StructuredReply, t) if t.is_error() => {
                if self.user_is(UserOption::StructuredReply) {
                    self.user_done(Err(option_error(t, payload)));
                } else {
                    self.next_option();
                }
            }
            (Opt::SetMetaContext, ReplyType::MetaContext) => {
                let (id, name) = parse_rep_meta_context(payload).map_err(Self::protocol_error)?;
                if !answers_a_query(self.queries(), name) {
                    return Err(Error::new(
                        host::EPROTO,
                        "handshake: server replied with a meta context we did not ask for",
                    ));
                }
                self.stage
                    .facts_mut()
                    .meta_contexts
                    .push((id, name.to_vec()));
                if self.user_is(UserOption::SetMetaContext) {
                    self.events.push_back(super::Event::ListedMetaContext {
                        name: name.to_vec(),
                    });
                    self.negotiation.listed += 1;
                }
                self.expect(OPTION_REPLY_HEADER_LEN, NegStep::OptionReplyHeader);
            }
            (Opt::SetMetaContext, ReplyType::Ack) => {
                if self.user_is(UserOption::SetMetaContext) {
                    let n = self.negotiation.listed;
                    self.user_done(Ok(n));
                } else {
                    self.next_option();
                }
            }
            (Opt::SetMetaContext, t) if t.is_error() => {
                self.stage.facts_mut().meta_contexts.clear();
                if self.user_is(UserOption::SetMetaContext) {
                    self.user_done(Err(option_error(t, payload)));
                } else {
                    self.next_option();
                }
            }
            (Opt::Go | Opt::Info, ReplyType::Info) => {
                match InfoReply::decode(payload).map_err(Self::protocol_error)? {
                    InfoReply::Export { size, flags } => {
                        self.stage.facts_mut().size = size;
                        self.stage.facts_mut().flags = flags;
                        if let Stage::Negotiating { got_size, .. } = &mut self.stage {
                            *got_size = true;
                        }
                    }
                    InfoReply::BlockSize {
                        minimum,
                        preferred,
                        maximum,
                    } => {
                        self.stage.facts_mut().block_size = Some((minimum, preferred, maximum));
                    }
                    InfoReply::Name(n) => self.stage.facts_mut().canonical_name = Some(n.to_vec()),
                    InfoReply::Description(d) => {
                        self.stage.facts_mut().description = Some(d.to_vec())
                    }
                    InfoReply::Unknown(_) => {}
                }
                self.expect(OPTION_REPLY_HEADER_LEN, NegStep::OptionReplyHeader);
            }
            (Opt::Go | Opt::Info, ReplyType::Ack) => {
                if !matches!(self.stage, Stage::Negotiating { got_size: true, .. }) {
                    return Err(Error::new(
                        host::EPROTO,
                        "handshake: server acknowledged NBD_OPT_GO without sending the export's size",
                    ));
                }
                if o == Opt::Go {
                    self.finish_negotiation()?;
                } else {
                    self.check_export()?;
                    if let Stage::Negotiating { pending, info, .. } = &mut self.stage {
                        *info = Some(pending.clone());
                    }
                    self.user_done(Ok(0));
                }
            }
            // EXPORT_NAME is no fallback once extended headers are on:
            // proto.md forbids it then.
            (Opt::Go, ReplyType::ErrUnsup) if !self.stage.facts().extended_headers => {
                self.start_option(Opt::ExportName)
            }
            (Opt::Go | Opt::Info, t) if t.is_error() => {
                let e = option_error(t, payload);
                if self.negotiation.user.is_some() {
                    self.user_done(Err(e));
                } else {
                    return Err(e);
                }
            }
            (Opt::List, ReplyType::Server) => {
                let (name, description) =
                    parse_rep_server(payload).map_err(Self::protocol_error)?;
                self.events.push_back(super::Event::ListedExport {
                    name: name.to_vec(),
                    description: description.to_vec(),
                });
                self.negotiation.listed += 1;
                self.expect(OPTION_REPLY_HEADER_LEN, NegStep::OptionReplyHeader);
            }
            (Opt::ListMetaContext, ReplyType::MetaContext) => {
                let (_, name) = parse_rep_meta_context(payload).map_err(Self::protocol_error)?;
                self.events.push_back(super::Event::ListedMetaContext {
                    name: name.to_vec(),
                });
                self.negotiation.listed += 1;
                self.expect(OPTION_REPLY_HEADER_LEN, NegStep::OptionReplyHeader);
            }
            (Opt::List | Opt::ListMetaContext, ReplyType::Ack) => {
                let n = self.negotiation.listed;
                self.user_done(Ok(n));
            }
            (Opt::List | Opt::ListMetaContext, t) if t.is_error() => {
                self.user_done(Err(option_error(t, payload)));
            }
            _ => return Err(unexpected()),
        }
        Ok(())
    }

    /// Whether the caller's option under way is `o`.
    fn user_is(&self, o: UserOption) -> bool {
        self.negotiation.user == Some(o)
    }

    /// Checks and tidies what the server told us about the export.
    fn check_export(&mut self) -> Result<(), Error> {
        let e = self.stage.facts_mut();
        if e.size > MAX_EXPORT_SIZE {
            return Err(Error::new(
                host::EPROTO,
                format!(
                    "handshake: server claims an export size of {} bytes, over 2^63",
                    e.size
                ),
            ));
        }
        if e.flags & tx_flags::HAS_FLAGS == 0 {
            e.flags = 0;
        }
        if !e.structured_replies {
            // DF only means something with structured replies.
            e.flags &= !tx_flags::SEND_DF;
        }
        Ok(())
    }

    /// A server that cannot negotiate options cannot do TLS either.
    fn refuse_plain_text(&self, why: &str) -> Result<(), Error> {
        if self.config.tls == Tls::Require {
            return Err(Error::new(
                host::ENOTSUP,
                format!("handshake: {why}, but handle TLS setting is 'require' (2)"),
            ));
        }
        Ok(())
    }

    /// The driver finished the TLS handshake: what the server said in
    /// plain text is forgotten (a man in the middle may have written it)
    /// and the options run again, inside TLS.
    pub fn tls_handshake_done(&mut self) {
        if self.tls != TlsState::Handshake || self.fatal.is_some() || self.closed {
            return;
        }
        self.tls = TlsState::Active;
        self.stage = Stage::negotiating();
        self.negotiation.current = None;
        if self.user_is(UserOption::StartTls) {
            // The caller's own STARTTLS: back to the caller, who chooses
            // what to negotiate inside TLS.
            self.user_done(Ok(1));
        } else {
            self.next_option();
        }
    }

    /// Enters the transmission phase.
    fn finish_negotiation(&mut self) -> Result<(), Error> {
        self.check_export()?;
        let export = std::mem::take(self.stage.facts_mut());
        self.stage = Stage::Transmission(export);
        self.negotiation.paused = false;
        self.expect_reply_header();
        self.user_done(Ok(0));
        Ok(())
    }
}

/// Whether a context the server selected answers one of our queries:
/// the same name, or a name in a namespace we asked for whole ("base:").
fn answers_a_query(queries: &[Vec<u8>], name: &[u8]) -> bool {
    queries
        .iter()
        .any(|q| q[..] == *name || (q.ends_with(b":") && name.starts_with(q)))
}

fn short() -> Error {
    Error::new(host::EPROTO, "handshake: internal length mismatch")
}

/// The error for a server's refusal of GO, with the server's own message
/// when it sent one.
fn option_error(t: ReplyType, payload: &[u8]) -> Error {
    let (errno, what) = match t {
        ReplyType::ErrPolicy => (host::EPERM, "server policy prevents this export"),
        ReplyType::ErrInvalid => (host::EINVAL, "server says the request is invalid"),
        ReplyType::ErrPlatform => (
            host::ENOTSUP,
            "server does not support this on its platform",
        ),
        ReplyType::ErrTlsReqd => (host::ENOTSUP, "server requires TLS"),
        ReplyType::ErrUnknown => (host::ENOENT, "server has no export of that name"),
        ReplyType::ErrShutdown => (host::ESHUTDOWN, "server is shutting down"),
        ReplyType::ErrBlockSizeReqd => (host::EINVAL, "server requires a block size"),
        ReplyType::ErrTooBig => (host::ERANGE, "request too big for the server"),
        _ => (host::EINVAL, "server refused the export"),
    };
    let msg = String::from_utf8_lossy(&payload[..payload.len().min(1024)]);
    if msg.is_empty() {
        Error::new(errno, format!("handshake: {what}"))
    } else {
        Error::new(errno, format!("handshake: {what}: {msg}"))
    }
}

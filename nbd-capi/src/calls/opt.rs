//! Option mode (nbd_set_opt_mode): the caller's options while the
//! handle is negotiating. Each option is started on the core with the
//! handle's current settings (the export name and meta contexts may have
//! changed since connecting); the sync calls wait for the core's
//! OptionDone, the aio ones return at once and report through the
//! completion callback.

use crate::callbacks::{self, no_completion, OptCallbacks};
use crate::errors::Error;
use crate::handle::{conn_mut, fatal, nbd_handle, Held};
use nbd_core::client::{Phase, UserOption};
use std::ffi::CStr;
use std::os::raw::c_int;

/// Starts option `o` with its callbacks. Refused: the callbacks are left
/// in `cbs`, and their frees run when the body returns, still in the
/// wrapper's critical section (as libnbd's FREE_CALLBACK).
fn start(g: &mut Held<'_>, o: UserOption, cbs: &mut Option<OptCallbacks>) -> Result<(), Error> {
    start_with(g, o, None, cbs)
}

/// As `start`, with the caller's own meta context queries.
fn start_with(
    g: &mut Held<'_>,
    o: UserOption,
    queries: Option<Vec<&CStr>>,
    cbs: &mut Option<OptCallbacks>,
) -> Result<(), Error> {
    let config = g.settings.core_config();
    let conn = conn_mut(g)?;
    *conn.client.config_mut() = config;
    let queries = queries.map(|q| q.iter().map(|c| c.to_bytes().to_vec()).collect());
    conn.client.start_user_option_with(o, queries)?;
    conn.opt = cbs.take();
    conn.opt_result = None;
    conn.flush_writes();
    Ok(())
}

/// Runs option `o` and waits for its outcome.
fn run(
    h: &nbd_handle,
    g: &mut Held<'_>,
    o: UserOption,
    cbs: Option<OptCallbacks>,
) -> Result<u32, Error> {
    run_with(h, g, o, None, cbs)
}

/// As `run`, with the caller's own meta context queries.
fn run_with(
    h: &nbd_handle,
    g: &mut Held<'_>,
    o: UserOption,
    queries: Option<Vec<&CStr>>,
    mut cbs: Option<OptCallbacks>,
) -> Result<u32, Error> {
    start_with(g, o, queries, &mut cbs)?;
    h.wait_for(g, |c| {
        if let Some(r) = c.opt_result.take() {
            return Some(r);
        }
        match c.client.phase() {
            Phase::Dead | Phase::Closed => Some(Err(fatal(c))),
            _ => None,
        }
    })
}

fn cbs(
    list: Option<callbacks::List>,
    context: Option<callbacks::Context>,
    completion: callbacks::Completion,
) -> Option<OptCallbacks> {
    Some(OptCallbacks {
        list,
        context,
        completion,
    })
}

/// NBD_OPT_EXTENDED_HEADERS in option mode: whether the server agreed.
pub fn opt_extended_headers(h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    run(h, g, UserOption::ExtendedHeaders, None).map(|n| n != 0)
}

pub fn aio_opt_extended_headers(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    start_aio(
        g,
        UserOption::ExtendedHeaders,
        cbs(None, None, completion_callback),
    )
}

pub fn opt_go(h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    run(h, g, UserOption::Go, None).map(|_| ())
}

pub fn opt_info(h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    run(h, g, UserOption::Info, None).map(|_| ())
}

pub fn opt_list(
    h: &nbd_handle,
    g: &mut Held<'_>,
    list_callback: callbacks::List,
) -> Result<c_int, Error> {
    let c = cbs(Some(list_callback), None, no_completion());
    run(h, g, UserOption::List, c).map(|n| n as c_int)
}

pub fn opt_list_meta_context(
    h: &nbd_handle,
    g: &mut Held<'_>,
    context_callback: callbacks::Context,
) -> Result<c_int, Error> {
    let c = cbs(None, Some(context_callback), no_completion());
    run(h, g, UserOption::ListMetaContext, c).map(|n| n as c_int)
}

/// Ends negotiation with NBD_OPT_ABORT and waits until the handle is
/// closed, or dead: like libnbd's, it waits only for negotiation to be
/// over, so a server without fixed newstyle (to which ABORT cannot be
/// said, and the handle dies at once) is no error.
pub fn opt_abort(h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    start(g, UserOption::Abort, &mut None)?;
    h.wait_for(g, |c| match c.client.phase() {
        Phase::Closed | Phase::Dead => Some(Ok(())),
        _ => None,
    })
}

fn start_aio(g: &mut Held<'_>, o: UserOption, mut c: Option<OptCallbacks>) -> Result<(), Error> {
    start(g, o, &mut c)
}

pub fn aio_opt_go(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    start_aio(g, UserOption::Go, cbs(None, None, completion_callback))
}

pub fn aio_opt_info(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    start_aio(g, UserOption::Info, cbs(None, None, completion_callback))
}

pub fn aio_opt_list(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    list_callback: callbacks::List,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    let c = cbs(Some(list_callback), None, completion_callback);
    start_aio(g, UserOption::List, c)
}

pub fn aio_opt_list_meta_context(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    context_callback: callbacks::Context,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    let c = cbs(None, Some(context_callback), completion_callback);
    start_aio(g, UserOption::ListMetaContext, c)
}

pub fn aio_opt_abort(_h: &nbd_handle, g: &mut Held<'_>) -> Result<(), Error> {
    start_aio(g, UserOption::Abort, None)
}

/// Runs an option whose answer is yes or no: the server's refusal is
/// "no" (false), and only a connection that could not go on is an error.
fn run_yes_no(h: &nbd_handle, g: &mut Held<'_>, o: UserOption) -> Result<bool, Error> {
    match run(h, g, o, None) {
        Ok(_) => Ok(true),
        Err(e) => {
            let paused = g
                .conn
                .as_ref()
                .is_some_and(|c| c.client.phase() == Phase::Negotiating);
            if paused {
                Ok(false)
            } else {
                Err(e)
            }
        }
    }
}

/// NBD_OPT_STARTTLS, then the TLS handshake: true once TLS is up, false
/// if the server refused.
pub fn opt_starttls(h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    run_yes_no(h, g, UserOption::StartTls)
}

/// NBD_OPT_STRUCTURED_REPLY: true if the server agreed.
pub fn opt_structured_reply(h: &nbd_handle, g: &mut Held<'_>) -> Result<bool, Error> {
    run_yes_no(h, g, UserOption::StructuredReply)
}

/// NBD_OPT_SET_META_CONTEXT with the contexts added by
/// nbd_add_meta_context: the number selected, each also passed to the
/// callback. They are what nbd_opt_go uses when
/// nbd_set_request_meta_context is off.
pub fn opt_set_meta_context(
    h: &nbd_handle,
    g: &mut Held<'_>,
    context_callback: callbacks::Context,
) -> Result<c_int, Error> {
    let c = cbs(None, Some(context_callback), no_completion());
    run(h, g, UserOption::SetMetaContext, c).map(|n| n as c_int)
}

pub fn opt_set_meta_context_queries(
    h: &nbd_handle,
    g: &mut Held<'_>,
    queries: Vec<&CStr>,
    context_callback: callbacks::Context,
) -> Result<c_int, Error> {
    let c = cbs(None, Some(context_callback), no_completion());
    run_with(h, g, UserOption::SetMetaContext, Some(queries), c).map(|n| n as c_int)
}

pub fn opt_list_meta_context_queries(
    h: &nbd_handle,
    g: &mut Held<'_>,
    queries: Vec<&CStr>,
    context_callback: callbacks::Context,
) -> Result<c_int, Error> {
    let c = cbs(None, Some(context_callback), no_completion());
    run_with(h, g, UserOption::ListMetaContext, Some(queries), c).map(|n| n as c_int)
}

pub fn aio_opt_starttls(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    start_aio(
        g,
        UserOption::StartTls,
        cbs(None, None, completion_callback),
    )
}

pub fn aio_opt_structured_reply(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    let c = cbs(None, None, completion_callback);
    start_aio(g, UserOption::StructuredReply, c)
}

pub fn aio_opt_set_meta_context(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    context_callback: callbacks::Context,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    let c = cbs(None, Some(context_callback), completion_callback);
    start_aio(g, UserOption::SetMetaContext, c)
}

pub fn aio_opt_set_meta_context_queries(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    queries: Vec<&CStr>,
    context_callback: callbacks::Context,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    let mut c = cbs(None, Some(context_callback), completion_callback);
    start_with(g, UserOption::SetMetaContext, Some(queries), &mut c)
}

pub fn aio_opt_list_meta_context_queries(
    _h: &nbd_handle,
    g: &mut Held<'_>,
    queries: Vec<&CStr>,
    context_callback: callbacks::Context,
    completion_callback: callbacks::Completion,
) -> Result<(), Error> {
    let mut c = cbs(None, Some(context_callback), completion_callback);
    start_with(g, UserOption::ListMetaContext, Some(queries), &mut c)
}

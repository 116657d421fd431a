//! The client's state as one name, for LIBNBD_DEBUG's "transition: A -> B"
//! lines. libnbd prints its generated state machine's names there
//! (`NEWSTYLE.OPT_GO.RECV_REPLY`); ours come from our own typed stages in
//! the same dotted form: the phase, the option under way, and what is
//! being received. They are for people reading a trace, not a stable API.

use super::state::{Client, Rx, Step};
use super::{CommandBuffer, Phase};

impl<C: CommandBuffer> Client<C> {
    /// `PHASE[.OPT_NAME][.STEP]`, e.g. `CONNECTING.OPT_GO.OPTION_REPLY_HEADER`
    /// or `PROCESSING.REPLY_START`.
    pub fn state_name(&self) -> String {
        let phase = self.phase();
        let mut name = String::from(match phase {
            Phase::Connecting => "CONNECTING",
            Phase::Negotiating => "NEGOTIATING",
            Phase::Ready => "READY",
            Phase::Processing => "PROCESSING",
            Phase::Dead => return "DEAD".into(),
            Phase::Closed => return "CLOSED".into(),
        });
        if phase == Phase::Connecting {
            if let Some(opt) = self.negotiation.current_option() {
                name.push_str(".OPT_");
                name.push_str(&screaming(&format!("{opt:?}")));
            }
            if self.tls_handshake_wanted() {
                name.push_str(".TLS_HANDSHAKE");
                return name;
            }
        }
        let step = match &self.rx {
            Rx::Header { step, .. } => Some(*step),
            Rx::Payload { then, .. } => Some(*then),
            Rx::Idle => None,
        };
        match step {
            Some(Step::Negotiate(s)) => {
                name.push('.');
                name.push_str(&screaming(&format!("{s:?}")));
            }
            // READY waits for a reply header too: the step says nothing.
            Some(Step::Reply(s)) if phase == Phase::Processing => {
                name.push('.');
                name.push_str(&screaming(&format!("{s:?}")));
            }
            Some(Step::Reply(_)) => {}
            None if phase == Phase::Connecting => name.push_str(".SEND"),
            None => {}
        }
        name
    }
}

/// `OptionReplyHeader` → `OPTION_REPLY_HEADER`.
fn screaming(camel: &str) -> String {
    let mut out = String::with_capacity(camel.len() + 4);
    for (i, c) in camel.chars().enumerate() {
        if c.is_ascii_uppercase() && i > 0 {
            out.push('_');
        }
        out.push(c.to_ascii_uppercase());
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn screaming_snake() {
        assert_eq!(super::screaming("OptionReplyHeader"), "OPTION_REPLY_HEADER");
        assert_eq!(super::screaming("Go"), "GO");
    }
}

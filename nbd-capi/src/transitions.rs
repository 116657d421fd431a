//! LIBNBD_DEBUG's state transitions. libnbd traces every move of its state
//! machine as `transition: A -> B`; we trace every change of the core's
//! state name (`Client::state_name`, our own typed stages) in that format.
//! The connection only records the lines, as it has no way to print: the
//! handle prints them through its debug channel (`nbd_handle::debug`,
//! which honours nbd_set_debug_callback) whenever it holds the lock.

/// The state last seen and the transitions not yet printed.
pub struct Transitions {
    last: String,
    pending: Vec<String>,
}

impl Transitions {
    /// libnbd's handle starts in `START`.
    pub fn new() -> Transitions {
        Transitions {
            last: "START".into(),
            pending: Vec::new(),
        }
    }

    /// Recording starts in the middle (nbd_set_debug turned on after
    /// connecting): no transition into the current state.
    pub fn starting_at(now: String) -> Transitions {
        Transitions {
            last: now,
            pending: Vec::new(),
        }
    }

    /// Records a transition if `now` differs from the last state seen.
    pub fn saw(&mut self, now: String) {
        if now != self.last {
            self.pending
                .push(format!("transition: {} -> {now}", self.last));
            self.last = now;
        }
    }

    /// The transitions recorded since the last call, oldest first.
    pub fn take(&mut self) -> Vec<String> {
        std::mem::take(&mut self.pending)
    }
}

impl Default for Transitions {
    fn default() -> Self {
        Self::new()
    }
}

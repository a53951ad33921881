//! A flood parks itself. A message due now is inserted parked at its destination's limit
//! (`parked = 'limit'`, see `dispatcher::parking`) when its tenant already has messages
//! parked there, or, for `wf_enqueue`, when this transaction already enqueued as many to
//! the destination as it may have outstanding (`wf_publish` parks only behind the tenant's
//! parked messages). A message with `deliver_at` is never parked here. Otherwise one tenant's 10,000 messages sit in the due path
//! ahead of every other tenant's, and the claim, which walks that path oldest first,
//! reaches the others only once it has parked the flood a batch at a time
//! (bench/NOTES.md, eleventh and twelfth sessions). Parked, messages are let go
//! round-robin by tenant as the destination's requests come back.
//!
//! Another tenant's message is not parked for the flood: it stays in the due path, which
//! the flood has left, and the claim takes it at once if its tenant has fewer than two
//! requests outstanding there (`dispatcher/claim/claim.sql`, light tenants), or parks it
//! to wait its turn.
//!
//! Only the dispatcher's unpark lets such messages go, so it must know their destination:
//! a commit that parked one counts in its slot (`wake::parked_on_commit`), and its next
//! round looks for every destination with parked messages.

use pgrx::pg_sys;
use std::cell::RefCell;
use std::collections::HashMap;

thread_local! {
    /// The local transaction the counts are of, and the messages due now it enqueued
    /// unparked, per destination.
    static ENQUEUED: RefCell<(pg_sys::LocalTransactionId, HashMap<String, i32>)> =
        RefCell::new((0, HashMap::new()));
}

fn current_transaction() -> pg_sys::LocalTransactionId {
    // SAFETY: MyProc is this backend's own PGPROC, set for the life of the session.
    unsafe { (*pg_sys::MyProc).lxid }
}

/// How many messages due now this transaction enqueued unparked to `destination` so far.
pub fn enqueued_before(destination: &str) -> i32 {
    let now = current_transaction();
    ENQUEUED.with(|enqueued| {
        let enqueued = enqueued.borrow();
        if enqueued.0 == now {
            enqueued.1.get(destination).copied().unwrap_or(0)
        } else {
            0
        }
    })
}

/// One more message due now enqueued unparked to `destination` in this transaction.
pub fn enqueued(destination: &str) {
    let now = current_transaction();
    ENQUEUED.with(|enqueued| {
        let mut enqueued = enqueued.borrow_mut();
        if enqueued.0 != now {
            *enqueued = (now, HashMap::new());
        }
        *enqueued.1.entry(destination.to_string()).or_insert(0) += 1;
    });
}

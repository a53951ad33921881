//! Telling applications there is work: `NOTIFY workflow_ready, <name>` whenever a workflow
//! becomes ready, so that an application can `LISTEN` and claim instead of polling.
//!
//! A notification is queued by the transaction that made the workflow ready (a signal, a
//! durable step's answer, a start, release or sleep that is ready at once) and sent when
//! it commits, never for a rollback (a rolled-back savepoint takes its names with it).
//! It is queued just before the commit rather than when the workflow became ready, because
//! a transaction that executed `NOTIFY` cannot be prepared: whether a two-phase caller can
//! commit must not depend on a workflow's state (G1). A prepared transaction's names are
//! announced by the dispatcher once it commits (see `wake::readiness_prepared`); pgrx keeps
//! a prepared transaction's remaining callbacks for the session's next transaction, where
//! they find nothing queued.
//! Readiness that comes with time alone — a sleep or a wait's timeout ending, a lease
//! running out — is announced by the dispatcher (`dispatcher::ready`). Equal
//! notifications of one transaction are folded into one, as Postgres would.

use pgrx::callbacks::{
    PgSubXactCallbackEvent, PgXactCallbackEvent, register_subxact_callback, register_xact_callback,
};
use pgrx::{IntoDatum, pg_sys};
use std::cell::RefCell;

/// The channel applications `LISTEN` on; the payload is the workflow's name.
pub const CHANNEL: &str = "workflow_ready";

thread_local! {
    /// The names this transaction made ready, each with the subtransaction that did it.
    static PENDING: RefCell<Vec<(pg_sys::SubTransactionId, String)>> = const { RefCell::new(Vec::new()) };
}

/// A workflow of `name` became ready in this transaction: its listeners are told at
/// commit, and the dispatcher is woken then, for a push handler of its name.
pub fn became_ready(name: &str) {
    notify(name);
    crate::wake::on_commit();
}

/// Queues the notification that a workflow of `name` is ready; sent at commit.
pub fn notify(name: &str) {
    let name = name.to_string();
    // SAFETY: reading the current subtransaction's id inside a transaction.
    let subtransaction = unsafe { pg_sys::GetCurrentSubTransactionId() };
    let first = PENDING.with(|pending| {
        let mut pending = pending.borrow_mut();
        let first = pending.is_empty();
        if !pending.iter().any(|(_, queued)| *queued == name) {
            pending.push((subtransaction, name));
        }
        first
    });
    if first {
        register_xact_callback(PgXactCallbackEvent::PreCommit, send_pending);
        register_xact_callback(PgXactCallbackEvent::PrePrepare, || {
            if !PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()).is_empty()) {
                // SAFETY: the preparing transaction's id, inside it.
                let xid = unsafe { pg_sys::GetTopTransactionIdIfAny() };
                // Told once the transaction is prepared, so that the dispatcher finds it
                // among the prepared ones when it looks.
                register_xact_callback(PgXactCallbackEvent::Prepare, move || {
                    crate::wake::readiness_prepared(xid.into_inner());
                });
            }
        });
        register_xact_callback(PgXactCallbackEvent::Abort, forget);
        // A subtransaction that rolls back takes back what it and its children queued:
        // their ids are its own or later.
        register_subxact_callback(PgSubXactCallbackEvent::AbortSub, |aborted, _| {
            PENDING.with(|pending| pending.borrow_mut().retain(|(sub, _)| *sub < aborted));
        });
    }
}

fn forget() {
    PENDING.with(|pending| pending.borrow_mut().clear());
}

/// Just before the commit, while a `NOTIFY` is still allowed: queues them all.
fn send_pending() {
    let names = PENDING.with(|pending| std::mem::take(&mut *pending.borrow_mut()));
    for (_, name) in names {
        // SAFETY: pg_notify with two text arguments, inside the committing transaction
        // before Postgres sends its notifications; an ERROR here aborts the commit cleanly.
        unsafe {
            pgrx::direct_function_call_as_datum(
                pg_sys::pg_notify,
                &[CHANNEL.into_datum(), name.into_datum()],
            );
        }
    }
}

//! The floor under the SQL surface (`api`) and the dispatcher: what both do to workflow
//! runs. Neither imports the other; both come here.
//!
//! - [`guard`] — the lease guards (G7): is the run there, running, held by this owner.
//! - [`claim`] — handing ready runs to an owner, and telling the parents of runs a claim
//!   failed for too many recoveries; `wf_claim` and the dispatcher's push both use it.
//! - [`push`] — the dispatcher's push of ready runs to their handlers.
//! - [`queue`] — flow control by workflow name (`wf_queue`): limits and round-robin by
//!   tenant for the claims of a name with a queue.
//! - [`finish`] — the terminal transitions and what they take with them (G10): durable
//!   steps not yet recorded, children, the parent's signal.
//! - [`children`] — parents and children: adoption, the finished signal, the cancel that
//!   cascades.
//! - [`signals`] — sending a signal, and the run lock that signals and waits share.
//! - [`readiness`] — `NOTIFY workflow_ready`, sent when the transaction commits.
//! - [`sessions`] — leases bound to the session that took them (G11): freed when it exits.
//! - [`retention`] — removing finished runs (G6).
//!
//! Run locks are taken in one order, parents before children, so that a cancel cascading
//! down and a child finishing up never deadlock.

pub mod children;
pub mod claim;
pub mod finish;
pub mod guard;
pub mod push;
pub mod queue;
pub mod readiness;
pub mod retention;
pub mod sessions;
pub mod signals;

//! The dispatcher's push: it claims the ready workflows of every name with a handler
//! (`wf_handler`) for a fresh owner, as `wf_claim` would, and enqueues a signed
//! `workflow.ready` message to the handler in the same transaction; the message goes out
//! through the delivery machinery (signing, retries, the SSRF guard). The handler continues
//! the workflow as that owner, fenced (G7). A handler that dies leaves a lease that runs
//! out, and the workflow is pushed again to a new owner (a recovery, counted like any,
//! unless the push never reached the handler), its stale pushes cancelled.

use super::claim::{self, Claimer, Ready};
use crate::config;
use crate::db::{self, Statement, first_value};
use crate::error::WfError;
use pgrx::pg_sys::{INT4OID, INT8OID, UUIDARRAYOID};
use pgrx::spi::SpiClient;

/// Locks up to `$1` ready runs of the names with a handler, oldest expiry first.
pub(super) static READY_FOR_HANDLERS: Statement = Statement {
    sql: include_str!("push/ready_for_handlers.sql"),
    args: &[INT4OID, INT8OID],
};

/// Enqueues the push of each claimed run `$1` to its handler, and cancels the pushes of
/// earlier owners still pending.
pub static PUSH_ENQUEUE: Statement = Statement {
    sql: include_str!("push/push_enqueue.sql"),
    args: &[UUIDARRAYOID, INT4OID],
};

/// What a push did.
#[derive(Default)]
pub struct Pushed {
    /// How many workflows it pushed.
    #[cfg_attr(not(feature = "pg_test"), allow(dead_code))] // the round needs only the rest
    pub count: usize,
    /// When the first of their leases runs out (when to look for handlers that died).
    pub leases_end: Option<std::time::Duration>,
    /// Whether a name's queue was held by another claimer: its turn comes soon.
    pub busy_queue: bool,
}

/// Claims and enqueues the pushes of up to `max` ready workflows. For the dispatcher's
/// round, before it claims messages (which then include these).
pub fn push_ready(
    client: &mut SpiClient<'_>,
    max: i32,
    max_recovery_attempts: i32,
) -> Result<Pushed, WfError> {
    let owner = format!("push-{:032x}", rand::random::<u128>());
    let claimer = Claimer {
        owner: Some(&owner),
        lease: None,
        max_recovery_attempts,
    };
    let (pushed, busy_queue) =
        claim::claim_noting_busy_queues(client, Ready::ForHandlers, claimer, max)?;
    if pushed.is_empty() {
        return Ok(Pushed {
            busy_queue,
            ..Pushed::default()
        });
    }
    let pushed_count = pushed.len();
    let steps_limit = i32::try_from(config::max_payload_bytes()).unwrap_or(i32::MAX);
    let expires_in: Option<f64> = db::execute(
        client,
        &PUSH_ENQUEUE,
        &[pushed.into(), steps_limit.into()],
        first_value,
    )?;
    Ok(Pushed {
        count: pushed_count,
        leases_end: expires_in.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
        busy_queue,
    })
}

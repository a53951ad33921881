//! The SQL surface: thin `wf_*` functions that check arguments, run kept statements and map
//! errors. All are SECURITY DEFINER with a pinned `search_path`, so an application role
//! needs only EXECUTE (through `workflow_user`), never rights on the tables.

/// Whether the owner named by a text parameter holds the run's lease right now: no owner
/// named means no fence. An expired lease is held by no one, even before a claim (G7).
macro_rules! holds_lease {
    ($owner:literal) => {
        concat!(
            "(",
            $owner,
            "::text IS NULL OR (owner = ",
            $owner,
            " AND lease_expires_at > clock_timestamp()))"
        )
    };
}

// Leases are measured on the wall clock, not the statement's start: a recovery loop in a
// procedure, or a long transaction, must see a lease expire while it runs.

/// Hands out the runs of `candidate` (ready ones: a lease that expired, a sleep that ended,
/// a wait that was answered or timed out), locked by it, to the owner `$2` for the lease
/// `$3` (NULL: each run's own). Taking over an owner's expired lease is a recovery and is
/// counted (a checkpoint forgives the count); a run already recovered `$5` times in a row
/// is failed instead: a workflow that kills every process that runs it must not loop
/// forever. A parked run's readiness (no owner) is no recovery; `$recovery` can narrow
/// what is one further.
macro_rules! claim_ready {
    ($candidate:expr) => {
        claim_ready!($candidate, "r.owner IS NOT NULL")
    };
    ($candidate:expr, $recovery:literal) => {
        concat!(
            "WITH ",
            $candidate,
            ",
          decided AS (
              SELECT r.id, ",
            $recovery,
            " AS recovery,
                     ",
            $recovery,
            " AND r.recovery_attempts >= $5 AS give_up
                FROM workflow.runs r JOIN candidate USING (id))
          UPDATE workflow.runs r
             SET recovery_attempts = r.recovery_attempts + CASE WHEN d.recovery THEN 1 ELSE 0 END,
                 updated_at = statement_timestamp(),
                 status = CASE WHEN d.give_up THEN 'failed' ELSE 'running' END,
                 error = CASE WHEN d.give_up
                              THEN format('recovery abandoned: its lease expired %s times without a checkpoint between, workflow.max_recovery_attempts is %s',
                                          r.recovery_attempts + 1, $5)
                              ELSE r.error END,
                 finished_at = CASE WHEN d.give_up THEN statement_timestamp() END,
                 owner = CASE WHEN d.give_up THEN NULL ELSE $2 END,
                 wait_step = CASE WHEN d.give_up THEN NULL ELSE r.wait_step END,
                 wait_signal = CASE WHEN d.give_up THEN NULL ELSE r.wait_signal END,
                 wait_deadline = CASE WHEN d.give_up THEN NULL ELSE r.wait_deadline END,
                 lease_duration = coalesce($3, r.lease_duration),
                 lease_expires_at = CASE WHEN d.give_up THEN NULL
                                         ELSE clock_timestamp() + coalesce($3, r.lease_duration) END
            FROM decided d
           WHERE r.id = d.id
          RETURNING r.id, NOT d.give_up"
        )
    };
}

pub(crate) mod children;
mod endpoints;
pub(crate) mod handlers;
mod maintenance;
pub(crate) mod readiness;
mod signals;

pub use maintenance::workflow::PURGE_FINISHED;
pub(crate) mod outbox;
mod publish;
mod replay;
pub(crate) mod workflows;

use crate::config;
use crate::delivery::headers;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::workflow::validate::{self, ArgError};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Runs the statements of a write function. Where nothing can be written — a hot standby,
/// a read-only transaction — it refuses at once with `25006`, before SPI would try to
/// assign a transaction id.
pub(crate) fn write<R>(
    action: &'static str,
    statements: impl FnOnce(&mut SpiClient<'_>) -> Result<R, WfError>,
) -> R {
    // SAFETY: reading backend globals on the main thread inside a transaction.
    let (read_only, standby) = unsafe { (pg_sys::XactReadOnly, pg_sys::RecoveryInProgress()) };
    if read_only {
        WfError::ReadOnly { action, standby }.raise();
    }
    Spi::connect_mut(statements).or_raise()
}

/// Runs the statements of a read-only function: no transaction id, standby-safe.
pub(crate) fn read<R>(statements: impl FnOnce(&SpiClient<'_>) -> Result<R, WfError>) -> R {
    Spi::connect(statements).or_raise()
}

/// Inputs, outputs and payloads are limited by their size as stored (uncompressed jsonb),
/// which is what they cost the tables and the dispatcher.
fn payload_size(arg: &'static str, doc: Option<Document>) -> Result<(), ArgError> {
    match doc {
        Some(doc) => validate::size(arg, doc.size(), config::max_payload_bytes()),
        None => Ok(()),
    }
}

/// The checks every new message passes, enqueued or published: a payload within the size
/// limit, a headers document the dispatcher can read, a finite due time.
fn message_parts(
    payload: Option<Document>,
    headers: Option<Document>,
    deliver_at: Option<pgrx::datum::TimestampWithTimeZone>,
) -> Result<Document, WfError> {
    let payload = validate::required("payload", payload)?;
    payload_size("payload", Some(payload))?;
    header_doc("headers", headers)?;
    if let Some(due) = deliver_at {
        validate::finite_timestamp("deliver_at", due.into_inner())?;
    }
    Ok(payload)
}

/// Checks a headers document. It is read with the extension's own parser, so a document
/// it cannot hold (nested past its depth limit, a number like `1e400`) is a `22023` like
/// any other bad header, not an internal error.
fn header_doc(arg: &'static str, doc: Option<Document>) -> Result<(), WfError> {
    if let Some(doc) = doc {
        let invalid = |reason: String| WfError::InvalidHeaders { arg, reason };
        let value: serde_json::Value = serde_json::from_str(&doc.to_text())
            .map_err(|e| invalid(format!("cannot be read as headers: {e}")))?;
        headers::parse(&value).map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

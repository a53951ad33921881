//! Signals: a named event sent to a workflow in the caller's transaction, queued per
//! workflow and name in commit order, or recorded at once as the step of the wait it
//! resolves.
//!
//! Every write here locks the run first, as a checkpoint does, so a signal and a wait of
//! one workflow never interleave: either the wait finds the signal queued, or the signal
//! finds the wait parked and records it. A signal also writes the run's row, so that a
//! REPEATABLE READ caller racing another signal gets a serialization failure instead of
//! missing it. A wait whose deadline has passed is not resolved by a signal: its timeout
//! has won, and the signal stays queued for a later wait.

use super::guard::{read_step, require_running};
use super::readiness;
use crate::db::{self, Statement, first_value};
use crate::document::Document;
use crate::error::WfError;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{JSONBOID, TEXTOID, UUIDOID};
use pgrx::spi::SpiClient;

/// The signal a child's finish sends its parent.
pub const FINISHED: &str = "workflow.finished";

/// Locks a run for a signal or a wait; its status, lease and unresolved wait.
static LOCK_RUN: Statement = Statement {
    sql: include_str!("signals/lock_run.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// The signal of a run sent with an idempotency key, if any.
static FIND_BY_KEY: Statement = Statement {
    sql: include_str!("signals/find_by_key.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// Queues a signal, or, when `$5` names the step of the wait it resolves, records it as
/// that step and makes a parked run ready.
static SEND: Statement = Statement {
    sql: include_str!("signals/send.sql"),
    args: &[UUIDOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID],
};

/// A run locked for a signal or a wait.
pub struct Locked {
    pub status: Option<String>,
    pub holds: Option<bool>,
    pub name: String,
    pub parked: bool,
    pub wait_step: Option<String>,
    pub wait_signal: Option<String>,
    pub timed_out: bool,
}

pub fn lock(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
    owner: Option<&str>,
) -> Result<Locked, WfError> {
    Ok(db::execute(
        client,
        &LOCK_RUN,
        &[id.into(), owner.into()],
        |rows| {
            if rows.is_empty() {
                return Ok(Locked {
                    status: None,
                    holds: None,
                    name: String::new(),
                    parked: false,
                    wait_step: None,
                    wait_signal: None,
                    timed_out: false,
                });
            }
            let row = rows.first();
            Ok(Locked {
                status: row.get(1)?,
                holds: row.get(2)?,
                name: row.get(3)?.unwrap_or_default(),
                parked: row.get(4)?.unwrap_or(false),
                wait_step: row.get(5)?,
                wait_signal: row.get(6)?,
                timed_out: row.get(7)?.unwrap_or(false),
            })
        },
    )?)
}

/// Sends `signal` to the workflow `id` in the caller's transaction. `to_finished` says
/// what a workflow that is no longer running gets: an error (an application's signal), or
/// nothing (a child's finish, whose parent finished first).
pub fn send(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
    signal: &str,
    payload: Option<Document>,
    key: Option<&str>,
    to_finished: ToFinished,
) -> Result<Option<i64>, WfError> {
    let run = lock(client, id, None)?;
    // A repeat is answered whatever became of the workflow since (G4): a sender retrying
    // after the workflow finished is what the key is for.
    if let Some(key) = key {
        let existing: Option<i64> =
            db::execute(client, &FIND_BY_KEY, &[id.into(), key.into()], first_value)?;
        if existing.is_some() {
            return Ok(existing);
        }
    }
    // A parent may have finished, and even been removed by retention, before its child.
    if to_finished == ToFinished::Skip && run.status.as_deref() != Some("running") {
        return Ok(None);
    }
    require_running(id, run.status, "wf_signal")?;
    // The wait this signal resolves, if the run waits for it, its step is still open, and
    // its deadline has not passed.
    let resolves = match (&run.wait_signal, &run.wait_step) {
        (Some(waited), Some(step))
            if waited == signal && !run.timed_out && read_step(client, id, step)?.1.is_none() =>
        {
            Some(step.as_str())
        }
        _ => None,
    };
    let args: [DatumWithOid; 5] = [
        id.into(),
        signal.into(),
        payload.into(),
        key.into(),
        resolves.into(),
    ];
    let (sent, ready): (Option<i64>, Option<bool>) =
        db::execute(client, &SEND, &args, |rows| rows.first().get_two())?;
    if ready == Some(true) {
        readiness::became_ready(&run.name);
    }
    Ok(sent)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ToFinished {
    Refuse,
    Skip,
}

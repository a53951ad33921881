//! Signals and waits: a workflow waits for the outside world — a named signal, or the
//! answer to its durable HTTP step — without holding a lease, and becomes ready when the
//! event arrives or the wait times out.
//!
//! Every write here locks the run first, as a checkpoint does, so a signal and a wait of
//! one workflow never interleave: either the wait finds the signal queued, or the signal
//! finds the wait parked and records it. A signal also writes the run's row, so that a
//! REPEATABLE READ caller racing another signal gets a serialization failure instead of
//! missing it.

use super::readiness;
use super::workflows::{lease_or_default, read_step, require_running, require_writable};
use crate::db::{self, Statement, first_value};
use crate::dispatcher::wake;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, Interval, TimestampWithTimeZone};
use pgrx::pg_sys::{INTERVALOID, JSONBOID, TEXTOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// The signal a child's finish sends its parent.
pub const FINISHED: &str = "workflow.finished";

/// The run locked for a signal or a wait: its status, whether the owner `$2` holds the
/// lease, its name, whether it is parked (no owner), and its unresolved wait.
static LOCK_RUN: Statement = Statement {
    sql: concat!(
        "SELECT status, ",
        holds_lease!("$2"),
        ", name, owner IS NULL, wait_step, wait_signal, wait_deadline <= clock_timestamp()
           FROM workflow.runs WHERE id = $1 FOR NO KEY UPDATE"
    ),
    args: &[UUIDOID, TEXTOID],
};

static FIND_BY_KEY: Statement = Statement {
    sql: "SELECT id FROM workflow.run_signals WHERE workflow_id = $1 AND idempotency_key = $2",
    args: &[UUIDOID, TEXTOID],
};

/// Queues a signal, or, when `$5` names the step of the wait it resolves, records it as
/// that step and makes a parked run ready. Returns the signal's id and whether the run
/// became ready.
static SEND: Statement = Statement {
    sql: "WITH sent AS (
              INSERT INTO workflow.run_signals (workflow_id, name, payload, idempotency_key, consumed_at, consumed_by)
              VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NOT NULL THEN statement_timestamp() END, $5)
              RETURNING id),
          step AS (
              INSERT INTO workflow.checkpoints (workflow_id, step, output)
              SELECT $1, $5, jsonb_build_object('signal', $2::text, 'payload', $3::jsonb, 'timed_out', false)
               WHERE $5 IS NOT NULL),
          run AS (
              UPDATE workflow.runs
                 SET updated_at = statement_timestamp(),
                     wait_step = CASE WHEN $5 IS NULL THEN wait_step END,
                     wait_signal = CASE WHEN $5 IS NULL THEN wait_signal END,
                     wait_deadline = CASE WHEN $5 IS NULL THEN wait_deadline END,
                     lease_expires_at = CASE WHEN $5 IS NOT NULL AND owner IS NULL
                                             THEN least(coalesce(lease_expires_at, 'infinity'), clock_timestamp())
                                             ELSE lease_expires_at END
               WHERE id = $1
              RETURNING $5 IS NOT NULL AND owner IS NULL AS ready)
          SELECT (SELECT id FROM sent), (SELECT ready FROM run)",
    args: &[UUIDOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID],
};

/// Consumes the oldest queued signal `$3` into the step `$2`; returns the step's output,
/// none if nothing is queued.
static CONSUME_OLDEST: Statement = Statement {
    sql: "WITH oldest AS (
              SELECT id, payload FROM workflow.run_signals
               WHERE workflow_id = $1 AND name = $3 AND consumed_at IS NULL
               ORDER BY id LIMIT 1
                 FOR UPDATE),
          consumed AS (
              UPDATE workflow.run_signals s
                 SET consumed_at = statement_timestamp(), consumed_by = $2
                FROM oldest o WHERE s.id = o.id
              RETURNING o.payload)
          INSERT INTO workflow.checkpoints (workflow_id, step, output)
          SELECT $1, $2, jsonb_build_object('signal', $3::text, 'payload', payload, 'timed_out', false)
            FROM consumed
          RETURNING output",
    args: &[UUIDOID, TEXTOID, TEXTOID],
};

static RECORD_TIMEOUT: Statement = Statement {
    sql: "INSERT INTO workflow.checkpoints (workflow_id, step, output)
          VALUES ($1, $2, '{\"timed_out\": true}') RETURNING output",
    args: &[UUIDOID, TEXTOID],
};

/// After a wait's step is recorded: the wait is resolved, and the run goes on as a
/// checkpoint would leave it — its lease renewed if it has an owner, ready if it is parked.
static RESOLVED: Statement = Statement {
    sql: "UPDATE workflow.runs
             SET wait_step = NULL, wait_signal = NULL, wait_deadline = NULL,
                 recovery_attempts = 0,
                 lease_expires_at = CASE WHEN owner IS NULL
                                         THEN least(coalesce(lease_expires_at, 'infinity'), clock_timestamp())
                                         ELSE clock_timestamp() + lease_duration END,
                 updated_at = statement_timestamp()
           WHERE id = $1
          RETURNING owner IS NULL",
    args: &[UUIDOID],
};

/// The status of the message of the durable step `$2`, if one was enqueued.
static DURABLE_STEP: Statement = Statement {
    sql: "SELECT status FROM workflow.outbox WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1",
    args: &[UUIDOID, TEXTOID],
};

/// Parks the run on a wait: no owner, claimable from the deadline on (never without one).
static PARK: Statement = Statement {
    sql: "UPDATE workflow.runs
             SET owner = NULL, wait_step = $2, wait_signal = $3,
                 wait_deadline = clock_timestamp() + $4, lease_expires_at = clock_timestamp() + $4,
                 updated_at = statement_timestamp()
           WHERE id = $1
          RETURNING wait_deadline",
    args: &[UUIDOID, TEXTOID, TEXTOID, INTERVALOID],
};

/// A run locked for a signal or a wait.
struct Locked {
    status: Option<String>,
    holds: Option<bool>,
    name: String,
    parked: bool,
    wait_step: Option<String>,
    wait_signal: Option<String>,
    timed_out: bool,
}

fn lock(
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
pub(super) fn send(
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
    // The wait this signal resolves, if the run waits for it and its step is still open.
    let resolves = match (&run.wait_signal, &run.wait_step) {
        (Some(waited), Some(step))
            if waited == signal && read_step(client, id, step)?.1.is_none() =>
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
        readiness::notify(client, &run.name)?;
        // For a push handler of its name.
        wake::on_commit();
    }
    Ok(sent)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum ToFinished {
    Refuse,
    Skip,
}

/// Sends the named signal to a running workflow, in the caller's transaction; returns its
/// id. With an idempotency key, a repeated signal returns the first one's id (G4). If the
/// workflow waits for this signal, its wait's step is recorded with it and the workflow
/// becomes ready.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_signal(
    workflow: Option<pgrx::Uuid>,
    signal: Option<&str>,
    payload: default!(Option<Document>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
) -> i64 {
    let id = validate::required("workflow", workflow).or_raise();
    let signal = validate::name("signal", signal).or_raise();
    super::payload_size("payload", payload).or_raise();
    let key = validate::optional_name("idempotency_key", idempotency_key).or_raise();
    super::write("wf_signal", |client| {
        send(client, id, signal, payload, key, ToFinished::Refuse)?.ok_or(WfError::StartRace)
    })
}

/// Waits for an event, replay-safe: a recorded `step` returns its output. With `signal`, the
/// oldest queued signal of that name is consumed and recorded as `step`; without, the
/// durable HTTP step `step` is waited for. If the event has not arrived, the workflow is
/// parked (its lease released) until it does or `timeout` passes, and NULL is returned;
/// after a timeout the next wait of the step records `{"timed_out": true}`.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_wait(
    workflow: Option<pgrx::Uuid>,
    step: Option<&str>,
    signal: default!(Option<&str>, "NULL"),
    timeout: default!(Option<Interval>, "NULL"),
    owner: default!(Option<&str>, "NULL"),
) -> Option<Document> {
    let id = validate::required("workflow", workflow).or_raise();
    let step = validate::name("step", step).or_raise();
    let signal = validate::optional_name("signal", signal).or_raise();
    let timeout = timeout
        .map(|t| lease_or_default("timeout", Some(t)))
        .transpose()
        .or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    super::write("wf_wait", |client| {
        let run = lock(client, id, owner)?;
        require_writable(id, run.status, owner, run.holds, "wf_wait")?;
        if let Some(recorded) = read_step(client, id, step)?.1 {
            return Ok(Some(recorded.transfer()));
        }
        let waits_here = run.wait_step.as_deref() == Some(step);
        let recorded: Option<Document> = if waits_here && run.timed_out {
            db::execute(
                client,
                &RECORD_TIMEOUT,
                &[id.into(), step.into()],
                first_value,
            )?
        } else if let Some(signal) = signal {
            let args: [DatumWithOid; 3] = [id.into(), step.into(), signal.into()];
            db::execute(client, &CONSUME_OLDEST, &args, first_value)?
        } else {
            let message: Option<String> = db::execute(
                client,
                &DURABLE_STEP,
                &[id.into(), step.into()],
                first_value,
            )?;
            match message.as_deref() {
                None | Some("cancelled") => {
                    return Err(WfError::NothingToWaitFor {
                        id,
                        step: step.to_string(),
                        cancelled: message.is_some(),
                    });
                }
                _ => None,
            }
        };
        if let Some(recorded) = recorded {
            let parked: Option<bool> = db::execute(client, &RESOLVED, &[id.into()], first_value)?;
            if parked == Some(true) {
                readiness::notify(client, &run.name)?;
                wake::on_commit();
            }
            return Ok(Some(recorded.transfer()));
        }
        // Waiting again for what it already waits for writes nothing (G3).
        if !(run.parked && waits_here && run.wait_signal.as_deref() == signal) {
            let args: [DatumWithOid; 4] = [id.into(), step.into(), signal.into(), timeout.into()];
            let deadline: Option<TimestampWithTimeZone> =
                db::execute(client, &PARK, &args, first_value)?;
            if let Some(deadline) = deadline {
                wake::timer_on_commit(deadline.into_inner());
            }
        }
        Ok(None)
    })
}

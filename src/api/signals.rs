//! Signals and waits: a workflow waits for the outside world — a named signal, or the
//! answer to its durable HTTP step — without holding a lease, and becomes ready when the
//! event arrives or the wait times out. Sending a signal is `runs::signals`' (a child's
//! finish sends one too); both lock the run first, so a signal and a wait never interleave.
//! A wait on a durable step that times out cancels the step's message (G10).

use crate::db::{self, Statement, first_value};
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::runs::guard::{self, read_step, require_writable};
use crate::runs::signals::{self, ToFinished};
use crate::runs::{finish, readiness};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{INTERVALOID, TEXTOID, UUIDOID};
use pgrx::prelude::*;

/// Consumes the oldest queued signal `$3` into the step `$2`; returns the step's output,
/// none if nothing is queued.
static CONSUME_OLDEST: Statement = Statement {
    sql: include_str!("signals/consume_oldest.sql"),
    args: &[UUIDOID, TEXTOID, TEXTOID],
};

/// Records the wait's step $2 of the run $1 as timed out; returns its output.
static RECORD_TIMEOUT: Statement = Statement {
    sql: include_str!("signals/record_timeout.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// After a wait's step is recorded: the wait is resolved, and the run goes on as a
/// checkpoint would leave it — its lease renewed if it has an owner, ready if it is parked.
static RESOLVED: Statement = Statement {
    sql: include_str!("signals/resolved.sql"),
    args: &[UUIDOID],
};

/// The status of the message of the durable step `$2`, if one was enqueued.
static DURABLE_STEP: Statement = Statement {
    sql: include_str!("signals/durable_step.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// Parks the run on a wait: no owner, claimable from the deadline on (never without one).
static PARK: Statement = Statement {
    sql: include_str!("signals/park.sql"),
    args: &[UUIDOID, TEXTOID, TEXTOID, INTERVALOID],
};

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
        signals::send(client, id, signal, payload, key, ToFinished::Refuse)?
            .ok_or(WfError::StartRace)
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
        .map(|t| guard::timeout("timeout", t))
        .transpose()
        .or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    super::write("wf_wait", |client| {
        guard::lock_parent(client, id)?;
        let run = signals::lock(client, id, owner)?;
        require_writable(id, run.status, owner, run.holds, "wf_wait")?;
        if let Some(recorded) = read_step(client, id, step)?.1 {
            return Ok(Some(recorded.transfer()));
        }
        let waits_here = run.wait_step.as_deref() == Some(step);
        let recorded: Option<Document> = if waits_here && run.timed_out {
            if run.wait_signal.is_none() {
                finish::cancel_timed_out_step(client, id, step)?;
            }
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
                readiness::became_ready(&run.name);
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

//! The terminal transitions — complete, fail, cancel — and what a workflow's decision takes
//! with it (G10): its durable HTTP steps not recorded yet, and its pending pushes, are
//! cancelled in the finishing transaction, so no request goes out on behalf of a workflow
//! that has decided. A cancel also cancels its running descendants and every pending
//! message of theirs and its own. A finished child tells its parent.

use super::children;
use super::guard::{self, require_lease, require_running};
use crate::db::{self, Statement};
use crate::document::Document;
use crate::error::WfError;
use crate::wake;
use crate::workflow::Finish;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{JSONBOID, TEXTOID, UUIDARRAYOID, UUIDOID};
use pgrx::spi::SpiClient;

/// Finishes a running run whose lease the owner holds.
pub static FINISH: Statement = Statement {
    sql: include_str!("finish/finish.sql"),
    args: &[UUIDOID, TEXTOID, JSONBOID, TEXTOID, TEXTOID],
};

/// Cancels every pending message of the workflows `$1` (a cancel).
pub static CANCEL_WORKFLOW_MESSAGES: Statement = Statement {
    sql: include_str!("finish/cancel_workflow_messages.sql"),
    args: &[UUIDARRAYOID],
};

/// Cancels the pending durable steps and pushes of the workflows `$1` (a completion or a
/// failure): its plain messages are the outbox, delivered as committed.
pub static CANCEL_SIDE_EFFECTS: Statement = Statement {
    sql: include_str!("finish/cancel_side_effects.sql"),
    args: &[UUIDARRAYOID],
};

/// Cancels the message of the durable step `$2` if it is still pending: its wait timed out,
/// and the workflow goes on without it (G10).
pub static CANCEL_STEP: Statement = Statement {
    sql: include_str!("finish/cancel_step.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// Cancels a durable step whose wait timed out, if its message is still pending.
pub fn cancel_timed_out_step(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
    step: &str,
) -> Result<(), WfError> {
    let cancelled = db::execute(client, &CANCEL_STEP, &[id.into(), step.into()], |rows| {
        Ok(!rows.is_empty())
    })?;
    if cancelled {
        // A cancelled message may have held back its ordering key (its flag).
        wake::flag_on_commit();
    }
    Ok(())
}

/// What follows a workflow's failure that no caller asked for (a claim that gave up on
/// it): its side effects are cancelled and its parent told, as `wf_fail` would.
pub fn after_failure(client: &mut SpiClient<'_>, id: pgrx::Uuid) -> Result<(), WfError> {
    cancel_side_effects(client, vec![id])?;
    children::tell_parent(client, id)
}

fn cancel_side_effects(client: &mut SpiClient<'_>, runs: Vec<pgrx::Uuid>) -> Result<(), WfError> {
    let cancelled = db::execute(client, &CANCEL_SIDE_EFFECTS, &[runs.into()], |rows| {
        Ok(!rows.is_empty())
    })?;
    if cancelled {
        // A cancelled message may have held back its ordering key (its flag).
        wake::flag_on_commit();
    }
    Ok(())
}

/// A terminal transition. Repeating the one the workflow already made changes nothing
/// (G3: a caller that retries after losing the answer to its commit); another is `55000`.
pub fn finish(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
    finish: Finish,
    output: Option<Document>,
    error: Option<&str>,
    owner: Option<&str>,
) -> Result<(), WfError> {
    guard::lock_parent(client, id)?;
    let args: [DatumWithOid; 5] = [
        id.into(),
        finish.status().as_str().into(),
        output.into(),
        error.into(),
        owner.into(),
    ];
    let finished: Option<(Option<bool>, Option<String>)> =
        db::execute(client, &FINISH, &args, |rows| {
            if rows.is_empty() {
                return Ok(None);
            }
            rows.first().get_two().map(Some)
        })?;
    if let Some((has_parent, queued)) = finished {
        let has_parent = has_parent.unwrap_or(false);
        if let Some(name) = queued {
            // Room under the name's limits: its listeners, and the push, may take another.
            super::readiness::became_ready(&name);
        }
        if finish == Finish::Cancel {
            let mut runs = children::cancel_descendants(client, id)?;
            runs.push(id);
            db::execute(
                client,
                &CANCEL_WORKFLOW_MESSAGES,
                &[runs.into()],
                |_| Ok(()),
            )?;
            wake::flag_on_commit();
        } else {
            cancel_side_effects(client, vec![id])?;
        }
        if has_parent {
            children::tell_parent(client, id)?;
        }
        return Ok(());
    }
    let lease = guard::read_lease(client, id, owner)?;
    if lease.status.as_deref() == Some(finish.status().as_str()) {
        return Ok(());
    }
    require_running(id, lease.status, finish.action())?;
    require_lease(id, owner, lease.holds, finish.action())
}

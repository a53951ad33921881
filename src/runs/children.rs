//! Child workflows: started with a `parent`, they tell it when they finish (the signal
//! `workflow.finished`, in the finishing transaction), and a cancelled parent takes its
//! running children with it.
//!
//! Locks go down the tree: a parent's row before its children's, level by level. A child's
//! writers lock its parent before it (`guard::lock_parent`), and a cancel locks the parent,
//! then the descendants in depth order, so the two never wait for each other in opposite
//! orders.

use super::guard::require_running;
use super::signals::{self, FINISHED, ToFinished};
use crate::db::{self, Statement, first_value};
use crate::document::Document;
use crate::error::WfError;
use pgrx::pg_sys::{UUIDARRAYOID, UUIDOID};
use pgrx::spi::SpiClient;

/// Writes the parent's row, which also locks it: a cancel of the parent that runs
/// concurrently waits for the child's start and then sees the child (under REPEATABLE READ
/// it fails with a serialization error instead of missing it).
static TOUCH_PARENT: Statement = Statement {
    sql: include_str!("children/touch_parent.sql"),
    args: &[UUIDOID],
};

/// The parent of a finished run and the payload of its `workflow.finished` signal.
static FINISHED_SIGNAL: Statement = Statement {
    sql: include_str!("children/finished_signal.sql"),
    args: &[UUIDOID],
};

/// Cancels the running descendants of the runs `$1`, however deep (a finished child's
/// running children too), locking them level by level first; returns them.
static CANCEL_DESCENDANTS: Statement = Statement {
    sql: include_str!("children/cancel_descendants.sql"),
    args: &[UUIDARRAYOID],
};

/// Checks that `parent` is a running workflow, and holds it until the caller commits.
pub fn adopt(client: &mut SpiClient<'_>, parent: pgrx::Uuid) -> Result<(), WfError> {
    let status: Option<String> = db::execute(client, &TOUCH_PARENT, &[parent.into()], first_value)?;
    require_running(parent, status, "wf_start (parent)")
}

/// Tells the parent of the finished run `id`, if it has one that still runs.
pub fn tell_parent(client: &mut SpiClient<'_>, id: pgrx::Uuid) -> Result<(), WfError> {
    let found: Option<(Option<pgrx::Uuid>, Option<Document>)> =
        db::execute(client, &FINISHED_SIGNAL, &[id.into()], |rows| {
            if rows.is_empty() {
                return Ok(None);
            }
            rows.first().get_two().map(Some)
        })?;
    if let Some((Some(parent), payload)) = found {
        signals::send(client, parent, FINISHED, payload, None, ToFinished::Skip)?;
    }
    Ok(())
}

/// Cancels the running descendants of a cancelled run; returns them, whose messages the
/// caller cancels with the run's.
pub fn cancel_descendants(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
) -> Result<Vec<pgrx::Uuid>, WfError> {
    let mut cancelled = Vec::new();
    db::execute(client, &CANCEL_DESCENDANTS, &[vec![id].into()], |rows| {
        for row in rows {
            cancelled.extend(row.get::<pgrx::Uuid>(1)?);
        }
        Ok(())
    })?;
    Ok(cancelled)
}

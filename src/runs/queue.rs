//! Flow control by workflow name (`wf_queue`): a claim of a name with a queue takes its
//! ready runs within the queue's limits — running in all, running per tenant, leases a
//! second — and round-robin across tenants, so that one tenant's backlog delays another's
//! work by at most a turn. `claim` comes here for every name with a queue; the names
//! without one are claimed oldest first, as before.
//!
//! Claimers of one name serialize on its queue's row: each locks it before it counts, so
//! every count sees the leases other claimers committed. An application's claim waits for
//! the row; the dispatcher's push, and a claim of any name, skip a name whose row another
//! claimer holds and come back to it (the push next round).

use crate::db::{self, Statement};
use crate::error::WfError;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{BOOLOID, INT4OID, INT8OID, TEXTOID};
use pgrx::spi::SpiClient;

/// Locks the queue of the name $1, waiting; no row when the name has none.
static LOCK: Statement = Statement {
    sql: include_str!("queue/lock.sql"),
    args: &[TEXTOID],
};

/// Locks the queue of the name $1 unless another claimer holds it.
static LOCK_OR_SKIP: Statement = Statement {
    sql: include_str!("queue/lock_or_skip.sql"),
    args: &[TEXTOID],
};

/// The names with a queue (and a push handler, when $1).
static QUEUED_NAMES: Statement = Statement {
    sql: include_str!("queue/queued_names.sql"),
    args: &[BOOLOID],
};

/// Locks up to $2 ready runs of the name $1 within its queue, round-robin by tenant (only
/// runs written in database $3, when given).
pub(crate) static READY_WITHIN: Statement = Statement {
    sql: include_str!("queue/ready_within.sql"),
    args: &[TEXTOID, INT4OID, INT8OID],
};

/// Whether a claim waits for another claimer of the same name.
#[derive(Clone, Copy, PartialEq)]
pub enum Wait {
    Yes,
    Skip,
}

/// The names with a queue; with a push handler too when `pushed`.
pub fn names(client: &mut SpiClient<'_>, pushed: bool) -> Result<Vec<String>, WfError> {
    Ok(db::execute(
        client,
        &QUEUED_NAMES,
        &[pushed.into()],
        |rows| {
            let mut names = Vec::with_capacity(rows.len());
            for row in rows {
                names.extend(row.get::<String>(1)?);
            }
            Ok(names)
        },
    )?)
}

/// Locks up to `max` ready runs of `name` within its queue, in round-robin order, and
/// only those written in database `written_in` when given. `None` when the name has no
/// queue, or when `wait` is `Skip` and another claimer holds it.
pub fn ready_within(
    client: &mut SpiClient<'_>,
    name: &str,
    max: i32,
    wait: Wait,
    written_in: Option<i64>,
) -> Result<Option<Vec<pgrx::Uuid>>, WfError> {
    let lock = match wait {
        Wait::Yes => &LOCK,
        Wait::Skip => &LOCK_OR_SKIP,
    };
    let locked = db::execute(client, lock, &[name.into()], |rows| Ok(!rows.is_empty()))?;
    if !locked {
        return Ok(None);
    }
    let args: [DatumWithOid; 3] = [name.into(), max.into(), written_in.into()];
    Ok(Some(db::execute(client, &READY_WITHIN, &args, |rows| {
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            ids.extend(row.get::<pgrx::Uuid>(1)?);
        }
        Ok(ids)
    })?))
}

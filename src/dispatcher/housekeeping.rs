//! Retention (G6): finished messages — delivered, cancelled and dead — with their attempts,
//! and finished workflows, with their steps, are deleted after `workflow.retention` (and
//! rotated-out secrets once their time is up), a small batch per transaction so that locks
//! stay short and autovacuum keeps up. Nothing finished grows without bound.

use crate::db::{self, Statement};
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::pg_sys::{INT4OID, INTERVALOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::time::Duration;

pub const BATCH: i32 = 500;
/// Batches per round, so that a large backlog cannot starve delivery; while retention is
/// behind, it runs again after every round.
pub const MAX_BATCHES: usize = 4;

/// The attempts go with their messages (there is no cascading foreign key, see the schema).
pub(crate) static PURGE_MESSAGES: Statement = Statement {
    sql: include_str!("housekeeping/purge_messages.sql"),
    args: &[INTERVALOID, INT4OID],
};

/// Folds the committed count deltas of messages and workflows into a handful of rows.
static FOLD_COUNTS: Statement = Statement {
    sql: include_str!("housekeeping/fold_counts.sql"),
    args: &[],
};

/// Drops the secrets a rotation replaced once their time to go on signing is up
/// (`wf_endpoint_rotate`).
static RETIRE_SECRETS: Statement = Statement {
    sql: include_str!("housekeeping/retire_secrets.sql"),
    args: &[],
};

/// Forgets the failing destinations that have had nothing to probe for a minute past their
/// turn (their messages delivered, dead or cancelled): a destination that is never sent to
/// again must not stay failing, and cost every round a look, for ever.
static RETIRE_DESTINATIONS: Statement = Statement {
    sql: include_str!("housekeeping/retire_destinations.sql"),
    args: &[],
};

/// Deletes one batch of each kind; returns how many rows went.
pub fn purge_batch(client: &mut SpiClient<'_>, retention: Duration) -> SpiResult<usize> {
    let retention = Interval::from_micros(retention.as_micros().min(i64::MAX as u128) as i64);
    let args: [DatumWithOid; 2] = [retention.into(), BATCH.into()];
    let messages = db::execute(client, &PURGE_MESSAGES, &args, |rows| Ok(rows.len()))?;
    let args: [DatumWithOid; 2] = [retention.into(), BATCH.into()];
    let workflows = db::execute(
        client,
        &crate::runs::retention::PURGE_FINISHED,
        &args,
        |rows| Ok(rows.len()),
    )?;
    db::execute(client, &FOLD_COUNTS, &[], |_| Ok(()))?;
    db::execute(client, &RETIRE_SECRETS, &[], |_| Ok(()))?;
    db::execute(client, &RETIRE_DESTINATIONS, &[], |_| Ok(()))?;
    Ok(messages + workflows)
}

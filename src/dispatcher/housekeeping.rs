//! Retention (G6): delivered and cancelled messages, with their attempts, and finished
//! workflows, with their steps, are deleted after `workflow.retention` (and rotated-out
//! secrets once their time is up), a small batch per
//! transaction so that locks stay short and autovacuum keeps up. Dead messages stay until
//! an operator retries or removes them.

use crate::db::{self, Statement};
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::pg_sys::{INT4OID, INTERVALOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::time::Duration;

pub const BATCH: i32 = 500;
/// Batches per round, so that a large backlog cannot starve delivery; while retention is
/// behind, it runs again after every round.
pub const MAX_BATCHES: usize = 4;

/// The attempts go with their messages (there is no cascading foreign key, see the
/// schema). Both deletes find their rows by key from one array, so their plans do not
/// depend on a guess of how many rows `LIMIT $2` yields. The cut-off is computed once, in
/// a sub-select: compared with the volatile `clock_timestamp()` directly it could not bound
/// the index scan, which then walked every finished message, every round (bench/NOTES.md).
pub(crate) static PURGE_MESSAGES: Statement = Statement {
    sql: "WITH doomed AS (
              SELECT id FROM workflow.outbox
               WHERE (status <> 'pending') IS TRUE AND status IN ('delivered', 'cancelled')
                 AND finished_at <= (SELECT clock_timestamp() - $1)
                 AND unpark_successor IS NOT TRUE
               ORDER BY finished_at
               LIMIT $2
                 FOR UPDATE SKIP LOCKED),
          gone AS (
              DELETE FROM workflow.outbox m
               WHERE m.id = ANY (ARRAY(SELECT id FROM doomed))
              RETURNING m.id, m.status, m.endpoint),
          attempts AS (
              DELETE FROM workflow.delivery_attempts a
               WHERE a.message_id = ANY (ARRAY(SELECT id FROM gone))),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT status, -count(*), endpoint FROM gone GROUP BY status, endpoint)
          SELECT id FROM gone",
    args: &[INTERVALOID, INT4OID],
};

/// Folds the committed count deltas into one row per status, endpoint and sign, so that
/// `wf_stats` sums a handful of rows, and the positive rows stay a counter that only grows
/// (every writer adds rows of one sign). Rows of transactions still open stay as they are.
static FOLD_COUNTS: Statement = Statement {
    sql: "WITH folded AS (DELETE FROM workflow.message_counts RETURNING status, n, endpoint)
          INSERT INTO workflow.message_counts (status, n, endpoint)
          SELECT status, sum(n), endpoint FROM folded GROUP BY status, endpoint, n > 0 HAVING sum(n) <> 0",
    args: &[],
};

/// Drops the secrets a rotation replaced once their time to go on signing is up
/// (`wf_endpoint_rotate`). An endpoint the owner is changing right now waits for the next
/// pass; the claim stops signing with them on time either way.
static RETIRE_SECRETS: Statement = Statement {
    sql: "UPDATE workflow.endpoint_settings e SET retiring_secrets = NULL, retiring_until = NULL
           WHERE e.name = ANY (ARRAY(
                     SELECT d.name FROM workflow.endpoint_settings d
                      WHERE d.retiring_until <= clock_timestamp()
                        FOR NO KEY UPDATE SKIP LOCKED))",
    args: &[],
};

/// Forgets the failing destinations that have had nothing to probe for a minute past their
/// turn (their messages delivered, dead or cancelled): a destination that is never sent to
/// again must not stay failing, and cost every round a look, for ever. One that is sent to
/// again starts healthy, and fails again if it must.
static RETIRE_DESTINATIONS: Statement = Statement {
    sql: "DELETE FROM workflow.destinations d
           WHERE coalesce(d.next_probe_at, '-infinity') <= clock_timestamp() - interval '1 minute'
             AND NOT EXISTS (SELECT FROM workflow.outbox m
                              WHERE coalesce(m.endpoint, m.origin) = d.destination
                                AND m.parked = 'limit')",
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

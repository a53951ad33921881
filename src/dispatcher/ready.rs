//! Announcing the workflows that became ready with time alone — a sleep or a wait's
//! timeout that ended, a lease that ran out — with `NOTIFY workflow_ready, <name>`, once
//! per name (what a transaction does itself is in `api::readiness`).
//!
//! Each look covers the expiries since the previous look, up to now, and finds the next
//! expiry to come, so the worker looks again then (at the latest a poll interval later):
//! a timer is announced within milliseconds of its end. The work of a look grows with the
//! number of workflow names, never of workflows: names come from `running_names!`, and
//! each name's expiries from the same index.

use crate::db::{self, Statement};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{INT8ARRAYOID, TIMESTAMPTZOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::time::Duration;

/// Notifies each name with a running workflow whose lease expired after `$1` (NULL: ever)
/// and by now. Returns the now it looked up to, the seconds until the next expiry, how many
/// names it notified, and whether any name has a push handler.
static ANNOUNCE: Statement = Statement {
    sql: concat!(
        "WITH ",
        running_names!(),
        "
          now AS MATERIALIZED (SELECT clock_timestamp() AS t),
          per_name AS MATERIALIZED (
              SELECT n.name,
                     EXISTS (SELECT FROM workflow.runs r
                              WHERE r.name = n.name AND (r.status = 'running') IS TRUE
                                AND r.lease_expires_at > coalesce($1, '-infinity')
                                AND r.lease_expires_at <= (SELECT t FROM now)) AS became_ready,
                     (SELECT r.lease_expires_at FROM workflow.runs r
                       WHERE r.name = n.name AND (r.status = 'running') IS TRUE
                         AND r.lease_expires_at > (SELECT t FROM now)
                       ORDER BY r.lease_expires_at LIMIT 1) AS next_expiry
                FROM names n WHERE n.name IS NOT NULL),
          sent AS (
              SELECT pg_notify('workflow_ready', name) FROM per_name WHERE became_ready)
          SELECT (SELECT t FROM now),
                 extract(epoch FROM (SELECT min(next_expiry) FROM per_name) - (SELECT t FROM now))::float8,
                 (SELECT count(*) FROM sent),
                 EXISTS (SELECT FROM workflow.handlers)"
    ),
    args: &[TIMESTAMPTZOID],
};

/// Which of the transactions `$1` (NULL: any of this database's) are still prepared,
/// waiting for their COMMIT PREPARED. Asked before a look: a transaction it no longer
/// finds has ended before the look's snapshot, which sees what it committed.
static STILL_PREPARED: Statement = Statement {
    sql: "SELECT coalesce(array_agg(transaction::text::bigint), '{}')
            FROM pg_catalog.pg_prepared_xacts
           WHERE database = current_database()
             AND ($1::int8[] IS NULL OR transaction::text::bigint = ANY ($1))",
    args: &[INT8ARRAYOID],
};

/// The transactions of `watched` (`None`: of any) that are still prepared.
pub fn still_prepared(
    client: &mut SpiClient<'_>,
    watched: Option<Vec<i64>>,
) -> SpiResult<Vec<i64>> {
    db::execute(client, &STILL_PREPARED, &[watched.into()], |rows| {
        Ok(rows.first().get::<Vec<i64>>(1)?.unwrap_or_default())
    })
}

/// What a look found: where the next one starts, when it is due, whether anything became
/// ready, and whether the rounds should push (see `api::handlers`).
pub struct Looked {
    pub up_to: Option<TimestampWithTimeZone>,
    pub next_expiry_in: Option<Duration>,
    pub became_ready: bool,
    pub pushing: bool,
}

/// Announces what became ready since `since` (None: since ever, as after a start).
pub fn announce(
    client: &mut SpiClient<'_>,
    since: Option<TimestampWithTimeZone>,
) -> SpiResult<Looked> {
    let args: [DatumWithOid; 1] = [since.into()];
    db::execute(client, &ANNOUNCE, &args, |rows| {
        let row = rows.first();
        Ok(Looked {
            up_to: row.get(1)?,
            next_expiry_in: row
                .get::<f64>(2)?
                .map(|s| Duration::from_secs_f64(s.max(0.0))),
            became_ready: row.get::<i64>(3)?.unwrap_or(0) > 0,
            pushing: row.get::<bool>(4)?.unwrap_or(false),
        })
    })
}

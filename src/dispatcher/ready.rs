//! Announcing the workflows that became ready with time alone — a sleep or a wait's
//! timeout that ended, a lease that ran out — with `NOTIFY workflow_ready, <name>`, once
//! per name (what a transaction does itself is in `runs::readiness`).
//!
//! Each look covers the expiries since the previous look, up to now, and finds the next
//! expiry to come, so the worker looks again then (at the latest a poll interval later):
//! a timer is announced within milliseconds of its end. The work of a look grows with the
//! number of workflow names, never of workflows: names are found by skipping through an index
//! (`ready/announce.sql`), and each name's expiries come from the same index.

use crate::db::{self, Statement};
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{INT8ARRAYOID, TIMESTAMPTZOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::time::Duration;

/// Notifies each name with a running workflow whose lease expired since the last look.
static ANNOUNCE: Statement = Statement {
    sql: include_str!("ready/announce.sql"),
    args: &[TIMESTAMPTZOID],
};

/// Which of the transactions `$1` (NULL: any of this database's) are still prepared,
/// waiting for their COMMIT PREPARED.
static STILL_PREPARED: Statement = Statement {
    sql: include_str!("ready/still_prepared.sql"),
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

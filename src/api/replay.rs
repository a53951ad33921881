//! Replay: sending a window of an endpoint's finished messages again, for an operator
//! whose receiver lost them or refused them while it was broken.

use crate::db::{self, Statement};
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{INT4OID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID};
use pgrx::prelude::*;

/// Most finished messages one call looks at, and most it sends again.
pub const EXAMINED: i32 = 100_000;
pub const REPLAYED: i32 = 10_000;

/// Looks at up to `$6` finished messages, oldest finished first from `$2` (a message
/// finishes after its last attempt starts, so the window's start bounds the walk of
/// `outbox_finished`), and sends those of endpoint `$1` (NULL: URL targets) in a status of
/// `$4` whose last attempt started in `[$2, $3)` again, at most `$5`: pending and due now,
/// their attempts counted afresh, as `wf_retry` does.
static REPLAY: Statement = Statement {
    sql: include_str!("replay/replay.sql"),
    args: &[
        TEXTOID,
        TIMESTAMPTZOID,
        TIMESTAMPTZOID,
        TEXTARRAYOID,
        INT4OID,
        INT4OID,
    ],
};

/// Writes the runs of the durable steps a replay of the same window may send, before it
/// looks at them (see `REPLAY`): a finish racing the replay either comes first and is seen,
/// or waits for it (and under REPEATABLE READ fails instead of missing it).
static LOCK_STEP_RUNS: Statement = Statement {
    sql: include_str!("replay/lock_step_runs.sql"),
    args: &[TEXTOID, TIMESTAMPTZOID, TEXTARRAYOID, INT4OID],
};

/// Whether the endpoint $1 exists.
static ENDPOINT_EXISTS: Statement = Statement {
    sql: include_str!("replay/endpoint_exists.sql"),
    args: &[TEXTOID],
};

const REPLAYABLE: [&str; 3] = ["dead", "cancelled", "delivered"];

/// Sends again every message of `endpoint` (NULL: of URL targets) in one of `statuses`
/// whose last attempt started between `since` and `until` (NULL: now); returns how many.
/// One call looks at up to 100,000 finished messages and sends up to 10,000; when a bound
/// stops it, a NOTICE says where to call again from.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_replay(
    endpoint: Option<&str>,
    since: Option<TimestampWithTimeZone>,
    until: default!(Option<TimestampWithTimeZone>, "NULL"),
    statuses: default!(Option<Vec<Option<String>>>, "'{dead}'"),
) -> i64 {
    let endpoint = validate::optional_name("endpoint", endpoint).or_raise();
    let since = validate::required("since", since).or_raise();
    validate::finite_timestamp("since", since.into_inner()).or_raise();
    if let Some(until) = until {
        validate::finite_timestamp("until", until.into_inner()).or_raise();
    }
    let statuses = validate::required("statuses", statuses).or_raise();
    let mut checked = Vec::with_capacity(statuses.len());
    for status in statuses {
        let status = validate::required("statuses (an entry)", status).or_raise();
        if !REPLAYABLE.contains(&status.as_str()) {
            WfError::from(validate::ArgError::Invalid {
                arg: "statuses",
                value: status,
                reason: "a replay sends dead, cancelled or delivered messages again".into(),
            })
            .raise();
        }
        checked.push(status);
    }
    let (replayed, resume, skipped) = super::write("wf_replay", |client| {
        if let Some(name) = endpoint {
            let exists: Option<bool> =
                db::execute(client, &ENDPOINT_EXISTS, &[name.into()], db::first_value)?;
            if exists.is_none() {
                return Err(WfError::UnknownEndpoint(name.to_string()));
            }
        }
        let args: [DatumWithOid; 4] = [
            endpoint.into(),
            since.into(),
            checked.clone().into(),
            EXAMINED.into(),
        ];
        db::execute(client, &LOCK_STEP_RUNS, &args, |_| Ok(()))?;
        let args: [DatumWithOid; 6] = [
            endpoint.into(),
            since.into(),
            until.into(),
            checked.into(),
            REPLAYED.into(),
            EXAMINED.into(),
        ];
        Ok(db::execute(client, &REPLAY, &args, |rows| {
            let row = rows.first();
            Ok((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<TimestampWithTimeZone>(2)?,
                row.get::<i64>(3)?.unwrap_or(0),
            ))
        })?)
    });
    if skipped > 0 {
        notice!(
            "wf_replay skipped {skipped} durable steps whose workflow decided without them \
             (the step is recorded, or the workflow finished): they are never sent again"
        );
    }
    if let Some(resume) = resume {
        notice!(
            "wf_replay stopped at its bound ({REPLAYED} messages sent, or {EXAMINED} looked at); \
             call it again with since => '{resume}' to go on"
        );
    }
    if replayed > 0 {
        wake::on_commit();
    }
    replayed
}

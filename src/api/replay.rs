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
/// their attempts counted afresh, as `wf_retry` does. A durable step whose workflow decided
/// without it — the step recorded, the wait for it timed out, the workflow no longer
/// running — is skipped (G10). Returns how many it sent, where to go
/// on if a bound stopped it (NULL: the window is done), and how many it skipped.
static REPLAY: Statement = Statement {
    sql: "WITH examined AS (
              SELECT m.id, m.finished_at FROM workflow.outbox m
               WHERE (m.status <> 'pending') IS TRUE AND m.finished_at >= $2
               ORDER BY m.finished_at
               LIMIT $6),
          decided AS (
              SELECT m.id FROM workflow.outbox m
               WHERE m.id = ANY (ARRAY(SELECT id FROM examined)) AND m.step IS NOT NULL
                 AND m.status::text = ANY ($4) AND m.endpoint IS NOT DISTINCT FROM $1
                 AND m.last_started_at >= $2 AND ($3::timestamptz IS NULL OR m.last_started_at < $3)
                 AND (NOT EXISTS (SELECT FROM workflow.runs r
                                   WHERE r.id = m.workflow_id AND r.status = 'running'
                                     AND (r.wait_step = m.step AND r.wait_signal IS NULL
                                          AND r.wait_deadline <= clock_timestamp()) IS NOT TRUE)
                      OR EXISTS (SELECT FROM workflow.checkpoints c
                                  WHERE c.workflow_id = m.workflow_id AND c.step = m.step))),
          chosen AS (
              SELECT m.id, m.status, m.endpoint, m.finished_at FROM workflow.outbox m
               WHERE m.id = ANY (ARRAY(SELECT id FROM examined))
                 AND m.id <> ALL (ARRAY(SELECT id FROM decided))
                 AND m.status::text = ANY ($4) AND m.endpoint IS NOT DISTINCT FROM $1
                 AND m.last_started_at >= $2 AND ($3::timestamptz IS NULL OR m.last_started_at < $3)
               ORDER BY m.finished_at
               LIMIT $5
                 FOR UPDATE SKIP LOCKED),
          revived AS (
              UPDATE workflow.outbox m
                 SET status = 'pending', attempts = 0, next_attempt_at = statement_timestamp(),
                     leased_until = NULL, finished_at = NULL, delivered_at = NULL,
                     unpark_successor = NULL
               WHERE m.id = ANY (ARRAY(SELECT id FROM chosen))
              RETURNING m.id),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT status, -count(*), endpoint FROM chosen GROUP BY status, endpoint)
          SELECT (SELECT count(*) FROM revived),
                 CASE WHEN (SELECT count(*) FROM chosen) >= $5 THEN (SELECT max(finished_at) FROM chosen)
                      WHEN (SELECT count(*) FROM examined) >= $6 THEN (SELECT max(finished_at) FROM examined)
                 END,
                 (SELECT count(*) FROM decided)",
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
/// looks at them (see `REPLAY`): a finish racing the replay either comes first and is
/// seen, or waits for it (and under REPEATABLE READ fails instead of missing it). Runs are
/// locked before messages, as a finish locks them.
static LOCK_STEP_RUNS: Statement = Statement {
    sql: "UPDATE workflow.runs r SET updated_at = statement_timestamp()
           WHERE r.id = ANY (ARRAY(
                     SELECT m.workflow_id FROM workflow.outbox m
                      WHERE m.id = ANY (ARRAY(
                                SELECT e.id FROM workflow.outbox e
                                 WHERE (e.status <> 'pending') IS TRUE AND e.finished_at >= $2
                                 ORDER BY e.finished_at
                                 LIMIT $4))
                        AND m.step IS NOT NULL AND m.endpoint IS NOT DISTINCT FROM $1
                        AND m.status::text = ANY ($3)))",
    args: &[TEXTOID, TIMESTAMPTZOID, TEXTARRAYOID, INT4OID],
};

static ENDPOINT_EXISTS: Statement = Statement {
    sql: "SELECT true FROM workflow.endpoint_settings WHERE name = $1",
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

//! Handing ready runs to an owner: `wf_claim`, `wf_claim_runs` and the dispatcher's push
//! all go through [`claim`], which also fails the runs that have been recovered too often
//! and tells their parents.

use super::finish;
use crate::db::{self, Statement};
use crate::document::Document;
use crate::error::WfError;
use pgrx::datum::{DatumWithOid, Interval, TimestampWithTimeZone};
use pgrx::pg_sys::{INT4OID, INTERVALOID, TEXTOID, TIMESTAMPTZOID, UUIDARRAYOID};
use pgrx::spi::SpiClient;

/// Hands out the runs of `candidate` (ready ones: a lease that expired, a sleep that ended,
/// a wait that was answered or timed out), locked by it, to the owner `$2` for the lease
/// `$3` (NULL: each run's own). Without an owner (`$2` NULL) the lease is this session's,
/// under its own name, and bound to it when `$6` (its start; see `sessions`) is given. Taking over an
/// owner's expired lease is a recovery and is counted (a checkpoint forgives the count); a
/// run already recovered `$5` times in a row is failed instead: a workflow that kills every
/// process that runs it must not loop forever. A parked run's readiness (no owner) is no
/// recovery; `$recovery` can narrow what is one further.
macro_rules! claim_ready {
    ($candidate:expr) => {
        claim_ready!($candidate, "r.owner IS NOT NULL")
    };
    ($candidate:expr, $recovery:literal) => {
        concat!(
            "WITH ",
            $candidate,
            ",
          decided AS (
              SELECT r.id, ",
            $recovery,
            " AS recovery,
                     ",
            $recovery,
            " AND r.recovery_attempts >= $5 AS give_up
                FROM workflow.runs r JOIN candidate USING (id))
          UPDATE workflow.runs r
             SET recovery_attempts = r.recovery_attempts + CASE WHEN d.recovery THEN 1 ELSE 0 END,
                 updated_at = statement_timestamp(),
                 status = CASE WHEN d.give_up THEN 'failed' ELSE 'running' END,
                 error = CASE WHEN d.give_up
                              THEN format('recovery abandoned: its lease expired %s times without a checkpoint between, workflow.max_recovery_attempts is %s',
                                          r.recovery_attempts + 1, $5)
                              ELSE r.error END,
                 finished_at = CASE WHEN d.give_up THEN statement_timestamp() END,
                 owner = CASE WHEN d.give_up THEN NULL
                              ELSE coalesce($2, session_user || ':' || pg_backend_pid()) END,
                 session_pid = CASE WHEN d.give_up OR $6 IS NULL THEN NULL ELSE pg_backend_pid() END,
                 session_started = CASE WHEN d.give_up THEN NULL ELSE $6 END,
                 wait_step = CASE WHEN d.give_up THEN NULL ELSE r.wait_step END,
                 wait_signal = CASE WHEN d.give_up THEN NULL ELSE r.wait_signal END,
                 wait_deadline = CASE WHEN d.give_up THEN NULL ELSE r.wait_deadline END,
                 lease_duration = coalesce($3, r.lease_duration),
                 lease_expires_at = CASE WHEN d.give_up THEN NULL
                                         ELSE clock_timestamp() + coalesce($3, r.lease_duration) END
            FROM decided d
           WHERE r.id = d.id
          RETURNING r.id, NOT d.give_up"
        )
    };
}

/// The arguments of every claim statement: name, owner, lease, max, recovery cap, session.
pub const CLAIM_ARGS: &[pgrx::pg_sys::Oid] = &[
    TEXTOID,
    TEXTOID,
    INTERVALOID,
    INT4OID,
    INT4OID,
    TIMESTAMPTZOID,
];

/// Up to `$4` ready runs of the name `$1`, oldest expiry first.
pub static CLAIM: Statement = Statement {
    sql: claim_ready!(
        "candidate AS (
              SELECT id FROM workflow.runs
               WHERE name = $1 AND (status = 'running') IS TRUE AND lease_expires_at <= (SELECT clock_timestamp())
               ORDER BY lease_expires_at
               LIMIT $4
                 FOR NO KEY UPDATE SKIP LOCKED)"
    ),
    args: CLAIM_ARGS,
};

/// Up to `$4` ready runs of any name, oldest expiry first (`$1` is unused). The names come
/// from `running_names!`, and each name's oldest ready runs from the same index, so the
/// work grows with the number of names, not of runs; the chosen runs are then locked by
/// key, each one's readiness checked again on the row.
pub static CLAIM_ANY: Statement = Statement {
    sql: claim_ready!(concat!(
        running_names!(),
        "
          ready AS (
              SELECT c.id FROM names n CROSS JOIN LATERAL (
                  SELECT r.id, r.lease_expires_at FROM workflow.runs r
                   WHERE r.name = n.name AND (r.status = 'running') IS TRUE
                     AND r.lease_expires_at <= (SELECT clock_timestamp())
                   ORDER BY r.lease_expires_at LIMIT $4) c
               ORDER BY c.lease_expires_at LIMIT $4),
          candidate AS (
              SELECT id FROM workflow.runs
               WHERE id = ANY (ARRAY(SELECT id FROM ready))
                 AND status = 'running' AND lease_expires_at <= clock_timestamp()
                 FOR NO KEY UPDATE SKIP LOCKED)"
    )),
    args: CLAIM_ARGS,
};

/// What a worker needs of the runs it claimed, in claim order: what a push carries.
static CLAIMED_RUNS: Statement = Statement {
    sql: "SELECT r.id, r.name, r.input,
                 (SELECT coalesce(jsonb_object_agg(c.step, c.output ORDER BY c.seq), '{}')
                    FROM workflow.checkpoints c WHERE c.workflow_id = r.id),
                 r.tenant, r.lease_expires_at
            FROM unnest($1::uuid[]) WITH ORDINALITY AS k(id, n)
            JOIN workflow.runs r ON r.id = k.id
           ORDER BY k.n",
    args: &[UUIDARRAYOID],
};

/// Who a claim is for.
#[derive(Clone, Copy)]
pub struct Claimer<'a> {
    /// NULL: the calling session, its lease bound to it.
    pub owner: Option<&'a str>,
    /// NULL: each run's own lease duration.
    pub lease: Option<Interval>,
    /// `workflow.max_recovery_attempts` as the server sets it.
    pub max_recovery_attempts: i32,
}

/// Claims up to `max` ready runs with `statement` (one of this module's, or the push's)
/// for `claimer`. A run failed for too many recoveries uses up a slot of the batch, and
/// its parent is told; the claim looks again until the batch is full or nothing ready is
/// left. Returns the runs handed out.
pub fn claim(
    client: &mut SpiClient<'_>,
    statement: &'static Statement,
    name: Option<&str>,
    claimer: Claimer<'_>,
    max: i32,
) -> Result<Vec<pgrx::Uuid>, WfError> {
    let session: Option<TimestampWithTimeZone> = match claimer.owner {
        Some(_) => None,
        None => super::sessions::bind(),
    };
    let (mut claimed, mut failed) = (Vec::new(), Vec::new());
    loop {
        let wanted = max - claimed.len() as i32;
        let args: [DatumWithOid; 6] = [
            name.into(),
            claimer.owner.into(),
            claimer.lease.into(),
            wanted.into(),
            claimer.max_recovery_attempts.into(),
            session.into(),
        ];
        let rows = db::execute(client, statement, &args, |rows| {
            let count = rows.len();
            for row in rows {
                let id = row.get::<pgrx::Uuid>(1)?;
                match row.get::<bool>(2)? {
                    Some(true) => claimed.extend(id),
                    _ => failed.extend(id),
                }
            }
            Ok(count)
        })?;
        for id in failed.drain(..) {
            finish::after_failure(client, id)?;
        }
        if rows < wanted as usize || claimed.len() as i32 >= max {
            return Ok(claimed);
        }
    }
}

/// One claimed run as `wf_claim_runs` returns it.
pub type ClaimedRun = (
    pgrx::Uuid,
    String,
    Option<Document>,
    Document,
    Option<String>,
    TimestampWithTimeZone,
);

/// The claimed runs with their input, steps, tenant and lease, in claim order. (Run as a
/// writing statement, so that it sees the claim before it in the same transaction.)
pub fn claimed_runs(
    client: &mut SpiClient<'_>,
    ids: Vec<pgrx::Uuid>,
) -> Result<Vec<ClaimedRun>, WfError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(db::execute(client, &CLAIMED_RUNS, &[ids.into()], |rows| {
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            runs.push((
                db::required(row.get(1)?)?,
                db::required(row.get(2)?)?,
                row.get::<Document>(3)?.map(Document::transfer),
                db::required(row.get::<Document>(4)?)?.transfer(),
                row.get(5)?,
                db::required(row.get(6)?)?,
            ));
        }
        Ok(runs)
    })?)
}

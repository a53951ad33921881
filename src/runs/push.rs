//! The dispatcher's push: it claims the ready workflows of every name with a handler
//! (`wf_handler`) for a fresh owner, as `wf_claim` would, and enqueues a signed
//! `workflow.ready` message to the handler in the same transaction; the message goes out
//! through the delivery machinery (signing, retries, the SSRF guard). The handler continues
//! the workflow as that owner, fenced (G7). A handler that dies leaves a lease that runs
//! out, and the workflow is pushed again to a new owner (a recovery, counted like any,
//! unless the push never reached the handler), its stale pushes cancelled.

use super::claim::{self, CLAIM_ARGS, Claimer};
use crate::config;
use crate::db::{self, Statement, first_value};
use crate::error::WfError;
use pgrx::pg_sys::{INT4OID, UUIDARRAYOID};
use pgrx::spi::SpiClient;

/// Claims up to `$4` ready workflows of the names with a handler, oldest expiry first, for
/// the owner `$2` and each run's own lease (`$1` and `$3` are unused). The names come from
/// the handlers, each name's ready runs from `runs_claimable`, so the work grows with the
/// handlers and the batch, never with the runs. Taking over from a pushed owner whose push
/// never reached its handler (still pending, dead, or cancelled) is no recovery: an
/// unreachable handler must not use up a workflow's recoveries.
pub static PUSH_CLAIM: Statement = Statement {
    sql: claim_ready!(
        "candidate AS (
              SELECT id FROM workflow.runs
               WHERE id = ANY (ARRAY(
                         SELECT c.id FROM workflow.handlers h CROSS JOIN LATERAL (
                             SELECT r.id, r.lease_expires_at FROM workflow.runs r
                              WHERE r.name = h.name AND (r.status = 'running') IS TRUE
                                AND r.lease_expires_at <= (SELECT clock_timestamp())
                              ORDER BY r.lease_expires_at LIMIT $4) c
                          ORDER BY c.lease_expires_at LIMIT $4))
                 AND status = 'running' AND lease_expires_at <= clock_timestamp()
                 FOR NO KEY UPDATE SKIP LOCKED)",
        "r.owner IS NOT NULL AND NOT EXISTS (
              SELECT FROM workflow.outbox m
               WHERE m.idempotency_key = 'workflow.ready:' || r.id || ':' || r.owner
                 AND m.status IN ('pending', 'dead', 'cancelled'))"
    ),
    args: CLAIM_ARGS,
};

/// Enqueues the push of each claimed run `$1` to its handler, and cancels the pushes of
/// earlier owners still pending. The body is the SPEC's `workflow.ready` document; the
/// idempotency key, `workflow.ready:<workflow>:<owner>`, is how stale pushes are found
/// (`wf_enqueue` refuses keys with the `workflow.` prefix, `validate::RESERVED_KEY_PREFIX`).
/// The steps go in only while their outputs together stay within `$2` bytes
/// (`workflow.max_payload_bytes`): an application can record any number of steps, and a
/// push built from all of them would fail the round that builds it, every round. Beyond
/// that, `steps` is null and `steps_omitted` true; the handler reads them with `wf_step`.
pub static PUSH_ENQUEUE: Statement = Statement {
    sql: "WITH pushed AS (
              SELECT r.id, r.name, r.owner, r.lease_expires_at, r.input, h.url, h.endpoint,
                     CASE WHEN (SELECT coalesce(sum(pg_column_size(c.output)), 0)
                                  FROM workflow.checkpoints c WHERE c.workflow_id = r.id) <= $2
                          THEN (SELECT coalesce(jsonb_object_agg(c.step, c.output), '{}')
                                  FROM workflow.checkpoints c WHERE c.workflow_id = r.id)
                     END AS steps
                FROM workflow.runs r JOIN workflow.handlers h ON h.name = r.name
               WHERE r.id = ANY ($1)),
          superseded AS (
              UPDATE workflow.outbox m
                 SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
                     parked = NULL
               WHERE m.workflow_id = ANY ($1) AND m.status = 'pending'
                 AND m.idempotency_key LIKE 'workflow.ready:%'
              RETURNING m.id, m.endpoint),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT 'cancelled', count(*), endpoint FROM superseded GROUP BY endpoint),
          enqueued AS (
              INSERT INTO workflow.outbox (url, endpoint, payload, idempotency_key, workflow_id)
              SELECT url, endpoint,
                     jsonb_build_object('type', 'workflow.ready', 'workflow', id, 'name', name,
                                        'owner', owner, 'lease_expires_at', lease_expires_at,
                                        'input', input, 'steps', steps,
                                        'steps_omitted', steps IS NULL),
                     'workflow.ready:' || id || ':' || owner, id
                FROM pushed
              RETURNING id)
          SELECT extract(epoch FROM min(p.lease_expires_at) - clock_timestamp())::float8
            FROM pushed p WHERE EXISTS (SELECT FROM enqueued)",
    args: &[UUIDARRAYOID, INT4OID],
};

/// Claims and enqueues the pushes of up to `max` ready workflows; returns how many, and
/// when the first of their leases runs out (when to look for handlers that died). For the
/// dispatcher's round, before it claims messages (which then include these).
pub fn push_ready(
    client: &mut SpiClient<'_>,
    max: i32,
    max_recovery_attempts: i32,
) -> Result<(usize, Option<std::time::Duration>), WfError> {
    let owner = format!("push-{:032x}", rand::random::<u128>());
    let claimer = Claimer {
        owner: Some(&owner),
        lease: None,
        max_recovery_attempts,
    };
    let pushed = claim::claim(client, &PUSH_CLAIM, None, claimer, max)?;
    if pushed.is_empty() {
        return Ok((0, None));
    }
    let count = pushed.len();
    let steps_limit = i32::try_from(config::max_payload_bytes()).unwrap_or(i32::MAX);
    let expires_in: Option<f64> = db::execute(
        client,
        &PUSH_ENQUEUE,
        &[pushed.into(), steps_limit.into()],
        first_value,
    )?;
    Ok((
        count,
        expires_in.map(|s| std::time::Duration::from_secs_f64(s.max(0.0))),
    ))
}

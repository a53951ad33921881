//! The outbox: messages enqueued in the caller's transaction, delivered by the dispatcher
//! after commit. Enqueue validates everything it can at once, so a message that commits
//! can be sent.

use crate::db::{self, Statement, first_value, required};
use crate::delivery::target;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{INT8OID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

static ENDPOINT_EXISTS: Statement = Statement {
    sql: "SELECT true FROM workflow.endpoint_settings WHERE name = $1",
    args: &[TEXTOID],
};

/// For a durable HTTP step: writes the run's row, which locks it, so that two enqueues of
/// one step queue behind each other and the second finds the first's message (under
/// REPEATABLE READ it fails with a serialization error instead of sending twice).
static LOCK_STEP_RUN: Statement = Statement {
    sql: "UPDATE workflow.runs SET updated_at = statement_timestamp() WHERE id = $1 RETURNING status",
    args: &[UUIDOID],
};

/// The message already enqueued for a durable step.
static FIND_STEP: Statement = Statement {
    sql: "SELECT id FROM workflow.outbox WHERE workflow_id = $1 AND step = $2 ORDER BY id LIMIT 1",
    args: &[UUIDOID, TEXTOID],
};

static WORKFLOW_STATUS: Statement = Statement {
    // KEY SHARE: the workflow cannot be deleted under the message's reference.
    sql: "SELECT status FROM workflow.runs WHERE id = $1 FOR KEY SHARE",
    args: &[UUIDOID],
};

/// Serialises enqueuers of one ordering key until they commit, so that id order is commit
/// order for the key. The lock is a transaction's lock on a pseudo-object whose class is the
/// outbox's own OID, which no SQL statement can take: an advisory lock, which any role can
/// take, would let any role hold a key back. Keys whose hashes collide share a lock, which
/// only serialises them more. (In `pg_locks`: locktype `object`, classid the outbox.)
pub(super) fn lock_ordering_key(key: &str) {
    // SAFETY: catalog lookups and a lock request inside the caller's transaction; a
    // missing schema raises a normal ERROR.
    unsafe {
        let namespace = pgrx::pg_sys::get_namespace_oid(c"workflow".as_ptr(), false);
        let outbox = pgrx::pg_sys::get_relname_relid(c"outbox".as_ptr(), namespace);
        pgrx::pg_sys::LockDatabaseObject(
            outbox,
            pgrx::pg_sys::Oid::from(fnv1a(key.as_bytes())),
            0,
            pgrx::pg_sys::ExclusiveLock as pgrx::pg_sys::LOCKMODE,
        );
    }
}

/// 32-bit FNV-1a: the same in every backend and every release.
fn fnv1a(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5, |hash: u32, &b| {
        (hash ^ u32::from(b)).wrapping_mul(0x0100_0193)
    })
}

macro_rules! insert_message {
    () => {
        "INSERT INTO workflow.outbox AS m
              (url, endpoint, payload, headers, idempotency_key, next_attempt_at, workflow_id, step, ordering_key)
          VALUES ($1, $2, $3, $4, $5, COALESCE($6, statement_timestamp()), $7, $8, $9)"
    };
}
const ENQUEUE_ARGS: &[pgrx::pg_sys::Oid] = &[
    TEXTOID,
    TEXTOID,
    JSONBOID,
    JSONBOID,
    TEXTOID,
    TIMESTAMPTZOID,
    UUIDOID,
    TEXTOID,
    TEXTOID,
];

/// Without an idempotency key nothing can conflict, and a plain insert skips the
/// speculative insertion `ON CONFLICT` always costs (a lock on a speculative token, a
/// probe of the arbiter index and a second WAL record to confirm the row).
static ENQUEUE: Statement = Statement {
    sql: concat!(insert_message!(), " RETURNING m.id"),
    args: ENQUEUE_ARGS,
};

static ENQUEUE_KEYED: Statement = Statement {
    sql: concat!(
        insert_message!(),
        " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING RETURNING m.id"
    ),
    args: ENQUEUE_ARGS,
};

static FIND_BY_KEY: Statement = Statement {
    sql: "SELECT id FROM workflow.outbox WHERE idempotency_key = $1",
    args: &[TEXTOID],
};

static MESSAGE: Statement = Statement {
    sql: "SELECT target, status, attempts, next_attempt_at, last_status_code, last_error,
                 delivered_at, created_at, webhook_id
            FROM workflow.messages WHERE id = $1",
    args: &[INT8OID],
};

/// (Each statement that moves messages between states keeps `workflow.message_counts`.
/// One that takes a message with an ordering key out of pending flags the key's next
/// message for the dispatcher to unpark; a revived message is pending and needs no flag.)
/// (A durable step is checked first, see `STEP_RUN`.)
pub(crate) static RETRY: Statement = Statement {
    sql: "WITH revived AS (
              SELECT id, status, endpoint FROM workflow.outbox WHERE id = $1 AND status IN ('dead', 'cancelled') FOR UPDATE),
          pending AS (
              UPDATE workflow.outbox
                 SET status = 'pending', attempts = 0, next_attempt_at = statement_timestamp(),
                     leased_until = NULL, finished_at = NULL, delivered_at = NULL,
                     unpark_successor = NULL
               WHERE id = (SELECT id FROM revived)
              RETURNING id),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT status, -1, endpoint FROM revived WHERE EXISTS (SELECT FROM pending))
          SELECT id FROM pending",
    args: &[INT8OID],
};

pub(crate) static CANCEL: Statement = Statement {
    sql: "WITH cancelled AS (
              UPDATE workflow.outbox
                 SET status = 'cancelled', leased_until = NULL, finished_at = statement_timestamp(),
                     parked = NULL, unpark_successor = CASE WHEN ordering_key IS NOT NULL THEN true END
               WHERE id = $1 AND status = 'pending'
              RETURNING id, endpoint),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT 'cancelled', 1, endpoint FROM cancelled)
          SELECT id FROM cancelled",
    args: &[INT8OID],
};

/// For a durable step: writes its run's row, which locks it as the run's writers do, so
/// that a finish of the workflow racing a retry either comes first and is seen, or waits
/// (and under REPEATABLE READ fails with a serialization error instead of missing it).
static STEP_RUN: Statement = Statement {
    sql: "UPDATE workflow.runs SET updated_at = statement_timestamp()
           WHERE id = (SELECT workflow_id FROM workflow.outbox WHERE id = $1 AND step IS NOT NULL)",
    args: &[INT8OID],
};

/// A message's status, and for a durable step whose workflow decided without it, what it
/// decided (G10): the step recorded, the wait for it timed out, or the workflow's status.
static MESSAGE_STATUS: Statement = Statement {
    sql: "SELECT m.status,
                 CASE WHEN m.step IS NULL THEN NULL
                      WHEN EXISTS (SELECT FROM workflow.checkpoints c
                                    WHERE c.workflow_id = m.workflow_id AND c.step = m.step)
                      THEN 'recorded'
                      WHEN r.status IS DISTINCT FROM 'running' THEN coalesce(r.status, 'removed')
                      WHEN r.wait_step = m.step AND r.wait_signal IS NULL
                           AND r.wait_deadline <= clock_timestamp()
                      THEN 'timed out'
                 END
            FROM workflow.outbox m LEFT JOIN workflow.runs r ON r.id = m.workflow_id
           WHERE m.id = $1",
    args: &[INT8OID],
};

pub(crate) static STATS: Statement = Statement {
    sql: "WITH counts AS (
              SELECT (SELECT count(*) FROM workflow.outbox WHERE (status = 'pending') IS TRUE AND parked IS NULL)
                     + (SELECT count(*) FROM workflow.outbox WHERE parked IS NOT NULL) AS pending,
                     coalesce(sum(n) FILTER (WHERE status = 'delivered'), 0)::bigint AS delivered,
                     coalesce(sum(n) FILTER (WHERE status = 'dead'), 0)::bigint AS dead,
                     coalesce(sum(n) FILTER (WHERE status = 'cancelled'), 0)::bigint AS cancelled
                FROM workflow.message_counts),
          oldest AS (
              SELECT clock_timestamp() - least(
                         (SELECT min(created_at) FROM workflow.outbox
                           WHERE (status = 'pending') IS TRUE AND parked IS NULL),
                         (SELECT min(created_at) FROM workflow.outbox WHERE parked IS NOT NULL)) AS age),
          last_minute AS (
              SELECT count(*) FILTER (WHERE status_code BETWEEN 200 AND 299) AS deliveries,
                     count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299) AS failures
                FROM (SELECT status_code FROM workflow.delivery_attempts
                       WHERE started_at >= statement_timestamp() - interval '1 minute'
                      UNION ALL
                      -- Each message's latest attempt is on the message: pending ones
                      -- through the due and parked indexes, finished ones through the
                      -- finished index (a message finishes after its last attempt starts, so
                      -- the condition on finished_at follows and bounds the scan to the last
                      -- minute).
                      SELECT last_status_code FROM workflow.outbox
                       WHERE (status = 'pending') IS TRUE AND parked IS NULL
                         AND last_started_at >= statement_timestamp() - interval '1 minute'
                      UNION ALL
                      SELECT last_status_code FROM workflow.outbox
                       WHERE parked IS NOT NULL
                         AND last_started_at >= statement_timestamp() - interval '1 minute'
                      UNION ALL
                      SELECT last_status_code FROM workflow.outbox
                       WHERE (status <> 'pending') IS TRUE
                         AND finished_at >= statement_timestamp() - interval '1 minute'
                         AND last_started_at >= statement_timestamp() - interval '1 minute') a),
          latency AS (
              SELECT percentile_cont(0.5) WITHIN GROUP (ORDER BY ms) AS p50,
                     percentile_cont(0.99) WITHIN GROUP (ORDER BY ms) AS p99
                FROM (SELECT extract(epoch FROM delivered_at - created_at) * 1000 AS ms
                        FROM workflow.outbox
                       WHERE (status <> 'pending') IS TRUE AND status = 'delivered'
                         AND finished_at >= statement_timestamp() - interval '1 minute') d)
          SELECT c.pending, c.delivered, c.dead, c.cancelled, o.age, m.deliveries, m.failures,
                 l.p50, l.p99,
                 EXISTS (SELECT FROM pg_catalog.pg_stat_activity
                          WHERE backend_type = 'workflow dispatcher' AND datname = current_database()),
                 (SELECT count(*) FROM workflow.endpoint_settings WHERE disabled_at IS NOT NULL)
            FROM counts c, oldest o, last_minute m, latency l",
    args: &[],
};

/// Where a message goes: a URL, or a registered endpoint.
pub(super) enum Target<'a> {
    Url(&'a str),
    Endpoint(&'a str),
}

pub(super) fn parse_target(text: Option<&str>) -> Result<Target<'_>, WfError> {
    let text = validate::required("target", text)?;
    if target::is_url(text) {
        target::parse_url(text).map_err(|e| WfError::InvalidUrl {
            arg: "target",
            reason: e.to_string(),
        })?;
        Ok(Target::Url(text))
    } else {
        Ok(Target::Endpoint(validate::name("target", Some(text))?))
    }
}

pub(super) fn require_endpoint(client: &mut SpiClient<'_>, name: &str) -> Result<(), WfError> {
    let exists: Option<bool> = db::execute(client, &ENDPOINT_EXISTS, &[name.into()], first_value)?;
    exists
        .map(|_| ())
        .ok_or_else(|| WfError::UnknownEndpoint(name.to_string()))
}

/// Adds a message to the outbox in the caller's transaction; returns its id. With an
/// idempotency key, a repeated enqueue returns the first message's id and adds nothing; so does
/// a durable step (`workflow` and `step`) enqueued again.
#[allow(clippy::too_many_arguments)] // the SQL signature is the SPEC's
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_enqueue(
    target: Option<&str>,
    payload: Option<Document>,
    headers: default!(Option<Document>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
    deliver_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    workflow: default!(Option<pgrx::Uuid>, "NULL"),
    step: default!(Option<&str>, "NULL"),
    ordering_key: default!(Option<&str>, "NULL"),
) -> i64 {
    let target = parse_target(target).or_raise();
    let payload = super::message_parts(payload, headers, deliver_at).or_raise();
    let key = validate::message_key("idempotency_key", idempotency_key).or_raise();
    let step = validate::optional_name("step", step).or_raise();
    if step.is_some() && workflow.is_none() {
        WfError::StepWithoutWorkflow.raise();
    }
    let ordering_key = validate::message_key("ordering_key", ordering_key).or_raise();

    let id = super::write("wf_enqueue", |client| {
        let (url, endpoint) = match target {
            Target::Url(url) => (Some(url), None),
            Target::Endpoint(name) => {
                require_endpoint(client, name)?;
                (None, Some(name))
            }
        };
        if let Some(id) = workflow {
            let lock = if step.is_some() {
                crate::runs::guard::lock_parent(client, id)?;
                &LOCK_STEP_RUN
            } else {
                &WORKFLOW_STATUS
            };
            let status: Option<String> = db::execute(client, lock, &[id.into()], first_value)?;
            crate::runs::guard::require_running(id, status, "wf_enqueue")?;
            if let Some(step) = step {
                // A durable step is enqueued once, whatever the key (G4).
                let args: [DatumWithOid; 2] = [id.into(), step.into()];
                if let Some(existing) = db::execute(client, &FIND_STEP, &args, first_value)? {
                    return Ok(existing);
                }
            }
        }
        if let Some(key) = ordering_key {
            lock_ordering_key(key);
        }
        let args: [DatumWithOid; 9] = [
            url.into(),
            endpoint.into(),
            payload.into(),
            headers.into(),
            key.into(),
            deliver_at.into(),
            workflow.into(),
            step.into(),
            ordering_key.into(),
        ];
        let enqueue = if key.is_some() {
            &ENQUEUE_KEYED
        } else {
            &ENQUEUE
        };
        if let Some(id) = db::execute(client, enqueue, &args, first_value::<i64>)? {
            return Ok(id);
        }
        // Only a keyed enqueue can conflict, and the first one has committed by now.
        db::execute(client, &FIND_BY_KEY, &[key.into()], first_value::<i64>)?
            .ok_or(WfError::StartRace)
    });
    match deliver_at {
        Some(due) => wake::on_commit_for(due.into_inner()),
        None => wake::on_commit(),
    }
    id
}

/// Where one message's delivery stands.
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out to name the columns
#[pg_extern(stable, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_message(
    id: Option<i64>,
) -> TableIterator<
    'static,
    (
        name!(target, String),
        name!(status, String),
        name!(attempts, i32),
        name!(next_attempt_at, Option<TimestampWithTimeZone>),
        name!(last_status_code, Option<i32>),
        name!(last_error, Option<String>),
        name!(delivered_at, Option<TimestampWithTimeZone>),
        name!(created_at, TimestampWithTimeZone),
        name!(webhook_id, String),
    ),
> {
    let id = validate::required("id", id).or_raise();
    let row = super::read(|client| {
        Ok(db::query(client, &MESSAGE, &[id.into()], |rows| {
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            let status: String = row.get(2)?.unwrap_or_default();
            // The next attempt time only means something while the message is pending.
            let next = if status == "pending" {
                row.get(4)?
            } else {
                None
            };
            Ok(Some((
                row.get::<String>(1)?.unwrap_or_default(),
                status,
                row.get::<i32>(3)?.unwrap_or(0),
                next,
                row.get(5)?,
                row.get(6)?,
                row.get(7)?,
                required(row.get(8)?)?,
                row.get::<String>(9)?.unwrap_or_default(),
            )))
        })?)
    });
    match row {
        Some(row) => TableIterator::once(row),
        None => WfError::UnknownMessage(id).raise(),
    }
}

/// The changes of one message's state an application may ask for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Transition {
    Retry,
    Cancel,
}

impl Transition {
    fn statement(self) -> &'static Statement {
        match self {
            Transition::Retry => &RETRY,
            Transition::Cancel => &CANCEL,
        }
    }

    fn action(self) -> &'static str {
        match self {
            Transition::Retry => "wf_retry",
            Transition::Cancel => "wf_cancel_message",
        }
    }

    /// The statuses it starts from, as its error names them.
    fn allowed(self) -> &'static str {
        match self {
            Transition::Retry => "dead or cancelled",
            Transition::Cancel => "pending",
        }
    }
}

fn transition(id: i64, transition: Transition) {
    super::write(transition.action(), |client| {
        let status = |client: &mut pgrx::spi::SpiClient<'_>| {
            db::execute(client, &MESSAGE_STATUS, &[id.into()], |rows| {
                if rows.is_empty() {
                    return Ok(None);
                }
                rows.first().get_two().map(Some)
            })
        };
        if transition == Transition::Retry {
            // A step its workflow decided without is never sent again (G10): checked after
            // its run is locked, in a statement of its own that sees what came before.
            db::execute(client, &STEP_RUN, &[id.into()], |_| Ok(()))?;
            if let Some((_, Some(decided))) = status(client)? {
                return Err(WfError::StepDecided { id, decided });
            }
        }
        if db::execute(client, transition.statement(), &[id.into()], |rows| {
            Ok(!rows.is_empty())
        })? {
            return Ok(());
        }
        let found: Option<(Option<String>, Option<String>)> = status(client)?;
        Err(match found {
            None => WfError::UnknownMessage(id),
            // A durable step its workflow decided without (G10): never sent again.
            Some((_, Some(decided))) if transition == Transition::Retry => {
                WfError::StepDecided { id, decided }
            }
            Some((status, _)) => WfError::MessageState {
                id,
                status: status.unwrap_or_default(),
                action: transition.action(),
                allowed: transition.allowed(),
            },
        })
    })
}

/// Sends a dead or cancelled message again, with its attempts counted afresh. A durable
/// step whose step is recorded, or whose workflow finished, is not sent again (G10).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_retry(id: Option<i64>) {
    let id = validate::required("id", id).or_raise();
    transition(id, Transition::Retry);
    wake::on_commit();
}

/// Stops a pending message. A request already in flight may still arrive.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_cancel_message(id: Option<i64>) {
    let id = validate::required("id", id).or_raise();
    transition(id, Transition::Cancel);
    // A cancelled head of an ordering key lets the next message of the key go (its flag).
    wake::flag_on_commit();
}

/// One row of outbox health: counts by state, the oldest pending message's age, the last
/// minute's deliveries, failures and commit-to-delivery latency, whether a dispatcher
/// serves this database, and how many endpoints are disabled.
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out to name the columns
#[pg_extern(stable, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_stats() -> TableIterator<
    'static,
    (
        name!(pending, i64),
        name!(delivered, i64),
        name!(dead, i64),
        name!(cancelled, i64),
        name!(oldest_pending_age, Option<pgrx::datum::Interval>),
        name!(deliveries_last_minute, i64),
        name!(failures_last_minute, i64),
        name!(latency_p50_ms, Option<f64>),
        name!(latency_p99_ms, Option<f64>),
        name!(dispatcher_running, bool),
        name!(endpoints_disabled, i64),
    ),
> {
    let row = super::read(|client| {
        Ok(db::query(client, &STATS, &[], |rows| {
            let row = rows.first();
            Ok((
                row.get::<i64>(1)?.unwrap_or(0),
                row.get::<i64>(2)?.unwrap_or(0),
                row.get::<i64>(3)?.unwrap_or(0),
                row.get::<i64>(4)?.unwrap_or(0),
                row.get(5)?,
                row.get::<i64>(6)?.unwrap_or(0),
                row.get::<i64>(7)?.unwrap_or(0),
                row.get(8)?,
                row.get(9)?,
                row.get::<bool>(10)?.unwrap_or(false),
                row.get::<i64>(11)?.unwrap_or(0),
            ))
        })?)
    });
    TableIterator::once(row)
}

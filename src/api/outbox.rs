//! The outbox: messages enqueued in the caller's transaction, delivered by the dispatcher
//! after commit. Enqueue validates everything it can at once, so a message that commits
//! can be sent.

use super::crowding;
use crate::config;
use crate::db::{self, Statement, first_value, required};
use crate::delivery::target;
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{INT4OID, INT8OID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::prelude::*;
use pgrx::spi::SpiClient;

/// Whether the endpoint $1 exists.
static ENDPOINT_EXISTS: Statement = Statement {
    sql: include_str!("outbox/endpoint_exists.sql"),
    args: &[TEXTOID],
};

/// For a durable HTTP step: writes the run's row, which locks it, so that two enqueues of
/// one step queue behind each other and the second finds the first's message (under
/// REPEATABLE READ it fails with a serialization error instead of sending twice).
static LOCK_STEP_RUN: Statement = Statement {
    sql: include_str!("outbox/lock_step_run.sql"),
    args: &[UUIDOID],
};

/// The message already enqueued for a durable step.
static FIND_STEP: Statement = Statement {
    sql: include_str!("outbox/find_step.sql"),
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
    TEXTOID,
    TEXTOID,
    INT4OID,
    INT4OID,
    INT4OID,
];

/// Without an idempotency key nothing can conflict, and a plain insert skips the
/// speculative insertion `ON CONFLICT` always costs (a lock on a speculative token, a probe
/// of the arbiter index and a second WAL record to confirm the row).
pub(crate) static ENQUEUE: Statement = Statement {
    sql: include_str!("outbox/enqueue.sql"),
    args: ENQUEUE_ARGS,
};

/// Enqueues a message with an idempotency key: a key used before inserts nothing, and the
/// caller looks the first message up (find_by_key.sql).
static ENQUEUE_KEYED: Statement = Statement {
    sql: include_str!("outbox/enqueue_keyed.sql"),
    args: ENQUEUE_ARGS,
};

/// The message enqueued with the idempotency key $1, if any.
static FIND_BY_KEY: Statement = Statement {
    sql: include_str!("outbox/find_by_key.sql"),
    args: &[TEXTOID],
};

/// One message as `wf_message_status` shows it.
static MESSAGE: Statement = Statement {
    sql: include_str!("outbox/message.sql"),
    args: &[INT8OID],
};

/// (Each statement that moves messages between states keeps `workflow.message_counts`.
pub(crate) static RETRY: Statement = Statement {
    sql: include_str!("outbox/retry.sql"),
    args: &[INT8OID],
};

/// Cancels the message $1 if it is still pending, counting it (message_counts) and flagging
/// its ordering key's next message for unparking; returns it if it was cancelled.
pub(crate) static CANCEL: Statement = Statement {
    sql: include_str!("outbox/cancel.sql"),
    args: &[INT8OID],
};

/// For a durable step: writes its run's row, which locks it as the run's writers do, so
/// that a finish of the workflow racing a retry either comes first and is seen, or waits
/// (and under REPEATABLE READ fails with a serialization error instead of missing it).
static STEP_RUN: Statement = Statement {
    sql: include_str!("outbox/step_run.sql"),
    args: &[INT8OID],
};

/// A message's status, and for a durable step whose workflow decided without it, what it
/// decided (G10): the step recorded, the wait for it timed out, or the workflow's status.
static MESSAGE_STATUS: Statement = Statement {
    sql: include_str!("outbox/message_status.sql"),
    args: &[INT8OID],
};

/// The outbox's numbers for `wf_stats()`: pending, counts by outcome, how long the oldest
/// due message has waited, the last minute's attempts and latency, whether a dispatcher runs, and
/// how many endpoints are disabled.
pub(crate) static STATS: Statement = Statement {
    sql: include_str!("outbox/stats.sql"),
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
/// a durable step (`workflow` and `step`) enqueued again. `tenant` (default: the workflow's)
/// is who the message is for: a destination's messages are claimed round-robin by tenant.
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
    tenant: default!(Option<&str>, "NULL"),
) -> i64 {
    let target = parse_target(target).or_raise();
    let payload = super::message_parts(payload, headers, deliver_at).or_raise();
    let key = validate::message_key("idempotency_key", idempotency_key).or_raise();
    let step = validate::optional_name("step", step).or_raise();
    if step.is_some() && workflow.is_none() {
        WfError::StepWithoutWorkflow.raise();
    }
    let ordering_key = validate::message_key("ordering_key", ordering_key).or_raise();
    let tenant = validate::optional_name("tenant", tenant).or_raise();

    let (id, parked) = super::write("wf_enqueue", |client| {
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
                    return Ok((existing, false));
                }
            }
        }
        if let Some(key) = ordering_key {
            lock_ordering_key(key);
        }
        let destination = match (endpoint, url) {
            (Some(name), _) => name.to_string(),
            (None, url) => url.and_then(target::origin).unwrap_or_default(),
        };
        let args: [DatumWithOid; 14] = [
            url.into(),
            endpoint.into(),
            payload.into(),
            headers.into(),
            key.into(),
            deliver_at.into(),
            workflow.into(),
            step.into(),
            ordering_key.into(),
            tenant.into(),
            destination.as_str().into(),
            crowding::enqueued_before(&destination).into(),
            (config::max_concurrency_per_destination().min(i32::MAX as usize) as i32).into(),
            crate::dispatcher::claim::LEASE_GENERATIONS.into(),
        ];
        let enqueue = if key.is_some() {
            &ENQUEUE_KEYED
        } else {
            &ENQUEUE
        };
        if let Some((id, parked)) = db::execute(client, enqueue, &args, id_and_parked)? {
            if !parked && deliver_at.is_none() {
                crowding::enqueued(&destination);
            }
            return Ok((id, parked));
        }
        // Only a keyed enqueue can conflict, and the first one has committed by now.
        db::execute(client, &FIND_BY_KEY, &[key.into()], first_value::<i64>)?
            .map(|id| (id, false))
            .ok_or(WfError::StartRace)
    });
    match deliver_at {
        Some(due) => wake::on_commit_for(due.into_inner()),
        None if parked => wake::parked_on_commit(),
        None => wake::on_commit(),
    }
    id
}

/// The id of the message an enqueue inserted, and whether it was parked at its limit.
fn id_and_parked(rows: pgrx::spi::SpiTupleTable<'_>) -> pgrx::spi::SpiResult<Option<(i64, bool)>> {
    if rows.is_empty() {
        return Ok(None);
    }
    let row = rows.first();
    Ok(Some((
        required(row.get::<i64>(1)?)?,
        row.get::<bool>(2)? == Some(true),
    )))
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

/// One row of outbox health: counts by state, how long the oldest due message has waited,
/// the last minute's deliveries, failures and latencies (enqueue to answer, and the request
/// alone), whether a dispatcher serves this database, how many endpoints are disabled, and
/// why delivery is paused (NULL: it is not; see `wf_dispatch_pause`).
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
        name!(enqueue_to_answer_p50_ms, Option<f64>),
        name!(enqueue_to_answer_p99_ms, Option<f64>),
        name!(request_p50_ms, Option<f64>),
        name!(request_p99_ms, Option<f64>),
        name!(dispatcher_running, bool),
        name!(endpoints_disabled, i64),
        name!(paused_reason, Option<String>),
    ),
> {
    let row = super::read(|client| {
        let paused_reason = match crate::identity::read(client)? {
            crate::identity::Dispatch::Serving => None,
            crate::identity::Dispatch::Paused(reason) => Some(reason),
            crate::identity::Dispatch::Copy => Some(
                "a copy of another database: its dispatcher pauses it, and it delivers and pushes nothing until wf_dispatch_resume()"
                    .to_string(),
            ),
        };
        Ok(crate::db::without_seqscans(|| {
            db::query(client, &STATS, &[], |rows| {
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
                    row.get(10)?,
                    row.get(11)?,
                    row.get::<bool>(12)?.unwrap_or(false),
                    row.get::<i64>(13)?.unwrap_or(0),
                    paused_reason,
                ))
            })
        })?)
    });
    TableIterator::once(row)
}

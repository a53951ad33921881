//! Durable workflows: start, checkpoint, finish, inspect, and recover through leases.
//!
//! Every function runs inside the caller's transaction (G1). Replays are answered from the
//! recorded checkpoint (G3) and keyed starts are answered from the first start (G4).

use crate::config;
use crate::db::{self, Statement, first_value, required};
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::runs::claim::{self, Claimer, Ready};
use crate::runs::guard::{self, lease_or_default, lock_running, read_step, require_writable};
use crate::runs::{children, finish, readiness, sessions};
use crate::wake;
use crate::workflow::Finish;
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, Interval, TimestampWithTimeZone};
use pgrx::pg_sys::{INTERVALOID, JSONBOID, TEXTOID, TIMESTAMPTZOID, UUIDOID};
use pgrx::prelude::*;

/// How many times wf_start retries when the row it conflicted with vanished (rolled back
/// or purged) before it could read it. Each retry needs a concurrent delete, so two is a lot.
const START_RETRIES: usize = 3;

const START_ARGS: &[pgrx::pg_sys::Oid] = &[
    TEXTOID,
    TEXTOID,
    JSONBOID,
    TEXTOID,
    INTERVALOID,
    UUIDOID,
    TEXTOID,
    TIMESTAMPTZOID,
];

/// Without a key, a plain insert (see `outbox::ENQUEUE` on what `ON CONFLICT` costs).
static START: Statement = Statement {
    sql: include_str!("workflows/start.sql"),
    args: START_ARGS,
};

/// Starts a workflow with an idempotency key: a key used before for the name inserts
/// nothing, and the caller looks the first run up (find_by_key.sql).
static START_KEYED: Statement = Statement {
    sql: include_str!("workflows/start_keyed.sql"),
    args: START_ARGS,
};

/// The run of the name $1 started with the idempotency key $2, if any.
static FIND_BY_KEY: Statement = Statement {
    sql: include_str!("workflows/find_by_key.sql"),
    args: &[TEXTOID, TEXTOID],
};

/// Records a new step and renews the lease, in one statement (a checkpoint is the hot path
/// of every workflow).
static CHECKPOINT: Statement = Statement {
    sql: include_str!("workflows/checkpoint.sql"),
    args: &[UUIDOID, TEXTOID, JSONBOID, TEXTOID],
};

/// Renews a held lease, for `$3` or the run's lease duration; a parked run (no owner) has
/// none to renew.
static HEARTBEAT: Statement = Statement {
    sql: include_str!("workflows/heartbeat.sql"),
    args: &[UUIDOID, TEXTOID, INTERVALOID],
};

/// Records a sleep as a step, releases the lease and makes the run claimable from `until`.
static RECORD_SLEEP: Statement = Statement {
    sql: include_str!("workflows/record_sleep.sql"),
    args: &[UUIDOID, TEXTOID, TIMESTAMPTZOID],
};

/// Releases a held lease: no owner, ready now (a parked run's readiness, which no claim
/// counts as a recovery).
static RELEASE: Statement = Statement {
    sql: include_str!("workflows/release.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// One workflow as `wf_status` shows it.
static STATUS: Statement = Statement {
    sql: include_str!("workflows/status.sql"),
    args: &[UUIDOID],
};

/// What a keyed start does when the key was used already: return the first workflow's id
/// (G4), or raise `23505`.
#[derive(Clone, Copy, PartialEq, Eq)]
enum IfExists {
    Return,
    Error,
}

fn if_exists(value: Option<&str>) -> Result<IfExists, WfError> {
    match value {
        Some("return") => Ok(IfExists::Return),
        Some("error") => Ok(IfExists::Error),
        other => Err(validate::ArgError::Invalid {
            arg: "if_exists",
            value: other.unwrap_or("NULL").to_string(),
            reason: "it is 'return' (the existing workflow's id) or 'error'".into(),
        }
        .into()),
    }
}

/// Starts a workflow in state `running`, leased to `owner` for `workflow.lease_duration`;
/// without `owner`, to this session, bound to it: freed when the session ends. With an
/// idempotency key, a repeated start returns the first id, or with `if_exists => 'error'`
/// raises `23505`. With `parent`, a child: its parent is signalled when it finishes, and
/// cancelled with it. Without `owner`, a workflow whose name has a push handler starts
/// ready, to be pushed. `tenant` names who the work is for.
#[allow(clippy::too_many_arguments)] // the SQL signature is the SPEC's
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_start(
    name: Option<&str>,
    input: default!(Option<Document>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
    owner: default!(Option<&str>, "NULL"),
    parent: default!(Option<pgrx::Uuid>, "NULL"),
    tenant: default!(Option<&str>, "NULL"),
    if_exists: default!(Option<&str>, "'return'"),
) -> pgrx::Uuid {
    let name = validate::name("name", name).or_raise();
    let key = validate::optional_name("idempotency_key", idempotency_key).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    let tenant = validate::optional_name("tenant", tenant).or_raise();
    let if_exists = self::if_exists(if_exists).or_raise();
    super::payload_size("input", input).or_raise();
    let lease = lease_or_default("workflow.lease_duration", None).or_raise();
    let session = if owner.is_none() {
        sessions::bind()
    } else {
        None
    };

    super::write("wf_start", |client| {
        if let Some(parent) = parent {
            children::adopt(client, parent)?;
        }
        for _ in 0..START_RETRIES {
            let args: [DatumWithOid; 8] = [
                name.into(),
                key.into(),
                input.into(),
                owner.into(),
                lease.into(),
                parent.into(),
                tenant.into(),
                session.into(),
            ];
            let start = if key.is_some() { &START_KEYED } else { &START };
            let created: Option<(Option<pgrx::Uuid>, Option<bool>)> =
                db::execute(client, start, &args, |rows| {
                    if rows.is_empty() {
                        return Ok(None);
                    }
                    rows.first().get_two().map(Some)
                })?;
            if let Some((Some(id), ready)) = created {
                if ready == Some(true) {
                    readiness::became_ready(name);
                }
                return Ok(id);
            }
            // Only a keyed start can conflict; the first start's row is committed by now.
            let existing: Option<pgrx::Uuid> = db::execute(
                client,
                &FIND_BY_KEY,
                &[name.into(), key.into()],
                first_value,
            )?;
            if let Some(id) = existing {
                return match if_exists {
                    IfExists::Return => Ok(id),
                    IfExists::Error => Err(WfError::AlreadyStarted {
                        name: name.to_string(),
                        key: key.unwrap_or_default().to_string(),
                        id,
                    }),
                };
            }
        }
        Err(WfError::StartRace)
    })
}

/// Records that `step` completed with `output`. A step already recorded is not written
/// again: its recorded output is returned (G3). Renews the lease. With `owner`, only while
/// that owner holds the lease (G7), also for a replay.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_checkpoint(
    workflow: Option<pgrx::Uuid>,
    step: Option<&str>,
    output: default!(Option<Document>, "NULL"),
    owner: default!(Option<&str>, "NULL"),
) -> Document {
    let id = validate::required("workflow", workflow).or_raise();
    let step = validate::name("step", step).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    super::payload_size("output", output).or_raise();

    let previous = super::write("wf_checkpoint", |client| {
        let args: [DatumWithOid; 4] = [id.into(), step.into(), output.into(), owner.into()];
        let (status, holds, recorded_now, previous): (
            Option<String>,
            Option<bool>,
            Option<bool>,
            Option<Document>,
        ) = db::execute(client, &CHECKPOINT, &args, |rows| {
            let row = rows.first();
            Ok((row.get(1)?, row.get(2)?, row.get(3)?, row.get(4)?))
        })?;
        require_writable(id, status, owner, holds, "wf_checkpoint")?;
        if recorded_now == Some(true) {
            return Ok(None);
        }
        let previous = match previous {
            Some(previous) => previous,
            // The step was recorded by a transaction that committed after this statement's
            // snapshot was taken, while it waited for the run's lock: read it again.
            None => read_step(client, id, step)?
                .1
                .unwrap_or_else(Document::null),
        };
        Ok(Some(previous.transfer()))
    });
    previous.unwrap_or_else(|| output.unwrap_or_else(Document::null))
}

/// Renews the lease without recording a step, for a step that takes long; returns the new
/// expiry. With `owner`, only while that owner holds the lease (G7). `lease` defaults to
/// the run's lease duration.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_heartbeat(
    workflow: Option<pgrx::Uuid>,
    owner: default!(Option<&str>, "NULL"),
    lease: default!(Option<Interval>, "NULL"),
) -> TimestampWithTimeZone {
    let id = validate::required("workflow", workflow).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    let lease = lease
        .map(|lease| lease_or_default("lease", Some(lease)))
        .transpose()
        .or_raise();
    super::write("wf_heartbeat", |client| {
        guard::lock_parent(client, id)?;
        let args: [DatumWithOid; 3] = [id.into(), owner.into(), lease.into()];
        let renewed: Option<TimestampWithTimeZone> =
            db::execute(client, &HEARTBEAT, &args, first_value)?;
        if let Some(expiry) = renewed {
            // Announced when it runs out (the lease of an owner that stops beating).
            wake::timer_on_commit(expiry.into_inner());
            return Ok(expiry);
        }
        let lease = guard::read_lease(client, id, owner)?;
        require_writable(id, lease.status, owner, lease.holds, "wf_heartbeat")?;
        if !lease.leased {
            return Err(WfError::Parked {
                id,
                action: "wf_heartbeat",
            });
        }
        // Running, leased and held now, so it changed between the two statements.
        Err(WfError::ChangedConcurrently {
            id,
            action: "wf_heartbeat",
        })
    })
}

/// The workflow of `name` started with `idempotency_key`, or NULL.
#[pg_extern(stable, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_find(name: Option<&str>, idempotency_key: Option<&str>) -> Option<pgrx::Uuid> {
    let name = validate::name("name", name).or_raise();
    let key = validate::name("idempotency_key", idempotency_key).or_raise();
    super::read(|client| {
        Ok(db::query(
            client,
            &FIND_BY_KEY,
            &[name.into(), key.into()],
            first_value,
        )?)
    })
}

/// The recorded output of `step` (JSON `null` if it was recorded without one), or SQL NULL
/// if the step has not completed.
#[pg_extern(stable, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_step(workflow: Option<pgrx::Uuid>, step: Option<&str>) -> Option<Document> {
    let id = validate::required("workflow", workflow).or_raise();
    let step = validate::name("step", step).or_raise();
    let (exists, output) = super::read(|client| {
        read_step(client, id, step).map(|(exists, output)| (exists, output.map(Document::transfer)))
    });
    if exists != Some(true) {
        WfError::UnknownWorkflow(id).raise();
    }
    output
}

fn finish(
    id: pgrx::Uuid,
    transition: Finish,
    output: Option<Document>,
    error: Option<&str>,
    owner: Option<&str>,
) {
    super::write(transition.action(), |client| {
        finish::finish(client, id, transition, output, error, owner)
    })
}

/// Marks a running workflow `completed` with its final output; with `owner`, only while
/// that owner holds the lease (G7).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_complete(
    workflow: Option<pgrx::Uuid>,
    output: default!(Option<Document>, "NULL"),
    owner: default!(Option<&str>, "NULL"),
) {
    let id = validate::required("workflow", workflow).or_raise();
    super::payload_size("output", output).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    finish(id, Finish::Complete, output, None, owner);
}

/// Marks a running workflow `failed` with the reason; with `owner`, only while that owner
/// holds the lease (G7).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_fail(
    workflow: Option<pgrx::Uuid>,
    error: Option<&str>,
    owner: default!(Option<&str>, "NULL"),
) {
    let id = validate::required("workflow", workflow).or_raise();
    let error = validate::text("error", error, config::max_payload_bytes()).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    finish(id, Finish::Fail, None, Some(error), owner);
}

/// Marks a running workflow `cancelled`, with its running descendants.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_cancel(workflow: Option<pgrx::Uuid>) {
    let id = validate::required("workflow", workflow).or_raise();
    finish(id, Finish::Cancel, None, None, None);
}

/// One row describing the workflow: progress, outcome, owner and lease.
// pgrx needs the row type spelled out in the signature to name the columns.
#[allow(clippy::type_complexity)]
#[pg_extern(stable, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_status(
    workflow: Option<pgrx::Uuid>,
) -> TableIterator<
    'static,
    (
        name!(name, String),
        name!(status, String),
        name!(input, Option<Document>),
        name!(output, Option<Document>),
        name!(error, Option<String>),
        name!(steps_done, i32),
        name!(last_step, Option<String>),
        name!(created_at, TimestampWithTimeZone),
        name!(updated_at, TimestampWithTimeZone),
        name!(finished_at, Option<TimestampWithTimeZone>),
        name!(owner, Option<String>),
        name!(lease_expires_at, Option<TimestampWithTimeZone>),
        name!(recovery_attempts, i32),
        name!(idempotency_key, Option<String>),
        name!(parent, Option<pgrx::Uuid>),
        name!(waiting_for, Option<String>),
        name!(waiting_until, Option<TimestampWithTimeZone>),
        name!(tenant, Option<String>),
    ),
> {
    let id = validate::required("workflow", workflow).or_raise();
    let row = super::read(|client| {
        Ok(db::query(client, &STATUS, &[id.into()], |rows| {
            if rows.is_empty() {
                return Ok(None);
            }
            let row = rows.first();
            Ok(Some((
                required(row.get::<String>(1)?)?,
                required(row.get::<String>(2)?)?,
                row.get::<Document>(3)?.map(Document::transfer),
                row.get::<Document>(4)?.map(Document::transfer),
                row.get(5)?,
                row.get::<i32>(6)?.unwrap_or(0),
                row.get(7)?,
                required(row.get(8)?)?,
                required(row.get(9)?)?,
                row.get(10)?,
                row.get(11)?,
                row.get(12)?,
                row.get::<i32>(13)?.unwrap_or(0),
                row.get(14)?,
                row.get(15)?,
                row.get(16)?,
                row.get(17)?,
                row.get(18)?,
            )))
        })?)
    });
    match row {
        Some(row) => TableIterator::once(row),
        None => WfError::UnknownWorkflow(id).raise(),
    }
}

/// What `wf_claim` and `wf_claim_runs` were asked, checked.
struct ClaimRequest<'a> {
    ready: Ready<'a>,
    claimer: Claimer<'a>,
    max: i32,
}

fn claim_request<'a>(
    name: Option<&'a str>,
    owner: Option<&'a str>,
    lease: Option<Interval>,
    max: Option<i32>,
) -> ClaimRequest<'a> {
    const MAX_CLAIM: i64 = 10_000;
    let name = validate::optional_name("name", name).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    let lease = lease_or_default("lease", lease).or_raise();
    let max = validate::required("max", max).or_raise();
    let max = validate::in_range("max", max.into(), 1, MAX_CLAIM).or_raise() as i32;
    ClaimRequest {
        ready: name.map_or(Ready::OfAnyName, Ready::OfName),
        claimer: Claimer {
            owner,
            lease: Some(lease),
            max_recovery_attempts: config::max_recovery_attempts(),
        },
        max,
    }
}

impl ClaimRequest<'_> {
    fn claim(&self, client: &mut pgrx::spi::SpiClient<'_>) -> Result<Vec<pgrx::Uuid>, WfError> {
        claim::claim(client, self.ready, self.claimer, self.max)
    }
}

/// Hands `owner` up to `max` ready workflows of `name` (NULL: of any name), leased for
/// `lease` (default `workflow.lease_duration`). Without `owner`, the leases are this
/// session's, bound to it: freed at once when it ends. Concurrent claimers never share a
/// workflow.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_claim(
    name: Option<&str>,
    owner: default!(Option<&str>, "NULL"),
    lease: default!(Option<Interval>, "NULL"),
    max: default!(Option<i32>, 1),
) -> SetOfIterator<'static, pgrx::Uuid> {
    let request = claim_request(name, owner, lease, max);
    let claimed = super::write("wf_claim", |client| request.claim(client));
    SetOfIterator::new(claimed)
}

/// `wf_claim` that returns what a worker needs in the same round trip, as a push carries
/// it: each claimed workflow with its name, input, recorded steps (`{step: output}`),
/// tenant and lease expiry.
#[allow(clippy::type_complexity)] // pgrx needs the row type spelled out to name the columns
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_claim_runs(
    name: Option<&str>,
    owner: default!(Option<&str>, "NULL"),
    lease: default!(Option<Interval>, "NULL"),
    max: default!(Option<i32>, 1),
) -> TableIterator<
    'static,
    (
        name!(workflow, pgrx::Uuid),
        name!(name, String),
        name!(input, Option<Document>),
        name!(steps, Document),
        name!(tenant, Option<String>),
        name!(lease_expires_at, TimestampWithTimeZone),
    ),
> {
    let request = claim_request(name, owner, lease, max);
    let runs = super::write("wf_claim_runs", |client| {
        let claimed = request.claim(client)?;
        claim::claimed_runs(client, claimed)
    });
    TableIterator::new(runs)
}

/// Gives up a held lease: the workflow is ready when this transaction commits (announced,
/// and pushed if its name has a handler), and the claim that takes it is no recovery. For
/// handing a new workflow to a pool in its starting transaction, and for a clean shutdown.
/// With `owner`, only while that owner holds the lease (G7).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_release(workflow: Option<pgrx::Uuid>, owner: default!(Option<&str>, "NULL")) {
    let id = validate::required("workflow", workflow).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    super::write("wf_release", |client| {
        guard::lock_parent(client, id)?;
        let released: Option<String> =
            db::execute(client, &RELEASE, &[id.into(), owner.into()], first_value)?;
        if let Some(name) = released {
            readiness::became_ready(&name);
            return Ok(());
        }
        let lease = guard::read_lease(client, id, owner)?;
        require_writable(id, lease.status, owner, lease.holds, "wf_release")?;
        if !lease.leased {
            // Started ready for its push handler, or its wait answered: nothing to give up.
            if lease.ready {
                return Ok(());
            }
            return Err(WfError::Parked {
                id,
                action: "wf_release",
            });
        }
        Err(WfError::ChangedConcurrently {
            id,
            action: "wf_release",
        })
    })
}

/// A durable timer: records `step`, releases the lease, and makes the workflow claimable
/// from `until` on. Replay-safe: a recorded sleep writes nothing. With `owner`, only while
/// that owner holds the lease (G7).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_sleep(
    workflow: Option<pgrx::Uuid>,
    step: Option<&str>,
    until: Option<TimestampWithTimeZone>,
    owner: default!(Option<&str>, "NULL"),
) {
    let id = validate::required("workflow", workflow).or_raise();
    let step = validate::name("step", step).or_raise();
    let until = validate::required("until", until).or_raise();
    validate::finite_timestamp("until", until.into_inner()).or_raise();
    let owner = validate::optional_name("owner", owner).or_raise();
    super::write("wf_sleep", |client| {
        lock_running(client, id, owner, "wf_sleep")?;
        let args: [DatumWithOid; 3] = [id.into(), step.into(), until.into()];
        let over: Option<String> = db::execute(client, &RECORD_SLEEP, &args, first_value)?;
        match over {
            // Ready now: this transaction tells the listeners itself.
            Some(name) => readiness::became_ready(&name),
            None => wake::timer_on_commit(until.into_inner()),
        }
        Ok(())
    })
}

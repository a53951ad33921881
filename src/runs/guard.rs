//! The lease guards (G7): every write to a run checks, in the order its caller can act on,
//! that the run exists, that a named owner still holds its lease, and that it is running.

use crate::config;
use crate::db::{self, Statement};
use crate::document::Document;
use crate::error::WfError;
use crate::workflow::Status;
use crate::workflow::validate::{self, ArgError};
use pgrx::datum::Interval;
use pgrx::pg_sys::{TEXTOID, UUIDOID};
use pgrx::spi::SpiClient;

/// The longest lease anyone may take or renew, the same bound as
/// `workflow.lease_duration`'s: a lease is how long a dead owner's work waits for another,
/// and a century-long one takes a workflow out of recovery for good.
pub const MAX_LEASE_SECONDS: i64 = 24 * 60 * 60;

/// Locks a run for the rest of the transaction; its status and whether the owner holds it.
static LOCK_RUN: Statement = Statement {
    sql: include_str!("guard/lock_run.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// A run's lease as its writers see it; always one row.
pub static READ_LEASE: Statement = Statement {
    sql: include_str!("guard/read_lease.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// Locks the parent of the run `$1`, if it has one (a run's parent never changes).
static LOCK_PARENT: Statement = Statement {
    sql: include_str!("guard/lock_parent.sql"),
    args: &[UUIDOID],
};

/// One row: whether the run exists, and the step's output if it was recorded.
static READ_STEP: Statement = Statement {
    sql: include_str!("guard/read_step.sql"),
    args: &[UUIDOID, TEXTOID],
};

/// A run's lease as its writers see it.
pub struct Lease {
    /// NULL: no such run.
    pub status: Option<String>,
    /// Whether someone holds or held it (a parked run has no owner).
    pub leased: bool,
    /// Whether the owner asked about holds it (always, when none was named).
    pub holds: Option<bool>,
    /// Whether it is claimable now (its lease, sleep or wait is over).
    pub ready: bool,
}

/// Reads the run's lease without locking it.
pub fn read_lease(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
    owner: Option<&str>,
) -> Result<Lease, WfError> {
    db::execute(client, &READ_LEASE, &[id.into(), owner.into()], |rows| {
        let row = rows.first();
        Ok(Lease {
            status: row.get(1)?,
            leased: row.get::<bool>(2)? == Some(true),
            holds: row.get(3)?,
            ready: row.get::<bool>(4)? == Some(true),
        })
    })
    .map_err(WfError::from)
}

/// Locks the parent of run `id`, if it has one, before anything writes the run: a child
/// that finishes signals its parent, and a cancel of the parent locks its children after
/// it, so every transaction takes a parent's lock before its child's and none deadlocks.
pub fn lock_parent(client: &mut SpiClient<'_>, id: pgrx::Uuid) -> Result<(), WfError> {
    Ok(db::execute(client, &LOCK_PARENT, &[id.into()], |_| Ok(()))?)
}

/// Locks the run, after its parent; an error if it does not exist, is not running, or
/// `owner` (if given) does not hold its lease.
pub fn lock_running(
    client: &mut SpiClient<'_>,
    id: pgrx::Uuid,
    owner: Option<&str>,
    action: &'static str,
) -> Result<(), WfError> {
    lock_parent(client, id)?;
    let (status, holds): (Option<String>, Option<bool>) =
        db::execute(client, &LOCK_RUN, &[id.into(), owner.into()], |rows| {
            if rows.is_empty() {
                return Ok((None, None));
            }
            rows.first().get_two()
        })?;
    require_writable(id, status, owner, holds, action)
}

/// The checks of a write to a run, in the order its caller can act on: the run exists; an
/// `owner` that does not hold its lease is stale whatever became of the run since (taken
/// over, parked or finished), and hears `55006`, "stop" (G7); and the run is running.
pub fn require_writable(
    id: pgrx::Uuid,
    status: Option<String>,
    owner: Option<&str>,
    holds: Option<bool>,
    action: &'static str,
) -> Result<(), WfError> {
    if status.is_none() {
        return Err(WfError::UnknownWorkflow(id));
    }
    require_lease(id, owner, holds, action)?;
    require_running(id, status, action)
}

/// G7: a write that names an owner changes nothing unless that owner holds the lease.
pub fn require_lease(
    id: pgrx::Uuid,
    owner: Option<&str>,
    holds: Option<bool>,
    action: &'static str,
) -> Result<(), WfError> {
    match owner {
        Some(owner) if holds != Some(true) => Err(WfError::NotLeasedTo {
            id,
            owner: owner.to_string(),
            action,
        }),
        _ => Ok(()),
    }
}

pub fn require_running(
    id: pgrx::Uuid,
    status: Option<String>,
    action: &'static str,
) -> Result<(), WfError> {
    match status {
        None => Err(WfError::UnknownWorkflow(id)),
        Some(s) if s == Status::Running.as_str() => Ok(()),
        Some(status) => Err(WfError::NotRunning { id, status, action }),
    }
}

/// Whether the run exists, and the step's recorded output.
pub fn read_step(
    client: &SpiClient<'_>,
    id: pgrx::Uuid,
    step: &str,
) -> Result<(Option<bool>, Option<Document>), WfError> {
    Ok(db::query(
        client,
        &READ_STEP,
        &[id.into(), step.into()],
        |rows| rows.first().get_two(),
    )?)
}

/// A lease asked for (positive, at most [`MAX_LEASE_SECONDS`]), or `workflow.lease_duration`.
pub fn lease_or_default(arg: &'static str, lease: Option<Interval>) -> Result<Interval, ArgError> {
    match lease {
        Some(lease) => {
            validate::positive_interval(arg, lease.months(), lease.days(), lease.micros())?;
            let micros = interval_micros(&lease);
            if micros > MAX_LEASE_SECONDS as i128 * 1_000_000 {
                return Err(ArgError::Invalid {
                    arg,
                    value: format!("{:.0} seconds", micros as f64 / 1e6),
                    reason: format!(
                        "a lease is at most 1 day ({MAX_LEASE_SECONDS} seconds): renew it with wf_heartbeat or a checkpoint instead"
                    ),
                });
            }
            Ok(lease)
        }
        None => Ok(Interval::from_micros(
            config::lease_duration().as_micros() as i64
        )),
    }
}

/// A wait's timeout: positive, and as long as the caller likes.
pub fn timeout(arg: &'static str, timeout: Interval) -> Result<Interval, ArgError> {
    validate::positive_interval(arg, timeout.months(), timeout.days(), timeout.micros())?;
    Ok(timeout)
}

/// An interval in microseconds, counting a month as 30 days (as Postgres' justify does).
fn interval_micros(interval: &Interval) -> i128 {
    const MICROS_PER_DAY: i128 = 86_400_000_000;
    (interval.months() as i128 * 30 + interval.days() as i128) * MICROS_PER_DAY
        + interval.micros() as i128
}

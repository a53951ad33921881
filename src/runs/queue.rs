//! Flow control by workflow name (`wf_queue`): a claim of a name with a queue takes its
//! ready runs within the queue's limits — running in all, running per tenant, leases a
//! second — and round-robin across tenants, so that one tenant's backlog delays another's
//! work by at most a turn. `claim` comes here for every name with a queue; the names
//! without one are claimed oldest first, as before.
//!
//! Claimers of one name serialize on its queue's row: each locks it before it counts, so
//! every count sees the leases other claimers committed. No claim ever blocks on that row:
//! an application's claim of the name tries again for up to `MOST_WAIT` while another
//! claimer holds it (a claim transaction left open holds every other claim of the name
//! back that long, and then they find nothing), and the dispatcher's push and a claim of
//! any name skip a busy queue (the push comes back to it shortly). Never blocking is also
//! what keeps a claim that waits here from deadlocking with one that, holding the queue,
//! waits for a run this claim's transaction locked.

use crate::db::{self, Statement};
use crate::error::WfError;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::pg_sys::{BOOLOID, INT4OID, INT8OID, TEXTOID};
use pgrx::spi::SpiClient;
use std::time::{Duration, Instant};

/// How long an application's claim tries for a queue another claimer holds.
const MOST_WAIT: Duration = Duration::from_secs(1);
/// Between two tries.
const RETRY_AFTER: Duration = Duration::from_millis(2);

/// Locks the queue of the name $1 unless another claimer holds it; says whether it did, and
/// whether the name has a queue.
static LOCK_OR_SKIP: Statement = Statement {
    sql: include_str!("queue/lock_or_skip.sql"),
    args: &[TEXTOID],
};

/// The names with a queue and a ready workflow (and a push handler, when $1), shuffled.
static QUEUED_NAMES: Statement = Statement {
    sql: include_str!("queue/queued_names.sql"),
    args: &[BOOLOID],
};

/// Locks up to $2 ready runs of the name $1 within its queue, round-robin by tenant (only
/// runs written in database $3, when given).
pub(crate) static READY_WITHIN: Statement = Statement {
    sql: include_str!("queue/ready_within.sql"),
    args: &[TEXTOID, INT4OID, INT8OID],
};

/// Whether a claim tries again, for a while, when another claimer holds the queue.
#[derive(Clone, Copy, PartialEq)]
pub enum Wait {
    Awhile,
    Skip,
}

/// The names with a queue; with a push handler too when `pushed`.
pub fn names(client: &mut SpiClient<'_>, pushed: bool) -> Result<Vec<String>, WfError> {
    Ok(db::execute(
        client,
        &QUEUED_NAMES,
        &[pushed.into()],
        |rows| {
            let mut names = Vec::with_capacity(rows.len());
            for row in rows {
                names.extend(row.get::<String>(1)?);
            }
            Ok(names)
        },
    )?)
}

/// Locks up to `max` ready runs of `name` within its queue, in round-robin order, and
/// only those written in database `written_in` when given. `None` when the name has no
/// queue, or when `wait` is `Skip` and another claimer holds it; none when another claimer
/// held it for all of `MOST_WAIT`.
pub fn ready_within(
    client: &mut SpiClient<'_>,
    name: &str,
    max: i32,
    wait: Wait,
    written_in: Option<i64>,
) -> Result<Option<Vec<pgrx::Uuid>>, WfError> {
    let started = Instant::now();
    loop {
        let (locked, queued) = db::execute(client, &LOCK_OR_SKIP, &[name.into()], |rows| {
            rows.first().get_two::<bool, bool>()
        })?;
        if locked == Some(true) {
            break;
        }
        if wait == Wait::Skip || queued != Some(true) {
            return Ok(None);
        }
        if started.elapsed() >= MOST_WAIT {
            return Ok(Some(Vec::new()));
        }
        // SAFETY: sleeping on the backend's main thread; a cancel or a termination is seen.
        unsafe {
            pg_sys::pg_usleep(RETRY_AFTER.as_micros() as std::ffi::c_long);
            pg_sys::check_for_interrupts!();
        }
    }
    let args: [DatumWithOid; 3] = [name.into(), max.into(), written_in.into()];
    Ok(Some(db::execute(client, &READY_WITHIN, &args, |rows| {
        let mut ids = Vec::with_capacity(rows.len());
        for row in rows {
            ids.extend(row.get::<pgrx::Uuid>(1)?);
        }
        Ok(ids)
    })?))
}

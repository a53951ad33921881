//! Flow control by workflow name: the owner sets a name's limits with `wf_queue` and drops
//! them with `wf_queue_drop`. How claims keep within them is `runs::queue`'s.

use super::endpoints::check_rate;
use crate::db::{self, Statement};
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::AnyNumeric;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{FLOAT8OID, INT4OID, TEXTOID};
use pgrx::prelude::*;

/// The most workflows a limit may allow at once: beyond it, a limit limits nothing.
const MAX_RUNNING: i64 = 1_000_000;

/// Sets the queue of a workflow name: $1 name, $2 max_running, $3 max_running_per_tenant,
/// $4 rate_per_second.
static UPSERT: Statement = Statement {
    sql: include_str!("queues/upsert.sql"),
    args: &[TEXTOID, INT4OID, INT4OID, FLOAT8OID],
};

/// Drops the queue of the workflow name $1; returns the name if there was one.
static DROP: Statement = Statement {
    sql: include_str!("queues/drop.sql"),
    args: &[TEXTOID],
};

/// Flow control for the workflows of `name`: at most `max_running` of them leased at once
/// (claimed or pushed), at most `max_running_per_tenant` of one tenant's, and at most
/// `rate_per_second` leases started a second. Claims and pushes keep within them and take
/// ready workflows round-robin across tenants. NULL keeps a limit as it is, 0 removes it.
/// Workflows of a name with a queue started without an owner start ready, for a claim.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_queue(
    name: Option<&str>,
    max_running: default!(Option<i32>, "NULL"),
    max_running_per_tenant: default!(Option<i32>, "NULL"),
    rate_per_second: default!(Option<AnyNumeric>, "NULL"),
) {
    let name = validate::name("name", name).or_raise();
    for (arg, limit) in [
        ("max_running", max_running),
        ("max_running_per_tenant", max_running_per_tenant),
    ] {
        if let Some(limit) = limit {
            validate::in_range(arg, limit.into(), 0, MAX_RUNNING).or_raise();
        }
    }
    let rate = rate_per_second.map(|rate| check_rate(rate).or_raise());
    super::write("wf_queue", |client| {
        let args: [DatumWithOid; 4] = [
            name.into(),
            max_running.into(),
            max_running_per_tenant.into(),
            rate.into(),
        ];
        Ok(db::execute(client, &UPSERT, &args, |_| Ok(()))?)
    });
    // A limit raised or removed may leave room for the push from this commit.
    // SAFETY: reading the clock.
    wake::timer_on_commit(unsafe { pg_sys::GetCurrentTimestamp() });
}

/// Removes the flow control of `name`: its workflows are claimed oldest first, without
/// limits.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_queue_drop(name: Option<&str>) {
    let name = validate::name("name", name).or_raise();
    let found = super::write("wf_queue_drop", |client| {
        Ok(db::execute(client, &DROP, &[name.into()], |rows| {
            Ok(!rows.is_empty())
        })?)
    });
    if !found {
        WfError::UnknownQueue(name.to_string()).raise();
    }
    // SAFETY: reading the clock.
    wake::timer_on_commit(unsafe { pg_sys::GetCurrentTimestamp() });
}

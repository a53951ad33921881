//! The webhook dispatcher: one background worker per database in `workflow.databases`,
//! started by the `launcher`.
//!
//! A round is one short transaction — record finished outcomes (first analyzing a hot
//! table that has outgrown its statistics), claim due messages with a lease — then the
//! claimed messages go to the HTTP threads, and the worker sleeps until woken by a commit
//! that enqueued, by an HTTP completion, or by the next due time. No transaction is ever
//! open across HTTP.
//! Follow one message: `wake` → `claim` → `send` → `record`.

pub mod claim;
pub mod database;
mod destinations;
pub mod housekeeping;
pub mod launcher;
mod limits;
pub(crate) mod parking;
mod plan;
mod ready;
pub mod record;
pub(crate) mod replan;
pub mod send;
mod state;
mod statistics;
mod transaction;
mod waiting;
mod worker;

use crate::wake;
use pgrx::bgworkers::{BackgroundWorker, SignalWakeFlags};
use pgrx::prelude::*;
use std::time::Duration;

/// What `pg_stat_activity.backend_type` shows.
pub const BACKEND_TYPE: &str = "workflow dispatcher";
/// After a dispatcher (or the launcher) stops, it is started again this soon.
pub(crate) const RESTART_AFTER: Duration = Duration::from_secs(1);

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn workflow_dispatcher_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    let database = BackgroundWorker::get_extra().to_string();
    if !wake::occupy(slot) {
        log!("workflow dispatcher for database \"{database}\" leaves: another one serves its slot");
        // SAFETY: proc_exit is how a backend ends.
        unsafe { pg_sys::proc_exit(0) };
    }
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    if !database::wait_before_connecting(slot, &database) {
        // SAFETY: proc_exit is how a backend ends.
        unsafe { pg_sys::proc_exit(1) };
    }
    // By the oid the launcher found, not the name: a database dropped and created again,
    // or renamed, since then is not this slot's.
    match wake::assigned(slot).filter(|oid| *oid != 0) {
        Some(oid) => BackgroundWorker::connect_worker_to_spi_by_oid(Some(oid.into()), None),
        None => BackgroundWorker::connect_worker_to_spi(Some(&database), None),
    }
    database::connected(slot, &database);
    set_session_option(c"application_name", c"workflow dispatcher");
    pin_session();
    // The dispatcher runs a handful of statements many times a second. Left to choose,
    // the plan cache kept planning a custom plan for every execution of the claim and the
    // record (their generic estimates of `LIMIT $1` and of parameter arrays look worse),
    // which cost a tenth of the dispatcher's CPU. The statements are written to be safe as
    // generic plans (see `claim::CLAIM`), and `statistics` keeps the plans current.
    set_session_option(c"plan_cache_mode", c"force_generic_plan");
    replan::watch();
    log!("workflow dispatcher started for database \"{database}\"");
    worker::run(slot);
    // The launcher starts a new dispatcher if the database is still listed.
    // SAFETY: proc_exit is how a backend ends.
    unsafe { pg_sys::proc_exit(1) };
}

/// The dispatcher runs as the bootstrap superuser, so nothing an application can create or
/// set may change what its statements do (G8). Settings a database owner could give it
/// with `ALTER DATABASE … SET` are overridden here, at session level:
/// - `search_path`: only `pg_catalog` (and no temporary schema, which the dispatcher never
///   creates), so every function, operator and type its statements name resolves there,
///   whatever is planted in `public` or in a schema named like the dispatcher's role;
/// - the transaction's shape: read committed, read-write, no statement or idle timeout;
/// - `lock_timeout`: a wait for a lock nobody expects the dispatcher to meet ends the
///   round (it is rolled back and retried) instead of stalling every destination.
fn pin_session() {
    const PINNED: [(&std::ffi::CStr, &std::ffi::CStr); 6] = [
        (c"search_path", c"pg_catalog, pg_temp"),
        (c"default_transaction_isolation", c"read committed"),
        (c"default_transaction_read_only", c"off"),
        (c"statement_timeout", c"0"),
        (c"idle_in_transaction_session_timeout", c"0"),
        (c"lock_timeout", c"1s"),
    ];
    for (name, value) in PINNED {
        set_session_option(name, value);
    }
}

fn set_session_option(name: &std::ffi::CStr, value: &std::ffi::CStr) {
    // SAFETY: setting a GUC on the main thread of a connected backend.
    unsafe {
        pg_sys::SetConfigOption(
            name.as_ptr(),
            value.as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
}

//! The webhook dispatcher: one background worker per database in `workflow.databases`.
//!
//! A round: record finished outcomes (one transaction), claim due messages with a lease
//! (one transaction), hand them to the HTTP threads, then sleep until woken by a commit
//! that enqueued, by an HTTP completion, or by the next due time. No transaction is ever
//! open across HTTP. Follow one message: `wake` → `claim` → `send` → `record`.

pub mod claim;
pub mod housekeeping;
pub mod record;
pub mod send;
pub mod wake;
mod worker;

use crate::config;
use pgrx::bgworkers::{
    BackgroundWorker, BackgroundWorkerBuilder, BgWorkerStartTime, SignalWakeFlags,
};
use pgrx::prelude::*;
use std::time::Duration;

/// What `pg_stat_activity.backend_type` shows.
pub const BACKEND_TYPE: &str = "workflow dispatcher";
/// After a crash, the postmaster starts the dispatcher again this soon.
const RESTART_AFTER: Duration = Duration::from_secs(1);

/// Registers the dispatchers; only from `_PG_init` while shared_preload_libraries loads.
pub fn register_workers() {
    let databases = config::databases();
    if databases.len() > wake::MAX_DISPATCHERS {
        warning!(
            "workflow.databases lists {} databases; only the first {} get a dispatcher",
            databases.len(),
            wake::MAX_DISPATCHERS
        );
    }
    for (slot, database) in databases.iter().take(wake::MAX_DISPATCHERS).enumerate() {
        BackgroundWorkerBuilder::new(&format!("{BACKEND_TYPE} for {database}"))
            .set_type(BACKEND_TYPE)
            .set_library("workflow")
            .set_function("workflow_dispatcher_main")
            .set_argument(Some(pg_sys::Datum::from(slot)))
            .set_extra(database)
            .enable_spi_access()
            // G5: a standby has no dispatcher; after promotion, the new primary starts one.
            .set_start_time(BgWorkerStartTime::RecoveryFinished)
            .set_restart_time(Some(RESTART_AFTER))
            .load();
    }
}

#[pg_guard]
#[unsafe(no_mangle)]
pub extern "C-unwind" fn workflow_dispatcher_main(arg: pg_sys::Datum) {
    let slot = arg.value();
    BackgroundWorker::attach_signal_handlers(SignalWakeFlags::SIGHUP | SignalWakeFlags::SIGTERM);
    let database = BackgroundWorker::get_extra().to_string();
    BackgroundWorker::connect_worker_to_spi(Some(&database), None);
    // SAFETY: setting a GUC on the main thread of a connected backend.
    unsafe {
        pg_sys::SetConfigOption(
            c"application_name".as_ptr(),
            c"workflow dispatcher".as_ptr(),
            pg_sys::GucContext::PGC_USERSET,
            pg_sys::GucSource::PGC_S_SESSION,
        );
    }
    log!("workflow dispatcher started for database \"{database}\"");
    worker::run(slot);
    // Exit 1 so the postmaster starts a new dispatcher after pg_terminate_backend; during a
    // shutdown it starts nothing.
    // SAFETY: proc_exit is how a backend ends.
    unsafe { pg_sys::proc_exit(1) };
}

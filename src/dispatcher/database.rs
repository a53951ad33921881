//! The dispatcher and the life of its database: a database it cannot connect to costs a
//! log line and a back-off, not a restart every second; `DROP DATABASE` of a served
//! database is not blocked by its dispatcher. (The launcher starts dispatchers only for
//! listed databases that exist and allow connections; this covers what changes between.)
//!
//! A background worker connects once, in its first moments, and a failed connection is a
//! FATAL exit, after which the launcher starts the worker again. So each start notes in its
//! slot (shared memory, which outlives the process) that it is connecting; a start that
//! finds the note of a predecessor that never connected waits first, twice as long each
//! time up to `MAX_BACKOFF`, and the first such start says why, naming the setting.
//!
//! `DROP DATABASE` waits up to five seconds for other sessions to leave and then fails,
//! and `WITH (FORCE)` terminates them, after which the launcher would start the dispatcher
//! again into the dropping database. A utility hook, in the backend that runs the drop,
//! asks the database's dispatcher to leave — only for a drop that may go ahead: outside a
//! transaction block, by the database's owner — it goes at once, and its next start waits
//! out `LEAVE_WINDOW` before connecting, so the drop can finish.

use crate::wake;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

/// The longest wait between two connection attempts to a missing database.
const MAX_BACKOFF: Duration = Duration::from_secs(300);
/// How long a dispatcher asked to leave stays away from its database.
const LEAVE_WINDOW: Duration = Duration::from_secs(10);

/// Called at the start of the worker, before it connects. Returns false if the worker
/// should exit instead (SIGTERM or postmaster death while it waited).
pub fn wait_before_connecting(slot: usize, database: &str) -> bool {
    let Some(shared) = wake::slot(slot) else {
        return true;
    };
    // SAFETY: reading the clock.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let asked = shared.leave_requested_at.swap(0, Ordering::AcqRel);
    if asked != 0 {
        let left_for = Duration::from_micros(now.saturating_sub(asked).max(0) as u64);
        if !sleep(LEAVE_WINDOW.saturating_sub(left_for)) {
            return false;
        }
    }
    if shared.connecting.swap(true, Ordering::AcqRel) {
        let failures = shared
            .connect_failures
            .fetch_add(1, Ordering::AcqRel)
            .saturating_add(1);
        if failures == 1 {
            log!(
                "workflow dispatcher could not connect to database \"{database}\", which workflow.databases lists \
                 (see the error before this line); it tries again with a back-off of up to {} minutes",
                MAX_BACKOFF.as_secs() / 60
            );
        }
        let backoff = Duration::from_secs(1u64 << failures.min(9)).min(MAX_BACKOFF);
        return sleep(backoff);
    }
    true
}

/// Called once the worker is connected.
pub fn connected(slot: usize, database: &str) {
    let Some(shared) = wake::slot(slot) else {
        return;
    };
    shared.connecting.store(false, Ordering::Release);
    let failures = shared.connect_failures.swap(0, Ordering::AcqRel);
    if failures > 0 {
        log!(
            "workflow dispatcher connected to database \"{database}\" after {failures} failed attempts"
        );
    }
}

/// Whether a `DROP DATABASE` asked this dispatcher to leave its database.
pub fn leave_requested(slot: usize) -> bool {
    wake::slot(slot).is_some_and(|shared| shared.leave_requested_at.load(Ordering::Acquire) != 0)
}

/// Sleeps `duration` whatever sets the latch (it starts out set); false on SIGTERM or
/// postmaster death.
fn sleep(duration: Duration) -> bool {
    let until = Instant::now() + duration;
    loop {
        let left = until.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return true;
        }
        if !BackgroundWorker::wait_latch(Some(left)) {
            return false;
        }
    }
}

static mut PREVIOUS_HOOK: pg_sys::ProcessUtility_hook_type = None;

/// Installs the hook; only from `_PG_init` during `shared_preload_libraries`.
pub fn install_drop_hook() {
    // SAFETY: _PG_init runs once per process, on its main thread, before any statement.
    unsafe {
        PREVIOUS_HOOK = pg_sys::ProcessUtility_hook;
        pg_sys::ProcessUtility_hook = Some(process_utility);
    }
}

#[pg_guard]
#[allow(clippy::too_many_arguments)] // the hook's signature is Postgres'
unsafe extern "C-unwind" fn process_utility(
    pstmt: *mut pg_sys::PlannedStmt,
    query_string: *const std::ffi::c_char,
    read_only_tree: bool,
    context: pg_sys::ProcessUtilityContext::Type,
    params: pg_sys::ParamListInfo,
    query_env: *mut pg_sys::QueryEnvironment,
    dest: *mut pg_sys::DestReceiver,
    qc: *mut pg_sys::QueryCompletion,
) {
    // SAFETY: Postgres passes a valid planned utility statement; a DropdbStmt's dbname is a
    // NUL-terminated string.
    unsafe {
        let statement = (*pstmt).utilityStmt;
        if !statement.is_null() && (*statement).type_ == pg_sys::NodeTag::T_DropdbStmt {
            let drop = statement.cast::<pg_sys::DropdbStmt>();
            let oid = pg_sys::get_database_oid((*drop).dbname, true);
            // Asked only for a drop that can go ahead, or any role could hold the
            // dispatcher away from its database by failing to drop it.
            if oid != pg_sys::InvalidOid
                && !pg_sys::IsTransactionBlock()
                && pg_sys::pg_database_ownercheck(oid, pg_sys::GetUserId())
                && let Some((shared, latch)) = wake::slot_serving(oid.to_u32())
            {
                shared
                    .leave_requested_at
                    .store(pg_sys::GetCurrentTimestamp(), Ordering::Release);
                if latch != 0 {
                    pg_sys::SetLatch(latch as *mut pg_sys::Latch);
                }
            }
        }
        match PREVIOUS_HOOK {
            Some(previous) => previous(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
            None => pg_sys::standard_ProcessUtility(
                pstmt,
                query_string,
                read_only_tree,
                context,
                params,
                query_env,
                dest,
                qc,
            ),
        }
    }
}

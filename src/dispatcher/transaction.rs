//! The dispatcher's transactions: all or nothing, and never waiting long for anyone.
//!
//! pgrx's `BackgroundWorker::transaction` commits whatever its closure returns, and an
//! ERROR inside it ends the worker. Here a round either commits everything it did or rolls
//! everything back: an `Err` or an ERROR aborts the transaction, and the worker lives on
//! to try again (its outcomes are kept by the caller).
//!
//! A round first takes its tables' locks. pg_net only tries its lock
//! (`is_extension_locked`); a round also waits, [`TABLE_LOCK_WAIT`] in all, but never
//! while it holds any of its tables: at a table that is not free it lets go of those it
//! took, waits for that one alone, and tries them all again. So while `DROP EXTENSION`,
//! `TRUNCATE`, `VACUUM FULL` or an application's `LOCK TABLE` holds a table, the round
//! gives up after at most that long, and no wait for one table can close a cycle with
//! theirs for another. The wait is what lets autovacuum go first and then step aside:
//! truncating a table's empty tail, it holds an exclusive lock until it sees that someone
//! waits for the table (it looks every 20 ms), and a dispatcher that only tried the lock
//! was never seen, so every round during a truncation failed and the next came after a
//! back-off (bench/NOTES.md, thirteenth session). Row locks held by applications are
//! skipped by the statements themselves (`SKIP LOCKED`); `lock_timeout` (see `mod.rs`)
//! bounds any other wait.

use pgrx::PgSqlErrorCode;
use pgrx::pg_sys::{self, PgTryBuilder, panic::CaughtError};
use std::cell::Cell;
use std::ffi::CStr;
use std::panic::{RefUnwindSafe, UnwindSafe};
use std::time::{Duration, Instant};

/// How long a round waits for its tables' locks in all before it gives up (as `Busy`).
const TABLE_LOCK_WAIT: Duration = Duration::from_millis(100);

thread_local! {
    /// Set while the round waits for a table's lock: a lock timeout then means `Busy`.
    static LOCKING_TABLES: Cell<bool> = const { Cell::new(false) };
}

/// Every table a round may read or write.
const TABLES: [&CStr; 11] = [
    c"outbox",
    c"delivery_attempts",
    c"runs",
    c"checkpoints",
    c"endpoint_settings",
    c"message_counts",
    c"workflow_counts",
    c"run_signals",
    c"handlers",
    c"destinations",
    c"dispatch",
];

/// Why a transaction did not commit.
#[derive(Debug)]
pub enum Failure {
    /// A table is locked by someone else (DDL, DROP EXTENSION) or gone: nothing was done.
    Busy,
    /// A statement failed; everything the transaction did was rolled back.
    Error(String),
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Failure::Busy => f.write_str("the extension's tables are locked or gone"),
            Failure::Error(message) => f.write_str(message),
        }
    }
}

impl From<crate::error::WfError> for Failure {
    fn from(error: crate::error::WfError) -> Self {
        Failure::Error(error.to_string())
    }
}

impl From<pgrx::spi::SpiError> for Failure {
    fn from(error: pgrx::spi::SpiError) -> Self {
        Failure::Error(error.to_string())
    }
}

/// Runs `body` in a transaction of its own: committed if it returns `Ok`, rolled back if it
/// returns `Err` or raises an ERROR. Reports table statistics afterwards, so autovacuum
/// sees the dispatcher's writes.
pub fn run<T>(
    body: impl FnOnce() -> Result<T, Failure> + UnwindSafe + RefUnwindSafe,
) -> Result<T, Failure> {
    // SAFETY: on the main thread of a connected background worker, between transactions.
    unsafe {
        pg_sys::SetCurrentStatementStartTimestamp();
        pg_sys::StartTransactionCommand();
        pg_sys::PushActiveSnapshot(pg_sys::GetTransactionSnapshot());
    }
    let result = PgTryBuilder::new(body)
        .catch_others(|error| {
            let locking = LOCKING_TABLES.with(|locking| locking.replace(false));
            if locking && ended_a_lock_wait(&error) {
                Err(Failure::Busy)
            } else {
                Err(Failure::Error(describe(&error)))
            }
        })
        .execute();
    // SAFETY: as above; an aborted transaction's snapshots are popped by the abort.
    unsafe {
        match result {
            Ok(_) => {
                pg_sys::PopActiveSnapshot();
                pg_sys::CommitTransactionCommand();
            }
            Err(_) => pg_sys::AbortCurrentTransaction(),
        }
        pg_sys::pgstat_report_stat(false);
    }
    result
}

/// Like [`run`], after taking every table's lock: `Busy` if one is gone, or still taken
/// after [`TABLE_LOCK_WAIT`].
pub fn run_round<T>(
    body: impl FnOnce() -> Result<T, Failure> + UnwindSafe + RefUnwindSafe,
) -> Result<T, Failure> {
    run(|| {
        if !lock_tables() {
            return Err(Failure::Busy);
        }
        body()
    })
}

/// Takes `RowExclusiveLock` on every table a round uses. At a table that is not free it
/// lets go of the ones it took, waits for that table (a lock timeout at the deadline is
/// read as `Busy`), then tries them all again. Returns false if a table does not exist, or
/// the deadline passed.
fn lock_tables() -> bool {
    let deadline = Instant::now() + TABLE_LOCK_WAIT;
    // The table last waited for, held (and no other) while the next sweep tries the rest.
    let mut waited = None;
    loop {
        let busy = match try_every_table() {
            Sweep::AllTaken => return true,
            Sweep::Gone => None,
            Sweep::Busy(relid) => Some(relid),
        };
        if let Some(relid) = waited.take() {
            release(relid);
        }
        let Some(relid) = busy else {
            return false;
        };
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        wait_for(relid, left);
        waited = Some(relid);
    }
}

enum Sweep {
    AllTaken,
    /// A table is locked by someone else: the ones taken before it were let go.
    Busy(pg_sys::Oid),
    /// The schema or a table does not exist (the extension being dropped).
    Gone,
}

/// Tries every table's lock without waiting; at the first that is not free, lets go of
/// the ones it took.
fn try_every_table() -> Sweep {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    let mut taken = Vec::with_capacity(TABLES.len());
    // SAFETY: catalog lookups and lock requests inside a transaction, on the main thread;
    // nothing has been read under the locks let go here.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"workflow".as_ptr(), true);
        let mut sweep = Sweep::AllTaken;
        for table in TABLES {
            let relid = if namespace == pg_sys::InvalidOid {
                pg_sys::InvalidOid
            } else {
                pg_sys::get_relname_relid(table.as_ptr(), namespace)
            };
            if relid == pg_sys::InvalidOid {
                sweep = Sweep::Gone;
                break;
            }
            if !pg_sys::ConditionalLockRelationOid(relid, lock) {
                sweep = Sweep::Busy(relid);
                break;
            }
            taken.push(relid);
        }
        if !matches!(sweep, Sweep::AllTaken) {
            for relid in taken {
                pg_sys::UnlockRelationOid(relid, lock);
            }
        }
        sweep
    }
}

/// Waits for one table's lock, up to `left`; raises a lock timeout past it.
fn wait_for(relid: pg_sys::Oid, left: Duration) {
    let timeout = std::ffi::CString::new(format!("{}ms", left.as_millis().max(1)))
        .expect("a number has no NUL");
    // SAFETY: on the main thread inside a transaction; the setting's nest level is popped
    // below, or by the abort of a round whose wait timed out.
    unsafe {
        let level = pg_sys::NewGUCNestLevel();
        pg_sys::set_config_option(
            c"lock_timeout".as_ptr(),
            timeout.as_ptr(),
            pg_sys::GucContext::PGC_SUSET,
            pg_sys::GucSource::PGC_S_SESSION,
            pg_sys::GucAction::GUC_ACTION_SAVE,
            true,
            0,
            false,
        );
        LOCKING_TABLES.with(|locking| locking.set(true));
        pg_sys::LockRelationOid(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE);
        // A timeout that fired as the lock was granted is raised here, still as `Busy`.
        pgrx::check_for_interrupts!();
        LOCKING_TABLES.with(|locking| locking.set(false));
        pg_sys::AtEOXact_GUC(true, level);
    }
}

fn release(relid: pg_sys::Oid) {
    // SAFETY: lets go of one hold of a lock this transaction took, on the main thread.
    unsafe { pg_sys::UnlockRelationOid(relid, pg_sys::RowExclusiveLock as pg_sys::LOCKMODE) };
}

/// Whether `error` ended a wait for a lock: it ran out of time (`lock_not_available`), or
/// the deadlock detector chose this wait (which holding nothing while waiting should rule
/// out).
fn ended_a_lock_wait(error: &CaughtError) -> bool {
    match error {
        CaughtError::PostgresError(report) => matches!(
            report.sql_error_code(),
            PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE
                | PgSqlErrorCode::ERRCODE_T_R_DEADLOCK_DETECTED
        ),
        _ => false,
    }
}

fn describe(error: &CaughtError) -> String {
    match error {
        CaughtError::PostgresError(report) => {
            format!("{} ({:?})", report.message(), report.sql_error_code())
        }
        CaughtError::ErrorReport(report)
        | CaughtError::RustPanic {
            ereport: report, ..
        } => report.message().to_string(),
    }
}

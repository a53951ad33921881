//! The dispatcher's transactions: all or nothing, and never waiting for anyone.
//!
//! pgrx's `BackgroundWorker::transaction` commits whatever its closure returns, and an
//! ERROR inside it ends the worker. Here a round either commits everything it did or rolls
//! everything back: an `Err` or an ERROR aborts the transaction, and the worker lives on
//! to try again (its outcomes are kept by the caller).
//!
//! A round first takes its tables' locks, as pg_net does (`is_extension_locked`), but
//! waits for one at most [`TABLE_LOCK_WAIT`]: while `DROP EXTENSION`, `TRUNCATE` or
//! `VACUUM FULL` holds one, the round does nothing, so the dispatcher never stalls behind
//! them for long, and they wait for it no longer than that. The wait is what lets
//! autovacuum go first and then step aside: truncating a table's empty tail, it holds an
//! exclusive lock until it sees that someone waits for the table (it looks every 20 ms),
//! and a dispatcher that only tried the lock was never seen, so every round during a
//! truncation failed and the next came after a back-off (bench/NOTES.md, thirteenth
//! session). Row locks held by applications are skipped by the statements themselves
//! (`SKIP LOCKED`); `lock_timeout` (see `mod.rs`) bounds any other wait.

use pgrx::PgSqlErrorCode;
use pgrx::pg_sys::{self, PgTryBuilder, panic::CaughtError};
use std::cell::Cell;
use std::ffi::CStr;
use std::panic::{RefUnwindSafe, UnwindSafe};

/// How long a round waits for a table's lock before it gives up (as `Busy`). Shorter than
/// `deadlock_timeout` (1 s by default): a `DROP EXTENSION` that holds one of the tables
/// and waits for another that the round already locked is let through by this timeout,
/// not by the deadlock detector cancelling one of the two.
const TABLE_LOCK_WAIT: &CStr = c"100ms";

thread_local! {
    /// Set while the round waits for its tables' locks: a lock timeout then means `Busy`.
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
            if locking && timed_out_on_a_lock(&error) {
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

/// Takes `RowExclusiveLock` on every table a round uses, each at once if it is free, else
/// waiting for it up to [`TABLE_LOCK_WAIT`] (which raises a lock timeout, read as `Busy`).
/// Returns false if a table does not exist.
fn lock_tables() -> bool {
    let lock = pg_sys::RowExclusiveLock as pg_sys::LOCKMODE;
    // SAFETY: catalog lookups and lock requests inside a transaction, on the main thread;
    // locks taken are released at the transaction's end, and the setting's nest level is
    // popped below, or by the abort of a round whose wait timed out.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"workflow".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return false;
        }
        for table in TABLES {
            let relid = pg_sys::get_relname_relid(table.as_ptr(), namespace);
            if relid == pg_sys::InvalidOid {
                return false;
            }
            if pg_sys::ConditionalLockRelationOid(relid, lock) {
                continue;
            }
            let level = pg_sys::NewGUCNestLevel();
            pg_sys::set_config_option(
                c"lock_timeout".as_ptr(),
                TABLE_LOCK_WAIT.as_ptr(),
                pg_sys::GucContext::PGC_SUSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
            LOCKING_TABLES.with(|locking| locking.set(true));
            pg_sys::LockRelationOid(relid, lock);
            LOCKING_TABLES.with(|locking| locking.set(false));
            pg_sys::AtEOXact_GUC(true, level);
        }
        true
    }
}

/// Whether `error` is a lock wait that ran out of time (`lock_not_available`).
fn timed_out_on_a_lock(error: &CaughtError) -> bool {
    match error {
        CaughtError::PostgresError(report) => {
            report.sql_error_code() == PgSqlErrorCode::ERRCODE_LOCK_NOT_AVAILABLE
        }
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

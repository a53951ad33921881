//! The dispatcher's transactions: all or nothing, and never waiting for anyone.
//!
//! pgrx's `BackgroundWorker::transaction` commits whatever its closure returns, and an
//! ERROR inside it ends the worker. Here a round either commits everything it did or rolls
//! everything back: an `Err` or an ERROR aborts the transaction, and the worker lives on
//! to try again (its outcomes are kept by the caller).
//!
//! A round first takes its tables' locks without waiting, as pg_net does
//! (`is_extension_locked`): while `DROP EXTENSION`, `TRUNCATE` or `VACUUM FULL` holds or
//! waits for one, the round does nothing, so the dispatcher never queues behind them, and
//! they never queue behind the dispatcher. Row locks held by applications are skipped by
//! the statements themselves (`SKIP LOCKED`); `lock_timeout` (see `mod.rs`) bounds any
//! other wait.

use pgrx::pg_sys::{self, PgTryBuilder, panic::CaughtError};
use std::ffi::CStr;
use std::panic::{RefUnwindSafe, UnwindSafe};

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
        .catch_others(|error| Err(Failure::Error(describe(&error))))
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

/// Like [`run`], after taking every table's lock without waiting: `Busy` if one is taken.
pub fn run_round<T>(
    body: impl FnOnce() -> Result<T, Failure> + UnwindSafe + RefUnwindSafe,
) -> Result<T, Failure> {
    run(|| {
        if !lock_tables_without_waiting() {
            return Err(Failure::Busy);
        }
        body()
    })
}

/// Takes `RowExclusiveLock` on every table a round uses, or returns false at the first that
/// is locked in a conflicting mode (or waited for) or does not exist.
fn lock_tables_without_waiting() -> bool {
    // SAFETY: catalog lookups and lock requests inside a transaction, on the main thread;
    // locks taken are released at the transaction's end.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"workflow".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return false;
        }
        TABLES.iter().all(|table| {
            let relid = pg_sys::get_relname_relid(table.as_ptr(), namespace);
            relid != pg_sys::InvalidOid
                && pg_sys::ConditionalLockRelationOid(
                    relid,
                    pg_sys::RowExclusiveLock as pg_sys::LOCKMODE,
                )
        })
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

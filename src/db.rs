//! SPI with plans prepared once per backend and kept, with typed arguments.
//!
//! Every statement of the extension is a `static Statement`: its text is a constant and its
//! values travel as SPI arguments, never spliced into SQL. Postgres' plan cache revalidates
//! kept plans when the tables under them change, so a kept plan survives DROP/CREATE
//! EXTENSION in the same backend.

use pgrx::datum::DatumWithOid;
use pgrx::pg_sys;
use pgrx::spi::{OwnedPreparedStatement, SpiClient, SpiResult, SpiTupleTable};
use pgrx::{FromDatum, IntoDatum};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

pub struct Statement {
    pub sql: &'static str,
    pub args: &'static [pg_sys::Oid],
}

thread_local! {
    // Keyed by the statement's address: every Statement is a static.
    static PLANS: RefCell<HashMap<usize, Rc<OwnedPreparedStatement>>> = RefCell::new(HashMap::new());
}

/// A statement is kept as prepared by its first use: read-only (`query`) or not
/// (`execute`). Each statement is used one way only.
fn plan(
    client: &SpiClient<'_>,
    stmt: &'static Statement,
    mutating: bool,
) -> SpiResult<Rc<OwnedPreparedStatement>> {
    let key = stmt as *const Statement as usize;
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).cloned()) {
        return Ok(plan);
    }
    let types: Vec<_> = stmt.args.iter().map(|&oid| oid.into()).collect();
    let prepared = if mutating {
        client.prepare_mut(stmt.sql, &types)?
    } else {
        client.prepare(stmt.sql, &types)?
    };
    let plan = Rc::new(prepared.keep());
    PLANS.with(|plans| plans.borrow_mut().insert(key, Rc::clone(&plan)));
    Ok(plan)
}

/// Runs a statement (it may write) and hands its result rows to `read`.
pub fn execute<'conn, R>(
    client: &mut SpiClient<'conn>,
    stmt: &'static Statement,
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(SpiTupleTable<'conn>) -> SpiResult<R>,
) -> SpiResult<R> {
    let plan = plan(client, stmt, true)?;
    read(client.update(&*plan, None, args)?)
}

/// Runs a read-only statement: it assigns no transaction id, so it works on a hot standby
/// and costs no commit record.
pub fn query<'conn, R>(
    client: &SpiClient<'conn>,
    stmt: &'static Statement,
    args: &[DatumWithOid<'_>],
    read: impl FnOnce(SpiTupleTable<'conn>) -> SpiResult<R>,
) -> SpiResult<R> {
    let plan = plan(client, stmt, false)?;
    read(client.select(&*plan, None, args)?)
}

/// Runs `body` with sequential scans off and index scans on, as a function's `SET` clauses
/// would, and the settings restored after it: for a read that must go through its indexes
/// whatever the statistics say, or a caller's own settings said when its kept plan was
/// made (see `wf_stats`). An error aborts the (sub)transaction, whose abort pops the nest
/// level and restores the settings too; do not catch an error raised in `body` within the
/// same subtransaction.
pub fn without_seqscans<R>(body: impl FnOnce() -> R) -> R {
    // SAFETY: on the backend's main thread, inside a transaction; the nest level is popped
    // below, or by the abort of an erroring transaction.
    let level = unsafe {
        let level = pg_sys::NewGUCNestLevel();
        // A small table has no index to use instead: its scan, "disabled", must not look
        // costly enough to be worth parallel workers or a JIT compilation (half a second).
        for (name, value) in [
            (c"enable_seqscan", c"off"),
            (c"enable_indexscan", c"on"),
            (c"enable_bitmapscan", c"on"),
            (c"max_parallel_workers_per_gather", c"0"),
            (c"jit", c"off"),
        ] {
            pg_sys::set_config_option(
                name.as_ptr(),
                value.as_ptr(),
                pg_sys::GucContext::PGC_USERSET,
                pg_sys::GucSource::PGC_S_SESSION,
                pg_sys::GucAction::GUC_ACTION_SAVE,
                true,
                0,
                false,
            );
        }
        level
    };
    let result = body();
    // SAFETY: as above; restores what the nest level saved.
    unsafe { pg_sys::AtEOXact_GUC(true, level) };
    result
}

/// The positions of a result's columns, looked up by name once, for reading many rows.
pub fn ordinals<const N: usize>(
    rows: &SpiTupleTable<'_>,
    names: [&str; N],
) -> SpiResult<[usize; N]> {
    let mut found = [0; N];
    for (slot, name) in found.iter_mut().zip(names) {
        *slot = rows.column_ordinal(name)?;
    }
    Ok(found)
}

/// The first column of the first row, or `None` when there is no row.
pub fn first_value<T: FromDatum + IntoDatum>(rows: SpiTupleTable<'_>) -> SpiResult<Option<T>> {
    if rows.is_empty() {
        Ok(None)
    } else {
        rows.first().get_one()
    }
}

/// A column the schema declares NOT NULL.
pub fn required<T>(value: Option<T>) -> SpiResult<T> {
    value.ok_or(pgrx::spi::SpiError::NoTupleTable)
}

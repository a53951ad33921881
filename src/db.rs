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

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

fn plan(client: &SpiClient<'_>, stmt: &'static Statement) -> SpiResult<Rc<OwnedPreparedStatement>> {
    let key = stmt as *const Statement as usize;
    if let Some(plan) = PLANS.with(|plans| plans.borrow().get(&key).cloned()) {
        return Ok(plan);
    }
    let types: Vec<_> = stmt.args.iter().map(|&oid| oid.into()).collect();
    let plan = Rc::new(client.prepare_mut(stmt.sql, &types)?.keep());
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
    let plan = plan(client, stmt)?;
    read(client.update(&*plan, None, args)?)
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

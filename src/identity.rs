//! Which database this is, and whether its dispatcher may speak for it (G12).
//!
//! A database's identity is a number made of the cluster's system identifier and the
//! database's oid. A physical copy, a standby promoted or not, keeps both: it is the same
//! database, and failover needs no step. A dump restored into any cluster or database, or
//! a `CREATE DATABASE … TEMPLATE`, gets a new oid or a new cluster: it is a copy.
//!
//! `workflow.dispatch` holds the identity the extension was installed under (pg_dump
//! carries it), and each message and run holds the identity it was written under
//! (`written_in`). The dispatcher delivers only while every row of `workflow.dispatch`
//! names this database and none is paused, and its claim sends nothing while a message it
//! walks was written elsewhere: restored rows are recognised as copies whatever order a
//! restore brings the tables in. `wf_dispatch_resume()` adopts the copy.

use crate::db::{self, Statement};
use pgrx::pg_sys::INT8OID;
use pgrx::prelude::*;
use pgrx::spi::{SpiClient, SpiResult};
use std::sync::OnceLock;

/// This database's identity: FNV-1a over the system identifier and the database oid.
pub fn current() -> i64 {
    static IDENTITY: OnceLock<i64> = OnceLock::new();
    *IDENTITY.get_or_init(|| {
        // SAFETY: reading the control file's identifier and this backend's database, both
        // fixed for the backend's life once it is connected.
        let (system, database) = unsafe {
            (
                pgrx::pg_sys::GetSystemIdentifier(),
                pgrx::pg_sys::MyDatabaseId,
            )
        };
        of(system, u32::from(database))
    })
}

/// The identity of database `database` in the cluster `system`.
fn of(system: u64, database: u32) -> i64 {
    let bytes = system
        .to_le_bytes()
        .into_iter()
        .chain(database.to_le_bytes());
    let hash = bytes.fold(0xcbf2_9ce4_8422_2325_u64, |hash, b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    hash as i64
}

#[pg_schema]
mod workflow {
    use pgrx::prelude::*;

    /// This database's identity (see `identity`); the default of `written_in`.
    #[pg_extern(stable, strict, parallel_safe, sql = false)]
    fn database_identity() -> i64 {
        super::current()
    }
}

/// Whether the dispatcher may deliver for this database.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dispatch {
    Serving,
    /// Paused, and why.
    Paused(String),
    /// A copy not yet paused: a row of `workflow.dispatch` names another database.
    Copy,
}

/// What `workflow.dispatch` says, read-only: a copy is `Copy` until the dispatcher pauses
/// it.
static READ: Statement = Statement {
    sql: include_str!("identity/read.sql"),
    args: &[INT8OID],
};

/// Pauses a copy, unless it is paused already; the reason names both identities.
static PAUSE_COPY: Statement = Statement {
    sql: include_str!("identity/pause_copy.sql"),
    args: &[INT8OID],
};

/// What `workflow.dispatch` says of this database.
pub fn read(client: &SpiClient<'_>) -> SpiResult<Dispatch> {
    db::query(client, &READ, &[current().into()], |rows| {
        let row = rows.first();
        let paused: Option<String> = row.get(1)?;
        let foreign: Option<bool> = row.get(2)?;
        Ok(match (paused, foreign) {
            (Some(reason), _) => Dispatch::Paused(reason),
            (None, Some(true)) => Dispatch::Copy,
            (None, _) => Dispatch::Serving,
        })
    })
}

/// Pauses this database as a copy; returns the reason it then shows.
pub fn pause_copy(client: &mut SpiClient<'_>) -> SpiResult<String> {
    db::execute(client, &PAUSE_COPY, &[current().into()], |rows| {
        Ok(rows.first().get::<String>(1)?.unwrap_or_default())
    })
}

#[cfg(test)]
mod tests {
    use super::of;

    #[test]
    fn another_database_or_cluster_is_another_identity() {
        let here = of(7_301_234_567_890_123_456, 16_384);
        assert_eq!(here, of(7_301_234_567_890_123_456, 16_384));
        assert_ne!(
            here,
            of(7_301_234_567_890_123_456, 16_385),
            "a template copy"
        );
        assert_ne!(
            here,
            of(7_301_234_567_890_123_457, 16_384),
            "another cluster"
        );
    }
}

//! Retention of finished runs (G6): deleted with their checkpoints and signals after
//! `workflow.retention`, in small batches; by the dispatcher's housekeeping, or an operator
//! through `workflow.purge_finished`.

use crate::db::Statement;
use pgrx::pg_sys::{INT4OID, INTERVALOID};

/// Deletes one batch of finished runs older than the retention, with their checkpoints and
/// signals (there is no cascading foreign key, see the schema).
pub static PURGE_FINISHED: Statement = Statement {
    sql: include_str!("retention/purge_finished.sql"),
    args: &[INTERVALOID, INT4OID],
};

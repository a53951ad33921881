//! Housekeeping that keeps the tables bounded (G6). Not granted to applications: the
//! dispatcher runs it, and an operator may.

use pgrx::prelude::*;

/// Functions in the `workflow` schema, beside the tables they maintain.
#[pg_schema]
pub(crate) mod workflow {
    use crate::config;
    use crate::db;
    use crate::error::OrRaise;
    use crate::runs::retention::PURGE_FINISHED;
    use crate::workflow::validate;
    use pgrx::datum::{DatumWithOid, Interval};
    use pgrx::prelude::*;

    /// Removes up to `batch_size` workflows that finished more than `workflow.retention` ago;
    /// returns how many. Call until it returns less than `batch_size` to catch up.
    #[pg_extern(volatile, parallel_unsafe, security_definer)]
    #[search_path(pg_catalog, pg_temp)]
    fn purge_finished(batch_size: default!(Option<i32>, 1000)) -> i64 {
        let batch = validate::required("batch_size", batch_size).or_raise();
        let batch = validate::in_range("batch_size", batch.into(), 1, 100_000).or_raise() as i32;
        let retention = Interval::from_micros(config::retention().as_micros() as i64);
        crate::api::write("workflow.purge_finished", |client| {
            let args: [DatumWithOid; 2] = [retention.into(), batch.into()];
            Ok(db::execute(client, &PURGE_FINISHED, &args, |rows| {
                Ok(rows.len() as i64)
            })?)
        })
    }
}

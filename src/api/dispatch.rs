//! Pausing and resuming delivery for the whole database (G12): `wf_dispatch_pause` by
//! hand, before a refresh of staging say; `wf_dispatch_resume` after it, or to adopt a
//! copy that paused itself (see `identity`). Owner only: delivery is the owner's business.

use crate::db::{self, Statement};
use crate::error::OrRaise;
use crate::identity;
use crate::wake;
use crate::workflow::validate;
use pgrx::pg_sys::{INT8OID, TEXTOID};
use pgrx::prelude::*;

/// The longest reason a pause keeps.
const MAX_REASON_BYTES: usize = 1000;

/// Pauses delivery, with a reason.
static PAUSE: Statement = Statement {
    sql: include_str!("dispatch/pause.sql"),
    args: &[INT8OID, TEXTOID],
};

/// Resumes delivery, adopting whatever was written in another database.
static RESUME: Statement = Statement {
    sql: include_str!("dispatch/resume.sql"),
    args: &[INT8OID],
};

/// Pauses delivery for this database: no message is sent and no workflow pushed until
/// `wf_dispatch_resume()`; the SQL API works meanwhile and messages wait. Requests in
/// flight finish and are recorded. Pausing again changes only the reason (kept when none
/// is given).
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_dispatch_pause(reason: default!(Option<&str>, "NULL")) {
    let reason = reason
        .map(|reason| validate::reason("reason", reason, MAX_REASON_BYTES))
        .transpose()
        .or_raise();
    super::write("wf_dispatch_pause", |client| {
        let args: [pgrx::datum::DatumWithOid; 2] = [identity::current().into(), reason.into()];
        Ok(db::execute(client, &PAUSE, &args, |_| Ok(()))?)
    });
    wake::flag_on_commit();
}

/// Resumes delivery for this database, paused by hand or as a copy of another: a copy
/// becomes a database of its own, and the messages and workflows it holds from the
/// original are sent and pushed from here. A NOTICE says how many pending messages and
/// running workflows it adopted.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_dispatch_resume() {
    let (messages, workflows) = super::write("wf_dispatch_resume", |client| {
        Ok(db::execute(
            client,
            &RESUME,
            &[identity::current().into()],
            |rows| {
                let row = rows.first();
                Ok((
                    row.get::<i64>(1)?.unwrap_or(0),
                    row.get::<i64>(2)?.unwrap_or(0),
                ))
            },
        )?)
    });
    if messages > 0 || workflows > 0 {
        notice!(
            "wf_dispatch_resume: {messages} pending messages and {workflows} running workflows written in another database are this database's now"
        );
    }
    wake::flag_on_commit();
}

//! Telling applications there is work: `NOTIFY workflow_ready, <name>` whenever a workflow
//! becomes ready, so that an application can `LISTEN` and claim instead of polling.
//!
//! A notification is sent by the transaction that made the workflow ready (a signal, a
//! durable step's answer, a start or sleep that is ready at once), so it arrives after
//! that commit and never for a rollback. Readiness that comes with time alone — a sleep or
//! a wait's timeout ending, a lease running out — is announced by the dispatcher
//! (`dispatcher::ready`). Postgres folds equal notifications of one transaction into one.

use crate::db::{self, Statement};
use pgrx::pg_sys::TEXTOID;
use pgrx::spi::{SpiClient, SpiResult};

/// On the channel applications `LISTEN` on; the payload is the workflow's name.
static NOTIFY_READY: Statement = Statement {
    sql: "SELECT pg_notify('workflow_ready', $1)",
    args: &[TEXTOID],
};

/// Queues the notification that a workflow of `name` is ready; sent at commit.
pub fn notify(client: &mut SpiClient<'_>, name: &str) -> SpiResult<()> {
    db::execute(client, &NOTIFY_READY, &[name.into()], |_| Ok(()))
}

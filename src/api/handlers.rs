//! Push handlers: a workflow name whose ready workflows the dispatcher claims and POSTs to
//! an HTTP handler, so that an HTTP service — serverless included — runs durable workflows
//! with no worker process of its own. How a push is made is `runs::push`'s; this is where
//! the owner registers and drops handlers.

use super::outbox::{Target, parse_target, require_endpoint};
use crate::db::{self, Statement};
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::TEXTOID;
use pgrx::prelude::*;

/// Sets the push handler of the workflow name $1: its URL $2, or the endpoint $3.
static UPSERT: Statement = Statement {
    sql: include_str!("handlers/upsert.sql"),
    args: &[TEXTOID, TEXTOID, TEXTOID],
};

/// Drops the push handler of the workflow name $1; returns the name if there was one.
static DROP: Statement = Statement {
    sql: include_str!("handlers/drop.sql"),
    args: &[TEXTOID],
};

/// Pushes every ready workflow of `name` to `target` (a URL, or an endpoint's name): the
/// dispatcher claims it and POSTs a signed `workflow.ready` webhook, and the handler
/// continues it as the owner named in the body. Replaces the name's handler if it has one.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_handler(name: Option<&str>, target: Option<&str>) {
    let name = validate::name("name", name).or_raise();
    let target = parse_target(target).or_raise();
    super::write("wf_handler", |client| {
        let (url, endpoint) = match target {
            Target::Url(url) => (Some(url), None),
            Target::Endpoint(endpoint) => {
                require_endpoint(client, endpoint)?;
                (None, Some(endpoint))
            }
        };
        let args: [DatumWithOid; 3] = [name.into(), url.into(), endpoint.into()];
        Ok(db::execute(client, &UPSERT, &args, |_| Ok(()))?)
    });
    // The dispatcher looks for handlers, and for what they should push, from this commit.
    // SAFETY: reading the clock.
    wake::timer_on_commit(unsafe { pg_sys::GetCurrentTimestamp() });
}

/// Stops pushing the workflows of `name`; they wait to be claimed with `wf_claim`. Pushes
/// already enqueued still go out.
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_handler_drop(name: Option<&str>) {
    let name = validate::name("name", name).or_raise();
    let found = super::write("wf_handler_drop", |client| {
        Ok(db::execute(client, &DROP, &[name.into()], |rows| {
            Ok(!rows.is_empty())
        })?)
    });
    if !found {
        WfError::UnknownHandler(name.to_string()).raise();
    }
}

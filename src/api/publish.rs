//! Fan-out: one business event to every endpoint subscribed to its type, each as a message
//! of its own, in the caller's transaction.

use crate::db::{self, Statement};
use crate::document::Document;
use crate::error::{OrRaise, WfError};
use crate::wake;
use crate::workflow::validate;
use pgrx::datum::{DatumWithOid, TimestampWithTimeZone};
use pgrx::pg_sys::{JSONBOID, TEXTARRAYOID, TEXTOID, TIMESTAMPTZOID};
use pgrx::prelude::*;

/// The enabled endpoints whose `event_types` match `$1`: the type itself, `*`, or a
/// `prefix.*` it starts with.
static SUBSCRIBERS: Statement = Statement {
    sql: include_str!("publish/subscribers.sql"),
    args: &[TEXTOID],
};

/// One message per subscriber `$7`, with the Standard Webhooks payload structure.
static PUBLISH: Statement = Statement {
    sql: include_str!("publish/publish.sql"),
    args: &[
        TEXTOID,
        JSONBOID,
        JSONBOID,
        TEXTOID,
        TIMESTAMPTZOID,
        TEXTOID,
        TEXTARRAYOID,
        TEXTOID,
    ],
};

/// The messages a keyed publish made before, by subscriber.
static FIND_PUBLISHED: Statement = Statement {
    sql: include_str!("publish/find_published.sql"),
    args: &[TEXTOID, TEXTARRAYOID],
};

/// Publishes an event of `event_type`: one message to each enabled endpoint whose
/// `event_types` match it, each with its own `webhook-id`, its body
/// `{"type", "timestamp", "data": payload}`. Returns their ids in endpoint name order; an
/// empty array when nothing subscribes (and nothing is stored). With an idempotency key a
/// repeat returns the messages of the first publish (a subscriber added since gets one).
/// `tenant` is who the messages are for.
#[allow(clippy::too_many_arguments)] // the SQL signature is the SPEC's
#[pg_extern(volatile, parallel_unsafe, security_definer)]
#[search_path(pg_catalog, pg_temp)]
fn wf_publish(
    event_type: Option<&str>,
    payload: Option<Document>,
    headers: default!(Option<Document>, "NULL"),
    idempotency_key: default!(Option<&str>, "NULL"),
    deliver_at: default!(Option<TimestampWithTimeZone>, "NULL"),
    ordering_key: default!(Option<&str>, "NULL"),
    tenant: default!(Option<&str>, "NULL"),
) -> Vec<i64> {
    let event_type = validate::event_type("event_type", event_type).or_raise();
    let payload = super::message_parts(payload, headers, deliver_at).or_raise();
    let key = validate::message_key("idempotency_key", idempotency_key).or_raise();
    let ordering_key = validate::message_key("ordering_key", ordering_key).or_raise();
    let tenant = validate::optional_name("tenant", tenant).or_raise();

    // Whether a message was parked at its subscriber's limit (see `crowding`).
    let mut parked = false;
    let ids = super::write("wf_publish", |client| {
        let subscribers: Vec<String> =
            db::execute(client, &SUBSCRIBERS, &[event_type.into()], |rows| {
                rows.into_iter()
                    .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                    .collect()
            })?;
        if subscribers.is_empty() {
            return Ok(Vec::new());
        }
        if let Some(key) = ordering_key {
            super::outbox::lock_ordering_key(key);
        }
        let args: [DatumWithOid; 8] = [
            event_type.into(),
            payload.into(),
            headers.into(),
            key.into(),
            deliver_at.into(),
            ordering_key.into(),
            subscribers.clone().into(),
            tenant.into(),
        ];
        let published = db::execute(client, &PUBLISH, &args, |rows| {
            let mut found = Vec::new();
            for row in rows {
                let parked = row.get::<bool>(3)? == Some(true);
                if let (Some(id), Some(endpoint)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
                    found.push((id, endpoint, parked));
                }
            }
            Ok(found)
        })?;
        parked = published.iter().any(|(_, _, parked)| *parked);
        let mut found: Vec<(i64, String)> = published
            .into_iter()
            .map(|(id, endpoint, _)| (id, endpoint))
            .collect();
        if found.len() < subscribers.len() {
            // Only keyed messages conflict, and the publish that made them has committed.
            let args: [DatumWithOid; 2] = [key.into(), subscribers.clone().into()];
            found.extend(db::execute(client, &FIND_PUBLISHED, &args, by_endpoint)?);
        }
        let mut ids = Vec::with_capacity(subscribers.len());
        for name in &subscribers {
            let id = found
                .iter()
                .find(|(_, endpoint)| endpoint == name)
                .map(|(id, _)| *id)
                .ok_or(WfError::StartRace)?;
            ids.push(id);
        }
        Ok(ids)
    });
    if !ids.is_empty() {
        match deliver_at {
            Some(due) => wake::on_commit_for(due.into_inner()),
            None if parked => wake::parked_on_commit(),
            None => wake::on_commit(),
        }
    }
    ids
}

fn by_endpoint(rows: pgrx::spi::SpiTupleTable<'_>) -> pgrx::spi::SpiResult<Vec<(i64, String)>> {
    let mut found = Vec::new();
    for row in rows {
        if let (Some(id), Some(endpoint)) = (row.get::<i64>(1)?, row.get::<String>(2)?) {
            found.push((id, endpoint));
        }
    }
    Ok(found)
}

//! Messages and dead letters: filtered by status, endpoint and time, newest first, a page
//! at a time by keyset (ids below the last shown); with actions allowed, retry or cancel
//! one, and replay an endpoint's dead letters since a time.

use super::{given, json, open, refused_by_postgres, text};
use crate::{Console, layout};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct Filters {
    status: Option<String>,
    endpoint: Option<String>,
    /// Created at or after this time, and before that one.
    since: Option<String>,
    until: Option<String>,
    tenant: Option<String>,
    /// Ids below this one: the page after the last one shown.
    before: Option<i64>,
}

/// The messages, and the last attempt's answer of each.
const LIST: &str = "
SELECT m.id, m.target, m.status, m.attempts, m.last_status_code, m.last_error,
       to_char(m.created_at, 'YYYY-MM-DD HH24:MI:SS'), m.workflow_id::text, m.step, m.tenant,
       m.payload, m.header_names,
       (SELECT a.response_body FROM workflow.attempts a WHERE a.message_id = m.id
         ORDER BY a.started_at DESC LIMIT 1)
  FROM workflow.messages m
 WHERE ($1::text IS NULL OR m.status = $1) AND ($2::text IS NULL OR m.endpoint = $2)
   AND ($3::text IS NULL OR m.created_at >= $3::text::timestamptz) AND ($4::text IS NULL OR m.tenant = $4)
   AND ($5::int8 IS NULL OR m.id < $5)
   AND ($7::text IS NULL OR m.created_at < $7::text::timestamptz)
 ORDER BY m.id DESC
 LIMIT $6";

pub async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let dead = filters.status.as_deref() == Some("dead");
    let here = if dead {
        "/messages?status=dead"
    } else {
        "/messages"
    };
    let client = match open(&console, &headers, here).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let rows = match client
        .query(
            LIST,
            &[
                &given(&filters.status),
                &given(&filters.endpoint),
                &given(&filters.since),
                &given(&filters.tenant),
                &filters.before,
                &(PAGE + 1),
                &given(&filters.until),
            ],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => return refused_by_postgres(&console, here, &crate::db::Failure::from(e)),
    };
    let more = rows.len() as i64 > PAGE;
    let shown = &rows[..rows.len().min(PAGE as usize)];
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    let next = shown.last().filter(|_| more).map(|row| {
        let mut query: Vec<String> = [
            ("status", &filters.status),
            ("endpoint", &filters.endpoint),
            ("since", &filters.since),
            ("until", &filters.until),
            ("tenant", &filters.tenant),
        ]
        .iter()
        .filter_map(|(k, v)| given(v).map(|v| format!("{k}={}", super::workflows::urlencode(v))))
        .collect();
        query.push(format!("before={}", row.get::<_, i64>(0)));
        query.join("&")
    });
    layout::page(
        &console,
        if dead { "Dead letters" } else { "Messages" },
        here,
        html! {
            h1 { @if dead { "Dead letters" } @else { "Messages" } }
            form.filters method="get" action="/messages" {
                select name="status" {
                    option value="" { "any status" }
                    @for status in ["pending", "delivered", "dead", "cancelled"] {
                        option value=(status) selected[filters.status.as_deref() == Some(status)] { (status) }
                    }
                }
                input name="endpoint" placeholder="endpoint" value=(value(&filters.endpoint));
                input name="tenant" placeholder="tenant" value=(value(&filters.tenant));
                input name="since" placeholder="since (2026-12-06 10:00Z)" value=(value(&filters.since));
                input name="until" placeholder="until" value=(value(&filters.until));
                button type="submit" { "Filter" }
            }
            @if console.allow_actions && dead {
                form.filters method="post" action="/actions/replay" {
                    input type="hidden" name="form_key" value=(console.form_key);
                    input name="endpoint" placeholder="endpoint" required;
                    input name="since" placeholder="dead since (2026-12-06 10:00Z)" required;
                    input name="until" placeholder="until (blank: now)";
                    button type="submit" { "Replay that endpoint's dead letters" }
                }
            }
            table {
                thead { tr {
                    th { "Message" } th { "Target" } th { "Status" } th { "Attempts" } th { "Last answer" }
                    th { "Workflow, step" } th { "Tenant" } th { "Payload" }
                    @if console.allow_actions { th {} }
                } }
                tbody {
                    @for row in shown {
                        @let id: i64 = row.get(0);
                        @let status: String = row.get(2);
                        tr {
                            td { b.message-id { (id) } br; span.hint { (row.get::<_, String>(6)) } }
                            td { (row.get::<_, String>(1)) }
                            td class=(format!("status-{status}")) { (status) }
                            td { (row.get::<_, i32>(3)) }
                            td {
                                (row.get::<_, Option<i32>>(4).map_or("—".to_string(), |c| c.to_string()))
                                @if let Some(error) = row.get::<_, Option<String>>(5) { br; span.error { (error) } }
                                @if let Some(body) = row.get::<_, Option<String>>(12) { pre { (body) } }
                            }
                            td {
                                @if let Some(workflow) = row.get::<_, Option<String>>(7) {
                                    a href=(format!("/workflows/{workflow}")) { (workflow) } br;
                                }
                                (text(row.get(8)))
                            }
                            td { (text(row.get(9))) }
                            td {
                                (json(row.get(10)))
                                @let names: Vec<String> = row.get(11);
                                @if !names.is_empty() { span.hint { "headers: " (names.join(", ")) } }
                            }
                            @if console.allow_actions {
                                td {
                                    @if status == "dead" || status == "cancelled" {
                                        form.inline method="post" action="/actions/retry" {
                                            input type="hidden" name="form_key" value=(console.form_key);
                                            input type="hidden" name="id" value=(id);
                                            button { "Retry" }
                                        }
                                    }
                                    @if status == "pending" {
                                        form.inline method="post" action="/actions/cancel" {
                                            input type="hidden" name="form_key" value=(console.form_key);
                                            input type="hidden" name="id" value=(id);
                                            button { "Cancel" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if shown.is_empty() { p.hint { "No message matches." } }
            @if let Some(next) = next { p { a href=(format!("/messages?{next}")) { "Older →" } } }
        },
    )
    .into_response()
}

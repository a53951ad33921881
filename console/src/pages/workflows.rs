//! Workflows: filtered by name, status, tenant and key, found by id, newest first, a page
//! at a time by keyset (the page after the last row shown), never by OFFSET.

use super::{given, open, refused_by_postgres, text};
use crate::{Console, layout};
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

const PAGE: i64 = 50;

#[derive(Deserialize, Default)]
pub struct Filters {
    name: Option<String>,
    status: Option<String>,
    tenant: Option<String>,
    key: Option<String>,
    id: Option<String>,
    /// The last row of the page before: its creation time and id.
    before: Option<String>,
    before_id: Option<String>,
}

/// Newest first through `runs_created`. The ORDER BY names the view's columns (`w.`): bare,
/// they would name this list's text columns of the same names, and sort every run by text.
/// A key is looked up under each workflow name (the key is unique per name): the names by
/// a skip scan of that index, one probe each, instead of a walk of every run for the key.
const LIST: &str = "
WITH RECURSIVE names AS (
    (SELECT w.name FROM workflow.workflows w ORDER BY w.name LIMIT 1)
    UNION ALL
    SELECT (SELECT w.name FROM workflow.workflows w WHERE w.name > n.name ORDER BY w.name LIMIT 1)
      FROM names n WHERE n.name IS NOT NULL)
SELECT w.id::text, w.name, w.status, w.tenant, w.idempotency_key, w.steps_done, w.last_step,
       to_char(w.created_at, 'YYYY-MM-DD HH24:MI:SS.MS'), w.created_at::text,
       coalesce(w.error, w.waiting_for)
  FROM workflow.workflows w
 WHERE ($1::text IS NULL OR w.name = $1) AND ($2::text IS NULL OR w.status = $2)
   AND ($3::text IS NULL OR w.tenant = $3)
   AND ($4::text IS NULL
        OR (w.idempotency_key = $4
            AND w.name = ANY (CASE WHEN $1::text IS NOT NULL THEN ARRAY[$1::text]
                                   ELSE ARRAY(SELECT name FROM names WHERE name IS NOT NULL) END)))
   AND ($5::text IS NULL OR (w.created_at, w.id) < ($5::text::timestamptz, $6::uuid))
 ORDER BY w.created_at DESC, w.id DESC
 LIMIT $7";

pub async fn list(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Query(filters): Query<Filters>,
) -> Response {
    let client = match open(&console, &headers, "/workflows").await {
        Ok(client) => client,
        Err(response) => return response,
    };
    if let Some(id) = given(&filters.id) {
        return Redirect::to(&format!("/workflows/{}", urlencode(id))).into_response();
    }
    let before_id = given(&filters.before_id).and_then(|id| id.parse::<uuid::Uuid>().ok());
    let before = given(&filters.before).filter(|_| before_id.is_some());
    let rows = match client
        .query(
            LIST,
            &[
                &given(&filters.name),
                &given(&filters.status),
                &given(&filters.tenant),
                &given(&filters.key),
                &before,
                &before_id,
                &(PAGE + 1),
            ],
        )
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return refused_by_postgres(&console, "/workflows", &crate::db::Failure::from(e));
        }
    };
    let more = rows.len() as i64 > PAGE;
    let shown = &rows[..rows.len().min(PAGE as usize)];
    let next = shown.last().filter(|_| more).map(|row| {
        let mut query = filter_query(&filters);
        query.push_str(&format!(
            "&before={}&before_id={}",
            urlencode(row.get::<_, &str>(8)),
            row.get::<_, &str>(0)
        ));
        query
    });
    let value = |v: &Option<String>| v.clone().unwrap_or_default();
    layout::page(
        &console,
        "Workflows",
        "/workflows",
        html! {
            h1 { "Workflows" }
            form.filters method="get" action="/workflows" {
                input name="name" placeholder="name" value=(value(&filters.name));
                select name="status" {
                    option value="" { "any status" }
                    @for status in ["running", "completed", "failed", "cancelled"] {
                        option value=(status) selected[filters.status.as_deref() == Some(status)] { (status) }
                    }
                }
                input name="tenant" placeholder="tenant" value=(value(&filters.tenant));
                input name="key" placeholder="idempotency key" value=(value(&filters.key));
                input name="id" placeholder="id" size="36";
                button type="submit" { "Find" }
            }
            table {
                thead { tr { th { "Workflow" } th { "Name" } th { "Status" } th { "Tenant" } th { "Key" } th { "Steps" } th { "Started" } th { "Error or waiting for" } } }
                tbody {
                    @for row in shown {
                        @let id: &str = row.get(0);
                        @let status: &str = row.get(2);
                        tr {
                            td { a href=(format!("/workflows/{id}")) { (id) } }
                            td { (row.get::<_, &str>(1)) }
                            td class=(format!("status-{status}")) { (status) }
                            td { (text(row.get(3))) }
                            td { (text(row.get(4))) }
                            td { (row.get::<_, i32>(5)) " " span.hint { (text(row.get(6))) } }
                            td { (row.get::<_, String>(7)) }
                            td { (text(row.get(9))) }
                        }
                    }
                }
            }
            @if shown.is_empty() { p.hint { "No workflow matches." } }
            @if let Some(next) = next { p { a href=(format!("/workflows?{next}")) { "Older →" } } }
        },
    )
    .into_response()
}

fn filter_query(filters: &Filters) -> String {
    [
        ("name", &filters.name),
        ("status", &filters.status),
        ("tenant", &filters.tenant),
        ("key", &filters.key),
    ]
    .iter()
    .filter_map(|(k, v)| given(v).map(|v| format!("{k}={}", urlencode(v))))
    .collect::<Vec<_>>()
    .join("&")
}

/// Percent-encodes everything but unreserved characters.
pub fn urlencode(value: &str) -> String {
    value
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urlencode_keeps_unreserved_and_encodes_the_rest() {
        assert_eq!(urlencode("a-b_c.d~e"), "a-b_c.d~e");
        assert_eq!(
            urlencode("2026-01-01 10:00:00+00"),
            "2026-01-01%2010%3A00%3A00%2B00"
        );
        assert_eq!(urlencode("é&="), "%C3%A9%26%3D");
    }

    #[test]
    fn the_next_page_keeps_the_filters() {
        let filters = Filters {
            name: Some("payment".into()),
            tenant: Some(" ".into()),
            key: Some("a b".into()),
            ..Filters::default()
        };
        assert_eq!(filter_query(&filters), "name=payment&key=a%20b");
    }
}

//! Destinations: every endpoint's state and limits, failing since when, disabled why; with
//! actions allowed, enable or disable one (as the console's role: the owner's functions).

use super::{open, refused_by_postgres, text};
use crate::{Console, layout};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use std::sync::Arc;

const ENDPOINTS: &str = "
SELECT e.name, e.url, e.state, e.state_since::text, e.failing_since::text, e.disabled_reason,
       e.max_concurrency, e.rate_per_second, e.secret_count, e.header_names,
       m.pending, m.in_flight, m.deliveries_last_minute, m.failures_last_minute,
       m.request_p50_ms
  FROM workflow.endpoints e LEFT JOIN workflow.metrics m ON m.endpoint = e.name
 ORDER BY e.name";

pub async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let here = "/endpoints";
    let client = match open(&console, &headers, here).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let rows = match client.query(ENDPOINTS, &[]).await {
        Ok(rows) => rows,
        Err(e) => return refused_by_postgres(&console, here, &crate::db::Failure::from(e)),
    };
    layout::page(
        &console,
        "Destinations",
        here,
        html! {
            h1 { "Destinations" }
            p.hint { "Secrets and header values are never shown: only how many secrets, and the headers' names." }
            table {
                thead { tr {
                    th { "Endpoint" } th { "State" } th { "Failing since" } th { "Limits" }
                    th { "Pending / in flight" } th { "Last minute" } th { "Request p50" } th { "Secrets, headers" }
                    @if console.allow_actions { th {} }
                } }
                tbody {
                    @for row in &rows {
                        @let name: String = row.get(0);
                        @let state: String = row.get(2);
                        tr {
                            td { b { (name) } br; span.hint { (row.get::<_, String>(1)) } }
                            td class=(format!("state-{state}")) {
                                (state) br; span.hint { "since " (text(row.get(3))) }
                                @if let Some(why) = row.get::<_, Option<String>>(5) { br; span.hint { (why) } }
                            }
                            td { (text(row.get(4))) }
                            td {
                                (row.get::<_, Option<i32>>(6).map_or("default".to_string(), |n| n.to_string())) " at once"
                                @if let Some(rate) = row.get::<_, Option<f64>>(7) { br; (rate) " / s" }
                            }
                            td { (row.get::<_, Option<i64>>(10).unwrap_or(0)) " / " (row.get::<_, Option<i64>>(11).unwrap_or(0)) }
                            td { (row.get::<_, Option<i64>>(12).unwrap_or(0)) " delivered, "
                                 (row.get::<_, Option<i64>>(13).unwrap_or(0)) " failed" }
                            td { (row.get::<_, Option<f64>>(14).map_or("—".to_string(), |ms| format!("{ms:.1} ms"))) }
                            td { (row.get::<_, Option<i32>>(8).unwrap_or(0)) " secrets; "
                                 (row.get::<_, Option<Vec<String>>>(9).unwrap_or_default().join(", ")) }
                            @if console.allow_actions {
                                td {
                                    form.inline method="post" action="/actions/endpoint" {
                                        input type="hidden" name="form_key" value=(console.form_key);
                                        input type="hidden" name="name" value=(name);
                                        @if state == "disabled" {
                                            button name="action" value="enable" { "Enable" }
                                        } @else {
                                            button name="action" value="disable" { "Disable" }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.hint { "No endpoint yet (messages to URLs are counted by origin)." } }
        },
    )
    .into_response()
}

//! Queues: each workflow name's flow control, how many run and wait, the busiest tenants.

use super::{open, refused_by_postgres};
use crate::{Console, layout};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use std::sync::Arc;

const QUEUES: &str = "
SELECT name, max_running, max_running_per_tenant, rate_per_second, running, ready, busiest_tenants
  FROM workflow.queues ORDER BY name";

pub async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let here = "/queues";
    let client = match open(&console, &headers, here).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let rows = match client.query(QUEUES, &[]).await {
        Ok(rows) => rows,
        Err(e) => return refused_by_postgres(&console, here, &crate::db::Failure::from(e)),
    };
    let limit = |n: Option<i32>| n.map_or("—".to_string(), |n| n.to_string());
    layout::page(
        &console,
        "Queues",
        here,
        html! {
            h1 { "Queues" }
            table {
                thead { tr { th { "Name" } th { "Max running" } th { "Per tenant" } th { "Rate / s" } th { "Running" } th { "Ready" } th { "Busiest tenants" } } }
                tbody {
                    @for row in &rows {
                        @let tenants: serde_json::Value = row.get(6);
                        tr {
                            td { a href=(format!("/workflows?name={}", super::workflows::urlencode(row.get(0)))) { (row.get::<_, String>(0)) } }
                            td { (limit(row.get(1))) }
                            td { (limit(row.get(2))) }
                            td { (row.get::<_, Option<f64>>(3).map_or("—".to_string(), |r| r.to_string())) }
                            td { (row.get::<_, i64>(4)) }
                            td { (row.get::<_, i64>(5)) }
                            td {
                                @for tenant in tenants.as_array().into_iter().flatten() {
                                    (tenant["tenant"].as_str().unwrap_or("(none)")) ": "
                                    (tenant["running"]) " running, " (tenant["ready"]) " ready" br;
                                }
                            }
                        }
                    }
                }
            }
            @if rows.is_empty() { p.hint { "No workflow name has flow control (wf_queue)." } }
        },
    )
    .into_response()
}

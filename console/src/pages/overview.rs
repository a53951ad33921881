//! The overview: the last hour as charts, and what needs attention now.

use super::{open, refused_by_postgres};
use crate::{Console, chart, layout};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use std::sync::Arc;

/// Per minute of the last hour, oldest first: deliveries, failed attempts, p50 enqueue →
/// answer (ms), workflows finished. Reads the last hour's finished messages and workflows.
const LAST_HOUR: &str = "
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') AS m),
delivered AS (
    SELECT date_trunc('minute', finished_at) AS m, count(*) FILTER (WHERE status = 'delivered') AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at) * 1000)
               FILTER (WHERE status = 'delivered') AS p50
      FROM workflow.messages WHERE finished_at >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY 1),
failed AS (
    SELECT date_trunc('minute', started_at) AS m, count(*) AS n FROM workflow.attempts
     WHERE started_at >= date_trunc('minute', now()) - interval '59 minutes'
       AND (status_code IS NULL OR status_code NOT BETWEEN 200 AND 299)
     GROUP BY 1),
finished AS (
    SELECT date_trunc('minute', finished_at) AS m, count(*) AS n FROM workflow.workflows
     WHERE finished_at >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY 1)
SELECT coalesce(d.n, 0)::float8, coalesce(f.n, 0)::float8, coalesce(d.p50, 0)::float8,
       coalesce(w.n, 0)::float8
  FROM minutes x
  LEFT JOIN delivered d ON d.m = x.m LEFT JOIN failed f ON f.m = x.m LEFT JOIN finished w ON w.m = x.m
 ORDER BY x.m";

const ATTENTION: &str = "
SELECT s.dead, s.pending, s.dispatcher_running, s.paused_reason,
       (SELECT count(*) FROM workflow.endpoints WHERE state = 'failing'),
       (SELECT count(*) FROM workflow.endpoints WHERE state = 'disabled'),
       (SELECT extract(epoch FROM max(oldest_ready_age))::float8 FROM workflow.workflow_metrics)
  FROM wf_stats() s";

pub async fn page(State(console): State<Arc<Console>>, headers: HeaderMap) -> Response {
    let client = match open(&console, &headers, "/").await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let (hour, attention) = match tokio::try_join!(
        client.query(LAST_HOUR, &[]),
        client.query_one(ATTENTION, &[])
    ) {
        Ok(found) => found,
        Err(e) => return refused_by_postgres(&console, "/", &crate::db::Failure::from(e).0),
    };
    let column = |i: usize| -> Vec<f64> { hour.iter().map(|row| row.get(i)).collect() };
    let dead: i64 = attention.get(0);
    let pending: i64 = attention.get(1);
    let running: bool = attention.get(2);
    let paused: Option<String> = attention.get(3);
    let failing: i64 = attention.get(4);
    let disabled: i64 = attention.get(5);
    let oldest_ready: Option<f64> = attention.get(6);
    layout::page(
        &console,
        "Overview",
        "/",
        html! {
            h1 { "Overview" }
            div.cards {
                a.card.bad[dead > 0] href="/messages?status=dead" { b { (dead) } "dead letters" }
                div.card { b { (pending) } "pending messages" }
                a.card.bad[failing > 0] href="/endpoints" { b { (failing) } "failing destinations" }
                a.card.bad[disabled > 0] href="/endpoints" { b { (disabled) } "disabled endpoints" }
                div.card.bad[oldest_ready.unwrap_or(0.0) > 60.0] {
                    b { (format!("{:.0} s", oldest_ready.unwrap_or(0.0))) } "oldest ready workflow waiting"
                }
                div.card.bad[!running || paused.is_some()] {
                    b { @if paused.is_some() { "paused" } @else if running { "running" } @else { "not running" } }
                    "dispatcher"
                }
            }
            @if let Some(reason) = paused { p.error { "Delivery is paused: " (reason) } }
            h2 { "The last hour, per minute" }
            div.charts {
                (chart::bars("Deliveries", "a minute", &column(0)))
                (chart::bars("Failed attempts", "a minute", &column(1)))
                (chart::bars("Enqueue → answer, p50", "ms", &column(2)))
                (chart::bars("Workflows finished", "a minute", &column(3)))
            }
        },
    )
    .into_response()
}

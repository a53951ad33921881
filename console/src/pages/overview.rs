//! The overview: the last hour as charts, and what needs attention now.

use super::{open, refused_by_postgres};
use crate::{Console, chart, layout};
use axum::extract::State;
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use maud::html;
use std::sync::Arc;

/// Per minute of the last hour, oldest first: deliveries, failed attempts, p50 enqueue →
/// answer (ms), workflows finished. Reads the last hour's finished messages and workflows
/// through their finished indexes (the `status` conditions name those indexes' rows), and
/// the hour's attempts through `workflow.attempts_since`: the cost is the hour's, whatever
/// history is kept.
const LAST_HOUR: &str = "
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') AS m),
delivered AS (
    SELECT date_trunc('minute', finished_at) AS m, count(*) FILTER (WHERE status = 'delivered') AS n,
           percentile_cont(0.5) WITHIN GROUP (ORDER BY extract(epoch FROM delivered_at - created_at) * 1000)
               FILTER (WHERE status = 'delivered') AS p50
      FROM workflow.messages
     WHERE (status <> 'pending') IS TRUE AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY 1),
failed AS (
    SELECT date_trunc('minute', started_at) AS m, count(*) AS n
      FROM workflow.attempts_since(date_trunc('minute', now()) - interval '59 minutes')
     WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299
     GROUP BY 1),
finished AS (
    SELECT date_trunc('minute', finished_at) AS m, count(*) AS n FROM workflow.workflows
     WHERE (status <> 'running') IS TRUE AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY 1)
SELECT coalesce(d.n, 0)::float8, coalesce(f.n, 0)::float8, coalesce(d.p50, 0)::float8,
       coalesce(w.n, 0)::float8
  FROM minutes x
  LEFT JOIN delivered d ON d.m = x.m LEFT JOIN failed f ON f.m = x.m LEFT JOIN finished w ON w.m = x.m
 ORDER BY x.m";

/// The same hour by endpoint (the five busiest, URL targets as one) and by workflow name
/// (the five with most finished): per minute, oldest first, as arrays.
const BY_ENDPOINT: &str = "
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') AS m),
hour AS (
    SELECT coalesce(endpoint, '(URLs)') AS endpoint, date_trunc('minute', finished_at) AS m,
           count(*) FILTER (WHERE status = 'delivered') AS delivered,
           count(*) FILTER (WHERE status = 'dead') AS dead
      FROM workflow.messages
     WHERE (status <> 'pending') IS TRUE AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY 1, 2),
busiest AS (
    SELECT endpoint, sum(delivered) AS total, sum(dead) AS dead FROM hour
     GROUP BY endpoint ORDER BY sum(delivered) + sum(dead) DESC LIMIT 5)
SELECT b.endpoint, b.total::int8, b.dead::int8,
       array_agg(coalesce(h.delivered, 0)::float8 ORDER BY x.m)
  FROM busiest b CROSS JOIN minutes x LEFT JOIN hour h ON h.endpoint = b.endpoint AND h.m = x.m
 GROUP BY b.endpoint, b.total, b.dead
 ORDER BY b.total DESC";

const BY_NAME: &str = "
WITH minutes AS (
    SELECT generate_series(date_trunc('minute', now()) - interval '59 minutes',
                           date_trunc('minute', now()), interval '1 minute') AS m),
hour AS (
    SELECT name, date_trunc('minute', finished_at) AS m, count(*) AS finished,
           count(*) FILTER (WHERE status = 'failed') AS failed
      FROM workflow.workflows
     WHERE (status <> 'running') IS TRUE AND finished_at >= date_trunc('minute', now()) - interval '59 minutes'
     GROUP BY 1, 2),
busiest AS (
    SELECT name, sum(finished) AS total, sum(failed) AS failed FROM hour
     GROUP BY name ORDER BY sum(finished) DESC LIMIT 5)
SELECT b.name, b.total::int8, b.failed::int8,
       array_agg(coalesce(h.finished, 0)::float8 ORDER BY x.m)
  FROM busiest b CROSS JOIN minutes x LEFT JOIN hour h ON h.name = b.name AND h.m = x.m
 GROUP BY b.name, b.total, b.failed
 ORDER BY b.total DESC";

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
    let found = tokio::try_join!(
        client.query(LAST_HOUR, &[]),
        client.query_one(ATTENTION, &[]),
        client.query(BY_ENDPOINT, &[]),
        client.query(BY_NAME, &[]),
    );
    let (hour, attention, by_endpoint, by_name) = match found {
        Ok(found) => found,
        Err(e) => return refused_by_postgres(&console, "/", &crate::db::Failure::from(e)),
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
            h2 { "By endpoint: deliveries a minute" }
            div.charts {
                @for row in &by_endpoint {
                    @let endpoint: String = row.get(0);
                    @let title = format!("{endpoint}: {} delivered, {} dead", row.get::<_, i64>(1), row.get::<_, i64>(2));
                    (chart::bars(&title, "a minute", &row.get::<_, Vec<f64>>(3)))
                }
                @if by_endpoint.is_empty() { p.hint { "Nothing finished in the last hour." } }
            }
            h2 { "By workflow name: finished a minute" }
            div.charts {
                @for row in &by_name {
                    @let name: String = row.get(0);
                    @let title = format!("{name}: {} finished, {} failed", row.get::<_, i64>(1), row.get::<_, i64>(2));
                    (chart::bars(&title, "a minute", &row.get::<_, Vec<f64>>(3)))
                }
                @if by_name.is_empty() { p.hint { "No workflow finished in the last hour." } }
            }
        },
    )
    .into_response()
}

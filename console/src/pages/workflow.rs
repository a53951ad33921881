//! One workflow: its state, its timeline — steps with their outputs, signals, its messages
//! with every attempt — its parent and children.

use super::{json, open, refused_by_postgres, text};
use crate::{Console, layout};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use std::sync::Arc;

const RUN: &str = "
SELECT name, status, tenant, idempotency_key, owner, lease_expires_at::text, waiting_for,
       waiting_until::text, error, input, output, parent::text, created_at::text, finished_at::text
  FROM workflow.workflows WHERE id = $1";

/// Every event of the workflow, in time order: steps recorded, signals sent and consumed,
/// messages enqueued and each attempt of theirs; the first 500 (a long-lived workflow's
/// page stays a page).
const TIMELINE: &str = "
SELECT at::text, kind, what, detail FROM (
    SELECT recorded_at AS at, 'step' AS kind, step AS what, output AS detail
      FROM workflow.steps WHERE workflow_id = $1
    UNION ALL
    SELECT sent_at, 'signal', signal, payload FROM workflow.signals WHERE workflow_id = $1
    UNION ALL
    SELECT consumed_at, 'signal consumed', signal, NULL FROM workflow.signals
     WHERE workflow_id = $1 AND consumed_at IS NOT NULL
    UNION ALL
    SELECT created_at, 'message', coalesce(step, target) || ' #' || id,
           jsonb_build_object('status', status, 'payload', payload)
      FROM workflow.messages WHERE workflow_id = $1
    UNION ALL
    SELECT a.started_at, 'attempt', coalesce(m.step, m.target) || ' #' || m.id || ' attempt ' || a.attempt,
           jsonb_build_object('status_code', a.status_code, 'error', a.error,
                              'duration_ms', a.duration_ms, 'response_body', a.response_body)
      FROM workflow.messages m JOIN workflow.attempts a ON a.message_id = m.id
     WHERE m.workflow_id = $1) events
 ORDER BY at, kind
 LIMIT 500";

const CHILDREN: &str = "SELECT id::text, name, status FROM workflow.workflows WHERE parent = $1
                         ORDER BY created_at LIMIT 200";

pub async fn page(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let here = "/workflows";
    let client = match open(&console, &headers, here).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    let Ok(id) = id.parse::<uuid::Uuid>() else {
        return (
            StatusCode::NOT_FOUND,
            layout::failure(&console, here, "That is not a workflow id."),
        )
            .into_response();
    };
    let args: [&(dyn tokio_postgres::types::ToSql + Sync); 1] = [&id];
    let found = tokio::try_join!(
        client.query_opt(RUN, &args),
        client.query(TIMELINE, &args),
        client.query(CHILDREN, &args),
    );
    let (run, timeline, children) = match found {
        Ok(found) => found,
        Err(e) => return refused_by_postgres(&console, here, &crate::db::Failure::from(e)),
    };
    let Some(run) = run else {
        return (
            StatusCode::NOT_FOUND,
            layout::failure(
                &console,
                here,
                &format!("No workflow {id} (or none this role may see)."),
            ),
        )
            .into_response();
    };
    let status: String = run.get(1);
    let field = |label: &str, value: Markup| html! { tr { th { (label) } td { (value) } } };
    layout::page(
        &console,
        &format!("Workflow {id}"),
        here,
        html! {
            h1 { (run.get::<_, String>(0)) " " span class=(format!("status-{status}")) { (status) } }
            table {
                (field("Id", html! { (id) }))
                (field("Tenant", text(run.get(2))))
                (field("Idempotency key", text(run.get(3))))
                (field("Owner, lease until", html! { (text(run.get(4))) " " span.hint { (text(run.get(5))) } }))
                (field("Waiting for", html! { (text(run.get(6))) " " span.hint { (text(run.get(7))) } }))
                (field("Error", text(run.get(8))))
                (field("Input", json(run.get(9))))
                (field("Output", json(run.get(10))))
                (field("Parent", match run.get::<_, Option<String>>(11) {
                    Some(parent) => html! { a href=(format!("/workflows/{parent}")) { (parent) } },
                    None => html! { span.hint { "—" } },
                }))
                (field("Started, finished", html! { (run.get::<_, String>(12)) " " span.hint { (text(run.get(13))) } }))
            }
            h2 { "Timeline" }
            table {
                thead { tr { th { "At" } th { "Event" } th { "What" } th { "Detail" } } }
                tbody {
                    @for event in &timeline {
                        tr {
                            td { (text(event.get(0))) }
                            td { (event.get::<_, String>(1)) }
                            td { (text(event.get(2))) }
                            td { (json(event.get(3))) }
                        }
                    }
                }
            }
            @if !children.is_empty() {
                h2 { "Children" }
                table {
                    @for child in &children {
                        @let child_id: String = child.get(0);
                        @let child_status: String = child.get(2);
                        tr {
                            td { a href=(format!("/workflows/{child_id}")) { (child_id) } }
                            td { (child.get::<_, String>(1)) }
                            td class=(format!("status-{child_status}")) { (child_status) }
                        }
                    }
                }
            }
        },
    )
    .into_response()
}

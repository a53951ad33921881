//! Actions, only with `--allow-actions`: each runs the extension's own function as the
//! console's role, so Postgres' grants decide (a refusal is shown as Postgres said it). A
//! form carries the console's form key, which a page of another site does not know.

use crate::pages::{open, refused_by_postgres};
use crate::{Console, auth, layout};
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

#[derive(Deserialize)]
pub struct Message {
    form_key: String,
    id: i64,
}

#[derive(Deserialize)]
pub struct Replay {
    form_key: String,
    endpoint: String,
    since: String,
    #[serde(default)]
    until: String,
}

#[derive(Deserialize)]
pub struct Endpoint {
    form_key: String,
    name: String,
    action: String,
}

/// Refuses what a read-only console, or a form from elsewhere, asks.
fn refuse(console: &Console, headers: &HeaderMap, form_key: &str) -> Option<Response> {
    if !auth::signed_in(console, headers) {
        return Some(auth::refused());
    }
    if !console.allow_actions {
        return Some(
            (
                StatusCode::FORBIDDEN,
                layout::failure(
                    console,
                    "/",
                    "This console is read-only (start it with --allow-actions).",
                ),
            )
                .into_response(),
        );
    }
    if !auth::same(form_key, &console.form_key) {
        return Some(
            (
                StatusCode::FORBIDDEN,
                layout::failure(console, "/", "A form from elsewhere: refused."),
            )
                .into_response(),
        );
    }
    None
}

async fn act(
    console: &Console,
    headers: &HeaderMap,
    form_key: &str,
    sql: &str,
    args: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    back: &str,
    done: String,
) -> Response {
    if let Some(refused) = refuse(console, headers, form_key) {
        return refused;
    }
    let client = match open(console, headers, back).await {
        Ok(client) => client,
        Err(response) => return response,
    };
    match client.execute(sql, args).await {
        Ok(_) => layout::page(
            console,
            "Done",
            back,
            html! { h1 { "Done" } p { (done) } p { a href=(back) { "Back" } } },
        )
        .into_response(),
        Err(e) => refused_by_postgres(console, back, &crate::db::Failure::from(e)),
    }
}

pub async fn retry(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<Message>,
) -> Response {
    act(
        &console,
        &headers,
        &form.form_key,
        "SELECT wf_retry($1)",
        &[&form.id],
        "/messages?status=dead",
        format!("Message {} is pending again.", form.id),
    )
    .await
}

pub async fn cancel(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<Message>,
) -> Response {
    act(
        &console,
        &headers,
        &form.form_key,
        "SELECT wf_cancel_message($1)",
        &[&form.id],
        "/messages",
        format!("Message {} is cancelled.", form.id),
    )
    .await
}

pub async fn replay(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<Replay>,
) -> Response {
    act(
        &console,
        &headers,
        &form.form_key,
        "SELECT wf_replay($1, $2::text::timestamptz, nullif($3, '')::timestamptz)",
        &[&form.endpoint, &form.since, &form.until],
        "/messages?status=dead",
        format!(
            "The dead letters of {} since {} are pending again.",
            form.endpoint, form.since
        ),
    )
    .await
}

pub async fn endpoint(
    State(console): State<Arc<Console>>,
    headers: HeaderMap,
    Form(form): Form<Endpoint>,
) -> Response {
    let sql = match form.action.as_str() {
        "enable" => "SELECT wf_endpoint_enable($1)",
        "disable" => "SELECT wf_endpoint_disable($1, 'disabled from the console')",
        _ => {
            return refuse(&console, &headers, &form.form_key)
                .unwrap_or_else(|| Redirect::to("/endpoints").into_response());
        }
    };
    act(
        &console,
        &headers,
        &form.form_key,
        sql,
        &[&form.name],
        "/endpoints",
        format!("Endpoint {}: {}d.", form.name, form.action),
    )
    .await
}

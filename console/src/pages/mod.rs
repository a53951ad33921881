//! The console's pages. Each one signs the request in, connects, reads views the role may
//! read, and renders; a refusal by Postgres is shown as Postgres said it.

pub mod endpoints;
pub mod messages;
pub mod overview;
pub mod queues;
pub mod workflow;
pub mod workflows;

use crate::Console;
use crate::{auth, db, layout};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use maud::{Markup, html};
use tokio_postgres::Client;

/// Signs the request in and connects; or the response that says why not.
pub async fn open(console: &Console, headers: &HeaderMap, here: &str) -> Result<Client, Response> {
    if !auth::signed_in(console, headers) {
        return Err(auth::refused());
    }
    db::connect(console)
        .await
        .map_err(|failure| refused_by_postgres(console, here, &failure))
}

/// Postgres' refusal as a page: 400 when it refused the request's input (see
/// `db::Failure::bad_input`), 502 otherwise.
pub fn refused_by_postgres(console: &Console, here: &str, failure: &db::Failure) -> Response {
    let status = if failure.bad_input() {
        StatusCode::BAD_REQUEST
    } else {
        StatusCode::BAD_GATEWAY
    };
    (status, layout::failure(console, here, &failure.message)).into_response()
}

/// A cell for an optional text.
pub fn text(value: Option<String>) -> Markup {
    html! { @match value { Some(v) => (v), None => span.hint { "—" } } }
}

/// A JSON document, pretty.
pub fn json(value: Option<serde_json::Value>) -> Markup {
    match value {
        Some(v) => html! { pre { (serde_json::to_string_pretty(&v).unwrap_or_default()) } },
        None => html! { span.hint { "—" } },
    }
}

/// An empty filter (a form field left blank) is no filter.
pub fn given(value: &Option<String>) -> Option<&str> {
    value.as_deref().map(str::trim).filter(|v| !v.is_empty())
}

//! The token every page asks for, and what is kept once it is given: a cookie holding a
//! session key of this console (never the token itself), named after its port so that
//! consoles on one host do not sign each other out, `HttpOnly` and `SameSite=Strict`; and
//! the key every form carries.

use crate::Console;
use crate::layout;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

/// 32 random bytes, as hex.
pub fn random_key() -> String {
    let bytes: [u8; 32] = rand::random();
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Compares in time that does not depend on where they differ.
pub fn same(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Whether the request carries this console's session key in its cookie.
pub fn signed_in(console: &Console, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == console.cookie && same(value, &console.session_key))
}

/// The page to give the token on, for a request without it.
pub fn refused() -> Response {
    (StatusCode::UNAUTHORIZED, login_form(None)).into_response()
}

fn login_form(error: Option<&str>) -> maud::Markup {
    layout::bare(
        "Sign in",
        html! {
            h1 { "workflow console" }
            @if let Some(error) = error { p.error { (error) } }
            form method="post" action="/login" {
                label { "Token " input type="password" name="token" autofocus; }
                button type="submit" { "Sign in" }
            }
            p.hint { "The token is printed by workflow-console when it starts, or set in WORKFLOW_CONSOLE_TOKEN." }
        },
    )
}

pub async fn login_page() -> Response {
    login_form(None).into_response()
}

#[derive(Deserialize)]
pub struct Login {
    token: String,
}

pub async fn login(State(console): State<Arc<Console>>, Form(login): Form<Login>) -> Response {
    if !same(login.token.trim(), &console.token) {
        return (
            StatusCode::UNAUTHORIZED,
            login_form(Some("That is not the token.")),
        )
            .into_response();
    }
    let cookie = format!(
        "{}={}; HttpOnly; SameSite=Strict; Path=/",
        console.cookie, console.session_key
    );
    ([(header::SET_COOKIE, cookie)], Redirect::to("/")).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_compares_whole_strings() {
        assert!(same("abc", "abc"));
        assert!(!same("abc", "abd"));
        assert!(!same("abc", "abcd"));
        assert!(!same("", "a"));
    }

    #[test]
    fn only_this_consoles_session_key_signs_in() {
        let console = Console {
            database_url: String::new(),
            token: "the-token".into(),
            session_key: "session".into(),
            cookie: "workflow_console_8080".into(),
            form_key: "k".into(),
            allow_actions: false,
        };
        let mut headers = HeaderMap::new();
        assert!(!signed_in(&console, &headers));
        let mut with = |cookie: &str| {
            headers.insert(header::COOKIE, cookie.parse().unwrap());
            signed_in(&console, &headers)
        };
        assert!(with("other=1; workflow_console_8080=session"));
        // The token itself is no session, nor is another console's cookie.
        assert!(!with("workflow_console_8080=the-token"));
        assert!(!with("workflow_console_8081=session"));
    }
}

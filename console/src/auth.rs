//! The token every page asks for, kept in a cookie once given, and the key every form
//! carries. The cookie is `HttpOnly` and `SameSite=Strict`: a page of another site can
//! neither read it nor send it along.

use crate::Console;
use crate::layout;
use axum::Form;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use serde::Deserialize;
use std::sync::Arc;

const COOKIE: &str = "workflow_console";

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

/// Whether the request carries the console's token in its cookie.
pub fn signed_in(console: &Console, headers: &HeaderMap) -> bool {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .any(|(name, value)| name == COOKIE && same(value, &console.token))
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
        "{COOKIE}={}; HttpOnly; SameSite=Strict; Path=/",
        console.token
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
    fn the_token_is_read_from_the_cookie_only() {
        let console = Console {
            database_url: String::new(),
            token: "secret".into(),
            form_key: "k".into(),
            allow_actions: false,
        };
        let mut headers = HeaderMap::new();
        assert!(!signed_in(&console, &headers));
        headers.insert(
            header::COOKIE,
            "other=1; workflow_console=secret".parse().unwrap(),
        );
        assert!(signed_in(&console, &headers));
        headers.insert(header::COOKIE, "workflow_console=secrex".parse().unwrap());
        assert!(!signed_in(&console, &headers));
    }
}

//! The page around every page: its navigation, and the console's whole style sheet.

use crate::Console;
use maud::{DOCTYPE, Markup, PreEscaped, html};

const STYLE: &str = "
body { font: 14px/1.45 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f6f7f9; }
nav { background: #1d2433; padding: 0 1.5rem; display: flex; gap: 1.25rem; align-items: center; }
nav a { color: #d5dae3; text-decoration: none; padding: .8rem 0; }
nav a.here { color: #fff; border-bottom: 2px solid #6ea8fe; }
nav .mode { margin-left: auto; color: #9aa3b2; font-size: 12px; }
main { padding: 1.25rem 1.5rem; max-width: 1200px; }
h1 { font-size: 20px; margin: .2rem 0 1rem; } h2 { font-size: 16px; margin: 1.5rem 0 .5rem; }
table { border-collapse: collapse; width: 100%; background: #fff; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e6eb; vertical-align: top; }
th { font-weight: 600; color: #4a5366; background: #eef0f4; }
td pre, pre { margin: 0; white-space: pre-wrap; word-break: break-all; font-size: 12px; }
.cards { display: flex; flex-wrap: wrap; gap: .75rem; margin-bottom: 1rem; }
.card { background: #fff; border: 1px solid #e3e6eb; border-radius: 6px; padding: .6rem .9rem; min-width: 9rem; color: inherit; text-decoration: none; }
.card b { display: block; font-size: 20px; } .card.bad b { color: #b42318; }
.error { color: #b42318; } .hint { color: #6b7385; }
.status-failed, .status-dead, .state-failing, .state-disabled { color: #b42318; font-weight: 600; }
.status-completed, .status-delivered, .state-healthy { color: #067647; }
form.inline { display: inline; } form.filters { margin-bottom: .75rem; display: flex; gap: .5rem; flex-wrap: wrap; }
input, select, button { font: inherit; padding: .2rem .4rem; }
.charts { display: flex; flex-wrap: wrap; gap: 1rem; } .chart { background: #fff; border: 1px solid #e3e6eb; padding: .5rem; margin: 0; }
figcaption { color: #4a5366; margin-bottom: .3rem; }
";

/// A page with the console's navigation; `here` is its link.
pub fn page(console: &Console, title: &str, here: &str, body: Markup) -> Markup {
    let links = [
        ("/", "Overview"),
        ("/workflows", "Workflows"),
        ("/messages", "Messages"),
        ("/messages?status=dead", "Dead letters"),
        ("/endpoints", "Destinations"),
        ("/queues", "Queues"),
    ];
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                title { (title) " · workflow console" }
                style { (PreEscaped(STYLE)) }
            }
            body {
                nav {
                    @for (href, label) in links {
                        a href=(href) class=[(href == here).then_some("here")] { (label) }
                    }
                    span.mode { @if console.allow_actions { "actions allowed" } @else { "read-only" } }
                }
                main { (body) }
            }
        }
    }
}

/// A page without navigation (signing in).
pub fn bare(title: &str, body: Markup) -> Markup {
    html! {
        (DOCTYPE)
        html lang="en" {
            head { meta charset="utf-8"; title { (title) } style { (PreEscaped(STYLE)) } }
            body { main { (body) } }
        }
    }
}

/// A failed query, as Postgres said it.
pub fn failure(console: &Console, here: &str, message: &str) -> Markup {
    page(
        console,
        "Error",
        here,
        html! { h1 { "Postgres refused" } p.error { (message) } },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn console(allow_actions: bool) -> Console {
        Console {
            database_url: String::new(),
            token: "t".into(),
            session_key: "s".into(),
            cookie: "c".into(),
            form_key: "k".into(),
            allow_actions,
        }
    }

    #[test]
    fn a_page_escapes_what_it_is_given_and_says_its_mode() {
        let page = page(
            &console(false),
            "<img src=x onerror=alert(1)>",
            "/queues",
            html! { p { ("<b>name</b>") } },
        )
        .into_string();
        assert!(
            !page.contains("<img") && !page.contains("<b>name"),
            "{page}"
        );
        assert!(page.contains("read-only"));
        assert!(
            page.contains(r#"<a href="/queues" class="here">"#),
            "{page}"
        );
        let acting = super::page(&console(true), "x", "/", html! {}).into_string();
        assert!(acting.contains("actions allowed"));
    }

    #[test]
    fn a_refusal_shows_postgres_message_escaped() {
        let page = failure(
            &console(false),
            "/",
            "permission denied for view <workflows> (42501)",
        )
        .into_string();
        assert!(
            page.contains("permission denied for view &lt;workflows&gt; (42501)"),
            "{page}"
        );
    }
}

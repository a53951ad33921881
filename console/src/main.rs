//! `workflow-console`: a web console for one database with the workflow extension. It
//! connects as the role in its database URL, for every request, so Postgres' grants decide
//! what it shows and what it may do; it is read-only unless started with `--allow-actions`
//! (then every action runs as that role); every page asks for the token it prints at start
//! (or takes from `WORKFLOW_CONSOLE_TOKEN`). Pages are HTML rendered by the server, charts
//! are SVG drawn by it, and nothing is fetched from elsewhere.

mod actions;
mod auth;
mod chart;
mod db;
mod layout;
mod pages;

use axum::Router;
use axum::routing::{get, post};
use std::net::SocketAddr;
use std::sync::Arc;

/// What every handler shares.
pub struct Console {
    pub database_url: String,
    pub token: String,
    /// What the cookie holds once the token was given: this process's, never the token.
    pub session_key: String,
    /// The cookie's name: this console's port in it.
    pub cookie: String,
    /// Sent with every form and checked on every action: a page of another site cannot
    /// post one.
    pub form_key: String,
    pub allow_actions: bool,
}

/// A token shorter than this could be guessed by a page that reaches the console.
const MIN_TOKEN: usize = 16;

const USAGE: &str = "usage: workflow-console --database-url postgres://… [--listen 127.0.0.1:8080] [--allow-actions]
  The database URL may also come from DATABASE_URL. The token every page asks for is
  WORKFLOW_CONSOLE_TOKEN (16 characters or more), or one printed at start.";

fn main() {
    let mut database_url = std::env::var("DATABASE_URL").ok();
    let mut listen: SocketAddr = "127.0.0.1:8080".parse().expect("the default address");
    let mut allow_actions = false;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--database-url" => database_url = args.next(),
            "--listen" => {
                listen = args.next().and_then(|a| a.parse().ok()).unwrap_or_else(|| {
                    exit_with("--listen takes an address such as 127.0.0.1:8080")
                })
            }
            "--allow-actions" => allow_actions = true,
            "--help" | "-h" => {
                println!("{USAGE}");
                return;
            }
            other => exit_with(&format!("unknown argument {other:?}\n{USAGE}")),
        }
    }
    let database_url = database_url.unwrap_or_else(|| exit_with(USAGE));
    let given = std::env::var("WORKFLOW_CONSOLE_TOKEN")
        .ok()
        .filter(|t| !t.is_empty());
    let printed = given.is_none();
    let token = given.unwrap_or_else(auth::random_key);
    if token.len() < MIN_TOKEN || token.contains([';', ' ', ',']) {
        exit_with(&format!(
            "WORKFLOW_CONSOLE_TOKEN must be at least {MIN_TOKEN} characters, without spaces, commas or semicolons"
        ));
    }
    let console = Arc::new(Console {
        database_url,
        token,
        session_key: auth::random_key(),
        cookie: format!("workflow_console_{}", listen.port()),
        form_key: auth::random_key(),
        allow_actions,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(serve(console, listen, printed));
}

/// Every response: nothing loaded from elsewhere, never framed, never cached, no referrer.
async fn guarded(mut response: axum::response::Response) -> axum::response::Response {
    let headers = response.headers_mut();
    for (name, value) in [
        (
            "content-security-policy",
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        ("x-frame-options", "DENY"),
        ("referrer-policy", "no-referrer"),
        ("cache-control", "no-store"),
        ("x-content-type-options", "nosniff"),
    ] {
        headers.insert(name, axum::http::HeaderValue::from_static(value));
    }
    response
}

fn exit_with(message: &str) -> ! {
    eprintln!("{message}");
    std::process::exit(2)
}

async fn serve(console: Arc<Console>, listen: SocketAddr, print_token: bool) {
    let app = Router::new()
        .route("/", get(pages::overview::page))
        .route("/workflows", get(pages::workflows::list))
        .route("/workflows/{id}", get(pages::workflow::page))
        .route("/endpoints", get(pages::endpoints::page))
        .route("/messages", get(pages::messages::list))
        .route("/queues", get(pages::queues::page))
        .route("/login", get(auth::login_page).post(auth::login))
        .route("/actions/retry", post(actions::retry))
        .route("/actions/cancel", post(actions::cancel))
        .route("/actions/replay", post(actions::replay))
        .route("/actions/endpoint", post(actions::endpoint))
        .layer(axum::middleware::map_response(guarded))
        .with_state(Arc::clone(&console));
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .unwrap_or_else(|e| exit_with(&format!("listen on {listen}: {e}")));
    let mode = if console.allow_actions {
        "actions allowed"
    } else {
        "read-only"
    };
    let token = if print_token {
        console.token.as_str()
    } else {
        "the one in WORKFLOW_CONSOLE_TOKEN"
    };
    println!(
        "workflow-console on http://{} ({mode}); token: {token}",
        listener.local_addr().expect("a bound address"),
    );
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await
        .unwrap_or_else(|e| exit_with(&format!("serve: {e}")));
}

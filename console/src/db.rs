//! One connection per request, as the console's role: what it may see and do is what
//! Postgres grants that role. Without `--allow-actions` every transaction is read-only.
//! Times are read and written in ISO format and UTC, whatever the role's settings, so a
//! page's keyset reads back the time it wrote. JIT is off: the charts' estimates are large
//! enough to compile them, which took longer than running them. Connections are plain (no TLS): connect
//! over a Unix socket, to localhost, or through a tunnel.

use crate::Console;
use tokio_postgres::{Client, NoTls};

/// A query's failure as the page shows it: Postgres' own message and SQLSTATE.
pub struct Failure {
    pub message: String,
    pub sqlstate: Option<String>,
}

impl Failure {
    /// Whether Postgres refused the request's own input (a filter that is not a time or
    /// not a number: invalid datetime format or field, invalid text representation) rather
    /// than failed or refused the role. Other data exceptions may come from stored rows.
    pub fn bad_input(&self) -> bool {
        matches!(self.sqlstate.as_deref(), Some("22007" | "22008" | "22P02"))
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        match e.as_db_error() {
            Some(db) => Failure {
                message: format!("{} ({})", db.message(), db.code().code()),
                sqlstate: Some(db.code().code().to_string()),
            },
            None => Failure {
                message: e.to_string(),
                sqlstate: None,
            },
        }
    }
}

pub async fn connect(console: &Console) -> Result<Client, Failure> {
    let (client, connection) = tokio_postgres::connect(&console.database_url, NoTls).await?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let read_only = if console.allow_actions { "off" } else { "on" };
    client
        .batch_execute(&format!(
            "SET application_name = 'workflow-console';
             SET statement_timeout = '10s';
             SET DateStyle = 'ISO';
             SET TimeZone = 'UTC';
             SET jit = off;
             SET default_transaction_read_only = {read_only};"
        ))
        .await?;
    Ok(client)
}

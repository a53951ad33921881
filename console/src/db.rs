//! One connection per request, as the console's role: what it may see and do is what
//! Postgres grants that role. Without `--allow-actions` every transaction is read-only.
//! Times are read and written in ISO format and UTC, whatever the role's settings, so a
//! page's keyset reads back the time it wrote. Connections are plain (no TLS): connect
//! over a Unix socket, to localhost, or through a tunnel.

use crate::Console;
use tokio_postgres::{Client, NoTls};

/// A query's failure as the page shows it: Postgres' own message and SQLSTATE.
pub struct Failure(pub String);

impl From<tokio_postgres::Error> for Failure {
    fn from(e: tokio_postgres::Error) -> Failure {
        Failure(match e.as_db_error() {
            Some(db) => format!("{} ({})", db.message(), db.code().code()),
            None => e.to_string(),
        })
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
             SET default_transaction_read_only = {read_only};"
        ))
        .await?;
    Ok(client)
}

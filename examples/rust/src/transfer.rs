//! A transfer is one SERIALIZABLE transaction: the two balance updates and the
//! `transfer.completed` event for every subscriber commit together, or not at all. A
//! serialization failure or a deadlock rolls all of it back, events included, and the
//! transfer is simply run again.

use serde_json::json;
use std::time::Duration;
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, Error, IsolationLevel};

pub struct Transfer<'a> {
    pub reference: &'a str,
    pub from: &'a str,
    pub to: &'a str,
    pub amount: i64,
}

/// Runs the transfer until it commits, and returns how many times it was retried.
pub async fn run(client: &mut Client, transfer: &Transfer<'_>) -> Result<u32, Error> {
    let mut retries = 0;
    loop {
        match attempt(client, transfer).await {
            Ok(()) => return Ok(retries),
            Err(error) if is_transient(&error) && retries < 50 => {
                retries += 1;
                // A little back-off, growing, so the same transactions do not collide again.
                tokio::time::sleep(Duration::from_millis(2 * u64::from(retries))).await;
            }
            Err(error) => return Err(error),
        }
    }
}

/// 40001 and 40P01: the transaction did nothing and can be run again as it is.
fn is_transient(error: &Error) -> bool {
    matches!(
        error.code(),
        Some(&SqlState::T_R_SERIALIZATION_FAILURE) | Some(&SqlState::T_R_DEADLOCK_DETECTED)
    )
}

async fn attempt(client: &mut Client, transfer: &Transfer<'_>) -> Result<(), Error> {
    let tx = client
        .build_transaction()
        .isolation_level(IsolationLevel::Serializable)
        .start()
        .await?;
    let balance: i64 = tx
        .query_one(
            "SELECT balance FROM bank_accounts WHERE id = $1",
            &[&transfer.from],
        )
        .await?
        .get(0);
    assert!(balance >= transfer.amount, "{} cannot pay", transfer.from);
    tx.execute(
        "UPDATE bank_accounts SET balance = balance - $2 WHERE id = $1",
        &[&transfer.from, &transfer.amount],
    )
    .await?;
    tx.execute(
        "UPDATE bank_accounts SET balance = balance + $2 WHERE id = $1",
        &[&transfer.to, &transfer.amount],
    )
    .await?;
    let event = json!({
        "reference": transfer.reference,
        "from": transfer.from,
        "to": transfer.to,
        "amount": transfer.amount,
    });
    // One message per subscribed endpoint, each with its own webhook-id. The key keeps a
    // transfer that is started again after it committed from announcing itself twice.
    tx.query_one(
        "SELECT wf_publish('transfer.completed', $1, idempotency_key => $2)",
        &[&event, &transfer.reference],
    )
    .await?;
    tx.commit().await
}

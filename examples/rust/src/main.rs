//! The whole example, end to end, checking what it claims: twenty transfers run four at a
//! time in SERIALIZABLE transactions, retried on 40001 and 40P01, each publishing one
//! `transfer.completed` event that reaches both subscribers exactly once, verified.
//!
//! ```text
//! cargo run -p workflow-example-rust   (connection parameters from PGHOST, PGPORT, PGUSER, PGDATABASE)
//! ```
//!
//! The dispatcher must be running for the database, and allowed to reach the subscribers on
//! 127.0.0.1 (`workflow.allow_private_networks = on`).

mod subscriber;
mod transfer;

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use subscriber::Subscriber;
use tokio_postgres::{Client, NoTls};
use transfer::Transfer;

const TRANSFERS: usize = 20;
const CONCURRENT: usize = 4;

/// A connection configured by the libpq environment variables, as psql would be.
async fn connect() -> Result<Client, tokio_postgres::Error> {
    let mut config = tokio_postgres::Config::new();
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    let host = var("PGHOST").unwrap_or_else(|| "localhost".into());
    if host.starts_with('/') {
        config.host_path(host);
    } else {
        config.host(&host);
    }
    config.port(var("PGPORT").and_then(|p| p.parse().ok()).unwrap_or(5432));
    let user = var("PGUSER")
        .or_else(|| var("USER"))
        .unwrap_or_else(|| "postgres".into());
    config.dbname(var("PGDATABASE").unwrap_or_else(|| user.clone()));
    config.user(&user);
    if let Some(password) = var("PGPASSWORD") {
        config.password(password);
    }
    let (client, connection) = config.connect(NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let client = connect().await?;
    client
        .batch_execute(
            "CREATE EXTENSION IF NOT EXISTS workflow;
             CREATE TABLE IF NOT EXISTS bank_accounts (
                 id      text PRIMARY KEY,
                 balance bigint NOT NULL CHECK (balance >= 0))",
        )
        .await?;
    // Accounts of their own in every run, so that the example can run again in one database.
    let run = SystemTime::now().duration_since(UNIX_EPOCH)?.as_micros();
    let (alice, bob) = (format!("alice-{run}"), format!("bob-{run}"));
    client
        .execute(
            "INSERT INTO bank_accounts VALUES ($1, 100), ($2, 0)",
            &[&alice, &bob],
        )
        .await?;

    // Two subscribers: the ledger takes every transfer event, notifications only this one.
    let ledger = Subscriber::start().await?;
    let notifications = Subscriber::start().await?;
    for (name, subscriber, pattern) in [
        ("ledger", &ledger, "transfer.*"),
        ("notifications", &notifications, "transfer.completed"),
    ] {
        let secret: String = client
            .query_one(
                "SELECT wf_endpoint($1, $2, 'generate', event_types => ARRAY[$3])",
                &[&name, &subscriber.url, &pattern],
            )
            .await?
            .get(0);
        subscriber
            .secret
            .set(secret)
            .expect("one secret per subscriber");
    }

    println!("{TRANSFERS} transfers of 5 from {alice} to {bob}, {CONCURRENT} at a time");
    let mut tasks = Vec::new();
    for task in 0..CONCURRENT {
        let (alice, bob) = (alice.clone(), bob.clone());
        tasks.push(tokio::spawn(async move {
            let mut client = connect().await?;
            let mut retries = 0;
            for i in (task..TRANSFERS).step_by(CONCURRENT) {
                let reference = format!("transfer-{run}-{i}");
                let transfer = Transfer {
                    reference: &reference,
                    from: &alice,
                    to: &bob,
                    amount: 5,
                };
                retries += transfer::run(&mut client, &transfer).await?;
            }
            Ok::<u32, tokio_postgres::Error>(retries)
        }));
    }
    let mut retries = 0;
    for task in tasks {
        retries += task.await??;
    }
    println!("all committed, after {retries} retries on serialization failures");

    let balances: Vec<i64> = client
        .query(
            "SELECT balance FROM bank_accounts WHERE id IN ($1, $2) ORDER BY id",
            &[&alice, &bob],
        )
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        balances,
        [0, 100],
        "alice paid everything to bob, once each"
    );
    assert!(
        retries > 0,
        "four transactions at once on one row never conflicted"
    );

    let deadline = Instant::now() + Duration::from_secs(60);
    while ledger.count() < TRANSFERS || notifications.count() < TRANSFERS {
        assert!(Instant::now() < deadline, "the events did not all arrive");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for (name, subscriber) in [("ledger", &ledger), ("notifications", &notifications)] {
        let events = subscriber.events.lock().unwrap();
        assert_eq!(events.rejected, 0, "{name} rejected a signature");
        let mut references: Vec<&str> = events
            .by_id
            .values()
            .map(|event| event["data"]["reference"].as_str().unwrap_or_default())
            .collect();
        references.sort_unstable();
        references.dedup();
        assert_eq!(
            references.len(),
            TRANSFERS,
            "{name} got one event per transfer"
        );
        assert!(
            events
                .by_id
                .values()
                .all(|e| e["type"] == "transfer.completed"),
            "{name} got an event of another type"
        );
    }
    println!("ledger and notifications each verified {TRANSFERS} events, one per transfer");
    println!("ok");
    Ok(())
}

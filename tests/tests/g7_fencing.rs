//! G7 fencing with real sessions: an owner whose lease ran out races the instance that
//! claimed the workflow after it, following the README's recipe (a fenced heartbeat before
//! the business write, a fenced checkpoint after), and the business write happens once.

use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::{shared_cluster, sqlstate, unique};

const LEASE: &str = "1s";

async fn setup() -> Client {
    let client = shared_cluster().connect().await;
    // The tests of this file run at once: one of them creates the table.
    client
        .batch_execute(
            "SELECT pg_advisory_lock(7);
             CREATE TABLE IF NOT EXISTS ledger (workflow uuid NOT NULL, step text NOT NULL, by text NOT NULL);
             SELECT pg_advisory_unlock(7);",
        )
        .await
        .unwrap();
    client
}

/// One fenced step as the README writes it; `pause` runs between the heartbeat and the
/// business write. Returns the SQLSTATE if the step was refused.
async fn fenced_step(
    client: &Client,
    id: uuid::Uuid,
    step: &str,
    owner: &str,
    pause: Duration,
) -> Option<String> {
    client.batch_execute("BEGIN").await.unwrap();
    let result = async {
        client
            .execute("SELECT wf_heartbeat($1, owner => $2)", &[&id, &owner])
            .await?;
        tokio::time::sleep(pause).await;
        let done: bool = client
            .query_one("SELECT wf_step($1, $2) IS NOT NULL", &[&id, &step])
            .await?
            .get(0);
        if !done {
            client
                .execute(
                    "INSERT INTO ledger VALUES ($1, $2, $3)",
                    &[&id, &step, &owner],
                )
                .await?;
            client
                .execute(
                    "SELECT wf_checkpoint($1, $2, owner => $3)",
                    &[&id, &step, &owner],
                )
                .await?;
        }
        Ok::<_, tokio_postgres::Error>(())
    }
    .await;
    match result {
        Ok(()) => {
            client.batch_execute("COMMIT").await.unwrap();
            None
        }
        Err(e) => {
            client.batch_execute("ROLLBACK").await.unwrap();
            Some(sqlstate(&e).to_string())
        }
    }
}

async fn ledger(client: &Client, id: uuid::Uuid) -> Vec<(String, String)> {
    client
        .query(
            "SELECT step, by FROM ledger WHERE workflow = $1 ORDER BY step",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn start(client: &Client, name: &str, owner: &str) -> uuid::Uuid {
    client
        .batch_execute(&format!("SET workflow.lease_duration = '{LEASE}'"))
        .await
        .unwrap();
    client
        .query_one("SELECT wf_start($1, owner => $2)", &[&name, &owner])
        .await
        .unwrap()
        .get(0)
}

async fn claim(client: &Client, name: &str, owner: &str) -> Vec<uuid::Uuid> {
    client
        .query(
            "SELECT wf_claim($1, $2, interval '1 minute')",
            &[&name, &owner],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// A stalls past its lease before its step; B claims and does the step; A then tries it:
/// refused, its write rolled back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stale_owner_is_refused_and_the_business_write_happens_once() {
    let a = setup().await;
    let b = shared_cluster().connect().await;
    let name = unique("fenced");
    let id = start(&a, &name, "a").await;

    tokio::time::sleep(Duration::from_millis(1200)).await; // A stalls: its lease runs out
    assert_eq!(claim(&b, &name, "b").await, [id]);
    assert_eq!(
        fenced_step(&b, id, "debit", "b", Duration::ZERO).await,
        None
    );
    assert_eq!(
        fenced_step(&a, id, "debit", "a", Duration::ZERO)
            .await
            .as_deref(),
        Some("55006")
    );
    assert_eq!(
        fenced_step(&a, id, "credit", "a", Duration::ZERO)
            .await
            .as_deref(),
        Some("55006")
    );
    assert_eq!(ledger(&a, id).await, [("debit".into(), "b".into())]);
    let error = a
        .execute("SELECT wf_complete($1, owner => 'a')", &[&id])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "55006");
}

/// A holds the lease and is inside its step when its lease runs out: B's claim skips the
/// workflow while A's transaction holds it, A's step commits, and B, claiming after, finds
/// the step done.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_never_takes_a_workflow_in_the_middle_of_a_fenced_step() {
    let a = setup().await;
    let b = shared_cluster().connect().await;
    let name = unique("racing");
    let id = start(&a, &name, "a").await;

    let name_b = name.clone();
    let racer = tokio::spawn(async move {
        // Claims while A pauses inside its step with an expired lease.
        tokio::time::sleep(Duration::from_millis(1300)).await;
        let during = claim(&b, &name_b, "b").await;
        (b, during)
    });
    // The pause outlasts the 1 s lease the heartbeat renewed; the run stays locked.
    let refused = fenced_step(&a, id, "debit", "a", Duration::from_millis(1600)).await;
    let (b, claimed_during) = racer.await.unwrap();
    assert!(claimed_during.is_empty(), "a locked run is skipped");
    // A's checkpoint came after its renewed lease expired: refused, and rolled back.
    assert_eq!(refused.as_deref(), Some("55006"));
    assert!(ledger(&b, id).await.is_empty());

    // B claims now that A's transaction is over, and does the step once.
    assert_eq!(claim(&b, &name, "b").await, [id]);
    assert_eq!(
        fenced_step(&b, id, "debit", "b", Duration::ZERO).await,
        None
    );
    assert_eq!(ledger(&b, id).await, [("debit".into(), "b".into())]);
}

//! G4: `wf_start` with an idempotency key creates one workflow, also under concurrent callers.

use std::sync::Arc;
use tokio::sync::Barrier;
use uuid::Uuid;
use workflow_tests::{shared_cluster, unique};

const SESSIONS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn g4_eight_sessions_racing_wf_start_with_one_key_get_one_id() {
    let cluster = shared_cluster();
    let name = unique("race");
    let barrier = Arc::new(Barrier::new(SESSIONS));
    let mut racers = Vec::new();
    for session in 0..SESSIONS {
        let (barrier, name) = (Arc::clone(&barrier), name.clone());
        let client = cluster.connect().await;
        racers.push(tokio::spawn(async move {
            client.batch_execute("BEGIN").await.unwrap();
            barrier.wait().await;
            let input = serde_json::json!({ "session": session });
            let id: Uuid = client
                .query_one("SELECT wf_start($1, $2, 'the-key')", &[&name, &input])
                .await
                .unwrap()
                .get(0);
            // Hold the transaction open a moment so the others queue on the key.
            client
                .batch_execute("SELECT pg_sleep(0.05); COMMIT")
                .await
                .unwrap();
            id
        }));
    }
    let mut ids = Vec::new();
    for racer in racers {
        ids.push(racer.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "every session must get the same id: {ids:?}");

    let client = cluster.connect().await;
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.runs WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

#[tokio::test]
async fn g4_a_key_whose_first_start_rolled_back_starts_afresh() {
    let cluster = shared_cluster();
    let name = unique("rolled-back-key");
    let first = cluster.connect().await;
    let second = cluster.connect().await;

    first.batch_execute("BEGIN").await.unwrap();
    let abandoned: Uuid = first
        .query_one("SELECT wf_start($1, NULL, 'k')", &[&name])
        .await
        .unwrap()
        .get(0);
    // The second start waits on the first one's key until it rolls back, then creates its own.
    let waiting = tokio::spawn(async move {
        let id: Uuid = second
            .query_one("SELECT wf_start($1, NULL, 'k')", &[&name])
            .await
            .unwrap()
            .get(0);
        id
    });
    first.batch_execute("ROLLBACK").await.unwrap();
    let created = waiting.await.unwrap();
    assert_ne!(created, abandoned);
}

#[tokio::test]
async fn g4_under_repeatable_read_a_concurrent_duplicate_start_is_a_serialization_failure() {
    let cluster = shared_cluster();
    let name = unique("rr-key");
    let first = cluster.connect().await;
    let second = cluster.connect().await;

    second
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ; SELECT 1")
        .await
        .unwrap();
    first
        .query_one("SELECT wf_start($1, NULL, 'k')", &[&name])
        .await
        .unwrap();
    // The first start committed after the second transaction's snapshot: it cannot be returned
    // without breaking the snapshot, and a second workflow must not be created.
    let error = second
        .query_one("SELECT wf_start($1, NULL, 'k')", &[&name])
        .await
        .unwrap_err();
    assert_eq!(workflow_tests::sqlstate(&error), "40001", "{error}");
}

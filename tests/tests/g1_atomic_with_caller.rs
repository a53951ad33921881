//! G1: workflow writes commit with the caller's transaction, or vanish with it.

use std::time::Duration;
use uuid::Uuid;
use workflow_tests::{shared_cluster, unique};

#[tokio::test]
async fn g1_a_workflow_and_its_steps_appear_only_when_the_caller_commits() {
    let cluster = shared_cluster();
    let name = unique("atomic");
    let writer = cluster.connect().await;
    let reader = cluster.connect().await;
    let visible = |name: String| {
        let reader = &reader;
        async move {
            let count: i64 = reader
                .query_one(
                    "SELECT count(*) FROM workflow.runs r JOIN workflow.checkpoints c ON c.workflow_id = r.id WHERE r.name = $1",
                    &[&name],
                )
                .await
                .unwrap()
                .get(0);
            count
        }
    };

    writer.batch_execute("BEGIN").await.unwrap();
    let id = workflow_tests::start_workflow(&writer, &name).await;
    workflow_tests::checkpoint(&writer, id, "debit").await;
    assert_eq!(
        visible(name.clone()).await,
        0,
        "nothing is visible before commit"
    );
    writer.batch_execute("COMMIT").await.unwrap();
    assert_eq!(visible(name).await, 1);
}

#[tokio::test]
async fn g1_a_rolled_back_transaction_leaves_nothing() {
    let cluster = shared_cluster();
    let name = unique("rollback");
    let client = cluster.connect().await;
    client.batch_execute("BEGIN").await.unwrap();
    let id: Uuid = client
        .query_one("SELECT wf_start($1, NULL, 'key')", &[&name])
        .await
        .unwrap()
        .get(0);
    workflow_tests::checkpoint(&client, id, "debit").await;
    client
        .execute("SELECT wf_complete($1)", &[&id])
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();

    let error = client
        .query_one("SELECT * FROM wf_status($1)", &[&id])
        .await
        .unwrap_err();
    assert_eq!(workflow_tests::sqlstate(&error), "P0002");
    let again: Uuid = client
        .query_one("SELECT wf_start($1, NULL, 'key')", &[&name])
        .await
        .unwrap()
        .get(0);
    assert_ne!(again, id, "the key of a rolled-back start is free");
}

#[tokio::test]
async fn g1_a_savepoint_rollback_undoes_only_what_followed_it() {
    let cluster = shared_cluster();
    let client = cluster.connect().await;
    client.batch_execute("BEGIN").await.unwrap();
    let id = workflow_tests::start_workflow(&client, &unique("savepoint")).await;
    workflow_tests::checkpoint(&client, id, "debit").await;
    client
        .batch_execute("SAVEPOINT before_credit")
        .await
        .unwrap();
    workflow_tests::checkpoint(&client, id, "credit").await;
    client
        .execute("SELECT wf_complete($1)", &[&id])
        .await
        .unwrap();
    client
        .batch_execute("ROLLBACK TO SAVEPOINT before_credit; COMMIT")
        .await
        .unwrap();

    let row = client
        .query_one(
            "SELECT status, steps_done, wf_step($1, 'credit') IS NULL FROM wf_status($1)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(row.get::<_, String>(0), "running");
    assert_eq!(row.get::<_, i32>(1), 1);
    assert!(
        row.get::<_, bool>(2),
        "the rolled-back step is not recorded"
    );
}

#[tokio::test]
async fn g1_a_dropped_connection_rolls_back_its_open_transaction() {
    let cluster = shared_cluster();
    let name = unique("dropped");
    let doomed = cluster.connect().await;
    doomed.batch_execute("BEGIN").await.unwrap();
    doomed
        .query_one("SELECT wf_start($1)", &[&name])
        .await
        .unwrap();
    let pid: i32 = doomed
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    drop(doomed);

    let observer = cluster.connect().await;
    workflow_tests::backend_exits(&observer, pid, Duration::from_secs(20)).await;
    let count: i64 = observer
        .query_one(
            "SELECT count(*) FROM workflow.runs WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

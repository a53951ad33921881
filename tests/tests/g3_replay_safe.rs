//! G3: a workflow interrupted by a crash resumes from its last checkpoint, and no step is
//! recorded twice — not on replay, not under concurrent replays.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use uuid::Uuid;
use workflow_tests::{eventually, shared_cluster, unique};

#[tokio::test]
async fn g3_after_a_crash_the_recovered_workflow_resumes_from_its_last_checkpoint() {
    let cluster = shared_cluster();
    let name = unique("resume");
    let worker = cluster.connect().await;
    worker
        .batch_execute("SET workflow.lease_duration = '1s'")
        .await
        .unwrap();
    let id = workflow_tests::start_workflow(&worker, &name).await;
    worker
        .execute(
            "SELECT wf_checkpoint($1, 'debit', '{\"balance\": 90}')",
            &[&id],
        )
        .await
        .unwrap();
    // The crash: killed in the middle of the next step's transaction.
    worker.batch_execute("BEGIN").await.unwrap();
    worker
        .execute(
            "SELECT wf_checkpoint($1, 'credit', '{\"balance\": 110}')",
            &[&id],
        )
        .await
        .unwrap();
    let pid: i32 = worker
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);
    let rescuer = cluster.connect().await;
    rescuer
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();

    let claimed: Uuid = eventually(
        "the lease to expire and the claim to succeed",
        Duration::from_secs(20),
        || async {
            rescuer
                .query_opt("SELECT wf_claim($1, 'rescuer')", &[&name])
                .await
                .unwrap()
                .map(|row| row.get(0))
        },
    )
    .await;
    assert_eq!(claimed, id);
    let recoveries: i32 = rescuer
        .query_one("SELECT recovery_attempts FROM wf_status($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recoveries, 1,
        "taking over the dead owner's lease is a recovery"
    );

    let row = rescuer
        .query_one(
            "SELECT wf_step($1, 'debit')::text, wf_step($1, 'credit') IS NULL",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, String>(0),
        r#"{"balance": 90}"#,
        "the committed step survives"
    );
    assert!(
        row.get::<_, bool>(1),
        "the interrupted step was never recorded"
    );

    // Replaying the whole workflow re-records nothing that was done.
    let replayed: String = rescuer
        .query_one(
            "SELECT wf_checkpoint($1, 'debit', '{\"balance\": 0}')::text",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(replayed, r#"{"balance": 90}"#);
    rescuer
        .execute(
            "SELECT wf_checkpoint($1, 'credit', '{\"balance\": 110}')",
            &[&id],
        )
        .await
        .unwrap();
    rescuer
        .execute("SELECT wf_complete($1)", &[&id])
        .await
        .unwrap();
    let row = rescuer
        .query_one(
            "SELECT status, steps_done, recovery_attempts FROM wf_status($1)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, i32>(1),
            row.get::<_, i32>(2)
        ),
        ("completed".into(), 2, 0),
        "the new checkpoint restarted the recovery count"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn g3_concurrent_replays_of_one_step_record_it_once_and_agree_on_its_output() {
    const REPLAYS: usize = 6;
    let cluster = shared_cluster();
    let setup = cluster.connect().await;
    let id = workflow_tests::start_workflow(&setup, &unique("replays")).await;
    let barrier = Arc::new(Barrier::new(REPLAYS));
    let mut replays = Vec::new();
    for replay in 0..REPLAYS {
        let client = cluster.connect().await;
        let barrier = Arc::clone(&barrier);
        replays.push(tokio::spawn(async move {
            client.batch_execute("BEGIN").await.unwrap();
            barrier.wait().await;
            let output = serde_json::json!({ "replay": replay });
            let recorded: serde_json::Value = client
                .query_one("SELECT wf_checkpoint($1, 'charge', $2)", &[&id, &output])
                .await
                .unwrap()
                .get(0);
            client.batch_execute("COMMIT").await.unwrap();
            recorded
        }));
    }
    let mut outputs = Vec::new();
    for replay in replays {
        outputs.push(replay.await.unwrap());
    }
    outputs.dedup();
    assert_eq!(
        outputs.len(),
        1,
        "every replay sees the one recorded output: {outputs:?}"
    );
    let count: i64 = setup
        .query_one(
            "SELECT count(*) FROM workflow.checkpoints WHERE workflow_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 1);
}

/// Replays that queue behind the transaction recording the step took their snapshot
/// before it committed: each must still answer with the recorded output, not with null.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn g3_replays_queued_behind_the_first_record_answer_with_its_output() {
    const REPLAYS: usize = 3;
    let cluster = shared_cluster();
    let setup = cluster.connect().await;
    let id = workflow_tests::start_workflow(&setup, &unique("queued")).await;
    let first = cluster.connect().await;
    first.batch_execute("BEGIN").await.unwrap();
    let recorded = serde_json::json!({ "replay": "first" });
    first
        .execute("SELECT wf_checkpoint($1, 'charge', $2)", &[&id, &recorded])
        .await
        .unwrap();

    let mut replays = Vec::new();
    let mut pids = Vec::new();
    for replay in 0..REPLAYS {
        let client = cluster.connect().await;
        pids.push(
            client
                .query_one("SELECT pg_backend_pid()", &[])
                .await
                .unwrap()
                .get::<_, i32>(0),
        );
        replays.push(tokio::spawn(async move {
            let output = serde_json::json!({ "replay": replay });
            client
                .query_one("SELECT wf_checkpoint($1, 'charge', $2)", &[&id, &output])
                .await
                .unwrap()
                .get::<_, serde_json::Value>(0)
        }));
    }
    workflow_tests::until_true(
        &setup,
        "every replay waits for the first record's lock",
        "SELECT count(*) = $1 FROM pg_stat_activity WHERE pid = ANY ($2) AND wait_event_type = 'Lock'",
        &[&(REPLAYS as i64), &pids],
        Duration::from_secs(10),
    )
    .await;
    first.batch_execute("COMMIT").await.unwrap();
    for replay in replays {
        assert_eq!(replay.await.unwrap(), recorded);
    }
}

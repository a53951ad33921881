//! Regression tests for the dispatcher's idle behaviour, each on a cluster of its own.

use std::time::Duration;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{dispatcher_pid, unique};

const DEADLINE: Duration = Duration::from_secs(30);

async fn enqueue(client: &tokio_postgres::Client, target: &str, payload: serde_json::Value) -> i64 {
    client
        .query_one("SELECT wf_enqueue($1, $2)", &[&target, &payload])
        .await
        .unwrap()
        .get(0)
}

fn path(name: &str) -> String {
    format!("/{}", unique(name))
}

/// Regression: a due message that cannot be claimed (its endpoint disabled) once counted as
/// "due now" and kept the dispatcher claiming in a tight loop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backlog_behind_a_disabled_endpoint_does_not_make_the_dispatcher_spin() {
    // A cluster of its own: other tests' deliveries would show up in the scan counts.
    let cluster = workflow_tests::Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = path("gone-for-good");
    let endpoint = unique("gone-for-good");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    receiver.script(&path, [Reply::Status(410)]);
    enqueue(&client, &endpoint, serde_json::json!({})).await;
    workflow_tests::endpoint_disabled(&client, &endpoint, DEADLINE).await;
    let scans = || async {
        let scans: i64 = client
            .query_one(
                "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE schemaname = 'workflow' AND relname = 'outbox'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        scans
    };
    let before = scans().await;
    // Statistics reach pgstat at most once a second: look over a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = scans().await - before;
    assert!(
        during < 200,
        "{during} scans of the outbox in 3 s while nothing could be sent"
    );
}

/// Regression: every commit that enqueued woke the dispatcher for a round, even when the
/// message was due long after the dispatcher's next look at the outbox anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_messages_do_not_wake_the_dispatcher() {
    let cluster = workflow_tests::Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let scans = || async {
        let scans: i64 = client
            .query_one(
                "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables WHERE schemaname = 'workflow' AND relname = 'outbox'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        scans
    };
    let before = scans().await;
    for n in 0..40 {
        client
            .execute(
                "SELECT wf_enqueue('https://example.com/later', jsonb_build_object('n', $1::int),
                                   deliver_at => now() + interval '1 hour')",
                &[&n],
            )
            .await
            .unwrap();
        // Paced, so that a dispatcher woken by each commit would run a round for each
        // (two scans: the claim and the next due time) instead of one for several.
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    // Statistics reach pgstat at most once a second: look over a few seconds.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let during = scans().await - before;
    assert!(
        during < 20,
        "{during} scans of the outbox after 40 commits of messages due in an hour"
    );
}

//! `wf_stats` is cheap at any size — it counts finished messages from kept counts, never by
//! reading the delivered history — and its counts are the table's, through deliveries,
//! dead letters, cancels, retries and retention.

use std::time::Duration;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, dispatcher_pid, message_reaches, unique, until_true};

const DEADLINE: Duration = Duration::from_secs(60);

/// True when wf_stats says what a count of the outbox says, in one snapshot.
const COUNTS_AGREE: &str = "
    SELECT s.pending = t.pending AND s.delivered = t.delivered AND s.dead = t.dead AND s.cancelled = t.cancelled
      FROM wf_stats() s,
           (SELECT count(*) FILTER (WHERE status = 'pending') AS pending,
                   count(*) FILTER (WHERE status = 'delivered') AS delivered,
                   count(*) FILTER (WHERE status = 'dead') AS dead,
                   count(*) FILTER (WHERE status = 'cancelled') AS cancelled
              FROM workflow.outbox) t";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_stats_counts_agree_with_the_outbox_through_every_transition() {
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.extend(["workflow.retention = '3s'", "workflow.poll_interval = '1s'"]);
    let cluster = Cluster::start(&settings);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("stats"));
    let gone = format!("/{}", unique("gone"));
    receiver.script(&gone, [Reply::Status(404)]);

    let mut delivered = Vec::new();
    for _ in 0..3 {
        delivered.push(workflow_tests::enqueue(&client, &receiver.url(&path)).await);
    }
    let dead: i64 = workflow_tests::enqueue(&client, &receiver.url(&gone)).await;
    let cancelled: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', deliver_at => now() + interval '1 hour')",
            &[&receiver.url(&path)],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT wf_cancel_message($1)", &[&cancelled])
        .await
        .unwrap();
    for id in &delivered {
        message_reaches(&client, *id, "delivered", DEADLINE).await;
    }
    message_reaches(&client, dead, "dead", DEADLINE).await;
    until_true(&client, "wf_stats to agree", COUNTS_AGREE, &[], DEADLINE).await;

    // A retried dead letter leaves the dead count and is delivered.
    client
        .execute("SELECT wf_retry($1)", &[&dead])
        .await
        .unwrap();
    message_reaches(&client, dead, "delivered", DEADLINE).await;
    until_true(
        &client,
        "wf_stats to agree after a retry",
        COUNTS_AGREE,
        &[],
        DEADLINE,
    )
    .await;

    // Retention removes the delivered and the cancelled; the counts follow.
    until_true(
        &client,
        "retention to remove every finished message",
        "SELECT NOT EXISTS (SELECT FROM workflow.outbox)",
        &[],
        DEADLINE,
    )
    .await;
    until_true(
        &client,
        "wf_stats to agree after retention",
        COUNTS_AGREE,
        &[],
        DEADLINE,
    )
    .await;
    let delivered_count: i64 = client
        .query_one("SELECT delivered + cancelled + dead FROM wf_stats()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered_count, 0);
}

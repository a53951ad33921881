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

/// The two latencies say what they measure, as a receiver's clock sees it: the request
/// alone is the time the receiver took to answer, and enqueue-to-answer ends at the answer,
/// not when the dispatcher later recorded it. Each within a couple of milliseconds.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latencies_match_what_the_receiver_measured() {
    const ANSWER_AFTER: Duration = Duration::from_millis(40);
    const MESSAGES: usize = 25;
    // "A couple of milliseconds", on a debug build of a two-core machine running other tests.
    const WITHIN_MS: f64 = 3.0;
    let cluster = workflow_tests::dispatch_cluster();
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("latency"));
    receiver.always(&path, Reply::After(ANSWER_AFTER, 200));
    let endpoint = unique("latency");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();

    // One at a time: the receiver's view of each message is when it was enqueued (the
    // statement sent, as `created_at` is that statement's start), when it arrived and when
    // the receiver's answer was ready.
    let mut enqueue_to_answer = Vec::new();
    for n in 0..MESSAGES {
        let sent = std::time::Instant::now();
        let id: i64 = client
            .query_one("SELECT wf_enqueue($1, '{}')", &[&endpoint])
            .await
            .unwrap()
            .get(0);
        message_reaches(&client, id, "delivered", DEADLINE).await;
        let (arrived, took) = receiver.answer_times(&path)[n];
        enqueue_to_answer.push(arrived.duration_since(sent) + took);
    }
    let p50 = |mut times: Vec<Duration>| {
        times.sort();
        times[times.len() / 2].as_secs_f64() * 1000.0
    };
    let receiver_request_p50 = p50(receiver.answer_times(&path).iter().map(|t| t.1).collect());
    let receiver_answer_p50 = p50(enqueue_to_answer);

    let row = client
        .query_one(
            "SELECT enqueue_to_answer_p50_ms, request_p50_ms, deliveries_last_minute
               FROM workflow.metrics WHERE endpoint = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    let (answer_p50, request_p50, deliveries): (f64, f64, i64) =
        (row.get(0), row.get(1), row.get(2));
    assert_eq!(deliveries, MESSAGES as i64);
    assert!(
        (request_p50 - receiver_request_p50).abs() < WITHIN_MS,
        "the request alone: {request_p50:.2} ms; the receiver's clock: {receiver_request_p50:.2} ms"
    );
    assert!(
        (answer_p50 - receiver_answer_p50).abs() < WITHIN_MS,
        "enqueue to answer: {answer_p50:.2} ms; the receiver's clock: {receiver_answer_p50:.2} ms"
    );
}

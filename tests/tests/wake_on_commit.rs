//! Wake on commit: the commit of a transaction that enqueued wakes the dispatcher at once;
//! the poll interval (10 s on this cluster) is only the fallback.

use std::time::Duration;
use workflow_tests::receiver::{Receiver, commit_to_receipt};
use workflow_tests::{dispatch_cluster, dispatcher_pid, message_reaches, unique};

const MESSAGES: usize = 100;
const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn median_commit_to_receipt_is_under_20ms() {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("latency"));
    let url = receiver.url(&path);
    // One delivery first, so the dispatcher's connection to the receiver is warm.
    let warm: i64 = client
        .query_one("SELECT wf_enqueue($1, '{}')", &[&url])
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, warm, "delivered", DEADLINE).await;

    let mut latencies = Vec::with_capacity(MESSAGES);
    for n in 1..=MESSAGES {
        latencies.push(commit_to_receipt(&client, &receiver, &path, n, DEADLINE).await);
    }
    latencies.sort();
    let median = latencies[MESSAGES / 2];
    let p99 = latencies[MESSAGES * 99 / 100];
    eprintln!("commit-to-receipt over {MESSAGES} messages: median {median:?}, p99 {p99:?}");
    assert!(
        median < Duration::from_millis(20),
        "median commit-to-receipt {median:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_enqueue_sends_nothing() {
    let client = dispatch_cluster().connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("rolled-back"));
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute("SELECT wf_enqueue($1, '{}')", &[&receiver.url(&path)])
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    // A commit afterwards is delivered; the rolled-back message never is.
    let sentinel = format!("/{}", unique("sentinel"));
    let id: i64 = client
        .query_one("SELECT wf_enqueue($1, '{}')", &[&receiver.url(&sentinel)])
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert!(receiver.received(&path).is_empty());
    assert_eq!(
        dispatcher_pid(&client, DEADLINE).await,
        pid,
        "the dispatcher did not restart along the way"
    );
}

/// A message scheduled before the dispatcher's next poll wakes it for its due time: it
/// arrives when due, not at the poll 10 s later.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scheduled_message_is_sent_when_due_not_at_the_next_poll() {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("scheduled"));
    let due = std::time::SystemTime::now() + Duration::from_secs(2);
    let enqueued = std::time::Instant::now();
    client
        .execute(
            "SELECT wf_enqueue($1, '{}', deliver_at => $2)",
            &[&receiver.url(&path), &due],
        )
        .await
        .unwrap();
    let received = receiver.wait_for(&path, 1, DEADLINE).await;
    let after = received[0].at.duration_since(enqueued);
    assert!(
        after >= Duration::from_millis(1900),
        "sent {after:?} after enqueueing, before it was due"
    );
    assert!(
        after < Duration::from_secs(6),
        "sent {after:?} after enqueueing, 2 s after its due time: at a poll, not when due"
    );
}

//! Per-destination limits and isolation, measured at a real receiver: an endpoint limited
//! to N requests never has more in flight, URL targets share a limit by origin, a rate
//! limit holds its rate, and a destination that hangs leaves the others their latency.

use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::receiver::{Receiver, Reply, commit_to_receipt};
use workflow_tests::{dispatch_cluster, dispatcher_pid, eventually, unique};

const DEADLINE: Duration = Duration::from_secs(60);

/// The tests share the dispatcher's slots, which each measures: one at a time.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

async fn setup() -> (Client, Receiver, tokio::sync::MutexGuard<'static, ()>) {
    let turn = ONE_AT_A_TIME.lock().await;
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await, turn)
}

/// Enqueues `n` messages to `target` in one transaction; returns their ids.
async fn enqueue_many(client: &Client, target: &str, n: i32) -> Vec<i64> {
    client
        .query(
            "SELECT wf_enqueue($1, jsonb_build_object('n', i)) FROM generate_series(1, $2) i",
            &[&target, &n],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Waits until every message of `ids` is delivered; returns their attempt counts.
async fn all_delivered(client: &Client, ids: &[i64], deadline: Duration) -> Vec<i32> {
    eventually("every message to be delivered", deadline, || async {
        let rows = client
            .query(
                "SELECT status, attempts FROM workflow.messages WHERE id = ANY ($1) ORDER BY id",
                &[&ids],
            )
            .await
            .unwrap();
        rows.iter()
            .all(|row| row.get::<_, String>(0) == "delivered")
            .then(|| rows.iter().map(|row| row.get(1)).collect())
    })
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_limited_to_three_never_has_more_than_three_in_flight() {
    let (client, receiver, _turn) = setup().await;
    let endpoint = unique("three");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, max_concurrency => 3)",
            &[&endpoint, &receiver.url("/three")],
        )
        .await
        .unwrap();
    receiver.always("/three", Reply::After(Duration::from_millis(150), 200));
    let ids = enqueue_many(&client, &endpoint, 30).await;

    let attempts = all_delivered(&client, &ids, DEADLINE).await;
    assert_eq!(
        receiver.max_in_flight("/three"),
        3,
        "the limit, and all of it"
    );
    assert_eq!(receiver.received("/three").len(), 30, "each message once");
    assert!(
        attempts.iter().all(|a| *a == 1),
        "waiting for the limit is no attempt: {attempts:?}"
    );
    let parked: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.messages WHERE id = ANY ($1) AND parked IS NOT NULL",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, 0, "nothing is left parked");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn url_targets_share_the_per_destination_limit_by_origin() {
    let (client, receiver, _turn) = setup().await;
    receiver.always("/shared", Reply::After(Duration::from_millis(300), 200));
    // Two URLs of one origin (the receiver counts them together: one path).
    let mut ids = enqueue_many(&client, &receiver.url("/shared"), 25).await;
    ids.extend(enqueue_many(&client, &receiver.url("/shared?other=1"), 25).await);

    let attempts = all_delivered(&client, &ids, DEADLINE).await;
    assert_eq!(
        receiver.max_in_flight("/shared"),
        16,
        "workflow.max_concurrency_per_destination for the origin, not for each URL"
    );
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
    let origin: String = client
        .query_one(
            "SELECT DISTINCT origin FROM workflow.outbox WHERE id = ANY ($1)",
            &[&ids],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(origin, receiver.url(""));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_of_twenty_a_second_is_twenty_a_second_over_a_hundred_messages() {
    let (client, receiver, _turn) = setup().await;
    let endpoint = unique("paced");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, rate_per_second => 20)",
            &[&endpoint, &receiver.url("/paced")],
        )
        .await
        .unwrap();
    let ids = enqueue_many(&client, &endpoint, 100).await;

    let received = receiver
        .wait_for("/paced", 100, Duration::from_secs(30))
        .await;
    let span = received[99].at - received[0].at;
    // The first two go at once (the burst, a tenth of a second's worth), then one every 50 ms.
    let rate = 99.0 / span.as_secs_f64();
    assert!(
        (18.0..=22.0).contains(&rate),
        "{rate:.2} a second over {span:?}"
    );
    let attempts = all_delivered(&client, &ids, DEADLINE).await;
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_hanging_endpoint_with_a_backlog_leaves_a_healthy_one_its_latency() {
    let (client, receiver, _turn) = setup().await;
    let before = latencies(&client, &receiver, "/healthy-before", 20).await;

    // Every request to it hangs until the request timeout (1 s in these clusters).
    let hanging = unique("hanging");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&hanging, &receiver.url("/hang")],
        )
        .await
        .unwrap();
    receiver.always("/hang", Reply::After(Duration::from_secs(30), 200));
    let backlog = enqueue_many(&client, &hanging, 1000).await;
    receiver.wait_for("/hang", 16, DEADLINE).await;

    let during = latencies(&client, &receiver, "/healthy-during", 40).await;
    let hang_in_flight = receiver.max_in_flight("/hang");
    client
        .execute(
            "UPDATE workflow.endpoint_settings SET disabled_at = now() WHERE name = $1",
            &[&hanging],
        )
        .await
        .unwrap();

    assert!(hang_in_flight <= 16, "{hang_in_flight}");
    let (p50, p90) = (percentile(&during, 0.5), percentile(&during, 0.9));
    assert!(
        p90 <= Duration::from_millis(200).max(percentile(&before, 0.9) * 4),
        "commit to receipt beside the hanging endpoint: p50 {p50:?}, p90 {p90:?}; without it p90 {:?}",
        percentile(&before, 0.9)
    );
    let delivered: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.messages WHERE id = ANY ($1) AND status = 'delivered'",
            &[&backlog],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(delivered, 0, "the hanging endpoint never answered in time");
}

/// Commit-to-receipt times of `n` messages to `path`, one after another.
async fn latencies(client: &Client, receiver: &Receiver, path: &str, n: usize) -> Vec<Duration> {
    let mut times = Vec::with_capacity(n);
    for arrival in 0..n {
        times.push(commit_to_receipt(client, receiver, path, arrival, DEADLINE).await);
    }
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

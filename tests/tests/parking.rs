//! Blocked messages are parked out of the due path and come back when unblocked — also
//! when what unblocks them is an application's transaction whose snapshot predates the
//! park, and when an application holds the next message locked at that moment.

use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{
    assert_invariants, dispatch_cluster, dispatcher_pid, eventually, message_reaches, unique,
};

const DEADLINE: Duration = Duration::from_secs(60);

async fn setup() -> (Client, Receiver) {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await)
}

async fn enqueue_keyed(client: &Client, url: &str, key: &str, n: i32, delay: &str) -> i64 {
    client
        .query_one(
            "SELECT wf_enqueue($1, jsonb_build_object('n', $3::int), ordering_key => $2,
                               deliver_at => now() + $4::text::interval)",
            &[&url, &key, &n, &delay],
        )
        .await
        .unwrap()
        .get(0)
}

/// Through the view an operator reads.
async fn parked_count(client: &Client, ids: &[i64], reason: &str) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM workflow.messages WHERE id = ANY ($1) AND parked = $2",
            &[&ids, &reason],
        )
        .await
        .unwrap()
        .get(0)
}

async fn until_parked(client: &Client, ids: &[i64], reason: &str) {
    eventually(
        &format!("{} messages parked behind their {reason}", ids.len()),
        DEADLINE,
        || async { (parked_count(client, ids, reason).await == ids.len() as i64).then_some(()) },
    )
    .await;
}

/// A named endpoint for the receiver's `/<name>`, disabled by hand (as a 410 would);
/// returns its name and path.
async fn disabled_endpoint(client: &Client, receiver: &Receiver, prefix: &str) -> (String, String) {
    let endpoint = unique(prefix);
    let path = format!("/{endpoint}");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    client
        .execute(
            "UPDATE workflow.endpoint_settings SET disabled_at = now(), disabled_reason = 'test' WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    (endpoint, path)
}

fn numbers(received: &[workflow_tests::receiver::Received]) -> Vec<i64> {
    received
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_disabled_endpoints_backlog_is_parked_while_others_flow_and_all_of_it_goes_out_on_enable()
{
    let (client, receiver) = setup().await;
    let (endpoint, path) = disabled_endpoint(&client, &receiver, "parked").await;
    let ids: Vec<i64> = client
        .query(
            "SELECT wf_enqueue($1, jsonb_build_object('n', n)) FROM generate_series(1, 1500) n",
            &[&endpoint],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    until_parked(&client, &ids, "endpoint").await;

    // Parked, the backlog is out of every claim's way.
    let free = format!("/{}", unique("free"));
    workflow_tests::enqueue(&client, &receiver.url(&free)).await;
    receiver.wait_for(&free, 1, DEADLINE).await;
    assert!(receiver.received(&path).is_empty());

    // More than one round's worth: the flag lets them go a batch a round, each once.
    client
        .execute("SELECT wf_endpoint_enable($1)", &[&endpoint])
        .await
        .unwrap();
    let received = receiver.wait_for(&path, ids.len(), DEADLINE).await;
    let mut seen = numbers(&received);
    seen.sort();
    assert_eq!(seen, (1..=1500).collect::<Vec<_>>(), "each message once");
    eventually("every message recorded delivered", DEADLINE, || async {
        let left: i64 = client
            .query_one(
                "SELECT count(*) FROM workflow.outbox WHERE id = ANY ($1) AND status <> 'delivered'",
                &[&ids],
            )
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    let flag: Option<bool> = client
        .query_one(
            "SELECT unpark_messages FROM workflow.endpoint_settings WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        flag, None,
        "the endpoint's flag is cleared once its messages are out"
    );
    assert_invariants(&client).await;
}

/// The head of a key is cancelled by a REPEATABLE READ transaction whose snapshot was
/// taken before the dispatcher parked the messages behind it: it cannot see them parked,
/// yet they go out, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_from_a_snapshot_older_than_the_park_still_frees_the_key() {
    let (client, receiver) = setup().await;
    let key = unique("key");
    let path = format!("/{key}");
    let url = receiver.url(&path);
    let head = enqueue_keyed(&client, &url, &key, 0, "1 hour").await;
    let mut next = Vec::new();
    for n in 1..=3 {
        next.push(enqueue_keyed(&client, &url, &key, n, "2 seconds").await);
    }

    let app = dispatch_cluster().connect().await;
    app.batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    let seen: i64 = app
        .query_one(
            "SELECT count(*) FROM workflow.messages WHERE ordering_key = $1",
            &[&key],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(seen, 4, "the snapshot is taken");
    until_parked(&client, &next, "ordering_key").await;
    app.execute("SELECT wf_cancel_message($1)", &[&head])
        .await
        .unwrap();
    app.batch_execute("COMMIT").await.unwrap();

    let received = receiver.wait_for(&path, 3, DEADLINE).await;
    assert_eq!(numbers(&received), [1, 2, 3]);
    for id in next {
        message_reaches(&client, id, "delivered", DEADLINE).await;
    }
    assert_invariants(&client).await;
}

/// The same for an endpoint enabled from a snapshot older than the park.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_enable_from_a_snapshot_older_than_the_park_still_frees_the_endpoint() {
    let (client, receiver) = setup().await;
    let (endpoint, path) = disabled_endpoint(&client, &receiver, "late").await;
    let id: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', deliver_at => now() + interval '2 seconds')",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);

    let owner = dispatch_cluster().connect().await;
    owner
        .batch_execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        .await
        .unwrap();
    owner
        .query_one("SELECT count(*) FROM workflow.outbox", &[])
        .await
        .unwrap();
    until_parked(&client, &[id], "endpoint").await;
    owner
        .execute("SELECT wf_endpoint_enable($1)", &[&endpoint])
        .await
        .unwrap();
    owner.batch_execute("COMMIT").await.unwrap();

    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert_eq!(receiver.received(&path).len(), 1);
}

/// When the key's head is delivered, the next message is held locked by an application
/// (a cancel it then rolls back): the dispatcher does not wait for it, keeps its flag, and
/// frees the message once the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_next_message_locked_by_an_application_is_freed_after_its_rollback() {
    let (client, receiver) = setup().await;
    let key = unique("locked");
    let slow = format!("/{key}-head");
    let fast = format!("/{key}-next");
    receiver.script(&slow, [Reply::After(Duration::from_secs(2), 200)]);
    let head = enqueue_keyed(&client, &receiver.url(&slow), &key, 0, "0 seconds").await;
    let next = enqueue_keyed(&client, &receiver.url(&fast), &key, 1, "0 seconds").await;
    until_parked(&client, &[next], "ordering_key").await;

    let app = dispatch_cluster().connect().await;
    app.batch_execute("BEGIN").await.unwrap();
    app.execute("SELECT wf_cancel_message($1)", &[&next])
        .await
        .unwrap();
    // The round that records the head's delivery tries the flag in the same transaction,
    // so once the delivery shows, the flag has met the lock.
    message_reaches(&client, head, "delivered", DEADLINE).await;
    assert!(receiver.received(&fast).is_empty());
    let flag: Option<bool> = client
        .query_one(
            "SELECT unpark_successor FROM workflow.outbox WHERE id = $1",
            &[&head],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(flag, Some(true), "the flag waits for the lock");
    app.batch_execute("ROLLBACK").await.unwrap();

    message_reaches(&client, next, "delivered", DEADLINE).await;
    assert_eq!(receiver.received(&fast).len(), 1);
    assert_invariants(&client).await;
}

/// A message enqueued while its destination has messages parked at its limit is parked
/// with them. Here the enqueue's snapshot (REPEATABLE READ) predates the delivery of the
/// last of them, after which the dispatcher no longer tracks the destination: the commit
/// itself must tell the dispatcher to look, or the message would wait for its restart.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_parked_by_an_enqueue_from_an_old_snapshot_still_goes_out() {
    let (client, receiver) = setup().await;
    let endpoint = unique("old-snapshot-park");
    let path = format!("/{endpoint}");
    receiver.always(&path, Reply::After(Duration::from_millis(20), 200));
    client
        .execute(
            "SELECT wf_endpoint($1, $2, max_concurrency => 1)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    // One transaction beyond the endpoint's room: all but the first few are parked as
    // they are inserted.
    let flood: Vec<i64> = client
        .query(
            "SELECT wf_enqueue($1, jsonb_build_object('n', n)) FROM generate_series(1, 10) n",
            &[&endpoint],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let parked = parked_count(&client, &flood, "limit").await;
    assert!(parked > 0, "a flood in one transaction parks itself");

    let mut late = dispatch_cluster().connect().await;
    let old = late
        .build_transaction()
        .isolation_level(tokio_postgres::IsolationLevel::RepeatableRead)
        .start()
        .await
        .unwrap();
    let seen: i64 = old
        .query_one(
            "SELECT count(*) FROM workflow.outbox WHERE endpoint = $1 AND parked = 'limit'",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    assert!(seen > 0);
    receiver.wait_for(&path, flood.len(), DEADLINE).await;
    eventually("nothing parked for the endpoint", DEADLINE, || async {
        (parked_count(&client, &flood, "limit").await == 0).then_some(())
    })
    .await;

    let id: i64 = old
        .query_one(
            "SELECT wf_enqueue($1, jsonb_build_object('n', 11))",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    let parked: Option<String> = old
        .query_one(
            "SELECT parked::text FROM workflow.outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        parked.as_deref(),
        Some("limit"),
        "the old snapshot saw parked messages, so the enqueue parked"
    );
    old.commit().await.unwrap();
    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert_invariants(&client).await;
}

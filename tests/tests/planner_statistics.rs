//! The dispatcher keeps the outbox's planner statistics current while a burst fills it, so
//! plans made while the table was empty do not meet the backlog. Autovacuum is off here:
//! what refreshes the statistics can only be the dispatcher.

use std::time::{Duration, SystemTime};
use tokio_postgres::Client;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, DISPATCHER_SETTINGS, dispatcher_pid, message_reaches, unique};

const DEADLINE: Duration = Duration::from_secs(30);
const BURST: i32 = 5_000;

/// The idle state: a running dispatcher, statistics that say the outbox is empty, and
/// autovacuum off, so that only the dispatcher can refresh them.
async fn idle_cluster() -> (Cluster, Client, Receiver) {
    let mut settings = DISPATCHER_SETTINGS.to_vec();
    settings.push("autovacuum = off");
    let cluster = Cluster::start(&settings);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    client
        .batch_execute("VACUUM ANALYZE workflow.outbox")
        .await
        .unwrap();
    (cluster, client, Receiver::start().await)
}

/// The burst, due tomorrow so that sending does not change the table under the test.
async fn enqueue_burst(client: &Client, receiver: &Receiver) {
    client
        .execute(
            "SELECT wf_enqueue($1, jsonb_build_object('n', n), deliver_at => now() + interval '1 day')
               FROM generate_series(1, $2) n",
            &[&receiver.url("/burst"), &BURST],
        )
        .await
        .unwrap();
}

/// Waits until the outbox's statistics count (nearly) the whole burst.
async fn burst_analyzed(client: &Client, what: &str) {
    workflow_tests::until_true(
        client,
        what,
        "SELECT reltuples >= $1 FROM pg_class WHERE oid = 'workflow.outbox'::regclass",
        &[&(BURST as f32 * 0.9)],
        DEADLINE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_into_an_empty_outbox_is_analyzed_by_the_dispatcher() {
    let (_cluster, client, receiver) = idle_cluster().await;
    let first: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}')",
            &[&receiver.url(&format!("/{}", unique("first")))],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, first, "delivered", DEADLINE).await;
    let described: f32 = client
        .query_one(
            "SELECT reltuples FROM pg_class WHERE oid = 'workflow.outbox'::regclass",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(described <= 1.0, "the outbox starts out described as empty");

    enqueue_burst(&client, &receiver).await;
    burst_analyzed(&client, "the dispatcher analyzes the outbox").await;
}

/// An ANALYZE while a large transaction is still enqueueing records its pages and none of
/// its rows; after the commit the page count matches, and only the live rows the commit
/// reported show that the statistics are wrong.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_analyzed_before_its_commit_is_analyzed_again_after() {
    let (cluster, client, receiver) = idle_cluster().await;
    let observer = cluster.connect().await;

    client.batch_execute("BEGIN").await.unwrap();
    enqueue_burst(&client, &receiver).await;
    workflow_tests::until_true(
        &observer,
        "the dispatcher analyzes the outbox while the burst is uncommitted",
        "SELECT relpages > 8 AND reltuples = 0 FROM pg_class WHERE oid = 'workflow.outbox'::regclass",
        &[],
        DEADLINE,
    )
    .await;
    client.batch_execute("COMMIT").await.unwrap();
    burst_analyzed(
        &observer,
        "the dispatcher analyzes the outbox again once the burst committed",
    )
    .await;
}

/// A burst is sent before it is analyzed: the first rounds after it have no outcomes to
/// record, so they claim at once and leave the ANALYZE (13 ms for 10,000 messages) to the
/// first round that records, or that sends nothing. Messages enqueued just after the
/// burst no longer wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_is_sent_before_the_dispatcher_analyzes_it() {
    let (_cluster, client, receiver) = idle_cluster().await;
    let path = format!("/{}", unique("burst-now"));
    receiver.always(&path, Reply::After(Duration::from_millis(300), 200));
    client
        .execute(
            "SELECT wf_enqueue($1, jsonb_build_object('n', n)) FROM generate_series(1, $2) n",
            &[&receiver.url(&path), &BURST],
        )
        .await
        .unwrap();
    burst_analyzed(&client, "the dispatcher analyzes the outbox").await;
    workflow_tests::until_true(
        &client,
        "the first attempts to be recorded",
        "SELECT EXISTS (SELECT FROM workflow.outbox WHERE last_started_at IS NOT NULL)",
        &[],
        DEADLINE,
    )
    .await;
    let row = client
        .query_one(
            "SELECT (SELECT min(last_started_at) FROM workflow.outbox),
                    (SELECT last_analyze FROM pg_stat_user_tables
                      WHERE relid = 'workflow.outbox'::regclass)",
            &[],
        )
        .await
        .unwrap();
    let first_sent: Option<SystemTime> = row.get(0);
    let analyzed: Option<SystemTime> = row.get(1);
    let (first_sent, analyzed) = (first_sent.expect("sent"), analyzed.expect("analyzed"));
    assert!(
        first_sent < analyzed,
        "the first request started at {first_sent:?}, after the ANALYZE at {analyzed:?}"
    );
}

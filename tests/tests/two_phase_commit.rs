//! Two-phase commit: a transaction that makes a workflow ready — by signalling its wait, by
//! starting it under a push handler, or by sleeping it until a time already past — can be
//! prepared (`PREPARE TRANSACTION`; a prepared transaction cannot `NOTIFY`, and 0.2.0 failed
//! with 0A000), and once `COMMIT PREPARED` makes it ready the dispatcher announces it on
//! `workflow_ready` and pushes what has a handler.

use std::time::{Duration, Instant};
use tokio_postgres::Client;
use uuid::Uuid;
use workflow_tests::listener::Listener;
use workflow_tests::receiver::Receiver;
use workflow_tests::{dispatch_cluster_with, dispatcher_pid, sqlstate, unique};

const DEADLINE: Duration = Duration::from_secs(20);
const CHANNEL: &str = "workflow_ready";
/// The dispatcher announces what a prepared transaction made ready within its poll
/// interval (10 s in `DISPATCHER_SETTINGS`), with 5 s to spare.
const ANNOUNCED_WITHIN: Duration = Duration::from_secs(15);

fn cluster() -> &'static workflow_tests::Cluster {
    dispatch_cluster_with(&["max_prepared_transactions = 10"])
}

async fn setup() -> (Client, Listener) {
    let client = cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let listener = Listener::start(&cluster().conninfo(), &[CHANNEL]).await;
    (client, listener)
}

async fn start(client: &Client, name: &str, owner: &str) -> Uuid {
    client
        .query_one("SELECT wf_start($1, owner => $2)", &[&name, &owner])
        .await
        .unwrap()
        .get(0)
}

async fn claim(client: &Client, name: &str, owner: &str) -> Vec<Uuid> {
    client
        .query("SELECT wf_claim($1, $2, max => 10)", &[&name, &owner])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Prepares the transaction open in `client` and commits it with `COMMIT PREPARED`; then
/// waits to hear `name` on `workflow_ready`.
/// Prepares the open transaction of `client` (a failure names its SQLSTATE: 0A000 was
/// 0.2.0's), runs `meanwhile`, and commits it.
async fn prepare_and_commit<F, Fut>(client: &Client, meanwhile: F)
where
    F: FnOnce() -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let gid = unique("gid");
    client
        .batch_execute(&format!("PREPARE TRANSACTION '{gid}'"))
        .await
        .unwrap_or_else(|e| panic!("PREPARE TRANSACTION failed with {}: {e}", sqlstate(&e)));
    meanwhile().await;
    client
        .batch_execute(&format!("COMMIT PREPARED '{gid}'"))
        .await
        .expect("COMMIT PREPARED");
}

async fn prepare_commit_and_hear(client: &Client, listener: &mut Listener, name: &str) {
    prepare_wait_commit_and_hear(client, listener, name, None).await;
}

/// As `prepare_commit_and_hear`, with the transaction left prepared for a while before its
/// `COMMIT PREPARED`, when `prepared` gives how long; then a marker sent through its other
/// connection shows that nobody was told of `name` meanwhile.
async fn prepare_wait_commit_and_hear(
    client: &Client,
    listener: &mut Listener,
    name: &str,
    prepared: Option<(Duration, &Client)>,
) {
    prepare_and_commit(client, || async {
        if let Some((prepared_for, other)) = prepared {
            tokio::time::sleep(prepared_for).await;
            listener.assert_nothing_for(other, CHANNEL, name).await;
        }
    })
    .await;
    let committed = Instant::now();
    listener.until(name, ANNOUNCED_WITHIN).await;
    eprintln!(
        "{name}: announced {:?} after COMMIT PREPARED",
        committed.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_signal_to_a_waiting_workflow_commits_and_is_announced() {
    let (client, mut listener) = setup().await;
    let name = unique("prepared-signal");
    let id = start(&client, &name, "a").await;
    let parked: Option<serde_json::Value> = client
        .query_one(
            "SELECT wf_wait($1, 'approval', 'approved', owner => 'a')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, None, "the workflow waits");

    let sender = cluster().connect().await;
    sender.batch_execute("BEGIN").await.unwrap();
    sender
        .execute(
            "SELECT wf_signal($1, 'approved', '{\"by\": \"ops\"}')",
            &[&id],
        )
        .await
        .unwrap();
    prepare_commit_and_hear(&sender, &mut listener, &name).await;

    assert_eq!(claim(&client, &name, "b").await, [id]);
    let approval: serde_json::Value = client
        .query_one(
            "SELECT wf_wait($1, 'approval', 'approved', owner => 'b')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(approval["payload"]["by"], "ops", "{approval}");
    assert_eq!(approval["timed_out"], false);
}

/// A signal whose transaction stays prepared for 2 s: the dispatcher, woken by the
/// PREPARE, has looked while the transaction was prepared and not yet committed, and found
/// nothing ready. A dispatcher that forgot the prepared transaction after that look would
/// never announce what its COMMIT PREPARED made ready (it sends no notification of its
/// own, and the run's readiness dates from before the look); one that watches it until it
/// ends announces it at the next look, within a poll interval.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_signal_committed_long_after_its_prepare_is_announced() {
    let (client, mut listener) = setup().await;
    let name = unique("prepared-long");
    let id = start(&client, &name, "a").await;
    let parked: Option<serde_json::Value> = client
        .query_one(
            "SELECT wf_wait($1, 'approval', 'approved', owner => 'a')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(parked, None, "the workflow waits");

    let sender = cluster().connect().await;
    sender.batch_execute("BEGIN").await.unwrap();
    sender
        .execute(
            "SELECT wf_signal($1, 'approved', '{\"by\": \"ops\"}')",
            &[&id],
        )
        .await
        .unwrap();
    let prepared = (Duration::from_secs(2), &client);
    prepare_wait_commit_and_hear(&sender, &mut listener, &name, Some(prepared)).await;

    assert_eq!(claim(&client, &name, "b").await, [id]);
    let approval: serde_json::Value = client
        .query_one(
            "SELECT wf_wait($1, 'approval', 'approved', owner => 'b')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(approval["payload"]["by"], "ops", "{approval}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_start_of_a_pushed_workflow_commits_and_its_handler_gets_the_push() {
    let (client, _listener) = setup().await;
    let receiver = Receiver::start().await;
    let name = unique("prepared-push");
    let path = format!("/{name}");
    let endpoint = unique("handler");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, 'generate')",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    client
        .execute("SELECT wf_handler($1, $2)", &[&name, &endpoint])
        .await
        .unwrap();

    let starter = cluster().connect().await;
    starter.batch_execute("BEGIN").await.unwrap();
    let id: Uuid = starter
        .query_one("SELECT wf_start($1, '{\"amount\": 25}')", &[&name])
        .await
        .unwrap()
        .get(0);
    // The push is how a pushed workflow is told: the dispatcher may push it before its
    // look announces it, and a pushed workflow is leased, so no NOTIFY is owed after that.
    prepare_and_commit(&starter, || async {}).await;

    let push = receiver.wait_for(&path, 1, ANNOUNCED_WITHIN).await[0].clone();
    let body: serde_json::Value = serde_json::from_slice(&push.body).expect("a JSON push");
    assert_eq!(body["type"], "workflow.ready");
    assert_eq!(body["workflow"], id.to_string());
    assert_eq!(body["input"], serde_json::json!({"amount": 25}));
    let owner = body["owner"].as_str().expect("the push names its owner");
    client
        .execute("SELECT wf_complete($1, NULL, $2)", &[&id, &owner])
        .await
        .expect("the pushed owner holds the lease");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_sleep_until_a_past_time_commits_and_is_announced() {
    let (client, mut listener) = setup().await;
    let name = unique("prepared-sleep");
    let id = start(&client, &name, "a").await;

    let worker = cluster().connect().await;
    worker.batch_execute("BEGIN").await.unwrap();
    worker
        .execute(
            "SELECT wf_sleep($1, 'nap', now() - interval '1 second', 'a')",
            &[&id],
        )
        .await
        .unwrap();
    prepare_commit_and_hear(&worker, &mut listener, &name).await;

    assert_eq!(claim(&client, &name, "b").await, [id]);
    let row = client
        .query_one(
            "SELECT recovery_attempts, wf_step($1, 'nap') IS NOT NULL FROM wf_status($1)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i32>(0), row.get::<_, bool>(1)),
        (0, true),
        "(recovery attempts, sleep recorded): the end of a sleep is no recovery"
    );
}

/// A prepared transaction's flood to one endpoint, parked as it is enqueued beyond the
/// endpoint's room: its `COMMIT PREPARED` counts nothing in the dispatcher's slot, and the
/// destination has nothing the dispatcher parked itself. Its look for parked messages each
/// poll interval lets them go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prepared_flood_parked_as_it_was_enqueued_is_delivered() {
    let (client, _listener) = setup().await;
    let receiver = Receiver::start().await;
    let endpoint = unique("prepared-flood");
    let path = format!("/{endpoint}");
    receiver.always(&path, workflow_tests::receiver::Reply::Status(200));
    client
        .execute(
            "SELECT wf_endpoint($1, $2, max_concurrency => 1)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT wf_enqueue($1, jsonb_build_object('n', n)) FROM generate_series(1, 20) n",
            &[&endpoint],
        )
        .await
        .unwrap();
    prepare_and_commit(&client, || async {}).await;
    receiver
        .wait_for(&path, 20, ANNOUNCED_WITHIN + Duration::from_secs(15))
        .await;
}

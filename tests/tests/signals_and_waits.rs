//! Signals and waits between real sessions, and `LISTEN workflow_ready`: a workflow that
//! waits holds no lease, the event makes it ready, and a listener hears of it after the
//! commit that made it ready — or from the dispatcher when time alone did — and never of
//! a rollback, a savepoint's included. A signal that comes after a wait's deadline does
//! not win over the timeout, and a child that finishes (after a last checkpoint in the
//! same transaction, or without one) while its parent is cancelled never deadlocks with
//! the cancel.

use std::sync::Arc;
use std::time::Duration;
use tokio::sync::Barrier;
use tokio_postgres::Client;
use workflow_tests::listener::Listener;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{dispatch_cluster, eventually, sqlstate, unique, until_true};

const DEADLINE: Duration = Duration::from_secs(20);
const CHANNEL: &str = "workflow_ready";

async fn setup() -> (Client, Listener) {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let listener = Listener::start(&cluster.conninfo(), &[CHANNEL]).await;
    (client, listener)
}

async fn start(client: &Client, name: &str, owner: &str) -> uuid::Uuid {
    client
        .query_one("SELECT wf_start($1, owner => $2)", &[&name, &owner])
        .await
        .unwrap()
        .get(0)
}

/// `wf_wait` for a signal as `owner`; its output, NULL while it waits.
async fn wait(
    client: &Client,
    id: uuid::Uuid,
    step: &str,
    signal: &str,
    owner: &str,
) -> Option<serde_json::Value> {
    client
        .query_one(
            "SELECT wf_wait($1, $2, $3, owner => $4)",
            &[&id, &step, &signal, &owner],
        )
        .await
        .unwrap()
        .get(0)
}

/// Waits to be told that a workflow of `name` is ready, and claims it for `owner`. A
/// notification may be older than the readiness the caller waits for (the dispatcher also
/// announces what it finds after a start), so an empty claim waits for the next one.
async fn claim_when_told(
    listener: &mut Listener,
    client: &Client,
    name: &str,
    owner: &str,
) -> uuid::Uuid {
    let end = std::time::Instant::now() + DEADLINE;
    loop {
        listener
            .until(
                name,
                end.saturating_duration_since(std::time::Instant::now()),
            )
            .await;
        if let [id] = claim(client, name, owner).await[..] {
            return id;
        }
    }
}

async fn claim(client: &Client, name: &str, owner: &str) -> Vec<uuid::Uuid> {
    client
        .query("SELECT wf_claim($1, $2, max => 10)", &[&name, &owner])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_before_the_wait_is_consumed_by_it_and_one_after_wakes_the_workflow() {
    let (client, mut listener) = setup().await;
    let name = unique("payment");
    let id = start(&client, &name, "a").await;
    client
        .execute("SELECT wf_signal($1, 'paid', '{\"n\": 1}')", &[&id])
        .await
        .unwrap();
    let first = wait(&client, id, "paid-1", "paid", "a").await.unwrap();
    assert_eq!(first["payload"]["n"], 1, "queued before the wait: {first}");
    assert_eq!(wait(&client, id, "paid-2", "paid", "a").await, None);
    assert_eq!(
        claim(&client, &name, "b").await,
        Vec::<uuid::Uuid>::new(),
        "a parked wait is not ready"
    );

    let sender = dispatch_cluster().connect().await;
    sender
        .execute("SELECT wf_signal($1, 'paid', '{\"n\": 2}')", &[&id])
        .await
        .unwrap();
    assert_eq!(
        claim_when_told(&mut listener, &client, &name, "b").await,
        id
    );
    let second = wait(&client, id, "paid-2", "paid", "b").await.unwrap();
    assert_eq!(second["payload"]["n"], 2, "{second}");
    assert_eq!(second["timed_out"], false);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rolled_back_signal_is_not_queued_and_nobody_is_told() {
    let (client, mut listener) = setup().await;
    let name = unique("approval");
    let id = start(&client, &name, "a").await;
    assert_eq!(wait(&client, id, "approved", "approved", "a").await, None);

    let sender = dispatch_cluster().connect().await;
    sender.batch_execute("BEGIN").await.unwrap();
    sender
        .execute("SELECT wf_signal($1, 'approved')", &[&id])
        .await
        .unwrap();
    // Not before the commit...
    listener.assert_nothing_for(&client, CHANNEL, &name).await;
    sender.batch_execute("ROLLBACK").await.unwrap();
    // ...and not for a rollback.
    listener.assert_nothing_for(&client, CHANNEL, &name).await;
    let queued: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.signals WHERE workflow_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 0);
    assert_eq!(claim(&client, &name, "b").await, Vec::<uuid::Uuid>::new());
}

/// The signals queued by `id`'s workflow, consumed or not.
async fn queued(client: &Client, id: uuid::Uuid) -> i64 {
    client
        .query_one(
            "SELECT count(*) FROM workflow.signals WHERE workflow_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0)
}

/// Notifications follow savepoints as the rest of the transaction does: a signal in a
/// savepoint rolled back is taken back with it, while the transaction's other signal still
/// tells its listeners at commit; a signal in a released savepoint is told at the outer
/// commit, and never if the outer transaction rolls back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_savepoint_rolled_back_takes_its_notification_back() {
    let (client, mut listener) = setup().await;
    let name = unique("approval");
    let other = unique("other-approval");
    let id = start(&client, &name, "a").await;
    assert_eq!(wait(&client, id, "approved", "approved", "a").await, None);
    let witness = start(&client, &other, "a").await;
    assert_eq!(
        wait(&client, witness, "approved", "approved", "a").await,
        None
    );
    let sender = dispatch_cluster().connect().await;
    let signal = "SELECT wf_signal($1, 'approved')";

    // A savepoint rolled back, in a transaction that commits.
    sender.batch_execute("BEGIN").await.unwrap();
    sender.execute(signal, &[&witness]).await.unwrap();
    sender.batch_execute("SAVEPOINT s").await.unwrap();
    sender.execute(signal, &[&id]).await.unwrap();
    sender
        .batch_execute("ROLLBACK TO SAVEPOINT s; COMMIT")
        .await
        .unwrap();
    let (_, before) = listener.until(&other, DEADLINE).await;
    assert!(
        before.iter().all(|heard| heard.payload != name),
        "notified {name:?} for a signal its savepoint took back: {before:?}"
    );
    listener.assert_nothing_for(&client, CHANNEL, &name).await;
    assert_eq!(
        queued(&client, id).await,
        0,
        "the signal of the savepoint rolled back is not queued"
    );
    assert_eq!(queued(&client, witness).await, 1, "the other signal is");

    // A savepoint released, in a transaction that rolls back.
    sender.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    sender.execute(signal, &[&id]).await.unwrap();
    sender
        .batch_execute("RELEASE SAVEPOINT s; ROLLBACK")
        .await
        .unwrap();
    listener.assert_nothing_for(&client, CHANNEL, &name).await;
    assert_eq!(queued(&client, id).await, 0, "the rolled-back signal");
    assert_eq!(
        claim(&client, &name, "b").await,
        Vec::<uuid::Uuid>::new(),
        "the workflow still waits"
    );

    // A savepoint released, in a transaction that commits: told at the outer commit.
    sender.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    sender.execute(signal, &[&id]).await.unwrap();
    sender.batch_execute("RELEASE SAVEPOINT s").await.unwrap();
    listener.assert_nothing_for(&client, CHANNEL, &name).await;
    sender.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        claim_when_told(&mut listener, &client, &name, "b").await,
        id
    );
    let approval = wait(&client, id, "approved", "approved", "b")
        .await
        .unwrap();
    assert_eq!(approval["timed_out"], false, "{approval}");
}

/// Two senders of one signal: the second queues behind the first's lock on the workflow,
/// so the queue's order is the order of their commits.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_of_one_name_are_consumed_in_commit_order_and_a_key_sends_once() {
    let (client, _listener) = setup().await;
    let name = unique("order");
    let id = start(&client, &name, "a").await;
    let first = dispatch_cluster().connect().await;
    first.batch_execute("BEGIN").await.unwrap();
    first
        .execute("SELECT wf_signal($1, 'item', '1', 'item-1')", &[&id])
        .await
        .unwrap();
    let second = tokio::spawn(async move {
        let second = dispatch_cluster().connect().await;
        second
            .execute("SELECT wf_signal($1, 'item', '2', 'item-2')", &[&id])
            .await
            .unwrap();
    });
    until_true(
        &client,
        "the second sender to wait for the first",
        "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE '%item-2%')",
        &[],
        DEADLINE,
    )
    .await;
    first.batch_execute("COMMIT").await.unwrap();
    second.await.unwrap();
    // The same key again sends nothing.
    client
        .execute("SELECT wf_signal($1, 'item', '1', 'item-1')", &[&id])
        .await
        .unwrap();
    let mut payloads = Vec::new();
    for step in ["first", "second", "third"] {
        let got = wait(&client, id, step, "item", "a").await;
        payloads.push(got.map(|g| g["payload"].clone()));
    }
    assert_eq!(
        payloads,
        vec![Some(serde_json::json!(1)), Some(serde_json::json!(2)), None]
    );
}

/// A wait's timeout makes the workflow ready with time alone: the dispatcher tells the
/// listeners, and the wait records the timeout, also on replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_that_times_out_is_announced_by_the_dispatcher_and_records_the_timeout() {
    let (client, mut listener) = setup().await;
    let name = unique("confirmation");
    let id = start(&client, &name, "a").await;
    let waited: Option<serde_json::Value> = client
        .query_one(
            "SELECT wf_wait($1, 'confirmed', 'payment.confirmed', '300 milliseconds', 'a')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waited, None);
    // The poll interval of this cluster is 10 s: only the timer can explain a quick notice.
    let heard = listener.until(&name, Duration::from_secs(5)).await.0;
    assert_eq!(heard.channel, CHANNEL);
    assert_eq!(claim(&client, &name, "b").await, vec![id]);
    for _ in 0..2 {
        let timed_out = wait(&client, id, "confirmed", "payment.confirmed", "b")
            .await
            .unwrap();
        assert_eq!(timed_out, serde_json::json!({"timed_out": true}));
    }
}

/// Each kind of readiness reaches a listener: a sleep that ends and a lease that runs out
/// (both announced by the dispatcher), a durable step's answer (by the dispatcher's
/// outcome transaction), and a child's finish to a parent waiting for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_hears_every_kind_of_readiness() {
    let (client, mut listener) = setup().await;

    let sleeper = unique("sleeper");
    let id = start(&client, &sleeper, "a").await;
    client
        .execute(
            "SELECT wf_sleep($1, 'nap', clock_timestamp() + interval '200 milliseconds', 'a')",
            &[&id],
        )
        .await
        .unwrap();
    listener.until(&sleeper, Duration::from_secs(5)).await;

    // A lease shorter than the poll interval is announced within it; this cluster's poll
    // interval is 10 s.
    let crashed = unique("crashed");
    let id = start(&client, &crashed, "a").await;
    client
        .execute("SELECT wf_heartbeat($1, 'a', '200 milliseconds')", &[&id])
        .await
        .unwrap();
    listener.until(&crashed, Duration::from_secs(15)).await;

    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("charge"));
    receiver.script(&path, [Reply::After(Duration::from_millis(300), 200)]);
    let charging = unique("charging");
    let id = start(&client, &charging, "a").await;
    client
        .execute(
            "SELECT wf_enqueue($1, '{}', workflow => $2, step => 'charge')",
            &[&receiver.url(&path), &id],
        )
        .await
        .unwrap();
    let waited: Option<serde_json::Value> = client
        .query_one("SELECT wf_wait($1, 'charge', owner => 'a')", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waited, None, "the answer takes 300 ms");
    assert_eq!(
        claim_when_told(&mut listener, &client, &charging, "b").await,
        id
    );
    let answer: serde_json::Value = client
        .query_one("SELECT wf_wait($1, 'charge', owner => 'b')", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer["ok"], true);
    assert_eq!(answer["status"], 200);

    let parent_name = unique("parent");
    let parent = start(&client, &parent_name, "p").await;
    let child: uuid::Uuid = client
        .query_one(
            "SELECT wf_start($1, parent => $2)",
            &[&unique("child"), &parent],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        wait(&client, parent, "child done", "workflow.finished", "p").await,
        None
    );
    client
        .execute("SELECT wf_complete($1, '\"done\"')", &[&child])
        .await
        .unwrap();
    listener.until(&parent_name, DEADLINE).await;
}

/// Fan-in: a parent starts three children in its own transaction and waits for each to
/// finish; every finish is a `workflow.finished` signal with the child's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_children_fan_in_to_their_parent() {
    let (client, mut listener) = setup().await;
    let name = unique("fan-out");
    let parent = start(&client, &name, "p").await;
    client.batch_execute("BEGIN").await.unwrap();
    let mut children = Vec::new();
    for n in 0..3 {
        let child: uuid::Uuid = client
            .query_one(
                "SELECT wf_start('shard', jsonb_build_object('n', $1::int), parent => $2, owner => 'worker')",
                &[&n, &parent],
            )
            .await
            .unwrap()
            .get(0);
        children.push(child);
    }
    client
        .execute(
            "SELECT wf_checkpoint($1, 'started children', owner => 'p')",
            &[&parent],
        )
        .await
        .unwrap();
    client.batch_execute("COMMIT").await.unwrap();

    let workers = dispatch_cluster().connect().await;
    let mut owner = "p".to_string();
    let mut outcomes = Vec::new();
    for (n, child) in children.iter().enumerate() {
        let step = format!("child {n}");
        assert_eq!(
            wait(&client, parent, &step, "workflow.finished", &owner).await,
            None
        );
        let finish = if n == 1 {
            "SELECT wf_fail($1, 'shard 1 failed', 'worker')"
        } else {
            "SELECT wf_complete($1, '\"ok\"', 'worker')"
        };
        workers.execute(finish, &[child]).await.unwrap();
        owner = format!("p{n}");
        assert_eq!(
            claim_when_told(&mut listener, &client, &name, &owner).await,
            parent
        );
        let told = wait(&client, parent, &step, "workflow.finished", &owner)
            .await
            .unwrap();
        outcomes.push((
            told["payload"]["workflow"].as_str().unwrap().to_string(),
            told["payload"]["status"].as_str().unwrap().to_string(),
        ));
    }
    let expected: Vec<(String, String)> = children
        .iter()
        .zip(["completed", "failed", "completed"])
        .map(|(c, s)| (c.to_string(), s.to_string()))
        .collect();
    assert_eq!(outcomes, expected);
    workflow_tests::assert_invariants(&client).await;
}

/// A durable step enqueued twice is one message, one POST; its workflow waits for the
/// answer without a lease, also for a refusal (402: `ok` false).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_step_enqueued_twice_is_sent_once_and_its_refusal_wakes_the_wait() {
    let (client, mut listener) = setup().await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("charge"));
    receiver.script(&path, [Reply::After(Duration::from_millis(200), 402)]);
    let name = unique("charge");
    let id = start(&client, &name, "a").await;
    let mut messages = Vec::new();
    for _ in 0..2 {
        let message: i64 = client
            .query_one(
                "SELECT wf_enqueue($1, '{\"amount\": 5}', workflow => $2, step => 'charge')",
                &[&receiver.url(&path), &id],
            )
            .await
            .unwrap()
            .get(0);
        messages.push(message);
    }
    assert_eq!(messages[0], messages[1]);
    let waited: Option<serde_json::Value> = client
        .query_one("SELECT wf_wait($1, 'charge', owner => 'a')", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(waited, None);
    assert_eq!(
        claim_when_told(&mut listener, &client, &name, "b").await,
        id
    );
    let answer: serde_json::Value = client
        .query_one("SELECT wf_wait($1, 'charge', owner => 'b')", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(answer["ok"], false);
    assert_eq!(answer["status"], 402);
    assert_eq!(receiver.received(&path).len(), 1, "one POST for the step");
}

/// A workflow that sleeps twelve times with the default `workflow.max_recovery_attempts`
/// is never a recovery: it completes, with no recovery counted.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twelve_sleeps_are_no_recoveries() {
    let (client, mut listener) = setup().await;
    let name = unique("sleepy");
    let id = start(&client, &name, "start").await;
    let mut owner = "start".to_string();
    for n in 0..12 {
        client
            .execute(
                "SELECT wf_sleep($1, $2, clock_timestamp() + interval '10 milliseconds', $3)",
                &[&id, &format!("sleep {n}"), &owner],
            )
            .await
            .unwrap();
        owner = format!("worker {n}");
        assert_eq!(
            claim_when_told(&mut listener, &client, &name, &owner).await,
            id
        );
    }
    client
        .execute("SELECT wf_complete($1, owner => $2)", &[&id, &owner])
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT status, recovery_attempts, steps_done FROM wf_status($1)",
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
        ("completed".to_string(), 0, 12)
    );
}

/// A signal sent after a wait's deadline does not win over the timeout, even when it comes
/// before the workflow's next `wf_wait`: that wait records the timeout, and the signal stays
/// queued for the next wait for it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_after_the_deadline_does_not_win_and_stays_queued_for_the_next_wait() {
    let (client, mut listener) = setup().await;
    let name = unique("late");
    let id = start(&client, &name, "a").await;
    let waited: Option<serde_json::Value> = client
        .query_one(
            "SELECT wf_wait($1, 'approval', 'approved', '300 milliseconds', 'a')",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(waited, None);
    // The dispatcher announces the timeout once the deadline has passed.
    listener.until(&name, DEADLINE).await;

    let sender = dispatch_cluster().connect().await;
    sender
        .execute("SELECT wf_signal($1, 'approved')", &[&id])
        .await
        .unwrap();
    assert_eq!(claim(&client, &name, "b").await, vec![id]);
    let first = wait(&client, id, "approval", "approved", "b").await;
    assert_eq!(
        first,
        Some(serde_json::json!({"timed_out": true})),
        "the deadline passed before the signal was sent"
    );
    let queued: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.signals
              WHERE workflow_id = $1 AND signal = 'approved' AND consumed_at IS NULL",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(queued, 1, "the late signal stays queued");

    let second = wait(&client, id, "approval-2", "approved", "b")
        .await
        .expect("the queued signal is consumed by the next wait for it");
    assert_eq!(second["signal"], "approved", "{second}");
    assert_eq!(second["timed_out"], false, "{second}");
    let consumed_by: Option<String> = client
        .query_one(
            "SELECT consumed_by FROM workflow.signals WHERE workflow_id = $1 AND signal = 'approved'",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(consumed_by.as_deref(), Some("approval-2"));
}

/// The outcome of one call in a race: its SQLSTATE and message if it failed.
type Outcome = Result<(), (String, String)>;

/// Runs `sql` with the workflow `id` in its own task, after `barrier` if one is given.
fn race(
    client: &Arc<Client>,
    sql: &'static str,
    id: uuid::Uuid,
    barrier: Option<Arc<Barrier>>,
) -> tokio::task::JoinHandle<Outcome> {
    let client = Arc::clone(client);
    tokio::spawn(async move {
        if let Some(barrier) = barrier {
            barrier.wait().await;
        }
        client
            .execute(sql, &[&id])
            .await
            .map(drop)
            .map_err(|e| (sqlstate(&e).to_string(), e.to_string()))
    })
}

async fn waits_for_a_lock(observer: &Client, pid: i32) -> bool {
    observer
        .query_one(
            "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1 AND wait_event_type = 'Lock')",
            &[&pid],
        )
        .await
        .unwrap()
        .get(0)
}

/// `wf_cancel(parent)` and `wf_complete(child)` lock the same two runs (the cancel takes
/// its running children along; the completion signals its parent): they never wait for
/// each other in a cycle. Even rounds start the two calls together; odd rounds line them
/// up behind the parent's worker, which holds the parent inside a step (a heartbeat in an
/// open transaction), the cancel first, and its commit releases both at once. Either call
/// may come first: the parent ends cancelled, and the child completed (the completion
/// won) or cancelled (the cancel won, and the completion is refused with 55000).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_while_its_child_completes_never_deadlocks() {
    const ROUNDS: usize = 12;
    let (client, _listener) = setup().await;
    let observer = dispatch_cluster().connect().await;
    let canceller = Arc::new(dispatch_cluster().connect().await);
    let completer = Arc::new(dispatch_cluster().connect().await);
    let mut pids = Vec::new();
    for session in [&canceller, &completer] {
        let pid: i32 = session
            .query_one("SELECT pg_backend_pid()", &[])
            .await
            .unwrap()
            .get(0);
        pids.push(pid);
    }
    let (canceller_pid, completer_pid) = (pids[0], pids[1]);

    for round in 0..ROUNDS {
        let parent = start(&client, &unique("parent"), "p").await;
        let child: uuid::Uuid = client
            .query_one(
                "SELECT wf_start($1, parent => $2, owner => 'c')",
                &[&unique("child"), &parent],
            )
            .await
            .unwrap()
            .get(0);
        let lined_up = round % 2 == 1;
        let (cancel, complete) = if lined_up {
            client.batch_execute("BEGIN").await.unwrap();
            client
                .execute("SELECT wf_heartbeat($1, 'p')", &[&parent])
                .await
                .unwrap();
            let cancel = race(&canceller, "SELECT wf_cancel($1)", parent, None);
            eventually(
                "the cancel to queue behind the parent's worker",
                DEADLINE,
                || async {
                    waits_for_a_lock(&observer, canceller_pid)
                        .await
                        .then_some(())
                },
            )
            .await;
            let complete = race(&completer, "SELECT wf_complete($1)", child, None);
            eventually("the completion to queue or finish", DEADLINE, || async {
                (complete.is_finished() || waits_for_a_lock(&observer, completer_pid).await)
                    .then_some(())
            })
            .await;
            client.batch_execute("COMMIT").await.unwrap();
            (cancel, complete)
        } else {
            let barrier = Arc::new(Barrier::new(2));
            (
                race(
                    &canceller,
                    "SELECT wf_cancel($1)",
                    parent,
                    Some(Arc::clone(&barrier)),
                ),
                race(&completer, "SELECT wf_complete($1)", child, Some(barrier)),
            )
        };
        let how = if lined_up { "lined up" } else { "together" };
        let cancelled = cancel.await.unwrap();
        let completed = complete.await.unwrap();
        assert!(
            cancelled.is_ok(),
            "round {round} ({how}): wf_cancel(parent) failed: {cancelled:?}"
        );
        match &completed {
            Ok(()) => {}
            Err((code, _)) if code == "55000" => {}
            Err(error) => panic!("round {round} ({how}): wf_complete(child) failed: {error:?}"),
        }
        let row = client
            .query_one(
                "SELECT (SELECT status FROM wf_status($1)), (SELECT status FROM wf_status($2))",
                &[&parent, &child],
            )
            .await
            .unwrap();
        assert_eq!(
            (row.get::<_, String>(0), row.get::<_, String>(1)),
            (
                "cancelled".to_string(),
                if completed.is_ok() {
                    "completed"
                } else {
                    "cancelled"
                }
                .to_string()
            ),
            "round {round} ({how}): (parent, child)"
        );
    }
    workflow_tests::assert_invariants(&client).await;
}

/// The outcome of a statement of a race.
fn outcome<T>(result: Result<T, tokio_postgres::Error>) -> Outcome {
    result
        .map(drop)
        .map_err(|e| (sqlstate(&e).to_string(), e.to_string()))
}

/// The child's worker finishing it as `c`: its last step and its completion in one
/// transaction, begun at once and carried on after `barrier`, in a task of its own. A
/// refused call rolls the transaction back.
fn checkpoint_and_complete(
    client: &Arc<Client>,
    child: uuid::Uuid,
    barrier: Arc<Barrier>,
) -> tokio::task::JoinHandle<Outcome> {
    let client = Arc::clone(client);
    tokio::spawn(async move {
        client.batch_execute("BEGIN").await.unwrap();
        barrier.wait().await;
        let finished = async {
            client
                .execute("SELECT wf_checkpoint($1, 'last', NULL, 'c')", &[&child])
                .await?;
            client
                .execute("SELECT wf_complete($1, NULL, 'c')", &[&child])
                .await?;
            client.batch_execute("COMMIT").await
        }
        .await;
        if finished.is_err() {
            client.batch_execute("ROLLBACK").await.unwrap();
        }
        outcome(finished)
    })
}

/// The race of `cancelling_a_parent_while_its_child_completes_never_deadlocks`, with the
/// child's worker recording its last step in the completing transaction:
/// `wf_checkpoint(child)`, then `wf_complete(child)`, as `c`. The checkpoint locks the
/// parent before the child, as every write to a child does, so a cancel that comes after
/// it waits for the whole transaction. (Had it locked the child alone, the cancel would
/// hold the parent and wait for the child, and the completion, which signals the parent,
/// would close the cycle: `40P01`.) Even rounds line the cancel up behind the checkpoint
/// before the completion is sent; odd rounds start the cancel and the child's transaction
/// together. The parent ends cancelled, and the child completed with its last step (its
/// transaction won; always, when lined up) or cancelled without it (the cancel won, and
/// the checkpoint is refused: `c` no longer holds the child).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_a_parent_while_its_child_checkpoints_and_completes_never_deadlocks() {
    const ROUNDS: usize = 12;
    let (client, _listener) = setup().await;
    let observer = dispatch_cluster().connect().await;
    let canceller = Arc::new(dispatch_cluster().connect().await);
    let finisher = Arc::new(dispatch_cluster().connect().await);
    let canceller_pid: i32 = canceller
        .query_one("SELECT pg_backend_pid()", &[])
        .await
        .unwrap()
        .get(0);

    for round in 0..ROUNDS {
        let parent = start(&client, &unique("parent"), "p").await;
        let child: uuid::Uuid = client
            .query_one(
                "SELECT wf_start($1, parent => $2, owner => 'c')",
                &[&unique("child"), &parent],
            )
            .await
            .unwrap()
            .get(0);
        let lined_up = round % 2 == 0;
        let (cancelled, finished) = if lined_up {
            finisher.batch_execute("BEGIN").await.unwrap();
            finisher
                .execute("SELECT wf_checkpoint($1, 'last', NULL, 'c')", &[&child])
                .await
                .expect("the child's last step");
            let cancel = race(&canceller, "SELECT wf_cancel($1)", parent, None);
            eventually(
                "the cancel to queue behind the child's transaction",
                DEADLINE,
                || async {
                    waits_for_a_lock(&observer, canceller_pid)
                        .await
                        .then_some(())
                },
            )
            .await;
            let completed = outcome(
                finisher
                    .execute("SELECT wf_complete($1, NULL, 'c')", &[&child])
                    .await,
            );
            let end = if completed.is_ok() {
                "COMMIT"
            } else {
                "ROLLBACK"
            };
            finisher.batch_execute(end).await.unwrap();
            (cancel.await.unwrap(), completed)
        } else {
            let barrier = Arc::new(Barrier::new(2));
            let cancel = race(
                &canceller,
                "SELECT wf_cancel($1)",
                parent,
                Some(Arc::clone(&barrier)),
            );
            let finish = checkpoint_and_complete(&finisher, child, barrier);
            (cancel.await.unwrap(), finish.await.unwrap())
        };
        let how = if lined_up { "lined up" } else { "together" };
        for (call, result) in [
            ("wf_cancel(parent)", &cancelled),
            ("the child's checkpoint and completion", &finished),
        ] {
            if let Err((code, message)) = result {
                assert_ne!(
                    code, "40P01",
                    "round {round} ({how}): {call} deadlocked: {message}"
                );
            }
        }
        assert!(
            cancelled.is_ok(),
            "round {round} ({how}): wf_cancel(parent) failed: {cancelled:?}"
        );
        match &finished {
            Ok(()) => {}
            Err((code, _)) if !lined_up && (code == "55006" || code == "55000") => {}
            Err(error) => panic!(
                "round {round} ({how}): the child's checkpoint and completion failed: {error:?}"
            ),
        }
        let row = client
            .query_one(
                "SELECT (SELECT status FROM wf_status($1)), (SELECT status FROM wf_status($2)),
                        EXISTS (SELECT FROM workflow.steps WHERE workflow_id = $2 AND step = 'last')",
                &[&parent, &child],
            )
            .await
            .unwrap();
        let child_status = if finished.is_ok() {
            "completed"
        } else {
            "cancelled"
        };
        assert_eq!(
            (
                row.get::<_, String>(0),
                row.get::<_, String>(1),
                row.get::<_, bool>(2)
            ),
            (
                "cancelled".to_string(),
                child_status.to_string(),
                finished.is_ok()
            ),
            "round {round} ({how}): (parent, child, the child's last step recorded)"
        );
    }
    workflow_tests::assert_invariants(&client).await;
}

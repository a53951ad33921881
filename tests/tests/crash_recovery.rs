//! G2 across crashes: a dispatcher killed mid-run, or a whole server stopped without a
//! shutdown, loses no committed message; any duplicate carries its message's webhook-id.
//! Also: SIGTERM ends the dispatcher quickly and it comes back; retention removes what
//! was delivered.

use std::collections::HashMap;
use std::time::{Duration, Instant};
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, dispatcher_pid, eventually, unique};

const MESSAGES: i32 = 2000;
const DEADLINE: Duration = Duration::from_secs(120);

fn cluster(extra: &[&str]) -> Cluster {
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.push("workflow.poll_interval = '1s'");
    settings.extend_from_slice(extra);
    Cluster::start(&settings)
}

/// Commits `MESSAGES` messages to one path in one transaction; returns webhook-id → payload.
async fn enqueue_run(
    client: &tokio_postgres::Client,
    url: &str,
) -> HashMap<String, serde_json::Value> {
    let run = unique("run");
    client
        .execute(
            "SELECT wf_enqueue($1, jsonb_build_object('run', $2::text, 'n', n)) FROM generate_series(1, $3) n",
            &[&url, &run, &MESSAGES],
        )
        .await
        .unwrap();
    client
        .query(
            "SELECT webhook_id, payload FROM workflow.messages WHERE payload->>'run' = $1",
            &[&run],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

async fn delivery_counts(cluster: &Cluster) -> Option<(i64, Option<String>)> {
    let client = workflow_tests::try_connect(&cluster.conninfo())
        .await
        .ok()?;
    let row = client
        .query_one(
            "SELECT count(*) FILTER (WHERE status = 'delivered'), string_agg(DISTINCT status, ',') FROM workflow.outbox",
            &[],
        )
        .await
        .ok()?;
    Some((row.get(0), row.get(1)))
}

/// Every message arrived at least once, and every arrival is one of ours with its own
/// webhook-id and payload. Returns the number of duplicates.
fn check_at_least_once(
    expected: &HashMap<String, serde_json::Value>,
    receiver: &Receiver,
    path: &str,
) -> usize {
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in receiver.received(path) {
        let id = request
            .header("webhook-id")
            .expect("webhook-id")
            .to_string();
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert_eq!(
            expected.get(&id),
            Some(&body),
            "an arrival that matches no message, or a different payload for {id}"
        );
        *seen.entry(id).or_default() += 1;
    }
    let missing = expected.keys().filter(|id| !seen.contains_key(*id)).count();
    assert_eq!(missing, 0, "{missing} committed messages never arrived");
    seen.values().map(|n| n - 1).sum()
}

async fn all_delivered(cluster: &Cluster, count: usize) {
    let start = Instant::now();
    let mut last = String::new();
    while start.elapsed() < DEADLINE {
        // The server may still be restarting: no connection yet is not a failure.
        if let Some((delivered, states)) = delivery_counts(cluster).await {
            if delivered as usize >= count {
                return;
            }
            last = format!("{delivered} delivered; states {states:?}");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let log = cluster.server_log();
    let tail: Vec<&str> = log.lines().rev().take(40).collect();
    panic!(
        "not all {count} messages delivered within {DEADLINE:?}: {last}\nserver log (last lines first):\n{}",
        tail.join("\n")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g2_kill_9_of_the_dispatcher_mid_run_loses_nothing() {
    let cluster = cluster(&[]);
    let client = cluster.connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = "/kill9";
    let started = Instant::now();
    let expected = enqueue_run(&client, &receiver.url(path)).await;

    let early = receiver.wait_for(path, 300, DEADLINE).await;
    let rate = early.len() as f64 / started.elapsed().as_secs_f64();
    // SAFETY: sending a signal to a process we looked up.
    assert_eq!(
        unsafe { libc::kill(pid, libc::SIGKILL) },
        0,
        "kill -9 the dispatcher"
    );
    drop(client);

    all_delivered(&cluster, expected.len()).await;
    let duplicates = check_at_least_once(&expected, &receiver, path);
    eprintln!(
        "kill -9 after {} of {MESSAGES} arrivals ({rate:.0} messages/s before the kill); {duplicates} duplicates after recovery",
        early.len()
    );
    let client = cluster.connect().await;
    assert_ne!(
        dispatcher_pid(&client, DEADLINE).await,
        pid,
        "a new dispatcher took over"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g2_an_immediate_shutdown_of_the_server_mid_run_loses_nothing() {
    let cluster = cluster(&[]);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = "/immediate";
    let started = Instant::now();
    let expected = enqueue_run(&client, &receiver.url(path)).await;
    receiver.wait_for(path, 300, DEADLINE).await;
    drop(client);

    cluster.stop_immediate();
    let arrived_before_restart = receiver.received(path).len();
    cluster.start_again();
    all_delivered(&cluster, expected.len()).await;
    let duplicates = check_at_least_once(&expected, &receiver, path);
    eprintln!(
        "immediate shutdown after {arrived_before_restart} of {MESSAGES} arrivals; all delivered {:?} after the commit; {duplicates} duplicates",
        started.elapsed()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_the_dispatcher_quickly_and_a_new_one_finishes_the_work() {
    let cluster = cluster(&[]);
    let client = cluster.connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = "/sigterm";
    // In flight when SIGTERM arrives: longer than the shutdown grace, within the timeout.
    receiver.script(path, [Reply::After(Duration::from_millis(900), 200)]);
    let id: i64 = client
        .query_one("SELECT wf_enqueue($1, '{}')", &[&receiver.url(path)])
        .await
        .unwrap()
        .get(0);
    receiver.wait_for(path, 1, DEADLINE).await;

    let asked = Instant::now();
    client
        .execute("SELECT pg_terminate_backend($1)", &[&pid])
        .await
        .unwrap();
    workflow_tests::backend_exits(&client, pid, Duration::from_secs(10)).await;
    let exit = asked.elapsed();
    assert!(
        exit < Duration::from_secs(5),
        "the dispatcher took {exit:?} to stop"
    );
    let next = dispatcher_pid(&client, DEADLINE).await;
    assert_ne!(next, pid);
    workflow_tests::message_reaches(&client, id, "delivered", DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g6_retention_removes_delivered_and_dead_messages_with_their_attempts() {
    let cluster = cluster(&["workflow.retention = 0"]);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    receiver.script("/dead", [Reply::Status(400)]);
    let delivered: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}')",
            &[&receiver.url("/kept-briefly")],
        )
        .await
        .unwrap()
        .get(0);
    let dead: i64 = client
        .query_one("SELECT wf_enqueue($1, '{}')", &[&receiver.url("/dead")])
        .await
        .unwrap()
        .get(0);
    let workflow: uuid::Uuid = client
        .query_one("SELECT wf_start('retained')", &[])
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "SELECT wf_checkpoint($1, 'a'), wf_complete($1)",
            &[&workflow],
        )
        .await
        .unwrap();

    eventually(
        "retention to remove the delivered message and the finished workflow",
        DEADLINE,
        || async {
            let row = client
                .query_one(
                    "SELECT (SELECT count(*) FROM workflow.outbox WHERE id = $1),
                        (SELECT count(*) FROM workflow.delivery_attempts WHERE message_id = $1),
                        (SELECT count(*) FROM workflow.runs WHERE id = $2),
                        (SELECT count(*) FROM workflow.checkpoints WHERE workflow_id = $2)",
                    &[&delivered, &workflow],
                )
                .await
                .unwrap();
            let left: i64 = (0..4).map(|i| row.get::<_, i64>(i)).sum();
            (left == 0).then_some(())
        },
    )
    .await;
    // Dead letters obey the retention too: nothing finished grows without bound.
    eventually("retention to remove the dead message", DEADLINE, || async {
        let left: i64 = client
            .query_one(
                "SELECT (SELECT count(*) FROM workflow.outbox WHERE id = $1)
                      + (SELECT count(*) FROM workflow.delivery_attempts WHERE message_id = $1)",
                &[&dead],
            )
            .await
            .unwrap()
            .get(0);
        (left == 0).then_some(())
    })
    .await;
    let dead_total: i64 = client
        .query_one(
            "SELECT coalesce(sum(dead_total), 0)::bigint FROM workflow.metrics",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead_total, 1, "the counter keeps what retention removed");
}

/// With `workflow.retention = 0` a delivered message is deleted by the statement that
/// records its delivery, with the attempts of its earlier failures; a durable HTTP step
/// is still checkpointed from it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g6_retention_zero_forgets_a_delivery_at_once_and_keeps_its_step() {
    let cluster = cluster(&["workflow.retention = 0"]);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    receiver.script(
        "/charge",
        [
            Reply::Status(503),
            Reply::Full {
                status: 201,
                headers: vec![],
                body: r#"{"charge_id": "ch_1"}"#.into(),
            },
        ],
    );
    let workflow = workflow_tests::start_workflow(&client, &unique("forgotten")).await;
    let id: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', workflow => $2, step => 'charge')",
            &[&receiver.url("/charge"), &workflow],
        )
        .await
        .unwrap()
        .get(0);
    workflow_tests::until_true(
        &client,
        "the delivered step to be checkpointed",
        "SELECT wf_step($1, 'charge') IS NOT NULL",
        &[&workflow],
        DEADLINE,
    )
    .await;
    assert_eq!(
        receiver.received("/charge").len(),
        2,
        "one failure, then the delivery"
    );
    let step = workflow_tests::step_output(&client, workflow, "charge").await;
    assert_eq!(step["status"], 201);
    let left: i64 = client
        .query_one(
            "SELECT (SELECT count(*) FROM workflow.outbox WHERE id = $1)
                  + (SELECT count(*) FROM workflow.delivery_attempts WHERE message_id = $1)",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        left, 0,
        "the message and its attempts went with the delivery"
    );
}

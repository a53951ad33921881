//! The delivery protocol against a real receiver: headers and signatures, G1 for messages,
//! outcome classification, retries and backoff, dead letters, and the durable HTTP step.

use std::time::Duration;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{dispatch_cluster, dispatcher_pid, message_reaches, unique};

const DEADLINE: Duration = Duration::from_secs(30);

async fn setup() -> (tokio_postgres::Client, Receiver) {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await)
}

fn path(name: &str) -> String {
    format!("/{}", unique(name))
}

async fn enqueue(client: &tokio_postgres::Client, url: &str, payload: serde_json::Value) -> i64 {
    client
        .query_one("SELECT wf_enqueue($1, $2)", &[&url, &payload])
        .await
        .unwrap()
        .get(0)
}

async fn attempt_codes(client: &tokio_postgres::Client, id: i64) -> Vec<Option<i32>> {
    client
        .query(
            "SELECT status_code FROM workflow.attempts WHERE message_id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_committed_message_arrives_once_signed_so_that_standard_webhooks_verifies_it() {
    let (client, receiver) = setup().await;
    let secret: String = client
        .query_one(
            "SELECT wf_endpoint($1, $2, 'generate', '{\"x-tenant\": \"acme\"}')",
            &[&unique("signed"), &receiver.url("/signed")],
        )
        .await
        .unwrap()
        .get(0);
    let endpoint: String = client
        .query_one(
            "SELECT name FROM workflow.endpoints WHERE url = $1",
            &[&receiver.url("/signed")],
        )
        .await
        .unwrap()
        .get(0);
    let payload = serde_json::json!({"event": "transfer.completed", "amount": 25});
    let id: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, $2, '{\"x-request\": \"r-1\"}')",
            &[&endpoint, &payload],
        )
        .await
        .unwrap()
        .get(0);

    assert_eq!(message_reaches(&client, id, "delivered", DEADLINE).await, 1);
    let received = receiver.received("/signed");
    assert_eq!(received.len(), 1, "delivered exactly once");
    let request = &received[0];
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&request.body, &request.headers)
        .expect("the standardwebhooks crate verifies the signature");
    let webhook_id: String = client
        .query_one(
            "SELECT webhook_id FROM workflow.messages WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(request.header("webhook-id"), Some(webhook_id.as_str()));
    assert_eq!(
        request.header("idempotency-key"),
        Some(webhook_id.as_str()),
        "no key given: the webhook-id"
    );
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(
        request.header("x-tenant"),
        Some("acme"),
        "endpoint headers are sent"
    );
    assert_eq!(
        request.header("x-request"),
        Some("r-1"),
        "message headers are sent"
    );
    let sent: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
    assert_eq!(sent, payload);
    assert_eq!(attempt_codes(&client, id).await, vec![Some(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_idempotency_key_header_carries_the_callers_key() {
    let (client, receiver) = setup().await;
    let path = path("keyed");
    let key = unique("order");
    let id: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', idempotency_key => $2)",
            &[&receiver.url(&path), &key],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert_eq!(
        receiver.received(&path)[0].header("idempotency-key"),
        Some(key.as_str())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn g1_messages_enqueued_in_rolled_back_work_are_never_delivered() {
    let (client, receiver) = setup().await;
    let (rolled_back, savepoint, committed) =
        (path("rolled-back"), path("savepoint"), path("committed"));

    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT wf_enqueue($1, '{}')",
            &[&receiver.url(&rolled_back)],
        )
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();

    client.batch_execute("BEGIN; SAVEPOINT s").await.unwrap();
    client
        .execute("SELECT wf_enqueue($1, '{}')", &[&receiver.url(&savepoint)])
        .await
        .unwrap();
    client
        .batch_execute("ROLLBACK TO SAVEPOINT s")
        .await
        .unwrap();
    let id: i64 = workflow_tests::enqueue(&client, &receiver.url(&committed)).await;
    client.batch_execute("COMMIT").await.unwrap();

    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert!(receiver.received(&rolled_back).is_empty());
    assert!(receiver.received(&savepoint).is_empty());
    let count: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.messages WHERE target IN ($1, $2)",
            &[&receiver.url(&rolled_back), &receiver.url(&savepoint)],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried_with_one_webhook_id_until_delivered() {
    let (client, receiver) = setup().await;
    let path = path("flaky");
    receiver.script(
        &path,
        [Reply::Status(500), Reply::Status(503), Reply::Status(200)],
    );
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({"n": 1})).await;

    assert_eq!(message_reaches(&client, id, "delivered", DEADLINE).await, 3);
    let received = receiver.received(&path);
    assert_eq!(received.len(), 3);
    let ids: Vec<_> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap().to_string())
        .collect();
    assert!(
        ids.iter().all(|i| *i == ids[0]),
        "one webhook-id across retries: {ids:?}"
    );
    assert_eq!(
        attempt_codes(&client, id).await,
        vec![Some(500), Some(503), Some(200)]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retry_after_is_honoured() {
    let (client, receiver) = setup().await;
    let path = path("throttled");
    receiver.script(
        &path,
        [Reply::Full {
            status: 429,
            headers: vec![("retry-after".into(), "2".into())],
            body: String::new(),
        }],
    );
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({})).await;
    assert_eq!(message_reaches(&client, id, "delivered", DEADLINE).await, 2);
    let received = receiver.received(&path);
    let gap = received[1].at - received[0].at;
    assert!(
        gap >= Duration::from_millis(1950),
        "the retry came {gap:?} after the 429 with Retry-After: 2"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_4xx_refusal_is_dead_at_once() {
    let (client, receiver) = setup().await;
    let path = path("refuses");
    receiver.script(&path, [Reply::Status(404)]);
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({})).await;
    assert_eq!(message_reaches(&client, id, "dead", DEADLINE).await, 1);
    assert_eq!(receiver.received(&path).len(), 1);
    let row = client
        .query_one("SELECT last_status_code FROM wf_message($1)", &[&id])
        .await
        .unwrap();
    assert_eq!(row.get::<_, Option<i32>>(0), Some(404));
    let dead: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.dead_letters WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(dead, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_is_a_failure_and_is_not_followed() {
    let (client, receiver) = setup().await;
    let (path, elsewhere) = (path("moved"), path("elsewhere"));
    receiver.script(
        &path,
        [Reply::Full {
            status: 301,
            headers: vec![("location".into(), receiver.url(&elsewhere))],
            body: String::new(),
        }],
    );
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({})).await;
    message_reaches(&client, id, "dead", DEADLINE).await;
    assert!(receiver.received(&elsewhere).is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_is_retried() {
    let (client, receiver) = setup().await;
    let path = path("slow-once");
    // The cluster's request_timeout is 1 s.
    receiver.script(&path, [Reply::After(Duration::from_secs(3), 200)]);
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({})).await;
    assert_eq!(message_reaches(&client, id, "delivered", DEADLINE).await, 2);
    let error: String = client
        .query_one(
            "SELECT error FROM workflow.attempts WHERE message_id = $1 AND attempt = 1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("timed out"), "{error}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_reset_is_retried() {
    let (client, receiver) = setup().await;
    let path = path("reset");
    receiver.script(&path, [Reply::Reset]);
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({})).await;
    assert_eq!(message_reaches(&client, id, "delivered", DEADLINE).await, 2);
    assert_eq!(attempt_codes(&client, id).await, vec![None, Some(200)]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_max_attempts_a_message_is_dead_and_wf_retry_revives_it() {
    let (client, receiver) = setup().await;
    let path = path("down");
    let endpoint = unique("down");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, max_attempts => 2)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    receiver.script(&path, [Reply::Status(500), Reply::Status(502)]);
    let id = enqueue(&client, &endpoint, serde_json::json!({})).await;
    assert_eq!(message_reaches(&client, id, "dead", DEADLINE).await, 2);

    client.execute("SELECT wf_retry($1)", &[&id]).await.unwrap();
    assert_eq!(
        message_reaches(&client, id, "delivered", DEADLINE).await,
        1,
        "attempts restart"
    );
    assert_eq!(receiver.received(&path).len(), 3);
    assert_eq!(
        attempt_codes(&client, id).await,
        vec![Some(500), Some(502), Some(200)]
    );
    workflow_tests::assert_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_from_a_named_endpoint_disables_it_and_keeps_its_messages() {
    let (client, receiver) = setup().await;
    let path = path("gone");
    let endpoint = unique("gone");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    receiver.script(&path, [Reply::Status(410)]);
    let id = enqueue(&client, &endpoint, serde_json::json!({})).await;
    workflow_tests::endpoint_disabled(&client, &endpoint, DEADLINE).await;
    let status: String = client
        .query_one("SELECT status FROM wf_message($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "pending", "the message waits for the endpoint");

    client
        .execute("SELECT wf_endpoint_enable($1)", &[&endpoint])
        .await
        .unwrap();
    message_reaches(&client, id, "delivered", DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_receiver_does_not_hold_back_deliveries_to_others() {
    let (client, receiver) = setup().await;
    let (slow, fast) = (path("slow"), path("fast"));
    // Longer than the cluster's 1 s timeout would be retried; 900 ms stays within it.
    receiver.script(
        &slow,
        std::iter::repeat_n(Reply::After(Duration::from_millis(900), 200), 4),
    );
    for _ in 0..4 {
        enqueue(&client, &receiver.url(&slow), serde_json::json!({})).await;
    }
    let slow_started = receiver.wait_for(&slow, 4, DEADLINE).await[0].at;
    let mut ids = Vec::new();
    for _ in 0..20 {
        ids.push(enqueue(&client, &receiver.url(&fast), serde_json::json!({})).await);
    }
    let fast_done = receiver
        .wait_for(&fast, 20, DEADLINE)
        .await
        .iter()
        .map(|r| r.at)
        .max()
        .unwrap();
    assert!(
        fast_done - slow_started < Duration::from_millis(900),
        "20 fast deliveries finished {:?} after the slow ones started",
        fast_done - slow_started
    );
}

/// A durable step `charge` of a new workflow, whose receiver answers `reply`: once its
/// message is `status`, the recorded step.
async fn durable_step_answered(reply: Reply, status: &str) -> serde_json::Value {
    let (client, receiver) = setup().await;
    let path = path("charge");
    receiver.script(&path, [reply]);
    let workflow = workflow_tests::start_workflow(&client, &unique("payment")).await;
    let id: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', workflow => $2, step => 'charge')",
            &[&receiver.url(&path), &workflow],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, id, status, DEADLINE).await;
    workflow_tests::step_output(&client, workflow, "charge").await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_durable_http_step_checkpoints_the_response() {
    let reply = Reply::Full {
        status: 201,
        headers: vec![("x-charge".into(), "ch_1".into())],
        body: r#"{"charge_id": "ch_1"}"#.into(),
    };
    let step = durable_step_answered(reply, "delivered").await;
    assert_eq!(step["ok"], true);
    assert_eq!(step["status"], 201);
    assert_eq!(step["body"], serde_json::json!({"charge_id": "ch_1"}));
    assert_eq!(step["headers"]["x-charge"], "ch_1");
}

/// A durable step whose receiver refuses it for good (a 402 here) is recorded with
/// `ok: false`: the answer is the step's outcome, so the message is delivered, and neither
/// the destination's health nor the dead letters hear of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_steps_final_refusal_is_recorded_as_not_ok_and_delivered() {
    // A declined card is the step's outcome, not a delivery failure (SPEC, wf_enqueue).
    let reply = Reply::Full {
        status: 402,
        headers: vec![("x-reason".into(), "card_declined".into())],
        body: r#"{"declined": true}"#.into(),
    };
    let step = durable_step_answered(reply, "delivered").await;
    assert_eq!(step["ok"], false);
    assert_eq!(step["status"], 402);
    assert_eq!(step["body"], serde_json::json!({"declined": true}));
    assert_eq!(step["headers"]["x-reason"], "card_declined");
    assert_eq!(step["error"], "the receiver answered 402");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_is_visible_and_reports_table_statistics() {
    let (client, receiver) = setup().await;
    let path = path("stats");
    let id = enqueue(&client, &receiver.url(&path), serde_json::json!({})).await;
    message_reaches(&client, id, "delivered", DEADLINE).await;
    let row = client
        .query_one(
            "SELECT dispatcher_running, delivered >= 1 FROM wf_stats()",
            &[],
        )
        .await
        .unwrap();
    assert!(row.get::<_, bool>(0) && row.get::<_, bool>(1));
    let app: String = client
        .query_one("SELECT application_name FROM pg_stat_activity WHERE backend_type = 'workflow dispatcher'", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(app, "workflow dispatcher");
    // The dispatcher's updates reach pgstat, so autovacuum sees them.
    workflow_tests::eventually("the dispatcher's updates in pg_stat_user_tables", DEADLINE, || async {
        let updates: i64 = client
            .query_one(
                "SELECT n_tup_upd + n_tup_hot_upd FROM pg_stat_user_tables WHERE schemaname = 'workflow' AND relname = 'outbox'",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        (updates > 0).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_sharing_an_ordering_key_go_one_at_a_time_in_commit_order() {
    let (client, receiver) = setup().await;
    let (ordered, other) = (path("ordered"), path("other-key"));
    // The head fails once: the rest of its key waits, another key does not.
    receiver.script(&ordered, [Reply::Status(503)]);
    let key = unique("account");
    let mut ids = Vec::new();
    for n in 0..3 {
        let id: i64 = client
            .query_one(
                "SELECT wf_enqueue($1, jsonb_build_object('n', $2::int), ordering_key => $3)",
                &[&receiver.url(&ordered), &n, &key],
            )
            .await
            .unwrap()
            .get(0);
        ids.push(id);
    }
    let unrelated: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', ordering_key => $2)",
            &[&receiver.url(&other), &unique("other")],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, unrelated, "delivered", DEADLINE).await;
    for id in &ids {
        message_reaches(&client, *id, "delivered", DEADLINE).await;
    }
    let order: Vec<i64> = receiver
        .received(&ordered)
        .iter()
        .map(|r| {
            serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["n"]
                .as_i64()
                .unwrap()
        })
        .collect();
    assert_eq!(
        order,
        vec![0, 0, 1, 2],
        "the failing head is retried before the next message goes"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancelling_the_workflow_of_an_ordering_keys_head_sends_the_next_at_once() {
    let (client, receiver) = setup().await;
    let path = path("unblocked");
    let key = unique("key");
    let workflow: uuid::Uuid = workflow_tests::start_workflow(&client, &unique("head")).await;
    // The head is not due for an hour and holds the key; the next waits behind it.
    client
        .execute(
            "SELECT wf_enqueue($1, '{}', workflow => $2, ordering_key => $3, deliver_at => now() + interval '1 hour')",
            &[&receiver.url(&path), &workflow, &key],
        )
        .await
        .unwrap();
    let next: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', ordering_key => $2)",
            &[&receiver.url(&path), &key],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT wf_cancel($1)", &[&workflow])
        .await
        .unwrap();
    // Well within the 10 s poll interval: the cancel's commit woke the dispatcher.
    message_reaches(&client, next, "delivered", Duration::from_secs(3)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_secret_that_no_longer_parses_sends_nothing_unsigned() {
    let (client, receiver) = setup().await;
    let endpoint = unique("broken-secret");
    let path = path("broken-secret");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, 'generate')",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    // As a hand edit or a bad restore could leave it.
    client
        .execute(
            "UPDATE workflow.endpoint_settings SET secrets = array_append(secrets, 'whsec_not-base64!') WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    let id = enqueue(&client, &endpoint, serde_json::json!({})).await;
    message_reaches(&client, id, "dead", DEADLINE).await;
    let error: String = client
        .query_one("SELECT last_error FROM wf_message($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert!(error.contains("secret 2 is malformed"), "{error}");
    assert!(
        !error.contains("not-base64"),
        "the secret is not shown: {error}"
    );
    assert!(
        receiver.received(&path).is_empty(),
        "nothing went out unsigned"
    );
}

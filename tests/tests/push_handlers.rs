//! Push handlers (`wf_handler`): the dispatcher claims ready workflows of a name and POSTs
//! them, signed, to an HTTP handler, which continues each one as the owner the push names.
//! Here the test plays the handler: it reads each push at a real receiver and acts on it
//! with its own connection, as a serverless function would.

use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::receiver::{Received, Receiver, Reply};
use workflow_tests::{dispatch_cluster, sqlstate, unique};

const DEADLINE: Duration = Duration::from_secs(30);

struct Handler {
    client: Client,
    receiver: Receiver,
    path: String,
    name: String,
}

/// A workflow name pushed to a fresh path of a receiver, through a signed endpoint;
/// returns the handler and the endpoint's secret.
async fn handler(replies: Vec<Reply>) -> (Handler, String) {
    let client = dispatch_cluster().connect().await;
    let receiver = Receiver::start().await;
    let name = unique("transfer");
    let path = format!("/{name}");
    receiver.script(&path, replies);
    let endpoint = unique("handler");
    let secret: String = client
        .query_one(
            "SELECT wf_endpoint($1, $2, 'generate')",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute("SELECT wf_handler($1, $2)", &[&name, &endpoint])
        .await
        .unwrap();
    let handler = Handler {
        client,
        receiver,
        path,
        name,
    };
    (handler, secret)
}

impl Handler {
    /// The `n`th push (from 1) as the receiver got it, with its body.
    async fn push(&self, n: usize) -> (Received, serde_json::Value) {
        let received = self.receiver.wait_for(&self.path, n, DEADLINE).await;
        let push = received[n - 1].clone();
        let body = serde_json::from_slice(&push.body).expect("a JSON push");
        (push, body)
    }

    async fn start(&self, input: serde_json::Value) -> uuid::Uuid {
        self.client
            .query_one("SELECT wf_start($1, $2)", &[&self.name, &input])
            .await
            .unwrap()
            .get(0)
    }
}

fn owner(push: &serde_json::Value) -> String {
    push["owner"]
        .as_str()
        .expect("the push names its owner")
        .to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_started_workflow_is_pushed_signed_and_a_500_is_pushed_again_to_the_same_owner() {
    let (handler, secret) = handler(vec![Reply::Status(500), Reply::Status(200)]).await;
    let id = handler.start(serde_json::json!({"amount": 25})).await;
    let (first, body) = handler.push(1).await;
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&first.body, &first.headers)
        .expect("the push verifies with standardwebhooks");
    assert_eq!(body["type"], "workflow.ready");
    assert_eq!(body["workflow"], id.to_string());
    assert_eq!(body["name"], handler.name);
    assert_eq!(body["input"], serde_json::json!({"amount": 25}));
    assert_eq!(body["steps"], serde_json::json!({}));
    assert!(body["lease_expires_at"].is_string());
    let (second, again) = handler.push(2).await;
    assert_eq!(
        second.header("webhook-id"),
        first.header("webhook-id"),
        "the retry of one push"
    );
    assert_eq!(owner(&again), owner(&body));
    handler
        .client
        .execute(
            "SELECT wf_complete($1, '\"done\"', $2)",
            &[&id, &owner(&again).as_str()],
        )
        .await
        .expect("the pushed owner holds the lease");
}

/// A handler that dies after its first step: the lease runs out, the workflow is pushed
/// again to a new owner with the step in the body, and the dead owner is fenced out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_that_dies_mid_workflow_is_pushed_again_after_the_lease() {
    let (handler, _) = handler(vec![]).await;
    handler
        .client
        .batch_execute("SET workflow.lease_duration = '1s'")
        .await
        .unwrap();
    let id = handler.start(serde_json::json!({})).await;
    let (_, first) = handler.push(1).await;
    let dead = owner(&first);
    handler
        .client
        .execute(
            "SELECT wf_checkpoint($1, 'reserve', '\"r-1\"', $2)",
            &[&id, &dead.as_str()],
        )
        .await
        .unwrap();
    // ...and the handler dies. The next push comes when its lease has run out.
    let (_, second) = handler.push(2).await;
    let next = owner(&second);
    assert_ne!(next, dead);
    assert_eq!(second["steps"], serde_json::json!({"reserve": "r-1"}));
    let late = handler
        .client
        .execute(
            "SELECT wf_checkpoint($1, 'charge', NULL, $2)",
            &[&id, &dead.as_str()],
        )
        .await
        .expect_err("the dead owner is fenced out");
    assert_eq!(sqlstate(&late), "55006");
    handler
        .client
        .execute("SELECT wf_complete($1, NULL, $2)", &[&id, &next.as_str()])
        .await
        .unwrap();
    let recoveries: i32 = handler
        .client
        .query_one("SELECT recovery_attempts FROM wf_status($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        recoveries, 1,
        "the push after the dead owner's lease is a recovery"
    );
}

/// The transfer of the README, with no worker process: every step runs when a push comes.
/// Debit, then wait for the payment provider's confirmation (a signal from an inbound
/// webhook), then credit and complete; each business write happens once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_money_transfer_runs_entirely_on_pushes() {
    let (handler, _) = handler(vec![]).await;
    let db = &handler.client;
    db.batch_execute(
        "CREATE TABLE IF NOT EXISTS push_ledger (workflow uuid, entry text, UNIQUE (workflow, entry))",
    )
    .await
    .unwrap();
    let id = handler.start(serde_json::json!({"amount": 25})).await;

    // One run of the handler: what a push makes it do, fenced by the push's owner.
    let run = |push: serde_json::Value| async move {
        let client = dispatch_cluster().connect().await;
        let owner = owner(&push);
        let id: uuid::Uuid = push["workflow"].as_str().unwrap().parse().unwrap();
        let steps = &push["steps"];
        if steps.get("debit").is_none() {
            client.batch_execute("BEGIN").await.unwrap();
            client
                .execute("SELECT wf_heartbeat($1, $2)", &[&id, &owner.as_str()])
                .await
                .unwrap();
            client
                .execute("INSERT INTO push_ledger VALUES ($1, 'debit')", &[&id])
                .await
                .unwrap();
            client
                .execute(
                    "SELECT wf_checkpoint($1, 'debit', NULL, $2)",
                    &[&id, &owner.as_str()],
                )
                .await
                .unwrap();
            client.batch_execute("COMMIT").await.unwrap();
        }
        let confirmed: Option<serde_json::Value> = client
            .query_one(
                "SELECT wf_wait($1, 'confirmed', 'payment.confirmed', interval '1 hour', $2)",
                &[&id, &owner.as_str()],
            )
            .await
            .unwrap()
            .get(0);
        let Some(confirmed) = confirmed else {
            return false; // parked: the next push continues
        };
        assert_eq!(confirmed["payload"]["charge"], "ch_1");
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("INSERT INTO push_ledger VALUES ($1, 'credit')", &[&id])
            .await
            .unwrap();
        client
            .execute(
                "SELECT wf_complete($1, '\"transferred\"', $2)",
                &[&id, &owner.as_str()],
            )
            .await
            .unwrap();
        client.batch_execute("COMMIT").await.unwrap();
        true
    };

    let (_, first) = handler.push(1).await;
    assert!(!run(first).await, "the first push debits and waits");
    let status: Option<String> = db
        .query_one("SELECT waiting_for FROM wf_status($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status.as_deref(), Some("payment.confirmed"));
    // The payment provider's webhook arrives.
    db.execute(
        "SELECT wf_signal($1, 'payment.confirmed', '{\"charge\": \"ch_1\"}', idempotency_key => 'evt_1')",
        &[&id],
    )
    .await
    .unwrap();
    let (_, second) = handler.push(2).await;
    assert!(second["steps"].get("debit").is_some(), "{second}");
    assert!(run(second).await, "the second push credits and completes");

    let row = db
        .query_one(
            "SELECT status, output::text, (SELECT string_agg(entry, ',' ORDER BY entry) FROM push_ledger WHERE workflow = $1)
               FROM wf_status($1)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, String>(1),
            row.get::<_, String>(2)
        ),
        (
            "completed".to_string(),
            "\"transferred\"".to_string(),
            "credit,debit".to_string()
        )
    );
    assert_eq!(
        handler.receiver.received(&handler.path).len(),
        2,
        "two pushes"
    );
}

/// A handler that cannot be reached (every push answered 500) is pushed again, to a new
/// owner, each time the lease runs out; a push that never reached its handler is no
/// recovery, so the workflow is not failed for the handler's outage.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_handler_uses_up_no_recoveries() {
    let (handler, _) = handler(vec![Reply::Status(500); 50]).await;
    handler
        .client
        .batch_execute("SET workflow.lease_duration = '1s'")
        .await
        .unwrap();
    let id = handler.start(serde_json::json!({})).await;
    let mut owners = std::collections::BTreeSet::new();
    let mut n = 0;
    while owners.len() < 4 {
        n += 1;
        let (_, push) = handler.push(n).await;
        owners.insert(owner(&push));
    }
    let row = handler
        .client
        .query_one(
            "SELECT status, recovery_attempts FROM wf_status($1)",
            &[&id],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, i32>(1)),
        ("running".to_string(), 0),
        "pushed to {} owners",
        owners.len()
    );
}

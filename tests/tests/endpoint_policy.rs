//! What the owner sets on an endpoint, seen at a real receiver: an update that names one
//! field keeps the others, a rotation signs with both secrets and then with the new one,
//! a publish reaches the matching subscribers only, and a replay sends a window again.

use std::collections::HashSet;
use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::receiver::{Received, Receiver, Reply};
use workflow_tests::{dispatch_cluster, dispatcher_pid, message_reaches, unique, until_true};

const DEADLINE: Duration = Duration::from_secs(30);

async fn setup() -> (Client, Receiver) {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await)
}

async fn enqueue(client: &Client, endpoint: &str) -> i64 {
    client
        .query_one("SELECT wf_enqueue($1, '{\"n\": 1}')", &[&endpoint])
        .await
        .unwrap()
        .get(0)
}

fn verifies(secret: &str, request: &Received) -> bool {
    standardwebhooks::Webhook::new(secret)
        .unwrap()
        .verify(&request.body, &request.headers)
        .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_update_of_the_url_keeps_the_headers_secret_and_settings() {
    let (client, receiver) = setup().await;
    let endpoint = unique("partial");
    let secret: String = client
        .query_one(
            "SELECT wf_endpoint($1, $2, 'generate', '{\"authorization\": \"Bearer t-1\"}',
                                max_attempts => 2)",
            &[&endpoint, &receiver.url("/v1")],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "SELECT wf_endpoint($1, url => $2)",
            &[&endpoint, &receiver.url("/v2")],
        )
        .await
        .unwrap();
    let id = enqueue(&client, &endpoint).await;
    message_reaches(&client, id, "delivered", DEADLINE).await;

    let request = &receiver.wait_for("/v2", 1, DEADLINE).await[0];
    assert_eq!(request.header("authorization"), Some("Bearer t-1"));
    assert!(verifies(&secret, request), "signed with the kept secret");
    // max_attempts 2 is kept too: two 500s make the next message dead.
    receiver.script("/v2", [Reply::Status(500), Reply::Status(500)]);
    let id = enqueue(&client, &endpoint).await;
    assert_eq!(message_reaches(&client, id, "dead", DEADLINE).await, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotation_signs_with_both_secrets_then_with_the_new_one_only() {
    let (client, receiver) = setup().await;
    let endpoint = unique("rotated");
    let old: String = client
        .query_one(
            "SELECT wf_endpoint($1, $2, 'generate')",
            &[&endpoint, &receiver.url("/rotated")],
        )
        .await
        .unwrap()
        .get(0);
    let new: String = client
        .query_one("SELECT wf_endpoint_rotate($1, '3 seconds')", &[&endpoint])
        .await
        .unwrap()
        .get(0);

    let id = enqueue(&client, &endpoint).await;
    message_reaches(&client, id, "delivered", DEADLINE).await;
    let during = &receiver.wait_for("/rotated", 1, DEADLINE).await[0];
    let signatures = during.header("webhook-signature").unwrap();
    assert_eq!(signatures.split(' ').count(), 2, "{signatures}");
    assert!(
        verifies(&old, during),
        "receivers still on the old secret verify"
    );
    assert!(verifies(&new, during), "receivers on the new secret verify");

    until_true(
        &client,
        "the old secret to stop signing",
        "SELECT retiring_secret_count = 0 FROM workflow.endpoints WHERE name = $1",
        &[&endpoint],
        DEADLINE,
    )
    .await;
    let id = enqueue(&client, &endpoint).await;
    message_reaches(&client, id, "delivered", DEADLINE).await;
    let after = &receiver.wait_for("/rotated", 2, DEADLINE).await[1];
    assert_eq!(
        after
            .header("webhook-signature")
            .unwrap()
            .split(' ')
            .count(),
        1
    );
    assert!(verifies(&new, after));
    assert!(!verifies(&old, after), "the old secret no longer signs");
    until_true(
        &client,
        "housekeeping to drop the replaced secret",
        "SELECT retiring_secrets IS NULL FROM workflow.endpoint_settings WHERE name = $1",
        &[&endpoint],
        DEADLINE,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publish_reaches_the_matching_subscribers_only_and_a_rolled_back_one_nobody() {
    let (client, receiver) = setup().await;
    let kind = unique("order").replace('-', "_");
    let created = format!("{kind}.created");
    let shipped = format!("{kind}.shipped");
    let subscribers = [
        ("/all-orders", format!("{{{kind}.*}}")),
        ("/created-only", format!("{{{created}}}")),
        ("/users", "{user.*}".to_string()),
    ];
    let mut secrets = Vec::new();
    for (path, types) in &subscribers {
        let secret: String = client
            .query_one(
                "SELECT wf_endpoint($1, $2, 'generate', event_types => $3::text::text[])",
                &[&unique("sub"), &receiver.url(path), types],
            )
            .await
            .unwrap()
            .get(0);
        secrets.push(secret);
    }

    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT wf_publish($1, '{\"order\": \"rolled back\"}')",
            &[&created],
        )
        .await
        .unwrap();
    client.batch_execute("ROLLBACK").await.unwrap();
    let shipped_ids: Vec<i64> = client
        .query_one(
            "SELECT wf_publish($1, '{\"order\": 1}', idempotency_key => $2)",
            &[&shipped, &format!("{kind}-1")],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(shipped_ids.len(), 1);
    let created_ids: Vec<i64> = client
        .query_one("SELECT wf_publish($1, '{\"order\": 2}')", &[&created])
        .await
        .unwrap()
        .get(0);
    assert_eq!(created_ids.len(), 2);
    for id in shipped_ids.iter().chain(&created_ids) {
        message_reaches(&client, *id, "delivered", DEADLINE).await;
    }

    let all = receiver.received("/all-orders");
    let only = receiver.received("/created-only");
    assert_eq!(
        all.len(),
        2,
        "shipped and created, never the rolled-back one"
    );
    assert_eq!(only.len(), 1);
    assert!(receiver.received("/users").is_empty());
    for request in all.iter().chain(&only) {
        let body: serde_json::Value = serde_json::from_slice(&request.body).unwrap();
        assert!(
            body["type"] == *shipped || body["type"] == *created,
            "{body}"
        );
        assert!(body["timestamp"].is_string(), "{body}");
        assert_ne!(body["data"]["order"], "rolled back");
    }
    assert!(all.iter().all(|r| verifies(&secrets[0], r)));
    assert!(verifies(&secrets[1], &only[0]));
    let shipped_request = all
        .iter()
        .find(|r| serde_json::from_slice::<serde_json::Value>(&r.body).unwrap()["type"] == *shipped)
        .unwrap();
    assert_eq!(
        shipped_request.header("idempotency-key"),
        Some(format!("{kind}-1").as_str()),
        "the caller's key, not the stored per-subscriber one"
    );
    let ids: HashSet<&str> = all
        .iter()
        .chain(&only)
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(ids.len(), 3, "a webhook-id per message");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replay_sends_a_window_of_dead_messages_again_with_their_ids() {
    let (client, receiver) = setup().await;
    let endpoint = unique("replayed");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url("/replayed")],
        )
        .await
        .unwrap();
    receiver.script("/replayed", std::iter::repeat_n(Reply::Status(400), 4));
    let started: std::time::SystemTime =
        client.query_one("SELECT now()", &[]).await.unwrap().get(0);
    let mut ids = Vec::new();
    for _ in 0..4 {
        let id = enqueue(&client, &endpoint).await;
        message_reaches(&client, id, "dead", DEADLINE).await;
        ids.push(id);
    }
    let replayed: i64 = client
        .query_one("SELECT wf_replay($1, $2)", &[&endpoint, &started])
        .await
        .unwrap()
        .get(0);
    assert_eq!(replayed, 4);
    for id in &ids {
        assert_eq!(
            message_reaches(&client, *id, "delivered", DEADLINE).await,
            1
        );
    }
    let received = receiver.received("/replayed");
    assert_eq!(received.len(), 8);
    let distinct: HashSet<&str> = received
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    assert_eq!(
        distinct.len(),
        4,
        "each message again under its own webhook-id"
    );
    let again: i64 = client
        .query_one("SELECT wf_replay($1, $2)", &[&endpoint, &started])
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        again, 0,
        "delivered messages are not in the default statuses"
    );
}

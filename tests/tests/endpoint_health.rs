//! Endpoint health at a real receiver, with `workflow.endpoint_disable_after = 5s`: an
//! endpoint that fails throughout the window is disabled and its messages wait, none lost
//! through the disable and the enable; one that succeeds now and then stays enabled.

use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, dispatch_cluster_with, dispatcher_pid, endpoint_disabled, unique};

const DEADLINE: Duration = Duration::from_secs(60);

fn cluster() -> &'static Cluster {
    dispatch_cluster_with(&["workflow.endpoint_disable_after = '5s'"])
}

async fn setup() -> (Client, Receiver) {
    let client = cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_failing_for_the_whole_window_is_disabled_and_loses_nothing() {
    let (client, receiver) = setup().await;
    let endpoint = unique("down");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url("/down")],
        )
        .await
        .unwrap();
    receiver.always("/down", Reply::Status(503));
    let ids: Vec<i64> = client
        .query(
            "SELECT wf_enqueue($1, jsonb_build_object('n', i)) FROM generate_series(1, 10) i",
            &[&endpoint],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let enqueued = Instant::now();

    endpoint_disabled(&client, &endpoint, DEADLINE).await;
    assert!(
        enqueued.elapsed() >= Duration::from_secs(5),
        "disabled after {:?}",
        enqueued.elapsed()
    );
    let row = client
        .query_one(
            "SELECT disabled_reason, disabled_at - failing_since FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    let reason: String = row.get(0);
    assert!(
        reason.contains("workflow.endpoint_disable_after"),
        "{reason}"
    );
    let stats = client
        .query_one(
            "SELECT (SELECT endpoints_disabled FROM wf_stats()),
                    (SELECT disabled FROM workflow.metrics WHERE endpoint = $1),
                    (SELECT pending FROM workflow.metrics WHERE endpoint = $1)",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert!(stats.get::<_, i64>(0) >= 1);
    assert!(stats.get::<_, bool>(1), "the metrics say it is disabled");
    assert_eq!(stats.get::<_, i64>(2), 10, "every message waits");

    // Disabled: nothing more is sent, whatever is due.
    let sent = receiver.received("/down").len();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        receiver.received("/down").len(),
        sent,
        "a disabled endpoint gets nothing"
    );

    receiver.always("/down", Reply::Status(200));
    client
        .execute("SELECT wf_endpoint_enable($1)", &[&endpoint])
        .await
        .unwrap();
    workflow_tests::until_true(
        &client,
        "every message to be delivered after the enable",
        "SELECT bool_and(status = 'delivered') FROM workflow.messages WHERE id = ANY ($1)",
        &[&ids],
        DEADLINE,
    )
    .await;
    let delivered_ids: std::collections::HashSet<String> = receiver
        .received("/down")
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect();
    assert_eq!(delivered_ids.len(), 10, "each message arrived");
    let failing: bool = client
        .query_one(
            "SELECT failing_since IS NULL AND disabled_at IS NULL FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    assert!(failing, "enabled, and healthy again");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_endpoint_that_succeeds_now_and_then_stays_enabled() {
    let (client, receiver) = setup().await;
    let endpoint = unique("flaky");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url("/flaky")],
        )
        .await
        .unwrap();
    // Three failures for every success, for longer than the window.
    receiver.script(
        "/flaky",
        std::iter::repeat_n([503, 503, 503, 200], 100)
            .flatten()
            .map(Reply::Status),
    );
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(9) {
        client
            .execute("SELECT wf_enqueue($1, '{}')", &[&endpoint])
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let row = client
        .query_one(
            "SELECT disabled_at IS NULL,
                    (SELECT count(*) FROM workflow.attempts a JOIN workflow.outbox m ON m.id = a.message_id
                      WHERE m.endpoint = $1 AND a.status_code = 503),
                    (SELECT count(*) FROM workflow.attempts a JOIN workflow.outbox m ON m.id = a.message_id
                      WHERE m.endpoint = $1 AND a.status_code = 200)
               FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    let (failures, successes): (i64, i64) = (row.get(1), row.get(2));
    assert!(
        failures >= 20 && successes >= 6,
        "{failures} failures, {successes} successes"
    );
    assert!(
        row.get::<_, bool>(0),
        "occasional successes keep it enabled"
    );
}

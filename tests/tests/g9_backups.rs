//! G9: `pg_dump` / `pg_restore` of a database carries its runs, steps, signals, messages,
//! attempts, endpoints (secrets included) and push handlers, and the restored database
//! works: its identities go on from where they were and its endpoints still sign.

use std::time::Duration;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, dispatcher_pid, message_reaches};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_restores_every_row_and_a_restored_endpoint_still_signs() {
    // The dispatcher serves only the restored copy; the source keeps its messages pending.
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.extend([
        "workflow.databases = 'copy'",
        "workflow.poll_interval = '1s'",
    ]);
    let cluster = Cluster::start(&settings);
    let receiver = Receiver::start().await;
    let source = cluster.connect().await;

    let secret: String = source
        .query_one(
            "SELECT wf_endpoint('billing', $1, 'generate', '{\"authorization\": \"Bearer t0ken\"}')",
            &[&receiver.url("/restored")],
        )
        .await
        .unwrap()
        .get(0);
    source
        .batch_execute(
            "SELECT wf_checkpoint(wf_start('order', '{\"order\": 1}', 'order-1'), 'reserve', '{\"ok\": true}');
             SELECT wf_complete(wf_start('order', NULL, 'order-2'), '{\"done\": true}');
             SELECT wf_signal(wf_start('order', NULL, 'order-3'), 'paid', '{\"charge\": \"ch_1\"}', 'evt-1');
             SELECT wf_handler('refund', 'billing');
             SELECT wf_enqueue('billing', '{\"n\": 1}', idempotency_key => 'later', deliver_at => now() + interval '1 day');
             SELECT wf_enqueue('https://example.com/', '{\"n\": 2}', deliver_at => now() + interval '1 day');
             -- A delivered message with an earlier failed attempt in the log, as the dispatcher stores them.
             INSERT INTO workflow.outbox (url, payload, status, attempts, last_attempt, last_started_at,
                                          last_duration_ms, last_status_code, delivered_at, finished_at)
                  VALUES ('https://example.com/', '{\"n\": 3}', 'delivered', 2, 2, now(), 3.5, 200, now(), now());
             INSERT INTO workflow.delivery_attempts (message_id, attempt, started_at, duration_ms, status_code)
                  SELECT id, 1, now() - interval '1 minute', 2.5, 503 FROM workflow.outbox WHERE status = 'delivered';",
        )
        .await
        .unwrap();
    let before: String = source
        .query_one(&workflow_tests::table_digests(&[]), &[])
        .await
        .unwrap()
        .get(0);

    let dump = cluster.socket_dir().join("backup.dump");
    let dump = dump.to_str().unwrap();
    cluster.client_program("pg_dump", &["-Fc", "-f", dump, "-d", &cluster.conninfo()]);
    cluster.psql("CREATE DATABASE copy");
    cluster.client_program("pg_restore", &["-d", &cluster.conninfo_for("copy"), dump]);

    let copy = workflow_tests::connect(&cluster.conninfo_for("copy")).await;
    let after: String = copy
        .query_one(&workflow_tests::table_digests(&[]), &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(before, after, "every table restores row for row");

    // The restored database works: new rows continue the identities, and the restored
    // endpoint signs with the secret it had.
    let max_id: i64 = copy
        .query_one("SELECT max(id) FROM workflow.outbox", &[])
        .await
        .unwrap()
        .get(0);
    let new_id: i64 = copy
        .query_one("SELECT wf_enqueue('billing', '{\"n\": 4}')", &[])
        .await
        .unwrap()
        .get(0);
    assert!(new_id > max_id, "id {new_id} after the restored {max_id}");
    // A copy delivers nothing until it is resumed (G12, tests/tests/copies.rs).
    dispatcher_pid(&copy, DEADLINE).await;
    copy.execute("SELECT wf_dispatch_resume()", &[])
        .await
        .unwrap();
    message_reaches(&copy, new_id, "delivered", DEADLINE).await;
    let received = receiver.wait_for("/restored", 1, DEADLINE).await;
    standardwebhooks::Webhook::new(&secret)
        .unwrap()
        .verify(&received[0].body, &received[0].headers)
        .expect("the restored secret signs");
    assert_eq!(received[0].header("authorization"), Some("Bearer t0ken"));
}

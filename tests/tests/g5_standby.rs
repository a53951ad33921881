//! G5 and read-only functions: on a streaming hot standby the read functions work and the
//! write functions fail with 25006; no dispatcher runs there until it is promoted, and then
//! what the old primary committed is delivered. Read functions assign no transaction id.

use std::time::Duration;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, dispatcher_pid, eventually, message_reaches, sqlstate, unique};

const DEADLINE: Duration = Duration::from_secs(60);

/// Each names both parameters, a workflow ($1) and a message ($2).
const READS: [&str; 4] = [
    "SELECT wf_step($1, 'reserve')::text WHERE $2::bigint IS NOT NULL",
    "SELECT status FROM wf_status($1) WHERE $2::bigint IS NOT NULL",
    "SELECT status FROM wf_message($2) WHERE $1::uuid IS NOT NULL",
    "SELECT pending::text FROM wf_stats() WHERE $1::uuid IS NOT NULL AND $2::bigint IS NOT NULL",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_functions_assign_no_transaction_id() {
    let cluster = workflow_tests::shared_cluster();
    let client = cluster.connect().await;
    let workflow: uuid::Uuid = client
        .query_one("SELECT wf_start($1)", &[&unique("reads")])
        .await
        .unwrap()
        .get(0);
    workflow_tests::checkpoint(&client, workflow, "reserve").await;
    let message: i64 = client
        .query_one("SELECT wf_enqueue('https://example.com/', '{}')", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("BEGIN").await.unwrap();
    for _ in 0..25 {
        for read in READS {
            client.query(read, &[&workflow, &message]).await.unwrap();
        }
    }
    let xid: Option<String> = client
        .query_one("SELECT pg_current_xact_id_if_assigned()::text", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(xid, None, "100 reads assigned a transaction id");
    client.batch_execute("COMMIT").await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_reads_refuses_writes_and_delivers_after_promotion() {
    let primary = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let receiver = Receiver::start().await;
    let on_primary = primary.connect().await;
    dispatcher_pid(&on_primary, DEADLINE).await;
    let workflow: uuid::Uuid = on_primary
        .query_one("SELECT wf_start('order')", &[])
        .await
        .unwrap()
        .get(0);
    workflow_tests::checkpoint(&on_primary, workflow, "reserve").await;
    // Due only once the primary is gone (it is brought forward on the promoted standby):
    // only the new primary can send it.
    let message: i64 = on_primary
        .query_one(
            "SELECT wf_enqueue($1, '{}', deliver_at => now() + interval '1 hour')",
            &[&receiver.url("/after-failover")],
        )
        .await
        .unwrap()
        .get(0);

    let standby = primary.standby();
    let on_standby = standby.connect().await;
    eventually("the standby to replay the message", DEADLINE, || async {
        let found: i64 = on_standby
            .query_one(
                "SELECT count(*) FROM workflow.messages WHERE id = $1",
                &[&message],
            )
            .await
            .ok()?
            .get(0);
        (found == 1).then_some(())
    })
    .await;
    for read in READS {
        on_standby
            .query(read, &[&workflow, &message])
            .await
            .unwrap_or_else(|e| panic!("{read} on the standby: {e}"));
    }
    let running: bool = on_standby
        .query_one("SELECT dispatcher_running FROM wf_stats()", &[])
        .await
        .unwrap()
        .get(0);
    assert!(!running, "no dispatcher on a standby");
    for write in [
        "SELECT wf_start('order')",
        "SELECT wf_checkpoint($1, 'ship')",
        "SELECT wf_complete($1)",
        "SELECT wf_enqueue('https://example.com/', '{}')",
        "SELECT wf_claim('order', 'me')",
    ] {
        let params: &[&(dyn tokio_postgres::types::ToSql + Sync)] = if write.contains("$1") {
            &[&workflow]
        } else {
            &[]
        };
        let error = on_standby.query(write, params).await.unwrap_err();
        assert_eq!(sqlstate(&error), "25006", "{write}: {error}");
        let message = error.as_db_error().map(|e| e.message()).unwrap_or_default();
        assert!(message.contains("hot standby"), "{write}: {message}");
    }

    primary.stop_immediate();
    standby.promote();
    let on_promoted = standby.connect().await;
    dispatcher_pid(&on_promoted, DEADLINE).await;
    on_promoted
        .execute(
            "UPDATE workflow.outbox SET next_attempt_at = now() WHERE id = $1",
            &[&message],
        )
        .await
        .unwrap();
    assert_eq!(
        message_reaches(&on_promoted, message, "delivered", DEADLINE).await,
        1
    );
    assert_eq!(receiver.received("/after-failover").len(), 1);
}

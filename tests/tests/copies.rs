//! G12: a copy never speaks for the original. A database restored from `pg_dump`, or made
//! with `CREATE DATABASE … TEMPLATE`, delivers and pushes nothing until an operator calls
//! `wf_dispatch_resume()`; the SQL API works meanwhile and its messages wait. A pause by
//! hand does the same. (A promoted standby is the same database: the failover tests in
//! `g5_standby.rs` and `outages.rs` run with no step.)

use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, DISPATCHER_SETTINGS, dispatcher_pid, eventually, message_reaches};

const DEADLINE: Duration = Duration::from_secs(60);

/// A cluster whose dispatchers serve only `databases`: the original stays unserved, so its
/// messages stay pending and due, as a busy production database's would at dump time.
fn cluster_serving(databases: &str) -> Cluster {
    let listed = format!("workflow.databases = '{databases}'");
    let mut settings = DISPATCHER_SETTINGS.to_vec();
    settings.extend([listed.as_str(), "workflow.poll_interval = '1s'"]);
    Cluster::start(&settings)
}

/// Fills the original: an endpoint to the receiver, a pushed workflow name, five messages
/// due now, a workflow ready to push, and a dead letter (written as the dispatcher would).
async fn fill_original(original: &Client, receiver: &Receiver) {
    original
        .execute(
            "SELECT wf_endpoint('billing', $1)",
            &[&receiver.url("/billing")],
        )
        .await
        .unwrap();
    original
        .batch_execute(
            "SELECT wf_handler('refund', 'billing');
             SELECT wf_enqueue('billing', jsonb_build_object('n', n)) FROM generate_series(1, 5) n;
             SELECT wf_start('refund', '{\"order\": 7}');
             INSERT INTO workflow.outbox (endpoint, payload, status, attempts, finished_at)
                  VALUES ('billing', '{\"dead\": true}', 'dead', 1, now());",
        )
        .await
        .unwrap();
}

/// Why `client`'s database is paused, once its dispatcher has paused it.
async fn paused_reason(client: &Client) -> String {
    eventually("the copy to be paused", DEADLINE, || async {
        client
            .query_one(
                "SELECT paused_reason FROM wf_stats()
                  WHERE EXISTS (SELECT FROM workflow.dispatch WHERE paused_at IS NOT NULL)",
                &[],
            )
            .await
            .ok()
            .and_then(|row| row.get::<_, Option<String>>(0))
    })
    .await
}

/// What a paused copy must show: nothing attempted, every message pending, nothing at the
/// receiver; then, once resumed, its messages and push delivered, each exactly once.
async fn silent_until_resumed(copy: &Client, receiver: &Receiver, cluster: &Cluster) {
    let reason = paused_reason(copy).await;
    assert!(reason.starts_with("a copy of another database"), "{reason}");
    // Its first round found the copy, before any claim: nothing was tried.
    let tried: i64 = copy
        .query_one(
            "SELECT count(*) FROM workflow.outbox
              WHERE (status = 'pending' AND attempts > 0) OR status = 'delivered'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tried, 0, "a paused copy attempts nothing");
    assert!(receiver.received("/billing").is_empty());
    assert!(
        cluster
            .server_log()
            .contains("workflow dispatcher: delivery paused: a copy of another database"),
        "one log line says why"
    );

    // The SQL API works meanwhile, and what it enqueues waits too.
    let own: i64 = copy
        .query_one("SELECT wf_enqueue('billing', '{\"own\": true}')", &[])
        .await
        .unwrap()
        .get(0);
    let pushes: i64 = copy
        .query_one(
            "SELECT count(*) FROM workflow.outbox WHERE idempotency_key LIKE 'workflow.ready:%'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(pushes, 0, "a paused copy pushes nothing");

    copy.execute("SELECT wf_dispatch_resume()", &[])
        .await
        .unwrap();
    message_reaches(copy, own, "delivered", DEADLINE).await;
    // The five copied messages, its own, and the push of the copied workflow.
    let received = receiver.wait_for("/billing", 7, DEADLINE).await;
    let mut ids: Vec<&str> = received
        .iter()
        .map(|r| r.header("webhook-id").unwrap())
        .collect();
    ids.sort_unstable();
    ids.dedup();
    assert_eq!(ids.len(), 7, "each message once");
    // A dead letter of the original, revived in the resumed copy, is the copy's now: it
    // goes out, and does not pause the copy again.
    let dead: i64 = copy
        .query_one("SELECT id FROM workflow.outbox WHERE status = 'dead'", &[])
        .await
        .unwrap()
        .get(0);
    copy.execute("SELECT wf_retry($1)", &[&dead]).await.unwrap();
    message_reaches(copy, dead, "delivered", DEADLINE).await;
    receiver.wait_for("/billing", 8, DEADLINE).await;
    let reason: Option<String> = copy
        .query_one("SELECT paused_reason FROM wf_stats()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason, None);
}

/// The restore runs while the copy's dispatcher is already serving it: whatever order the
/// restore brings the tables in, it sends nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restored_dump_delivers_nothing_until_resumed() {
    let cluster = cluster_serving("copy");
    let receiver = Receiver::start().await;
    let original = cluster.connect().await;
    fill_original(&original, &receiver).await;

    let dump = cluster.socket_dir().join("original.dump");
    let dump = dump.to_str().unwrap();
    cluster.client_program("pg_dump", &["-Fc", "-f", dump, "-d", &cluster.conninfo()]);
    cluster.psql("CREATE DATABASE copy");
    let copy = workflow_tests::connect(&cluster.conninfo_for("copy")).await;
    dispatcher_pid(&copy, DEADLINE).await;
    cluster.client_program("pg_restore", &["-d", &cluster.conninfo_for("copy"), dump]);

    silent_until_resumed(&copy, &receiver, &cluster).await;
}

/// A dump taken before 0.3.0 carries no identity at all: its rows, restored into 0.3.0,
/// say they were written by no `wf_*` function of this database, and count as a copy's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dump_from_0_2_0_restored_into_0_3_0_is_a_copy_too() {
    let cluster = cluster_serving("copy");
    let receiver = Receiver::start().await;
    cluster.psql("CREATE DATABASE old");
    cluster.psql_in(
        "old",
        &format!(
            "CREATE EXTENSION workflow VERSION '0.2.0';
             INSERT INTO workflow.outbox (url, payload) VALUES ('{}', '{{\"n\": 1}}');",
            receiver.url("/billing")
        ),
    );
    let dump = cluster.socket_dir().join("old.dump");
    let dump = dump.to_str().unwrap();
    cluster.client_program(
        "pg_dump",
        &["-Fc", "-f", dump, "-d", &cluster.conninfo_for("old")],
    );
    cluster.psql("CREATE DATABASE copy");
    cluster.client_program("pg_restore", &["-d", &cluster.conninfo_for("copy"), dump]);
    let copy = workflow_tests::connect(&cluster.conninfo_for("copy")).await;
    let reason = paused_reason(&copy).await;
    assert!(reason.starts_with("a copy of another database"), "{reason}");
    let tried: i64 = copy
        .query_one(
            "SELECT count(*) FROM workflow.outbox WHERE attempts > 0",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(tried, 0);
    assert!(receiver.received("/billing").is_empty());
    copy.execute("SELECT wf_dispatch_resume()", &[])
        .await
        .unwrap();
    receiver.wait_for("/billing", 1, DEADLINE).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_template_copy_delivers_nothing_until_resumed() {
    let cluster = cluster_serving("copy");
    let receiver = Receiver::start().await;
    cluster.psql("CREATE DATABASE original");
    cluster.psql_in("original", "CREATE EXTENSION workflow");
    {
        let original = workflow_tests::connect(&cluster.conninfo_for("original")).await;
        fill_original(&original, &receiver).await;
    } // A template may have no connection while it is copied.
    eventually("the original's connection to close", DEADLINE, || async {
        let admin = cluster.connect().await;
        admin
            .query_one(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = 'original'",
                &[],
            )
            .await
            .ok()
            .filter(|row| row.get::<_, i64>(0) == 0)
    })
    .await;
    cluster.psql("CREATE DATABASE copy TEMPLATE original");
    let copy = workflow_tests::connect(&cluster.conninfo_for("copy")).await;

    silent_until_resumed(&copy, &receiver, &cluster).await;
}

/// `wf_dispatch_pause` by hand: requests wait, the reason shows, nothing is attempted
/// until `wf_dispatch_resume`; then everything goes out. Owner only.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_by_hand_holds_every_message_until_resumed() {
    let cluster = cluster_serving("postgres");
    let receiver = Receiver::start().await;
    let client = cluster.connect().await;
    client
        .execute(
            "SELECT wf_endpoint('billing', $1)",
            &[&receiver.url("/billing")],
        )
        .await
        .unwrap();
    let before = workflow_tests::enqueue(&client, &receiver.url("/before")).await;
    message_reaches(&client, before, "delivered", DEADLINE).await;

    client
        .execute("SELECT wf_dispatch_pause('refreshing staging')", &[])
        .await
        .unwrap();
    eventually("the dispatcher to log the pause", DEADLINE, || async {
        cluster
            .server_log()
            .contains("workflow dispatcher: delivery paused: refreshing staging")
            .then_some(())
    })
    .await;
    let reason: Option<String> = client
        .query_one("SELECT paused_reason FROM wf_stats()", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(reason.as_deref(), Some("refreshing staging"));
    let held: i64 = client
        .query_one("SELECT wf_enqueue('billing', '{\"held\": true}')", &[])
        .await
        .unwrap()
        .get(0);
    // Give the paused dispatcher the rounds in which a missed pause would send it: the
    // enqueue's own wake-up, and a poll.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    client
        .batch_execute("CREATE TEMP TABLE resumed AS SELECT clock_timestamp() AS at")
        .await
        .unwrap();
    client
        .execute("SELECT wf_dispatch_resume()", &[])
        .await
        .unwrap();
    message_reaches(&client, held, "delivered", DEADLINE).await;
    let attempted_while_paused: bool = client
        .query_one(
            "SELECT min(started_at) < (SELECT at FROM resumed)
               FROM workflow.attempts WHERE message_id = $1",
            &[&held],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!attempted_while_paused, "nothing is attempted while paused");
    assert!(
        cluster
            .server_log()
            .contains("workflow dispatcher: delivery resumed")
    );

    // An application role may neither pause nor resume.
    client
        .batch_execute("CREATE ROLE copies_app LOGIN; GRANT workflow_user TO copies_app;")
        .await
        .unwrap();
    let app = workflow_tests::connect(&format!("{} user=copies_app", cluster.conninfo())).await;
    for call in ["SELECT wf_dispatch_pause()", "SELECT wf_dispatch_resume()"] {
        let error = app.execute(call, &[]).await.unwrap_err();
        assert_eq!(workflow_tests::sqlstate(&error), "42501", "{call}");
    }
}

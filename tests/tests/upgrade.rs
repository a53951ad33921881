//! The upgrade path: a database created at 0.1.0 (its frozen install script), filled with
//! workflows, steps, an endpoint and messages, then `ALTER EXTENSION workflow UPDATE`d, has
//! exactly the schema of a fresh install, keeps every row, and its pending messages go out.
//!
//! The 0.1.0 rows are written with plain INSERTs, as 0.1.0 stored them: the functions of
//! the frozen script point at the current library, whose entry points take the current
//! arguments, so calling them would not be calling 0.1.0.

use std::time::Duration;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, Options, dispatcher_pid, eventually, message_reaches};

const DEADLINE: Duration = Duration::from_secs(60);
/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

/// The columns 0.2.0 added to the 0.1.0 tables.
const ADDED_IN_0_2_0: &[&str] = &[
    "outbox.parked",
    "outbox.unpark_successor",
    "outbox.origin",
    "endpoint_settings.unpark_messages",
    "endpoint_settings.max_concurrency",
    "endpoint_settings.rate_per_second",
    "endpoint_settings.event_types",
    "endpoint_settings.retry_schedule",
    "endpoint_settings.retiring_secrets",
    "endpoint_settings.retiring_until",
    "endpoint_settings.failing_since",
    "runs.parent",
    "runs.wait_step",
    "runs.wait_signal",
    "runs.wait_deadline",
    "run_signals",
    "handlers",
];

/// What a 0.1.0 database held after some use: a running workflow with two steps, a
/// completed one, an endpoint with a secret and a header, two pending messages (to a URL
/// and to the endpoint), a delivered one with an earlier failed attempt in the log, and a
/// blocked backlog: a message to a disabled endpoint, and two sharing an ordering key.
fn fill_as_0_1_0(url: &str) -> String {
    format!(
        "INSERT INTO workflow.runs (name, idempotency_key, input, owner, lease_duration, lease_expires_at)
              VALUES ('order', 'order-1', '{{\"order\": 1}}', 'app-1', '1 minute', now() + interval '1 minute');
         INSERT INTO workflow.checkpoints (workflow_id, step, output)
              SELECT id, s.step, s.output FROM workflow.runs,
                     (VALUES ('reserve', '{{\"ok\": true}}'::jsonb), ('charge', 'null')) s(step, output)
               WHERE idempotency_key = 'order-1';
         INSERT INTO workflow.runs (name, status, output, lease_duration, finished_at)
              VALUES ('order', 'completed', '{{\"done\": true}}', '1 minute', now());
         INSERT INTO workflow.endpoint_settings (name, url, secrets, headers, timeout, max_attempts)
              VALUES ('billing', '{url}/endpoint', ARRAY['{SECRET}'], '{{\"authorization\": \"Bearer t0ken\"}}', '5 seconds', 7);
         INSERT INTO workflow.outbox (url, payload, idempotency_key)
              VALUES ('{url}/url', '{{\"to\": \"url\"}}', 'pending-url');
         INSERT INTO workflow.outbox (endpoint, payload, idempotency_key)
              VALUES ('billing', '{{\"to\": \"endpoint\"}}', 'pending-endpoint');
         INSERT INTO workflow.outbox (url, payload, status, attempts, last_attempt, last_started_at,
                                      last_duration_ms, last_status_code, delivered_at, finished_at)
              VALUES ('https://example.com/', '{{\"old\": true}}', 'delivered', 2, 2, now(), 3.5, 200, now(), now());
         INSERT INTO workflow.delivery_attempts (message_id, attempt, started_at, duration_ms, status_code, error)
              SELECT id, 1, now() - interval '1 minute', 2.5, 503, NULL FROM workflow.outbox WHERE status = 'delivered';
         INSERT INTO workflow.endpoint_settings (name, url, disabled_at, disabled_reason)
              VALUES ('paused', '{url}/paused', now(), 'the endpoint answered 410 Gone');
         INSERT INTO workflow.outbox (endpoint, payload, idempotency_key)
              VALUES ('paused', '{{\"to\": \"paused\"}}', 'pending-paused');
         INSERT INTO workflow.outbox (url, payload, ordering_key)
              VALUES ('{url}/keyed', '{{\"n\": 1}}', 'k'), ('{url}/keyed', '{{\"n\": 2}}', 'k');"
    )
}

/// Every object of the extension in database `dbname`, as `pg_dump --schema-only` prints
/// it. pg_dump leaves out an extension's members (it prints only `CREATE EXTENSION`), so
/// they are made free-standing first: this spends the database.
fn extension_schema(cluster: &Cluster, dbname: &str) -> Vec<String> {
    let conninfo = cluster.conninfo_for(dbname);
    // What pg_dump would dump of the tables' rows: in pg_extension, not in the schema.
    let dumped = cluster.client_program(
        "psql",
        &[
            "-X",
            "-At",
            "-d",
            &conninfo,
            "-c",
            "SELECT 'dumped with the database: ' || string_agg(c::regclass::text || ' ' || w, ', ' ORDER BY c::regclass::text)
               FROM pg_catalog.pg_extension e, unnest(e.extconfig, e.extcondition) AS d(c, w)
              WHERE e.extname = 'workflow'",
        ],
    );
    cluster.psql_in(
        dbname,
        "DELETE FROM pg_catalog.pg_depend
          WHERE refclassid = 'pg_catalog.pg_extension'::pg_catalog.regclass AND deptype = 'e'
            AND refobjid = (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'workflow')",
    );
    let dump = cluster.client_program("pg_dump", &["--schema-only", "--no-owner", "-d", &conninfo]);
    String::from_utf8([dumped, dump].concat())
        .expect("psql and pg_dump print UTF-8")
        .lines()
        // Comments, blank lines and pg_dump's per-run \restrict key say nothing of the schema.
        .filter(|line| {
            !line.is_empty()
                && !line.starts_with("--")
                && !line.starts_with("\\restrict")
                && !line.starts_with("\\unrestrict")
        })
        .map(str::to_string)
        .collect()
}

fn assert_same_schema(upgraded: &[String], fresh: &[String]) {
    if upgraded == fresh {
        return;
    }
    let only_upgraded: Vec<&String> = upgraded.iter().filter(|l| !fresh.contains(l)).collect();
    let only_fresh: Vec<&String> = fresh.iter().filter(|l| !upgraded.contains(l)).collect();
    panic!(
        "the upgraded schema differs from a fresh install\n\
         only after the upgrade: {only_upgraded:#?}\nonly in a fresh install: {only_fresh:#?}\n\
         (if both are empty, the same lines come in another order)"
    );
}

fn cluster() -> Cluster {
    Cluster::start_with(Options {
        settings: workflow_tests::DISPATCHER_SETTINGS,
        without_extension: true,
        ..Options::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_filled_0_1_0_database_upgrades_to_the_schema_of_a_fresh_install_and_keeps_its_rows() {
    let cluster = cluster();
    cluster.psql("CREATE DATABASE upgraded");
    cluster.psql("CREATE DATABASE fresh");
    cluster.psql_in("upgraded", "CREATE EXTENSION workflow VERSION '0.1.0'");
    cluster.psql_in("upgraded", &fill_as_0_1_0("https://example.com"));
    cluster.psql_in("fresh", "CREATE EXTENSION workflow");

    let client = workflow_tests::connect(&cluster.conninfo_for("upgraded")).await;
    let digests = workflow_tests::table_digests(ADDED_IN_0_2_0);
    let before: String = client.query_one(&digests, &[]).await.unwrap().get(0);
    client
        .batch_execute("ALTER EXTENSION workflow UPDATE")
        .await
        .unwrap();
    let version: String = client
        .query_one(
            "SELECT extversion FROM pg_extension WHERE extname = 'workflow'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(version, "0.2.0");
    let origins: Vec<Option<String>> = client
        .query(
            "SELECT DISTINCT origin FROM workflow.outbox WHERE url IS NOT NULL",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        origins,
        vec![Some("https://example.com".to_string())],
        "the messages of URL targets have their origin, for the per-destination limit"
    );
    let after: String = client.query_one(&digests, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "every row survives the upgrade unchanged");
    drop(client);

    assert_same_schema(
        &extension_schema(&cluster, "upgraded"),
        &extension_schema(&cluster, "fresh"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_0_1_0_messages_wait_for_the_upgrade_then_go_out_signed() {
    let cluster = cluster();
    let receiver = Receiver::start().await;
    let url = format!("http://127.0.0.1:{}", receiver.port());
    cluster.psql("CREATE EXTENSION workflow VERSION '0.1.0'");
    cluster.psql(&fill_as_0_1_0(&url));
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;

    // The library's statements are for 0.2.0: until the schema is, the dispatcher waits.
    eventually(
        "the dispatcher to ask for the upgrade",
        DEADLINE,
        || async {
            cluster
                .server_log()
                .contains("messages wait until ALTER EXTENSION workflow UPDATE")
                .then_some(())
        },
    )
    .await;
    assert!(receiver.received("/url").is_empty());

    client
        .batch_execute("ALTER EXTENSION workflow UPDATE")
        .await
        .unwrap();
    for key in ["pending-url", "pending-endpoint"] {
        let id: i64 = client
            .query_one(
                "SELECT id FROM workflow.messages WHERE idempotency_key = $1",
                &[&key],
            )
            .await
            .unwrap()
            .get(0);
        message_reaches(&client, id, "delivered", DEADLINE).await;
    }
    let signed = receiver.wait_for("/endpoint", 1, DEADLINE).await;
    standardwebhooks::Webhook::new(SECRET)
        .unwrap()
        .verify(&signed[0].body, &signed[0].headers)
        .expect("the 0.1.0 endpoint's secret still signs");
    assert_eq!(signed[0].header("authorization"), Some("Bearer t0ken"));
    assert_eq!(receiver.received("/url").len(), 1);

    // The blocked backlog: the key's messages one after the other, and the disabled
    // endpoint's message parked until it is enabled.
    let keyed = receiver.wait_for("/keyed", 2, DEADLINE).await;
    let order: Vec<&str> = keyed
        .iter()
        .map(|r| std::str::from_utf8(&r.body).unwrap())
        .collect();
    assert_eq!(order, [r#"{"n": 1}"#, r#"{"n": 2}"#]);
    let paused: i64 = client
        .query_one(
            "SELECT id FROM workflow.outbox WHERE idempotency_key = 'pending-paused'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    eventually(
        "the disabled endpoint's message to be parked",
        DEADLINE,
        || async {
            let parked: Option<String> = client
                .query_one(
                    "SELECT parked::text FROM workflow.outbox WHERE id = $1",
                    &[&paused],
                )
                .await
                .unwrap()
                .get(0);
            (parked.as_deref() == Some("endpoint")).then_some(())
        },
    )
    .await;
    client
        .batch_execute("SELECT wf_endpoint_enable('paused')")
        .await
        .unwrap();
    message_reaches(&client, paused, "delivered", DEADLINE).await;
}

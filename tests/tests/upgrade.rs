//! The upgrade path: databases created at 0.1.0 and at 0.2.0 (their frozen install
//! scripts), filled with what each version stored — workflows, steps, endpoints and
//! messages, and in 0.2.0 signals, children, a wait, a push handler, parked messages and a
//! secret rotation — then `ALTER EXTENSION workflow UPDATE`d (0.1.0 through both upgrade
//! scripts), have exactly the schema of a fresh install, keep every row, and their pending
//! messages go out.
//!
//! The old rows are written with plain INSERTs, as their version stored them: the functions
//! of the frozen scripts point at the current library, whose entry points take the current
//! arguments, so calling them would not be calling the old version.

use std::time::Duration;
use tokio_postgres::Client;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, Options, dispatcher_pid, eventually, message_reaches};

const DEADLINE: Duration = Duration::from_secs(60);
/// The version being built (Cargo.toml): where `ALTER EXTENSION workflow UPDATE` goes.
const CURRENT_VERSION: &str = "0.3.0";
/// The Standard Webhooks specification's example secret.
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
/// The secret that replaced `SECRET` in the 0.2.0 database's rotation.
const ROTATED_SECRET: &str = "whsec_d29ya2Zsb3cgMC4yLjAgcm90YXRpb24h";

/// The columns and tables 0.2.0 added to 0.1.0.
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
    "message_counts",
];

/// The columns 0.3.0 added to the 0.2.0 tables, or computes anew (a URL's origin is
/// canonical from 0.3.0 on: `https://example.com` is `https://example.com:443`).
const ADDED_IN_0_3_0: &[&str] = &[
    "runs.tenant",
    "runs.session_pid",
    "runs.session_started",
    "runs.written_in",
    "outbox.origin",
    "outbox.written_in",
    "outbox.tenant",
];

/// The rows of workflow.message_counts, hashed: `table_digests` leaves that table out.
const MESSAGE_COUNTS_DIGEST: &str =
    "SELECT 'message_counts ' || md5(string_agg(c::text, '|' ORDER BY c::text))
       FROM workflow.message_counts c";

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

/// What a 0.2.0 database held after some use, each of its features in the middle of its
/// work: a running workflow with three steps, one of them a signal it consumed and another
/// signal queued; its child, started for a push handler and now waiting for a signal with a
/// deadline; a completed workflow; an endpoint whose secret rotation is in progress, with
/// its delivery policy set; pending messages to a URL and to that endpoint; and a blocked
/// backlog: a message parked behind a disabled endpoint, one parked behind the head of its
/// ordering key, and one parked at its endpoint's concurrency limit while the endpoint's
/// other message was in flight (delivered since, with an earlier failed attempt in the log,
/// and counted in message_counts beside URL deliveries that retention has removed).
fn fill_as_0_2_0(url: &str) -> String {
    format!(
        "INSERT INTO workflow.runs (name, idempotency_key, input, owner, lease_duration, lease_expires_at)
              VALUES ('order', 'order-1', '{{\"order\": 1}}', 'app-1', '1 minute', now() + interval '1 minute');
         INSERT INTO workflow.checkpoints (workflow_id, step, output)
              SELECT id, s.step, s.output FROM workflow.runs,
                     (VALUES ('reserve', '{{\"ok\": true}}'::jsonb),
                             ('approved', '{{\"signal\": \"approval\", \"payload\": {{\"by\": \"ops\"}}, \"timed_out\": false}}'),
                             ('charge', 'null')) s(step, output)
               WHERE idempotency_key = 'order-1';
         INSERT INTO workflow.run_signals (workflow_id, name, payload, sent_at, consumed_at, consumed_by)
              SELECT id, 'approval', '{{\"by\": \"ops\"}}', now() - interval '1 minute', now(), 'approved'
                FROM workflow.runs WHERE idempotency_key = 'order-1';
         INSERT INTO workflow.run_signals (workflow_id, name, payload, idempotency_key)
              SELECT id, 'note', '{{\"text\": \"gift wrap\"}}', 'note-1' FROM workflow.runs WHERE idempotency_key = 'order-1';
         INSERT INTO workflow.runs (name, idempotency_key, lease_duration, lease_expires_at, parent,
                                    wait_step, wait_signal, wait_deadline)
              SELECT 'shipment', 'shipment-1', '1 minute', now() + interval '1 day', id,
                     'delivered', 'courier', now() + interval '1 day'
                FROM workflow.runs WHERE idempotency_key = 'order-1';
         INSERT INTO workflow.checkpoints (workflow_id, step, output)
              SELECT id, 'label', '{{\"tracking\": \"T1\"}}' FROM workflow.runs WHERE idempotency_key = 'shipment-1';
         INSERT INTO workflow.runs (name, status, output, lease_duration, finished_at)
              VALUES ('order', 'completed', '{{\"done\": true}}', '1 minute', now());
         INSERT INTO workflow.endpoint_settings (name, url, secrets, headers, timeout, max_attempts, rate_per_second,
                                                 event_types, retry_schedule, retiring_secrets, retiring_until)
              VALUES ('billing', '{url}/endpoint', ARRAY['{ROTATED_SECRET}'], '{{\"authorization\": \"Bearer t0ken\"}}',
                      '5 seconds', 7, 50, ARRAY['order.*'], ARRAY['1 second', '1 minute']::interval[],
                      ARRAY['{SECRET}'], now() + interval '1 day');
         INSERT INTO workflow.endpoint_settings (name, url, secrets, failing_since)
              VALUES ('workers', '{url}/handler', ARRAY['{SECRET}'], now() - interval '5 minutes');
         INSERT INTO workflow.handlers (name, endpoint) VALUES ('shipment', 'workers');
         INSERT INTO workflow.endpoint_settings (name, url, max_concurrency) VALUES ('limited', '{url}/limited', 1);
         INSERT INTO workflow.outbox (endpoint, payload, status, attempts, last_attempt, last_started_at,
                                      last_duration_ms, last_status_code, delivered_at, finished_at)
              VALUES ('limited', '{{\"first\": true}}', 'delivered', 2, 2, now(), 3.5, 200, now(), now());
         INSERT INTO workflow.delivery_attempts (message_id, attempt, started_at, duration_ms, status_code, error)
              SELECT id, 1, now() - interval '1 minute', 2.5, 503, NULL FROM workflow.outbox WHERE status = 'delivered';
         INSERT INTO workflow.outbox (endpoint, payload, idempotency_key, parked)
              VALUES ('limited', '{{\"to\": \"limited\"}}', 'pending-limited', 'limit');
         INSERT INTO workflow.message_counts (status, n, endpoint)
              VALUES ('delivered', 1, 'limited'), ('delivered', 3, NULL), ('delivered', -3, NULL);
         INSERT INTO workflow.outbox (url, payload, idempotency_key)
              VALUES ('{url}/url', '{{\"to\": \"url\"}}', 'pending-url');
         INSERT INTO workflow.outbox (endpoint, payload, idempotency_key)
              VALUES ('billing', '{{\"to\": \"endpoint\"}}', 'pending-endpoint');
         INSERT INTO workflow.endpoint_settings (name, url, disabled_at, disabled_reason)
              VALUES ('paused', '{url}/paused', now(), 'the endpoint answered 410 Gone');
         INSERT INTO workflow.outbox (endpoint, payload, idempotency_key, parked)
              VALUES ('paused', '{{\"to\": \"paused\"}}', 'pending-paused', 'endpoint');
         INSERT INTO workflow.outbox (url, payload, ordering_key, parked)
              VALUES ('{url}/keyed', '{{\"n\": 1}}', 'k', NULL), ('{url}/keyed', '{{\"n\": 2}}', 'k', 'ordering_key');"
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

/// `ALTER EXTENSION workflow UPDATE`, which applies the upgrade scripts one after the other
/// from the database's version on.
async fn update(client: &Client) {
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
    assert_eq!(
        version, CURRENT_VERSION,
        "the update goes through every script to the version being built"
    );
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
    // What the two versions since added, which 0.1.0 rows have no values for.
    let digests = workflow_tests::table_digests(&[ADDED_IN_0_2_0, ADDED_IN_0_3_0].concat());
    let before: String = client.query_one(&digests, &[]).await.unwrap().get(0);
    update(&client).await;
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
        vec![Some("https://example.com:443".to_string())],
        "the messages of URL targets have their canonical origin, for the per-destination limit"
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
async fn a_filled_0_2_0_database_upgrades_to_the_schema_of_a_fresh_install_and_keeps_its_rows() {
    let cluster = cluster();
    cluster.psql("CREATE DATABASE upgraded");
    cluster.psql("CREATE DATABASE fresh");
    cluster.psql_in("upgraded", "CREATE EXTENSION workflow VERSION '0.2.0'");
    cluster.psql_in("upgraded", &fill_as_0_2_0("https://example.com"));
    cluster.psql_in("fresh", "CREATE EXTENSION workflow");

    let client = workflow_tests::connect(&cluster.conninfo_for("upgraded")).await;
    // Rows 0.2.0's own writers could have left: an upgrade of impossible rows proves little.
    workflow_tests::assert_invariants(&client).await;
    let digests = format!(
        "SELECT ({}) || E'\\n' || ({MESSAGE_COUNTS_DIGEST})",
        workflow_tests::table_digests(ADDED_IN_0_3_0)
    );
    let before: String = client.query_one(&digests, &[]).await.unwrap().get(0);
    update(&client).await;
    let after: String = client.query_one(&digests, &[]).await.unwrap().get(0);
    assert_eq!(before, after, "every row survives the upgrade unchanged");

    // The 0.2.0 runs read through 0.3.0's view and functions, as work for no tenant.
    let row = client
        .query_one(
            "SELECT count(*), count(tenant) FROM workflow.workflows",
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, i64>(0), row.get::<_, i64>(1)),
        (3, 0),
        "workflow.workflows shows every 0.2.0 run, with no tenant"
    );
    let row = client
        .query_one(
            "SELECT s.name, s.tenant, s.parent = r.parent, s.waiting_for
               FROM workflow.runs r, wf_status(r.id) s
              WHERE r.idempotency_key = 'shipment-1'",
            &[],
        )
        .await
        .unwrap();
    let status: (String, Option<String>, bool, Option<String>) =
        (row.get(0), row.get(1), row.get(2), row.get(3));
    assert_eq!(
        status,
        ("shipment".into(), None, true, Some("courier".into())),
        "wf_status of a 0.2.0 child waiting for a signal: its name, parent and wait, no tenant"
    );
    drop(client);

    assert_same_schema(
        &extension_schema(&cluster, "upgraded"),
        &extension_schema(&cluster, "fresh"),
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_0_1_0_messages_wait_for_the_upgrade_then_go_out_signed() {
    pending_messages_wait_for_the_upgrade_then_go_out_signed("0.1.0", fill_as_0_1_0, &[SECRET])
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pending_0_2_0_messages_wait_for_the_upgrade_then_go_out_signed() {
    // Both secrets of the rotation in progress sign until it ends.
    pending_messages_wait_for_the_upgrade_then_go_out_signed(
        "0.2.0",
        fill_as_0_2_0,
        &[ROTATED_SECRET, SECRET],
    )
    .await;
}

/// A database created at `version` and filled by `fill`, with the dispatcher running: its
/// messages wait until the upgrade, then go out, those to the endpoint signed with each of
/// `secrets`.
async fn pending_messages_wait_for_the_upgrade_then_go_out_signed(
    version: &str,
    fill: fn(&str) -> String,
    secrets: &[&str],
) {
    let cluster = cluster();
    let receiver = Receiver::start().await;
    let url = format!("http://127.0.0.1:{}", receiver.port());
    cluster.psql(&format!("CREATE EXTENSION workflow VERSION '{version}'"));
    cluster.psql(&fill(&url));
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;

    // The library's statements are for the current version: until the schema is, the
    // dispatcher waits.
    let asks = format!(
        "version {version}, the library is {CURRENT_VERSION}; \
         messages wait until ALTER EXTENSION workflow UPDATE"
    );
    eventually(
        "the dispatcher to ask for the upgrade",
        DEADLINE,
        || async { cluster.server_log().contains(&asks).then_some(()) },
    )
    .await;
    assert!(receiver.received("/url").is_empty());
    let pending: Vec<i64> = client
        .query(
            "SELECT id FROM workflow.outbox WHERE status = 'pending' ORDER BY id",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();

    update(&client).await;
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
    for secret in secrets {
        standardwebhooks::Webhook::new(secret)
            .unwrap()
            .verify(&signed[0].body, &signed[0].headers)
            .unwrap_or_else(|e| {
                panic!("the {version} endpoint's secret {secret} no longer signs: {e}")
            });
    }
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

    // And the rest: the 0.2.0 message parked at its endpoint's concurrency limit, which only
    // the old dispatcher's own requests coming back would have let go; the new dispatcher
    // has to find it in the outbox.
    for id in pending {
        message_reaches(&client, id, "delivered", DEADLINE).await;
    }
}

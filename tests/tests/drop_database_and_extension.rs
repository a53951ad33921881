//! The dispatcher and the life of its database: a listed database that does not exist is
//! reported once, naming the setting, and retried with a back-off; `DROP DATABASE` (plain
//! and FORCE) and `DROP EXTENSION` under load are never blocked or deadlocked by it, and it
//! serves a re-created extension without a restart.

use std::time::{Duration, Instant};
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, dispatcher_pid, eventually, message_reaches, unique};

const DEADLINE: Duration = Duration::from_secs(90);

fn count(log: &str, needle: &str) -> usize {
    log.matches(needle).count()
}

async fn load(client: &tokio_postgres::Client, receiver: &Receiver, messages: i32) -> String {
    let path = format!("/{}", unique("load"));
    receiver.script(
        &path,
        vec![Reply::After(Duration::from_millis(100), 200); messages as usize],
    );
    client
        .execute(
            "SELECT wf_enqueue($1, jsonb_build_object('n', n)) FROM generate_series(1, $2) n",
            &[&receiver.url(&path), &messages],
        )
        .await
        .unwrap();
    receiver.wait_for(&path, 1, DEADLINE).await;
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_databases_back_off_and_dropping_a_served_database_is_not_blocked() {
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.extend([
        "workflow.databases = 'postgres, plain_drop, forced_drop'",
        "workflow.poll_interval = '1s'",
    ]);
    let started = Instant::now();
    let cluster = Cluster::start(&settings);

    // Three failed attempts take at least the back-off between them (2 s, then 4 s); a
    // restart every second would make them in about three.
    let missing = "database \"plain_drop\" does not exist";
    eventually("three attempts to reach plain_drop", DEADLINE, || async {
        (count(&cluster.server_log(), missing) >= 3).then_some(())
    })
    .await;
    assert!(
        started.elapsed() >= Duration::from_secs(5),
        "three attempts in {:?}: no back-off",
        started.elapsed()
    );
    let log = cluster.server_log();
    for database in ["plain_drop", "forced_drop"] {
        let explained =
            format!("could not connect to database \"{database}\", which workflow.databases lists");
        assert_eq!(
            count(&log, &explained),
            1,
            "said once for {database}:\n{log}"
        );
    }

    // Once they exist, each gets its dispatcher; under load, both drops go through.
    let receiver = Receiver::start().await;
    for database in ["plain_drop", "forced_drop"] {
        cluster.psql(&format!("CREATE DATABASE {database}"));
        cluster.psql_in(database, "CREATE EXTENSION workflow");
        let client = workflow_tests::connect(&cluster.conninfo_for(database)).await;
        dispatcher_pid(&client, DEADLINE).await;
        load(&client, &receiver, 200).await;
    }
    let dropping = Instant::now();
    cluster.psql("DROP DATABASE plain_drop");
    cluster.psql("DROP DATABASE forced_drop WITH (FORCE)");
    assert!(
        dropping.elapsed() < Duration::from_secs(10),
        "the drops took {:?}",
        dropping.elapsed()
    );
    assert!(
        cluster
            .server_log()
            .contains("workflow dispatcher leaves its database for DROP DATABASE")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drop_extension_during_busy_rounds_neither_blocks_nor_crashes_the_dispatcher() {
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    load(&client, &receiver, 300).await;

    let dropping = Instant::now();
    client
        .batch_execute("SET lock_timeout = '20s'; DROP EXTENSION workflow")
        .await
        .expect("DROP EXTENSION while the dispatcher is busy");
    assert!(dropping.elapsed() < Duration::from_secs(10));

    client
        .batch_execute("RESET lock_timeout; CREATE EXTENSION workflow")
        .await
        .unwrap();
    let path = format!("/{}", unique("after"));
    let id: i64 = workflow_tests::enqueue(&client, &receiver.url(&path)).await;
    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert_eq!(
        dispatcher_pid(&client, DEADLINE).await,
        pid,
        "the same dispatcher serves the new extension"
    );
}

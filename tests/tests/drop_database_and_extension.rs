//! The dispatcher and the life of its database: a listed database that does not exist is
//! reported once, naming the setting, and served within seconds of its creation; `DROP DATABASE` (plain
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
async fn missing_databases_are_said_once_served_once_created_and_dropped_without_waiting() {
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.extend([
        "workflow.databases = 'postgres, plain_drop, forced_drop'",
        "workflow.poll_interval = '1s'",
    ]);
    let cluster = Cluster::start(&settings);
    let said = |database: &str| {
        format!("workflow.databases lists database \"{database}\", which does not exist")
    };
    eventually("the launcher to say both are missing", DEADLINE, || async {
        let log = cluster.server_log();
        (count(&log, &said("plain_drop")) == 1 && count(&log, &said("forced_drop")) == 1)
            .then_some(())
    })
    .await;

    // Once they exist, each gets its dispatcher within seconds; under load, both drops go
    // through.
    let receiver = Receiver::start().await;
    for database in ["plain_drop", "forced_drop"] {
        let created = Instant::now();
        cluster.psql(&format!("CREATE DATABASE {database}"));
        let client = workflow_tests::connect(&cluster.conninfo_for(database)).await;
        dispatcher_pid(&client, DEADLINE).await;
        assert!(
            created.elapsed() < Duration::from_secs(10),
            "{database} got its dispatcher {:?} after CREATE DATABASE",
            created.elapsed()
        );
        cluster.psql_in(database, "CREATE EXTENSION workflow");
        load(&client, &receiver, 200).await;
    }
    // Seconds of looking for them said it once, and no dispatcher tried to connect to a
    // database that did not exist.
    let log = cluster.server_log();
    for database in ["plain_drop", "forced_drop"] {
        assert_eq!(
            count(&log, &said(database)),
            1,
            "said once for {database}:\n{log}"
        );
        let refused = format!("database \"{database}\" does not exist");
        assert_eq!(
            count(&log, &refused),
            0,
            "a dispatcher tried {database}:\n{log}"
        );
    }
    // A drop that cannot go ahead (not the owner's) does not send the dispatcher away:
    // the same one delivers at once.
    let plain = workflow_tests::connect(&cluster.conninfo_for("plain_drop")).await;
    let serving = dispatcher_pid(&plain, DEADLINE).await;
    cluster.psql("CREATE ROLE not_the_owner LOGIN");
    let stranger =
        workflow_tests::connect(&format!("{} user=not_the_owner", cluster.conninfo())).await;
    let refused = stranger
        .batch_execute("DROP DATABASE plain_drop")
        .await
        .unwrap_err();
    assert_eq!(workflow_tests::sqlstate(&refused), "42501");
    let refused_at = Instant::now();
    load(&plain, &receiver, 1).await;
    assert!(refused_at.elapsed() < Duration::from_secs(5));
    assert_eq!(dispatcher_pid(&plain, DEADLINE).await, serving);
    assert!(!cluster.server_log().contains("leaves its database"));
    drop(plain);

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

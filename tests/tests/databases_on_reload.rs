//! `workflow.databases` takes effect on reload: a database added to the list gets its
//! dispatcher within seconds, one taken off loses it, and the others keep theirs. The
//! launcher that does this can itself be terminated without doubling any dispatcher.

use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, backend_exits, dispatcher_pid, eventually, message_reaches};

const DEADLINE: Duration = Duration::from_secs(60);
/// What the issue asks: a dispatcher within seconds of the reload or of the creation.
const WITHIN: Duration = Duration::from_secs(10);

async fn reload_with(admin: &Client, databases: &str) {
    let set = format!("ALTER SYSTEM SET workflow.databases = '{databases}'");
    admin.batch_execute(&set).await.unwrap();
    admin
        .batch_execute("SELECT pg_reload_conf()")
        .await
        .unwrap();
}

async fn dispatchers(admin: &Client) -> Vec<(String, i32)> {
    admin
        .query(
            "SELECT datname::text, pid FROM pg_stat_activity \
             WHERE backend_type = 'workflow dispatcher' ORDER BY datname",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn databases_added_or_removed_on_reload_get_or_lose_their_dispatcher() {
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let admin = cluster.connect().await;
    let first = dispatcher_pid(&admin, DEADLINE).await;
    cluster.psql("CREATE DATABASE added");
    cluster.psql_in("added", "CREATE EXTENSION workflow");
    let added = workflow_tests::connect(&cluster.conninfo_for("added")).await;
    assert_eq!(
        dispatchers(&admin).await,
        vec![("postgres".to_string(), first)],
        "an unlisted database has no dispatcher"
    );

    // Listed by reload, one that exists and one created afterwards.
    let reloaded = Instant::now();
    reload_with(&admin, "postgres, added, created_later").await;
    dispatcher_pid(&added, DEADLINE).await;
    assert!(
        reloaded.elapsed() < WITHIN,
        "a dispatcher {:?} after the reload",
        reloaded.elapsed()
    );
    let receiver = Receiver::start().await;
    let id: i64 = added
        .query_one("SELECT wf_enqueue($1, '{}')", &[&receiver.url("/added")])
        .await
        .unwrap()
        .get(0);
    message_reaches(&added, id, "delivered", DEADLINE).await;

    let created = Instant::now();
    cluster.psql("CREATE DATABASE created_later");
    let later = workflow_tests::connect(&cluster.conninfo_for("created_later")).await;
    dispatcher_pid(&later, DEADLINE).await;
    assert!(
        created.elapsed() < WITHIN,
        "a dispatcher {:?} after CREATE DATABASE",
        created.elapsed()
    );

    // Off the list: its dispatcher leaves; the others stay as they were.
    let leaving = dispatcher_pid(&added, DEADLINE).await;
    reload_with(&admin, "postgres, created_later").await;
    backend_exits(&admin, leaving, WITHIN).await;
    let running = dispatchers(&admin).await;
    assert_eq!(running.len(), 2, "{running:?}");
    assert!(
        running.contains(&("postgres".to_string(), first)),
        "{running:?}"
    );
    assert!(
        running.iter().all(|(database, _)| database != "added"),
        "{running:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminated_launcher_comes_back_without_doubling_dispatchers() {
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let admin = cluster.connect().await;
    let dispatcher = dispatcher_pid(&admin, DEADLINE).await;
    let launcher_pid = "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflow launcher'";
    let launcher: i32 = admin.query_one(launcher_pid, &[]).await.unwrap().get(0);
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&launcher])
        .await
        .unwrap();
    backend_exits(&admin, launcher, DEADLINE).await;
    eventually("the launcher to come back", DEADLINE, || async {
        admin
            .query_opt(launcher_pid, &[])
            .await
            .unwrap()
            .map(|_| ())
    })
    .await;

    // The new launcher found the dispatcher in its slot: it still serves, alone. A reload
    // that changes nothing changes nothing either.
    reload_with(&admin, "postgres").await;
    let receiver = Receiver::start().await;
    let id: i64 = admin
        .query_one("SELECT wf_enqueue($1, '{}')", &[&receiver.url("/after")])
        .await
        .unwrap()
        .get(0);
    message_reaches(&admin, id, "delivered", DEADLINE).await;
    assert_eq!(
        dispatchers(&admin).await,
        vec![("postgres".to_string(), dispatcher)]
    );

    // A dispatcher terminated is started again by the adopting launcher.
    admin
        .execute("SELECT pg_terminate_backend($1)", &[&dispatcher])
        .await
        .unwrap();
    backend_exits(&admin, dispatcher, DEADLINE).await;
    let again = dispatcher_pid(&admin, WITHIN).await;
    assert_ne!(again, dispatcher);
    assert_eq!(dispatchers(&admin).await.len(), 1);
}

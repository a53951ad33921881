//! The examples in `examples/`, each run as its README says against a cluster with the
//! dispatcher, and what they did checked again from the database. Each example checks its
//! own story as it goes and prints `ok` last; the test also checks that it exits cleanly.
//! Their packages come from the registries at the versions their lock files pin, installed
//! by `scripts/setup.sh`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use workflow_tests::tokio_postgres::Client;
use workflow_tests::{Cluster, dispatch_cluster, eventually};

fn example_dir(language: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(language)
}

/// Runs `program args` in the example's folder with the libpq environment of `cluster`, and
/// returns its output; panics with all of it unless it exits cleanly, saying `ok` last.
fn run_example(cluster: &Cluster, language: &str, program: &Path, args: &[&str]) -> String {
    let output = Command::new(program)
        .args(args)
        .current_dir(example_dir(language))
        .env("PGHOST", cluster.socket_dir())
        .env("PGPORT", cluster.port().to_string())
        .env("PGUSER", "postgres")
        .env("PGDATABASE", "postgres")
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (has scripts/setup-tests.sh run?)",
                program.display()
            )
        });
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success() && stdout.lines().last() == Some("ok"),
        "the {language} example failed ({}):\n{stdout}\n{stderr}",
        output.status
    );
    stdout
}

/// Waits until the count `sql` returns is `expected`: an example ends when its receivers
/// have what they wait for, and the dispatcher records the last answers a moment later.
async fn count_reaches(client: &Client, sql: &str, expected: i64, what: &str) {
    eventually(what, Duration::from_secs(30), || async {
        let count: i64 = client.query_one(sql, &[]).await.unwrap().get(0);
        (count == expected).then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn python_order_service_and_worker_pool() {
    let cluster = dispatch_cluster();
    let python = example_dir("python").join(".venv/bin/python");
    let said = run_example(cluster, "python", &python, &["run.py"]);
    assert!(said.contains("killed with SIGKILL"), "{said}");
    let client = cluster.connect().await;
    count_reaches(
        &client,
        "SELECT count(*) FROM workflow.workflows WHERE name = 'order' AND status = 'completed'",
        4,
        "the four orders completed",
    )
    .await;
    count_reaches(
        &client,
        "SELECT count(*) FROM workflow.messages
          WHERE endpoint = 'email-service' AND status = 'delivered'",
        8,
        "a placed and a shipped email per order",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn node_transfer_through_a_push_handler() {
    let cluster = dispatch_cluster();
    let said = run_example(cluster, "node", Path::new("node"), &["run.js"]);
    assert!(said.contains("one refunded"), "{said}");
    let client = cluster.connect().await;
    count_reaches(
        &client,
        "SELECT count(*) FROM workflow.workflows WHERE name = 'transfer'
               AND status IN ('completed', 'failed')",
        2,
        "both transfers finished",
    )
    .await;
    count_reaches(
        &client,
        // A push still pending when its workflow finished is cancelled (G10): the example's
        // twin of a timed-out push may be one.
        "SELECT count(*) FROM workflow.messages WHERE endpoint = 'transfer-handler'
               AND status NOT IN ('delivered', 'cancelled')",
        0,
        "every push was answered 2xx, or cancelled by its workflow's finish",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread")]
async fn rust_serializable_transfers_with_fan_out() {
    let cluster = dispatch_cluster();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let said = run_example(
        cluster,
        "rust",
        Path::new(&cargo),
        &["run", "--quiet", "-p", "workflow-example-rust"],
    );
    assert!(said.contains("retries on serialization failures"), "{said}");
    let client = cluster.connect().await;
    count_reaches(
        &client,
        "SELECT count(*) FROM workflow.messages WHERE endpoint IN ('ledger', 'notifications')
               AND status = 'delivered'",
        40,
        "twenty events to each subscriber",
    )
    .await;
}

//! The README's "From zero to a verified webhook", run as a newcomer would run it: its
//! receiver, its endpoint and its enqueue, taken from the README itself (the blocks after
//! the `<!-- quickstart:… -->` markers), against a cluster with the dispatcher.

use std::io::{BufRead, BufReader};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;
use workflow_tests::{Cluster, Helper, dispatch_cluster, eventually, message_reaches};

/// The README's receiver listens on this port.
const RECEIVER_PORT: u16 = 8000;

/// The fenced block that follows `<!-- quickstart:{name} -->` in the README.
fn readme_block(name: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md"))
            .expect("README.md");
    let marker = format!("<!-- quickstart:{name} -->");
    let after = &readme[readme
        .find(&marker)
        .unwrap_or_else(|| panic!("no {marker}"))..];
    let body = &after[after.find("```").expect("a block")..];
    let body = &body[body.find('\n').expect("a fence line") + 1..];
    body[..body.find("```").expect("the block's end")].to_owned()
}

/// Runs the README's block `name` as a psql script, as its reader does; returns what psql
/// printed. A file, not `-c`, so that its `\gset` and `:id` work.
fn run_block(cluster: &Cluster, name: &str) -> String {
    let script =
        std::env::temp_dir().join(format!("workflow-readme-{name}-{}.sql", std::process::id()));
    std::fs::write(&script, readme_block(name)).unwrap();
    let conninfo = cluster.conninfo();
    let printed = cluster.client_program(
        "psql",
        &[
            "-X",
            "-At",
            "-v",
            "ON_ERROR_STOP=1",
            "-d",
            &conninfo,
            "-f",
            script.to_str().unwrap(),
        ],
    );
    let _ = std::fs::remove_file(&script);
    String::from_utf8_lossy(&printed).into_owned()
}

#[tokio::test(flavor = "multi_thread")]
async fn a_newcomer_gets_a_verified_webhook() {
    let cluster = dispatch_cluster();
    let secret = run_block(cluster, "endpoint").trim().to_owned();
    assert!(secret.starts_with("whsec_"), "{secret}");

    assert!(
        TcpStream::connect(("127.0.0.1", RECEIVER_PORT)).is_err(),
        "something else listens on port {RECEIVER_PORT}, where the README's receiver listens"
    );
    let script = std::env::temp_dir().join(format!(
        "workflow-readme-receiver-{}.py",
        std::process::id()
    ));
    std::fs::write(&script, readme_block("receiver")).unwrap();
    let python = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/python/.venv/bin/python");
    let mut receiver = Helper(
        Command::new(&python)
            .arg(&script)
            .arg(&secret)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "{}: {e} (has scripts/setup-tests.sh run?)",
                    python.display()
                )
            }),
    );
    let (lines, said) = mpsc::channel();
    let stdout = receiver.0.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    eventually(
        "the receiver to listen",
        Duration::from_secs(10),
        || async { TcpStream::connect(("127.0.0.1", RECEIVER_PORT)).ok() },
    )
    .await;

    run_block(cluster, "enqueue");

    let line = said
        .recv_timeout(Duration::from_secs(30))
        .expect("the receiver printed nothing");
    assert!(
        line.starts_with("verified msg_") && line.contains("greeting.created"),
        "{line}"
    );
    let client = cluster.connect().await;
    let id: i64 = client
        .query_one(
            "SELECT id FROM workflow.messages WHERE endpoint = 'hello'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, id, "delivered", Duration::from_secs(30)).await;
    let _ = std::fs::remove_file(&script);
}

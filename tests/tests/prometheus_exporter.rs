//! The shipped queries file, `monitoring/postgres_exporter.yaml`, loaded by Debian's
//! `prometheus-postgres-exporter` against a real cluster, as a role with nothing but
//! `workflow_user`, and its `/metrics` scraped over HTTP.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Helper, dispatch_cluster, enqueue, eventually, free_port, message_reaches};

const EXPORTER: &str = "/usr/bin/prometheus-postgres-exporter";

/// The body of `GET /metrics`, or None while the exporter is not listening yet.
fn scrape(port: u16) -> Option<String> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    write!(stream, "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.0 200").then(|| body.to_owned())
}

/// The value of the sample of metric `name` whose labels include `labels`.
fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let has_labels = labels
            .iter()
            .all(|(label, wanted)| rest.contains(&format!("{label}=\"{wanted}\"")));
        (metric == name && has_labels).then(|| value.parse().ok())?
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn the_exporter_serves_the_shipped_queries() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::Status(404));
    client
        .batch_execute(&format!(
            "CREATE ROLE exporter LOGIN;
             GRANT workflow_user TO exporter;
             SELECT wf_endpoint('scraped', '{}');",
            receiver.url("/up")
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        let id: i64 = client
            .query_one("SELECT wf_enqueue('scraped', '{}')", &[])
            .await
            .unwrap()
            .get(0);
        message_reaches(&client, id, "delivered", Duration::from_secs(30)).await;
    }
    let dead = enqueue(&client, &receiver.url("/down")).await;
    message_reaches(&client, dead, "dead", Duration::from_secs(30)).await;
    client
        .batch_execute(
            "SELECT wf_start('scraped.flow', owner => 'me');
             SELECT wf_sleep(wf_start('scraped.flow'), 'nap', now());
             SELECT wf_complete(wf_start('scraped.flow'));",
        )
        .await
        .unwrap();

    let port = free_port();
    let queries =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/postgres_exporter.yaml");
    let _exporter = Helper(
        Command::new(EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--extend.query-path={}", queries.display()))
            .env(
                "DATA_SOURCE_NAME",
                format!(
                    "host={} port={} user=exporter dbname=postgres sslmode=disable",
                    cluster.socket_dir().display(),
                    cluster.port()
                ),
            )
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("{EXPORTER}: {e} (has scripts/setup-tests.sh run?)")),
    );
    let metrics = eventually(
        "a scrape with the workflow metrics",
        Duration::from_secs(30),
        || async { scrape(port).filter(|m| m.contains("workflow_dispatcher_up")) },
    )
    .await;

    let expect = |name: &str, labels: &[(&str, &str)], value: f64| {
        assert_eq!(
            sample(&metrics, name, labels),
            Some(value),
            "{name} {labels:?} in:\n{metrics}"
        );
    };
    expect("workflow_dispatcher_up", &[], 1.0);
    let scraped = [("endpoint", "scraped")];
    expect("workflow_endpoint_delivered_total", &scraped, 3.0);
    expect("workflow_endpoint_pending", &scraped, 0.0);
    expect("workflow_endpoint_disabled", &scraped, 0.0);
    expect("workflow_endpoint_dead_total", &[("endpoint", "")], 1.0);
    let flow = [("name", "scraped.flow")];
    expect("workflow_workflows_leased", &flow, 1.0);
    expect("workflow_workflows_ready", &flow, 1.0);
    expect("workflow_workflows_completed_last_minute", &flow, 1.0);
    expect("pg_exporter_user_queries_load_error", &[], 0.0);
    assert!(
        !metrics.contains("pg_exporter_last_scrape_error 1"),
        "a query failed:\n{metrics}"
    );
}

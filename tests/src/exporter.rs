//! Debian's `prometheus-postgres-exporter` with the shipped queries file, and reading what
//! it serves.

use crate::{Cluster, Helper};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

pub const EXPORTER: &str = "/usr/bin/prometheus-postgres-exporter";

/// The body of `GET /metrics`, or None while the exporter is not listening yet.
pub fn scrape(port: u16) -> Option<String> {
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
pub fn sample(metrics: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    metrics.lines().find_map(|line| {
        let (series, value) = line.rsplit_once(' ')?;
        let (metric, rest) = series.split_once('{').unwrap_or((series, "}"));
        let has_labels = labels
            .iter()
            .all(|(label, wanted)| rest.contains(&format!("{label}=\"{wanted}\"")));
        (metric == name && has_labels).then(|| value.parse().ok())?
    })
}

/// Debian's exporter with the shipped queries, as the role `exporter`, listening on `port`;
/// stopped when the returned helper is dropped.
pub fn start_exporter(cluster: &Cluster, port: u16, extra_args: &[&str]) -> Helper {
    let queries =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/postgres_exporter.yaml");
    Helper(
        Command::new(EXPORTER)
            .arg(format!("--web.listen-address=127.0.0.1:{port}"))
            .arg(format!("--extend.query-path={}", queries.display()))
            .args(extra_args)
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
    )
}

/// Asserts the value of the sample of `name` whose labels include `labels`.
pub fn expect(metrics: &str, name: &str, labels: &[(&str, &str)], value: f64) {
    assert_eq!(
        sample(metrics, name, labels),
        Some(value),
        "{name} {labels:?} in:\n{metrics}"
    );
}

//! B11 and B12: what the per-destination limits give. B11 measures a healthy
//! destination's commit-to-receipt latency beside an endpoint that hangs with a backlog,
//! against the same without it; B12 measures the rate a limited endpoint receives against
//! the rate it is limited to.

use crate::{Sizes, percentile, start_receiver};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::Cluster;
use workflow_tests::receiver::{Receiver, commit_to_receipt};

/// `workflow.max_concurrency_per_destination`'s default.
const DEFAULT_PER_DESTINATION: usize = 16;
/// The hanging endpoint's backlog.
pub const BACKLOG: i32 = 1000;
/// The rates B12 limits an endpoint to, per second.
pub const RATES: [f64; 3] = [20.0, 200.0, 2000.0];
/// B12 sends this many seconds of each rate (at least 100 messages).
const RATE_SECONDS: f64 = 5.0;
const QUICK_RATE_SECONDS: f64 = 2.0;

/// B11: the p99 commit-to-receipt times (ms) of a healthy endpoint at 100 messages a
/// second with a hanging endpoint's backlog beside it, and without, one pair per run. The
/// cluster runs with the default `workflow.max_concurrency_per_destination` for it.
pub async fn b11(cluster: &Cluster, client: &Client, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
    // The extension's default, which the cluster's settings raise for the drains.
    cluster.psql(&format!(
        "ALTER SYSTEM SET workflow.max_concurrency_per_destination = {DEFAULT_PER_DESTINATION}"
    ));
    cluster.psql("SELECT pg_reload_conf()");
    let receiver = Receiver::start().await;
    // Answers after ten minutes: every request hangs until the request timeout.
    let (_hanging, hanging_url) = start_receiver(Duration::from_secs(600));
    client
        .execute("SELECT wf_endpoint('b11-hanging', $1)", &[&hanging_url])
        .await
        .expect("endpoint");
    let n = sizes.latency_messages / 2;
    let (mut beside, mut alone) = (Vec::new(), Vec::new());
    for run in 0..sizes.runs {
        let without = p99(client, &receiver, &format!("/alone-{run}"), n).await;
        client
            .execute(
                "SELECT wf_enqueue('b11-hanging', '{}') FROM generate_series(1, $1)",
                &[&BACKLOG],
            )
            .await
            .expect("backlog");
        // Until the hanging endpoint holds all the requests it may: its whole share, or,
        // once 0.3.0 found it failing (in an earlier run), the one probe it is allowed.
        // (The state is read through to_jsonb: 0.2.0's view has no such column.)
        let deadline = Instant::now() + Duration::from_secs(30);
        while crate::count(
            client,
            "SELECT CASE WHEN (SELECT to_jsonb(e)->>'state' FROM workflow.endpoints e
                                WHERE e.name = 'b11-hanging') = 'failing'
                         THEN 2147483647
                         ELSE (SELECT count(*) FROM workflow.outbox
                                WHERE endpoint = 'b11-hanging' AND leased_until > now()) END",
        )
        .await
            < DEFAULT_PER_DESTINATION as i64
        {
            assert!(
                Instant::now() < deadline,
                "the hanging endpoint got no requests"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let with = p99(client, &receiver, &format!("/beside-{run}"), n).await;
        eprintln!(
            "  run {}: p99 {with:.2} ms beside the hanging endpoint, {without:.2} ms without",
            run + 1
        );
        beside.push(with);
        alone.push(without);
        client
            .batch_execute("DELETE FROM workflow.outbox WHERE endpoint = 'b11-hanging'")
            .await
            .expect("clear the backlog");
        // The requests in flight end at the request timeout.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }
    client
        .batch_execute(
            "DELETE FROM workflow.outbox WHERE endpoint = 'b11-hanging';
             DELETE FROM workflow.endpoint_settings WHERE name = 'b11-hanging';",
        )
        .await
        .expect("clean up");
    cluster.psql("ALTER SYSTEM RESET workflow.max_concurrency_per_destination");
    cluster.psql("SELECT pg_reload_conf()");
    (beside, alone)
}

/// The p99 (ms) of `n` commit-to-receipt times at 100 messages a second to `path` of the
/// receiver, a URL target (a destination of its own, its origin), as B5 measures them.
async fn p99(client: &Client, receiver: &Receiver, path: &str, n: usize) -> f64 {
    let mut times = Vec::with_capacity(n);
    let mut next = Instant::now();
    for arrival in 0..n {
        next += Duration::from_millis(10);
        tokio::time::sleep_until(next.into()).await;
        let took =
            commit_to_receipt(client, receiver, path, arrival, Duration::from_secs(30)).await;
        times.push(took.as_secs_f64() * 1000.0);
    }
    percentile(&times, 0.99)
}

/// B12: for each of [`RATES`], the rates achieved at the receiver and the ones configured,
/// one pair per run.
pub async fn b12(client: &Client, sizes: Sizes, quick: bool) -> Vec<(f64, Vec<f64>, Vec<f64>)> {
    let receiver = Receiver::start().await;
    let seconds = if quick {
        QUICK_RATE_SECONDS
    } else {
        RATE_SECONDS
    };
    let mut results = Vec::new();
    for rate in RATES {
        let endpoint = format!("b12-{rate}");
        let n = ((rate * seconds) as i32).max(100);
        let (mut achieved, mut configured) = (Vec::new(), Vec::new());
        for run in 0..sizes.runs {
            let path = format!("/paced-{rate}-{run}");
            client
                .execute(
                    "SELECT wf_endpoint($1, $2, rate_per_second => $3::float8::numeric)",
                    &[&endpoint, &receiver.url(&path), &rate],
                )
                .await
                .expect("endpoint");
            client
                .execute(
                    "SELECT wf_enqueue($1, '{}') FROM generate_series(1, $2)",
                    &[&endpoint, &n],
                )
                .await
                .expect("enqueue");
            let deadline = Duration::from_secs_f64(n as f64 / rate * 3.0 + 30.0);
            let received = receiver.wait_for(&path, n as usize, deadline).await;
            let span = received[n as usize - 1].at - received[0].at;
            let got = (n - 1) as f64 / span.as_secs_f64();
            eprintln!("  {rate}/s, run {}: {got:.1}/s over {n} messages", run + 1);
            achieved.push(got);
            configured.push(rate);
            client
                .execute(
                    "DELETE FROM workflow.outbox WHERE endpoint = $1",
                    &[&endpoint],
                )
                .await
                .expect("clean up");
        }
        results.push((rate, achieved, configured));
    }
    results
}

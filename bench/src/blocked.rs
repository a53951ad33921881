//! B8: the drain beside a blocked backlog. Two databases, each served by its own
//! dispatcher with the same settings: `BLOCKED_DB` holds 100,000 messages that cannot go
//! (behind a disabled endpoint, and behind ordering-key heads that wait for it), the
//! benchmark database none. Runs alternate between the two; the ratio is the drain rate
//! beside the backlog over the rate without it, so a claim whose cost grew with the
//! blocked backlog shows as a ratio under 1.

use super::{Sizes, count, cpu_of_pid, median, preload, release_and_drain};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::{Cluster, dispatcher_pid};

/// The second database, listed in `workflow.databases`.
pub const BLOCKED_DB: &str = "blocked";
pub const BLOCKED: i64 = 100_000;
pub const KEYS: i64 = 1_000;

/// Made before any benchmark runs: the dispatcher of a listed database that does not exist
/// yet backs off, up to minutes.
pub fn create_database(cluster: &Cluster) {
    cluster.psql(&format!("CREATE DATABASE {BLOCKED_DB}"));
    cluster.psql_in(BLOCKED_DB, "CREATE EXTENSION workflow");
}

/// Half the backlog to a disabled endpoint; the other half behind `KEYS` ordering keys
/// whose heads go to that endpoint. Returns once the dispatcher has parked all of it, and
/// how long that took.
async fn block(client: &Client, url: &str) -> Duration {
    let per_key = BLOCKED / 2 / KEYS;
    client
        .batch_execute(&format!(
            "SELECT wf_endpoint('disabled', '{url}');
             UPDATE workflow.endpoint_settings SET disabled_at = now(), disabled_reason = 'B8'
              WHERE name = 'disabled';
             SELECT count(wf_enqueue('disabled', '{{\"bench\": \"blocked\"}}'))
               FROM generate_series(1, {plain}) n;
             SELECT count(wf_enqueue('disabled', '{{\"bench\": \"blocked\"}}', ordering_key => 'k' || k))
               FROM generate_series(1, {KEYS}) k;
             SELECT count(wf_enqueue('{url}', '{{\"bench\": \"blocked\"}}', ordering_key => 'k' || k))
               FROM generate_series(1, {KEYS}) k, generate_series(2, {per_key}) i;",
            plain = BLOCKED / 2,
        ))
        .await
        .expect("the blocked backlog");
    let started = Instant::now();
    while count(
        client,
        "SELECT count(*) FROM workflow.outbox WHERE parked IS NOT NULL",
    )
    .await
        < BLOCKED
    {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "the backlog was not parked"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    started.elapsed()
}

/// Deletes a drain's messages (not the blocked backlog) and vacuums, the same in both
/// databases.
async fn clear_drained(client: &Client) {
    for statement in [
        "DELETE FROM workflow.outbox WHERE status <> 'pending'",
        "TRUNCATE workflow.delivery_attempts",
        "VACUUM workflow.outbox",
    ] {
        client.batch_execute(statement).await.expect(statement);
    }
}

/// Drain rates (deliveries a second) without and beside the backlog, and the dispatchers'
/// CPU per 10,000 deliveries, one pair per run.
pub struct Rates {
    pub without: Vec<f64>,
    pub beside: Vec<f64>,
    pub cpu_without: Vec<f64>,
    pub cpu_beside: Vec<f64>,
}

pub async fn run(cluster: &Cluster, client: &Client, url: &str, sizes: Sizes) -> Rates {
    let blocked = workflow_tests::connect(&cluster.conninfo_for(BLOCKED_DB)).await;
    let dispatchers = [
        dispatcher_pid(client, Duration::from_secs(60)).await,
        dispatcher_pid(&blocked, Duration::from_secs(600)).await,
    ];
    let parked_in = block(&blocked, url).await;
    eprintln!(
        "  {BLOCKED} blocked messages parked in {:.1} s",
        parked_in.as_secs_f64()
    );
    // The drains go to an endpoint that asks for the bare client's concurrency, as B3's
    // do: a URL target's default cap is at most half of workflow.max_concurrency (0.3.0).
    for db in [client, &blocked] {
        db.execute(
            "SELECT wf_endpoint('drain', $1, max_concurrency => $2)",
            &[&url, &(super::CONCURRENCY as i32)],
        )
        .await
        .expect("the drain's endpoint");
    }
    let n = sizes.blocked_drain_messages;
    let mut rates = Rates {
        without: Vec::new(),
        beside: Vec::new(),
        cpu_without: Vec::new(),
        cpu_beside: Vec::new(),
    };
    for run in 1..=sizes.runs {
        // Alternate which goes first.
        let order = if run % 2 == 1 { [0, 1] } else { [1, 0] };
        for which in order {
            let db = if which == 0 { client } else { &blocked };
            clear_drained(db).await;
            preload(db, "drain", n).await;
            let cpu_before = cpu_of_pid(dispatchers[which]);
            let elapsed = release_and_drain(db, "drain").await;
            let cpu = cpu_of_pid(dispatchers[which]) - cpu_before;
            let lost = count(
                db,
                "SELECT count(*) FROM workflow.outbox WHERE status <> 'delivered' AND parked IS NULL",
            )
            .await;
            assert_eq!(lost, 0, "every message must be delivered");
            let rate = (n + 1) as f64 / elapsed.as_secs_f64();
            let cpu_per = cpu.as_secs_f64() * 10_000.0 / (n + 1) as f64;
            eprintln!(
                "  run {run}, {}: {rate:.0}/s, {cpu_per:.2} CPU s per 10,000",
                if which == 0 {
                    "no backlog"
                } else {
                    "beside the backlog"
                }
            );
            if which == 0 {
                rates.without.push(rate);
                rates.cpu_without.push(cpu_per);
            } else {
                rates.beside.push(rate);
                rates.cpu_beside.push(cpu_per);
            }
        }
    }
    let still_parked = count(
        &blocked,
        "SELECT count(*) FROM workflow.outbox WHERE parked IS NOT NULL",
    )
    .await;
    assert_eq!(still_parked, BLOCKED, "the backlog stays parked");
    eprintln!(
        "  CPU per 10,000: {:.2} s without, {:.2} s beside the backlog",
        median(rates.cpu_without.clone()),
        median(rates.cpu_beside.clone())
    );
    clear_drained(client).await;
    rates
}

//! What a scrape costs does not grow with history: `workflow.metrics`,
//! `workflow.workflow_metrics` and `wf_stats()` read only what is pending, running and the
//! last minute, through indexes — also right after a burst, before statistics catch up
//! (statistics taken before the burst, or ones that call the tables empty, as an ANALYZE
//! during a large transaction leaves them). Measured in blocks touched, which do not depend
//! on the machine's speed: each read with 300,000 delivered messages and 100,000 finished
//! workflows kept touches at most twice what it touches in a database without them.

use tokio_postgres::Client;
use workflow_tests::Cluster;

const READS: [&str; 3] = [
    "SELECT * FROM workflow.metrics",
    "SELECT * FROM workflow.workflow_metrics",
    "SELECT * FROM wf_stats()",
];

/// The shared blocks a read touched, its functions' own statements included; the second of
/// two reads (the first loads the catalogs). Its time is printed, for the record: a test
/// asserts blocks, which do not depend on the machine's speed.
async fn blocks(client: &Client, read: &str) -> i64 {
    let mut touched = 0;
    let mut took = 0.0;
    for _ in 0..2 {
        let plan: serde_json::Value = client
            .query_one(
                &format!("EXPLAIN (ANALYZE, BUFFERS, FORMAT JSON) {read}"),
                &[],
            )
            .await
            .unwrap()
            .get(0);
        let top = &plan[0]["Plan"];
        touched = top["Shared Hit Blocks"].as_i64().unwrap_or(0)
            + top["Shared Read Blocks"].as_i64().unwrap_or(0);
        took = plan[0]["Execution Time"].as_f64().unwrap_or(f64::NAN);
    }
    eprintln!("{read}: {touched} blocks, {took:.2} ms");
    touched
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_costs_the_same_with_a_week_of_history_under_stale_statistics() {
    let cluster = Cluster::start(&["autovacuum = off"]);
    let client = cluster.connect().await;
    client
        .batch_execute(
            "SELECT wf_enqueue('https://example.com/', '{}') FROM generate_series(1, 10);
             SELECT wf_start('busy') FROM generate_series(1, 10);
             ANALYZE workflow.outbox, workflow.runs, workflow.delivery_attempts;",
        )
        .await
        .unwrap();
    let mut without = Vec::new();
    for read in READS {
        without.push(blocks(&client, read).await);
    }

    // The burst: its history arrives after the statistics were taken.
    client
        .batch_execute(
            "INSERT INTO workflow.outbox (url, payload, status, attempts, finished_at, delivered_at,
                                          last_attempt, last_started_at, last_status_code)
             SELECT 'https://example.com/', '{}', 'delivered', 2, now() - interval '1 hour',
                    now() - interval '1 hour', 2, now() - interval '1 hour', 200
               FROM generate_series(1, 300000);
             INSERT INTO workflow.delivery_attempts (message_id, attempt, started_at, duration_ms, status_code)
             SELECT id, 1, now() - interval '1 hour', 1, 503
               FROM workflow.outbox WHERE status = 'delivered' AND id % 3 = 0;
             INSERT INTO workflow.runs (name, status, lease_duration, finished_at)
             SELECT 'busy', 'completed', '1 minute', now() - interval '1 hour'
               FROM generate_series(1, 100000);",
        )
        .await
        .unwrap();

    let mut failures = Vec::new();
    for statistics in ["taken before the burst", "empty"] {
        if statistics == "empty" {
            client
                .batch_execute(
                    "UPDATE pg_catalog.pg_class c
                        SET reltuples = 0, relpages = CASE c.oid WHEN i.indrelid THEN 1000 ELSE 100 END,
                            relallvisible = CASE c.oid WHEN i.indrelid THEN 1000 ELSE 0 END
                       FROM pg_catalog.pg_index i
                      WHERE i.indrelid IN ('workflow.outbox'::regclass, 'workflow.runs'::regclass,
                                           'workflow.delivery_attempts'::regclass)
                        AND c.oid IN (i.indrelid, i.indexrelid)",
                )
                .await
                .unwrap();
        }
        for (read, before) in READS.iter().zip(&without) {
            let with = blocks(&client, read).await;
            if with > 2 * before {
                failures.push(format!(
                    "{read}, statistics {statistics}: {with} blocks with the history, {before} without"
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

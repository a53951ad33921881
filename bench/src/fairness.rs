//! B14: fairness between tenants. Tenant A floods a workflow name limited to 8 running
//! (`wf_queue`), or one endpoint limited to 8 in flight, and tenants B and C then start
//! work at a steady pace; their p99 start → finish is compared with the same pace when A
//! is absent, alternating which goes first. And the claim's cost beside 100,000 ready
//! workflows of one tenant held back by its limit, against the same claims without them.

use crate::{Sizes, median, percentile};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::Cluster;
use workflow_tests::receiver::{Receiver, Reply};

/// How many of A's, full and quick.
const FLOOD: i64 = 10_000;
const QUICK_FLOOD: i64 = 2_000;
/// B's and C's each.
const SMALL: usize = 50;
/// Their pace: one start (or message) of each every this often.
const PACE: Duration = Duration::from_millis(20);
/// A workflow's work between its claim and its completion, and a receiver's answer time.
const WORK: Duration = Duration::from_millis(10);
const WORKERS: usize = 8;
const LIMIT: i32 = 8;
/// B14c's held-back backlog, and the workflows claimed beside it.
const HELD_BACK: i64 = 100_000;
const CLAIMED: i64 = 2_000;

pub struct Fairness {
    /// p99 start → finish of B's and C's workflows (ms), with A flooding and without.
    pub workflows_with: Vec<f64>,
    pub workflows_without: Vec<f64>,
    /// p99 enqueue → answer of B's and C's messages (ms), with A flooding and without.
    pub messages_with: Vec<f64>,
    pub messages_without: Vec<f64>,
}

pub async fn b14(cluster: &Cluster, client: &Client, sizes: Sizes, quick: bool) -> Fairness {
    let flood = if quick { QUICK_FLOOD } else { FLOOD };
    client
        .execute("SELECT wf_queue('b14', max_running => $1)", &[&LIMIT])
        .await
        .expect("queue");
    let receiver = Receiver::start().await;
    receiver.always("/b14", Reply::After(WORK, 200));
    client
        .execute(
            "SELECT wf_endpoint('b14', $1, max_concurrency => $2)",
            &[&receiver.url("/b14"), &LIMIT],
        )
        .await
        .expect("endpoint");
    let mut result = Fairness {
        workflows_with: Vec::new(),
        workflows_without: Vec::new(),
        messages_with: Vec::new(),
        messages_without: Vec::new(),
    };
    for run in 0..sizes.runs {
        for flooded in [run % 2 == 0, run % 2 == 1] {
            let tag = format!("{run}-{flooded}");
            let workflows = workflows_p99(cluster, client, &tag, flooded.then_some(flood)).await;
            let messages = messages_p99(client, &tag, flooded.then_some(flood)).await;
            eprintln!(
                "  run {run} {}: workflows p99 {workflows:.1} ms, messages p99 {messages:.1} ms",
                if flooded { "with A" } else { "without A" }
            );
            if flooded {
                result.workflows_with.push(workflows);
                result.messages_with.push(messages);
            } else {
                result.workflows_without.push(workflows);
                result.messages_without.push(messages);
            }
        }
    }
    result
}

/// Starts A's flood (if any), then B's and C's workflows at `PACE` while `WORKERS` workers
/// claim, work `WORK` and complete; waits until every one is done. Returns B's and C's p99
/// start → finish in ms.
async fn workflows_p99(cluster: &Cluster, client: &Client, tag: &str, flood: Option<i64>) -> f64 {
    if let Some(n) = flood {
        client
            .execute(
                "SELECT wf_start('b14', tenant => 'a') FROM generate_series(1, $1::int8)",
                &[&n],
            )
            .await
            .expect("flood");
    }
    let starting = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        let conninfo = cluster.conninfo();
        let starting = std::sync::Arc::clone(&starting);
        workers.push(tokio::spawn(async move {
            let worker = workflow_tests::connect(&conninfo).await;
            let owner = format!("b14-worker-{i}");
            loop {
                let ids: Vec<uuid::Uuid> = worker
                    .query("SELECT wf_claim('b14', $1)", &[&owner])
                    .await
                    .expect("claim")
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if ids.is_empty() {
                    let left = crate::count(
                        &worker,
                        "SELECT count(*) FROM workflow.runs WHERE name = 'b14' AND status = 'running'",
                    )
                    .await;
                    if left == 0 && !starting.load(std::sync::atomic::Ordering::Acquire) {
                        return;
                    }
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    continue;
                }
                tokio::time::sleep(WORK).await;
                for id in ids {
                    worker
                        .execute("SELECT wf_complete($1, NULL, $2)", &[&id, &owner])
                        .await
                        .expect("complete");
                }
            }
        }));
    }
    for _ in 0..SMALL {
        for tenant in ["b", "c"] {
            client
                .execute(
                    "SELECT wf_start('b14', jsonb_build_object('tag', $1::text), tenant => $2)",
                    &[&tag, &tenant],
                )
                .await
                .expect("start");
        }
        tokio::time::sleep(PACE).await;
    }
    starting.store(false, std::sync::atomic::Ordering::Release);
    for worker in workers {
        worker.await.expect("worker");
    }
    let times: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM finished_at - created_at)::float8 * 1000 FROM workflow.runs
              WHERE name = 'b14' AND tenant IN ('b', 'c') AND input->>'tag' = $1",
            &[&tag],
        )
        .await
        .expect("times")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(times.len(), 2 * SMALL, "every workflow of B and C finished");
    percentile(&times, 0.99)
}

/// Enqueues A's flood (if any) to the limited endpoint, then B's and C's messages at
/// `PACE`; waits until every one is delivered. Returns B's and C's p99 enqueue → answer in
/// ms, by the messages' own times.
async fn messages_p99(client: &Client, tag: &str, flood: Option<i64>) -> f64 {
    if let Some(n) = flood {
        client
            .execute(
                "SELECT wf_enqueue('b14', '{}', tenant => 'a') FROM generate_series(1, $1::int8)",
                &[&n],
            )
            .await
            .expect("flood");
    }
    for _ in 0..SMALL {
        for tenant in ["b", "c"] {
            client
                .execute(
                    "SELECT wf_enqueue('b14', jsonb_build_object('tag', $1::text), tenant => $2)",
                    &[&tag, &tenant],
                )
                .await
                .expect("enqueue");
        }
        tokio::time::sleep(PACE).await;
    }
    let deadline = Instant::now() + Duration::from_secs(600);
    while crate::count(
        client,
        "SELECT count(*) FROM workflow.outbox WHERE endpoint = 'b14' AND status = 'pending'",
    )
    .await
        > 0
    {
        assert!(
            Instant::now() < deadline,
            "B14's messages were not delivered"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let times: Vec<f64> = client
        .query(
            "SELECT extract(epoch FROM delivered_at - created_at)::float8 * 1000 FROM workflow.outbox
              WHERE endpoint = 'b14' AND tenant IN ('b', 'c') AND payload->>'tag' = $1",
            &[&tag],
        )
        .await
        .expect("times")
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(times.len(), 2 * SMALL, "every message of B and C delivered");
    percentile(&times, 0.99)
}

/// B14c: claims a second of `CLAIMED` workflows of other tenants, one at a time, beside
/// `HELD_BACK` ready workflows of one tenant at its `max_running_per_tenant`, and without
/// them; one pair per run, alternating which goes first.
pub async fn b14c(client: &Client, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
    client
        .batch_execute(
            "SELECT wf_queue('b14c', max_running => 100000, max_running_per_tenant => 1);
             SELECT wf_queue('b14c-alone', max_running => 100000, max_running_per_tenant => 1);",
        )
        .await
        .expect("queues");
    // The held-back tenant: one running (its limit), the rest ready behind it.
    client
        .execute(
            "SELECT wf_start('b14c', tenant => 'held') FROM generate_series(1, $1::int8)",
            &[&HELD_BACK],
        )
        .await
        .expect("backlog");
    client
        .execute("SELECT wf_claim('b14c', 'holder')", &[])
        .await
        .expect("the held tenant at its limit");
    client
        .batch_execute("VACUUM ANALYZE workflow.runs")
        .await
        .expect("vacuum");
    let (mut beside, mut alone) = (Vec::new(), Vec::new());
    for run in 0..sizes.runs {
        for with_backlog in [run % 2 == 0, run % 2 == 1] {
            let name = if with_backlog { "b14c" } else { "b14c-alone" };
            let rate = claim_rate(client, name, run).await;
            eprintln!(
                "  run {run} {}: {rate:.0} claims/s",
                if with_backlog {
                    "beside the held-back backlog"
                } else {
                    "alone"
                }
            );
            if with_backlog {
                beside.push(rate);
            } else {
                alone.push(rate);
            }
        }
    }
    eprintln!(
        "  median beside {:.0}/s, alone {:.0}/s",
        median(beside.clone()),
        median(alone.clone())
    );
    (beside, alone)
}

/// Starts `CLAIMED` workflows of `name`, one tenant each, and claims and completes them one
/// at a time; returns claims a second.
async fn claim_rate(client: &Client, name: &str, run: usize) -> f64 {
    client
        .execute(
            "SELECT wf_start($1, tenant => 't' || $2::text || '-' || n) FROM generate_series(1, $3::int8) n",
            &[&name, &run.to_string(), &CLAIMED],
        )
        .await
        .expect("starts");
    let started = Instant::now();
    for _ in 0..CLAIMED {
        let id: uuid::Uuid = client
            .query_one("SELECT wf_claim($1, 'claimer')", &[&name])
            .await
            .expect("claim")
            .get(0);
        client
            .execute("SELECT wf_complete($1, NULL, 'claimer')", &[&id])
            .await
            .expect("complete");
    }
    CLAIMED as f64 / started.elapsed().as_secs_f64()
}

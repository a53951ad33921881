//! B5c: B5 under concurrency. [`CLIENTS`] clients, each a task of the bench process with a
//! connection (a backend) of its own, commit one message per transaction to one URL at
//! [`RATE`] messages a second in all, evenly staggered; the time from sending each COMMIT
//! to the message's arrival at an in-process receiver, as B5 measures it.

use crate::{Sizes, percentile};
use std::collections::HashMap;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::Cluster;
use workflow_tests::receiver::Receiver;

/// Client connections committing at once.
pub const CLIENTS: usize = 8;
/// Messages committed a second, all clients together.
pub const RATE: u32 = 2000;
/// The share of [`RATE`] the clients must reach for the figure to count.
pub const RATE_FLOOR: f64 = 0.9;
/// The target for the p99, in milliseconds.
pub const P99_TARGET_MS: f64 = 5.0;
const PATH: &str = "/b5c";
/// How long after the last commit every message must have arrived.
const ARRIVAL_DEADLINE: Duration = Duration::from_secs(60);
/// How much longer than their schedule the clients may take to commit.
const COMMIT_GRACE: Duration = Duration::from_secs(60);

/// What B5c measured.
pub struct Concurrent {
    /// Commit → receipt of every message, in milliseconds.
    pub latencies: Vec<f64>,
    /// Messages committed a second, from the first COMMIT to the last.
    pub achieved: f64,
}

impl Concurrent {
    pub fn p50(&self) -> f64 {
        percentile(&self.latencies, 0.5)
    }

    pub fn p99(&self) -> f64 {
        percentile(&self.latencies, 0.99)
    }

    pub fn met(&self) -> bool {
        self.p99() <= P99_TARGET_MS && self.achieved >= RATE_FLOOR * RATE as f64
    }
}

pub async fn b5c(cluster: &Cluster, sizes: Sizes) -> Concurrent {
    let receiver = Receiver::start().await;
    let url = receiver.url(PATH);
    let per_client = (RATE as u64 * sizes.concurrent_seconds / CLIENTS as u64) as usize;
    // Each client's own interval: 4 ms at 2,000 a second over 8.
    let period = Duration::from_secs_f64(CLIENTS as f64 / RATE as f64);
    let mut clients = Vec::with_capacity(CLIENTS);
    for _ in 0..CLIENTS {
        clients.push(workflow_tests::connect(&cluster.conninfo()).await);
    }
    let start = Instant::now() + Duration::from_millis(100);
    let tasks: Vec<_> = clients
        .into_iter()
        .enumerate()
        .map(|(c, client)| {
            let url = url.clone();
            let first = start + period.mul_f64(c as f64 / CLIENTS as f64);
            tokio::spawn(commit_paced(client, url, c, per_client, first, period))
        })
        .collect();
    let commits_due = start + period * per_client as u32 + COMMIT_GRACE;
    let mut committed: HashMap<(i32, i32), Instant> = HashMap::with_capacity(CLIENTS * per_client);
    for (c, task) in tasks.into_iter().enumerate() {
        let times = tokio::time::timeout_at(commits_due.into(), task)
            .await
            .unwrap_or_else(|_| {
                panic!("B5c: client {c} had not committed its {per_client} messages {COMMIT_GRACE:?} after its schedule")
            })
            .expect("B5c: a client");
        for (n, at) in times.into_iter().enumerate() {
            committed.insert((c as i32, n as i32), at);
        }
    }
    let total = committed.len();
    let first = committed.values().min().copied().expect("B5c: commits");
    let last = committed.values().max().copied().expect("B5c: commits");
    let achieved = (total - 1) as f64 / (last - first).as_secs_f64();

    // Each message's first arrival, matched by its payload. Looked at rarely: the
    // receiver's list is copied on each look.
    let mut arrived: HashMap<(i32, i32), Instant> = HashMap::with_capacity(total);
    loop {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let received = receiver.received(PATH);
        // Requests, duplicates among them, until there are enough to be worth matching.
        let mut got = received.len();
        if got >= total {
            arrived.clear();
            for request in &received {
                let key = message_of(&request.body);
                assert!(
                    committed.contains_key(&key),
                    "B5c: an arrival that matches no message: {:?}",
                    String::from_utf8_lossy(&request.body)
                );
                let at = arrived.entry(key).or_insert(request.at);
                *at = (*at).min(request.at);
            }
            got = arrived.len();
            if got == total {
                break;
            }
        }
        assert!(
            last.elapsed() < ARRIVAL_DEADLINE,
            "B5c: {got} of {total} messages arrived within {ARRIVAL_DEADLINE:?} of the last commit"
        );
    }
    let latencies = committed
        .iter()
        .map(|(key, committing)| {
            arrived[key]
                .saturating_duration_since(*committing)
                .as_secs_f64()
                * 1000.0
        })
        .collect();
    let concurrent = Concurrent {
        latencies,
        achieved,
    };
    eprintln!(
        "  {total} messages from {CLIENTS} clients at {achieved:.0}/s: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        concurrent.p50(),
        concurrent.p99(),
        percentile(&concurrent.latencies, 1.0)
    );
    concurrent
}

/// Client `c`: commits `n` messages to `url`, one per transaction, the first at `first` and
/// then one every `period`, catching up at once should it fall behind; returns when each
/// COMMIT was sent.
async fn commit_paced(
    client: Client,
    url: String,
    c: usize,
    n: usize,
    first: Instant,
    period: Duration,
) -> Vec<Instant> {
    let enqueue = client
        .prepare("SELECT wf_enqueue($1, jsonb_build_object('c', $2::int, 'n', $3::int))")
        .await
        .expect("B5c: prepare wf_enqueue");
    let mut committing = Vec::with_capacity(n);
    for i in 0..n {
        tokio::time::sleep_until((first + period * i as u32).into()).await;
        client.batch_execute("BEGIN").await.expect("BEGIN");
        client
            .execute(&enqueue, &[&url, &(c as i32), &(i as i32)])
            .await
            .expect("B5c: wf_enqueue");
        committing.push(Instant::now());
        client.batch_execute("COMMIT").await.expect("COMMIT");
    }
    committing
}

/// The (client, number) a delivered body carries.
fn message_of(body: &[u8]) -> (i32, i32) {
    let payload: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    let field = |name: &str| {
        payload
            .get(name)
            .and_then(serde_json::Value::as_i64)
            .map_or(-1, |v| v as i32)
    };
    (field("c"), field("n"))
}

//! B13: how soon a destination that was down gets its backlog once it is back, and what
//! the outage cost it in requests.
//!
//! An in-process receiver answers 503 while one connection commits [`RATE`] messages a
//! second to one endpoint, for `Sizes::outage` (15 minutes; 2 in quick mode), with the
//! default `workflow.retry_schedule` (5 s, 5 min, 30 min, …); then it answers 200. Its 503
//! comes after [`FAILING_REPLY`], so that requests sent together overlap at the receiver
//! and show in its count of requests in flight. The figures: the time from its return to
//! the last request it receives once every message is delivered, and the requests it
//! received while it was down as a share of the messages committed.
//!
//! The queries use only what 0.2.0 has too (`wf_endpoint`, `workflow.messages`,
//! `workflow.endpoints`), so that a build from before the outage handling can be measured
//! the same way; its backlog waits out each message's own retry schedule, which
//! [`DRAIN_DEADLINE`] allows for a 2-minute outage, not a 15-minute one.

use crate::{Sizes, median};
use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::Cluster;
use workflow_tests::receiver::{Receiver, Reply};

/// The endpoint the messages go to; its own `retry_schedule` is NULL (the cluster's).
pub const ENDPOINT: &str = "b13-outage";
const PATH: &str = "/b13";
/// Messages committed a second during the outage.
pub const RATE: u32 = 10;
/// How long the receiver takes to answer 503 while it is down.
pub const FAILING_REPLY: Duration = Duration::from_millis(250);
/// The targets: the last delivery at most this long after the return…
pub const DRAIN_TARGET: Duration = Duration::from_secs(15);
/// …and requests while down at most this share of the messages committed.
pub const REQUEST_SHARE_TARGET: f64 = 0.02;
/// Every message must be delivered this long after the return, or the bench fails. Far
/// above the target, so that a slow drain is a figure, not a failure; 0.2.0 took 329 s
/// after a 2-minute outage.
pub const DRAIN_DEADLINE: Duration = Duration::from_secs(600);
/// How much longer than the outage the stream of commits may take.
const STREAM_GRACE: Duration = Duration::from_secs(60);
/// A progress line on stderr this often during the outage.
const PROGRESS_EVERY: Duration = Duration::from_secs(60);

/// What B13 measured.
pub struct Drained {
    /// `workflow.retry_schedule` in force (the extension's default).
    pub retry_schedule: String,
    pub messages: usize,
    /// Requests the receiver saw while it answered 503.
    pub requests_while_down: usize,
    /// The most requests it was answering at once while it was down.
    pub max_in_flight: usize,
    /// From its return to the last request it received, once every message was delivered.
    pub last_delivery: Duration,
    /// From its return to the median message's first arrival after it.
    pub median_delivery: Duration,
    /// Messages delivered with their first attempt: held back through the outage.
    pub held_back: i64,
}

impl Drained {
    pub fn request_share(&self) -> f64 {
        self.requests_while_down as f64 / self.messages.max(1) as f64
    }

    pub fn met(&self) -> bool {
        self.last_delivery <= DRAIN_TARGET && self.request_share() <= REQUEST_SHARE_TARGET
    }
}

pub async fn b13(cluster: &Cluster, client: &Client, sizes: Sizes) -> Drained {
    let retry_schedule = default_retry_schedule(client).await;
    let receiver = Receiver::start().await;
    receiver.always(PATH, Reply::After(FAILING_REPLY, 503));
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&ENDPOINT, &receiver.url(PATH)],
        )
        .await
        .expect("B13: the endpoint");
    let own: Option<String> = client
        .query_one(
            "SELECT retry_schedule::text FROM workflow.endpoints WHERE name = $1",
            &[&ENDPOINT],
        )
        .await
        .expect("B13: the endpoint's retry schedule")
        .get(0);
    assert!(
        own.is_none(),
        "B13: the endpoint must use the cluster's retry schedule, not its own {own:?}"
    );

    // Down from before the first message: the first one finds it failing.
    let committed = Arc::new(AtomicUsize::new(0));
    let started = Instant::now();
    let until = started + sizes.outage;
    let stream = tokio::spawn(commit_stream(
        cluster.conninfo(),
        until,
        Arc::clone(&committed),
    ));
    let mut next_line = started + PROGRESS_EVERY;
    while next_line < until {
        tokio::time::sleep_until(next_line.into()).await;
        progress(client, &receiver, started, &committed).await;
        next_line += PROGRESS_EVERY;
    }
    let ids = tokio::time::timeout_at((until + STREAM_GRACE).into(), stream)
        .await
        .unwrap_or_else(|_| {
            panic!(
                "B13: the commits of the outage were not done {STREAM_GRACE:?} after its end ({} committed)",
                committed.load(Ordering::Relaxed)
            )
        })
        .expect("B13: the stream of commits");

    // The return: what it saw while down, then 200 from now on.
    let requests_while_down = receiver.received(PATH).len();
    let max_in_flight = receiver.max_in_flight(PATH);
    let back = Instant::now();
    receiver.always(PATH, Reply::Status(200));
    eprintln!(
        "  back after {:.0} s: {} messages committed, {requests_while_down} requests while down, at most {max_in_flight} at once",
        started.elapsed().as_secs_f64(),
        ids.len()
    );

    all_delivered(client, &ids, back).await;
    let received = receiver.received(PATH);
    let last = received
        .iter()
        .map(|r| r.at)
        .max()
        .expect("B13: the receiver got requests");
    let webhook_ids: Vec<String> = client
        .query(
            "SELECT webhook_id FROM workflow.messages WHERE id = ANY ($1)",
            &[&ids],
        )
        .await
        .expect("B13: the messages' webhook-ids")
        .iter()
        .map(|row| row.get(0))
        .collect();
    let arrived: HashSet<&str> = received
        .iter()
        .filter_map(|r| r.header("webhook-id"))
        .collect();
    let missing = webhook_ids
        .iter()
        .filter(|id| !arrived.contains(id.as_str()))
        .count();
    assert_eq!(
        missing,
        0,
        "B13: {missing} of {} messages delivered by the database's account never arrived at the receiver",
        ids.len()
    );
    // Each message's first arrival after the return.
    let mut first_after: HashMap<&str, Instant> = HashMap::new();
    for request in received.iter().filter(|r| r.at >= back) {
        if let Some(id) = request.header("webhook-id") {
            let at = first_after.entry(id).or_insert(request.at);
            *at = (*at).min(request.at);
        }
    }
    let waits: Vec<f64> = first_after
        .values()
        .map(|at| at.saturating_duration_since(back).as_secs_f64())
        .collect();
    let median_delivery = if waits.is_empty() {
        Duration::ZERO
    } else {
        Duration::from_secs_f64(median(waits))
    };
    let held_back = client
        .query_one(
            "SELECT count(*) FROM workflow.messages WHERE id = ANY ($1) AND attempts = 1",
            &[&ids],
        )
        .await
        .expect("B13: the attempts")
        .get(0);
    let drained = Drained {
        retry_schedule,
        messages: ids.len(),
        requests_while_down,
        max_in_flight,
        last_delivery: last.saturating_duration_since(back),
        median_delivery,
        held_back,
    };
    eprintln!(
        "  last delivery {:.2} s after the return (median message {:.2} s); {} of {} messages held back without an attempt",
        drained.last_delivery.as_secs_f64(),
        drained.median_delivery.as_secs_f64(),
        drained.held_back,
        drained.messages
    );

    // The endpoint's messages go before it can.
    client
        .execute(
            "DELETE FROM workflow.outbox WHERE endpoint = $1",
            &[&ENDPOINT],
        )
        .await
        .expect("B13: clean up the messages");
    client
        .execute(
            "DELETE FROM workflow.endpoint_settings WHERE name = $1",
            &[&ENDPOINT],
        )
        .await
        .expect("B13: clean up the endpoint");
    drained
}

/// `workflow.retry_schedule` in force, which must be the extension's default: B13 measures
/// a backlog whose messages would wait minutes on their own schedule.
async fn default_retry_schedule(client: &Client) -> String {
    let row = client
        .query_one(
            "SELECT setting, boot_val FROM pg_settings WHERE name = 'workflow.retry_schedule'",
            &[],
        )
        .await
        .expect("B13: workflow.retry_schedule");
    let (setting, default): (Option<String>, Option<String>) = (row.get(0), row.get(1));
    assert_eq!(
        setting, default,
        "B13 measures the default workflow.retry_schedule; the bench cluster sets another"
    );
    setting.unwrap_or_default()
}

/// Commits one message to [`ENDPOINT`] every 1/[`RATE`] s until `until`, each in its own
/// transaction, from a connection of its own, as an application would; returns their ids.
async fn commit_stream(conninfo: String, until: Instant, committed: Arc<AtomicUsize>) -> Vec<i64> {
    let client = workflow_tests::connect(&conninfo).await;
    let enqueue = client
        .prepare("SELECT wf_enqueue($1, jsonb_build_object('b13', $2::int))")
        .await
        .expect("B13: prepare wf_enqueue");
    let mut ticks = tokio::time::interval(Duration::from_secs(1) / RATE);
    let mut ids = Vec::new();
    loop {
        ticks.tick().await;
        if Instant::now() >= until {
            return ids;
        }
        let n = ids.len() as i32;
        let id: i64 = client
            .query_one(&enqueue, &[&ENDPOINT, &n])
            .await
            .expect("B13: wf_enqueue")
            .get(0);
        ids.push(id);
        committed.fetch_add(1, Ordering::Relaxed);
    }
}

/// One line on stderr during the outage: what was committed, tried and received so far.
async fn progress(client: &Client, receiver: &Receiver, started: Instant, committed: &AtomicUsize) {
    // The state column is 0.3.0's; NULL before it.
    let row = client
        .query_one(
            "SELECT (SELECT to_jsonb(e) ->> 'state' FROM workflow.endpoints e WHERE e.name = $1),
                    (SELECT count(*) FILTER (WHERE attempts > 0) FROM workflow.messages WHERE endpoint = $1)",
            &[&ENDPOINT],
        )
        .await
        .expect("B13: progress");
    let (state, tried): (Option<String>, i64) = (row.get(0), row.get(1));
    eprintln!(
        "  {:.0} min: {} committed, {tried} tried, {} requests received, at most {} at once, endpoint {}",
        started.elapsed().as_secs_f64() / 60.0,
        committed.load(Ordering::Relaxed),
        receiver.received(PATH).len(),
        receiver.max_in_flight(PATH),
        state.as_deref().unwrap_or("(no state column)")
    );
}

/// Waits until every message of `ids` is delivered; fails the bench with where they stand
/// if one is given up, or if some are still pending [`DRAIN_DEADLINE`] after `back`.
async fn all_delivered(client: &Client, ids: &[i64], back: Instant) {
    loop {
        let rows = client
            .query(
                "SELECT status, count(*) FROM workflow.messages WHERE id = ANY ($1) GROUP BY status ORDER BY status",
                &[&ids],
            )
            .await
            .expect("B13: the messages' status");
        let counts: Vec<(String, i64)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let delivered = counts
            .iter()
            .find(|(status, _)| status == "delivered")
            .map_or(0, |(_, n)| *n);
        if delivered == ids.len() as i64 {
            return;
        }
        let given_up = counts
            .iter()
            .any(|(status, _)| status != "delivered" && status != "pending");
        assert!(
            !given_up && back.elapsed() < DRAIN_DEADLINE,
            "B13: {delivered} of {} messages delivered {:.0} s after the receiver's return (by status: {counts:?})",
            ids.len(),
            back.elapsed().as_secs_f64()
        );
        // The figure comes from the receiver's arrival times: this poll only says when.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

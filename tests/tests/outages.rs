//! G11, recovery at the speed of the failure, at real receivers: a destination whose
//! requests fail is `failing` (in `workflow.destinations` and `workflow.endpoints`) and is
//! probed with one request at a time, a probe interval apart (1 s, doubling to 8 s); its
//! other messages wait without attempts, and its first answer makes all of them due at once,
//! so its backlog arrives within seconds of its return, not on each message's backoff. The
//! same for a push handler, and for an endpoint enabled after a disable, whose messages
//! waiting on their retry schedule go at once. The failing state is stored: a dispatcher
//! killed during an outage goes on probing, and so does a standby promoted in place of a
//! primary that stopped during one. Isolation by default: one destination's default cap is
//! at most half of `workflow.max_concurrency`, and a server written three ways is one
//! destination. `wf_endpoint_disable` holds messages without attempts and says why; a rate
//! too small to see is refused.
//!
//! Tests that count attempts against the retry schedule run with the default schedule
//! (5 s, then minutes), not the harness's fast one.

use std::collections::HashSet;
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::receiver::{Receiver, Reply, commit_to_receipt};
use workflow_tests::{
    Cluster, DISPATCHER_SETTINGS, assert_invariants, dispatch_cluster_with, dispatcher_pid,
    eventually, sqlstate, start_workflow, unique, until_true,
};

const DEADLINE: Duration = Duration::from_secs(60);

/// The default retry schedule, over `DISPATCHER_SETTINGS`' fast one (a later line wins).
const DEFAULT_SCHEDULE: &str = "workflow.retry_schedule = '5s, 5min, 30min, 2h, 5h, 10h, 10h'";

/// The longest probe interval: a destination back from an outage waits at most this long
/// for the probe that finds it up.
const LONGEST_PROBE: Duration = Duration::from_secs(8);

/// The binary's cluster: the dispatcher with the default retry schedule.
fn cluster() -> &'static Cluster {
    dispatch_cluster_with(&[DEFAULT_SCHEDULE])
}

/// A cluster of the test's own, with the dispatcher and `extra` settings.
fn own_cluster(extra: &[&str]) -> Cluster {
    let settings: Vec<&str> = DISPATCHER_SETTINGS.iter().chain(extra).copied().collect();
    Cluster::start(&settings)
}

async fn setup() -> (Client, Receiver) {
    let client = cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await)
}

/// Enqueues `n` messages to `target` in one transaction; returns their ids.
async fn enqueue_many(client: &Client, target: &str, n: i32) -> Vec<i64> {
    client
        .query(
            "SELECT wf_enqueue($1, jsonb_build_object('n', i)) FROM generate_series(1, $2) i",
            &[&target, &n],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Waits until every message of `ids` is delivered; returns their attempt counts.
async fn all_delivered(client: &Client, ids: &[i64], what: &str, deadline: Duration) -> Vec<i32> {
    eventually(what, deadline, || async {
        let rows = client
            .query(
                "SELECT status, attempts FROM workflow.messages WHERE id = ANY ($1) ORDER BY id",
                &[&ids],
            )
            .await
            .unwrap();
        rows.iter()
            .all(|row| row.get::<_, String>(0) == "delivered")
            .then(|| rows.iter().map(|row| row.get(1)).collect())
    })
    .await
}

/// Commits one message to `target` every `every` until `until`, each in its own
/// transaction, from a connection of its own, as an application would; returns their ids.
async fn stream_of_messages(
    conninfo: String,
    target: String,
    every: Duration,
    until: Instant,
) -> Vec<i64> {
    let client = workflow_tests::connect(&conninfo).await;
    let mut ticks = tokio::time::interval(every);
    let mut ids = Vec::new();
    while Instant::now() < until {
        ticks.tick().await;
        let n = ids.len() as i32;
        let id: i64 = client
            .query_one(
                "SELECT wf_enqueue($1, jsonb_build_object('n', $2::int))",
                &[&target, &n],
            )
            .await
            .expect("wf_enqueue")
            .get(0);
        ids.push(id);
    }
    ids
}

/// The requests made for `ids` (`workflow.attempts`), and how many of them failed.
async fn requests(client: &Client, ids: &[i64]) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT count(*), count(*) FILTER (WHERE status_code IS NULL OR status_code NOT BETWEEN 200 AND 299)
               FROM workflow.attempts WHERE message_id = ANY ($1)",
            &[&ids],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The sum of the attempt counters of `ids`, and how many of them have none.
async fn attempts(client: &Client, ids: &[i64]) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT coalesce(sum(attempts), 0)::int8, count(*) FILTER (WHERE attempts = 0)
               FROM workflow.messages WHERE id = ANY ($1)",
            &[&ids],
        )
        .await
        .unwrap();
    (row.get(0), row.get(1))
}

/// The stored state of `destination` (`workflow.destinations`), healthy when it has no row.
async fn destination_state(client: &Client, destination: &str) -> String {
    client
        .query_one(
            "SELECT coalesce((SELECT state::text FROM workflow.destinations WHERE destination = $1), 'healthy')",
            &[&destination],
        )
        .await
        .unwrap()
        .get(0)
}

/// Makes `target` failing with three unreachable requests in a row, one after the other (so
/// that the receiver never has two at once): each is enqueued once the one before has had
/// its outcome recorded. Returns the three messages.
async fn fail_three_times(client: &Client, target: &str) -> Vec<i64> {
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = workflow_tests::enqueue(client, target).await;
        until_true(
            client,
            "the request's outcome to be recorded",
            "SELECT last_status_code IS NOT NULL OR last_error IS NOT NULL FROM workflow.outbox WHERE id = $1",
            &[&id],
            DEADLINE,
        )
        .await;
        ids.push(id);
    }
    ids
}

async fn until_failing(client: &Client, destination: &str) {
    until_true(
        client,
        &format!("{destination} to be failing"),
        "SELECT EXISTS (SELECT FROM workflow.destinations WHERE destination = $1 AND state = 'failing')",
        &[&destination],
        DEADLINE,
    )
    .await;
}

/// One look at an endpoint during an outage.
#[derive(Debug)]
struct Look {
    at: Duration,
    /// As `workflow.endpoints` shows it, and as `workflow.destinations` stores it.
    shown: String,
    stored: String,
    /// Seconds from now to `next_probe_at`.
    probe_in: Option<f64>,
    /// `state_since`, as seconds since the epoch.
    since: f64,
}

async fn look(client: &Client, endpoint: &str, at: Duration) -> Look {
    let row = client
        .query_one(
            "SELECT state, extract(epoch FROM next_probe_at - clock_timestamp())::float8,
                    extract(epoch FROM state_since)::float8
               FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    Look {
        at,
        shown: row.get(0),
        stored: destination_state(client, endpoint).await,
        probe_in: row.get(1),
        since: row.get(2),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_receiver_down_is_probed_one_request_at_a_time_and_its_backlog_arrives_at_once_when_it_is_back()
 {
    // 503 for the first half, connection refused for the second.
    const OUTAGE: Duration = Duration::from_secs(30);
    const EVERY: Duration = Duration::from_millis(250);
    let (client, receiver) = setup().await;
    let endpoint = unique("outage");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url("/outage")],
        )
        .await
        .unwrap();
    // Slow enough that two requests at once would overlap at the receiver.
    receiver.always("/outage", Reply::After(Duration::from_millis(250), 503));
    // Three unreachable requests in a row make it failing; then the stream comes.
    let mut ids = fail_three_times(&client, &endpoint).await;
    until_failing(&client, &endpoint).await;

    let outage = Instant::now();
    let stream = tokio::spawn(stream_of_messages(
        cluster().conninfo(),
        endpoint.clone(),
        EVERY,
        outage + OUTAGE,
    ));
    let mut looks = Vec::new();
    let mut refusing = false;
    while outage.elapsed() < OUTAGE {
        if !refusing && outage.elapsed() >= OUTAGE / 2 {
            receiver.stop_listening().await;
            refusing = true;
        }
        looks.push(look(&client, &endpoint, outage.elapsed()).await);
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    ids.extend(stream.await.expect("the stream of messages"));
    let in_flight_while_down = receiver.max_in_flight("/outage");
    let (_, held_back) = attempts(&client, &ids).await;

    // While it refuses, the receiver records nothing: each request recorded from here on
    // is answered 200.
    let back = Instant::now();
    receiver.always("/outage", Reply::Status(200));
    receiver.listen_again().await;
    let delivered = all_delivered(
        &client,
        &ids,
        "every message to be delivered within 15 s of the receiver's return",
        Duration::from_secs(15),
    )
    .await;
    let drained = back.elapsed();
    until_true(
        &client,
        "the endpoint to be healthy again",
        "SELECT state = 'healthy' AND next_probe_at IS NULL FROM workflow.endpoints WHERE name = $1",
        &[&endpoint],
        Duration::from_secs(5),
    )
    .await;

    let messages = ids.len() as i64;
    let (made, failed) = requests(&client, &ids).await;
    // A probe a tenth of the failing time apart, from 1 s to 8 s: at most one a second in
    // an outage this short (B13 measures the share over 15 minutes), and the three
    // unreachable requests that made it failing.
    let allowed = OUTAGE.as_secs() as i64 + 3;
    eprintln!(
        "{messages} messages in a {OUTAGE:?} outage: {failed} requests while it was down, \
         {held_back} messages never tried; all delivered {drained:?} after the return"
    );
    assert!(messages >= 100, "the stream committed {messages} messages");
    assert!(
        in_flight_while_down <= 1,
        "{in_flight_while_down} requests at once to a receiver that was down"
    );
    assert!(
        failed <= allowed,
        "{failed} requests to a receiver that was down, for {messages} messages: a spray, not probes"
    );
    assert!(
        held_back >= messages - allowed,
        "only {held_back} of {messages} messages were held back without an attempt"
    );
    let (used, _) = attempts(&client, &ids).await;
    assert_eq!(used, made, "every attempt counted is a request made");
    assert!(
        delivered.iter().filter(|a| **a == 1).count() as i64 >= messages - failed,
        "a message held back uses one attempt, its delivery: {delivered:?}"
    );
    let arrived: HashSet<String> = receiver
        .received("/outage")
        .iter()
        .filter(|r| r.at >= back)
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect();
    assert_eq!(
        arrived.len() as i64,
        messages,
        "each message arrived after the return"
    );

    let failing: Vec<&Look> = looks
        .iter()
        .filter(|l| l.shown != "failing" || l.stored != "failing")
        .collect();
    assert!(
        failing.is_empty(),
        "the endpoint not failing in the views while it was down: {failing:?}"
    );
    let late: Vec<&Look> = looks
        .iter()
        .filter(|l| {
            l.probe_in
                .is_none_or(|wait| wait > LONGEST_PROBE.as_secs_f64() + 0.5)
        })
        .collect();
    assert!(
        late.is_empty(),
        "no probe planned, or one further than {LONGEST_PROBE:?}: {late:?}"
    );
    if let Some(moved) = looks.iter().find(|l| l.since != looks[0].since) {
        panic!(
            "state_since moved {:?} into the outage, while the endpoint stayed failing: {moved:?}",
            moved.at
        );
    }
    assert_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enabling_an_endpoint_releases_messages_waiting_on_their_retry_schedule() {
    let (client, receiver) = setup().await;
    let endpoint = unique("maintenance");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url("/maintenance")],
        )
        .await
        .unwrap();
    // Down for maintenance, and saying so: each message tried waits a minute to be retried.
    receiver.always(
        "/maintenance",
        Reply::Full {
            status: 503,
            headers: vec![("retry-after".into(), "60".into())],
            body: String::new(),
        },
    );
    let ids = enqueue_many(&client, &endpoint, 10).await;
    receiver.wait_for("/maintenance", 1, DEADLINE).await;
    client
        .execute(
            "SELECT wf_endpoint_disable($1, 'maintenance')",
            &[&endpoint],
        )
        .await
        .unwrap();
    eventually(
        "the outcome of every request to be recorded",
        DEADLINE,
        || async {
            let (made, _) = requests(&client, &ids).await;
            (made == receiver.received("/maintenance").len() as i64).then_some(())
        },
    )
    .await;
    receiver.always("/maintenance", Reply::Status(200));
    let waiting: Vec<(i64, f64)> = client
        .query(
            "SELECT id, extract(epoch FROM next_attempt_at - clock_timestamp())::float8
               FROM workflow.messages WHERE id = ANY ($1) AND attempts > 0",
            &[&ids],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
    assert!(
        !waiting.is_empty(),
        "no message had an attempt before the disable"
    );
    assert!(
        waiting.iter().all(|(_, wait)| *wait > 30.0),
        "messages tried are on their retry schedule, a minute out: {waiting:?}"
    );

    client
        .execute("SELECT wf_endpoint_enable($1)", &[&endpoint])
        .await
        .unwrap();
    let enabled = Instant::now();
    all_delivered(
        &client,
        &ids,
        "every message to be delivered within 10 s of the enable",
        Duration::from_secs(10),
    )
    .await;
    eprintln!(
        "{} messages waiting on their schedule, all 10 delivered {:?} after the enable",
        waiting.len(),
        enabled.elapsed()
    );
    let row = client
        .query_one(
            "SELECT state, disabled_reason FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("healthy".to_string(), None),
        "enabled, and no longer failing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_push_handler_down_gets_its_pushes_within_seconds_of_its_return() {
    // Probes of a handler failing since t go at about t + 1, 3, 7, 15 s: back at t + 12 s,
    // it is found up by the probe at t + 15 s, however long the pushes' own backoff.
    const DOWN: Duration = Duration::from_secs(12);
    let (client, receiver) = setup().await;
    let name = unique("pushed");
    let path = format!("/{name}");
    receiver.always(&path, Reply::Status(503));
    client
        .execute("SELECT wf_handler($1, $2)", &[&name, &receiver.url(&path)])
        .await
        .unwrap();
    let mut workflows = Vec::new();
    for _ in 0..5 {
        workflows.push(start_workflow(&client, &name).await);
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let down_since = receiver.wait_for(&path, 1, DEADLINE).await[0].at;
    tokio::time::sleep_until((down_since + DOWN).into()).await;
    let while_down = receiver.received(&path).len();
    let in_flight_while_down = receiver.max_in_flight(&path);

    receiver.always(&path, Reply::Status(200));
    let back = Instant::now();
    until_true(
        &client,
        "a push of every workflow delivered within 5 s of the handler's return",
        "SELECT count(DISTINCT workflow_id) = 5 FROM workflow.messages
          WHERE workflow_id = ANY ($1) AND status = 'delivered'",
        &[&workflows],
        Duration::from_secs(5),
    )
    .await;
    eprintln!(
        "5 pushes delivered {:?} after the handler's return; {while_down} requests while it was down",
        back.elapsed()
    );
    // The pushes that made it failing, then a probe at most a second apart.
    let allowed = DOWN.as_secs() as usize + 5;
    assert!(
        while_down <= allowed,
        "{while_down} pushes to a handler down for {DOWN:?}: a spray, not probes"
    );
    assert!(in_flight_while_down <= 1, "{in_flight_while_down} at once");
    let running: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.workflows WHERE id = ANY ($1) AND status = 'running'",
            &[&workflows],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(running, 5, "each workflow waits for its handler");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_black_hole_holds_at_most_half_of_the_slots() {
    // The per-destination default stays 16: the cap is half the pool.
    let cluster = own_cluster(&["workflow.max_concurrency = 8"]);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let (hole, healthy) = (Receiver::start().await, Receiver::start().await);
    hole.always("/hole", Reply::After(Duration::from_secs(60), 200));
    let endpoint = unique("black-hole");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, timeout => interval '10 s')",
            &[&endpoint, &hole.url("/hole")],
        )
        .await
        .unwrap();
    enqueue_many(&client, &endpoint, 50).await;
    eventually(
        "the black hole to hold 4 requests",
        Duration::from_secs(10),
        || async { (hole.in_flight("/hole") >= 4).then_some(()) },
    )
    .await;

    let mut times = Vec::with_capacity(50);
    for arrival in 0..50 {
        times.push(commit_to_receipt(&client, &healthy, "/healthy", arrival, DEADLINE).await);
    }
    times.sort();
    let still_held = hole.in_flight("/hole");
    let p99 = times[((times.len() - 1) as f64 * 0.99).round() as usize];
    eprintln!(
        "commit to receipt beside a black hole: p50 {:?}, p99 {p99:?}",
        times[times.len() / 2]
    );
    assert!(
        hole.max_in_flight("/hole") <= 4,
        "the black hole held {} of 8 slots",
        hole.max_in_flight("/hole")
    );
    assert_eq!(
        still_held, 4,
        "the black hole held its slots while the healthy URL was measured"
    );
    assert!(
        p99 < Duration::from_millis(200),
        "commit to receipt beside the black hole: p99 {p99:?} ({times:?})"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_server_written_three_ways_is_one_destination() {
    let cluster = own_cluster(&["workflow.max_concurrency_per_destination = 1"]);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    receiver.always("/slow", Reply::After(Duration::from_millis(150), 200));
    let port = receiver.port();
    let spellings = vec![
        format!("http://127.0.0.1:{port}/slow"),
        format!("http://127.1:{port}/slow"),
        format!("http://0x7f.0.0.1:{port}/slow"),
    ];
    let ids: Vec<i64> = client
        .query(
            "SELECT wf_enqueue(t, jsonb_build_object('written', t))
               FROM generate_series(1, 4) i, unnest($1::text[]) t",
            &[&spellings],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    let attempts = all_delivered(&client, &ids, "every message to be delivered", DEADLINE).await;

    let row = client
        .query_one(
            "SELECT array_agg(DISTINCT origin), count(DISTINCT url) FROM workflow.outbox WHERE id = ANY ($1)",
            &[&ids],
        )
        .await
        .unwrap();
    assert_eq!(
        row.get::<_, Vec<String>>(0),
        vec![format!("http://127.0.0.1:{port}")],
        "one origin for {spellings:?}"
    );
    assert_eq!(row.get::<_, i64>(1), 3, "each URL kept as written");
    assert_eq!(
        receiver.max_in_flight("/slow"),
        1,
        "workflow.max_concurrency_per_destination = 1 for the three spellings together"
    );
    assert_eq!(receiver.received("/slow").len(), 12, "each message once");
    assert!(attempts.iter().all(|a| *a == 1), "{attempts:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_too_small_to_see_is_refused() {
    let client = cluster().connect().await;
    let fresh = unique("unseen-rate");
    let error = client
        .execute(
            "SELECT wf_endpoint($1, 'https://example.com/hooks', rate_per_second => 1e-400)",
            &[&fresh],
        )
        .await
        .expect_err("a rate of 1e-400 a second");
    assert_eq!(sqlstate(&error), "22023", "{error}");
    let created: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.endpoints WHERE name = $1",
            &[&fresh],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(created, 0, "the refused call created no endpoint");

    let endpoint = unique("rated");
    client
        .execute(
            "SELECT wf_endpoint($1, 'https://example.com/hooks', rate_per_second => 5)",
            &[&endpoint],
        )
        .await
        .unwrap();
    for rate in ["1e-400", "-1", "'NaN'", "200000"] {
        let error = client
            .execute(
                &format!("SELECT wf_endpoint($1, rate_per_second => {rate})"),
                &[&endpoint],
            )
            .await
            .expect_err(rate);
        assert_eq!(
            sqlstate(&error),
            "22023",
            "rate_per_second => {rate}: {error}"
        );
    }
    let unchanged: bool = client
        .query_one(
            "SELECT rate_per_second = 5 FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap()
        .get(0);
    assert!(unchanged, "the endpoint keeps its rate of 5 a second");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dispatcher_killed_while_a_destination_fails_goes_on_probing_it() {
    let cluster = own_cluster(&[DEFAULT_SCHEDULE]);
    let client = cluster.connect().await;
    let killed = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::After(Duration::from_millis(250), 503));
    let (url, origin) = (receiver.url("/down"), receiver.url(""));
    let mut ids = fail_three_times(&client, &url).await;
    until_failing(&client, &origin).await;
    let backlog = enqueue_many(&client, &url, 30).await;
    until_true(
        &client,
        "the backlog to wait for the failing destination",
        "SELECT count(*) FILTER (WHERE parked = 'limit') >= 29 FROM workflow.messages WHERE id = ANY ($1)",
        &[&backlog],
        DEADLINE,
    )
    .await;
    ids.extend(&backlog);

    // SAFETY: sending a signal to a process we looked up.
    assert_eq!(
        unsafe { libc::kill(killed, libc::SIGKILL) },
        0,
        "kill -9 the dispatcher"
    );
    drop(client);
    let (client, next) = eventually("a new dispatcher", DEADLINE, || async {
        // The server restarts after the kill: no connection yet is no failure.
        let client = workflow_tests::try_connect(&cluster.conninfo()).await.ok()?;
        let pid: i32 = client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflow dispatcher' AND datname = current_database()",
                &[],
            )
            .await
            .ok()??
            .get(0);
        (pid != killed).then_some((client, pid))
    })
    .await;
    let before = receiver.received("/down").len();
    tokio::time::sleep(Duration::from_secs(6)).await;
    let after_restart = receiver.received("/down").len() - before;
    let (made, _) = requests(&client, &ids).await;
    let (used, never_tried) = attempts(&client, &ids).await;
    assert_eq!(
        destination_state(&client, &origin).await,
        "failing",
        "the restarted dispatcher {next} kept the stored state"
    );
    assert!(
        receiver.max_in_flight("/down") <= 1,
        "{} requests at once to the failing destination",
        receiver.max_in_flight("/down")
    );
    // A probe at most a second apart (a tenth of the failing time, from 1 s), where a
    // spray would send the 30 waiting messages at once.
    assert!(
        after_restart <= 7,
        "{after_restart} requests in the 6 s after the restart: a spray, not probes"
    );
    assert!(
        made <= 20 && used <= made + 1,
        "{made} requests, {used} attempts counted for 31 messages of a failing destination"
    );
    assert!(
        never_tried >= 31 - 20,
        "only {never_tried} of 31 messages were held back without an attempt"
    );

    receiver.always("/down", Reply::Status(200));
    let back = Instant::now();
    all_delivered(
        &client,
        &ids,
        "every message to be delivered after the receiver's return",
        LONGEST_PROBE + Duration::from_secs(7),
    )
    .await;
    eprintln!(
        "after the kill: {after_restart} requests in 6 s; all 31 delivered {:?} after the return",
        back.elapsed()
    );
    assert_eq!(destination_state(&client, &origin).await, "healthy");
    assert_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promoted_standby_goes_on_probing_a_destination_that_was_failing() {
    // Watched this long once the promoted standby's dispatcher runs: the destination has
    // been failing for seconds, so its probes are a second or two apart.
    const WATCH: Duration = Duration::from_secs(6);
    const BACKLOG: i32 = 20;
    let primary = own_cluster(&[DEFAULT_SCHEDULE]);
    let on_primary = primary.connect().await;
    dispatcher_pid(&on_primary, DEADLINE).await;
    // Streaming before the outage starts: the failing state reaches it through the WAL.
    let standby = primary.standby();
    let on_standby = standby.connect().await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::After(Duration::from_millis(250), 503));
    let (url, origin) = (receiver.url("/down"), receiver.url(""));
    let mut ids = fail_three_times(&on_primary, &url).await;
    until_failing(&on_primary, &origin).await;
    let backlog = enqueue_many(&on_primary, &url, BACKLOG).await;
    // All but the one a probe may have taken.
    let waiting = i64::from(BACKLOG - 1);
    until_true(
        &on_primary,
        "the backlog to wait for the failing destination",
        "SELECT count(*) FILTER (WHERE parked = 'limit') >= $2 FROM workflow.messages WHERE id = ANY ($1)",
        &[&backlog, &waiting],
        DEADLINE,
    )
    .await;
    until_true(
        &on_standby,
        "the standby to replay the failing destination and its waiting backlog",
        "SELECT EXISTS (SELECT FROM workflow.destinations WHERE destination = $1 AND state = 'failing')
            AND (SELECT count(*) FILTER (WHERE parked = 'limit') >= $3
                   FROM workflow.messages WHERE id = ANY ($2))",
        &[&origin, &backlog, &waiting],
        DEADLINE,
    )
    .await;
    ids.extend(&backlog);
    drop((on_primary, on_standby));

    primary.stop_immediate();
    // A probe the old primary had in flight is over within its 250 ms: every request from
    // here on is the new primary's.
    eventually(
        "the old primary's last request to end",
        Duration::from_secs(5),
        || async { (receiver.in_flight("/down") == 0).then_some(()) },
    )
    .await;
    let failover = Instant::now();
    standby.promote();
    let on_promoted = standby.connect().await;
    let dispatcher = dispatcher_pid(&on_promoted, DEADLINE).await;
    let running = Instant::now();
    let mut not_failing = Vec::new();
    while running.elapsed() < WATCH {
        let stored = destination_state(&on_promoted, &origin).await;
        if stored != "failing" {
            not_failing.push((running.elapsed(), stored));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let after_promotion = receiver
        .received("/down")
        .iter()
        .filter(|r| r.at >= failover)
        .count();
    // Every request but the three that made it failing was a probe, before or after the
    // promotion; a probe takes one waiting message.
    let probes = receiver.received("/down").len().saturating_sub(3);
    let (_, never_tried) = attempts(&on_promoted, &backlog).await;
    assert!(
        not_failing.is_empty(),
        "the destination not failing on the promoted standby (dispatcher {dispatcher}): {not_failing:?}"
    );
    assert!(
        receiver.max_in_flight("/down") <= 1,
        "{} requests at once to the failing destination",
        receiver.max_in_flight("/down")
    );
    // A probe at most a second apart (a tenth of the failing time, from 1 s), where a
    // spray would send the waiting messages at once.
    let allowed = WATCH.as_secs() as usize + 2;
    assert!(
        (1..=allowed).contains(&after_promotion),
        "{after_promotion} requests in the {WATCH:?} after the promotion: probes are one a \
         second at most, and the promoted standby makes them"
    );
    // An attempt is counted at the claim: one more for a message claimed as the primary
    // stopped, and one for a probe claimed but not yet arrived as we look.
    assert!(
        never_tried as usize + probes + 2 >= BACKLOG as usize,
        "only {never_tried} of {BACKLOG} waiting messages were held back without an attempt, \
         for {probes} probes"
    );

    receiver.always("/down", Reply::Status(200));
    let back = Instant::now();
    all_delivered(
        &on_promoted,
        &ids,
        "every message to be delivered on the new primary within 15 s of the receiver's return",
        Duration::from_secs(15),
    )
    .await;
    eprintln!(
        "after the promotion: {after_promotion} requests in {WATCH:?}; all {} delivered {:?} after the return",
        ids.len(),
        back.elapsed()
    );
    assert_eq!(
        destination_state(&on_promoted, &origin).await,
        "healthy",
        "the first answer ended the outage on the new primary"
    );
    assert_invariants(&on_promoted).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_endpoint_disable_holds_messages_without_attempts_and_says_why() {
    let (client, receiver) = setup().await;
    let endpoint = unique("held");
    client
        .execute(
            "SELECT wf_endpoint($1, $2)",
            &[&endpoint, &receiver.url("/held")],
        )
        .await
        .unwrap();

    // Owner only: an application role may not disable an endpoint, nor enable one.
    cluster().psql(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
                 CREATE ROLE app LOGIN;
             END IF;
         END $$;
         GRANT workflow_user TO app;",
    );
    let app = workflow_tests::connect(&format!("{} user=app", cluster().conninfo())).await;
    for call in [
        "SELECT wf_endpoint_disable($1, 'not yours')",
        "SELECT wf_endpoint_enable($1)",
    ] {
        let error = app
            .execute(call, &[&endpoint])
            .await
            .expect_err("an application role");
        assert_eq!(sqlstate(&error), "42501", "{call}: {error}");
    }

    let reason = "the receiver's maintenance, until 14:00";
    client
        .execute("SELECT wf_endpoint_disable($1, $2)", &[&endpoint, &reason])
        .await
        .unwrap();
    let row = client
        .query_one(
            "SELECT state, disabled_reason, state_since = disabled_at, next_probe_at IS NULL
               FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert_eq!(
        (
            row.get::<_, String>(0),
            row.get::<_, Option<String>>(1),
            row.get::<_, bool>(2),
            row.get::<_, bool>(3)
        ),
        ("disabled".to_string(), Some(reason.to_string()), true, true),
        "the endpoints view says it is disabled, since when and why"
    );

    let ids = enqueue_many(&client, &endpoint, 5).await;
    until_true(
        &client,
        "the messages to wait behind the disabled endpoint",
        "SELECT bool_and(parked = 'endpoint') FROM workflow.messages WHERE id = ANY ($1)",
        &[&ids],
        DEADLINE,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        receiver.received("/held").is_empty(),
        "a disabled endpoint got a request"
    );
    assert_eq!(
        attempts(&client, &ids).await,
        (0, 5),
        "waiting behind a disable uses no attempt"
    );

    client
        .execute("SELECT wf_endpoint_enable($1)", &[&endpoint])
        .await
        .unwrap();
    let attempts = all_delivered(
        &client,
        &ids,
        "every message to be delivered after the enable",
        Duration::from_secs(10),
    )
    .await;
    assert_eq!(attempts, vec![1; 5], "one attempt each, its delivery");
    let row = client
        .query_one(
            "SELECT state, disabled_reason FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert_eq!(
        (row.get::<_, String>(0), row.get::<_, Option<String>>(1)),
        ("healthy".to_string(), None)
    );
}

//! Flow control by workflow name (`wf_queue`) and tenants: limits that hold across every
//! claimer and the dispatcher's push, round-robin across tenants, a rate, the owner's API
//! and its refusals, and the tenant messages carry.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::receiver::Receiver;
use workflow_tests::{
    Cluster, dispatch_cluster, dispatcher_pid, eventually, message_reaches, sqlstate, unique,
};

const DEADLINE: Duration = Duration::from_secs(60);
const CLAIMERS: usize = 8;

/// A client of the dispatching cluster, a receiver answering after `answer`, and an
/// endpoint for it that takes two requests at once; returns them with the endpoint's name
/// and the receiver's path.
async fn endpoint_of_two(prefix: &str, answer: Duration) -> (Client, Receiver, String, String) {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let endpoint = unique(prefix);
    let path = format!("/{endpoint}");
    receiver.always(&path, workflow_tests::receiver::Reply::After(answer, 200));
    client
        .execute(
            "SELECT wf_endpoint($1, $2, max_concurrency => 2)",
            &[&endpoint, &receiver.url(&path)],
        )
        .await
        .unwrap();
    (client, receiver, endpoint, path)
}

/// Enqueues `n` messages of `tenant` to `endpoint` in one transaction, each naming its
/// tenant in its body; returns their ids.
async fn enqueue_for(client: &Client, endpoint: &str, tenant: &str, n: i32) -> Vec<i64> {
    client
        .query(
            "SELECT wf_enqueue($1, jsonb_build_object('tenant', $2::text), tenant => $2)
               FROM generate_series(1, $3)",
            &[&endpoint, &tenant, &n],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect()
}

/// Cancels what is still pending for `endpoint`; a message delivered meanwhile is left be.
async fn cancel_pending(client: &Client, endpoint: &str) {
    let pending = client
        .query(
            "SELECT id FROM workflow.outbox WHERE endpoint = $1 AND status = 'pending'",
            &[&endpoint],
        )
        .await
        .unwrap();
    for row in pending {
        let id: i64 = row.get(0);
        if let Err(error) = client.execute("SELECT wf_cancel_message($1)", &[&id]).await {
            assert_eq!(sqlstate(&error), "55000", "{error}");
        }
    }
}

async fn start_many(client: &Client, name: &str, tenant: &str, n: i32) {
    client
        .execute(
            "SELECT wf_start($1, jsonb_build_object('n', i), tenant => $2) FROM generate_series(1, $3) i",
            &[&name, &tenant, &n],
        )
        .await
        .unwrap();
}

/// The most leased workflows of `name` seen at once, in all and of one tenant, sampled in one
/// snapshot every few milliseconds until `done`.
fn sample_running(
    cluster: &'static Cluster,
    name: String,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<(i64, i64)> {
    tokio::spawn(async move {
        let client = cluster.connect().await;
        let (mut most, mut most_of_one) = (0i64, 0i64);
        while !done.load(Ordering::Acquire) {
            let row = client
                .query_one(
                    "SELECT coalesce(sum(n), 0)::bigint, coalesce(max(n), 0)::bigint
                       FROM (SELECT count(*) AS n FROM workflow.runs
                              WHERE name = $1 AND status = 'running' AND owner IS NOT NULL
                                AND lease_expires_at > clock_timestamp()
                              GROUP BY tenant) t",
                    &[&name],
                )
                .await
                .unwrap();
            most = most.max(row.get(0));
            most_of_one = most_of_one.max(row.get(1));
            tokio::time::sleep(Duration::from_millis(3)).await;
        }
        (most, most_of_one)
    })
}

/// Claimers that each take up to two workflows of `name` at a time, hold them a moment, and
/// complete them, until none is left running. Returns how many each completed.
fn claimers(cluster: &'static Cluster, name: &str) -> Vec<tokio::task::JoinHandle<i64>> {
    (0..CLAIMERS)
        .map(|i| {
            let name = name.to_string();
            tokio::spawn(async move {
                let client = cluster.connect().await;
                let owner = format!("claimer-{i}");
                let mut completed = 0;
                loop {
                    let ids: Vec<uuid::Uuid> = client
                        .query("SELECT wf_claim($1, $2, max => 2)", &[&name, &owner])
                        .await
                        .unwrap()
                        .iter()
                        .map(|row| row.get(0))
                        .collect();
                    if ids.is_empty() {
                        let left: i64 = client
                            .query_one(
                                "SELECT count(*) FROM workflow.runs WHERE name = $1 AND status = 'running'",
                                &[&name],
                            )
                            .await
                            .unwrap()
                            .get(0);
                        if left == 0 {
                            return completed;
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                        continue;
                    }
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    for id in ids {
                        client
                            .execute("SELECT wf_complete($1, NULL, $2)", &[&id, &owner])
                            .await
                            .unwrap();
                        completed += 1;
                    }
                }
            })
        })
        .collect()
}

/// The test as the push handler of `name`: completes every pushed workflow as the owner its
/// push names, until `done`. Returns how many it completed.
fn push_handler(
    cluster: &'static Cluster,
    receiver: Arc<Receiver>,
    path: String,
    done: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<i64> {
    tokio::spawn(async move {
        let client = cluster.connect().await;
        let mut handled = 0;
        while !done.load(Ordering::Acquire) {
            let pushes = receiver.received(&path);
            for push in &pushes[handled..] {
                let body: serde_json::Value = serde_json::from_slice(&push.body).unwrap();
                let id: uuid::Uuid = body["workflow"].as_str().unwrap().parse().unwrap();
                let owner = body["owner"].as_str().unwrap();
                // A push that lost its lease (another claimer recovered it) completes nothing.
                let _ = client
                    .execute("SELECT wf_complete($1, NULL, $2)", &[&id, &owner])
                    .await;
            }
            handled = pushes.len();
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        handled as i64
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn limits_hold_across_eight_claimers_and_the_push() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Arc::new(Receiver::start().await);
    let path = format!("/{}", unique("push"));
    for (name, max_running, per_tenant) in [(unique("limited"), 5, 0), (unique("per-tenant"), 0, 2)]
    {
        client
            .execute(
                "SELECT wf_queue($1, $2, $3)",
                &[&name, &max_running, &per_tenant],
            )
            .await
            .unwrap();
        client
            .execute("SELECT wf_handler($1, $2)", &[&name, &receiver.url(&path)])
            .await
            .unwrap();
        for tenant in ["a", "b", "c", "d"] {
            start_many(&client, &name, tenant, 60).await;
        }
        let done = Arc::new(AtomicBool::new(false));
        let sampler = sample_running(cluster, name.clone(), Arc::clone(&done));
        // The push goes first (the starts woke it); then the claimers join in.
        eventually("the push to lease some", DEADLINE, || async {
            let pushed: i64 = client
                .query_one(
                    "SELECT count(*) FROM workflow.runs WHERE name = $1 AND owner LIKE 'push-%'",
                    &[&name],
                )
                .await
                .unwrap()
                .get(0);
            (pushed > 0).then_some(())
        })
        .await;
        let handler = push_handler(
            cluster,
            Arc::clone(&receiver),
            path.clone(),
            Arc::clone(&done),
        );
        let mut claimed = 0;
        for claimer in claimers(cluster, &name) {
            claimed += claimer.await.unwrap();
        }
        done.store(true, Ordering::Release);
        let (most, most_of_one) = sampler.await.unwrap();
        let pushed = handler.await.unwrap();
        assert!(
            claimed > 0 && pushed > 0,
            "{name}: claimed {claimed}, pushed {pushed}"
        );
        if max_running > 0 {
            assert_eq!(
                most,
                i64::from(max_running),
                "{name}: at most, and up to, the limit"
            );
        } else {
            assert_eq!(
                most_of_one,
                i64::from(per_tenant),
                "{name}: per tenant, at most, and up to, the limit"
            );
        }
        client
            .execute("SELECT wf_handler_drop($1)", &[&name])
            .await
            .unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenant_is_not_stuck_behind_a_big_ones_backlog() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let name = unique("fair");
    client
        .execute("SELECT wf_queue($1, max_running => 8)", &[&name])
        .await
        .unwrap();
    start_many(&client, &name, "big", 500).await;
    start_many(&client, &name, "small", 20).await;

    // One worker, four at a time, in the order it completes them.
    let mut order: Vec<String> = Vec::new();
    while order.len() < 520 {
        let rows = client
            .query(
                "SELECT workflow, tenant FROM wf_claim_runs($1, 'worker', max => 4)",
                &[&name],
            )
            .await
            .unwrap();
        assert!(!rows.is_empty(), "ready workflows are left");
        for row in rows {
            let id: uuid::Uuid = row.get(0);
            client
                .execute("SELECT wf_complete($1, NULL, 'worker')", &[&id])
                .await
                .unwrap();
            order.push(row.get(1));
        }
    }
    let small_done = order.iter().rposition(|t| t == "small").unwrap();
    let big_before = order[..small_done].iter().filter(|t| *t == "big").count();
    assert!(
        big_before < 120,
        "the small tenant's last finished after {big_before} of the big one's"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rate_holds_within_ten_percent() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let name = unique("rated");
    client
        .execute("SELECT wf_queue($1, rate_per_second => 10)", &[&name])
        .await
        .unwrap();
    start_many(&client, &name, "t", 200).await;
    // Four claimers as fast as they can for five seconds after the first lease; the bucket
    // starts full (one second's worth).
    let claimed = Arc::new(AtomicI64::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..4 {
        let (name, claimed) = (name.clone(), Arc::clone(&claimed));
        tasks.push(tokio::spawn(async move {
            let client = cluster.connect().await;
            while started.elapsed() < Duration::from_secs(5) {
                let n = client
                    .query(
                        "SELECT wf_claim($1, $2, max => 5)",
                        &[&name, &format!("r{i}")],
                    )
                    .await
                    .unwrap()
                    .len();
                claimed.fetch_add(n as i64, Ordering::AcqRel);
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    let rate = (claimed.load(Ordering::Acquire) as f64 - 10.0) / elapsed;
    assert!(
        (9.0..=11.0).contains(&rate),
        "{} leases in {elapsed:.2} s: {rate:.2} a second after the first second's 10",
        claimed.load(Ordering::Acquire)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_queue_updates_what_it_is_given_and_refuses_bad_input_and_applications() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let name = unique("settings");
    let limits = "SELECT max_running, max_running_per_tenant, rate_per_second FROM workflow.queues WHERE name = $1";
    let read = |row: tokio_postgres::Row| -> (Option<i32>, Option<i32>, Option<f64>) {
        (row.get(0), row.get(1), row.get(2))
    };
    client
        .execute("SELECT wf_queue($1, 5)", &[&name])
        .await
        .unwrap();
    assert_eq!(
        read(client.query_one(limits, &[&name]).await.unwrap()),
        (Some(5), None, None)
    );
    client
        .execute(
            "SELECT wf_queue($1, max_running_per_tenant => 2, rate_per_second => 2.5)",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(
        read(client.query_one(limits, &[&name]).await.unwrap()),
        (Some(5), Some(2), Some(2.5))
    );
    client
        .execute(
            "SELECT wf_queue($1, max_running => 0, rate_per_second => 0)",
            &[&name],
        )
        .await
        .unwrap();
    assert_eq!(
        read(client.query_one(limits, &[&name]).await.unwrap()),
        (None, Some(2), None)
    );

    for (call, state) in [
        ("SELECT wf_queue($1, -1)", "22023"),
        ("SELECT wf_queue($1, 1000001)", "22023"),
        ("SELECT wf_queue($1, max_running_per_tenant => -5)", "22023"),
        ("SELECT wf_queue($1, rate_per_second => 'NaN')", "22023"),
        (
            "SELECT wf_queue($1, rate_per_second => 'Infinity')",
            "22023",
        ),
        ("SELECT wf_queue($1, rate_per_second => -1)", "22023"),
        ("SELECT wf_queue($1, rate_per_second => 1e9)", "22023"),
        ("SELECT wf_queue(NULLIF($1, $1))", "22004"),
    ] {
        let error = client.execute(call, &[&name]).await.unwrap_err();
        assert_eq!(sqlstate(&error), state, "{call}: {error}");
    }
    assert_eq!(
        read(client.query_one(limits, &[&name]).await.unwrap()),
        (None, Some(2), None),
        "nothing changed"
    );

    client
        .execute("SELECT wf_queue_drop($1)", &[&name])
        .await
        .unwrap();
    assert!(client.query_opt(limits, &[&name]).await.unwrap().is_none());
    let error = client
        .execute("SELECT wf_queue_drop($1)", &[&name])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42704");

    let role = unique("queue_app").replace('-', "_");
    client
        .batch_execute(&format!(
            "CREATE ROLE {role} LOGIN; GRANT workflow_user TO {role};"
        ))
        .await
        .unwrap();
    let app = workflow_tests::connect(&format!("{} user={role}", cluster.conninfo())).await;
    for call in ["SELECT wf_queue($1, 1)", "SELECT wf_queue_drop($1)"] {
        let error = app.execute(call, &[&name]).await.unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "{call}");
    }
    app.query("SELECT * FROM workflow.queues", &[])
        .await
        .expect("applications read the view");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_carry_their_tenant() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let name = unique("tenant-messages");
    let receiver = Receiver::start().await;
    let url = receiver.url("/tenant");
    let run: uuid::Uuid = client
        .query_one(
            "SELECT wf_start($1, tenant => 'acme', owner => 'w')",
            &[&name],
        )
        .await
        .unwrap()
        .get(0);
    let tenant_of = |id: i64| {
        let client = &client;
        async move {
            client
                .query_one("SELECT tenant FROM workflow.messages WHERE id = $1", &[&id])
                .await
                .unwrap()
                .get::<_, Option<String>>(0)
        }
    };
    let inherited: i64 = client
        .query_one("SELECT wf_enqueue($1, '{}', workflow => $2)", &[&url, &run])
        .await
        .unwrap()
        .get(0);
    let given: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', workflow => $2, tenant => 'globex')",
            &[&url, &run],
        )
        .await
        .unwrap()
        .get(0);
    let plain: i64 = client
        .query_one("SELECT wf_enqueue($1, '{}')", &[&url])
        .await
        .unwrap()
        .get(0);
    assert_eq!(tenant_of(inherited).await.as_deref(), Some("acme"));
    assert_eq!(tenant_of(given).await.as_deref(), Some("globex"));
    assert_eq!(tenant_of(plain).await, None);

    let endpoint = unique("tenant-subscriber");
    client
        .execute(
            "SELECT wf_endpoint($1, $2, event_types => ARRAY['order.*'])",
            &[&endpoint, &url],
        )
        .await
        .unwrap();
    let published: Vec<i64> = client
        .query_one(
            "SELECT wf_publish('order.paid', '{}', tenant => 'initech')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!published.is_empty());
    for id in published {
        assert_eq!(tenant_of(id).await.as_deref(), Some("initech"));
    }
    let error = client
        .execute("SELECT wf_enqueue($1, '{}', tenant => '')", &[&url])
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "22023");

    // A push is for its run's tenant.
    let pushed = unique("tenant-pushed");
    client
        .execute(
            "SELECT wf_handler($1, $2)",
            &[&pushed, &receiver.url("/pushes")],
        )
        .await
        .unwrap();
    let run: uuid::Uuid = client
        .query_one("SELECT wf_start($1, tenant => 'umbrella')", &[&pushed])
        .await
        .unwrap()
        .get(0);
    eventually("the push's message", DEADLINE, || async {
        client
            .query_opt(
                "SELECT tenant FROM workflow.messages WHERE workflow_id = $1",
                &[&run],
            )
            .await
            .unwrap()
            .map(|row| row.get::<_, Option<String>>(0))
    })
    .await
    .filter(|tenant| tenant == "umbrella")
    .expect("the push carries its run's tenant");
    client
        .execute("SELECT wf_handler_drop($1)", &[&pushed])
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_small_tenants_messages_are_not_stuck_behind_a_big_ones_backlog() {
    let (client, receiver, endpoint, path) =
        endpoint_of_two("fair", Duration::from_millis(10)).await;
    for (tenant, n) in [("big", 500), ("small", 20)] {
        enqueue_for(&client, &endpoint, tenant, n).await;
    }
    let tenant_of = |body: &[u8]| -> String {
        let body: serde_json::Value = serde_json::from_slice(body).unwrap();
        body["tenant"].as_str().unwrap().to_string()
    };
    let arrived = eventually("the small tenant's 20", DEADLINE, || async {
        let arrived: Vec<String> = receiver
            .received(&path)
            .iter()
            .map(|r| tenant_of(&r.body))
            .collect();
        (arrived.iter().filter(|t| *t == "small").count() == 20).then_some(arrived)
    })
    .await;
    let big_before = arrived.iter().filter(|t| *t == "big").count();
    assert!(
        big_before < 120,
        "the small tenant's last message arrived after {big_before} of the big one's"
    );
}

/// A tenant's flood enqueued in one transaction, then another tenant's message: the message
/// goes out within a turn or two, not after the claim has walked the whole flood (which it
/// did, a batch a round, before a flood parked itself as it was enqueued).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_after_another_tenants_flood_goes_out_within_a_few_turns() {
    let (client, receiver, endpoint, path) =
        endpoint_of_two("after-flood", Duration::from_millis(10)).await;
    enqueue_for(&client, &endpoint, "flood", 10000).await;
    let next = enqueue_for(&client, &endpoint, "next", 1).await[0];
    message_reaches(&client, next, "delivered", DEADLINE).await;
    let flood_before = receiver
        .received(&path)
        .iter()
        .take_while(|r| !String::from_utf8_lossy(&r.body).contains("next"))
        .count();
    // The destination's room is 2 × 2: the flood's first four, then a turn each.
    assert!(
        flood_before <= 12,
        "the next tenant's message arrived after {flood_before} of the flood's"
    );
    cancel_pending(&client, &endpoint).await;
}

/// A destination busy with one tenant's backlog, its requests answered in lock-step: another
/// tenant's message takes the next slot that frees, not one after the backlog's requests
/// already claimed behind those in flight.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_newcomer_takes_the_next_free_slot_of_a_busy_destination() {
    let (client, receiver, endpoint, path) =
        endpoint_of_two("newcomer", Duration::from_millis(300)).await;
    enqueue_for(&client, &endpoint, "busy", 40).await;
    // Two in flight, two more claimed behind them.
    receiver.wait_for(&path, 2, DEADLINE).await;
    let next = enqueue_for(&client, &endpoint, "next", 1).await[0];
    message_reaches(&client, next, "delivered", DEADLINE).await;
    // By the requests' own start times: within one batch the receiver sees them in any order.
    let (first_batch, newcomer): (f64, f64) = {
        let row = client
            .query_one(
                "SELECT extract(epoch FROM min(last_started_at))::float8,
                        extract(epoch FROM max(last_started_at) FILTER (WHERE tenant = 'next'))::float8
                   FROM workflow.outbox WHERE endpoint = $1",
                &[&endpoint],
            )
            .await
            .unwrap();
        (row.get(0), row.get(1))
    };
    let waited = newcomer - first_batch;
    assert!(
        waited < 0.45,
        "the newcomer started {waited:.3} s after the first batch, not with the second (0.3 s)"
    );
    cancel_pending(&client, &endpoint).await;
}

/// An endpoint created (or its limit lowered) in the transaction that floods it: the first
/// round after it reads the endpoint's room again, and claims within it. It ranked by the
/// room it knew before, which no destination could reach, and claimed the whole due
/// batch, a generation and more beyond the room: another tenant's message then waited
/// behind all of it (seen as a rare failure of the newcomer test above).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_round_after_a_limit_is_set_claims_within_it() {
    // Its own cluster: the smallest room the dispatcher knows is the default's.
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    // A first delivery: the dispatcher has read the rooms, all the default's.
    let warm = workflow_tests::enqueue(&client, &receiver.url("/warm")).await;
    message_reaches(&client, warm, "delivered", DEADLINE).await;

    let path = format!("/{}", unique("limited-at-once"));
    receiver.always(
        &path,
        workflow_tests::receiver::Reply::After(Duration::from_millis(500), 200),
    );
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "SELECT wf_endpoint('limited', $1, max_concurrency => 2)",
            &[&receiver.url(&path)],
        )
        .await
        .unwrap();
    enqueue_for(&client, "limited", "busy", 40).await;
    client.batch_execute("COMMIT").await.unwrap();
    receiver.wait_for(&path, 2, DEADLINE).await;
    // Room for 2 in flight and 2 behind them, and the light tenant's 2 beyond.
    let leased = client
        .query_one(
            "SELECT count(*) FROM workflow.outbox
              WHERE endpoint = 'limited' AND leased_until > now() AND status = 'pending'",
            &[],
        )
        .await
        .unwrap()
        .get::<_, i64>(0);
    assert!(
        leased <= 6,
        "{leased} claimed for an endpoint with room for 4 (and 2)"
    );
    cancel_pending(&client, "limited").await;
}

/// A tenant at its own limit is stepped over: a claim of one takes another tenant's ready
/// workflow, however the round-robin stands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_at_its_limit_is_stepped_over() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let name = unique("stepped-over");
    client
        .execute("SELECT wf_queue($1, max_running_per_tenant => 1)", &[&name])
        .await
        .unwrap();
    start_many(&client, &name, "held", 10).await;
    let first: uuid::Uuid = client
        .query_one("SELECT wf_claim($1, 'w')", &[&name])
        .await
        .unwrap()
        .get(0);
    // Every later claim finds "held" at its limit, whichever tenants come before or after.
    for tenant in ["a-before", "z-after"] {
        start_many(&client, &name, tenant, 1).await;
        let claimed = client
            .query(
                "SELECT workflow, tenant FROM wf_claim_runs($1, 'w')",
                &[&name],
            )
            .await
            .unwrap();
        assert_eq!(claimed.len(), 1, "a claim beside {tenant}");
        assert_eq!(claimed[0].get::<_, String>(1), tenant);
        assert_ne!(claimed[0].get::<_, uuid::Uuid>(0), first);
    }
    assert!(
        client
            .query("SELECT wf_claim($1, 'w', max => 5)", &[&name])
            .await
            .unwrap()
            .is_empty(),
        "held is at its limit and nobody else is ready"
    );
}

/// A claim transaction left open holds the name's queue: another application's claim of
/// the name finds nothing after a second instead of waiting for it (or deadlocking), and
/// claims of any name pass the busy name by and take the others'.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_open_claim_transaction_holds_others_back_a_second_at_most() {
    // A cluster of its own: a claim of any name would take other tests' workflows.
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let holder = cluster.connect().await;
    let other = cluster.connect().await;
    let (busy, free) = (unique("busy"), unique("free"));
    for name in [&busy, &free] {
        holder
            .execute("SELECT wf_queue($1, max_running => 100)", &[name])
            .await
            .unwrap();
        start_many(&holder, name, "t", 3).await;
    }
    holder.batch_execute("BEGIN").await.unwrap();
    holder
        .execute("SELECT wf_claim($1, 'holder')", &[&busy])
        .await
        .unwrap();
    let asked = Instant::now();
    let claimed = other
        .query("SELECT wf_claim($1, 'other')", &[&busy])
        .await
        .unwrap();
    assert!(claimed.is_empty(), "the queue is held");
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "waited {:?}",
        asked.elapsed()
    );
    let names: Vec<String> = other
        .query(
            "SELECT DISTINCT r.name FROM wf_claim(NULL, 'other', max => 10) c JOIN workflow.runs r ON r.id = c",
            &[],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(names.contains(&free) && !names.contains(&busy), "{names:?}");
    holder.batch_execute("COMMIT").await.unwrap();
    assert_eq!(
        other
            .query("SELECT wf_claim($1, 'other', max => 5)", &[&busy])
            .await
            .unwrap()
            .len(),
        2,
        "once committed, the rest"
    );
}

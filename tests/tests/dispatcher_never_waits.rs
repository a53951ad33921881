//! The dispatcher never waits on an application (for a table lock, a tenth of a second at
//! most), never commits half a round, and never sends one message twice while healthy.

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{
    Cluster, dispatch_cluster, dispatcher_pid, eventually, message_reaches, unique,
};

const DEADLINE: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_holding_a_message_locked_for_10_s_does_not_stall_delivery() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let slow = format!("/{}", unique("held"));
    let fast = format!("/{}", unique("flowing"));
    receiver.script(&slow, [Reply::After(Duration::from_millis(500), 200)]);

    // The message is in flight when the application locks it (an open wf_cancel_message):
    // its outcome then meets the lock.
    let held = workflow_tests::enqueue(&client, &receiver.url(&slow)).await;
    receiver.wait_for(&slow, 1, DEADLINE).await;
    let app = cluster.connect().await;
    app.batch_execute("BEGIN").await.unwrap();
    app.execute("SELECT wf_cancel_message($1)", &[&held])
        .await
        .unwrap();

    let locked_at = Instant::now();
    let mut arrivals = 0;
    while locked_at.elapsed() < Duration::from_secs(10) {
        let id = workflow_tests::enqueue(&client, &receiver.url(&fast)).await;
        let started = Instant::now();
        message_reaches(&client, id, "delivered", Duration::from_secs(3)).await;
        arrivals += 1;
        assert!(started.elapsed() < Duration::from_secs(3));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(arrivals >= 5, "only {arrivals} messages went out in 10 s");

    // The held outcome was kept, not lost: once the lock goes, it is recorded.
    app.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(
        message_reaches(&client, held, "delivered", DEADLINE).await,
        1
    );
    assert_eq!(receiver.received(&slow).len(), 1);
}

/// Autovacuum, truncating a table's empty tail, holds the table's exclusive lock until it
/// sees someone waiting for it. A round that only tried its tables' locks was never seen:
/// every round during the truncation failed, and delivery stalled for a back-off of 100 ms
/// or more each time. A round now waits for a locked table, as a waiter in `pg_locks` (what
/// vacuum looks for), holding none of its other tables (no wait-for cycle with DDL that
/// locks them in another order), for 100 ms; and carries on once the lock goes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_waits_for_a_locked_table_where_vacuum_can_see_it() {
    // Its own cluster: a table locked in the shared one would hold up the other tests.
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("behind-lock"));

    // A table the enqueue does not touch, late in the round's order, locked as a
    // truncating vacuum locks it.
    let app = cluster.connect().await;
    app.batch_execute("BEGIN; LOCK TABLE workflow.handlers IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let id = workflow_tests::enqueue(&client, &receiver.url(&path)).await;
    // When the dispatcher's current wait began, and how many of the extension's tables it
    // holds meanwhile.
    let waiting = || async {
        client
            .query_opt(
                "SELECT w.waitstart,
                        (SELECT count(*) FROM pg_locks h JOIN pg_class c ON c.oid = h.relation
                          WHERE h.pid = $1 AND h.granted
                            AND c.relnamespace = 'workflow'::regnamespace)
                   FROM pg_locks w
                  WHERE w.pid = $1 AND NOT w.granted
                    AND w.relation = 'workflow.handlers'::regclass",
                &[&pid],
            )
            .await
            .unwrap()
            .map(|row| (row.get::<_, SystemTime>(0), row.get::<_, i64>(1)))
    };
    let (first, held) = eventually(
        "the dispatcher to wait for the locked table",
        DEADLINE,
        waiting,
    )
    .await;
    assert_eq!(held, 0, "the round waits holding none of its tables");
    // The wait gives up (as `Busy`: no error is logged, the worker lives on), and a later
    // round waits again: well within the dispatcher's own lock_timeout of 1 s.
    let (next, held) = eventually("the dispatcher to wait again", DEADLINE, || async {
        waiting().await.filter(|(started, _)| *started != first)
    })
    .await;
    assert_eq!(held, 0, "the round waits holding none of its tables");
    let apart = next.duration_since(first).unwrap();
    assert!(
        apart < Duration::from_millis(800),
        "the waits began {apart:?} apart: 100 ms of waiting and a back-off expected"
    );
    assert!(
        receiver.received(&path).is_empty(),
        "nothing is sent while a round cannot lock its tables"
    );

    app.batch_execute("ROLLBACK").await.unwrap();
    assert_eq!(message_reaches(&client, id, "delivered", DEADLINE).await, 1);
    assert_eq!(
        dispatcher_pid(&client, DEADLINE).await,
        pid,
        "the dispatcher waited and timed out, it did not crash"
    );
    // (The cluster logs at WARNING and above, which includes LOG: a failed round shows.)
    let log = cluster.server_log();
    assert!(
        !log.contains("lock timeout"),
        "a round that timed out on a table lock is Busy, not an error: {log}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_round_that_fails_midway_is_rolled_back_whole_and_retried() {
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("durable"));
    let workflow: uuid::Uuid = workflow_tests::start_workflow(&client, &unique("rollback")).await;
    // The durable step's checkpoint is written after the message's record, in the same
    // round: make it fail there.
    cluster.psql(
        "CREATE FUNCTION public.refuse_step() RETURNS trigger LANGUAGE plpgsql
             AS $$ BEGIN RAISE EXCEPTION 'forced failure of the checkpoint'; END $$;
         CREATE TRIGGER refuse_step BEFORE INSERT ON workflow.checkpoints
             FOR EACH ROW WHEN (NEW.step = 'charge') EXECUTE FUNCTION public.refuse_step();",
    );
    let id: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', workflow => $2, step => 'charge')",
            &[&receiver.url(&path), &workflow],
        )
        .await
        .unwrap()
        .get(0);
    receiver.wait_for(&path, 1, DEADLINE).await;
    workflow_tests::eventually("the failed round to be reported", DEADLINE, || async {
        cluster
            .server_log()
            .contains("forced failure of the checkpoint")
            .then_some(())
    })
    .await;

    // A failure that persists is retried with a back-off (100 ms doubling), not in a spin:
    // over three seconds, a handful of rolled-back rounds, not hundreds.
    let rollbacks = "SELECT pg_stat_clear_snapshot() IS NULL,
                            (SELECT xact_rollback FROM pg_stat_database WHERE datname = current_database())";
    let before: i64 = client.query_one(rollbacks, &[]).await.unwrap().get(1);
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after: i64 = client.query_one(rollbacks, &[]).await.unwrap().get(1);
    assert!(
        after - before <= 20,
        "{} rounds rolled back in 3 s: no back-off",
        after - before
    );

    // Nothing of the failed round committed: not the delivery without its checkpoint.
    let status: String = client
        .query_one("SELECT status FROM wf_message($1)", &[&id])
        .await
        .unwrap()
        .get(0);
    assert_eq!(status, "pending");
    assert!(
        workflow_tests::step_output(&client, workflow, "charge")
            .await
            .is_null()
    );
    assert_eq!(
        dispatcher_pid(&client, DEADLINE).await,
        pid,
        "the worker lives on"
    );

    cluster.psql("DROP TRIGGER refuse_step ON workflow.checkpoints");
    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert_eq!(
        workflow_tests::step_output(&client, workflow, "charge").await["status"],
        200
    );
    assert_eq!(dispatcher_pid(&client, DEADLINE).await, pid);
    assert_eq!(
        receiver.received(&path).len(),
        1,
        "the kept outcome was recorded"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn jobs_queued_behind_a_20_s_endpoint_past_their_lease_are_not_sent_twice() {
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.extend([
        "workflow.max_concurrency = 2",
        "workflow.poll_interval = '1s'",
    ]);
    let cluster = Cluster::start(&settings);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let slow = format!("/{}", unique("slow"));
    let fast = format!("/{}", unique("fast"));
    receiver.script(&slow, vec![Reply::After(Duration::from_secs(20), 200); 2]);
    client
        .execute(
            "SELECT wf_endpoint('slow', $1, timeout => '30 seconds')",
            &[&receiver.url(&slow)],
        )
        .await
        .unwrap();

    // Two slow requests hold both connections for 20 s; the fast messages (lease: two
    // 1 s timeouts and 10 s) are claimed meanwhile and wait longer than their lease.
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(
            client
                .query_one("SELECT wf_enqueue('slow', '{}')", &[])
                .await
                .unwrap()
                .get::<_, i64>(0),
        );
    }
    receiver.wait_for(&slow, 2, DEADLINE).await;
    for _ in 0..20 {
        ids.push(workflow_tests::enqueue(&client, &receiver.url(&fast)).await);
    }
    for id in &ids {
        let attempts = message_reaches(&client, *id, "delivered", DEADLINE).await;
        assert_eq!(
            attempts, 1,
            "message {id}: a job not sent is not an attempt"
        );
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    for request in receiver
        .received(&fast)
        .iter()
        .chain(&receiver.received(&slow))
    {
        *seen
            .entry(request.header("webhook-id").unwrap().to_string())
            .or_default() += 1;
    }
    let duplicates: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
    assert!(duplicates.is_empty(), "sent twice: {duplicates:?}");
    assert_eq!(seen.len(), 22);
}

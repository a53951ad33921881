//! The shipped queries file, `monitoring/postgres_exporter.yaml`, loaded by Debian's
//! `prometheus-postgres-exporter` against a real cluster, as a role with nothing but
//! `workflow_user`, and its `/metrics` scraped over HTTP.

use std::time::Duration;
use workflow_tests::exporter::{expect, sample, scrape, start_exporter};
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{
    Cluster, DISPATCHER_SETTINGS, dispatch_cluster, dispatcher_pid, enqueue, eventually, free_port,
    message_reaches,
};

#[tokio::test(flavor = "multi_thread")]
async fn the_exporter_serves_the_shipped_queries() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let receiver = Receiver::start().await;
    receiver.always("/down", Reply::Status(404));
    client
        .batch_execute(&format!(
            "CREATE ROLE exporter LOGIN;
             GRANT workflow_user TO exporter;
             SELECT wf_endpoint('scraped', '{}');",
            receiver.url("/up")
        ))
        .await
        .unwrap();
    for _ in 0..3 {
        let id: i64 = client
            .query_one("SELECT wf_enqueue('scraped', '{}')", &[])
            .await
            .unwrap()
            .get(0);
        message_reaches(&client, id, "delivered", Duration::from_secs(30)).await;
    }
    let dead = enqueue(&client, &receiver.url("/down")).await;
    message_reaches(&client, dead, "dead", Duration::from_secs(30)).await;
    // Scheduled for tomorrow: scheduled work, no backlog.
    client
        .execute(
            "SELECT wf_enqueue($1, '{}', deliver_at => now() + interval '1 day')",
            &[&receiver.url("/tomorrow")],
        )
        .await
        .unwrap();
    client
        .batch_execute(
            "SELECT wf_start('scraped.flow', owner => 'me');
             SELECT wf_sleep(wf_start('scraped.flow'), 'nap', now());
             SELECT wf_complete(wf_start('scraped.flow'));",
        )
        .await
        .unwrap();

    let port = free_port();
    let _exporter = start_exporter(cluster, port, &[]);
    let metrics = eventually(
        "a scrape with the workflow metrics",
        Duration::from_secs(30),
        || async { scrape(port).filter(|m| m.contains("workflow_dispatcher_up")) },
    )
    .await;

    expect(&metrics, "workflow_dispatcher_up", &[], 1.0);
    let scraped = [("endpoint", "scraped")];
    expect(&metrics, "workflow_endpoint_delivered_total", &scraped, 3.0);
    expect(&metrics, "workflow_endpoint_pending", &scraped, 0.0);
    expect(&metrics, "workflow_endpoint_disabled", &scraped, 0.0);
    expect(
        &metrics,
        "workflow_endpoint_dead_total",
        &[("endpoint", "")],
        1.0,
    );
    expect(
        &metrics,
        "workflow_endpoint_scheduled",
        &[("endpoint", "")],
        1.0,
    );
    expect(
        &metrics,
        "workflow_endpoint_oldest_pending_seconds",
        &[("endpoint", "")],
        0.0,
    );
    let flow = [("name", "scraped.flow")];
    expect(&metrics, "workflow_workflows_leased", &flow, 1.0);
    expect(&metrics, "workflow_workflows_ready", &flow, 1.0);
    expect(
        &metrics,
        "workflow_workflows_completed_last_minute",
        &flow,
        1.0,
    );
    expect(&metrics, "workflow_workflows_started_total", &flow, 3.0);
    expect(&metrics, "workflow_workflows_completed_total", &flow, 1.0);
    // The slept workflow is ready and nobody claims it: the gauge a stopped pool raises.
    let waited = sample(&metrics, "workflow_workflows_oldest_ready_seconds", &flow);
    assert!(
        waited.is_some_and(|seconds| seconds > 0.0),
        "oldest ready {waited:?} in:\n{metrics}"
    );
    expect(&metrics, "pg_exporter_user_queries_load_error", &[], 0.0);
    assert!(
        !metrics.contains("pg_exporter_last_scrape_error 1"),
        "a query failed:\n{metrics}"
    );
}

/// One exporter for a whole server (`--auto-discover-databases`): every series carries its
/// database, two databases with the extension give no duplicate series, and a database
/// without it gives no error.
#[tokio::test(flavor = "multi_thread")]
async fn one_exporter_scrapes_every_database_and_none_without_the_extension_fails() {
    let mut settings = DISPATCHER_SETTINGS.to_vec();
    settings.extend([
        "workflow.databases = 'postgres, second'",
        "workflow.poll_interval = '1s'",
    ]);
    let cluster = Cluster::start(&settings);
    cluster.psql("CREATE DATABASE second");
    cluster.psql("CREATE DATABASE plain");
    cluster.psql_in("second", "CREATE EXTENSION workflow");
    cluster.psql("CREATE ROLE exporter LOGIN; GRANT workflow_user TO exporter;");
    let receiver = Receiver::start().await;
    for (database, deliveries) in [("postgres", 1), ("second", 2)] {
        let client = workflow_tests::connect(&cluster.conninfo_for(database)).await;
        dispatcher_pid(&client, Duration::from_secs(60)).await;
        client
            .execute("SELECT wf_endpoint('shared', $1)", &[&receiver.url("/up")])
            .await
            .unwrap();
        for _ in 0..deliveries {
            let id: i64 = client
                .query_one("SELECT wf_enqueue('shared', '{}')", &[])
                .await
                .unwrap()
                .get(0);
            message_reaches(&client, id, "delivered", Duration::from_secs(30)).await;
        }
    }

    let port = free_port();
    let _exporter = start_exporter(&cluster, port, &["--auto-discover-databases"]);
    let metrics = eventually(
        "a scrape with both databases' metrics",
        Duration::from_secs(30),
        || async {
            scrape(port).filter(|m| {
                m.contains("workflow_dispatcher_up{database=\"postgres\"")
                    && m.contains("workflow_dispatcher_up{database=\"second\"")
            })
        },
    )
    .await;
    for (database, deliveries) in [("postgres", 1.0), ("second", 2.0)] {
        expect(
            &metrics,
            "workflow_dispatcher_up",
            &[("database", database)],
            1.0,
        );
        expect(
            &metrics,
            "workflow_dispatcher_paused",
            &[("database", database)],
            0.0,
        );
        expect(
            &metrics,
            "workflow_endpoint_delivered_total",
            &[("database", database), ("endpoint", "shared")],
            deliveries,
        );
    }
    assert!(
        !metrics.contains("database=\"plain\""),
        "a database without the extension has no series"
    );
    expect(&metrics, "pg_exporter_user_queries_load_error", &[], 0.0);
    assert!(
        !metrics.contains("pg_exporter_last_scrape_error 1")
            && !metrics.contains("collected before"),
        "a query failed:\n{metrics}"
    );
}

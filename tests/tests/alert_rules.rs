//! The shipped alert rules, `monitoring/alerts.yaml`, evaluated by promtool against what the
//! exporter scraped from a real cluster during four events: a declined card, a message
//! scheduled for tomorrow, a receiver outage and a pool that stopped claiming. The outage
//! and the stopped pool fire their alerts; the other two, and every other alert, stay quiet.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;
use workflow_tests::exporter::{scrape, start_exporter};
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{
    Cluster, DISPATCHER_SETTINGS, dispatcher_pid, eventually, free_port, message_reaches,
};

/// promtool's evaluation interval, and how often the test scrapes: real time and rule time
/// are the same clock.
const SCRAPE_EVERY: Duration = Duration::from_secs(5);
/// Long enough for the rules' thresholds (30 s) and `for` (1 min), with four scrapes to spare.
const SCRAPES: usize = 23;

fn rules_file() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../monitoring/alerts.yaml")
}

fn promtool() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../.tools/promtool")
}

/// Each alert's summary template in the rules file, by alert name.
fn summaries(rules: &str) -> BTreeMap<String, String> {
    let mut summaries = BTreeMap::new();
    let mut alert = None;
    for line in rules.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- alert: ") {
            alert = Some(name.to_string());
        } else if let (Some(summary), Some(name)) = (line.strip_prefix("summary: "), &alert) {
            summaries.insert(name.clone(), summary.trim_matches('"').to_string());
        }
    }
    summaries
}

/// An alert promtool should find firing, with its labels and its summary expanded.
fn firing(
    summaries: &BTreeMap<String, String>,
    alert: &str,
    labels: &[(&str, &str)],
) -> serde_json::Value {
    let mut summary = summaries[alert].clone();
    let mut expected = serde_json::Map::new();
    expected.insert("severity".into(), "warning".into());
    for (label, value) in labels {
        summary = summary.replace(&format!("{{{{ $labels.{label} }}}}"), value);
        expected.insert((*label).into(), (*value).into());
    }
    serde_json::json!({ "exp_labels": expected, "exp_annotations": { "summary": summary } })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_rules_fire_for_an_outage_and_a_stopped_pool_and_nothing_else() {
    let mut settings = DISPATCHER_SETTINGS.to_vec();
    settings.push("workflow.poll_interval = '1s'");
    let cluster = Cluster::start(&settings);
    let client = cluster.connect().await;
    dispatcher_pid(&client, Duration::from_secs(60)).await;
    cluster.psql("CREATE ROLE exporter LOGIN; GRANT workflow_user TO exporter;");
    let receiver = Receiver::start().await;
    receiver.always(
        "/cards",
        Reply::Full {
            status: 402,
            headers: vec![],
            body: r#"{"error":"card_declined"}"#.into(),
        },
    );
    let partner = Receiver::start().await;
    partner.stop_listening().await;
    client
        .batch_execute(&format!(
            "SELECT wf_endpoint('cards', '{}');
             SELECT wf_endpoint('reminders', '{}');
             SELECT wf_endpoint('partner', '{}', max_attempts => 20,
                                retry_schedule => ARRAY['5s', '5min']::interval[]);",
            receiver.url("/cards"),
            receiver.url("/reminders"),
            partner.url("/orders"),
        ))
        .await
        .unwrap();

    // A declined card: the payment's charge step answers 402, which is its outcome; the
    // worker fails the payment.
    let payment: uuid::Uuid = client
        .query_one("SELECT wf_start('payment', '{}', owner => 'worker-1')", &[])
        .await
        .unwrap()
        .get(0);
    let charge: i64 = client
        .query_one(
            "SELECT wf_enqueue('cards', '{}', workflow => $1, step => 'charge')",
            &[&payment],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, charge, "delivered", Duration::from_secs(30)).await;
    client
        .execute(
            "SELECT wf_fail($1, 'card declined', 'worker-1')",
            &[&payment],
        )
        .await
        .unwrap();
    // A reminder for tomorrow.
    client
        .execute(
            "SELECT wf_enqueue('reminders', '{}', deliver_at => now() + interval '1 day')",
            &[],
        )
        .await
        .unwrap();
    // A pool that stopped: shipping workflows, started by a request that then ended, which
    // nobody claims.
    let request = cluster.connect().await;
    request
        .execute(
            "SELECT wf_start('shipping', '{}') FROM generate_series(1, 2)",
            &[],
        )
        .await
        .unwrap();
    drop(request);

    // The outage: orders keep coming for a partner that answers nothing. Scrape all along.
    let port = free_port();
    let _exporter = start_exporter(&cluster, port, &[]);
    eventually("the exporter to serve", Duration::from_secs(30), || async {
        scrape(port).filter(|m| m.contains("workflow_dispatcher_up"))
    })
    .await;
    let mut series: BTreeMap<String, Vec<Option<String>>> = BTreeMap::new();
    let mut ticks = tokio::time::interval(SCRAPE_EVERY);
    // A late scrape puts the rest later, never closer: the rules' clock stays behind the
    // real one the gauges count in, so nothing fires early for it.
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for n in 0..SCRAPES {
        ticks.tick().await;
        client
            .execute("SELECT wf_enqueue('partner', '{}')", &[])
            .await
            .unwrap();
        let metrics = scrape(port).expect("a scrape");
        for line in metrics.lines().filter(|l| l.starts_with("workflow_")) {
            let (name, value) = line.rsplit_once(' ').unwrap();
            let values = series
                .entry(name.to_string())
                .or_insert_with(|| vec![None; SCRAPES]);
            values[n] = Some(value.to_string());
        }
    }

    // The declined card, before the window the rules see: delivered, and no dead letter.
    let last = |metric: &str| series.get(metric).and_then(|v| v[SCRAPES - 1].clone());
    let cards = "{database=\"postgres\",endpoint=\"cards\"";
    let of_cards = |family: &str| {
        series
            .iter()
            .find(|(name, _)| name.starts_with(&format!("{family}{cards}")))
            .and_then(|(name, _)| last(name))
    };
    assert_eq!(
        of_cards("workflow_endpoint_delivered_total").as_deref(),
        Some("1")
    );
    assert_eq!(
        of_cards("workflow_endpoint_dead_total").as_deref(),
        Some("0")
    );

    let summaries = summaries(&std::fs::read_to_string(rules_file()).unwrap());
    let at_end = format!("{}s", (SCRAPES - 1) as u64 * SCRAPE_EVERY.as_secs());
    let database = ("database", "postgres");
    assert_eq!(summaries.len(), 7, "the rules file's alerts: {summaries:?}");
    // With every series: the outage and the stopped pool fire, and nothing else does.
    let mut outage_and_pool = vec![
        serde_json::json!({
            "eval_time": at_end, "alertname": "WorkflowEndpointFailing",
            "exp_alerts": [firing(&summaries, "WorkflowEndpointFailing", &[database, ("endpoint", "partner")])],
        }),
        serde_json::json!({
            "eval_time": at_end, "alertname": "WorkflowNotClaimed",
            "exp_alerts": [firing(&summaries, "WorkflowNotClaimed", &[database, ("name", "shipping")])],
        }),
    ];
    // The outage's due messages wait longer as its probe backs off: late, but not yet
    // for a minute past the threshold, so not asserted here.
    let quiet = [
        "WorkflowDispatcherDown",
        "WorkflowDispatchPaused",
        "WorkflowEndpointDisabled",
        "WorkflowDeadLetters",
    ];
    for alert in quiet {
        outage_and_pool
            .push(serde_json::json!({ "eval_time": at_end, "alertname": alert, "exp_alerts": [] }));
    }
    // Without the outage's and the pool's series: the declined card and tomorrow's
    // reminder raise no alert at all.
    let mut declined_and_scheduled = Vec::new();
    for alert in summaries.keys() {
        declined_and_scheduled
            .push(serde_json::json!({ "eval_time": at_end, "alertname": alert, "exp_alerts": [] }));
    }
    let input_series = |leave_out: &[&str]| -> Vec<serde_json::Value> {
        series
            .iter()
            .filter(|(name, _)| !leave_out.iter().any(|left| name.contains(left)))
            .map(|(name, values)| {
                let values: Vec<&str> =
                    values.iter().map(|v| v.as_deref().unwrap_or("_")).collect();
                serde_json::json!({ "series": name, "values": values.join(" ") })
            })
            .collect()
    };
    let interval = format!("{}s", SCRAPE_EVERY.as_secs());
    let test_file = serde_json::json!({
        "rule_files": [rules_file()],
        "evaluation_interval": interval,
        "tests": [
            {
                "interval": interval,
                "input_series": input_series(&[]),
                "alert_rule_test": outage_and_pool,
            },
            {
                "interval": interval,
                "input_series": input_series(&["endpoint=\"partner\"", "name=\"shipping\""]),
                "alert_rule_test": declined_and_scheduled,
            },
        ],
    });
    let path = std::env::temp_dir().join(format!("{}.yaml", workflow_tests::unique("alert-rules")));
    std::fs::write(&path, serde_json::to_string_pretty(&test_file).unwrap()).unwrap();
    let output = Command::new(promtool())
        .args(["test", "rules"])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (has scripts/setup-tests.sh run?)",
                promtool().display()
            )
        });
    assert!(
        output.status.success(),
        "promtool:\n{}{}\nthe scraped series:\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr),
        std::fs::read_to_string(&path).unwrap()
    );
    std::fs::remove_file(path).unwrap();
}

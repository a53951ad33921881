//! B16: the console's pages with 1,000,000 messages and 1,000,000 workflows of history kept,
//! against the same pages with 10,000 of each, in a database of their own: a page's cost
//! must not grow with the history kept. Both have the same last hour (20,000 messages and
//! workflows in it), which the overview charts; the history is older, spread over 30 days.

use crate::median;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::Cluster;

const RECENT: i64 = 20_000;
const SMALL: i64 = 10_000;
const LARGE: i64 = 1_000_000;
const QUICK_LARGE: i64 = 200_000;
/// Requests per page and size; the median is kept.
const SAMPLES: usize = 7;
const TOKEN: &str = "b16-console-token-0123456789";
const LISTEN: &str = "127.0.0.1:18916";

/// One page's request times (ms) with the small and the large history.
pub struct Page {
    pub path: String,
    pub small: Vec<f64>,
    pub large: Vec<f64>,
}

/// Rows `from..=to`, `$3` seconds apart going back from `$4` seconds ago: messages (a tenth
/// to a named endpoint, one in a thousand dead) and workflows (one in a hundred a payment,
/// one in five hundred failed).
const FILL: &str = "
INSERT INTO workflow.outbox (url, endpoint, payload, status, attempts, finished_at, delivered_at,
                             created_at, last_attempt, last_started_at, last_status_code, tenant)
SELECT CASE WHEN n % 10 = 0 THEN NULL ELSE 'https://example.com/' END,
       CASE WHEN n % 10 = 0 THEN 'crm' END,
       jsonb_build_object('n', n), CASE WHEN n % 1000 = 0 THEN 'dead' ELSE 'delivered' END, 1,
       now() - ($4::float8 + n * $3::float8) * interval '1 second', now() - ($4::float8 + n * $3::float8) * interval '1 second',
       now() - ($4::float8 + n * $3::float8) * interval '1 second' - (5 + n % 17) * interval '1 ms',
       1, now() - ($4::float8 + n * $3::float8) * interval '1 second',
       CASE WHEN n % 1000 = 0 THEN 500 ELSE 200 END, 't' || (n % 500)
  FROM generate_series($1::int8, $2::int8) n;
INSERT INTO workflow.runs (name, status, lease_duration, created_at, finished_at, tenant, input,
                           idempotency_key)
SELECT CASE WHEN n % 100 = 0 THEN 'payment' ELSE 'bulk' END,
       CASE WHEN n % 500 = 0 THEN 'failed' ELSE 'completed' END,
       '1 minute', now() - ($4::float8 + n * $3::float8) * interval '1 second' - interval '2 seconds',
       now() - ($4::float8 + n * $3::float8) * interval '1 second', 't' || (n % 500), '{}', 'k' || n
  FROM generate_series($1::int8, $2::int8) n";

pub async fn b16(cluster: &Cluster, client: &Client, quick: bool) -> Vec<Page> {
    for statement in ["DROP DATABASE IF EXISTS b16", "CREATE DATABASE b16"] {
        client
            .batch_execute(statement)
            .await
            .expect("the console's database");
    }
    let conninfo = cluster.conninfo_for("b16");
    let db = workflow_tests::connect(&conninfo).await;
    db.batch_execute(
        "CREATE EXTENSION workflow;
         SELECT wf_endpoint('crm', 'https://crm.example.com/hook');",
    )
    .await
    .expect("the extension");
    let console = start_console(&conninfo);
    let cookie = sign_in().await;
    let large = if quick { QUICK_LARGE } else { LARGE };
    let mut pages: Vec<Page> = Vec::new();
    // The last hour's, then the history after the first measure, then the rest of it.
    fill(&db, 1, RECENT, 3600.0 / RECENT as f64, 0.0).await;
    let spacing = |n: i64| 30.0 * 86400.0 / n as f64;
    for (from, to) in [
        (RECENT + 1, RECENT + SMALL),
        (RECENT + SMALL + 1, RECENT + large),
    ] {
        fill(
            &db,
            from,
            to,
            spacing(large),
            3600.0 - RECENT as f64 * spacing(large),
        )
        .await;
        let workflow: String = db
            .query_one(
                "SELECT id::text FROM workflow.runs WHERE name = 'payment' ORDER BY created_at LIMIT 1",
                &[],
            )
            .await
            .expect("a payment")
            .get(0);
        let paths = [
            "/".to_string(),
            "/workflows".to_string(),
            "/workflows?name=payment&status=failed".to_string(),
            "/workflows?key=k100".to_string(),
            format!("/workflows/{workflow}"),
            "/messages".to_string(),
            "/messages?status=dead".to_string(),
            "/messages?endpoint=crm&status=dead".to_string(),
            "/messages?status=delivered&tenant=t3".to_string(),
            "/endpoints".to_string(),
            "/queues".to_string(),
        ];
        for (i, path) in paths.iter().enumerate() {
            let times = time_page(&cookie, path).await;
            if to == RECENT + SMALL {
                pages.push(Page {
                    path: path.clone(),
                    small: times,
                    large: Vec::new(),
                });
            } else {
                pages[i].large = times;
            }
        }
    }
    drop(console);
    drop(db);
    client
        .batch_execute("DROP DATABASE b16")
        .await
        .expect("drop the console's database");
    for page in &pages {
        eprintln!(
            "  {}: {:.1} ms with {SMALL}, {:.1} ms with {large}",
            page.path,
            median(page.small.clone()),
            median(page.large.clone())
        );
    }
    pages
}

async fn fill(db: &Client, from: i64, to: i64, apart: f64, ago: f64) {
    for statement in FILL.split(';') {
        db.execute(statement, &[&from, &to, &apart, &ago])
            .await
            .expect("the history");
    }
    for table in ["workflow.outbox", "workflow.runs"] {
        db.batch_execute(&format!("VACUUM ANALYZE {table}"))
            .await
            .expect("vacuum");
    }
}

/// The console's process, stopped when dropped (also when a step above panics).
struct Console(Child);

impl Drop for Console {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The release build of workflow-console next to this benchmark's binary (bench/run.sh
/// builds both).
fn start_console(conninfo: &str) -> Console {
    let binary = std::env::current_exe()
        .expect("the bench's path")
        .with_file_name("workflow-console");
    Command::new(&binary)
        .args(["--database-url", conninfo, "--listen", LISTEN])
        .env("WORKFLOW_CONSOLE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .map(Console)
        .unwrap_or_else(|e| panic!("{}: {e} (bench/run.sh builds it)", binary.display()))
}

/// Signs in with the token, once the console listens; returns the session cookie.
async fn sign_in() -> String {
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("a client");
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let answer = http
            .post(format!("http://{LISTEN}/login"))
            .header("Content-Type", "application/x-www-form-urlencoded")
            .body(format!("token={TOKEN}"))
            .send()
            .await;
        if let Ok(answer) = answer {
            let cookie = answer
                .headers()
                .get("set-cookie")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.split(';').next())
                .expect("a session cookie");
            return cookie.to_string();
        }
        assert!(Instant::now() < deadline, "the console did not listen");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `SAMPLES` requests of `path`, after one to warm up; their times in ms.
async fn time_page(cookie: &str, path: &str) -> Vec<f64> {
    let http = reqwest::Client::new();
    let mut times = Vec::with_capacity(SAMPLES);
    for i in 0..=SAMPLES {
        let started = Instant::now();
        let answer = http
            .get(format!("http://{LISTEN}{path}"))
            .header("Cookie", cookie)
            .send()
            .await
            .expect("a page");
        assert_eq!(answer.status(), 200, "{path}");
        answer.bytes().await.expect("its body");
        if i > 0 {
            times.push(started.elapsed().as_secs_f64() * 1000.0);
        }
    }
    times
}

//! `workflow-console` against a real cluster with its dispatcher: the token it asks for,
//! what a read-only console and a forged form are refused, what a role without the grants
//! sees, the browser end to end (tests/browser/console.mjs in Debian's chromium: a failed
//! payment found by its key with the provider's 402 in its timeline, a dead letter retried
//! and received, the README's screenshot), and every page's time with 100,000 messages and
//! workflows kept.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, Helper, dispatcher_pid, free_port, message_reaches};

const DEADLINE: Duration = Duration::from_secs(60);
const TOKEN: &str = "console-test-token";
/// What every page must render within, with 100,000 messages and workflows kept.
const PAGE_BOUND: Duration = Duration::from_secs(2);

fn repository() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The console on a free port, as `role`; stopped when dropped.
fn start_console(cluster: &Cluster, role: &str, actions: bool) -> (Helper, String) {
    let binary = repository().join("target/debug/workflow-console");
    let port = free_port();
    let url = format!(
        "host={} port={} user={role} dbname=postgres",
        cluster.socket_dir().display(),
        cluster.port()
    );
    let mut command = Command::new(&binary);
    command
        .args([
            "--database-url",
            &url,
            "--listen",
            &format!("127.0.0.1:{port}"),
        ])
        .env("WORKFLOW_CONSOLE_TOKEN", TOKEN)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if actions {
        command.arg("--allow-actions");
    }
    let child = command.spawn().unwrap_or_else(|e| {
        panic!(
            "{}: {e} (scripts/test.sh builds it: cargo build -p workflow-console)",
            binary.display()
        )
    });
    let base = format!("http://127.0.0.1:{port}");
    let started = Instant::now();
    while TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(started.elapsed() < DEADLINE, "the console did not listen");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Helper(child), base)
}

/// One HTTP/1.0 request; the status and the body.
fn http(base: &str, method: &str, path: &str, cookie: bool, form: Option<&str>) -> (u16, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\n");
    if cookie {
        request.push_str(&format!("Cookie: workflow_console={TOKEN}\r\n"));
    }
    if let Some(form) = form {
        request.push_str(&format!(
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: {}\r\n\r\n{form}",
            form.len()
        ));
    } else {
        request.push_str("\r\n");
    }
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response[9..12].parse().unwrap();
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_end_to_end() {
    let mut settings = workflow_tests::DISPATCHER_SETTINGS.to_vec();
    settings.push("workflow.poll_interval = '1s'");
    let cluster = Cluster::start(&settings);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    receiver.always(
        "/cards",
        Reply::Full {
            status: 402,
            headers: vec![],
            body: r#"{"error":"card_declined"}"#.into(),
        },
    );
    receiver.script("/crm", [Reply::Status(404)]);
    cluster.psql(
        "CREATE ROLE operator LOGIN; GRANT workflow_user TO operator;
         CREATE ROLE outsider LOGIN;",
    );
    client
        .batch_execute(&format!(
            "SELECT wf_endpoint('cards', '{}', 'generate', headers => '{{\"authorization\": \"Bearer s3cr3t-value\"}}');
             SELECT wf_endpoint('crm', '{}');",
            receiver.url("/cards"),
            receiver.url("/crm")
        ))
        .await
        .unwrap();

    // A payment whose card is declined, and a dead letter.
    let payment: uuid::Uuid = client
        .query_one(
            "SELECT wf_start('payment', '{\"amount\": 25}', idempotency_key => 'order-1001', owner => 'w', tenant => 'acme')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let charge: i64 = client
        .query_one(
            "SELECT wf_enqueue('cards', '{\"amount\": 25}', workflow => $1, step => 'charge')",
            &[&payment],
        )
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, charge, "delivered", DEADLINE).await;
    client
        .execute("SELECT wf_fail($1, 'card declined', 'w')", &[&payment])
        .await
        .unwrap();
    let dead: i64 = client
        .query_one("SELECT wf_enqueue('crm', '{\"contact\": 7}')", &[])
        .await
        .unwrap()
        .get(0);
    message_reaches(&client, dead, "dead", DEADLINE).await;

    let (_acting, acting) = start_console(&cluster, "operator", true);
    let (_reading, reading) = start_console(&cluster, "operator", false);
    let (_outside, outside) = start_console(&cluster, "outsider", false);

    // The token is required, on every page and action.
    for path in ["/", "/workflows", "/messages", "/endpoints", "/queues"] {
        assert_eq!(
            http(&acting, "GET", path, false, None).0,
            401,
            "{path} without the token"
        );
    }
    assert_eq!(
        http(
            &acting,
            "POST",
            "/actions/retry",
            false,
            Some(&format!("form_key=x&id={dead}"))
        )
        .0,
        401
    );
    // A read-only console refuses a forged action, and an acting one a form from elsewhere.
    let (status, body) = http(
        &reading,
        "POST",
        "/actions/retry",
        true,
        Some(&format!("form_key=x&id={dead}")),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"));
    let (status, _) = http(
        &acting,
        "POST",
        "/actions/retry",
        true,
        Some(&format!("form_key=forged&id={dead}")),
    );
    assert_eq!(status, 403);
    // A role without the grants sees Postgres' refusal, not the data.
    let (status, body) = http(&outside, "GET", "/workflows", true, None);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("42501") && !body.contains("order-1001"),
        "{body}"
    );
    // Secrets and header values are never shown.
    let (_, endpoints) = http(&acting, "GET", "/endpoints", true, None);
    assert!(
        endpoints.contains("authorization")
            && !endpoints.contains("s3cr3t-value")
            && !endpoints.contains("whsec_")
    );

    // 100,000 messages and 100,000 workflows kept, over the last hour: the browser and
    // the page timings below see them.
    client
        .batch_execute(
            "INSERT INTO workflow.outbox (url, payload, status, attempts, finished_at, delivered_at, created_at,
                                          last_attempt, last_started_at, last_status_code, tenant)
             SELECT 'https://example.com/', jsonb_build_object('n', n), 'delivered', 1,
                    now() - (n % 3600) * interval '1 second', now() - (n % 3600) * interval '1 second',
                    now() - (n % 3600) * interval '1 second' - (5 + n % 17) * interval '1 ms',
                    1, now() - (n % 3600) * interval '1 second', 200, 't' || (n % 50)
               FROM generate_series(1, 100000) n;
             INSERT INTO workflow.runs (name, status, lease_duration, created_at, finished_at, tenant, input)
             SELECT 'bulk', 'completed', '1 minute', now() - (n % 3600) * interval '1 second' - interval '2 seconds',
                    now() - (n % 3600) * interval '1 second', 't' || (n % 50), '{}'
               FROM generate_series(1, 100000) n;
             ANALYZE workflow.outbox, workflow.runs;",
        )
        .await
        .unwrap();
    // The browser, end to end; then the retried dead letter arrives.
    receiver.always("/crm", Reply::Status(200));
    // The README's screenshot: taken every run, kept in docs/ when blessed (as the SQL
    // surface's golden file is), so that a test run leaves the tree as it found it.
    let screenshot = if std::env::var_os("WORKFLOW_BLESS").is_some() {
        repository().join("docs/console.png")
    } else {
        std::env::temp_dir().join(format!("{}.png", workflow_tests::unique("console")))
    };
    let browser = Command::new("node")
        .arg(repository().join("tests/browser/console.mjs"))
        .envs([
            ("CONSOLE_URL", acting.as_str()),
            ("READONLY_URL", reading.as_str()),
            ("CONSOLE_TOKEN", TOKEN),
            ("PAYMENT_KEY", "order-1001"),
            ("DEAD_ID", &dead.to_string()),
            ("SCREENSHOT", &screenshot.display().to_string()),
        ])
        .output()
        .expect("node (scripts/setup-tests.sh installs it, chromium and playwright-core)");
    assert!(
        browser.status.success(),
        "the browser test:\n{}{}",
        String::from_utf8_lossy(&browser.stdout),
        String::from_utf8_lossy(&browser.stderr)
    );
    message_reaches(&client, dead, "delivered", DEADLINE).await;
    assert_eq!(
        receiver.received("/crm").len(),
        2,
        "the retried dead letter arrived"
    );

    // Every page, with all that kept.
    let mut timings = Vec::new();
    for path in [
        "/",
        "/workflows",
        "/workflows?name=bulk&status=completed&tenant=t7",
        "/workflows?key=order-1001",
        &format!("/workflows/{payment}"),
        "/messages",
        "/messages?status=dead",
        "/messages?status=delivered&tenant=t3",
        "/endpoints",
        "/queues",
    ] {
        let started = Instant::now();
        let (status, body) = http(&acting, "GET", path, true, None);
        let took = started.elapsed();
        assert_eq!(status, 200, "{path}: {body}");
        timings.push(format!("{path} {:.0} ms", took.as_secs_f64() * 1000.0));
        assert!(took < PAGE_BOUND, "{path} took {took:?}");
    }
    eprintln!(
        "pages with 100,000 messages and workflows kept: {}",
        timings.join(", ")
    );
}

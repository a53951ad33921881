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

/// One HTTP/1.0 request, with the cookie `cookie` if given; the status, the headers and
/// the body.
fn request(
    base: &str,
    method: &str,
    path: &str,
    cookie: Option<&str>,
    form: Option<&str>,
) -> (u16, String, String) {
    let address = base.trim_start_matches("http://");
    let mut stream = TcpStream::connect(address).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut request = format!("{method} {path} HTTP/1.0\r\nHost: {address}\r\n");
    if let Some(cookie) = cookie {
        request.push_str(&format!("Cookie: {cookie}\r\n"));
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
    let (head, body) = response.split_once("\r\n\r\n").unwrap_or((&response, ""));
    (status, head.to_string(), body.to_string())
}

/// Signs in with the token; the cookie the console set.
fn sign_in(base: &str) -> String {
    let (status, head, _) = request(
        base,
        "POST",
        "/login",
        None,
        Some(&format!("token={TOKEN}")),
    );
    assert_eq!(status, 303, "{head}");
    let set = head
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .expect("a cookie");
    assert!(
        set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
    assert!(!set.contains(TOKEN), "the cookie is not the token: {set}");
    set.split(';').next().unwrap().to_string()
}

/// The values of `attribute="…"` in `html` that follow `marker`.
fn values_after<'a>(html: &'a str, marker: &str) -> Vec<&'a str> {
    html.split(marker)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .collect()
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
    receiver.script("/crm", [Reply::Status(404), Reply::Status(404)]);
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
    let mut dead_letters = Vec::new();
    for contact in [7, 8] {
        let id: i64 = client
            .query_one(
                "SELECT wf_enqueue('crm', jsonb_build_object('contact', $1::int))",
                &[&contact],
            )
            .await
            .unwrap()
            .get(0);
        message_reaches(&client, id, "dead", DEADLINE).await;
        dead_letters.push(id);
    }
    let dead = dead_letters[0];

    let (_acting, acting) = start_console(&cluster, "operator", true);
    let (_reading, reading) = start_console(&cluster, "operator", false);
    let (_outside, outside) = start_console(&cluster, "outsider", false);

    // The token is required, on every page and action; signing in sets a session cookie
    // of that console alone.
    for path in [
        "/",
        "/workflows",
        "/workflows?id=x",
        "/messages",
        "/endpoints",
        "/queues",
    ] {
        assert_eq!(
            request(&acting, "GET", path, None, None).0,
            401,
            "{path} without the token"
        );
    }
    let retry = format!("form_key=x&id={dead}");
    assert_eq!(
        request(&acting, "POST", "/actions/retry", None, Some(&retry)).0,
        401
    );
    let (status, _, _) = request(
        &acting,
        "POST",
        "/login",
        None,
        Some("token=not-the-token-at-all"),
    );
    assert_eq!(status, 401);
    let (acting_cookie, reading_cookie, outside_cookie) =
        (sign_in(&acting), sign_in(&reading), sign_in(&outside));
    assert_eq!(
        request(&reading, "GET", "/", Some(&acting_cookie), None).0,
        401,
        "one console's cookie does not sign in to another"
    );
    // A read-only console refuses a forged action, and an acting one a form from elsewhere.
    let (status, _, body) = request(
        &reading,
        "POST",
        "/actions/retry",
        Some(&reading_cookie),
        Some(&retry),
    );
    assert_eq!(status, 403, "{body}");
    assert!(body.contains("read-only"));
    let forged = format!("form_key=forged&id={dead}");
    assert_eq!(
        request(
            &acting,
            "POST",
            "/actions/retry",
            Some(&acting_cookie),
            Some(&forged)
        )
        .0,
        403
    );
    // An action the role may not take shows Postgres' refusal: disabling an endpoint is
    // the owner's.
    let (_, head, endpoints) = request(&acting, "GET", "/endpoints", Some(&acting_cookie), None);
    assert!(
        head.contains("content-security-policy: default-src 'none'"),
        "{head}"
    );
    let form_key = values_after(&endpoints, r#"name="form_key" value=""#)[0];
    let disable = format!("form_key={form_key}&name=crm&action=disable");
    let (status, _, body) = request(
        &acting,
        "POST",
        "/actions/endpoint",
        Some(&acting_cookie),
        Some(&disable),
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("42501"), "{body}");
    // A role without the grants sees Postgres' refusal, not the data.
    let (status, _, body) = request(&outside, "GET", "/workflows", Some(&outside_cookie), None);
    assert_eq!(status, 502, "{body}");
    assert!(
        body.contains("42501") && !body.contains("order-1001"),
        "{body}"
    );
    // Secrets and header values are never shown.
    assert!(
        endpoints.contains("authorization")
            && !endpoints.contains("s3cr3t-value")
            && !endpoints.contains("whsec_"),
        "{endpoints}"
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
    let bodies: Vec<String> = receiver
        .received("/crm")
        .iter()
        .map(|r| String::from_utf8_lossy(&r.body).replace(' ', ""))
        .collect();
    assert_eq!(
        bodies.len(),
        3,
        "two refused, then the retried one: {bodies:?}"
    );
    assert!(
        bodies[2].contains("\"contact\":7"),
        "the retried one arrived: {bodies:?}"
    );

    // Keyset pages: the second starts where the first ended, without a repeat, though
    // the bulk workflows share their start times in dozens.
    let (_, _, first) = request(
        &acting,
        "GET",
        "/workflows?name=bulk",
        Some(&acting_cookie),
        None,
    );
    let first_ids = values_after(&first, r#"<a href="/workflows/"#);
    assert_eq!(first_ids.len(), 50);
    let older = values_after(&first, r#"<a href="/workflows?"#)[0].replace("&amp;", "&");
    let (_, _, second) = request(
        &acting,
        "GET",
        &format!("/workflows?{older}"),
        Some(&acting_cookie),
        None,
    );
    let second_ids = values_after(&second, r#"<a href="/workflows/"#);
    assert_eq!(second_ids.len(), 50);
    assert!(
        second_ids.iter().all(|id| !first_ids.contains(id)),
        "a workflow on both pages"
    );
    let listed: i64 = client
        .query_one(
            "SELECT count(*) FROM workflow.workflows
              WHERE name = 'bulk' AND (created_at, id) >= (SELECT created_at, id FROM workflow.workflows WHERE id = $1::text::uuid)",
            &[&second_ids[49]],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        listed, 100,
        "the two pages are the newest hundred, none skipped"
    );

    // A filter Postgres cannot read is the request's fault, said as such.
    let (status, _, body) = request(
        &acting,
        "GET",
        "/messages?since=yesterday-ish",
        Some(&acting_cookie),
        None,
    );
    assert_eq!(status, 400, "{body}");
    assert!(
        body.contains("22007"),
        "Postgres' SQLSTATE is shown: {body}"
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
        let (status, _, body) = request(&acting, "GET", path, Some(&acting_cookie), None);
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

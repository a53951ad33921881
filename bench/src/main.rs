//! The benchmark runner: `workflow-bench` (see `bench/run.sh`) starts a throwaway cluster
//! and receivers, runs B1–B13, B5c, B15 and B16, prints one table and rewrites `BENCHMARKS.md`.
//!
//! Every figure is a median of several runs, and every ratio compares two things measured
//! in the same run on the same machine. Subcommands `receiver`, `bare-client` and `holder`
//! are the helper processes it starts.

mod bare;
mod blocked;
mod concurrent;
mod console_pages;
mod crash;
mod fairness;
mod outage;
mod pgbench;
mod policy;
mod readiness;
mod receiver;
mod report;

use report::{Figure, Report};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::Client;
use workflow_tests::{Cluster, Helper, dispatcher_pid, free_port};

/// Sizes of one benchmark run; `--quick` shrinks them for a smoke run.
#[derive(Clone, Copy)]
pub struct Sizes {
    pub runs: usize,
    /// B1 and B2, whose single runs vary most.
    pub pgbench_runs: usize,
    pub drain_messages: usize,
    /// B8's drain, beside the blocked backlog and without it.
    pub blocked_drain_messages: usize,
    pub storage_messages: usize,
    pub pgbench_seconds: u32,
    pub latency_messages: usize,
    /// B15's kills of a worker holding a session-bound lease.
    pub kills: usize,
    /// B15's kills of a worker holding an explicit owner's lease, each waiting for the
    /// lease to run out.
    pub lease_kills: usize,
    /// B5c's seconds of 8 clients committing at 2,000 messages a second in all.
    pub concurrent_seconds: u64,
    /// B13's outage: how long the receiver answers 503.
    pub outage: Duration,
}

const FULL: Sizes = Sizes {
    runs: 3,
    // Single pgbench runs on this machine vary by up to a factor of two (disk flushes).
    pgbench_runs: 5,
    drain_messages: 100_000,
    blocked_drain_messages: 20_000,
    storage_messages: 1_000_000,
    pgbench_seconds: 15,
    latency_messages: 1_000,
    kills: 30,
    lease_kills: 5,
    concurrent_seconds: 10,
    outage: Duration::from_secs(15 * 60),
};
const QUICK: Sizes = Sizes {
    runs: 3,
    pgbench_runs: 3,
    drain_messages: 20_000,
    blocked_drain_messages: 10_000,
    storage_messages: 100_000,
    pgbench_seconds: 8,
    latency_messages: 500,
    kills: 10,
    lease_kills: 3,
    concurrent_seconds: 3,
    outage: Duration::from_secs(2 * 60),
};

pub const CONCURRENCY: usize = 32;
const SLOW_RECEIVER: Duration = Duration::from_millis(20);
/// B6 enqueues in batches and waits while more than this many messages are pending: a
/// steady load, not one burst of a million.
const STORAGE_BACKLOG: i64 = 10_000;

/// The cluster's settings, printed with the results.
pub const SETTINGS: &[&str] = &[
    "shared_preload_libraries = 'workflow'",
    "workflow.databases = 'postgres, blocked'",
    "workflow.allow_private_networks = on",
    "workflow.max_concurrency = 32",
    // Not binding for the drains to one receiver (B3/B4/B7/B8); B11 runs with the default.
    "workflow.max_concurrency_per_destination = 32",
    "workflow.batch_size = 100",
    "workflow.poll_interval = '1s'",
    "workflow.request_timeout = '10s'",
    "fsync = on",
    "synchronous_commit = on",
    "shared_buffers = '256MB'",
    "max_wal_size = '2GB'",
    "checkpoint_timeout = '30min'",
    "autovacuum_naptime = '5s'",
];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    match args.first().map(String::as_str) {
        Some("receiver") => {
            let port = args[1].parse().expect("port");
            let delay = Duration::from_millis(args[2].parse().expect("delay in ms"));
            runtime
                .block_on(receiver::serve(port, delay))
                .expect("receiver");
        }
        Some("bare-client") => {
            let run = runtime.block_on(bare::run(
                &args[1],
                args[2].parse().expect("n"),
                args[3].parse().expect("c"),
            ));
            println!("{} {}", run.elapsed.as_secs_f64(), run.cpu.as_secs_f64());
        }
        Some("holder") => {
            let _session = runtime.block_on(crash::hold(&args[1], &args[2]));
            // Holds its lease until killed, or until the bench is gone and stdin closes.
            let _ = std::io::Read::read_to_end(&mut std::io::stdin(), &mut Vec::new());
        }
        _ => {
            let quick = args.iter().any(|a| a == "--quick");
            let sizes = if quick { QUICK } else { FULL };
            let only = Only::parse(&args);
            runtime.block_on(run_all(sizes, quick, only));
        }
    }
}

/// `--only B3,B6` runs a subset (B7 comes with B3) and prints the table without
/// rewriting `BENCHMARKS.md`, which always holds a complete run.
struct Only(Option<Vec<String>>);

impl Only {
    fn parse(args: &[String]) -> Only {
        let list = args
            .iter()
            .position(|a| a == "--only")
            .map(|i| args.get(i + 1).expect("--only takes a list such as B3,B6"));
        Only(list.map(|l| l.split(',').map(|b| b.trim().to_uppercase()).collect()))
    }

    fn wants(&self, benchmark: &str) -> bool {
        self.0
            .as_ref()
            .is_none_or(|list| list.iter().any(|b| b.eq_ignore_ascii_case(benchmark)))
    }

    fn is_complete(&self) -> bool {
        self.0.is_none()
    }
}

pub fn start_receiver(delay: Duration) -> (Helper, String) {
    let port = free_port();
    let child = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "receiver",
            &port.to_string(),
            &delay.as_millis().to_string(),
        ])
        .stdout(Stdio::null())
        .spawn()
        .expect("start receiver");
    // Ready when it accepts connections.
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "the receiver did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Helper(child), format!("http://127.0.0.1:{port}/hook"))
}

/// Runs the bare client as its own process; returns (elapsed, CPU).
fn bare_client(url: &str, requests: usize) -> (Duration, Duration) {
    let output = Command::new(std::env::current_exe().expect("own path"))
        .args([
            "bare-client",
            url,
            &requests.to_string(),
            &CONCURRENCY.to_string(),
        ])
        .output()
        .expect("bare client");
    let text = String::from_utf8_lossy(&output.stdout);
    let mut parts = text
        .split_whitespace()
        .map(|p| p.parse::<f64>().expect("bare client output"));
    (
        Duration::from_secs_f64(parts.next().unwrap()),
        Duration::from_secs_f64(parts.next().unwrap()),
    )
}

pub fn cpu_of_self() -> Duration {
    // SAFETY: getrusage fills the struct we pass.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// User + system CPU of a process (all its threads), from /proc.
fn cpu_of_pid(pid: i32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let after = stat.rsplit_once(')').map(|(_, rest)| rest).unwrap_or("");
    let fields: Vec<u64> = after
        .split_whitespace()
        .map(|f| f.parse().unwrap_or(0))
        .collect();
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    let (utime, stime) = (
        fields.get(11).copied().unwrap_or(0),
        fields.get(12).copied().unwrap_or(0),
    );
    Duration::from_secs_f64((utime + stime) as f64 / ticks)
}

pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(|a, b| a.total_cmp(b));
    let n = values.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

pub async fn count(client: &Client, sql: &str) -> i64 {
    client.query_one(sql, &[]).await.expect(sql).get(0)
}

/// Enqueues `n` messages that are not due yet, in batches, then makes them all due at once
/// and wakes the dispatcher. Returns when they are due.
async fn preload(client: &Client, url: &str, n: usize) {
    preload_for(client, url, n, 0).await;
}

/// `preload`, the messages spread round-robin over `tenants` tenants (none if 0).
async fn preload_for(client: &Client, url: &str, n: usize, tenants: i32) {
    let mut left = n;
    while left > 0 {
        let batch = left.min(10_000) as i32;
        client
            .execute(
                "SELECT wf_enqueue($1, jsonb_build_object('bench', 'drain', 'n', n), deliver_at => now() + interval '1 day',
                                   tenant => CASE WHEN $3 > 0 THEN 't' || n % $3 END)
                   FROM generate_series(1, $2) n",
                &[&url, &batch, &tenants],
            )
            .await
            .expect("preload");
        left -= batch as usize;
    }
}

/// Releases the preloaded messages in one commit and waits until none is pending. The time
/// is taken from the data (the last `finished_at` against the clock just before COMMIT),
/// so polling can be rare and cheap: a poll that counts the backlog every few milliseconds
/// takes a good share of one of the two cores from the dispatcher it measures. The poll is
/// spelled like `outbox_due`'s predicate so that it reads the index: a plain
/// `status = 'pending'` scans the table, from the delivered messages at its head.
async fn release_and_drain(client: &Client, url: &str) -> Duration {
    client.batch_execute("BEGIN").await.unwrap();
    client
        .execute(
            "UPDATE workflow.outbox SET next_attempt_at = now() WHERE status = 'pending' AND parked IS NULL",
            &[],
        )
        .await
        .unwrap();
    // An enqueue arms the commit wake-up.
    client
        .execute("SELECT wf_enqueue($1, '{}')", &[&url])
        .await
        .unwrap();
    let released: std::time::SystemTime = client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0);
    client.batch_execute("COMMIT").await.unwrap();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let pending: bool = client
            .query_one(
                "SELECT EXISTS (SELECT FROM workflow.outbox WHERE (status = 'pending') IS TRUE AND parked IS NULL)",
                &[],
            )
            .await
            .unwrap()
            .get(0);
        if !pending {
            break;
        }
    }
    let finished: std::time::SystemTime = client
        .query_one("SELECT max(finished_at) FROM workflow.outbox", &[])
        .await
        .unwrap()
        .get(0);
    finished
        .duration_since(released)
        .expect("finished after the release")
}

async fn clear_outbox(client: &Client) {
    client
        .batch_execute("TRUNCATE workflow.outbox, workflow.delivery_attempts")
        .await
        .unwrap();
}

/// Transactions committed in the benchmark database so far, the dispatcher's rounds and
/// housekeeping included.
async fn commits(client: &Client) -> i64 {
    count(
        client,
        "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()",
    )
    .await
}

/// The drains' endpoint: it asks for the bare client's concurrency, since a URL target's
/// default cap is at most half of workflow.max_concurrency (0.3.0).
async fn drain_endpoint(client: &Client, url: &str) {
    client
        .execute(
            "SELECT wf_endpoint('drain', $1, max_concurrency => $2)",
            &[&url, &(CONCURRENCY as i32)],
        )
        .await
        .expect("the drain's endpoint");
}

async fn all_delivered(client: &Client) {
    let lost = count(
        client,
        "SELECT count(*) FROM workflow.outbox WHERE status <> 'delivered'",
    )
    .await;
    assert_eq!(lost, 0, "every message must be delivered");
}

/// B3/B4 and B7: drain a preloaded outbox against the bare client, same receiver.
async fn drain(
    client: &Client,
    dispatcher: i32,
    url: &str,
    sizes: Sizes,
) -> (Vec<f64>, Vec<f64>, Vec<f64>, Vec<f64>) {
    let n = sizes.drain_messages;
    drain_endpoint(client, url).await;
    let (mut ours, mut bare, mut our_cpu, mut bare_cpu) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for run in 1..=sizes.runs {
        clear_outbox(client).await;
        preload(client, "drain", n).await;
        let commits_before = commits(client).await;
        let cpu_before = cpu_of_pid(dispatcher);
        let elapsed = release_and_drain(client, "drain").await;
        let cpu = cpu_of_pid(dispatcher) - cpu_before;
        all_delivered(client).await;
        // Attempts that a later one replaced: a failed request, retried.
        let retried = count(client, "SELECT count(*) FROM workflow.delivery_attempts").await;
        let (bare_elapsed, bare_cpu_used) = bare_client(url, n);
        // A backend flushes its statistics at most once a second, and an idle dispatcher
        // only at its next round, one poll interval (1 s) away.
        tokio::time::sleep(Duration::from_millis(2100)).await;
        let rounds = commits(client).await - commits_before;
        eprintln!(
            "  run {run}: dispatcher {:.0}/s ({:.2}s CPU, ~{:.0} deliveries per transaction, {retried} retried), bare client {:.0}/s ({:.2}s CPU)",
            (n + 1) as f64 / elapsed.as_secs_f64(),
            cpu.as_secs_f64(),
            (n + 1) as f64 / rounds.max(1) as f64,
            n as f64 / bare_elapsed.as_secs_f64(),
            bare_cpu_used.as_secs_f64()
        );
        ours.push((n + 1) as f64 / elapsed.as_secs_f64());
        bare.push(n as f64 / bare_elapsed.as_secs_f64());
        our_cpu.push(cpu.as_secs_f64() * 10_000.0 / (n + 1) as f64);
        bare_cpu.push(bare_cpu_used.as_secs_f64() * 10_000.0 / n as f64);
    }
    clear_outbox(client).await;
    (ours, bare, our_cpu, bare_cpu)
}

/// B5: commit → receipt at a steady 100 messages/s, against a bare client's request latency.
async fn latency(client: &Client, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
    let receiver = workflow_tests::receiver::Receiver::start().await;
    let mut commit_to_receipt = Vec::with_capacity(sizes.latency_messages);
    let mut next = Instant::now();
    for n in 0..sizes.latency_messages {
        next += Duration::from_millis(10);
        tokio::time::sleep_until(next.into()).await;
        let latency = workflow_tests::receiver::commit_to_receipt(
            client,
            &receiver,
            "/latency",
            n,
            Duration::from_secs(30),
        )
        .await;
        commit_to_receipt.push(latency.as_secs_f64() * 1000.0);
    }
    let http = reqwest::Client::builder()
        .tcp_nodelay(true)
        .build()
        .expect("client");
    let bare_url = receiver.url("/bare");
    let mut bare = Vec::with_capacity(sizes.latency_messages);
    let mut next = Instant::now();
    for _ in 0..sizes.latency_messages {
        next += Duration::from_millis(10);
        tokio::time::sleep_until(next.into()).await;
        bare.push(bare::one(&http, &bare_url).await.as_secs_f64() * 1000.0);
    }
    clear_outbox(client).await;
    (commit_to_receipt, bare)
}

pub fn percentile(values: &[f64], p: f64) -> f64 {
    let mut sorted = values.to_vec();
    sorted.sort_by(|a, b| a.total_cmp(b));
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

/// B6: a million messages delivered with retention 0; then the outbox's size.
async fn storage(
    cluster: &Cluster,
    client: &Client,
    url: &str,
    sizes: Sizes,
) -> (f64, i64, Duration) {
    cluster.psql("ALTER SYSTEM SET workflow.retention = 0");
    cluster.psql("SELECT pg_reload_conf()");
    let started = Instant::now();
    let mut left = sizes.storage_messages;
    while left > 0 {
        let batch = left.min(10_000) as i32;
        client
            .execute("SELECT wf_enqueue($1, jsonb_build_object('bench', 'storage', 'n', n)) FROM generate_series(1, $2) n", &[&url, &batch])
            .await
            .expect("enqueue");
        left -= batch as usize;
        // Keep the backlog bounded, as a steady load would.
        while count(
            client,
            "SELECT count(*) FROM workflow.outbox WHERE (status = 'pending') IS TRUE AND parked IS NULL",
        )
        .await
            > STORAGE_BACKLOG
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    while count(client, "SELECT count(*) FROM workflow.outbox").await > 0 {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let elapsed = started.elapsed();
    // Give autovacuum (naptime 5 s) its chance to reclaim, as it would under steady load.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut dead = i64::MAX;
    while Instant::now() < deadline {
        dead = count(
            client,
            "SELECT coalesce(sum(n_dead_tup), 0)::bigint FROM pg_stat_user_tables WHERE schemaname = 'workflow' AND relname IN ('outbox', 'delivery_attempts')",
        )
        .await;
        if dead == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
    let bytes = count(
        client,
        "SELECT (pg_total_relation_size('workflow.outbox') + pg_total_relation_size('workflow.delivery_attempts'))::bigint",
    )
    .await;
    for row in client
        .query(
            "SELECT c.relname::text, pg_relation_size(c.oid) FROM pg_class c
              WHERE c.relnamespace = 'workflow'::regnamespace AND c.relkind IN ('r', 'i', 't')
                AND pg_relation_size(c.oid) > 0
              ORDER BY 2 DESC",
            &[],
        )
        .await
        .unwrap()
    {
        let (relation, size): (String, i64) = (row.get(0), row.get(1));
        eprintln!("  {relation}: {:.2} MB", size as f64 / (1024.0 * 1024.0));
    }
    cluster.psql("ALTER SYSTEM RESET workflow.retention");
    cluster.psql("SELECT pg_reload_conf()");
    (bytes as f64 / (1024.0 * 1024.0), dead, elapsed)
}

async fn run_all(sizes: Sizes, quick: bool, only: Only) {
    let started = Instant::now();
    eprintln!("starting the cluster and the receivers");
    let cluster = Cluster::start(SETTINGS);
    blocked::create_database(&cluster);
    let client = cluster.connect().await;
    let dispatcher = dispatcher_pid(&client, Duration::from_secs(30)).await;
    let (_fast, fast_url) = start_receiver(Duration::ZERO);
    let (_slow, slow_url) = start_receiver(SLOW_RECEIVER);
    let mut report = Report::new(sizes, quick);

    let setup = pgbench::Setup::new(&cluster, &fast_url);
    if only.wants("B1") {
        eprintln!("B1: enqueue overhead (pgbench TPC-B-like)");
        b1(&setup, sizes, &mut report);
        clear_outbox(&client).await;
    }
    if only.wants("B2") {
        eprintln!("B2: a 3-transaction transfer workflow, sequential");
        b2(&setup, sizes, &mut report);
        clear_outbox(&client).await;
    }
    if only.wants("B2q") {
        eprintln!(
            "B2q: the transfer workflow of a name with a queue whose limits never bind, against none"
        );
        let (queued, plain) = setup.transfer_workflow_queued(sizes);
        report.ratio(Figure::new(
            "B2q transfer workflow, a queue configured but not binding",
            "workflows/s",
            queued,
            plain,
            0.95,
            true,
        ));
        clear_outbox(&client).await;
    }
    if only.wants("B3") {
        eprintln!(
            "B3: drain {} messages, receiver answers at once",
            sizes.drain_messages
        );
        b3_b7(&client, dispatcher, &fast_url, sizes, &mut report).await;
    }
    if only.wants("B3t") {
        eprintln!(
            "B3t: drain {} messages of {DRAIN_TENANTS} tenants, against without tenants",
            sizes.drain_messages
        );
        let (with, without) = b3_tenants(&client, &fast_url, sizes).await;
        report.ratio(Figure::new(
            "B3t dispatch throughput, messages of 10 tenants (fair claiming not binding) vs none",
            "deliveries/s",
            with,
            without,
            0.95,
            true,
        ));
    }
    if only.wants("B4") {
        eprintln!(
            "B4: drain {} messages, receiver answers after 20 ms",
            sizes.drain_messages
        );
        b4(&client, dispatcher, &slow_url, sizes, &mut report).await;
    }
    if only.wants("B5") {
        eprintln!("B5: commit → receipt at 100 messages/s");
        let (ours, bare) = latency(&client, sizes).await;
        report.latency(
            percentile(&ours, 0.5),
            percentile(&ours, 0.99),
            percentile(&bare, 0.5),
            percentile(&bare, 0.99),
        );
    }
    if only.wants("B5c") {
        eprintln!(
            "B5c: commit → receipt, {} clients at {} messages/s in all for {} s",
            concurrent::CLIENTS,
            concurrent::RATE,
            sizes.concurrent_seconds
        );
        let measured = concurrent::b5c(&cluster, sizes).await;
        report.concurrent(&measured);
    }
    if only.wants("B6") {
        eprintln!(
            "B6: {} messages delivered with retention 0",
            sizes.storage_messages
        );
        let (megabytes, dead, elapsed) = storage(&cluster, &client, &fast_url, sizes).await;
        report.storage(megabytes, dead, elapsed);
    }
    if only.wants("B8") {
        eprintln!(
            "B8: drain {} messages beside {} blocked ones, against the same drain without",
            sizes.blocked_drain_messages,
            blocked::BLOCKED
        );
        let rates = blocked::run(&cluster, &client, &fast_url, sizes).await;
        report.ratio(Figure::new(
            &format!(
                "B8 dispatch throughput beside {} blocked messages",
                blocked::BLOCKED
            ),
            "deliveries/s",
            rates.beside,
            rates.without,
            0.90,
            true,
        ));
    }
    if only.wants("B9") {
        eprintln!("B9: signal commit → workflow_ready at a listener, and → push at a handler");
        let told = readiness::b9(&cluster, &client, sizes).await;
        report.told(
            "B9 signal commit → LISTEN notification",
            &told.listen,
            &told.bare_notify,
        );
        report.told(
            "B9 signal commit → push receipt",
            &told.push,
            &told.bare_notify,
        );
    }
    if only.wants("B10") {
        eprintln!("B10: a 3-step workflow driven by push, and by LISTEN + wf_claim");
        let (pushed, claimed) = readiness::b10(&cluster, &client, sizes).await;
        report.compared(Figure::new(
            "B10 3-step workflows, pushed vs LISTEN + wf_claim",
            "workflows/s",
            pushed,
            claimed,
            0.0,
            true,
        ));
    }
    if only.wants("B11") {
        eprintln!(
            "B11: commit → receipt beside an endpoint that hangs with {} messages, against without",
            policy::BACKLOG
        );
        let (beside, alone) = policy::b11(&cluster, &client, sizes).await;
        report.ratio(Figure::new(
            &format!(
                "B11 commit → receipt p99 beside a hanging endpoint with {} messages",
                policy::BACKLOG
            ),
            "ms",
            beside,
            alone,
            1.5,
            false,
        ));
    }
    if only.wants("B12") {
        eprintln!("B12: the rate a limited endpoint receives");
        for (rate, achieved, configured) in policy::b12(&client, sizes, quick).await {
            report.band(
                Figure::new(
                    &format!("B12 limiter accuracy at {rate}/s"),
                    "requests/s",
                    achieved,
                    configured,
                    0.9,
                    true,
                ),
                1.1,
            );
        }
    }
    if only.wants("B13") {
        eprintln!(
            "B13: a receiver answering 503 for {} min while {} messages/s are committed to it, then 200",
            sizes.outage.as_secs() / 60,
            outage::RATE
        );
        let drained = outage::b13(&cluster, &client, sizes).await;
        report.drained(&drained);
    }
    if only.wants("B14") {
        eprintln!(
            "B14: tenant A floods a limited name and a limited endpoint; B and C start at a steady pace, against without A"
        );
        let fair = fairness::b14(&cluster, &client, sizes, quick).await;
        report.ratio(Figure::new(
            "B14 B's and C's workflows, p99 start → finish, beside A's flood",
            "ms",
            fair.workflows_with,
            fair.workflows_without,
            2.0,
            false,
        ));
        report.ratio(Figure::new(
            "B14 B's and C's messages, p99 enqueue → answer, beside A's flood",
            "ms",
            fair.messages_with,
            fair.messages_without,
            2.0,
            false,
        ));
        eprintln!("B14c: claims beside 100,000 ready workflows held back by their tenant's limit");
        let (beside, alone) = fairness::b14c(&client, sizes).await;
        report.ratio(Figure::new(
            "B14c claim rate beside 100,000 workflows held back by a tenant limit",
            "claims/s",
            beside,
            alone,
            0.90,
            true,
        ));
    }
    if only.wants("B16") {
        eprintln!(
            "B16: the console's pages with {} messages and workflows kept, against 10,000",
            if quick { "200,000" } else { "1,000,000" }
        );
        let pages = console_pages::b16(&cluster, &client, quick).await;
        let slowest = pages
            .iter()
            .max_by(|a, b| median(a.large.clone()).total_cmp(&median(b.large.clone())))
            .expect("pages");
        for (name, page) in [
            ("B16 the overview (charts of the last hour)", &pages[0]),
            ("B16 the workflow list, newest first", &pages[1]),
            (
                &*format!("B16 the slowest page ({})", slowest.path),
                slowest,
            ),
        ] {
            report.ratio(Figure::new(
                name,
                "ms",
                page.large.clone(),
                page.small.clone(),
                2.0,
                false,
            ));
        }
    }
    if only.wants("B15") {
        eprintln!("B15: a worker holding a workflow's lease is killed → another worker's wf_claim");
        let resumed = crash::b15(&cluster, &client, sizes).await;
        report.resumed(&resumed);
    }
    if only.is_complete() {
        report.finish(started.elapsed());
    }
}

fn b1(setup: &pgbench::Setup, sizes: Sizes, report: &mut Report) {
    for clients in [1, 8] {
        let (ours, base) = setup.enqueue_overhead(clients, sizes);
        report.ratio(Figure::new(
            &format!("B1 TPC-B + wf_enqueue, {clients} client(s)"),
            "TPS",
            ours,
            base,
            0.90,
            true,
        ));
    }
}

fn b2(setup: &pgbench::Setup, sizes: Sizes, report: &mut Report) {
    let (ours, base) = setup.transfer_workflow(sizes);
    report.ratio(Figure::new(
        "B2 transfer workflow (3 transactions, fenced)",
        "workflows/s",
        ours,
        base,
        0.90,
        true,
    ));
}

async fn b3_b7(client: &Client, dispatcher: i32, url: &str, sizes: Sizes, report: &mut Report) {
    let (ours, bare, our_cpu, bare_cpu) = drain(client, dispatcher, url, sizes).await;
    report.ratio(Figure::new(
        "B3 dispatch throughput",
        "deliveries/s",
        ours,
        bare,
        0.50,
        true,
    ));
    report.ratio(Figure::new(
        "B7 CPU per 10,000 deliveries",
        "CPU s",
        our_cpu,
        bare_cpu,
        3.0,
        false,
    ));
}

/// How many tenants B3t's messages are spread over.
const DRAIN_TENANTS: i32 = 10;

/// B3t: B3's drain with its messages spread over `DRAIN_TENANTS` tenants, whose fair
/// claiming then ranks every walk by tenant turns, at an endpoint whose limit does not
/// bind; against the same drain without tenants, alternating which goes first. Returns
/// deliveries/s with tenants and without.
async fn b3_tenants(client: &Client, url: &str, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
    let n = sizes.drain_messages;
    drain_endpoint(client, url).await;
    let (mut with, mut without) = (Vec::new(), Vec::new());
    for run in 0..sizes.runs {
        for tenants in if run % 2 == 0 {
            [DRAIN_TENANTS, 0]
        } else {
            [0, DRAIN_TENANTS]
        } {
            clear_outbox(client).await;
            preload_for(client, "drain", n, tenants).await;
            let rate = (n + 1) as f64 / release_and_drain(client, "drain").await.as_secs_f64();
            all_delivered(client).await;
            eprintln!("  run {run}, {tenants} tenants: {rate:.0} deliveries/s");
            if tenants > 0 {
                with.push(rate)
            } else {
                without.push(rate)
            }
        }
    }
    clear_outbox(client).await;
    (with, without)
}

async fn b4(client: &Client, dispatcher: i32, url: &str, sizes: Sizes, report: &mut Report) {
    let (ours, bare, _, _) = drain(client, dispatcher, url, sizes).await;
    report.ratio(Figure::new(
        "B4 dispatch throughput, 20 ms receiver",
        "deliveries/s",
        ours,
        bare,
        0.50,
        true,
    ));
}

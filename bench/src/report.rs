//! The results: one table on stdout and `BENCHMARKS.md`, rewritten on every full run.

use crate::{SETTINGS, Sizes, median};
use std::fmt::Write;
use std::time::Duration;

pub struct Figure {
    name: String,
    unit: String,
    ours: f64,
    base: f64,
    ratio: f64,
    target: f64,
    higher_is_better: bool,
    runs: usize,
}

impl Figure {
    /// Pairs of (ours, baseline) from the same runs; the ratio is the median of the
    /// per-run ratios.
    pub fn new(
        name: &str,
        unit: &str,
        ours: Vec<f64>,
        base: Vec<f64>,
        target: f64,
        higher_is_better: bool,
    ) -> Figure {
        let ratios = ours.iter().zip(&base).map(|(o, b)| o / b).collect();
        Figure {
            name: name.to_string(),
            unit: unit.to_string(),
            runs: ours.len(),
            ours: median(ours),
            base: median(base),
            ratio: median(ratios),
            target,
            higher_is_better,
        }
    }

    fn met(&self) -> bool {
        if self.higher_is_better {
            self.ratio >= self.target
        } else {
            self.ratio <= self.target
        }
    }
}

pub struct Report {
    sizes: Sizes,
    quick: bool,
    rows: Vec<String>,
}

fn verdict(met: bool) -> &'static str {
    if met { "met" } else { "**not met**" }
}

impl Report {
    pub fn new(sizes: Sizes, quick: bool) -> Report {
        Report {
            sizes,
            quick,
            rows: Vec::new(),
        }
    }

    pub fn ratio(&mut self, f: Figure) {
        let op = if f.higher_is_better { "≥" } else { "≤" };
        let target = format!("{op} {:.2}", f.target);
        let met = f.met();
        self.ratio_row(&f, &target, met);
    }

    /// A ratio that must fall between the figure's target and `upper`.
    pub fn band(&mut self, f: Figure, upper: f64) {
        let met = f.ratio >= f.target && f.ratio <= upper;
        let target = format!("{:.2}–{upper:.2}", f.target);
        self.ratio_row(&f, &target, met);
    }

    fn ratio_row(&mut self, f: &Figure, target: &str, met: bool) {
        let row = format!(
            "| {} | {:.2} {} | {:.2} {} | **{:.2}** | {target} | {} | {} |",
            f.name,
            f.ours,
            f.unit,
            f.base,
            f.unit,
            f.ratio,
            verdict(met),
            f.runs
        );
        println!("{row}");
        self.rows.push(row);
    }

    pub fn latency(&mut self, p50: f64, p99: f64, bare_p50: f64, bare_p99: f64) {
        let row = format!(
            "| B5 commit → receipt at 100 msg/s | p50 {p50:.2} ms, p99 {p99:.2} ms | bare request p50 {bare_p50:.2} ms, p99 {bare_p99:.2} ms | — | p50 ≤ 5 ms, p99 ≤ 25 ms | {} | {} messages |",
            verdict(p50 <= 5.0 && p99 <= 25.0),
            self.sizes.latency_messages
        );
        println!("{row}");
        self.rows.push(row);
    }

    /// B5c: B5 with 8 clients committing at once; no baseline.
    pub fn concurrent(&mut self, c: &crate::concurrent::Concurrent) {
        use crate::concurrent::{CLIENTS, P99_TARGET_MS, RATE, RATE_FLOOR};
        let row = format!(
            "| B5c commit → receipt, {CLIENTS} clients at {RATE} msg/s in all | p50 {:.2} ms, p99 {:.2} ms ({:.0} msg/s committed) | — | — | p99 ≤ {P99_TARGET_MS:.0} ms, at ≥ {:.0} msg/s | {} | {} messages |",
            c.p50(),
            c.p99(),
            c.achieved,
            RATE_FLOOR * RATE as f64,
            verdict(c.met()),
            c.latencies.len()
        );
        println!("{row}");
        self.rows.push(row);
    }

    /// B13: a receiver's backlog after an outage, and the requests the outage cost it.
    pub fn drained(&mut self, d: &crate::outage::Drained) {
        use crate::outage::{DRAIN_TARGET, RATE, REQUEST_SHARE_TARGET};
        let row = format!(
            "| B13 outage drain: 503 for {} min at {RATE} msg/s to one endpoint, retry schedule '{}' | last delivery {:.1} s after the return (median message {:.1} s); {} requests while down, {:.2}% of {} messages, at most {} at once | — | — | ≤ {} s; ≤ {:.0}% | {} | 1 ({} messages held back without an attempt) |",
            self.sizes.outage.as_secs() / 60,
            d.retry_schedule,
            d.last_delivery.as_secs_f64(),
            d.median_delivery.as_secs_f64(),
            d.requests_while_down,
            d.request_share() * 100.0,
            d.messages,
            d.max_in_flight,
            DRAIN_TARGET.as_secs(),
            REQUEST_SHARE_TARGET * 100.0,
            verdict(d.met()),
            d.held_back
        );
        println!("{row}");
        self.rows.push(row);
    }

    /// A latency against the bare `NOTIFY` floor, with the B9 targets.
    pub fn told(&mut self, name: &str, ours: &[f64], bare: &[f64]) {
        let (p50, p99) = (crate::percentile(ours, 0.5), crate::percentile(ours, 0.99));
        let row = format!(
            "| {name} | p50 {p50:.2} ms, p99 {p99:.2} ms | bare NOTIFY p50 {:.2} ms, p99 {:.2} ms | — | p50 ≤ 5 ms, p99 ≤ 25 ms | {} | {} signals |",
            crate::percentile(bare, 0.5),
            crate::percentile(bare, 0.99),
            verdict(p50 <= 5.0 && p99 <= 25.0),
            ours.len()
        );
        println!("{row}");
        self.rows.push(row);
    }

    /// Two ways of doing one thing, side by side: a ratio with no target.
    pub fn compared(&mut self, f: Figure) {
        let row = format!(
            "| {} | {:.2} {} | {:.2} {} | **{:.2}** | reported | — | {} |",
            f.name, f.ours, f.unit, f.base, f.unit, f.ratio, f.runs
        );
        println!("{row}");
        self.rows.push(row);
    }

    /// B15: kill → claim by another worker, session-bound (A, with the target) against an
    /// explicit owner's short lease (B); the ratio is B's p50 over A's.
    pub fn resumed(&mut self, r: &crate::crash::Resumed) {
        let spread = |ms: &[f64]| {
            format!(
                "p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
                crate::percentile(ms, 0.5),
                crate::percentile(ms, 0.99),
                crate::percentile(ms, 1.0)
            )
        };
        let (p50, p99) = (
            crate::percentile(&r.session, 0.5),
            crate::percentile(&r.session, 0.99),
        );
        let row = format!(
            "| B15 crash → resume (kill → another worker's wf_claim), poll interval {} | A, session-bound lease ({}): {} | B, owner '{}', {} lease: {} | **{:.2}** (B/A p50) | A: p50 ≤ 500 ms, p99 ≤ 1.5 s | {} | {} + {} kills |",
            r.poll_interval,
            crate::crash::SESSION_LEASE,
            spread(&r.session),
            crate::crash::OWNER,
            crate::crash::OWNER_LEASE,
            spread(&r.owner),
            crate::percentile(&r.owner, 0.5) / p50,
            verdict(p50 <= 500.0 && p99 <= 1500.0),
            r.session.len(),
            r.owner.len()
        );
        println!("{row}");
        self.rows.push(row);
    }

    pub fn storage(&mut self, megabytes: f64, dead: i64, elapsed: Duration) {
        let row = format!(
            "| B6 storage after {} deliveries, retention 0 | {megabytes:.2} MB, {dead} dead tuples | — | — | < 10 MB, dead tuples reclaimed | {} | 1 ({:.0} s, {:.0} msg/s) |",
            self.sizes.storage_messages,
            verdict(megabytes < 10.0 && dead == 0),
            elapsed.as_secs_f64(),
            self.sizes.storage_messages as f64 / elapsed.as_secs_f64()
        );
        println!("{row}");
        self.rows.push(row);
    }

    pub fn finish(self, took: Duration) {
        let mut md = String::new();
        let command = if self.quick {
            "bash bench/run.sh --quick"
        } else {
            "bash bench/run.sh"
        };
        let _ = writeln!(md, "# Benchmarks\n");
        let _ = writeln!(
            md,
            "Written by `{command}` ({:.0} min). Every figure is the median of the runs shown; every \
             ratio is the median of per-run ratios between the extension and a baseline measured \
             in the same run, on the same cluster and machine.{}\n",
            took.as_secs_f64() / 60.0,
            if self.quick {
                " **Quick mode**: smaller sizes than the targets name; run without `--quick` for the full sizes."
            } else {
                ""
            }
        );
        let _ = writeln!(
            md,
            "| benchmark | with the extension | baseline | ratio | target | verdict | runs |"
        );
        let _ = writeln!(md, "|---|---|---|---|---|---|---|");
        for row in &self.rows {
            let _ = writeln!(md, "{row}");
        }
        let _ = writeln!(md, "\n## What each figure measures\n");
        let _ = writeln!(
            md,
            "- **B1**: pgbench's TPC-B-like transaction plus one `wf_enqueue` (scale 10, `-M prepared`, {} s per run), \
             against the same transaction plus one `INSERT` into a bare table with the outbox's columns, \
             defaults, constraints and indexes. The messages are due a day later, so this is the cost of \
             enqueueing (commit wake-up of the dispatcher included); sending is measured by B3 and B7. \
             Runs alternate which of the pair goes first, and each starts right after a `CHECKPOINT`.",
            self.sizes.pgbench_seconds
        );
        let _ = writeln!(
            md,
            "- **B2**: one client running start + debit + checkpoint / credit + checkpoint / enqueue + checkpoint \
             + complete as three transactions, against the same rows written to bare tables shaped like the \
             extension's (same columns, domains and indexes; the lease renewal included). Fenced on both sides: every workflow \
             call names its owner, and every bare update of the run checks the same owner and an unexpired lease. Runs alternate \
             which goes first, each right after a `CHECKPOINT`."
        );
        let _ = writeln!(
            md,
            "- **B3/B4**: {} messages committed with a future `deliver_at`, released in one commit; time from \
             just before that COMMIT to the last message's `finished_at`. Baseline: a bare reqwest client (same concurrency, {}, same receiver process) sending the \
             same number of requests with no database.",
            self.sizes.drain_messages,
            crate::CONCURRENCY
        );
        let _ = writeln!(
            md,
            "- **B5**: one commit every 10 ms; receipt time at an in-process receiver minus the time COMMIT was sent."
        );
        let _ = writeln!(
            md,
            "- **B5c**: B5 under concurrency: {} client connections (tasks of the bench process, a backend each) \
             commit one message per transaction to one URL, {} a second in all (each client every {} ms, \
             the clients evenly staggered) for {} s; receipt time at an in-process receiver minus the time \
             COMMIT was sent, each message matched by its payload. The row gives the rate the clients \
             reached; below {:.0}% of the aim, the figure does not count.",
            crate::concurrent::CLIENTS,
            crate::concurrent::RATE,
            1000 * crate::concurrent::CLIENTS as u32 / crate::concurrent::RATE,
            self.sizes.concurrent_seconds,
            crate::concurrent::RATE_FLOOR * 100.0
        );
        let _ = writeln!(
            md,
            "- **B6**: {} messages enqueued in batches of 10,000 (the next batch waits while more than 10,000 are pending) with `workflow.retention = 0`; \
             size of the outbox and attempts tables with their indexes and TOAST once everything is delivered \
             and purged, after autovacuum had up to a minute.",
            self.sizes.storage_messages
        );
        let _ = writeln!(
            md,
            "- **B7**: the dispatcher process's user + system CPU (all threads, from /proc) during B3, per 10,000 deliveries, against the bare client's."
        );
        let _ = writeln!(
            md,
            "- **B8**: the B3 drain ({} messages) in a database that also holds {} blocked messages \
             (half to a disabled endpoint, half behind {} ordering-key heads that wait for it, all parked \
             before the runs), against the same drain in a database without them; each database has its \
             own dispatcher with the same settings, and runs alternate which goes first. A claim whose \
             cost grew with the blocked backlog would show as a ratio under 1.",
            self.sizes.blocked_drain_messages,
            crate::blocked::BLOCKED,
            crate::blocked::KEYS
        );
        let _ = writeln!(
            md,
            "- **B9**: a workflow parked on `wf_wait` for a signal (a name of its own each time); another commit of \
             `wf_signal`; time from just before that COMMIT to the `workflow_ready` notification at a `LISTEN` \
             connection, and, for a name with a push handler, to the push's arrival at a receiver (matched by \
             its workflow). Beside it, a bare `pg_notify` committed by the same session to its arrival."
        );
        let _ = writeln!(
            md,
            "- **B10**: {} three-step workflows (three fenced checkpoints and the completion) started by one \
             session and run to completion: pushed to a handler in the bench process (8 connections), against 8 \
             workers that `wf_claim` them when `LISTEN workflow_ready` tells them (50 ms nap at most on an empty \
             claim); workflows per second from the first start to the last completion. Reported, no target.",
            self.sizes.latency_messages * 2
        );
        let _ = writeln!(
            md,
            "- **B11**: commit → receipt of {} messages at 100 a second to a healthy receiver (a URL target), \
             p99, while an endpoint whose receiver never answers (each request hangs until the 10 s request \
             timeout) holds a backlog of {} messages, against the same right before without it; with the \
             default `workflow.max_concurrency_per_destination` (16 of the 32 slots).",
            self.sizes.latency_messages / 2,
            crate::policy::BACKLOG
        );
        let _ = writeln!(
            md,
            "- **B12**: an endpoint with `rate_per_second` of 20, 200 and 2,000, sent {} seconds' worth of \
             messages (at least 100) in one commit; the rate between the first and the last arrival at an \
             in-process receiver, against the configured rate.",
            if self.quick { 2 } else { 5 }
        );
        let _ = writeln!(
            md,
            "- **B13**: an in-process receiver answers 503 (each after {} ms, so that requests sent together \
             would overlap) for {} minutes while one connection commits {} messages a second to one endpoint, \
             each in its own transaction, with the default `workflow.retry_schedule` (the endpoint has none of \
             its own; the bench fails if the cluster sets another); then it answers 200. The time from the \
             switch to 200 to the last request it receives once every message is delivered (and the median \
             message's first arrival after the switch), and the requests it received while it answered 503 \
             as a share of the messages committed, with the most it was answering at once (1 when failing \
             destinations are probed one request at a time). A message not delivered within {} minutes of \
             the return, or given up, fails the run.",
            crate::outage::FAILING_REPLY.as_millis(),
            self.sizes.outage.as_secs() / 60,
            crate::outage::RATE,
            crate::outage::DRAIN_DEADLINE.as_secs() / 60
        );
        let _ = writeln!(
            md,
            "- **B15**: a worker process of its own (`workflow-bench holder`, one connection) claims a ready \
             workflow (a name of its own each time) and stays connected; it is killed with SIGKILL, and the \
             time runs from the kill until another worker — a connection that `LISTEN`s on `workflow_ready` and \
             calls `wf_claim(name, 'claimer', '60 s')` whenever a notification names the workflow's name — \
             has the workflow back from `wf_claim`. A: {} kills of a worker that claimed with \
             `wf_claim(name, NULL, '{}')`, a lease bound to its session, which the dispatcher frees when \
             the backend exits. B: {} kills of a worker that claimed as the explicit owner `'{}'` with a \
             {} lease, which nothing frees before it runs out. The ratio is B's p50 over A's; the target \
             is A's. The poll interval in force is in the row.\n",
            self.sizes.kills,
            crate::crash::SESSION_LEASE,
            self.sizes.lease_kills,
            crate::crash::OWNER,
            crate::crash::OWNER_LEASE
        );
        let _ = writeln!(md, "## Machine\n\n{}\n", machine());
        let _ = writeln!(md, "## Cluster settings\n\n```");
        for line in SETTINGS {
            let _ = writeln!(md, "{line}");
        }
        let _ = writeln!(
            md,
            "```\n\nPostgreSQL 15 (Debian), release build of the extension, receivers on loopback."
        );
        let notes = std::fs::read_to_string(notes_path()).unwrap_or_default();
        if !notes.is_empty() {
            let _ = writeln!(md, "\n{notes}");
        }
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../BENCHMARKS.md");
        std::fs::write(&path, md).expect("write BENCHMARKS.md");
        eprintln!("wrote {}", path.display());
    }
}

/// Hand-written analysis (profiles, before/after of each change), kept across runs.
fn notes_path() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("NOTES.md")
}

fn machine() -> String {
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|m| m.trim_start_matches([' ', '\t', ':']).to_string())
        .unwrap_or_default();
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    format!(
        "{cores} cores ({model}), {:.1} GiB memory",
        mem_kb / 1024.0 / 1024.0
    )
}

//! B1 and B2 with pgbench: the same transactions with and without the extension, run
//! alternately in the same cluster, compared by their median rate.

use crate::Sizes;
use std::process::Command;
use workflow_tests::Cluster;

const PGBENCH: &str = "/usr/lib/postgresql/15/bin/pgbench";
const PSQL: &str = "/usr/lib/postgresql/15/bin/psql";
const SCALE: &str = "10";

const TPCB_HEAD: &str = r"\set aid random(1, 100000 * :scale)
\set bid random(1, 1 * :scale)
\set tid random(1, 10 * :scale)
\set delta random(-5000, 5000)
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + :delta WHERE aid = :aid;
SELECT abalance FROM pgbench_accounts WHERE aid = :aid;
UPDATE pgbench_tellers SET tbalance = tbalance + :delta WHERE tid = :tid;
UPDATE pgbench_branches SET bbalance = bbalance + :delta WHERE bid = :bid;
INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) VALUES (:tid, :bid, :aid, :delta, CURRENT_TIMESTAMP);
";

/// Bare tables shaped like the extension's (same columns, domains, defaults, constraints and
/// indexes; like the extension's, without foreign keys), for the baselines.
const BARE_TABLES: &str = "
DROP TABLE IF EXISTS bench_outbox, bench_steps, bench_runs;
CREATE TABLE bench_runs (LIKE workflow.runs INCLUDING ALL);
CREATE TABLE bench_steps (LIKE workflow.checkpoints INCLUDING ALL);
CREATE TABLE bench_outbox (LIKE workflow.outbox INCLUDING ALL);
";

/// Runs a helper command to completion; panics with its output unless it succeeded.
/// Returns what it printed.
fn succeed(command: &mut Command, what: &str) -> String {
    let output = command.output().unwrap_or_else(|e| panic!("{what}: {e}"));
    let text = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "{what} failed: {text}{}",
        String::from_utf8_lossy(&output.stderr)
    );
    text
}

pub struct Setup {
    conninfo: String,
    dir: std::path::PathBuf,
    url: String,
}

impl Setup {
    pub fn new(cluster: &Cluster, url: &str) -> Setup {
        let conninfo = cluster.conninfo();
        succeed(
            Command::new(PGBENCH).args(["-i", "-q", "-s", SCALE, &conninfo]),
            "pgbench -i",
        );
        cluster.psql(BARE_TABLES);
        let dir = std::env::temp_dir().join(format!("workflow-bench-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("script dir");
        Setup {
            conninfo,
            dir,
            url: url.to_string(),
        }
    }

    fn script(&self, name: &str, body: &str) -> String {
        let path = self.dir.join(name);
        std::fs::write(&path, body).expect("write pgbench script");
        path.display().to_string()
    }

    /// Transactions per second of one pgbench run.
    fn tps(&self, script: &str, clients: u32, seconds: u32) -> f64 {
        self.checkpoint();
        let text = succeed(
            Command::new(PGBENCH)
                .args([
                    "-n",
                    "-M",
                    "prepared",
                    "-c",
                    &clients.to_string(),
                    "-j",
                    &clients.min(2).to_string(),
                ])
                .args(["-T", &seconds.to_string(), "-f", script, &self.conninfo]),
            "pgbench",
        );
        text.lines()
            .find_map(|line| line.strip_prefix("tps = "))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|tps| tps.parse().ok())
            .expect("tps in pgbench output")
    }

    /// Every run starts right after a checkpoint, so each pays the same full-page images
    /// (written for a page's first change after a checkpoint) instead of whichever run a
    /// timed checkpoint landed in; `checkpoint_timeout` in the settings keeps those out.
    fn checkpoint(&self) {
        succeed(
            Command::new(PSQL).args(["-X", "-q", "-c", "CHECKPOINT", "-d", &self.conninfo]),
            "CHECKPOINT",
        );
    }

    /// Alternates the two scripts `runs` times; returns (ours, baseline) rates.
    fn alternate(
        &self,
        ours: &str,
        base: &str,
        clients: u32,
        sizes: Sizes,
    ) -> (Vec<f64>, Vec<f64>) {
        let (mut a, mut b) = (Vec::new(), Vec::new());
        for run in 1..=sizes.pgbench_runs {
            // Whichever goes second meets the tables, WAL and checkpoints the first left
            // behind: alternate the order (baseline first in odd runs).
            let (base_tps, ours_tps) = if run % 2 == 1 {
                let base_tps = self.tps(base, clients, sizes.pgbench_seconds);
                (base_tps, self.tps(ours, clients, sizes.pgbench_seconds))
            } else {
                let ours_tps = self.tps(ours, clients, sizes.pgbench_seconds);
                (self.tps(base, clients, sizes.pgbench_seconds), ours_tps)
            };
            eprintln!("  run {run}: with the extension {ours_tps:.0}/s, baseline {base_tps:.0}/s");
            a.push(ours_tps);
            b.push(base_tps);
        }
        (a, b)
    }

    /// B1: TPC-B-like plus one `wf_enqueue`, against the same plus one INSERT into a bare
    /// outbox-shaped table. The messages are due tomorrow: this measures what enqueueing
    /// costs the writing transaction (commit wake-up included); sending is B3's and B7's.
    pub fn enqueue_overhead(&self, clients: u32, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
        let url = &self.url;
        let ours = self.script(
            "b1_ours.sql",
            &format!(
                "{TPCB_HEAD}SELECT wf_enqueue('{url}', jsonb_build_object('aid', CAST(:aid AS int), 'delta', CAST(:delta AS int)), deliver_at => now() + interval '1 day');\nEND;\n"
            ),
        );
        let base = self.script(
            "b1_base.sql",
            &format!(
                "{TPCB_HEAD}INSERT INTO bench_outbox (url, payload) VALUES ('{url}', jsonb_build_object('aid', CAST(:aid AS int), 'delta', CAST(:delta AS int)));\nEND;\n"
            ),
        );
        self.alternate(&ours, &base, clients, sizes)
    }

    /// B2: start + debit + checkpoint / credit + checkpoint / enqueue + checkpoint + complete,
    /// every workflow call fenced by its owner, against the same rows written to bare
    /// tables, every run update fenced by the same condition.
    pub fn transfer_workflow(&self, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
        let url = &self.url;
        let head = "\\set from random(1, 100000 * :scale)\n\\set to random(1, 100000 * :scale)\n";
        let ours = self.script(
            "b2_ours.sql",
            &format!(
                "{head}BEGIN;
SELECT wf_start('transfer', jsonb_build_object('from', CAST(:from AS int), 'to', CAST(:to AS int)), owner => 'bench') AS id \\gset
UPDATE pgbench_accounts SET abalance = abalance - 25 WHERE aid = :from;
SELECT wf_checkpoint(:id, 'debit', owner => 'bench');
END;
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + 25 WHERE aid = :to;
SELECT wf_checkpoint(:id, 'credit', owner => 'bench');
END;
BEGIN;
SELECT wf_enqueue('{url}', jsonb_build_object('transfer', CAST(:id AS text)), workflow => :id);
SELECT wf_checkpoint(:id, 'notify', owner => 'bench');
SELECT wf_complete(:id, owner => 'bench');
END;
"
            ),
        );
        let base = self.script(
            "b2_base.sql",
            &format!(
                "{head}BEGIN;
INSERT INTO bench_runs (name, input, owner, lease_duration, lease_expires_at)
  VALUES ('transfer', jsonb_build_object('from', CAST(:from AS int), 'to', CAST(:to AS int)), 'bench', '60s', clock_timestamp() + '60s') RETURNING id \\gset
UPDATE pgbench_accounts SET abalance = abalance - 25 WHERE aid = :from;
INSERT INTO bench_steps (workflow_id, step, output) VALUES (:id, 'debit', 'null');
UPDATE bench_runs SET lease_expires_at = clock_timestamp() + lease_duration, updated_at = now() WHERE id = :id AND owner = 'bench' AND lease_expires_at > clock_timestamp();
END;
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + 25 WHERE aid = :to;
INSERT INTO bench_steps (workflow_id, step, output) VALUES (:id, 'credit', 'null');
UPDATE bench_runs SET lease_expires_at = clock_timestamp() + lease_duration, updated_at = now() WHERE id = :id AND owner = 'bench' AND lease_expires_at > clock_timestamp();
END;
BEGIN;
INSERT INTO bench_outbox (url, payload, workflow_id) VALUES ('{url}', jsonb_build_object('transfer', CAST(:id AS text)), :id);
INSERT INTO bench_steps (workflow_id, step, output) VALUES (:id, 'notify', 'null');
UPDATE bench_runs SET status = 'completed', finished_at = now(), owner = NULL, lease_expires_at = NULL WHERE id = :id AND owner = 'bench' AND lease_expires_at > clock_timestamp();
END;
"
            ),
        );
        self.alternate(&ours, &base, 1, sizes)
    }

    /// B2q: B2's workflow under a name with a queue whose limits never bind, against the
    /// same under a name without one; the two alternate as in B2.
    pub fn transfer_workflow_queued(&self, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
        succeed(
            Command::new(PSQL)
                .args(["-X", "-q", "-d", &self.conninfo, "-c"])
                .arg("SELECT wf_queue('transfer_q', max_running => 1000000, max_running_per_tenant => 1000000, rate_per_second => 100000)"),
            "psql",
        );
        let script = |name: &str| {
            let url = &self.url;
            format!(
                "\\set from random(1, 100000 * :scale)\n\\set to random(1, 100000 * :scale)\nBEGIN;
SELECT wf_start('{name}', jsonb_build_object('from', CAST(:from AS int), 'to', CAST(:to AS int)), owner => 'bench') AS id \\gset
UPDATE pgbench_accounts SET abalance = abalance - 25 WHERE aid = :from;
SELECT wf_checkpoint(:id, 'debit', owner => 'bench');
END;
BEGIN;
UPDATE pgbench_accounts SET abalance = abalance + 25 WHERE aid = :to;
SELECT wf_checkpoint(:id, 'credit', owner => 'bench');
END;
BEGIN;
SELECT wf_enqueue('{url}', jsonb_build_object('transfer', CAST(:id AS text)), workflow => :id);
SELECT wf_checkpoint(:id, 'notify', owner => 'bench');
SELECT wf_complete(:id, owner => 'bench');
END;
"
            )
        };
        let queued = self.script("b2q_queued.sql", &script("transfer_q"));
        let plain = self.script("b2q_plain.sql", &script("transfer_p"));
        self.alternate(&queued, &plain, 1, sizes)
    }
}

//! B15: how soon a workflow runs again after the worker holding its lease is killed.
//!
//! A worker process of its own (`workflow-bench holder`) claims a ready workflow and stays
//! connected; it is killed with SIGKILL, and the clock runs from the kill until another
//! worker, which `LISTEN`s on `workflow_ready` and calls `wf_claim` whenever a
//! notification names the workflow's name, has claimed it. With the lease bound to the
//! killed worker's session (no owner), the dispatcher frees it when the backend exits;
//! with an explicit owner nothing frees it before it runs out, which a short lease keeps
//! to seconds.

use crate::Sizes;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, SimpleQueryMessage};
use workflow_tests::listener::Listener;
use workflow_tests::{Cluster, Helper};

/// How long the worker process may take to claim, and the flush of the claimer's
/// notifications before the kill.
const CLAIM_DEADLINE: Duration = Duration::from_secs(30);
/// How long after the kill the other worker must have claimed the workflow.
const RESUME_DEADLINE: Duration = Duration::from_secs(90);
/// The session-bound lease: `workflow.lease_duration`'s default.
pub const SESSION_LEASE: &str = "60 s";
/// The explicit owner's lease, short so that waiting for it to run out keeps the run short.
pub const OWNER_LEASE: &str = "5 s";
/// The explicit owner of the contrast.
pub const OWNER: &str = "worker-1";

/// B15's times from the kill to the other worker's claim, in milliseconds.
pub struct Resumed {
    /// `workflow.poll_interval` in force.
    pub poll_interval: String,
    /// Leases bound to the killed worker's session.
    pub session: Vec<f64>,
    /// Leases of the explicit owner `OWNER`.
    pub owner: Vec<f64>,
}

pub async fn b15(cluster: &Cluster, client: &Client, sizes: Sizes) -> Resumed {
    let poll_interval: String = client
        .query_one("SELECT current_setting('workflow.poll_interval')", &[])
        .await
        .expect("the poll interval")
        .get(0);
    let mut claimer = Listener::start(&cluster.conninfo(), &["workflow_ready", "b15"]).await;
    let mut resumed = Resumed {
        poll_interval,
        session: Vec::with_capacity(sizes.kills),
        owner: Vec::with_capacity(sizes.lease_kills),
    };
    let run = uuid::Uuid::new_v4().simple();
    for i in 0..sizes.kills {
        // A name of its own: the dispatcher's looks may announce an earlier one again.
        let name = format!("b15-session-{run}-{i}");
        let ms = kill_and_resume(cluster, client, &mut claimer, &name, None, SESSION_LEASE).await;
        eprintln!(
            "  kill {}: session-bound lease, claimed again after {ms:.1} ms",
            i + 1
        );
        resumed.session.push(ms);
    }
    for i in 0..sizes.lease_kills {
        let name = format!("b15-owner-{run}-{i}");
        let ms = kill_and_resume(
            cluster,
            client,
            &mut claimer,
            &name,
            Some(OWNER),
            OWNER_LEASE,
        )
        .await;
        eprintln!(
            "  kill {}: owner {OWNER:?}, claimed again after {ms:.1} ms",
            i + 1
        );
        resumed.owner.push(ms);
    }
    resumed
}

/// Queues a ready workflow of `name`, has a worker process claim it for `lease` (as
/// `owner`, or bound to its session) and kills that process; returns the milliseconds from
/// the kill until `claimer`, told by `workflow_ready`, has claimed the workflow.
async fn kill_and_resume(
    cluster: &Cluster,
    client: &Client,
    claimer: &mut Listener,
    name: &str,
    owner: Option<&str>,
    lease: &str,
) -> f64 {
    // Ready at once, as in B10: a sleep that is already over.
    client
        .execute(
            "SELECT wf_sleep(wf_start($1, owner => 'b15'), 'queued', now(), 'b15')",
            &[&name],
        )
        .await
        .expect("a ready workflow");
    let owner_sql = owner.map_or_else(|| "NULL".to_string(), |o| format!("'{o}'"));
    let claim = format!("SELECT wf_claim('{name}', {owner_sql}, '{lease}')");
    let (mut worker, id) = holder(&cluster.conninfo(), &claim).await;
    // Every notification committed so far (the queueing's among them) reaches the claimer
    // before this marker: Postgres delivers them in commit order.
    let marker = format!("marker-{}", uuid::Uuid::new_v4().simple());
    claimer
        .client
        .execute("SELECT pg_notify('b15', $1)", &[&marker])
        .await
        .expect("a marker notification");
    claimer.until(&marker, CLAIM_DEADLINE).await;
    let killed = Instant::now();
    // SIGKILL: the worker's connection drops with no goodbye.
    worker.0.kill().expect("kill the worker process");
    let claimed = tokio::time::timeout(RESUME_DEADLINE, claim_when_told(claimer, name, id))
        .await
        .unwrap_or_else(|_| {
            panic!(
                "B15: workflow {id} ({}) was not claimed by another worker within {RESUME_DEADLINE:?} of its worker's kill",
                owner.map_or_else(
                    || format!("session-bound lease of {lease}"),
                    |o| format!("owner {o:?}, lease of {lease}")
                )
            )
        });
    // Reaped.
    drop(worker);
    claimer
        .client
        .execute("SELECT wf_complete($1, NULL, 'claimer')", &[&id])
        .await
        .expect("the resumed workflow's completion");
    claimed.saturating_duration_since(killed).as_secs_f64() * 1000.0
}

/// Claims a workflow of `name` as `claimer` each time `workflow_ready` names it, until the
/// claim returns one (it must be `id`); returns when that claim returned.
async fn claim_when_told(claimer: &mut Listener, name: &str, id: uuid::Uuid) -> Instant {
    loop {
        // The caller's timeout bounds the whole loop.
        claimer.until(name, RESUME_DEADLINE * 2).await;
        let claimed = claimer
            .client
            .query("SELECT wf_claim($1, 'claimer', '60 s')", &[&name])
            .await
            .expect("the claimer's wf_claim");
        let at = Instant::now();
        if let Some(row) = claimed.first() {
            let got: uuid::Uuid = row.get(0);
            assert_eq!(got, id, "B15: the claimer got another workflow of {name}");
            return at;
        }
    }
}

/// Starts a worker process (`workflow-bench holder`) that runs `sql`, a claim, on a
/// connection of its own and stays connected; returns it with the workflow it claimed.
async fn holder(conninfo: &str, sql: &str) -> (Helper, uuid::Uuid) {
    let mut child = Command::new(std::env::current_exe().expect("own path"))
        .args(["holder", conninfo, sql])
        // It also ends when its stdin closes: when this process is gone.
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start a worker process");
    let stdout = child.stdout.take().expect("the worker's stdout");
    let worker = Helper(child);
    let read = tokio::task::spawn_blocking(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        line
    });
    let line = tokio::time::timeout(CLAIM_DEADLINE, read)
        .await
        .unwrap_or_else(|_| {
            panic!("B15: the worker process had not claimed after {CLAIM_DEADLINE:?}: {sql}")
        })
        .expect("the worker's output");
    let id = line.trim().parse().unwrap_or_else(|_| {
        panic!("B15: the worker process claimed nothing with {sql} (it printed {line:?})")
    });
    (worker, id)
}

/// The worker process (`workflow-bench holder <conninfo> <sql>`): runs the claim `sql` on a
/// connection of its own and prints the workflow it claimed (an empty line if none).
/// Returns the session, which the caller keeps open.
pub async fn hold(conninfo: &str, sql: &str) -> Client {
    let client = workflow_tests::connect(conninfo).await;
    // The simple protocol answers after the claim's commit.
    let id = client
        .simple_query(sql)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"))
        .into_iter()
        .find_map(|message| match message {
            SimpleQueryMessage::Row(row) => row.get(0).map(str::to_string),
            _ => None,
        })
        .unwrap_or_default();
    println!("{id}");
    client
}

//! The out-of-process test harness: throwaway PostgreSQL clusters with the installed
//! `workflow` extension, and real client connections to them.
//!
//! Each test binary shares one cluster ([`shared_cluster`]); tests keep apart by using
//! workflow names of their own ([`unique`]). A cluster lives in its own directory under
//! the temp dir, owned by `postgres` (initdb refuses root), listens only on a Unix socket
//! in that directory, and is stopped and removed when the test binary exits.

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio_postgres::{Client, NoTls};

pub mod exporter;
pub mod listener;
pub mod receiver;

pub use tokio_postgres;

/// Settings of a cluster with the dispatcher running. Private networks are allowed because
/// the test receiver listens on loopback; the SSRF tests turn that off. The poll interval is
/// long so that only wake-on-commit can explain a fast delivery.
pub const DISPATCHER_SETTINGS: &[&str] = &[
    "shared_preload_libraries = 'workflow'",
    "workflow.allow_private_networks = on",
    "workflow.request_timeout = '1s'",
    "workflow.poll_interval = '10s'",
    // Retries within seconds, where the default schedule waits 5 s and then minutes.
    "workflow.retry_schedule = '500ms, 1s, 2s, 4s, 8s'",
];

/// The extension's tables.
const TABLES: [&str; 7] = [
    "runs",
    "checkpoints",
    "endpoint_settings",
    "outbox",
    "delivery_attempts",
    "run_signals",
    "handlers",
];

/// A query with one line per table of the extension: its rows as text, hashed, so that a
/// database's data can be compared whole with another's or with itself at another time.
/// The columns `leaving_out` (`"table.column"`) and tables (`"table"`) are not part of it:
/// a version's new ones, to compare rows across the upgrade that added them.
pub fn table_digests(leaving_out: &[&str]) -> String {
    let lines: Vec<String> = TABLES
        .iter()
        .filter(|table| !leaving_out.contains(table))
        .map(|table| {
            let columns: Vec<String> = leaving_out
                .iter()
                .filter_map(|c| c.strip_prefix(&format!("{table}.")))
                .map(|c| format!("'{c}'"))
                .collect();
            format!(
                "SELECT '{table}' AS name, md5(string_agg(t, '|' ORDER BY t)) AS digest
                   FROM (SELECT (to_jsonb(x) - ARRAY[{}]::text[])::text AS t FROM workflow.{table} x) r",
                columns.join(", ")
            )
        })
        .collect();
    format!(
        "SELECT string_agg(name || ' ' || digest, E'\\n' ORDER BY name) FROM ({}) t",
        lines.join(" UNION ALL ")
    )
}

const PG_BIN: &str = "/usr/lib/postgresql/15/bin";
const PORT: u16 = 5432;

pub struct Cluster {
    dir: PathBuf,
    /// Environment variables the server is started with.
    environment: Vec<(String, String)>,
}

/// How [`Cluster::start_with`] sets a cluster up.
#[derive(Default)]
pub struct Options<'a> {
    /// Extra `postgresql.conf` lines.
    pub settings: &'a [&'a str],
    /// Environment variables for the server process (and so for the dispatcher).
    pub environment: &'a [(&'a str, &'a str)],
    /// Leave `CREATE EXTENSION` to the test.
    pub without_extension: bool,
}

fn new_cluster_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let dir = std::env::temp_dir().join(format!(
        "workflow-it-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::SeqCst)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create cluster dir");
    chown_to_postgres(&dir);
    dir
}

impl Cluster {
    /// Creates and starts a cluster with `CREATE EXTENSION workflow` done in `postgres`.
    /// `settings` are extra `postgresql.conf` lines.
    pub fn start(settings: &[&str]) -> Cluster {
        Cluster::start_with(Options {
            settings,
            ..Options::default()
        })
    }

    pub fn start_with(options: Options<'_>) -> Cluster {
        let cluster = Cluster {
            dir: new_cluster_dir(),
            environment: options
                .environment
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let settings = options.settings;
        as_postgres(PG_BIN, "initdb")
            .args([
                "--auth=trust",
                "--no-sync",
                "--encoding=UTF8",
                "--locale=C",
                "-U",
                "postgres",
                "-D",
            ])
            .arg(cluster.data_dir())
            .run("initdb");
        let mut conf = format!(
            "listen_addresses = ''\nport = {PORT}\nunix_socket_directories = '{}'\n\
             fsync = off\nlog_min_messages = warning\n",
            cluster.dir.display()
        );
        for line in settings {
            conf.push_str(line);
            conf.push('\n');
        }
        append(&cluster.data_dir().join("postgresql.conf"), &conf);
        cluster.pg_ctl_start();
        if !options.without_extension {
            cluster.psql("CREATE EXTENSION workflow");
        }
        cluster
    }

    /// A streaming hot standby of this cluster (`pg_basebackup -R`), started, with the same
    /// settings; it has no dispatcher until promoted (G5).
    pub fn standby(&self) -> Cluster {
        let standby = Cluster {
            dir: new_cluster_dir(),
            environment: self.environment.clone(),
        };
        as_postgres(PG_BIN, "pg_basebackup")
            .args(["-X", "stream", "-R", "-h"])
            .arg(&self.dir)
            .args(["-p", &PORT.to_string(), "-U", "postgres", "-D"])
            .arg(standby.data_dir())
            .run("pg_basebackup");
        append(
            &standby.data_dir().join("postgresql.conf"),
            &format!(
                "unix_socket_directories = '{}'\nhot_standby = on\n",
                standby.dir.display()
            ),
        );
        standby.pg_ctl_start();
        standby
    }

    /// The directory of the cluster's socket (its `host` in a connection string).
    pub fn socket_dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        PORT
    }

    /// The connection string for database `dbname` of this cluster.
    pub fn conninfo_for(&self, dbname: &str) -> String {
        format!(
            "host={} port={PORT} user=postgres dbname={dbname}",
            self.dir.display()
        )
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The connection string for a client of this cluster.
    pub fn conninfo(&self) -> String {
        self.conninfo_for("postgres")
    }

    pub async fn connect(&self) -> Client {
        connect(&self.conninfo()).await
    }

    fn pg_ctl_start(&self) {
        let mut command = as_postgres_with(PG_BIN, "pg_ctl", &self.environment);
        command
            .args(["start", "-w", "-t", "60", "-D"])
            .arg(self.data_dir())
            .arg("-l")
            .arg(self.dir.join("server.log"))
            .run("pg_ctl start");
    }

    /// Runs SQL through psql as the superuser; panics on error.
    pub fn psql(&self, sql: &str) {
        self.psql_in("postgres", sql);
    }

    /// Runs SQL through psql as the superuser in database `dbname`; panics on error.
    pub fn psql_in(&self, dbname: &str, sql: &str) {
        as_postgres(PG_BIN, "psql")
            .args(["-X", "-q", "-v", "ON_ERROR_STOP=1", "-d"])
            .arg(self.conninfo_for(dbname))
            .args(["-c", sql])
            .run("psql");
    }

    /// Runs a PostgreSQL client program (`pg_dump`, `pg_restore`, …) as `postgres` with
    /// `args`; returns its standard output, panics if it fails.
    pub fn client_program(&self, tool: &str, args: &[&str]) -> Vec<u8> {
        let output = as_postgres(PG_BIN, tool)
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("{tool}: {e}"));
        assert!(
            output.status.success(),
            "{tool} failed: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }

    /// Kills the whole server without a shutdown checkpoint: a crash.
    pub fn stop_immediate(&self) {
        as_postgres(PG_BIN, "pg_ctl")
            .args(["stop", "-m", "immediate", "-w", "-D"])
            .arg(self.data_dir())
            .run("pg_ctl stop -m immediate");
    }

    /// Promotes a standby to a primary and waits until it is one.
    pub fn promote(&self) {
        as_postgres(PG_BIN, "pg_ctl")
            .args(["promote", "-w", "-D"])
            .arg(self.data_dir())
            .run("pg_ctl promote");
    }

    /// Starts the server again after a stop; it recovers from the WAL.
    pub fn start_again(&self) {
        self.pg_ctl_start();
    }

    pub fn server_log(&self) -> String {
        std::fs::read_to_string(self.dir.join("server.log")).unwrap_or_default()
    }

    fn stop(&self) {
        let _ = as_postgres(PG_BIN, "pg_ctl")
            .args(["stop", "-m", "immediate", "-D"])
            .arg(self.data_dir())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.stop();
    }
}

static SHARED: OnceLock<Cluster> = OnceLock::new();

/// The cluster shared by all tests of one test binary, started on first use and stopped
/// when the binary exits. Without the dispatcher.
pub fn shared_cluster() -> &'static Cluster {
    shared_with(&[])
}

/// Like [`shared_cluster`], with the dispatcher preloaded ([`DISPATCHER_SETTINGS`]).
pub fn dispatch_cluster() -> &'static Cluster {
    shared_with(DISPATCHER_SETTINGS)
}

/// Like [`dispatch_cluster`], with `extra` settings after the dispatcher's (a binary uses
/// one or the other: the first call starts the binary's cluster).
pub fn dispatch_cluster_with(extra: &[&str]) -> &'static Cluster {
    let settings: Vec<&str> = DISPATCHER_SETTINGS.iter().chain(extra).copied().collect();
    shared_with(&settings)
}

fn shared_with(settings: &[&str]) -> &'static Cluster {
    SHARED.get_or_init(|| {
        extern "C" fn stop_shared() {
            if let Some(cluster) = SHARED.get() {
                cluster.stop();
            }
        }
        // SAFETY: registering a plain extern "C" fn with no captured state.
        unsafe { libc::atexit(stop_shared) };
        Cluster::start(settings)
    })
}

/// The pid of the database's dispatcher, once it is running.
pub async fn dispatcher_pid(client: &Client, deadline: Duration) -> i32 {
    eventually("the dispatcher to appear in pg_stat_activity", deadline, || async {
        client
            .query_opt(
                "SELECT pid FROM pg_stat_activity WHERE backend_type = 'workflow dispatcher' AND datname = current_database()",
                &[],
            )
            .await
            .ok()
            .flatten()
            .map(|row| row.get(0))
    })
    .await
}

/// Waits until message `id` reaches `status`; returns its attempt count.
pub async fn message_reaches(client: &Client, id: i64, status: &str, deadline: Duration) -> i32 {
    eventually(
        &format!("message {id} to be {status}"),
        deadline,
        || async {
            let row = client
                .query_one("SELECT status, attempts FROM wf_message($1)", &[&id])
                .await
                .unwrap();
            (row.get::<_, String>(0) == status).then(|| row.get(1))
        },
    )
    .await
}

pub async fn connect(conninfo: &str) -> Client {
    try_connect(conninfo)
        .await
        .unwrap_or_else(|e| panic!("connect to {conninfo}: {e}"))
}

/// A connection, or the reason there is none (the server may be restarting).
pub async fn try_connect(conninfo: &str) -> Result<Client, tokio_postgres::Error> {
    let (client, connection) = tokio_postgres::connect(conninfo, NoTls).await?;
    tokio::spawn(async move {
        // The connection ends when the client is dropped or the server goes away; tests that
        // kill backends expect that.
        let _ = connection.await;
    });
    Ok(client)
}

/// A helper process (a receiver, an exporter) that is killed when dropped, however the
/// test or benchmark ends.
pub struct Helper(pub std::process::Child);

impl Drop for Helper {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A port free on 127.0.0.1 now, for a helper process to listen on.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .expect("a free port")
}

/// A name no other test uses, so tests sharing a cluster never see each other's rows.
pub fn unique(prefix: &str) -> String {
    format!("{prefix}-{}", uuid::Uuid::new_v4().simple())
}

/// Polls `check` until it returns `Some`, or panics with `what` after `deadline`.
pub async fn eventually<T, F, Fut>(what: &str, deadline: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Polls a query returning one boolean until it is true, or panics with `what` after
/// `deadline`. NULL is not true yet (a `bool_and` over rows whose column is still NULL).
pub async fn until_true(
    client: &Client,
    what: &str,
    sql: &str,
    params: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    deadline: Duration,
) {
    eventually(what, deadline, || async {
        let done: Option<bool> = client
            .query_one(sql, params)
            .await
            .unwrap_or_else(|e| panic!("{sql}: {e}"))
            .get(0);
        (done == Some(true)).then_some(())
    })
    .await
}

/// Waits until the backend `pid` has exited.
pub async fn backend_exits(client: &Client, pid: i32, deadline: Duration) {
    let sql = "SELECT NOT EXISTS (SELECT FROM pg_stat_activity WHERE pid = $1)";
    until_true(
        client,
        &format!("backend {pid} to exit"),
        sql,
        &[&pid],
        deadline,
    )
    .await
}

/// Waits until the named endpoint has been disabled.
pub async fn endpoint_disabled(client: &Client, endpoint: &str, deadline: Duration) {
    let sql = "SELECT disabled_at IS NOT NULL FROM workflow.endpoints WHERE name = $1";
    until_true(
        client,
        &format!("endpoint {endpoint} to be disabled"),
        sql,
        &[&endpoint],
        deadline,
    )
    .await
}

/// Starts a workflow named `name` (no input, key or owner) and returns its id.
pub async fn start_workflow(client: &Client, name: &str) -> uuid::Uuid {
    client
        .query_one("SELECT wf_start($1)", &[&name])
        .await
        .expect("wf_start")
        .get(0)
}

/// Enqueues an empty message to `url` (no key, headers or delay) and returns its id.
pub async fn enqueue(client: &Client, url: &str) -> i64 {
    client
        .query_one("SELECT wf_enqueue($1, '{}')", &[&url])
        .await
        .expect("wf_enqueue")
        .get(0)
}

/// Checkpoints `step` of workflow `id` without output.
pub async fn checkpoint(client: &Client, id: uuid::Uuid, step: &str) {
    client
        .execute("SELECT wf_checkpoint($1, $2)", &[&id, &step])
        .await
        .expect("wf_checkpoint");
}

/// The recorded output of a workflow's step (`wf_step`); JSON `null` when it is not done.
pub async fn step_output(client: &Client, id: uuid::Uuid, step: &str) -> serde_json::Value {
    client
        .query_one("SELECT coalesce(wf_step($1, $2), 'null')", &[&id, &step])
        .await
        .expect("wf_step")
        .get(0)
}

/// Checks, over every row, the invariants between columns that the schema leaves to its
/// writers (see the domains in schema.sql). They hold in every committed state, so any
/// test may call this at any point.
pub async fn assert_invariants(client: &Client) {
    let row = client
        .query_one(
            "SELECT (SELECT count(*) FROM workflow.runs
                      WHERE (status = 'running') <> (finished_at IS NULL)),
                    (SELECT count(*) FROM workflow.outbox
                      WHERE (status = 'pending') <> (finished_at IS NULL)
                         OR (url IS NULL) = (endpoint IS NULL)
                         OR (step IS NOT NULL AND workflow_id IS NULL)
                         OR (status = 'delivered') <> (delivered_at IS NOT NULL)
                         OR (parked IS NOT NULL AND status <> 'pending'))",
            &[],
        )
        .await
        .expect("invariants query");
    let (runs, messages): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(
        (runs, messages),
        (0, 0),
        "rows breaking an invariant (runs, messages)"
    );
}

/// The SQLSTATE of a failed statement.
pub fn sqlstate(error: &tokio_postgres::Error) -> &str {
    error.code().map(|c| c.code()).unwrap_or("no sqlstate")
}

fn as_postgres(bin_dir: &str, tool: &str) -> Command {
    as_postgres_with(bin_dir, tool, &[])
}

/// `tool` run as `postgres` with exactly the given extra environment (sudo resets the rest).
fn as_postgres_with(bin_dir: &str, tool: &str, environment: &[(String, String)]) -> Command {
    let program = Path::new(bin_dir).join(tool);
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        let mut command = Command::new("sudo");
        command.args(["-n", "-u", "postgres", "env"]);
        for (name, value) in environment {
            command.arg(format!("{name}={value}"));
        }
        command.arg(program);
        command
    } else {
        let mut command = Command::new(program);
        command.envs(environment.iter().map(|(k, v)| (k, v)));
        command
    }
}

fn chown_to_postgres(dir: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        Command::new("chown")
            .arg("postgres:postgres")
            .arg(dir)
            .run("chown");
    }
}

fn append(path: &Path, text: &str) {
    use std::io::Write;
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(path)
        .expect("open postgresql.conf");
    file.write_all(text.as_bytes())
        .expect("write postgresql.conf");
}

trait RunChecked {
    fn run(&mut self, what: &str);
}

impl RunChecked for Command {
    fn run(&mut self, what: &str) {
        let output = self.output().unwrap_or_else(|e| panic!("{what}: {e}"));
        assert!(
            output.status.success(),
            "{what} failed: {}\n{}{}",
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
}

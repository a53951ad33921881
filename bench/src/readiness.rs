//! B9 and B10: how fast a workflow that becomes ready is told, and how fast workflows run
//! when they are driven by the extension rather than polled.
//!
//! B9 times a signal's commit to the `workflow_ready` notification at a `LISTEN`
//! connection, and to the push at a handler, against a bare `NOTIFY` commit to its receipt
//! (the floor Postgres itself sets). B10 runs the same 3-step workflow to completion two
//! ways: pushed to a handler in this process (`wf_handler`), and claimed by workers woken
//! by `LISTEN workflow_ready`.

use crate::Sizes;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::sync::{Mutex, Notify};
use tokio_postgres::Client;
use workflow_tests::Cluster;
use workflow_tests::listener::Listener;
use workflow_tests::receiver::Receiver;

const DEADLINE: Duration = Duration::from_secs(60);
/// Connections of B10's push handler, and workers of its claim loop.
const WORKERS: usize = 8;

/// B9's latencies, in milliseconds.
pub struct Told {
    pub listen: Vec<f64>,
    pub push: Vec<f64>,
    pub bare_notify: Vec<f64>,
}

/// Parks a fresh workflow of `name` on a wait for the signal `go`.
async fn parked(client: &Client, name: &str) -> uuid::Uuid {
    client
        .query_one(
            "WITH w AS (SELECT wf_start($1, owner => 'b9') AS id)
             SELECT id FROM w WHERE wf_wait(id, 'go', 'go', owner => 'b9') IS NULL",
            &[&name],
        )
        .await
        .expect("a parked workflow")
        .get(0)
}

/// Commits `sql` (with `$1` = the workflow) and returns when the commit was sent.
async fn commit(client: &Client, sql: &str, id: &uuid::Uuid) -> Instant {
    client.batch_execute("BEGIN").await.unwrap();
    client.execute(sql, &[id]).await.unwrap();
    let committing = Instant::now();
    client.batch_execute("COMMIT").await.unwrap();
    committing
}

pub async fn b9(cluster: &Cluster, client: &Client, sizes: Sizes) -> Told {
    let n = sizes.latency_messages.min(500);
    let mut listener = Listener::start(&cluster.conninfo(), &["workflow_ready", "bare"]).await;
    let mut told = Told {
        listen: Vec::with_capacity(n),
        push: Vec::with_capacity(n),
        bare_notify: Vec::with_capacity(n),
    };
    let signal = "SELECT wf_signal($1, 'go')";
    let run = uuid::Uuid::new_v4().simple();
    for i in 0..n {
        // A name of its own: the dispatcher's looks may announce an earlier one again.
        let name = format!("b9-listen-{run}-{i}");
        let id = parked(client, &name).await;
        let committing = commit(client, signal, &id).await;
        let heard = listener.until(&name, DEADLINE).await.0;
        told.listen.push(ms(heard.at, committing));
    }
    for n in 0..n {
        let payload = format!("bare-{n}");
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute("SELECT pg_notify('bare', $1)", &[&payload])
            .await
            .unwrap();
        let committing = Instant::now();
        client.batch_execute("COMMIT").await.unwrap();
        let heard = listener.until(&payload, DEADLINE).await.0;
        told.bare_notify.push(ms(heard.at, committing));
    }
    let receiver = Receiver::start().await;
    let name = format!("b9-push-{}", uuid::Uuid::new_v4().simple());
    client
        .execute(
            "SELECT wf_handler($1, $2)",
            &[&name, &receiver.url("/pushed")],
        )
        .await
        .unwrap();
    for _ in 0..n {
        let id = parked(client, &name).await;
        let before = receiver.received("/pushed").len();
        let committing = commit(client, signal, &id).await;
        told.push
            .push(ms(push_of(&receiver, id, before).await, committing));
    }
    client
        .execute("SELECT wf_handler_drop($1)", &[&name])
        .await
        .unwrap();
    told
}

/// When the push of workflow `id` arrived, looking at the pushes after the first `seen`
/// (a lease that runs out pushes an earlier workflow again).
async fn push_of(receiver: &Receiver, id: uuid::Uuid, mut seen: usize) -> Instant {
    let id = id.to_string();
    loop {
        let pushes = receiver.wait_for("/pushed", seen + 1, DEADLINE).await;
        for push in &pushes[seen..] {
            let body: serde_json::Value = serde_json::from_slice(&push.body).unwrap_or_default();
            if body["workflow"] == id.as_str() {
                return push.at;
            }
        }
        seen = pushes.len();
    }
}

fn ms(at: Instant, since: Instant) -> f64 {
    at.saturating_duration_since(since).as_secs_f64() * 1000.0
}

/// The 3 steps and the completion, fenced by `owner`.
const STEPS: &str =
    "SELECT wf_checkpoint($1, 'reserve', NULL, $2), wf_checkpoint($1, 'charge', NULL, $2),
                            wf_checkpoint($1, 'ship', NULL, $2), wf_complete($1, NULL, $2)";

async fn run_steps(client: &Client, id: uuid::Uuid, owner: &str) {
    client
        .execute(STEPS, &[&id, &owner])
        .await
        .expect("the steps of a claimed workflow");
}

/// Connections a handler or the workers share, one workflow at a time each.
struct Pool(Vec<Mutex<Client>>, AtomicUsize);

impl Pool {
    async fn new(cluster: &Cluster) -> Arc<Pool> {
        let mut clients = Vec::with_capacity(WORKERS);
        for _ in 0..WORKERS {
            clients.push(Mutex::new(cluster.connect().await));
        }
        Arc::new(Pool(clients, AtomicUsize::new(0)))
    }

    async fn run(&self, id: uuid::Uuid, owner: &str) {
        let next = self.1.fetch_add(1, Ordering::Relaxed) % self.0.len();
        run_steps(&*self.0[next].lock().await, id, owner).await;
    }
}

/// A push handler in this process: each push runs the workflow's steps as the pushed owner,
/// then answers 200.
async fn serve_pushes(pool: Arc<Pool>) -> String {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", 0))
        .await
        .unwrap();
    let url = format!("http://{}/run", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let _ = stream.set_nodelay(true);
            let pool = Arc::clone(&pool);
            tokio::spawn(async move {
                let service = service_fn(move |request: Request<hyper::body::Incoming>| {
                    let pool = Arc::clone(&pool);
                    async move {
                        let body = request.into_body().collect().await?.to_bytes();
                        let push: serde_json::Value =
                            serde_json::from_slice(&body).unwrap_or_default();
                        if let (Some(id), Some(owner)) =
                            (push["workflow"].as_str(), push["owner"].as_str())
                        {
                            pool.run(id.parse().unwrap(), owner).await;
                        }
                        Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
                    }
                });
                let _ = http1::Builder::new()
                    .keep_alive(true)
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    url
}

/// Starts `n` workflows of `name` with `start` (one statement, `$1` the name) and returns
/// the workflows completed per second, from the first start to the last completion.
async fn started_to_completed(client: &Client, name: &str, start: &str, n: usize) -> f64 {
    let began = Instant::now();
    for _ in 0..n {
        client.execute(start, &[&name]).await.expect("a start");
    }
    loop {
        let done: i64 = client
            .query_one(
                "SELECT count(*) FROM workflow.runs WHERE name = $1 AND status = 'completed'",
                &[&name],
            )
            .await
            .unwrap()
            .get(0);
        if done as usize >= n {
            return n as f64 / began.elapsed().as_secs_f64();
        }
        assert!(began.elapsed() < DEADLINE * 5, "B10: {done} of {n} done");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// B10: (pushed, claimed) workflows per second, one pair per run.
pub async fn b10(cluster: &Cluster, client: &Client, sizes: Sizes) -> (Vec<f64>, Vec<f64>) {
    let n = sizes.latency_messages * 2;
    let (mut pushed, mut claimed) = (Vec::new(), Vec::new());
    let pool = Pool::new(cluster).await;
    let url = serve_pushes(Arc::clone(&pool)).await;
    for _ in 0..sizes.runs {
        let name = format!("b10-push-{}", uuid::Uuid::new_v4().simple());
        client
            .execute("SELECT wf_handler($1, $2)", &[&name, &url])
            .await
            .unwrap();
        pushed.push(started_to_completed(client, &name, "SELECT wf_start($1)", n).await);
        client
            .execute("SELECT wf_handler_drop($1)", &[&name])
            .await
            .unwrap();

        let name = format!("b10-claim-{}", uuid::Uuid::new_v4().simple());
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let workers = claim_loop(cluster, &name, Arc::clone(&stop)).await;
        // Queued ready at once: the sleep that is over at once notifies at commit.
        let start =
            "SELECT wf_sleep(wf_start($1, owner => 'producer'), 'queued', now(), 'producer')";
        claimed.push(started_to_completed(client, &name, start, n).await);
        stop.store(true, Ordering::Relaxed);
        for worker in workers {
            let _ = worker.await;
        }
    }
    client
        .batch_execute("TRUNCATE workflow.outbox, workflow.delivery_attempts")
        .await
        .unwrap();
    (pushed, claimed)
}

/// `WORKERS` workers that claim ready workflows of `name` and run them, woken by one
/// `LISTEN workflow_ready` connection whenever a notification names it.
async fn claim_loop(
    cluster: &Cluster,
    name: &str,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<tokio::task::JoinHandle<()>> {
    let ready = Arc::new(Notify::new());
    let mut listener = Listener::start(&cluster.conninfo(), &["workflow_ready"]).await;
    let wake = Arc::clone(&ready);
    let watched = name.to_string();
    let watch_stop = Arc::clone(&stop);
    let mut tasks = vec![tokio::spawn(async move {
        while !watch_stop.load(Ordering::Relaxed) {
            if let Ok(heard) = tokio::time::timeout(
                Duration::from_millis(100),
                listener.until(&watched, DEADLINE),
            )
            .await
            {
                let _ = heard;
                wake.notify_waiters();
            }
        }
    })];
    for worker in 0..WORKERS {
        let client = cluster.connect().await;
        let (name, ready, stop) = (name.to_string(), Arc::clone(&ready), Arc::clone(&stop));
        tasks.push(tokio::spawn(async move {
            let owner = format!("worker-{worker}");
            while !stop.load(Ordering::Relaxed) {
                let ids: Vec<uuid::Uuid> = client
                    .query("SELECT wf_claim($1, $2, max => 10)", &[&name, &owner])
                    .await
                    .expect("a claim")
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                if ids.is_empty() {
                    // Told, or a short nap: a notification may come between the claim and
                    // the wait.
                    let _ = tokio::time::timeout(Duration::from_millis(50), ready.notified()).await;
                    continue;
                }
                for id in ids {
                    run_steps(&client, id, &owner).await;
                }
            }
        }));
    }
    tasks
}

//! The HTTP side of the dispatcher: a tokio runtime and a reqwest client on threads of
//! their own. Nothing here touches Postgres. Jobs come in through [`Sender::send`];
//! outcomes go back through a channel, and a byte on a socket pair wakes the main thread,
//! which waits on that socket beside its latch (see [`Wake`]).

use super::claim::Job;
use super::limits::Limits;
use crate::delivery::{signing, target};
use std::io::Write;
use std::net::{IpAddr, SocketAddr};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime};

/// Most of a response body that is read; the rest is not waited for.
pub const MAX_RESPONSE_BYTES: usize = 64 * 1024;
const HTTP_THREADS: usize = 2;
const USER_AGENT: &str = concat!("workflow/", env!("CARGO_PKG_VERSION"));

/// What one attempt produced.
#[derive(Debug)]
pub struct Outcome {
    pub id: i64,
    pub attempt: i32,
    pub max_attempts: i32,
    pub named_endpoint: bool,
    pub durable_step: bool,
    pub ordered: bool,
    pub replaces_attempt: bool,
    pub started_at: SystemTime,
    pub duration: Duration,
    /// `None` when no response arrived.
    pub status: Option<u16>,
    pub error: Option<String>,
    /// Set when the destination was refused before any request (SSRF guard): retrying
    /// cannot help until the settings change.
    pub refused: bool,
    pub body: Option<String>,
    pub retry_after: Option<Duration>,
    /// Response headers, kept only for durable steps, which checkpoint them.
    pub headers: Option<serde_json::Value>,
    /// Not attempted: the lease ran out while the job waited for a connection or its
    /// destination's turn, or the dispatcher is stopping. The message is handed back, its
    /// attempt not counted.
    pub released: bool,
    pub destination: Arc<str>,
    pub tenant: Arc<str>,
    pub retry_schedule: Option<Arc<[Duration]>>,
    pub endpoint_failing: bool,
}

impl Outcome {
    /// An outcome for `job` before anything was sent.
    fn for_job(job: &Job) -> Outcome {
        Outcome {
            id: job.id,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            named_endpoint: job.named_endpoint,
            durable_step: job.durable_step,
            ordered: job.ordered,
            replaces_attempt: job.replaces_attempt,
            started_at: SystemTime::now(),
            duration: Duration::ZERO,
            status: None,
            error: None,
            refused: false,
            body: None,
            retry_after: None,
            headers: None,
            released: false,
            destination: Arc::clone(&job.destination),
            tenant: Arc::clone(&job.tenant),
            retry_schedule: job.retry_schedule.clone(),
            endpoint_failing: job.endpoint_failing,
        }
    }

    fn released(job: &Job) -> Outcome {
        Outcome {
            released: true,
            ..Outcome::for_job(job)
        }
    }
}

pub struct Sender {
    runtime: tokio::runtime::Runtime,
    /// One permit per request allowed in flight (`workflow.max_concurrency`); claimed jobs
    /// beyond that wait for a permit.
    permits: Arc<tokio::sync::Semaphore>,
    max_concurrency: usize,
    /// Each destination's own limits, taken before a permit of `permits`.
    limits: Arc<Limits>,
    client: reqwest::Client,
    allow_private: Arc<AtomicBool>,
    results: mpsc::Receiver<Outcome>,
    results_tx: mpsc::Sender<Outcome>,
    wake_read: UnixStream,
    wake: Arc<Wake>,
}

/// The HTTP side's half of the wake-up. A byte is written only when none is pending since
/// the main thread last looked: while it is busy with a round, outcomes that arrive cost
/// no system call each (one `sendto` per delivery was a tenth of the HTTP threads' calls).
struct Wake {
    socket: UnixStream,
    pending: AtomicBool,
}

impl Wake {
    fn notify(&self) {
        if !self.pending.swap(true, Ordering::SeqCst) {
            // A full socket buffer already holds a wake-up.
            let _ = (&self.socket).write(&[1]);
        }
    }
}

impl Sender {
    /// Builds the runtime and the client. Call in the worker, after fork, never in the
    /// postmaster.
    pub fn start(allow_private_networks: bool, max_concurrency: usize) -> std::io::Result<Sender> {
        let allow_private = Arc::new(AtomicBool::new(allow_private_networks));
        // Threads inherit the signal mask of their creator: with every signal blocked here
        // and in each thread tokio starts, Postgres' handlers only ever run on the main thread.
        let runtime = with_signals_blocked(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(HTTP_THREADS)
                .thread_name("workflow-http")
                .on_thread_start(block_signals_in_this_thread)
                .enable_all()
                .build()
        })?;
        let client = reqwest::Client::builder()
            // Whatever HTTP(S)_PROXY or ALL_PROXY the server was started with: through a
            // proxy, the address guard would check only the proxy's address.
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .dns_resolver(Arc::new(GuardedResolver {
                allow_private: Arc::clone(&allow_private),
            }))
            .pool_max_idle_per_host(max_concurrency)
            .tcp_nodelay(true)
            .user_agent(USER_AGENT)
            .build()
            .map_err(std::io::Error::other)?;
        let (results_tx, results) = mpsc::channel();
        let (wake_read, wake_write) = UnixStream::pair()?;
        wake_read.set_nonblocking(true)?;
        wake_write.set_nonblocking(true)?;
        Ok(Sender {
            runtime,
            permits: Arc::new(tokio::sync::Semaphore::new(max_concurrency)),
            max_concurrency,
            limits: Arc::new(Limits::default()),
            client,
            allow_private,
            results,
            results_tx,
            wake_read,
            wake: Arc::new(Wake {
                socket: wake_write,
                pending: AtomicBool::new(false),
            }),
        })
    }

    pub fn set_allow_private_networks(&self, allow: bool) {
        self.allow_private.store(allow, Ordering::Relaxed);
    }

    /// Applies a reloaded `workflow.max_concurrency`; a decrease takes effect as requests
    /// in flight finish.
    pub fn set_max_concurrency(&mut self, max: usize) {
        if max > self.max_concurrency {
            self.permits.add_permits(max - self.max_concurrency);
        } else if max < self.max_concurrency {
            let permits = Arc::clone(&self.permits);
            let surplus = (self.max_concurrency - max) as u32;
            // Take the surplus permits as they come free, and keep them.
            self.runtime.spawn(async move {
                if let Ok(taken) = permits.acquire_many(surplus).await {
                    taken.forget();
                }
            });
        }
        self.max_concurrency = max;
    }

    /// The socket that becomes readable when outcomes are waiting.
    pub fn wake_fd(&self) -> RawFd {
        self.wake_read.as_raw_fd()
    }

    pub fn send(&self, job: Job) {
        let client = self.client.clone();
        let allow_private = self.allow_private.load(Ordering::Relaxed);
        let permits = Arc::clone(&self.permits);
        let destination = self
            .limits
            .get(&job.destination, job.concurrency, job.rate_per_second);
        let report = Report {
            fallback: Some(Outcome::released(&job)),
            results: self.results_tx.clone(),
            wake: Arc::clone(&self.wake),
        };
        self.runtime.spawn(async move {
            // The lease must outlast the request, or another claim may send the message
            // too: a job that cannot start in time is handed back while it is still ours.
            let latest_start = job
                .lease_deadline
                .checked_sub(job.timeout)
                .unwrap_or_else(Instant::now);
            // The destination's slot first, so that a job waiting for its destination
            // holds none of the slots the other destinations share.
            let Some(_slot) = destination.slot(&job.tenant, latest_start).await else {
                return report.deliver(Outcome::released(&job));
            };
            // Its turn under a rate limit next, waited for without a shared slot too.
            let Some(turn) = destination.turn(latest_start) else {
                return report.deliver(Outcome::released(&job));
            };
            if turn > Instant::now() {
                tokio::time::sleep_until(turn.into()).await;
            }
            let waited = tokio::time::timeout_at(latest_start.into(), permits.acquire_owned());
            // The semaphore is closed when the dispatcher stops: a job not started goes back.
            let Ok(Ok(_permit)) = waited.await else {
                return report.deliver(Outcome::released(&job));
            };
            let outcome = attempt(&client, job, allow_private).await;
            report.deliver(outcome);
        });
    }

    /// Starts nothing more: jobs still waiting for a connection come back released.
    pub fn stop_starting(&self) {
        self.permits.close();
    }

    /// Every outcome that has arrived, without waiting.
    pub fn finished(&self) -> Vec<Outcome> {
        // In this order: a byte written after the socket is drained stays there and wakes
        // the next wait, and an outcome sent before re-arming is read from the channel
        // (a swap, not a store: reading the sender's swap orders its send before ours).
        let mut drained = [0u8; 256];
        while matches!(std::io::Read::read(&mut &self.wake_read, &mut drained), Ok(n) if n > 0) {}
        self.wake.pending.swap(false, Ordering::SeqCst);
        self.results.try_iter().collect()
    }

    /// Stops the runtime without waiting for requests still in flight: their messages stay
    /// leased and are sent again when the lease runs out.
    pub fn shutdown(self) {
        self.runtime.shutdown_timeout(Duration::ZERO);
    }
}

/// Hands one job's outcome back to the main thread, exactly once: if the task ends without
/// one (a panic, the runtime shutting down), dropping the report hands back its fallback,
/// so the main thread always learns that the job ended.
struct Report {
    fallback: Option<Outcome>,
    results: mpsc::Sender<Outcome>,
    wake: Arc<Wake>,
}

impl Report {
    fn deliver(mut self, outcome: Outcome) {
        self.fallback = None;
        self.hand_back(outcome);
    }

    fn hand_back(&self, outcome: Outcome) {
        // The receiver lives as long as the dispatcher; if it is gone, so are we.
        let _ = self.results.send(outcome);
        self.wake.notify();
    }
}

impl Drop for Report {
    fn drop(&mut self) {
        if let Some(outcome) = self.fallback.take() {
            self.hand_back(outcome);
        }
    }
}

async fn attempt(client: &reqwest::Client, job: Job, allow_private: bool) -> Outcome {
    let clock = Instant::now();
    let mut outcome = Outcome::for_job(&job);
    let started_at = outcome.started_at;
    if let Some(reason) = &job.unsendable {
        outcome.refused = true;
        outcome.error = Some(reason.clone());
        return outcome;
    }
    match request(client, &job, allow_private, started_at).await {
        Ok(response) => {
            outcome.status = Some(response.status);
            outcome.body = Some(response.body);
            outcome.retry_after = response.retry_after;
            outcome.headers = job.durable_step.then_some(response.headers);
            outcome.error = response.body_error;
        }
        Err(Failure::Refused(reason)) => {
            outcome.refused = true;
            outcome.error = Some(reason);
        }
        Err(Failure::Transport(reason)) => outcome.error = Some(reason),
    }
    outcome.error = outcome.error.map(storable);
    outcome.duration = clock.elapsed();
    outcome
}

/// Text Postgres can store: it has no NUL character, which a receiver can send in a body.
pub fn storable(text: String) -> String {
    if text.contains('\0') {
        text.replace('\0', "\u{FFFD}")
    } else {
        text
    }
}

struct Response {
    status: u16,
    body: String,
    body_error: Option<String>,
    retry_after: Option<Duration>,
    headers: serde_json::Value,
}

enum Failure {
    Refused(String),
    Transport(String),
}

async fn request(
    client: &reqwest::Client,
    job: &Job,
    allow_private: bool,
    now: SystemTime,
) -> Result<Response, Failure> {
    let url = target::parse_url(&job.url).map_err(|e| Failure::Refused(format!("the URL {e}")))?;
    if !allow_private {
        let literal: Option<IpAddr> = match url.host() {
            Some(url::Host::Ipv4(ip)) => Some(ip.into()),
            Some(url::Host::Ipv6(ip)) => Some(ip.into()),
            _ => None,
        };
        if let Some(ip) = literal.filter(|ip| !target::is_public(*ip)) {
            return Err(Failure::Refused(refusal(&ip.to_string())));
        }
    }
    let timestamp = now
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs() as i64;
    let mut builder = client.post(url).timeout(job.timeout);
    // Caller headers first, so that ours, set after, win even if one slipped through.
    for (name, value) in &job.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    builder = builder
        .header("content-type", "application/json")
        .header("webhook-id", &job.webhook_id)
        .header("webhook-timestamp", timestamp.to_string())
        .header(
            "idempotency-key",
            job.idempotency_key.as_deref().unwrap_or(&job.webhook_id),
        );
    if let Some(signature) = signing::signature_header(
        &job.secrets,
        &job.webhook_id,
        timestamp,
        job.body.as_bytes(),
    ) {
        builder = builder.header("webhook-signature", signature);
    }
    let mut response = builder
        .body(job.body.clone())
        .send()
        .await
        .map_err(|e| classify(&e))?;

    let status = response.status().as_u16();
    let retry_after = response
        .headers()
        .get(reqwest::header::RETRY_AFTER)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| crate::delivery::retry::parse_retry_after(v, SystemTime::now()));
    let headers = if job.durable_step {
        let map: serde_json::Map<String, serde_json::Value> = response
            .headers()
            .iter()
            .filter_map(|(k, v)| {
                Some((
                    k.as_str().to_string(),
                    serde_json::Value::String(v.to_str().ok()?.to_string()),
                ))
            })
            .collect();
        serde_json::Value::Object(map)
    } else {
        serde_json::Value::Null
    };
    let mut body = Vec::new();
    let mut body_error = None;
    loop {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = MAX_RESPONSE_BYTES - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
                if body.len() >= MAX_RESPONSE_BYTES {
                    break;
                }
            }
            Ok(None) => break,
            // The status already decided the outcome; a broken body is only worth noting.
            Err(e) => {
                body_error = Some(format!(
                    "reading the response body failed: {}",
                    describe(&e)
                ));
                break;
            }
        }
    }
    Ok(Response {
        status,
        body: storable(String::from_utf8_lossy(&body).into_owned()),
        body_error,
        retry_after,
        headers,
    })
}

fn classify(error: &reqwest::Error) -> Failure {
    if let Some(refused) = source_chain(error).find_map(|e| e.downcast_ref::<Refused>()) {
        return Failure::Refused(refused.0.clone());
    }
    Failure::Transport(describe(error))
}

fn describe(error: &reqwest::Error) -> String {
    let kind = if error.is_timeout() {
        "timed out"
    } else if error.is_connect() {
        "could not connect"
    } else {
        "request failed"
    };
    // reqwest's own message names the URL; the causes say what actually went wrong.
    let causes: Vec<String> = source_chain(error).skip(1).map(|e| e.to_string()).collect();
    if causes.is_empty() {
        format!("{kind}: {error}")
    } else {
        format!("{kind}: {}", causes.join(": "))
    }
}

fn source_chain<'a>(
    error: &'a (dyn std::error::Error + 'static),
) -> impl Iterator<Item = &'a (dyn std::error::Error + 'static)> {
    std::iter::successors(Some(error), |e| e.source())
}

fn refusal(what: &str) -> String {
    format!(
        "refused: {what} is not a public address (loopback, private, link-local or metadata); \
         set workflow.allow_private_networks = on to allow it"
    )
}

#[derive(Debug)]
struct Refused(String);

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Refused {}

/// Resolves host names and, unless private networks are allowed, keeps only public
/// addresses: the check is on what the name resolves to, so DNS cannot smuggle a
/// request into the internal network.
struct GuardedResolver {
    allow_private: Arc<AtomicBool>,
}

impl reqwest::dns::Resolve for GuardedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let allow_private = self.allow_private.load(Ordering::Relaxed);
        Box::pin(async move {
            let host = name.as_str().to_string();
            let found: Vec<SocketAddr> =
                tokio::net::lookup_host((host.as_str(), 0)).await?.collect();
            let usable: Vec<SocketAddr> = found
                .into_iter()
                .filter(|addr| allow_private || target::is_public(addr.ip()))
                .collect();
            if usable.is_empty() {
                let error: Box<dyn std::error::Error + Send + Sync> =
                    Box::new(Refused(refusal(&host)));
                return Err(error);
            }
            let addrs: reqwest::dns::Addrs = Box::new(usable.into_iter());
            Ok(addrs)
        })
    }
}

fn with_signals_blocked<T>(f: impl FnOnce() -> T) -> T {
    // SAFETY: plain POSIX signal mask calls on the current thread with valid sets.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        let mut previous: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, &mut previous);
        let result = f();
        libc::pthread_sigmask(libc::SIG_SETMASK, &previous, std::ptr::null_mut());
        result
    }
}

fn block_signals_in_this_thread() {
    // SAFETY: as above.
    unsafe {
        let mut all: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut all);
        libc::pthread_sigmask(libc::SIG_BLOCK, &all, std::ptr::null_mut());
    }
}

//! A real HTTP receiver for webhook tests: every request is recorded with its arrival time,
//! and each path answers from a script of replies (200 once the script is used up). It can
//! also go down whole, refusing connections, and come back on the same port (an outage).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::header::HeaderMap;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::{Notify, watch};

/// How the receiver answers one request.
#[derive(Clone, Debug)]
pub enum Reply {
    Status(u16),
    /// A status with extra response headers and a body.
    Full {
        status: u16,
        headers: Vec<(String, String)>,
        body: String,
    },
    /// Waits, then answers with the status.
    After(Duration, u16),
    /// Drops the connection without answering.
    Reset,
}

#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

struct Shared {
    received: Mutex<Vec<Received>>,
    scripts: Mutex<HashMap<String, VecDeque<Reply>>>,
    /// The reply of a path whose script is used up (200 when none is set).
    always: Mutex<HashMap<String, Reply>>,
    /// Requests of each path being answered right now, and the most there ever were.
    in_flight: Mutex<HashMap<String, (usize, usize)>>,
    /// Each answered request's path, when it arrived and when its answer was ready.
    answered: Mutex<Vec<(String, Instant, Instant)>>,
    arrived: Notify,
    /// Whether the receiver should be up (see [`Receiver::stop_listening`]).
    up: watch::Sender<bool>,
    /// Whether its port is open right now: what a switch waits for.
    listening: watch::Sender<bool>,
}

/// Counts a request as in flight until it is answered or its connection goes away.
struct InFlight {
    shared: Arc<Shared>,
    path: String,
}

impl InFlight {
    fn new(shared: &Arc<Shared>, path: &str) -> InFlight {
        let mut counts = shared.in_flight.lock().unwrap();
        let entry = counts.entry(path.to_string()).or_default();
        entry.0 += 1;
        entry.1 = entry.1.max(entry.0);
        InFlight {
            shared: Arc::clone(shared),
            path: path.to_string(),
        }
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        if let Some(entry) = self.shared.in_flight.lock().unwrap().get_mut(&self.path) {
            entry.0 -= 1;
        }
    }
}

pub struct Receiver {
    addr: SocketAddr,
    shared: Arc<Shared>,
}

impl Receiver {
    /// Listens on 127.0.0.1, on a free port, for the life of the test runtime.
    pub async fn start() -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind receiver");
        let addr = listener.local_addr().expect("receiver address");
        let shared = Arc::new(Shared {
            received: Mutex::default(),
            scripts: Mutex::default(),
            always: Mutex::default(),
            in_flight: Mutex::default(),
            answered: Mutex::default(),
            arrived: Notify::new(),
            up: watch::Sender::new(true),
            listening: watch::Sender::new(true),
        });
        tokio::spawn(accept(Arc::clone(&shared), addr, listener));
        Receiver { addr, shared }
    }

    /// Goes down whole: closes the port, so that new connections are refused, and drops
    /// every request that comes on a connection opened before, unanswered and unrecorded.
    /// Returns once the port is closed.
    pub async fn stop_listening(&self) {
        self.shared.up.send_replace(false);
        self.until_listening(false).await;
    }

    /// Comes back after [`Receiver::stop_listening`], on the same port; returns once it
    /// accepts connections again.
    pub async fn listen_again(&self) {
        self.shared.up.send_replace(true);
        self.until_listening(true).await;
    }

    async fn until_listening(&self, open: bool) {
        let mut listening = self.shared.listening.subscribe();
        let switched = listening.wait_for(|now| *now == open);
        tokio::time::timeout(Duration::from_secs(15), switched)
            .await
            .unwrap_or_else(|_| {
                let switch = if open { "open" } else { "close" };
                panic!("the receiver's port did not {switch} within 15 s")
            })
            .expect("the receiver's accepting task");
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replies for the next requests to `path`, in order.
    pub fn script(&self, path: &str, replies: impl IntoIterator<Item = Reply>) {
        self.shared
            .scripts
            .lock()
            .unwrap()
            .entry(path.to_string())
            .or_default()
            .extend(replies);
    }

    /// How `path` answers once its script is used up.
    pub fn always(&self, path: &str, reply: Reply) {
        self.shared
            .always
            .lock()
            .unwrap()
            .insert(path.to_string(), reply);
    }

    /// How many requests to `path` are being answered right now.
    pub fn in_flight(&self, path: &str) -> usize {
        self.shared
            .in_flight
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |(now, _)| *now)
    }

    /// The most requests to `path` that were being answered at once.
    pub fn max_in_flight(&self, path: &str) -> usize {
        self.shared
            .in_flight
            .lock()
            .unwrap()
            .get(path)
            .map_or(0, |(_, max)| *max)
    }

    /// How long the receiver took to answer each request to `path` it answered, in order:
    /// from its arrival to its answer being ready, by the receiver's clock.
    pub fn answer_times(&self, path: &str) -> Vec<(Instant, Duration)> {
        self.shared
            .answered
            .lock()
            .unwrap()
            .iter()
            .filter(|(p, _, _)| p == path)
            .map(|(_, arrived, answered)| (*arrived, answered.duration_since(*arrived)))
            .collect()
    }

    pub fn received(&self, path: &str) -> Vec<Received> {
        self.shared
            .received
            .lock()
            .unwrap()
            .iter()
            .filter(|r| r.path == path)
            .cloned()
            .collect()
    }

    /// Waits until `path` has received at least `count` requests; panics after `deadline`.
    pub async fn wait_for(&self, path: &str, count: usize, deadline: Duration) -> Vec<Received> {
        let start = Instant::now();
        loop {
            let notified = self.shared.arrived.notified();
            let got = self.received(path);
            if got.len() >= count {
                return got;
            }
            let left = deadline.checked_sub(start.elapsed()).unwrap_or_else(|| {
                panic!(
                    "{path}: {} of {count} requests arrived within {deadline:?}",
                    got.len()
                )
            });
            let _ = tokio::time::timeout(left, notified).await;
        }
    }
}

/// Enqueues one message to `path` of `receiver` in its own transaction and returns the time
/// from sending COMMIT to the message's arrival, which must be the `path`'s request number
/// `arrival` (0-based).
pub async fn commit_to_receipt(
    client: &tokio_postgres::Client,
    receiver: &Receiver,
    path: &str,
    arrival: usize,
    deadline: Duration,
) -> Duration {
    client.batch_execute("BEGIN").await.expect("BEGIN");
    client
        .execute("SELECT wf_enqueue($1, '{}')", &[&receiver.url(path)])
        .await
        .expect("wf_enqueue");
    let committing = Instant::now();
    client.batch_execute("COMMIT").await.expect("COMMIT");
    let arrived = receiver.wait_for(path, arrival + 1, deadline).await[arrival].at;
    arrived.saturating_duration_since(committing)
}

/// Accepts connections while the receiver is up; closes its port while it is down, and
/// opens the same one again when it comes back.
async fn accept(shared: Arc<Shared>, addr: SocketAddr, listener: TcpListener) {
    let mut listener = Some(listener);
    let mut up = shared.up.subscribe();
    loop {
        // What the receiver should be now: also a switch made before this task subscribed.
        let want_up = *up.borrow_and_update();
        if want_up && listener.is_none() {
            listener = Some(bind_again(addr).await);
            shared.listening.send_replace(true);
        } else if !want_up && listener.is_some() {
            listener = None;
            shared.listening.send_replace(false);
        }
        let Some(open) = &listener else {
            if up.changed().await.is_err() {
                return;
            }
            continue;
        };
        tokio::select! {
            accepted = open.accept() => {
                let Ok((stream, _)) = accepted else {
                    continue;
                };
                let shared = Arc::clone(&shared);
                tokio::spawn(async move {
                    let service = service_fn(move |request| handle(Arc::clone(&shared), request));
                    // A Reset reply ends the connection with an error: expected.
                    let _ = http1::Builder::new()
                        .keep_alive(true)
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
            changed = up.changed() => {
                if changed.is_err() {
                    return;
                }
            }
        }
    }
}

/// Listens on `addr` again, the port this receiver had: with `SO_REUSEADDR`, so that its
/// closed connections do not keep it, and retried should a client's socket hold it briefly.
async fn bind_again(addr: SocketAddr) -> TcpListener {
    let start = Instant::now();
    loop {
        let bound = TcpSocket::new_v4().and_then(|socket| {
            socket.set_reuseaddr(true)?;
            socket.bind(addr)?;
            socket.listen(1024)
        });
        match bound {
            Ok(listener) => return listener,
            Err(e) if start.elapsed() > Duration::from_secs(10) => {
                panic!("listen on {addr} again: {e}")
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
        }
    }
}

async fn handle(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::io::Error> {
    if !*shared.up.borrow() {
        return Err(std::io::Error::other("the receiver is down"));
    }
    let at = Instant::now();
    let path = request.uri().path().to_string();
    let _in_flight = InFlight::new(&shared, &path);
    let headers = request.headers().clone();
    let body = request
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    shared.received.lock().unwrap().push(Received {
        path: path.clone(),
        headers,
        body,
        at,
    });
    shared.arrived.notify_waiters();

    let reply = shared
        .scripts
        .lock()
        .unwrap()
        .get_mut(&path)
        .and_then(VecDeque::pop_front)
        .or_else(|| shared.always.lock().unwrap().get(&path).cloned());
    let (status, extra, body) = match reply.unwrap_or(Reply::Status(200)) {
        Reply::Status(status) => (status, Vec::new(), String::new()),
        Reply::Full {
            status,
            headers,
            body,
        } => (status, headers, body),
        Reply::After(delay, status) => {
            tokio::time::sleep(delay).await;
            (status, Vec::new(), String::new())
        }
        Reply::Reset => return Err(std::io::Error::other("scripted connection reset")),
    };
    shared
        .answered
        .lock()
        .unwrap()
        .push((path, at, Instant::now()));
    let mut response = Response::builder().status(status);
    for (name, value) in extra {
        response = response.header(name, value);
    }
    Ok(response
        .body(Full::new(Bytes::from(body)))
        .expect("valid scripted response"))
}

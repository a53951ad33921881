//! The bare client baseline: the same HTTP stack as the dispatcher (reqwest on tokio), the
//! same concurrency and the same kind of request, with no database at all.

use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

pub struct BareRun {
    pub elapsed: Duration,
    /// User + system CPU of this process for the run.
    pub cpu: Duration,
}

pub async fn run(url: &str, requests: usize, concurrency: usize) -> BareRun {
    let client = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .pool_max_idle_per_host(concurrency)
        .tcp_nodelay(true)
        .build()
        .expect("HTTP client");
    let permits = Arc::new(Semaphore::new(concurrency));
    let cpu_before = crate::cpu_of_self();
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(requests);
    for n in 0..requests {
        let permit = Arc::clone(&permits)
            .acquire_owned()
            .await
            .expect("semaphore");
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let body = format!(r#"{{"bench":"bare","n":{n}}}"#);
            let response = client
                .post(url)
                .header("content-type", "application/json")
                .header("webhook-id", format!("msg_bare{n}"))
                .body(body)
                .send()
                .await;
            if let Ok(response) = response {
                let _ = response.bytes().await;
            }
            drop(permit);
        }));
    }
    for task in tasks {
        let _ = task.await;
    }
    BareRun {
        elapsed: started.elapsed(),
        cpu: crate::cpu_of_self() - cpu_before,
    }
}

/// One request's latency, for the latency baseline.
pub async fn one(client: &reqwest::Client, url: &str) -> Duration {
    let started = Instant::now();
    if let Ok(response) = client
        .post(url)
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
    {
        let _ = response.bytes().await;
    }
    started.elapsed()
}

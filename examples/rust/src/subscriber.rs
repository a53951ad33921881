//! A webhook subscriber: it verifies each request's Standard Webhooks signature with its
//! endpoint's secret and keeps each event once by `webhook-id` (delivery is at least once).

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use standardwebhooks::Webhook;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use tokio::net::TcpListener;

#[derive(Default)]
pub struct Events {
    /// The verified events by `webhook-id`.
    pub by_id: HashMap<String, serde_json::Value>,
    pub rejected: usize,
}

pub struct Subscriber {
    pub url: String,
    /// Set once the endpoint is registered and its secret generated.
    pub secret: Arc<OnceLock<String>>,
    pub events: Arc<Mutex<Events>>,
}

impl Subscriber {
    pub async fn start() -> std::io::Result<Subscriber> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let url = format!("http://{}/events", listener.local_addr()?);
        let secret: Arc<OnceLock<String>> = Arc::default();
        let events: Arc<Mutex<Events>> = Arc::default();
        let (serving_secret, serving_events) = (Arc::clone(&secret), Arc::clone(&events));
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (secret, events) = (Arc::clone(&serving_secret), Arc::clone(&serving_events));
                tokio::spawn(async move {
                    let service = service_fn(move |request| {
                        receive(Arc::clone(&secret), Arc::clone(&events), request)
                    });
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        Ok(Subscriber {
            url,
            secret,
            events,
        })
    }

    pub fn count(&self) -> usize {
        self.events.lock().unwrap().by_id.len()
    }
}

async fn receive(
    secret: Arc<OnceLock<String>>,
    events: Arc<Mutex<Events>>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let headers = request.headers().clone();
    let body = request.into_body().collect().await?.to_bytes();
    let verified = secret
        .get()
        .and_then(|secret| Webhook::new(secret).ok())
        .is_some_and(|webhook| webhook.verify(&body, &headers).is_ok());
    let mut events = events.lock().unwrap();
    let status = match (verified, headers.get("webhook-id")) {
        (true, Some(id)) => {
            let id = id.to_str().unwrap_or_default().to_owned();
            let event = serde_json::from_slice(&body).unwrap_or_default();
            events.by_id.entry(id).or_insert(event);
            StatusCode::OK
        }
        _ => {
            events.rejected += 1;
            StatusCode::UNAUTHORIZED
        }
    };
    let mut response = Response::new(Full::new(Bytes::new()));
    *response.status_mut() = status;
    Ok(response)
}

//! The demo's webhook receiver: verifies each request's Standard Webhooks signature with
//! the `standardwebhooks` crate (as any receiver would) and prints what it got.
//!
//! Usage: demo-receiver <port> <whsec_secret>

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::io::Write;
use std::sync::Arc;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(port), Some(secret)) = (args.next(), args.next()) else {
        return Err("usage: demo-receiver <port> <whsec_secret>".into());
    };
    let webhook = Arc::new(standardwebhooks::Webhook::new(&secret)?);
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port.parse::<u16>()?)).await?;
    println!("receiver listening on http://127.0.0.1:{port}/");
    loop {
        let (stream, _) = listener.accept().await?;
        let webhook = Arc::clone(&webhook);
        tokio::spawn(async move {
            let service = service_fn(move |request| receive(Arc::clone(&webhook), request));
            let _ = http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn receive(
    webhook: Arc<standardwebhooks::Webhook>,
    request: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let headers = request.headers().clone();
    let body = request.into_body().collect().await?.to_bytes();
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string()
    };
    let verdict = webhook.verify(&body, &headers);
    println!(
        "receiver got {} (webhook-id {}, idempotency-key {}): signature {}\n  body: {}",
        headers
            .get("webhook-signature")
            .map_or("an unsigned webhook", |_| "a signed webhook"),
        header("webhook-id"),
        header("idempotency-key"),
        if verdict.is_ok() {
            "verified"
        } else {
            "INVALID"
        },
        String::from_utf8_lossy(&body)
    );
    let _ = std::io::stdout().flush();
    let status = if verdict.is_ok() { 200 } else { 401 };
    Ok(Response::builder()
        .status(status)
        .body(Full::new(Bytes::new()))
        .expect("static response"))
}

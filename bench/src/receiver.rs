//! The benchmark receiver: answers every POST with 200 after a fixed delay, as fast as it
//! can otherwise. Runs as its own process so that its CPU is nobody else's.

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use std::time::Duration;

pub async fn serve(port: u16, delay: Duration) -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", port)).await?;
    loop {
        let (stream, _) = listener.accept().await?;
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = service_fn(move |request: Request<hyper::body::Incoming>| async move {
                // Read the whole body, as a real receiver would.
                let _ = request.into_body().collect().await;
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                Ok::<_, hyper::Error>(Response::new(Full::new(Bytes::from_static(b"ok"))))
            });
            let _ = http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

//! A `LISTEN` connection that keeps every notification it receives, with its arrival time,
//! for tests of `NOTIFY workflow_ready`.

use std::time::{Duration, Instant};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};

/// One notification as it arrived.
#[derive(Debug, Clone)]
pub struct Heard {
    pub channel: String,
    pub payload: String,
    pub at: Instant,
}

pub struct Listener {
    /// The listening session; `NOTIFY` through it reaches itself too.
    pub client: Client,
    heard: mpsc::UnboundedReceiver<Heard>,
}

impl Listener {
    /// Connects and listens on `channels`.
    pub async fn start(conninfo: &str, channels: &[&str]) -> Listener {
        let (client, mut connection) = tokio_postgres::connect(conninfo, NoTls)
            .await
            .unwrap_or_else(|e| panic!("connect to {conninfo}: {e}"));
        let (sender, heard) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Some(Ok(message)) =
                std::future::poll_fn(|cx| connection.poll_message(cx)).await
            {
                if let AsyncMessage::Notification(n) = message {
                    let heard = Heard {
                        channel: n.channel().to_string(),
                        payload: n.payload().to_string(),
                        at: Instant::now(),
                    };
                    if sender.send(heard).is_err() {
                        return;
                    }
                }
            }
        });
        for channel in channels {
            client
                .batch_execute(&format!("LISTEN {channel}"))
                .await
                .unwrap();
        }
        Listener { client, heard }
    }

    /// The next notification, or a panic naming `what` after `deadline`.
    pub async fn next(&mut self, what: &str, deadline: Duration) -> Heard {
        match tokio::time::timeout(deadline, self.heard.recv()).await {
            Ok(Some(heard)) => heard,
            Ok(None) => panic!("the listening connection ended while waiting for {what}"),
            Err(_) => panic!("timed out after {deadline:?} waiting for {what}"),
        }
    }

    /// The next notification with this payload; the ones before it are returned too, in
    /// the order they arrived.
    pub async fn until(&mut self, payload: &str, deadline: Duration) -> (Heard, Vec<Heard>) {
        let end = Instant::now() + deadline;
        let mut before = Vec::new();
        loop {
            let left = end.saturating_duration_since(Instant::now());
            let heard = self
                .next(&format!("a notification {payload:?}"), left)
                .await;
            if heard.payload == payload {
                return (heard, before);
            }
            before.push(heard);
        }
    }

    /// Proves that nothing with `payload` is on its way: Postgres delivers notifications in
    /// commit order, so a marker committed now arrives after anything committed before it.
    pub async fn assert_nothing_for(&mut self, marker_from: &Client, channel: &str, payload: &str) {
        let marker = format!("marker-{}", uuid::Uuid::new_v4().simple());
        marker_from
            .execute("SELECT pg_notify($1, $2)", &[&channel, &marker])
            .await
            .unwrap();
        let (_, before) = self.until(&marker, Duration::from_secs(10)).await;
        let unexpected: Vec<&Heard> = before.iter().filter(|h| h.payload == payload).collect();
        assert!(
            unexpected.is_empty(),
            "notified {payload:?} when nothing should have been: {unexpected:?}"
        );
    }
}

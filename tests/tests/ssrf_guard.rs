//! SSRF protection: with `workflow.allow_private_networks = off` (the default) nothing is sent
//! to loopback or private addresses, whether named literally or through DNS. Turning it on
//! takes effect on reload.

use std::time::Duration;
use workflow_tests::receiver::Receiver;
use workflow_tests::{Cluster, dispatcher_pid, message_reaches, unique};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_destinations_are_refused_until_allowed_and_reloaded() {
    let cluster = Cluster::start(&[
        "shared_preload_libraries = 'workflow'",
        "workflow.request_timeout = '1s'",
    ]);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("internal"));
    let literal = receiver.url(&path);
    let named = format!("http://localhost:{}{path}", receiver.port());

    let mut ids = Vec::new();
    for url in [&literal, &named] {
        let id: i64 = client
            .query_one("SELECT wf_enqueue($1, '{}')", &[url])
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            message_reaches(&client, id, "dead", DEADLINE).await,
            1,
            "{url}: refused once, not retried"
        );
        let error: String = client
            .query_one("SELECT last_error FROM wf_message($1)", &[&id])
            .await
            .unwrap()
            .get(0);
        assert!(
            error.contains("refused") && error.contains("allow_private_networks"),
            "{url}: {error}"
        );
        ids.push(id);
    }
    assert!(
        receiver.received(&path).is_empty(),
        "nothing reached the internal address"
    );

    cluster.psql("ALTER SYSTEM SET workflow.allow_private_networks = on");
    cluster.psql("SELECT pg_reload_conf()");
    workflow_tests::eventually("the reload to take effect", DEADLINE, || async {
        for id in &ids {
            let status: String = client.query_one("SELECT status FROM wf_message($1)", &[id]).await.unwrap().get(0);
            if status == "dead" {
                client.execute("SELECT wf_retry($1)", &[id]).await.unwrap();
            }
        }
        let delivered: i64 = client
            .query_one("SELECT count(*) FROM workflow.messages WHERE id = ANY($1) AND status = 'delivered'", &[&ids])
            .await
            .unwrap()
            .get(0);
        (delivered == 2).then_some(())
    })
    .await;
    assert_eq!(receiver.received(&path).len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn proxy_variables_in_the_servers_environment_are_never_used() {
    let proxy = Receiver::start().await;
    let proxy_url = format!("http://127.0.0.1:{}", proxy.port());
    let environment: Vec<(&str, &str)> = [
        "HTTP_PROXY",
        "HTTPS_PROXY",
        "ALL_PROXY",
        "http_proxy",
        "https_proxy",
        "all_proxy",
    ]
    .into_iter()
    .map(|name| (name, proxy_url.as_str()))
    .collect();
    let cluster = Cluster::start_with(workflow_tests::Options {
        settings: workflow_tests::DISPATCHER_SETTINGS,
        environment: &environment,
        ..Default::default()
    });
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("direct"));
    let id: i64 = workflow_tests::enqueue(&client, &receiver.url(&path)).await;
    message_reaches(&client, id, "delivered", DEADLINE).await;
    assert_eq!(receiver.received(&path).len(), 1, "the request went direct");
    assert!(
        proxy.received(&path).is_empty(),
        "the request went through the proxy"
    );
}

//! Nothing an application or a receiver sends can break the dispatcher: bad input is
//! refused with a specific SQLSTATE at the call, and no response can fail a round.

use std::time::Duration;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{dispatch_cluster, dispatcher_pid, message_reaches, sqlstate, unique};

const DEADLINE: Duration = Duration::from_secs(30);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn infinite_times_and_documents_the_extension_cannot_read_are_refused_with_22023() {
    let client = dispatch_cluster().connect().await;
    let workflow: uuid::Uuid = workflow_tests::start_workflow(&client, &unique("hostile")).await;
    let deep_headers = format!("{{\"x\": {}1{}}}", "[".repeat(200), "]".repeat(200));
    let cases = [
        "SELECT wf_enqueue('https://example.com/', '{}', deliver_at => 'infinity')".to_string(),
        "SELECT wf_enqueue('https://example.com/', '{}', deliver_at => '-infinity')".to_string(),
        format!("SELECT wf_sleep('{workflow}', 'nap', 'infinity')"),
        format!("SELECT wf_enqueue('https://example.com/', '{{}}', headers => '{deep_headers}')"),
        "SELECT wf_enqueue('https://example.com/', '{}', headers => '{\"x\": 1e400}')".to_string(),
        format!(
            "SELECT wf_endpoint('{}', 'https://example.com/', headers => '{deep_headers}')",
            unique("deep")
        ),
    ];
    for sql in &cases {
        let error = client.query(sql.as_str(), &[]).await.unwrap_err();
        assert_eq!(sqlstate(&error), "22023", "{sql}: {error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_holding_nul_characters_are_recorded_and_the_dispatcher_lives_on() {
    let cluster = dispatch_cluster();
    let client = cluster.connect().await;
    let pid = dispatcher_pid(&client, DEADLINE).await;
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("nul"));
    let bodies = ["raw \0 byte", r#"{"escaped": "a\u0000b", "k\u0000": 1}"#];
    receiver.script(
        &path,
        bodies.iter().map(|body| Reply::Full {
            status: 200,
            headers: vec![("content-type".into(), "application/json".into())],
            body: body.to_string(),
        }),
    );
    let workflow: uuid::Uuid = workflow_tests::start_workflow(&client, &unique("nul")).await;
    for (n, _) in bodies.iter().enumerate() {
        let step = format!("call-{n}");
        let id: i64 = client
            .query_one(
                "SELECT wf_enqueue($1, '{}', workflow => $2, step => $3)",
                &[&receiver.url(&path), &workflow, &step],
            )
            .await
            .unwrap()
            .get(0);
        message_reaches(&client, id, "delivered", DEADLINE).await;
        let output = workflow_tests::step_output(&client, workflow, &step).await;
        assert_eq!(output["status"], 200, "{output}");
        assert!(
            output.to_string().contains('\u{FFFD}'),
            "NUL recorded as U+FFFD: {output}"
        );
    }
    assert_eq!(
        dispatcher_pid(&client, DEADLINE).await,
        pid,
        "no response restarted the dispatcher"
    );
}

//! G10, a workflow's decision governs its side effects, and a durable step's final 4xx
//! answer is its outcome, against a real receiver:
//!
//! - `wf_complete`, `wf_fail` and `wf_cancel` cancel, in their transaction, the workflow's
//!   durable steps that are still pending, and a wait on a durable step that times out
//!   cancels that step's message: none of them is sent after the decision, whenever its
//!   provider comes back. Plain messages of a completed or failed workflow are still
//!   delivered: that is the outbox.
//! - An answer that arrives after the decision (a request already in flight, or an answer
//!   after the wait's deadline) is kept in `workflow.attempts` and changes nothing: the
//!   message stays cancelled, the step is not recorded from it.
//! - `wf_retry` never sends a durable step that is recorded or whose workflow finished
//!   (`55000`), and `wf_replay` skips such steps and says so in a NOTICE.
//! - A final 4xx (402, 410, ...) to a durable step is the step's outcome: the message is
//!   delivered with that status code, and the endpoint is neither failing nor disabled,
//!   nor is anything dead. A step that never got an answer still ends dead, and so does
//!   one answered with a redirect (not followed): that is no answer either.

use serde_json::{Value, json};
use std::time::{Duration, Instant, SystemTime};
use tokio::sync::mpsc;
use tokio_postgres::{AsyncMessage, Client, NoTls};
use workflow_tests::receiver::{Received, Receiver, Reply};
use workflow_tests::{
    assert_invariants, dispatch_cluster, dispatcher_pid, eventually, free_port, message_reaches,
    sqlstate, step_output, unique, until_true,
};

const DEADLINE: Duration = Duration::from_secs(30);

async fn setup() -> (Client, Receiver) {
    let client = dispatch_cluster().connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    (client, Receiver::start().await)
}

fn path(name: &str) -> String {
    format!("/{}", unique(name))
}

/// A named endpoint for `url`, with `settings` (named arguments of `wf_endpoint`, each
/// after a comma); returns its name.
async fn endpoint(client: &Client, url: &str, settings: &str) -> String {
    let name = unique("provider");
    client
        .execute(
            &format!("SELECT wf_endpoint($1, $2{settings})"),
            &[&name, &url],
        )
        .await
        .expect("wf_endpoint");
    name
}

/// Starts a workflow leased to `owner`.
async fn start(client: &Client, owner: &str) -> uuid::Uuid {
    client
        .query_one(
            "SELECT wf_start($1, owner => $2)",
            &[&unique("payment"), &owner],
        )
        .await
        .expect("wf_start")
        .get(0)
}

/// Enqueues the durable step `charge` of `workflow` to `target`; its payload names `kind`,
/// so that the receiver tells its requests from the others'.
async fn enqueue_step(client: &Client, target: &str, workflow: uuid::Uuid, kind: &str) -> i64 {
    client
        .query_one(
            "SELECT wf_enqueue($1, jsonb_build_object('kind', $2::text), workflow => $3, step => 'charge')",
            &[&target, &kind, &workflow],
        )
        .await
        .expect("wf_enqueue of a durable step")
        .get(0)
}

/// Enqueues a plain message of `kind` to `target`, of no workflow, due in `due_in`.
async fn enqueue_plain(client: &Client, target: &str, kind: &str, due_in: &str) -> i64 {
    client
        .query_one(
            "SELECT wf_enqueue($1, jsonb_build_object('kind', $2::text),
                               deliver_at => clock_timestamp() + $3::text::interval)",
            &[&target, &kind, &due_in],
        )
        .await
        .expect("wf_enqueue of a plain message")
        .get(0)
}

/// The requests `path` received for messages of `kind`.
fn of_kind(receiver: &Receiver, path: &str, kind: &str) -> Vec<Received> {
    receiver
        .received(path)
        .into_iter()
        .filter(|r| serde_json::from_slice::<Value>(&r.body).is_ok_and(|body| body["kind"] == kind))
        .collect()
}

/// Sends a plain message to `target` (at `path`), due in `due_in`, and waits for it to
/// arrive. The dispatcher sends what is due in the order it is due, so a message due
/// before it would have arrived by then: it is the barrier after which the absence of a
/// request proves that it will not come.
async fn barrier(client: &Client, receiver: &Receiver, target: &str, path: &str, due_in: &str) {
    enqueue_plain(client, target, "barrier", due_in).await;
    eventually(
        &format!("the barrier to arrive at {path}"),
        DEADLINE,
        || async { of_kind(receiver, path, "barrier").into_iter().next() },
    )
    .await;
}

async fn message_status(client: &Client, id: i64) -> String {
    client
        .query_one("SELECT status FROM wf_message($1)", &[&id])
        .await
        .expect("wf_message")
        .get(0)
}

/// Waits until message `id` is no longer pending; the status it ended in.
async fn finished(client: &Client, id: i64) -> String {
    eventually(&format!("message {id} to finish"), DEADLINE, || async {
        let status = message_status(client, id).await;
        (status != "pending").then_some(status)
    })
    .await
}

async fn workflow_status(client: &Client, id: uuid::Uuid) -> String {
    client
        .query_one("SELECT status FROM wf_status($1)", &[&id])
        .await
        .expect("wf_status")
        .get(0)
}

/// `wf_wait` for the durable step `charge`, with a timeout (an interval) and an owner.
async fn wait_for_charge(
    client: &Client,
    id: uuid::Uuid,
    timeout: Option<&str>,
    owner: Option<&str>,
) -> Option<Value> {
    client
        .query_one(
            "SELECT wf_wait($1, 'charge', timeout => $2::text::interval, owner => $3)",
            &[&id, &timeout, &owner],
        )
        .await
        .expect("wf_wait")
        .get(0)
}

/// Waits for the deadline of the workflow's wait to pass, then waits again: that wait
/// records the timeout. Returns what it returned.
async fn wait_after_the_deadline(client: &Client, id: uuid::Uuid) -> Value {
    until_true(
        client,
        "the wait's deadline to pass",
        "SELECT waiting_until IS NULL OR waiting_until <= clock_timestamp()
           FROM workflow.workflows WHERE id = $1",
        &[&id],
        DEADLINE,
    )
    .await;
    wait_for_charge(client, id, None, None)
        .await
        .expect("the wait after its deadline is recorded, not parked again")
}

/// A `503 Service Unavailable` that asks for no retry before `seconds`.
fn unavailable(seconds: u32) -> Reply {
    Reply::Full {
        status: 503,
        headers: vec![("retry-after".into(), seconds.to_string())],
        body: String::new(),
    }
}

/// The endpoint's `(delivered_total, dead_total)` in `workflow.metrics`.
async fn totals(client: &Client, endpoint: &str) -> (i64, i64) {
    let row = client
        .query_one(
            "SELECT delivered_total, dead_total FROM workflow.metrics WHERE endpoint = $1",
            &[&endpoint],
        )
        .await
        .expect("workflow.metrics");
    (row.get(0), row.get(1))
}

/// How a workflow decides, in the tests that compare the decisions. The workflow is
/// leased to `a`, except for a wait's timeout, which needs it parked on its wait first.
#[derive(Clone, Copy, Debug)]
enum Decision {
    Complete,
    Fail,
    Cancel,
    WaitTimesOut,
}

impl Decision {
    async fn take(self, client: &Client, id: uuid::Uuid) {
        match self {
            Decision::Complete => {
                client
                    .execute("SELECT wf_complete($1, '\"done\"', 'a')", &[&id])
                    .await
                    .expect("wf_complete");
            }
            Decision::Fail => {
                client
                    .execute("SELECT wf_fail($1, 'declined', 'a')", &[&id])
                    .await
                    .expect("wf_fail");
            }
            Decision::Cancel => {
                client
                    .execute("SELECT wf_cancel($1)", &[&id])
                    .await
                    .expect("wf_cancel");
            }
            Decision::WaitTimesOut => {
                assert_eq!(
                    wait_after_the_deadline(client, id).await,
                    json!({"timed_out": true}),
                    "the wait after its deadline records the timeout"
                );
            }
        }
    }

    /// The workflow's status after the decision.
    fn status(self) -> &'static str {
        match self {
            Decision::Complete => "completed",
            Decision::Fail => "failed",
            Decision::Cancel => "cancelled",
            Decision::WaitTimesOut => "running",
        }
    }
}

/// The payment provider is down (503, retry in 3 s) when the workflow gives up waiting for
/// its charge and completes without it; when the provider comes back, the charge must not
/// go through.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_step_whose_wait_timed_out_is_not_sent_when_its_provider_comes_back() {
    let (client, receiver) = setup().await;
    let path = path("charge");
    let url = receiver.url(&path);
    receiver.always(&path, unavailable(3));
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &url, id, "step").await;
    assert_eq!(
        wait_for_charge(&client, id, Some("300 ms"), Some("a")).await,
        None,
        "the provider is down: the workflow waits"
    );
    // The provider was tried, and asked for no retry before 3 s.
    receiver.wait_for(&path, 1, DEADLINE).await;

    assert_eq!(
        wait_after_the_deadline(&client, id).await,
        json!({"timed_out": true}),
        "the wait after its deadline records the timeout"
    );
    let decided = Instant::now();
    assert_eq!(
        message_status(&client, message).await,
        "cancelled",
        "the timed-out wait cancels its step's message"
    );
    let refused = client
        .execute("SELECT wf_retry($1)", &[&message])
        .await
        .expect_err("wf_retry of a step recorded as timed out");
    assert_eq!(sqlstate(&refused), "55000", "{refused}");

    // The provider comes back, and the workflow completes without the charge.
    receiver.always(&path, Reply::Status(200));
    client
        .execute("SELECT wf_complete($1, '\"gave up\"')", &[&id])
        .await
        .expect("wf_complete");
    assert_eq!(workflow_status(&client, id).await, "completed");
    assert_eq!(
        message_status(&client, message).await,
        "cancelled",
        "completing leaves the step cancelled"
    );

    // The provider asked for no retry before 3 s after the last attempt; the barrier is due
    // after that.
    barrier(&client, &receiver, &url, &path, "4 s").await;
    let late: Vec<Duration> = of_kind(&receiver, &path, "step")
        .iter()
        .filter(|r| r.at > decided)
        .map(|r| r.at - decided)
        .collect();
    assert!(
        late.is_empty(),
        "the cancelled step was sent after the decision (after {late:?})"
    );
    assert_eq!(
        message_status(&client, message).await,
        "cancelled",
        "the message stays cancelled"
    );
    assert_eq!(
        step_output(&client, id, "charge").await,
        json!({"timed_out": true}),
        "the step stays recorded as timed out"
    );
    assert_invariants(&client).await;
}

/// The provider fails the first attempt and asks for a retry in 1 s, after the wait's
/// 300 ms deadline: the retry is not sent at all. The message is cancelled when it comes
/// due (no request starts after the deadline), and the timeout is the step's outcome.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_request_for_a_step_starts_after_its_waits_deadline() {
    let (client, receiver) = setup().await;
    let path = path("charge");
    receiver.script(&path, [unavailable(1)]);
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &receiver.url(&path), id, "step").await;
    assert_eq!(
        wait_for_charge(&client, id, Some("300 ms"), Some("a")).await,
        None,
        "the first attempt fails: the workflow waits"
    );
    until_true(
        &client,
        "the step's message to be cancelled once its retry came due after the deadline",
        "SELECT status = 'cancelled' FROM workflow.messages WHERE id = $1",
        &[&message],
        DEADLINE,
    )
    .await;
    // The message was cancelled when its retry came due; a plain message to the same path
    // enqueued now arrives after anything the dispatcher had started before.
    let url = receiver.url(&path);
    barrier(&client, &receiver, &url, &path, "0 s").await;
    assert_eq!(
        of_kind(&receiver, &path, "step").len(),
        1,
        "only the attempt before the deadline reached the provider"
    );
    assert_eq!(
        wait_for_charge(&client, id, None, None).await,
        Some(json!({"timed_out": true})),
        "the timeout wins"
    );
    assert_invariants(&client).await;
}

/// A workflow finishes while its durable step is pending (due in 2 s) and a plain message
/// of its own is pending too (due in 3 s): the step is cancelled in the finishing
/// transaction, `wf_retry` cannot send it again, and it is never sent. The plain message is
/// delivered after `wf_complete` and `wf_fail`, and cancelled by `wf_cancel`.
async fn finish_with_a_pending_step(decision: Decision) {
    let (client, receiver) = setup().await;
    let path = path("finish");
    let url = receiver.url(&path);
    let id = start(&client, "a").await;
    let step: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{\"kind\": \"step\"}', deliver_at => clock_timestamp() + interval '2 s',
                               workflow => $2, step => 'charge')",
            &[&url, &id],
        )
        .await
        .unwrap()
        .get(0);
    let plain: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{\"kind\": \"plain\"}', deliver_at => clock_timestamp() + interval '3 s',
                               workflow => $2)",
            &[&url, &id],
        )
        .await
        .unwrap()
        .get(0);

    decision.take(&client, id).await;
    assert_eq!(workflow_status(&client, id).await, decision.status());
    assert_eq!(
        message_status(&client, step).await,
        "cancelled",
        "{decision:?} cancels the pending durable step in its transaction"
    );
    let refused = client
        .execute("SELECT wf_retry($1)", &[&step])
        .await
        .expect_err("wf_retry of a step whose workflow finished");
    assert_eq!(sqlstate(&refused), "55000", "{refused}");
    assert_eq!(message_status(&client, step).await, "cancelled");

    match decision {
        Decision::Cancel => {
            assert_eq!(
                message_status(&client, plain).await,
                "cancelled",
                "wf_cancel cancels every pending message of its workflow"
            );
            barrier(&client, &receiver, &url, &path, "3 s").await;
        }
        _ => {
            // Due a second after the step: once it has arrived, the step would have too.
            message_reaches(&client, plain, "delivered", DEADLINE).await;
            assert_eq!(
                of_kind(&receiver, &path, "plain").len(),
                1,
                "the plain message is delivered after {decision:?}"
            );
        }
    }
    assert!(
        of_kind(&receiver, &path, "step").is_empty(),
        "the cancelled step was sent"
    );
    assert_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_complete_cancels_a_pending_durable_step_and_still_delivers_the_plain_messages() {
    finish_with_a_pending_step(Decision::Complete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_fail_cancels_a_pending_durable_step_and_still_delivers_the_plain_messages() {
    finish_with_a_pending_step(Decision::Fail).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_cancel_cancels_a_pending_durable_step_for_good_with_every_other_message() {
    finish_with_a_pending_step(Decision::Cancel).await;
}

/// A request of a durable step is in flight (the provider answers after 2 s; the endpoint
/// waits up to 5 s) when the workflow decides: the answer is kept as an attempt, and
/// changes nothing.
async fn an_answer_in_flight_at(decision: Decision) {
    let (client, receiver) = setup().await;
    let path = path("slow-charge");
    let endpoint = endpoint(&client, &receiver.url(&path), ", timeout => '5 s'").await;
    let answer_after = Duration::from_secs(2);
    receiver.always(&path, Reply::After(answer_after, 200));
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &endpoint, id, "step").await;
    if let Decision::WaitTimesOut = decision {
        assert_eq!(
            wait_for_charge(&client, id, Some("300 ms"), Some("a")).await,
            None,
            "the answer takes 2 s: the workflow waits"
        );
    }
    let request = receiver.wait_for(&path, 1, DEADLINE).await[0].clone();

    decision.take(&client, id).await;
    let decided = Instant::now();
    assert!(
        decided < request.at + answer_after,
        "the test needs the decision while the request is in flight; it came {:?} after the request",
        decided - request.at
    );
    assert_eq!(
        message_status(&client, message).await,
        "cancelled",
        "{decision:?} cancels the step in flight"
    );

    until_true(
        &client,
        "the late answer to be kept in workflow.attempts",
        "SELECT EXISTS (SELECT FROM workflow.attempts WHERE message_id = $1 AND status_code = 200)",
        &[&message],
        DEADLINE,
    )
    .await;
    assert_eq!(
        message_status(&client, message).await,
        "cancelled",
        "the late answer leaves the message cancelled"
    );
    let expected = match decision {
        Decision::WaitTimesOut => json!({"timed_out": true}),
        _ => Value::Null,
    };
    assert_eq!(
        step_output(&client, id, "charge").await,
        expected,
        "the late answer does not record the step"
    );
    assert_eq!(workflow_status(&client, id).await, decision.status());
    assert_eq!(
        receiver.received(&path).len(),
        1,
        "one request, the one in flight"
    );
    assert_invariants(&client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_flight_when_the_wait_times_out_is_kept_and_changes_nothing() {
    an_answer_in_flight_at(Decision::WaitTimesOut).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_flight_when_the_workflow_completes_is_kept_and_changes_nothing() {
    an_answer_in_flight_at(Decision::Complete).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_answer_in_flight_when_the_workflow_is_cancelled_is_kept_and_changes_nothing() {
    an_answer_in_flight_at(Decision::Cancel).await;
}

/// A durable step to a named endpoint answered `status`, a final 4xx with headers and a
/// body: the message is delivered with that code, the step records the answer as not ok,
/// the endpoint is not failing, and nothing is dead.
async fn a_final_4xx_is_the_steps_outcome(status: u16) {
    let (client, receiver) = setup().await;
    let path = path("charge");
    let endpoint = endpoint(&client, &receiver.url(&path), "").await;
    receiver.script(
        &path,
        [Reply::Full {
            status,
            headers: vec![("x-reason".into(), "card_declined".into())],
            body: r#"{"declined": true}"#.into(),
        }],
    );
    let (delivered_before, dead_before) = totals(&client, &endpoint).await;
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &endpoint, id, "step").await;

    assert_eq!(
        finished(&client, message).await,
        "delivered",
        "a final {status} is the step's outcome, not a failed delivery"
    );
    let code: Option<i32> = client
        .query_one("SELECT last_status_code FROM wf_message($1)", &[&message])
        .await
        .unwrap()
        .get(0);
    assert_eq!(code, Some(i32::from(status)));
    let step = step_output(&client, id, "charge").await;
    assert_eq!(step["ok"], false, "{step}");
    assert_eq!(step["status"], status, "{step}");
    assert_eq!(step["body"], json!({"declined": true}), "{step}");
    assert_eq!(step["headers"]["x-reason"], "card_declined", "{step}");
    assert!(step["error"].is_string(), "the step says why: {step}");

    let row = client
        .query_one(
            "SELECT failing_since IS NULL, disabled_at IS NULL FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "a {status} to a durable step is no failure of the endpoint"
    );
    assert!(
        row.get::<_, bool>(1),
        "a {status} to a durable step does not disable the endpoint"
    );
    let (delivered, dead) = totals(&client, &endpoint).await;
    assert_eq!(
        (delivered - delivered_before, dead - dead_before),
        (1, 0),
        "the step counts as delivered, not dead (delivered_total, dead_total)"
    );
    assert_eq!(
        receiver.received(&path).len(),
        1,
        "the answer is final: no retry"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_402_to_a_durable_step_is_its_outcome_not_a_failure_of_the_endpoint() {
    a_final_4xx_is_the_steps_outcome(402).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_410_to_a_durable_step_is_its_outcome_and_does_not_disable_the_endpoint() {
    a_final_4xx_is_the_steps_outcome(410).await;
}

/// Nothing listens on the endpoint's port: every attempt is refused, and when they run out
/// the step is dead, as any message would be, with no status to record.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_step_that_never_gets_an_answer_still_ends_dead() {
    let (client, _receiver) = setup().await;
    let url = format!("http://127.0.0.1:{}/charge", free_port());
    let endpoint = endpoint(&client, &url, ", max_attempts => 2").await;
    let (_, dead_before) = totals(&client, &endpoint).await;
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &endpoint, id, "step").await;

    assert_eq!(finished(&client, message).await, "dead");
    let step = step_output(&client, id, "charge").await;
    assert_eq!(step["ok"], false, "{step}");
    assert!(step["status"].is_null(), "no answer, no status: {step}");
    assert!(step["error"].is_string(), "the step says why: {step}");
    let (_, dead) = totals(&client, &endpoint).await;
    assert_eq!(dead - dead_before, 1, "it counts in dead_total");
}

/// A redirect is no answer: it is not followed (to its `Location` or anywhere), and with
/// no attempts left the step ends dead, as a failed delivery does. It records the status it
/// got, counts in `dead_total`, and is a failure of the endpoint.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_redirect_to_a_durable_step_is_no_answer_and_ends_dead() {
    let (client, receiver) = setup().await;
    let path = path("charge");
    let elsewhere = format!("{path}-moved");
    let endpoint = endpoint(&client, &receiver.url(&path), ", max_attempts => 1").await;
    receiver.script(
        &path,
        [Reply::Full {
            status: 302,
            headers: vec![("location".into(), receiver.url(&elsewhere))],
            body: String::new(),
        }],
    );
    let (delivered_before, dead_before) = totals(&client, &endpoint).await;
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &endpoint, id, "step").await;

    assert_eq!(
        finished(&client, message).await,
        "dead",
        "a 302 is no outcome of the step: with no attempts left, the message is dead"
    );
    let code: Option<i32> = client
        .query_one("SELECT last_status_code FROM wf_message($1)", &[&message])
        .await
        .unwrap()
        .get(0);
    assert_eq!(code, Some(302));
    let step = step_output(&client, id, "charge").await;
    assert_eq!(step["ok"], false, "{step}");
    assert_eq!(step["status"], 302, "{step}");
    assert!(step["error"].is_string(), "the step says why: {step}");

    let row = client
        .query_one(
            "SELECT failing_since IS NOT NULL, disabled_at IS NULL FROM workflow.endpoints WHERE name = $1",
            &[&endpoint],
        )
        .await
        .unwrap();
    assert!(
        row.get::<_, bool>(0),
        "a redirect is a failure of the endpoint: failing_since is set"
    );
    assert!(row.get::<_, bool>(1), "a 302 does not disable the endpoint");
    let (delivered, dead) = totals(&client, &endpoint).await;
    assert_eq!(
        (delivered - delivered_before, dead - dead_before),
        (0, 1),
        "the step counts as dead, not delivered (delivered_total, dead_total)"
    );
    assert_eq!(receiver.received(&path).len(), 1, "one attempt");
    assert!(
        receiver.received(&elsewhere).is_empty(),
        "the redirect is not followed"
    );
}

/// A step whose every attempt went unanswered is dead and recorded as not ok: sending it
/// again cannot change the recorded outcome, so `wf_retry` refuses, and nothing goes out.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_retry_refuses_a_durable_step_whose_outcome_is_recorded() {
    let (client, receiver) = setup().await;
    let path = path("charge");
    let endpoint = endpoint(&client, &receiver.url(&path), ", max_attempts => 1").await;
    receiver.script(&path, [Reply::Reset]);
    let id = start(&client, "a").await;
    let message = enqueue_step(&client, &endpoint, id, "step").await;
    assert_eq!(finished(&client, message).await, "dead");
    let step = step_output(&client, id, "charge").await;
    assert_eq!(step["ok"], false, "the step is recorded: {step}");
    assert!(step["status"].is_null(), "no answer, no status: {step}");

    let refused = client
        .execute("SELECT wf_retry($1)", &[&message])
        .await
        .expect_err("wf_retry of a recorded step");
    assert_eq!(sqlstate(&refused), "55000", "{refused}");
    assert_eq!(message_status(&client, message).await, "dead");
    barrier(&client, &receiver, &endpoint, &path, "500 ms").await;
    assert_eq!(
        of_kind(&receiver, &path, "step").len(),
        1,
        "the step's one attempt, nothing sent again"
    );
    assert_eq!(workflow_status(&client, id).await, "running");
}

/// A connection that keeps the text of every NOTICE the server sends it.
async fn connect_keeping_notices() -> (Client, mpsc::UnboundedReceiver<String>) {
    let conninfo = dispatch_cluster().conninfo();
    let (client, mut connection) = tokio_postgres::connect(&conninfo, NoTls)
        .await
        .unwrap_or_else(|e| panic!("connect to {conninfo}: {e}"));
    let (sender, notices) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Some(Ok(message)) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
            if let AsyncMessage::Notice(notice) = message
                && sender.send(notice.message().to_string()).is_err()
            {
                return;
            }
        }
    });
    (client, notices)
}

/// The first NOTICE that contains `text`; panics naming the others after a few seconds.
async fn notice_containing(notices: &mut mpsc::UnboundedReceiver<String>, text: &str) -> String {
    let end = Instant::now() + Duration::from_secs(5);
    let mut heard = Vec::new();
    loop {
        let left = end.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, notices.recv()).await {
            Ok(Some(notice)) if notice.contains(text) => return notice,
            Ok(Some(notice)) => heard.push(notice),
            _ => panic!("no NOTICE containing {text:?}; heard {heard:?}"),
        }
    }
}

/// A window of an endpoint's messages holds a plain dead message and three durable steps
/// that must not go again: one dead and recorded, one delivered and recorded, one
/// cancelled when its workflow completed. The replay sends the plain message only, and its
/// NOTICE says it skipped three.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wf_replay_skips_durable_steps_that_are_recorded_or_whose_workflow_finished() {
    let (client, receiver) = setup().await;
    let path = path("replayed");
    let endpoint = endpoint(
        &client,
        &receiver.url(&path),
        ", max_attempts => 2, retry_schedule => '{100ms}'",
    )
    .await;
    let since: SystemTime = client
        .query_one("SELECT clock_timestamp()", &[])
        .await
        .unwrap()
        .get(0);
    // One message at a time, so that each gets the replies scripted for it.
    receiver.script(&path, [Reply::Reset, Reply::Reset]);
    let plain = enqueue_plain(&client, &endpoint, "plain", "0 s").await;
    assert_eq!(finished(&client, plain).await, "dead");

    receiver.script(&path, [Reply::Reset, Reply::Reset]);
    let unanswered = start(&client, "a").await;
    let dead_step = enqueue_step(&client, &endpoint, unanswered, "dead-step").await;
    assert_eq!(finished(&client, dead_step).await, "dead");
    assert!(
        !step_output(&client, unanswered, "charge").await.is_null(),
        "the dead step is recorded"
    );

    let answered = start(&client, "a").await;
    let delivered_step = enqueue_step(&client, &endpoint, answered, "delivered-step").await;
    assert_eq!(finished(&client, delivered_step).await, "delivered");
    assert_eq!(step_output(&client, answered, "charge").await["ok"], true);

    receiver.script(&path, [unavailable(3600)]);
    let completed = start(&client, "a").await;
    let cancelled_step = enqueue_step(&client, &endpoint, completed, "cancelled-step").await;
    until_true(
        &client,
        "the step's first attempt to be refused with a 503",
        "SELECT coalesce(last_status_code = 503, false) FROM workflow.messages WHERE id = $1",
        &[&cancelled_step],
        DEADLINE,
    )
    .await;
    client
        .execute("SELECT wf_complete($1, NULL, 'a')", &[&completed])
        .await
        .unwrap();
    assert_eq!(
        message_status(&client, cancelled_step).await,
        "cancelled",
        "wf_complete cancels its pending step"
    );

    let (replayer, mut notices) = connect_keeping_notices().await;
    replayer.batch_execute("BEGIN").await.unwrap();
    let replayed: i64 = replayer
        .query_one(
            "SELECT wf_replay($1, $2, NULL, '{dead,cancelled,delivered}')",
            &[&endpoint, &since],
        )
        .await
        .expect("wf_replay")
        .get(0);
    assert_eq!(replayed, 1, "only the plain message is sent again");
    // Before the commit, so that the dispatcher cannot have sent anything yet.
    let statuses: Vec<String> = replayer
        .query(
            "SELECT status FROM workflow.messages WHERE id = ANY ($1) ORDER BY id",
            &[&vec![plain, dead_step, delivered_step, cancelled_step]],
        )
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(
        statuses,
        ["pending", "dead", "delivered", "cancelled"],
        "the replay revives the plain message (plain, dead, delivered and cancelled steps)"
    );
    replayer.batch_execute("COMMIT").await.unwrap();
    let notice = notice_containing(&mut notices, "skipped").await;
    assert!(
        notice
            .split(|c: char| !c.is_ascii_digit())
            .any(|number| number == "3"),
        "the NOTICE says how many it skipped (3): {notice}"
    );

    message_reaches(&client, plain, "delivered", DEADLINE).await;
    barrier(&client, &receiver, &endpoint, &path, "500 ms").await;
    let counts: Vec<usize> = ["plain", "dead-step", "delivered-step", "cancelled-step"]
        .iter()
        .map(|kind| of_kind(&receiver, &path, kind).len())
        .collect();
    assert_eq!(
        counts,
        [3, 2, 1, 1],
        "requests per message: the plain one replayed, no step sent again"
    );
    let steps = [
        step_output(&client, unanswered, "charge").await,
        step_output(&client, answered, "charge").await,
        step_output(&client, completed, "charge").await,
    ];
    assert_eq!(
        [&steps[0]["status"], &steps[1]["status"], &steps[2]],
        [&Value::Null, &json!(200), &Value::Null],
        "the steps are as they were (dead, delivered, cancelled): {steps:?}"
    );
    assert_invariants(&client).await;
}

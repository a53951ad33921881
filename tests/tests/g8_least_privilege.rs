//! G8: nothing an application role can create or set changes what the dispatcher (a
//! superuser) executes, and an application role cannot read credentials or raise the
//! limits that bound the dispatcher's memory.

use std::time::Duration;
use workflow_tests::receiver::{Receiver, Reply};
use workflow_tests::{Cluster, dispatcher_pid, message_reaches, sqlstate, unique};

const DEADLINE: Duration = Duration::from_secs(30);

/// Objects that would win operator and function resolution over `pg_catalog`'s for the
/// dispatcher's statements if they ran with the default `search_path` (`"$user", public`):
/// each is an exact match where `pg_catalog` only has one through a cast, a domain or a
/// polymorphic type. Each records that it ran, as whoever called it.
fn plant(schema: &str) -> String {
    format!(
        "CREATE FUNCTION {schema}.interval_times_int(interval, integer) RETURNS interval LANGUAGE sql
             AS $$ SELECT public.hit('interval * integer'); SELECT $1 * $2::double precision $$;
         CREATE OPERATOR {schema}.* (LEFTARG = interval, RIGHTARG = integer, FUNCTION = {schema}.interval_times_int);
         CREATE FUNCTION {schema}.numeric_times_int(numeric, integer) RETURNS numeric LANGUAGE sql
             AS $$ SELECT public.hit('numeric * integer'); SELECT $1 * $2::numeric $$;
         CREATE OPERATOR {schema}.* (LEFTARG = numeric, RIGHTARG = integer, FUNCTION = {schema}.numeric_times_int);
         CREATE FUNCTION {schema}.status_eq(workflow.message_status, workflow.message_status) RETURNS boolean
             LANGUAGE sql AS $$ SELECT public.hit('message_status = message_status'); SELECT $1::text = $2::text $$;
         CREATE OPERATOR {schema}.= (LEFTARG = workflow.message_status, RIGHTARG = workflow.message_status,
                                     FUNCTION = {schema}.status_eq);
         CREATE FUNCTION {schema}.unnest(bigint[]) RETURNS SETOF bigint LANGUAGE sql
             AS $$ SELECT public.hit('unnest(bigint[])'); SELECT pg_catalog.unnest($1) $$;
         CREATE FUNCTION {schema}.make_interval(secs double precision) RETURNS interval LANGUAGE sql
             AS $$ SELECT public.hit('make_interval'); SELECT pg_catalog.make_interval(secs => $1) $$;"
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_planted_by_an_application_role_never_run_in_the_dispatcher() {
    let cluster = Cluster::start(workflow_tests::DISPATCHER_SETTINGS);
    let client = cluster.connect().await;
    dispatcher_pid(&client, DEADLINE).await;
    // An application role that may create in public (a database owner on PG 15, every
    // role on a cluster upgraded from PG 14) and owns a schema named like the dispatcher's
    // role, which the default search_path ("$user", public) puts first.
    cluster.psql(
        "CREATE ROLE attacker LOGIN;
         GRANT workflow_user TO attacker;
         GRANT CREATE ON SCHEMA public TO attacker;
         CREATE SCHEMA postgres AUTHORIZATION attacker;",
    );
    cluster.psql(&format!(
        "SET ROLE attacker;
         CREATE TABLE public.pwned (what text, as_whom text DEFAULT current_user);
         GRANT INSERT ON public.pwned TO PUBLIC;
         CREATE FUNCTION public.hit(what text) RETURNS void LANGUAGE sql
             AS $$ INSERT INTO public.pwned (what) VALUES (what) $$;
         {} {}",
        plant("public"),
        plant("postgres")
    ));

    // Work that runs every kind of dispatcher statement: claims, a failure recorded with
    // its retry delay, the attempt it replaces moved to the log, a delivery, the next-due
    // look-up, a durable step's checkpoint.
    let receiver = Receiver::start().await;
    let path = format!("/{}", unique("planted"));
    receiver.script(&path, [Reply::Status(503)]);
    let id: i64 = workflow_tests::enqueue(&client, &receiver.url(&path)).await;
    let workflow: uuid::Uuid = workflow_tests::start_workflow(&client, &unique("planted")).await;
    let step: i64 = client
        .query_one(
            "SELECT wf_enqueue($1, '{}', workflow => $2, step => 'call')",
            &[&receiver.url(&path), &workflow],
        )
        .await
        .unwrap()
        .get(0);
    client
        .execute(
            "SELECT wf_enqueue($1, '{}', deliver_at => now() + interval '1 hour')",
            &[&receiver.url(&path)],
        )
        .await
        .unwrap();
    message_reaches(&client, id, "delivered", DEADLINE).await;
    message_reaches(&client, step, "delivered", DEADLINE).await;
    assert!(
        workflow_tests::step_output(&client, workflow, "call")
            .await
            .is_object()
    );

    let ran: Vec<String> = client
        .query("SELECT what || ' as ' || as_whom FROM public.pwned", &[])
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert!(ran.is_empty(), "planted objects ran: {ran:?}");
    let superuser: bool = client
        .query_one(
            "SELECT rolsuper FROM pg_roles WHERE rolname = 'attacker'",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    assert!(!superuser);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_role_sees_header_names_but_no_values_and_cannot_raise_the_payload_limit() {
    let cluster = workflow_tests::shared_cluster();
    let name = unique("credentials");
    cluster.psql(&format!(
        "SELECT wf_endpoint('{name}', 'https://partner.example.com/hooks', 'generate',
                            '{{\"authorization\": \"Bearer s3cret-token\", \"x-tenant\": \"acme\"}}');
         DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'app') THEN
                 CREATE ROLE app LOGIN;
             END IF;
         END $$;
         GRANT workflow_user TO app;"
    ));
    let app = workflow_tests::connect(&format!("{} user=app", cluster.conninfo())).await;

    let row = app
        .query_one(
            "SELECT to_jsonb(e) FROM workflow.endpoints e WHERE name = $1",
            &[&name],
        )
        .await
        .unwrap();
    let view: serde_json::Value = row.get(0);
    assert_eq!(
        view["header_names"],
        serde_json::json!(["authorization", "x-tenant"])
    );
    let shown = view.to_string();
    assert!(
        !shown.contains("s3cret-token") && !shown.contains("whsec_") && !shown.contains("acme"),
        "the endpoints view shows a credential: {shown}"
    );
    for table in [
        "endpoint_settings",
        "outbox",
        "runs",
        "run_signals",
        "handlers",
    ] {
        let error = app
            .query(&format!("SELECT * FROM workflow.{table}"), &[])
            .await
            .unwrap_err();
        assert_eq!(sqlstate(&error), "42501", "workflow.{table}");
    }
    // The payload limit bounds what the dispatcher loads into memory. Set before the
    // library is loaded, it is a placeholder that loading discards for a non-superuser;
    // set after, it is refused.
    let fresh = workflow_tests::connect(&format!("{} user=app", cluster.conninfo())).await;
    fresh
        .batch_execute("SET workflow.max_payload_bytes = '256MB'")
        .await
        .unwrap();
    fresh.query("SELECT wf_stats()", &[]).await.unwrap();
    let limit: String = fresh
        .query_one("SHOW workflow.max_payload_bytes", &[])
        .await
        .unwrap()
        .get(0);
    assert_eq!(limit, "1MB");
    let error = fresh
        .batch_execute("SET workflow.max_payload_bytes = '256MB'")
        .await
        .unwrap_err();
    assert_eq!(sqlstate(&error), "42501", "{error}");
}

/// A message's own header values are another application's secret too: one role's
/// `Authorization` header is not readable by another role through the views; the names are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_application_role_reads_a_message_s_header_names_but_not_their_values() {
    let cluster = workflow_tests::shared_cluster();
    cluster.psql(
        "DO $$ BEGIN
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'payments_app') THEN
                 CREATE ROLE payments_app LOGIN;
             END IF;
             IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'reports_app') THEN
                 CREATE ROLE reports_app LOGIN;
             END IF;
         END $$;
         GRANT workflow_user TO payments_app, reports_app;",
    );
    let payments =
        workflow_tests::connect(&format!("{} user=payments_app", cluster.conninfo())).await;
    let id: i64 = payments
        .query_one(
            "SELECT wf_enqueue('https://partner.example.com/charge', '{}',
                               headers => '{\"authorization\": \"Bearer pay-t0ken\", \"x-tenant\": \"acme\"}',
                               deliver_at => now() + interval '1 day')",
            &[],
        )
        .await
        .unwrap()
        .get(0);
    let reports =
        workflow_tests::connect(&format!("{} user=reports_app", cluster.conninfo())).await;
    let owner = cluster.connect().await;
    for view in ["messages", "dead_letters"] {
        if view == "dead_letters" {
            // As the dispatcher would leave it after its last attempt.
            owner
                .execute(
                    "UPDATE workflow.outbox SET status = 'dead', finished_at = now() WHERE id = $1",
                    &[&id],
                )
                .await
                .unwrap();
        }
        let rows = reports
            .query(
                &format!("SELECT to_jsonb(m)::text FROM workflow.{view} m WHERE id = $1"),
                &[&id],
            )
            .await
            .unwrap();
        assert_eq!(rows.len(), 1, "workflow.{view} shows the message");
        for row in rows {
            let shown: String = row.get(0);
            assert!(
                !shown.contains("pay-t0ken") && !shown.contains("acme"),
                "workflow.{view} shows a header value: {shown}"
            );
        }
    }
    let names: Vec<String> = reports
        .query_one(
            "SELECT header_names FROM workflow.messages WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(names, ["authorization", "x-tenant"]);
    // The owner still reads everything.
    let value: String = owner
        .query_one(
            "SELECT headers->>'authorization' FROM workflow.outbox WHERE id = $1",
            &[&id],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(value, "Bearer pay-t0ken");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_advisory_lock_an_application_takes_can_hold_back_an_ordering_key() {
    let cluster = workflow_tests::shared_cluster();
    let key = unique("key");
    // Whatever advisory locks a role takes — here the one 0.1.0 used for this key, and
    // the same numbers as a single bigint — they are not the extension's.
    let squatter = cluster.connect().await;
    squatter
        .execute(
            "SELECT pg_advisory_lock(2053731434, hashtext($1)), pg_advisory_lock(hashtext($1))",
            &[&key],
        )
        .await
        .unwrap();
    let client = cluster.connect().await;
    client
        .batch_execute("SET statement_timeout = '5s'")
        .await
        .unwrap();
    client
        .execute(
            "SELECT wf_enqueue('https://example.com/', '{}', ordering_key => $1)",
            &[&key],
        )
        .await
        .expect("an enqueue with the key does not wait for an application's lock");
}

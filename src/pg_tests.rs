//! In-transaction tests (`#[pg_test]`): each runs inside one transaction that is rolled back,
//! so they prove behaviour within a transaction — semantics, errors, savepoints — and never
//! anything that needs a commit (see `tests/` for those).

use pgrx::prelude::*;

#[pg_schema]
mod tests {
    use pgrx::prelude::*;

    // Runs a statement in a subtransaction and reports its SQLSTATE and message, or NULL.
    extension_sql!(
        r#"
CREATE FUNCTION tests.error_of(query text) RETURNS text LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE query;
    RETURN NULL;
EXCEPTION WHEN OTHERS THEN
    RETURN SQLSTATE || ': ' || SQLERRM;
END
$$;
-- Roles under test need the helper too.
GRANT USAGE ON SCHEMA tests TO PUBLIC;
"#,
        name = "test_helpers",
        requires = [tests]
    );

    fn one<T: FromDatum + IntoDatum>(query: &str) -> Option<T> {
        Spi::get_one::<T>(query).unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// The dispatcher's settings the claim tests run with.
    fn claim_settings() -> crate::dispatcher::claim::Settings {
        crate::dispatcher::claim::Settings {
            request_timeout: std::time::Duration::from_secs(10),
            max_attempts: 5,
            concurrency_per_destination: 16,
        }
    }

    fn run(query: &str) {
        Spi::run(query).unwrap_or_else(|e| panic!("{query}: {e}"))
    }

    /// The error a statement raises, as "SQLSTATE: message".
    fn error_of(query: &str) -> String {
        Spi::get_one_with_args::<String>("SELECT tests.error_of($1)", &[query.into()])
            .unwrap()
            .unwrap_or_else(|| panic!("expected an error from: {query}"))
    }

    fn assert_error(query: &str, sqlstate: &str, message_part: &str) {
        let error = error_of(query);
        assert!(
            error.starts_with(sqlstate) && error.contains(message_part),
            "{query}\n  expected {sqlstate} containing {message_part:?}\n  got {error}"
        );
    }

    fn start(name: &str) -> String {
        one::<pgrx::Uuid>(&format!("SELECT wf_start('{name}')"))
            .unwrap()
            .to_string()
    }

    fn expire_lease(id: &str) {
        run(&format!(
            "UPDATE workflow.runs SET lease_expires_at = now() - interval '1 second' WHERE id = '{id}'"
        ));
    }

    // ---- wf_start ----

    #[pg_test]
    fn wf_start_creates_a_running_workflow_leased_to_its_session() {
        let id = start("transfer");
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(
            one::<String>(&row.replace("{}", "status")).as_deref(),
            Some("running")
        );
        let owner = one::<String>(&row.replace("{}", "owner")).unwrap();
        let session = one::<String>("SELECT session_user || ':' || pg_backend_pid()").unwrap();
        assert_eq!(owner, session);
        let lease_left = one::<f64>(&row.replace(
            "{}",
            "extract(epoch FROM lease_expires_at - statement_timestamp())::float8",
        ))
        .unwrap();
        assert!(
            (59.0..=61.0).contains(&lease_left),
            "default lease is 60s, got {lease_left}"
        );
    }

    #[pg_test]
    fn wf_start_records_input_and_the_given_owner() {
        let id =
            one::<pgrx::Uuid>(r#"SELECT wf_start('transfer', '{"amount": 5}', owner => 'app-1')"#)
                .unwrap();
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(
            one::<String>(&row.replace("{}", "owner")).as_deref(),
            Some("app-1")
        );
        assert_eq!(
            one::<i64>(&row.replace("{}", "(input->>'amount')::bigint")),
            Some(5)
        );
    }

    #[pg_test]
    fn wf_start_takes_its_lease_from_the_setting() {
        run("SET LOCAL workflow.lease_duration = '5min'");
        let id = start("transfer");
        let lease = one::<f64>(&format!(
            "SELECT extract(epoch FROM lease_expires_at - statement_timestamp())::float8 FROM wf_status('{id}')"
        ))
        .unwrap();
        assert!((299.0..=301.0).contains(&lease), "{lease}");
    }

    #[pg_test]
    fn g4_wf_start_with_a_known_key_returns_the_first_id_and_creates_nothing() {
        let first = one::<pgrx::Uuid>("SELECT wf_start('transfer', '{\"n\":1}', 'key-1')").unwrap();
        let second =
            one::<pgrx::Uuid>("SELECT wf_start('transfer', '{\"n\":2}', 'key-1')").unwrap();
        assert_eq!(first, second);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.runs WHERE idempotency_key = 'key-1'"),
            Some(1)
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT (input->>'n')::bigint FROM wf_status('{first}')"
            )),
            Some(1),
            "the repeated start must not overwrite the input"
        );
    }

    #[pg_test]
    fn g4_the_same_key_under_another_name_is_another_workflow() {
        let a = one::<pgrx::Uuid>("SELECT wf_start('transfer', NULL, 'key-1')").unwrap();
        let b = one::<pgrx::Uuid>("SELECT wf_start('refund', NULL, 'key-1')").unwrap();
        assert_ne!(a, b);
    }

    #[pg_test]
    fn wf_start_without_a_key_always_creates() {
        assert_ne!(start("transfer"), start("transfer"));
    }

    // ---- wf_checkpoint and wf_step ----

    #[pg_test]
    fn wf_checkpoint_records_a_step_and_returns_its_output() {
        let id = start("transfer");
        let out = one::<pgrx::JsonB>(&format!(
            "SELECT wf_checkpoint('{id}', 'debit', '{{\"ok\":true}}')"
        ))
        .unwrap();
        assert_eq!(out.0, serde_json::json!({"ok": true}));
        let step = one::<pgrx::JsonB>(&format!("SELECT wf_step('{id}', 'debit')")).unwrap();
        assert_eq!(step.0, serde_json::json!({"ok": true}));
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(one::<i32>(&row.replace("{}", "steps_done")), Some(1));
        assert_eq!(
            one::<String>(&row.replace("{}", "last_step")).as_deref(),
            Some("debit")
        );
    }

    /// G7: a write that names an owner changes nothing unless that owner holds an
    /// unexpired lease, also a replay of a recorded step, and also once the workflow finished.
    #[pg_test]
    fn g7_only_the_owner_holding_the_lease_advances_a_workflow() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('fenced', owner => 'a')")
            .unwrap()
            .to_string();
        assert_error(
            &format!("SELECT wf_checkpoint('{id}', 'one', owner => 'b')"),
            "55006",
            "is not leased to b; wf_checkpoint changed nothing",
        );
        run(&format!(
            "SELECT wf_checkpoint('{id}', 'one', '1', owner => 'a')"
        ));
        expire_lease(&id);
        for call in [
            format!("SELECT wf_checkpoint('{id}', 'one', owner => 'a')"),
            format!("SELECT wf_checkpoint('{id}', 'two', owner => 'a')"),
            format!("SELECT wf_heartbeat('{id}', owner => 'a')"),
            format!("SELECT wf_sleep('{id}', 'nap', now(), owner => 'a')"),
            format!("SELECT wf_complete('{id}', owner => 'a')"),
            format!("SELECT wf_fail('{id}', 'no', owner => 'a')"),
        ] {
            assert_error(&call, "55006", "is not leased to a");
        }
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.steps WHERE workflow_id = '{id}'"
            )),
            Some(1),
            "an expired owner wrote nothing"
        );
        run("SELECT count(*) FROM wf_claim('fenced', 'b')");
        assert_eq!(
            one::<pgrx::JsonB>(&format!(
                "SELECT wf_checkpoint('{id}', 'one', owner => 'b')"
            ))
            .map(|j| j.0),
            Some(serde_json::json!(1)),
            "the new owner replays the recorded step"
        );
        run(&format!(
            "SELECT wf_complete('{id}', '\"done\"', owner => 'b')"
        ));
        // Repeating the transition made is a no-op, whoever asks; another is 55000.
        run(&format!("SELECT wf_complete('{id}', owner => 'b')"));
        run(&format!("SELECT wf_complete('{id}')"));
        assert_error(
            &format!("SELECT wf_fail('{id}', 'late')"),
            "55000",
            "is completed; wf_fail needs a running workflow",
        );
        // Its owners are stale now, like owners whose lease ran out: a twin of a push
        // handler's request, finding the workflow finished, hears "stop".
        for call in [
            format!("SELECT wf_checkpoint('{id}', 'three', owner => 'b')"),
            format!("SELECT wf_heartbeat('{id}', owner => 'b')"),
            format!("SELECT wf_sleep('{id}', 'nap', now(), owner => 'b')"),
            format!("SELECT wf_wait('{id}', 'signal', 'go', owner => 'b')"),
        ] {
            assert_error(&call, "55006", "is not leased to b");
        }
        assert_error(
            &format!("SELECT wf_checkpoint('{id}', 'three')"),
            "55000",
            "is completed; wf_checkpoint needs a running workflow",
        );
        assert_eq!(
            one::<pgrx::JsonB>(&format!(
                "SELECT output FROM workflow.workflows WHERE id = '{id}'"
            ))
            .map(|j| j.0),
            Some(serde_json::json!("done"))
        );
    }

    #[pg_test]
    fn wf_heartbeat_renews_a_held_lease_and_fences_a_parked_workflow() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('beating', owner => 'a')")
            .unwrap()
            .to_string();
        assert_eq!(
            one::<bool>(&format!(
                "SELECT wf_heartbeat('{id}', 'a', interval '1 hour') > now() + interval '59 minutes'"
            )),
            Some(true)
        );
        assert_eq!(
            one::<bool>(&format!(
                "SELECT lease_expires_at > now() + interval '59 minutes' FROM workflow.workflows WHERE id = '{id}'"
            )),
            Some(true)
        );
        run(&format!(
            "SELECT wf_sleep('{id}', 'nap', now() + interval '1 hour', owner => 'a')"
        ));
        assert_error(
            &format!("SELECT wf_heartbeat('{id}')"),
            "55000",
            "is parked",
        );
        // The owner that parked it is stale now, as every write that names it says (G7):
        // a push handler's retried request must hear "stop", not a usage error.
        for call in [
            format!("SELECT wf_heartbeat('{id}', owner => 'a')"),
            format!("SELECT wf_checkpoint('{id}', 'one', owner => 'a')"),
            format!("SELECT wf_wait('{id}', 'signal', 'go', owner => 'a')"),
        ] {
            assert_error(&call, "55006", "is not leased to a");
        }
        assert_error(
            "SELECT wf_heartbeat('00000000-0000-0000-0000-000000000000')",
            "P0002",
            "does not exist",
        );
    }

    /// A recovery is a claim of an owner's expired lease; a claim after a sleep is not, and
    /// a checkpoint restarts the count.
    #[pg_test]
    fn only_recoveries_count_and_a_checkpoint_forgives_them() {
        run("SET workflow.max_recovery_attempts = 2");
        let id = one::<pgrx::Uuid>("SELECT wf_start('sleepy', owner => 'a')")
            .unwrap()
            .to_string();
        let attempts = || {
            one::<i32>(&format!(
                "SELECT recovery_attempts FROM workflow.workflows WHERE id = '{id}'"
            ))
        };
        for n in 0..12 {
            run(&format!(
                "SELECT wf_sleep('{id}', 'nap-{n}', now() - interval '1 second')"
            ));
            assert_eq!(
                one::<i64>("SELECT count(*) FROM wf_claim('sleepy', 'a')"),
                Some(1),
                "sleep {n}"
            );
        }
        assert_eq!(attempts(), Some(0), "twelve sleeps are no recovery");
        for expected in [1, 2] {
            expire_lease(&id);
            run("SELECT count(*) FROM wf_claim('sleepy', 'b')");
            assert_eq!(attempts(), Some(expected));
        }
        run(&format!("SELECT wf_checkpoint('{id}', 'progress')"));
        assert_eq!(attempts(), Some(0), "a checkpoint restarts the count");
        for _ in 0..3 {
            expire_lease(&id);
            run("SELECT count(*) FROM wf_claim('sleepy', 'b')");
        }
        assert_eq!(
            one::<String>(&format!(
                "SELECT status FROM workflow.workflows WHERE id = '{id}'"
            ))
            .as_deref(),
            Some("failed"),
            "the third recovery in a row is past the cap"
        );
    }

    /// `wf_claim(NULL, …)`: the oldest ready workflows whatever their name.
    #[pg_test]
    fn a_claim_without_a_name_takes_the_oldest_ready_workflows_of_any_name() {
        let mut ids = Vec::new();
        for (name, expired) in [
            ("any-x", 20),
            ("any-y", 10),
            ("any-z", 30),
            ("any-live", -60),
        ] {
            let id = one::<pgrx::Uuid>(&format!("SELECT wf_start('{name}', owner => 'a')"))
                .unwrap()
                .to_string();
            run(&format!(
                "UPDATE workflow.runs SET lease_expires_at = now() - interval '{expired} seconds' WHERE id = '{id}'"
            ));
            ids.push(id);
        }
        let claim = |max: i32| {
            let mut claimed: Vec<String> = Spi::connect(|client| {
                client
                    .select(
                        &format!("SELECT wf_claim(NULL, 'b', max => {max})::text"),
                        None,
                        &[],
                    )?
                    .map(|row| row.get::<String>(1).map(Option::unwrap_or_default))
                    .collect::<Result<Vec<_>, _>>()
            })
            .unwrap();
            claimed.sort();
            claimed
        };
        let mut oldest_two = vec![ids[2].clone(), ids[0].clone()];
        oldest_two.sort();
        assert_eq!(claim(2), oldest_two, "z then x: the oldest expiries");
        assert_eq!(claim(5), vec![ids[1].clone()], "y; the live lease stays");
        assert_eq!(claim(5), Vec::<String>::new());
    }

    #[pg_test]
    fn wf_find_returns_the_keyed_workflow_or_null() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('found', idempotency_key => 'k-1')").unwrap();
        assert_eq!(
            one::<pgrx::Uuid>("SELECT wf_find('found', 'k-1')"),
            Some(id)
        );
        assert_eq!(one::<pgrx::Uuid>("SELECT wf_find('found', 'k-2')"), None);
        assert_eq!(one::<pgrx::Uuid>("SELECT wf_find('other', 'k-1')"), None);
        assert_error("SELECT wf_find('found', NULL)", "22004", "idempotency_key");
    }

    #[pg_test]
    fn g3_replayed_checkpoint_writes_nothing_and_returns_the_recorded_output() {
        let id = start("transfer");
        run(&format!(
            "SELECT wf_checkpoint('{id}', 'debit', '{{\"balance\":90}}')"
        ));
        let before = one::<String>(&format!(
            "SELECT ctid::text FROM workflow.checkpoints WHERE workflow_id = '{id}'"
        ));
        let replay = one::<pgrx::JsonB>(&format!(
            "SELECT wf_checkpoint('{id}', 'debit', '{{\"balance\":80}}')"
        ))
        .unwrap();
        assert_eq!(
            replay.0,
            serde_json::json!({"balance": 90}),
            "the first output wins"
        );
        let after = one::<String>(&format!(
            "SELECT ctid::text FROM workflow.checkpoints WHERE workflow_id = '{id}'"
        ));
        assert_eq!(before, after, "the checkpoint row must not be rewritten");
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.checkpoints WHERE workflow_id = '{id}'"
            )),
            Some(1)
        );
    }

    #[pg_test]
    fn g3_a_step_recorded_without_output_reads_as_json_null_not_as_missing() {
        let id = start("transfer");
        assert_eq!(
            one::<bool>(&format!("SELECT wf_step('{id}', 'debit') IS NULL")),
            Some(true)
        );
        run(&format!("SELECT wf_checkpoint('{id}', 'debit')"));
        assert_eq!(
            one::<String>(&format!("SELECT wf_step('{id}', 'debit')::text")).as_deref(),
            Some("null")
        );
    }

    #[pg_test]
    fn wf_checkpoint_renews_the_lease_by_the_owners_lease_duration() {
        let id = start("transfer");
        expire_lease(&id);
        run(&format!("SELECT wf_checkpoint('{id}', 'debit')"));
        let left = one::<f64>(&format!(
            "SELECT extract(epoch FROM lease_expires_at - statement_timestamp())::float8 FROM wf_status('{id}')"
        ))
        .unwrap();
        assert!((59.0..=61.0).contains(&left), "{left}");
    }

    #[pg_test]
    fn wf_checkpoint_keeps_steps_apart_per_workflow() {
        let (a, b) = (start("transfer"), start("transfer"));
        run(&format!("SELECT wf_checkpoint('{a}', 'debit', '1')"));
        assert_eq!(
            one::<bool>(&format!("SELECT wf_step('{b}', 'debit') IS NULL")),
            Some(true)
        );
    }

    #[pg_test]
    fn g1_a_checkpoint_rolled_back_to_a_savepoint_is_not_recorded() {
        let id = start("transfer");
        run(&format!(
            "DO $$ BEGIN
                 BEGIN
                     PERFORM wf_checkpoint('{id}', 'debit', '1');
                     RAISE EXCEPTION 'business rule failed';
                 EXCEPTION WHEN raise_exception THEN NULL;
                 END;
             END $$"
        ));
        assert_eq!(
            one::<bool>(&format!("SELECT wf_step('{id}', 'debit') IS NULL")),
            Some(true)
        );
        assert_eq!(
            one::<i32>(&format!("SELECT steps_done FROM wf_status('{id}')")),
            Some(0)
        );
    }

    #[pg_test]
    fn g1_a_start_rolled_back_to_a_savepoint_leaves_no_workflow_and_frees_its_key() {
        run("DO $$ BEGIN
                 BEGIN
                     PERFORM wf_start('transfer', NULL, 'rolled-back');
                     RAISE EXCEPTION 'abort';
                 EXCEPTION WHEN raise_exception THEN NULL;
                 END;
             END $$");
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.runs WHERE idempotency_key = 'rolled-back'"),
            Some(0)
        );
        assert!(one::<pgrx::Uuid>("SELECT wf_start('transfer', NULL, 'rolled-back')").is_some());
    }

    // ---- terminal transitions ----

    #[pg_test]
    fn wf_complete_finishes_with_output_and_releases_the_lease() {
        let id = start("transfer");
        run(&format!("SELECT wf_complete('{id}', '{{\"done\":1}}')"));
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(
            one::<String>(&row.replace("{}", "status")).as_deref(),
            Some("completed")
        );
        assert_eq!(
            one::<i64>(&row.replace("{}", "(output->>'done')::bigint")),
            Some(1)
        );
        assert_eq!(
            one::<bool>(&row.replace(
                "{}",
                "finished_at IS NOT NULL AND owner IS NULL AND lease_expires_at IS NULL"
            )),
            Some(true)
        );
    }

    #[pg_test]
    fn wf_fail_and_wf_cancel_record_their_outcome() {
        let (failed, cancelled) = (start("transfer"), start("transfer"));
        run(&format!("SELECT wf_fail('{failed}', 'card declined')"));
        run(&format!("SELECT wf_cancel('{cancelled}')"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || '/' || error FROM wf_status('{failed}')"
            ))
            .as_deref(),
            Some("failed/card declined")
        );
        assert_eq!(
            one::<String>(&format!("SELECT status FROM wf_status('{cancelled}')")).as_deref(),
            Some("cancelled")
        );
    }

    #[pg_test]
    fn a_terminal_workflow_accepts_no_more_steps_or_transitions() {
        let id = start("transfer");
        run(&format!("SELECT wf_checkpoint('{id}', 'debit')"));
        run(&format!("SELECT wf_complete('{id}')"));
        let not_running = format!("workflow {id} is completed");
        assert_error(
            &format!("SELECT wf_checkpoint('{id}', 'credit')"),
            "55000",
            &not_running,
        );
        assert_error(
            &format!("SELECT wf_checkpoint('{id}', 'debit')"),
            "55000",
            &not_running,
        );
        assert_error(
            &format!("SELECT wf_sleep('{id}', 'wait', now())"),
            "55000",
            &not_running,
        );
        // Repeating the transition made is a no-op (G3); another one is refused.
        run(&format!("SELECT wf_complete('{id}')"));
        assert_error(
            &format!("SELECT wf_fail('{id}', 'late')"),
            "55000",
            "wf_fail",
        );
        assert_error(&format!("SELECT wf_cancel('{id}')"), "55000", "wf_cancel");
        assert_eq!(
            one::<String>(&format!("SELECT wf_step('{id}', 'debit')::text")).as_deref(),
            Some("null")
        );
    }

    // ---- wf_claim and wf_sleep ----

    #[pg_test]
    fn a_live_lease_is_not_claimable() {
        let name = "claim-live";
        start(name);
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM wf_claim('{name}', 'other', max => 10)"
            )),
            Some(0)
        );
    }

    #[pg_test]
    fn an_expired_lease_is_claimed_with_a_new_owner_lease_and_attempt() {
        let name = "claim-expired";
        let id = start(name);
        expire_lease(&id);
        let claimed = one::<pgrx::Uuid>(&format!(
            "SELECT wf_claim('{name}', 'rescuer', interval '2 minutes')"
        ))
        .unwrap();
        assert_eq!(claimed.to_string(), id);
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(
            one::<String>(&row.replace("{}", "owner")).as_deref(),
            Some("rescuer")
        );
        assert_eq!(one::<i32>(&row.replace("{}", "recovery_attempts")), Some(1));
        let left = one::<f64>(&row.replace(
            "{}",
            "extract(epoch FROM lease_expires_at - statement_timestamp())::float8",
        ))
        .unwrap();
        assert!((119.0..=121.0).contains(&left), "{left}");
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM wf_claim('{name}', 'third')")),
            Some(0),
            "claimed once only"
        );
        // The claimer's lease length is what its checkpoints renew by.
        expire_lease(&id);
        run(&format!("SELECT wf_checkpoint('{id}', 'step')"));
        let renewed = one::<f64>(&row.replace(
            "{}",
            "extract(epoch FROM lease_expires_at - statement_timestamp())::float8",
        ))
        .unwrap();
        assert!((119.0..=121.0).contains(&renewed), "{renewed}");
    }

    #[pg_test]
    fn wf_claim_hands_out_at_most_max_oldest_expiry_first_and_only_of_its_name() {
        let name = "claim-max";
        let ids: Vec<String> = (0..3).map(|_| start(name)).collect();
        for (age, id) in ids.iter().enumerate() {
            run(&format!(
                "UPDATE workflow.runs SET lease_expires_at = now() - interval '{} minutes' WHERE id = '{id}'",
                age + 1
            ));
        }
        let other = start("claim-other-name");
        expire_lease(&other);
        let claimed = one::<String>(&format!(
            "SELECT string_agg(id::text, ',') FROM wf_claim('{name}', 'r', max => 2) id"
        ))
        .unwrap();
        assert_eq!(claimed, format!("{},{}", ids[2], ids[1]));
    }

    #[pg_test]
    fn past_max_recovery_attempts_a_claim_fails_the_workflow() {
        run("SET LOCAL workflow.max_recovery_attempts = 2");
        let name = "claim-cap";
        let id = start(name);
        for attempt in 1..=2 {
            expire_lease(&id);
            assert_eq!(
                one::<i64>(&format!("SELECT count(*) FROM wf_claim('{name}', 'r')")),
                Some(1),
                "attempt {attempt}"
            );
        }
        expire_lease(&id);
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM wf_claim('{name}', 'r')")),
            Some(0)
        );
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(
            one::<String>(&row.replace("{}", "status")).as_deref(),
            Some("failed")
        );
        assert_eq!(one::<i32>(&row.replace("{}", "recovery_attempts")), Some(3));
        assert!(
            one::<String>(&row.replace("{}", "error"))
                .unwrap()
                .contains("max_recovery_attempts is 2")
        );
    }

    #[pg_test]
    fn a_failed_workflow_does_not_use_up_a_claim_slot() {
        run("SET LOCAL workflow.max_recovery_attempts = 10");
        let name = "claim-slot";
        let doomed = start(name);
        run(&format!(
            "UPDATE workflow.runs SET recovery_attempts = 10, lease_expires_at = now() - interval '1 hour' WHERE id = '{doomed}'"
        ));
        let healthy = start(name);
        expire_lease(&healthy);
        let claimed = one::<String>(&format!(
            "SELECT string_agg(id::text, ',') FROM wf_claim('{name}', 'r') id"
        ));
        assert_eq!(claimed, Some(healthy));
        assert_eq!(
            one::<String>(&format!("SELECT status FROM wf_status('{doomed}')")).as_deref(),
            Some("failed")
        );
    }

    #[pg_test]
    fn wf_sleep_releases_the_lease_until_its_time_and_is_replay_safe() {
        let name = "sleeper";
        let id = start(name);
        run(&format!(
            "SELECT wf_sleep('{id}', 'cool-off', now() + interval '1 hour')"
        ));
        let row = format!("SELECT {{}} FROM wf_status('{id}')");
        assert_eq!(one::<bool>(&row.replace("{}", "owner IS NULL")), Some(true));
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM wf_claim('{name}', 'r')")),
            Some(0),
            "asleep"
        );
        // Replaying the sleep with another time changes nothing.
        run(&format!(
            "SELECT wf_sleep('{id}', 'cool-off', now() - interval '1 hour')"
        ));
        assert_eq!(
            one::<bool>(&row.replace("{}", "lease_expires_at = now() + interval '1 hour'")),
            Some(true)
        );
        assert!(
            one::<String>(&format!(
                "SELECT wf_step('{id}', 'cool-off')->>'sleep_until'"
            ))
            .is_some()
        );
        run(&format!(
            "UPDATE workflow.runs SET lease_expires_at = now() WHERE id = '{id}'"
        ));
        assert_eq!(
            one::<i64>(&format!("SELECT count(*) FROM wf_claim('{name}', 'r')")),
            Some(1),
            "awake"
        );
    }

    // ---- views and retention ----

    #[pg_test]
    fn the_views_show_runs_and_steps() {
        let id = start("viewed");
        run(&format!(
            "SELECT wf_checkpoint('{id}', 'a', '1'), wf_checkpoint('{id}', 'b', '2')"
        ));
        assert_eq!(
            one::<String>(&format!("SELECT name || ' ' || steps_done || ' ' || last_step FROM workflow.workflows WHERE id = '{id}'")).as_deref(),
            Some("viewed 2 b")
        );
        assert_eq!(
            one::<String>(&format!("SELECT string_agg(step, ',' ORDER BY recorded_at, step) FROM workflow.steps WHERE workflow_id = '{id}'")).as_deref(),
            Some("a,b")
        );
    }

    #[pg_test]
    fn purge_finished_removes_old_finished_runs_with_their_steps_in_batches() {
        run("SET LOCAL workflow.retention = '1h'");
        let (old, recent, running) = (start("purge"), start("purge"), start("purge"));
        for id in [&old, &recent] {
            run(&format!(
                "SELECT wf_checkpoint('{id}', 's'), wf_complete('{id}')"
            ));
        }
        run(&format!(
            "UPDATE workflow.runs SET finished_at = now() - interval '2 hours' WHERE id = '{old}'"
        ));
        let removed = one::<i64>("SELECT workflow.purge_finished(1000)").unwrap();
        assert!(removed >= 1);
        let left = one::<String>("SELECT string_agg(id::text, ',' ORDER BY created_at, id::text) FROM workflow.runs WHERE name = 'purge'").unwrap();
        assert!(
            !left.contains(&old) && left.contains(&recent) && left.contains(&running),
            "{left}"
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.checkpoints WHERE workflow_id = '{old}'"
            )),
            Some(0)
        );
        assert_error(
            "SELECT workflow.purge_finished(0)",
            "22023",
            "batch_size must be between 1 and 100000",
        );
    }

    #[pg_test]
    fn purging_a_workflow_keeps_its_dead_messages_and_their_reference() {
        run("SET LOCAL workflow.retention = '1h'");
        let id = start("purge-messages");
        let message = one::<i64>(&format!(
            "SELECT wf_enqueue('{HOOK}', '{{}}', workflow => '{id}', step => 'call')"
        ))
        .unwrap();
        run(&format!("SELECT wf_complete('{id}')"));
        run(&format!(
            "UPDATE workflow.runs SET finished_at = now() - interval '2 hours' WHERE id = '{id}'"
        ));
        run(&format!(
            "UPDATE workflow.outbox SET status = 'dead', finished_at = now() WHERE id = {message}"
        ));
        assert!(one::<i64>("SELECT workflow.purge_finished(1000)").unwrap() >= 1);
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || workflow_id || ' ' || step FROM workflow.outbox WHERE id = {message}"
            )),
            Some(format!("dead {id} call"))
        );
    }

    /// The invariants the schema leaves to its writers (see the domains in schema.sql),
    /// after every transition the functions make; the dispatcher's transitions are checked
    /// the same way in tests/tests/delivery_protocol.rs.
    #[pg_test]
    fn the_invariants_between_columns_hold() {
        let ids: Vec<String> = (0..5).map(|_| start("invariants")).collect();
        run(&format!(
            "SELECT wf_checkpoint('{}', 'a'), wf_complete('{}', '1')",
            ids[0], ids[0]
        ));
        run(&format!("SELECT wf_fail('{}', 'no')", ids[1]));
        run(&format!(
            "SELECT wf_enqueue('{HOOK}', '{{}}', workflow => '{}', step => 'call')",
            ids[2]
        ));
        run(&format!("SELECT wf_cancel('{}')", ids[2]));
        run(&format!(
            "SELECT wf_sleep('{}', 'nap', now() - interval '1 second')",
            ids[3]
        ));
        run("SELECT count(*) FROM wf_claim('invariants', 'me', max => 5)");
        run("SELECT wf_endpoint('inv', 'https://inv.example.com/hook')");
        let cancelled = one::<i64>("SELECT wf_enqueue('inv', '{}')").unwrap();
        run(&format!("SELECT wf_cancel_message({cancelled})"));
        run(&format!("SELECT wf_retry({cancelled})"));
        run(&format!(
            "SELECT wf_enqueue('{HOOK}', '{{}}', ordering_key => 'k')"
        ));
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM workflow.runs WHERE (status = 'running') <> (finished_at IS NULL)"
            ),
            Some(0)
        );
        assert_eq!(
            one::<i64>(
                "SELECT count(*) FROM workflow.outbox
                  WHERE (status = 'pending') <> (finished_at IS NULL)
                     OR (url IS NULL) = (endpoint IS NULL)
                     OR (step IS NOT NULL AND workflow_id IS NULL)
                     OR (parked IS NOT NULL AND status <> 'pending')"
            ),
            Some(0)
        );
        // The domains still refuse a status that does not exist.
        assert_error(
            &format!(
                "UPDATE workflow.runs SET status = 'paused' WHERE id = '{}'",
                ids[4]
            ),
            "23514",
            "run_status",
        );
        assert_error(
            &format!("UPDATE workflow.outbox SET status = 'sent' WHERE id = {cancelled}"),
            "23514",
            "message_status",
        );
    }

    // ---- bad input ----

    #[pg_test]
    fn null_arguments_are_rejected_with_22004() {
        let id = start("nulls");
        for (query, arg) in [
            ("SELECT wf_start(NULL)".to_string(), "name"),
            ("SELECT wf_checkpoint(NULL, 's')".to_string(), "workflow"),
            (format!("SELECT wf_checkpoint('{id}', NULL)"), "step"),
            (format!("SELECT wf_step('{id}', NULL)"), "step"),
            ("SELECT wf_complete(NULL)".to_string(), "workflow"),
            (format!("SELECT wf_fail('{id}', NULL)"), "error"),
            ("SELECT wf_cancel(NULL)".to_string(), "workflow"),
            ("SELECT * FROM wf_status(NULL)".to_string(), "workflow"),
            ("SELECT wf_release(NULL)".to_string(), "workflow"),
            ("SELECT wf_claim('n', 'o', max => NULL)".to_string(), "max"),
            (format!("SELECT wf_sleep('{id}', 's', NULL)"), "until"),
        ] {
            assert_error(&query, "22004", &format!("{arg} must not be NULL"));
        }
    }

    #[pg_test]
    fn empty_long_and_unprintable_names_are_rejected() {
        assert_error("SELECT wf_start('')", "22023", "name must not be empty");
        assert_error("SELECT wf_start('   ')", "22023", "name must not be empty");
        assert_error(
            "SELECT wf_start('a', NULL, '')",
            "22023",
            "idempotency_key must not be empty",
        );
        assert_error(
            "SELECT wf_start('a', owner => '')",
            "22023",
            "owner must not be empty",
        );
        assert_error(
            "SELECT wf_start(repeat('x', 256))",
            "22001",
            "name is 256 characters long; at most 255",
        );
        assert_error(
            "SELECT wf_start(E'tab\\there')",
            "22023",
            "name must not contain control characters",
        );
        let id = start("names");
        assert_error(
            &format!("SELECT wf_checkpoint('{id}', '')"),
            "22023",
            "step must not be empty",
        );
        assert_error(
            &format!("SELECT wf_fail('{id}', ' ')"),
            "22023",
            "error must not be empty",
        );
    }

    #[pg_test]
    fn oversized_documents_are_rejected_with_54000() {
        run("SET LOCAL workflow.max_payload_bytes = '1kB'");
        let big = "(SELECT jsonb_build_object('blob', repeat('x', 2000)))";
        assert_error(
            &format!("SELECT wf_start('big', {big})"),
            "54000",
            "bytes; workflow.max_payload_bytes allows at most 1024",
        );
        // Measured uncompressed: a document read from a table arrives compressed.
        run(
            "CREATE TEMP TABLE docs AS SELECT jsonb_build_object('blob', repeat('x', 20000)) AS doc",
        );
        assert_eq!(
            one::<bool>("SELECT pg_column_size(doc) < 1024 FROM docs"),
            Some(true)
        );
        assert_error(
            "SELECT wf_start('big', doc) FROM docs",
            "54000",
            "input is 200",
        );
        let id = start("big");
        assert_error(
            &format!("SELECT wf_checkpoint('{id}', 's', {big})"),
            "54000",
            "output is",
        );
        assert_error(
            &format!("SELECT wf_complete('{id}', {big})"),
            "54000",
            "output is",
        );
        assert_error(
            &format!("SELECT wf_fail('{id}', repeat('x', 2000))"),
            "54000",
            "error is 2000 bytes",
        );
        assert_eq!(
            one::<String>(&format!("SELECT status FROM wf_status('{id}')")).as_deref(),
            Some("running")
        );
    }

    #[pg_test]
    fn unknown_workflows_are_rejected_with_p0002() {
        let unknown = "00000000-0000-0000-0000-000000000001";
        let message = format!("workflow {unknown} does not exist");
        for query in [
            format!("SELECT wf_checkpoint('{unknown}', 's')"),
            format!("SELECT wf_step('{unknown}', 's')"),
            format!("SELECT wf_complete('{unknown}')"),
            format!("SELECT wf_fail('{unknown}', 'e')"),
            format!("SELECT wf_cancel('{unknown}')"),
            format!("SELECT * FROM wf_status('{unknown}')"),
            format!("SELECT wf_sleep('{unknown}', 's', now())"),
        ] {
            assert_error(&query, "P0002", &message);
        }
    }

    #[pg_test]
    fn bad_claim_arguments_are_rejected() {
        assert_error(
            "SELECT wf_claim('n', 'o', interval '0')",
            "22023",
            "lease must be a positive interval",
        );
        assert_error(
            "SELECT wf_claim('n', 'o', interval '-1 minute')",
            "22023",
            "lease must be a positive interval",
        );
        assert_error(
            "SELECT wf_claim('n', 'o', max => 0)",
            "22023",
            "max must be between 1 and 10000, not 0",
        );
        assert_error(
            "SELECT wf_claim('', 'o')",
            "22023",
            "name must not be empty",
        );
    }

    #[pg_test]
    fn settings_reject_values_out_of_range() {
        assert_error(
            "SET workflow.lease_duration = 0",
            "22023",
            "workflow.lease_duration",
        );
        assert_error(
            "SET workflow.max_payload_bytes = 10",
            "22023",
            "workflow.max_payload_bytes",
        );
        assert_error(
            "SET workflow.max_recovery_attempts = -1",
            "22023",
            "workflow.max_recovery_attempts",
        );
        assert_error("SET workflow.no_such_setting = 1", "42602", "workflow");
    }

    // ---- security ----

    #[pg_test]
    fn an_application_role_can_use_the_api_but_not_the_tables() {
        run("CREATE ROLE wf_test_app NOLOGIN");
        run("CREATE ROLE wf_test_stranger NOLOGIN");
        run("GRANT workflow_user TO wf_test_app");
        run("SET LOCAL ROLE wf_test_app");
        let id = start("as-app");
        run(&format!(
            "SELECT wf_checkpoint('{id}', 'debit'), wf_complete('{id}')"
        ));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.workflows WHERE id = '{id}'"
            )),
            Some(1)
        );
        assert_error(
            "SELECT count(*) FROM workflow.runs",
            "42501",
            "permission denied",
        );
        assert_error(
            "SELECT workflow.purge_finished()",
            "42501",
            "permission denied",
        );
        // An application signals and waits, but does not choose where workflows are pushed.
        let waiting = start("as-app-waits");
        run(&format!(
            "SELECT wf_signal('{waiting}', 'go'), wf_wait('{waiting}', 'went', 'go')"
        ));
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.signals WHERE workflow_id = '{waiting}'"
            )),
            Some(1)
        );
        for forbidden in [
            "SELECT wf_handler('as-app', 'https://attacker.example.com/')",
            "SELECT wf_handler_drop('as-app')",
            "SELECT count(*) FROM workflow.handlers",
            "SELECT count(*) FROM workflow.run_signals",
        ] {
            assert_error(forbidden, "42501", "permission denied");
        }
        run("RESET ROLE");
        run("SET LOCAL ROLE wf_test_stranger");
        assert_error(
            "SELECT wf_start('as-stranger')",
            "42501",
            "permission denied",
        );
        assert_error(
            "SELECT * FROM workflow.workflows",
            "42501",
            "permission denied",
        );
        run("RESET ROLE");
    }

    #[pg_test]
    fn the_api_is_immune_to_the_callers_search_path() {
        run("CREATE SCHEMA evil");
        run(
            "CREATE FUNCTION evil.statement_timestamp() RETURNS timestamptz LANGUAGE sql AS 'SELECT now() - interval ''1 year'''",
        );
        run("SET LOCAL search_path = evil, public, pg_catalog");
        let id = start("pinned");
        assert_eq!(
            one::<bool>(&format!(
                "SELECT lease_expires_at > now() FROM public.wf_status('{id}')"
            )),
            Some(true)
        );
    }

    // ---- the outbox ----

    const HOOK: &str = "https://hooks.example.com/in";

    fn enqueue(extra: &str) -> i64 {
        one::<i64>(&format!(
            "SELECT wf_enqueue('{HOOK}', '{{\"n\": 1}}'{extra})"
        ))
        .unwrap()
    }

    #[pg_test]
    fn wf_enqueue_adds_a_pending_message_with_a_stable_webhook_id() {
        let id = enqueue("");
        let row = format!("SELECT {{}} FROM workflow.messages WHERE id = {id}");
        assert_eq!(
            one::<String>(&row.replace("{}", "status || ' ' || attempts || ' ' || target"))
                .unwrap(),
            format!("pending 0 {HOOK}")
        );
        assert_eq!(
            one::<bool>(&row.replace("{}", "webhook_id ~ '^msg_[0-9a-f]{32}$'")),
            Some(true)
        );
        assert_eq!(
            one::<String>(&format!("SELECT status FROM wf_message({id})")).as_deref(),
            Some("pending")
        );
    }

    #[pg_test]
    fn wf_enqueue_with_a_known_key_returns_the_first_message() {
        let first = enqueue(", idempotency_key => 'order-1'");
        let second = enqueue(", idempotency_key => 'order-1'");
        assert_eq!(first, second);
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.messages WHERE idempotency_key = 'order-1'"),
            Some(1)
        );
    }

    #[pg_test]
    fn wf_enqueue_honours_deliver_at() {
        let id = enqueue(", deliver_at => now() + interval '1 day'");
        assert_eq!(
            one::<bool>(&format!(
                "SELECT next_attempt_at = now() + interval '1 day' FROM workflow.messages WHERE id = {id}"
            )),
            Some(true)
        );
    }

    #[pg_test]
    fn wf_enqueue_to_a_named_endpoint_and_its_errors() {
        run("SELECT wf_endpoint('billing', 'https://billing.example.com/hook')");
        let id = one::<i64>("SELECT wf_enqueue('billing', '{}')").unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT target FROM workflow.messages WHERE id = {id}"
            ))
            .as_deref(),
            Some("billing")
        );
        assert_error(
            "SELECT wf_enqueue('shipping', '{}')",
            "42704",
            "endpoint \"shipping\" does not exist",
        );
    }

    #[pg_test]
    fn wf_enqueue_rejects_bad_input_at_once() {
        assert_error(
            "SELECT wf_enqueue(NULL, '{}')",
            "22004",
            "target must not be NULL",
        );
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', NULL)"),
            "22004",
            "payload must not be NULL",
        );
        assert_error(
            "SELECT wf_enqueue('ftp://example.com/x', '{}')",
            "22023",
            "target must use http or https",
        );
        assert_error(
            "SELECT wf_enqueue('https://user:pw@example.com/', '{}')",
            "22023",
            "target must not carry a user name or password",
        );
        assert_error(
            "SELECT wf_enqueue('https://', '{}')",
            "22023",
            "target is not a valid URL",
        );
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', '{{}}', '{{\"webhook-id\": \"x\"}}')"),
            "22023",
            "cannot be overridden",
        );
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', '{{}}', '[1]')"),
            "22023",
            "headers must be a JSON object",
        );
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', '{{}}', step => 'charge')"),
            "22023",
            "step needs workflow",
        );
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', '{{}}', idempotency_key => '')"),
            "22023",
            "idempotency_key must not be empty",
        );
        run("SET LOCAL workflow.max_payload_bytes = '1kB'");
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', jsonb_build_object('x', repeat('y', 2000)))"),
            "54000",
            "payload is",
        );
    }

    #[pg_test]
    fn wf_enqueue_for_a_workflow_needs_it_running() {
        let unknown = "00000000-0000-0000-0000-000000000002";
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', '{{}}', workflow => '{unknown}', step => 's')"),
            "P0002",
            "does not exist",
        );
        let id = start("enqueuer");
        run(&format!("SELECT wf_complete('{id}')"));
        assert_error(
            &format!("SELECT wf_enqueue('{HOOK}', '{{}}', workflow => '{id}', step => 's')"),
            "55000",
            "wf_enqueue needs a running workflow",
        );
    }

    #[pg_test]
    fn cancelling_a_workflow_cancels_its_pending_messages() {
        let id = start("cancelled-with-messages");
        let message = enqueue(&format!(", workflow => '{id}', step => 'notify'"));
        let other = enqueue("");
        run(&format!("SELECT wf_cancel('{id}')"));
        assert_eq!(
            one::<String>(&format!("SELECT status FROM wf_message({message})")).as_deref(),
            Some("cancelled")
        );
        assert_eq!(
            one::<String>(&format!("SELECT status FROM wf_message({other})")).as_deref(),
            Some("pending")
        );
    }

    #[pg_test]
    fn messages_can_be_cancelled_and_retried_only_from_the_right_state() {
        let id = enqueue("");
        assert_error(
            &format!("SELECT wf_retry({id})"),
            "55000",
            "message {id} is pending; wf_retry needs a dead or cancelled message"
                .replace("{id}", &id.to_string())
                .as_str(),
        );
        run(&format!("SELECT wf_cancel_message({id})"));
        assert_error(
            &format!("SELECT wf_cancel_message({id})"),
            "55000",
            "wf_cancel_message needs a pending message",
        );
        run(&format!(
            "UPDATE workflow.outbox SET attempts = 3 WHERE id = {id}"
        ));
        run(&format!("SELECT wf_retry({id})"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || attempts FROM wf_message({id})"
            ))
            .as_deref(),
            Some("pending 0")
        );
        for query in [
            "SELECT * FROM wf_message(-1)",
            "SELECT wf_retry(-1)",
            "SELECT wf_cancel_message(-1)",
        ] {
            assert_error(query, "P0002", "message -1 does not exist");
        }
        assert_error("SELECT wf_retry(NULL)", "22004", "id must not be NULL");
    }

    #[pg_test]
    fn the_dead_letters_view_shows_only_dead_messages() {
        let (dead, alive) = (enqueue(""), enqueue(""));
        run(&format!(
            "UPDATE workflow.outbox SET status = 'dead', finished_at = now() WHERE id = {dead}"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(id::text, ',') FROM workflow.dead_letters WHERE id IN ({dead}, {alive})"
            )),
            Some(dead.to_string())
        );
    }

    #[pg_test]
    fn wf_stats_counts_messages_and_says_when_no_dispatcher_runs() {
        enqueue("");
        let row = "SELECT {} FROM wf_stats()";
        assert!(one::<i64>(&row.replace("{}", "pending")).unwrap() >= 1);
        assert_eq!(
            one::<bool>(&row.replace("{}", "dispatcher_running")),
            Some(false),
            "this test cluster does not preload the library"
        );
        assert_eq!(
            one::<bool>(&row.replace("{}", "oldest_pending_age IS NOT NULL")),
            Some(true)
        );
    }

    #[pg_test]
    fn wf_stats_reads_no_delivered_history() {
        // Over 5,000 delivered messages: only the pending index, or an index condition
        // (the last minute), may bring outbox rows into the statement.
        assert_reads_no_history(
            dispatcher_plans(&crate::api::outbox::STATS, "int", "0"),
            "wf_stats",
        );
    }

    /// Asserts that `plans` bring outbox rows in only through the pending indexes or by an
    /// index condition.
    fn assert_reads_no_history(plans: Vec<serde_json::Value>, what: &str) {
        for plan in plans {
            for root in plan.as_array().into_iter().flatten() {
                each_plan_node(root, &mut |node| {
                    if node["Relation Name"].as_str() == Some("outbox") {
                        assert!(
                            matches!(
                                node["Index Name"].as_str(),
                                Some("outbox_due" | "outbox_parked")
                            ) || !node["Index Cond"].is_null(),
                            "{what} reads the outbox's history: {node:#}"
                        );
                    }
                });
            }
        }
    }

    /// The statement a metrics view's function runs, as the function runs it: with its
    /// settings (sequential scans off), so that its plan shows (the view's shows only a
    /// function scan).
    fn function_statement(function: &str) -> crate::db::Statement {
        for setting in proconfig(function) {
            let (name, value) = setting.split_once('=').unwrap();
            run(&format!("SELECT set_config('{name}', '{value}', true)"));
        }
        let body = one::<String>(&format!(
            "SELECT prosrc FROM pg_catalog.pg_proc WHERE oid = 'workflow.{function}'::regproc"
        ))
        .unwrap();
        crate::db::Statement {
            sql: Box::leak(body.into_boxed_str()),
            args: &[],
        }
    }

    /// A function's `SET` clauses, as `name=value`.
    fn proconfig(function: &str) -> Vec<String> {
        one::<Vec<String>>(&format!(
            "SELECT proconfig FROM pg_catalog.pg_proc WHERE oid = 'workflow.{function}'::regproc"
        ))
        .unwrap_or_default()
    }

    /// The metrics view is scraped every few seconds: over 5,000 delivered messages it may
    /// read the outbox only through the pending indexes or by an index condition.
    #[pg_test]
    fn the_metrics_read_no_delivered_history() {
        run("SELECT wf_endpoint('m', 'https://m.example.com/')");
        assert!(
            proconfig("metrics_rows").contains(&"enable_seqscan=off".to_string()),
            "the view's function forbids sequential scans"
        );
        let metrics = function_statement("metrics_rows");
        assert_reads_no_history(dispatcher_plans(&metrics, "int", "0"), "workflow.metrics");
        assert_eq!(
            one::<String>(
                "SELECT string_agg(coalesce(endpoint, '<urls>') || ':' || pending, ',' ORDER BY endpoint NULLS LAST)
                   FROM workflow.metrics"
            )
            .as_deref(),
            Some("m:0,<urls>:5000")
        );
    }

    /// Over 5,000 finished workflows, the workflow metrics read runs only through the
    /// partial index of running ones and the finished index's last minute.
    #[pg_test]
    fn the_workflow_metrics_read_no_finished_history() {
        run(
            "INSERT INTO workflow.runs (name, status, lease_duration, finished_at)
             SELECT 'wm', 'completed', '1 minute', now() - interval '2 days' FROM generate_series(1, 5000)",
        );
        run(
            "INSERT INTO workflow.runs (name, status, owner, lease_duration, lease_expires_at, finished_at)
             VALUES ('wm', 'running', 'me', '1 minute', now() + interval '1 hour', NULL),
                    ('wm', 'running', 'gone', '1 minute', now() - interval '1 second', NULL),
                    ('wm', 'running', NULL, '1 minute', now() + interval '1 hour', NULL),
                    ('wm', 'running', NULL, '1 minute', NULL, NULL),
                    ('wm', 'failed', NULL, '1 minute', NULL, now()),
                    ('other', 'completed', NULL, '1 minute', NULL, now())",
        );
        run("ANALYZE workflow.runs");
        let body = function_statement("workflow_metrics_rows").sql;
        let plan = one::<pgrx::Json>(&format!("EXPLAIN (FORMAT JSON) {body}"))
            .unwrap()
            .0;
        for root in plan.as_array().into_iter().flatten() {
            each_plan_node(root, &mut |node| {
                if node["Relation Name"].as_str() == Some("runs") {
                    let index = node["Index Name"].as_str();
                    // Running runs only: the partial indexes on them, and the last minute
                    // of the finished ones.
                    assert!(
                        matches!(
                            index,
                            Some("runs_claimable" | "runs_tenants" | "runs_leased")
                        ) || (index == Some("runs_finished") && !node["Index Cond"].is_null()),
                        "the workflow metrics read finished history: {node:#}"
                    );
                }
            });
        }
        assert_eq!(
            one::<String>(
                "SELECT string_agg(concat_ws(':', name, ready, leased, parked, completed_last_minute,
                                             failed_last_minute, cancelled_last_minute), ',' ORDER BY name)
                   FROM workflow.workflow_metrics"
            )
            .as_deref(),
            Some("other:0:0:0:1:0:0,wm:1:1:2:0:1:0")
        );
    }

    /// The workflow counters count each start once (a repeated key is no start) and each
    /// finish by its outcome, a cancel's descendants included; retention never lowers
    /// them, and a name whose runs are all gone stays listed.
    #[pg_test]
    fn workflow_counters_only_grow_and_keep_idle_names() {
        let done = one::<pgrx::Uuid>("SELECT wf_start('cnt', owner => 'me')").unwrap();
        run("SELECT wf_start('cnt', idempotency_key => 'k', owner => 'me')");
        run("SELECT wf_start('cnt', idempotency_key => 'k', owner => 'me')");
        let parent = one::<pgrx::Uuid>("SELECT wf_start('cnt', owner => 'me')").unwrap();
        run(&format!(
            "SELECT wf_start('cnt.child', owner => 'me', parent => '{parent}')"
        ));
        run(&format!("SELECT wf_complete('{done}', owner => 'me')"));
        run("SELECT wf_fail(id, 'declined', 'me') FROM workflow.runs WHERE idempotency_key = 'k'");
        run(&format!("SELECT wf_cancel('{parent}')"));
        let counters = "SELECT string_agg(concat_ws(':', name, started_total, completed_total,
                                                    failed_total, cancelled_total), ','
                                          ORDER BY name)
                          FROM workflow.workflow_metrics";
        assert_eq!(
            one::<String>(counters).as_deref(),
            Some("cnt:3:1:1:1,cnt.child:1:0:0:1")
        );
        // As retention would leave it: every run gone, the counters and names kept.
        run("DELETE FROM workflow.checkpoints; DELETE FROM workflow.runs;");
        assert_eq!(
            one::<String>(counters).as_deref(),
            Some("cnt:3:1:1:1,cnt.child:1:0:0:1")
        );
    }

    // ---- endpoints ----

    #[pg_test]
    fn wf_endpoint_creates_updates_and_hides_its_secrets() {
        let secret =
            one::<String>("SELECT wf_endpoint('crm', 'https://crm.example.com/hook', 'generate')")
                .unwrap();
        assert!(secret.starts_with("whsec_"), "{secret}");
        run(
            "SELECT wf_endpoint('crm', 'https://crm.example.com/v2', headers => '{\"x-tenant\": \"acme\"}', max_attempts => 3)",
        );
        let row = "SELECT {} FROM workflow.endpoints WHERE name = 'crm'";
        assert_eq!(
            one::<String>(&row.replace("{}", "url")).as_deref(),
            Some("https://crm.example.com/v2")
        );
        assert_eq!(
            one::<i32>(&row.replace("{}", "secret_count")),
            Some(1),
            "a NULL secret keeps the current one"
        );
        assert_eq!(one::<i32>(&row.replace("{}", "max_attempts")), Some(3));
        assert_eq!(
            one::<bool>(
                "SELECT NOT EXISTS (SELECT FROM information_schema.columns WHERE table_schema = 'workflow' AND table_name = 'endpoints' AND column_name ILIKE '%secret%' AND column_name NOT IN ('secret_count', 'retiring_secret_count'))"
            ),
            Some(true)
        );
        let rotation = format!("{secret} whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw");
        assert!(
            one::<String>(&format!(
                "SELECT wf_endpoint('crm', 'https://crm.example.com/v2', '{rotation}')"
            ))
            .is_none()
        );
        assert_eq!(one::<i32>(&row.replace("{}", "secret_count")), Some(2));
    }

    /// An update changes only what it names; the documented empty values reset a field.
    #[pg_test]
    fn wf_endpoint_updates_only_the_fields_given() {
        let secret = one::<String>(
            "SELECT wf_endpoint('partner', 'https://partner.example.com/hook', 'generate',
                                headers => '{\"authorization\": \"Bearer t\"}', timeout => '5s',
                                max_attempts => 3, max_concurrency => 4, rate_per_second => 2.5,
                                event_types => '{order.*}', retry_schedule => '{1s,1min}')",
        )
        .unwrap();
        run("SELECT wf_endpoint('partner', 'https://partner.example.com/v2')");
        let row = "SELECT {} FROM workflow.endpoints WHERE name = 'partner'";
        let text = |column: &str| one::<String>(&row.replace("{}", column));
        assert_eq!(
            text("url").as_deref(),
            Some("https://partner.example.com/v2")
        );
        assert_eq!(
            text("header_names::text").as_deref(),
            Some("{authorization}")
        );
        assert_eq!(text("timeout::text").as_deref(), Some("00:00:05"));
        assert_eq!(text("max_attempts::text").as_deref(), Some("3"));
        assert_eq!(text("max_concurrency::text").as_deref(), Some("4"));
        assert_eq!(text("rate_per_second::text").as_deref(), Some("2.5"));
        assert_eq!(text("event_types::text").as_deref(), Some("{order.*}"));
        assert_eq!(
            text("retry_schedule::text").as_deref(),
            Some("{00:00:01,00:01:00}")
        );
        assert_eq!(
            one::<Vec<String>>(
                "SELECT secrets FROM workflow.endpoint_settings WHERE name = 'partner'"
            ),
            Some(vec![secret.clone()]),
            "the secret is kept"
        );
        assert_eq!(
            one::<String>(
                "SELECT headers->>'authorization' FROM workflow.endpoint_settings WHERE name = 'partner'"
            )
            .as_deref(),
            Some("Bearer t")
        );
        // A field on its own, without the URL.
        run("SELECT wf_endpoint('partner', max_concurrency => 8)");
        assert_eq!(text("max_concurrency::text").as_deref(), Some("8"));
        assert_eq!(
            text("url").as_deref(),
            Some("https://partner.example.com/v2")
        );
        run(
            "SELECT wf_endpoint('partner', headers => '{}', timeout => '0', max_attempts => 0,
                                max_concurrency => 0, rate_per_second => 0, event_types => '{}',
                                retry_schedule => '{}')",
        );
        for column in [
            "timeout",
            "max_attempts",
            "max_concurrency",
            "rate_per_second",
            "event_types",
            "retry_schedule",
        ] {
            assert_eq!(
                one::<bool>(&row.replace("{}", &format!("{column} IS NULL"))),
                Some(true),
                "{column} is reset"
            );
        }
        assert_eq!(text("header_names::text").as_deref(), Some("{}"));
        run("SELECT wf_endpoint('partner', secret => 'none')");
        assert_eq!(one::<i32>(&row.replace("{}", "secret_count")), Some(0));
    }

    /// A rotation signs with the new secret and the old ones until `keep_old` is up;
    /// replacing the secrets ends it.
    #[pg_test]
    fn wf_endpoint_rotate_keeps_the_old_secret_signing_for_a_while() {
        let old =
            one::<String>("SELECT wf_endpoint('rot', 'https://rot.example.com/', 'generate')")
                .unwrap();
        let new = one::<String>("SELECT wf_endpoint_rotate('rot', '1 hour')").unwrap();
        assert!(new.starts_with("whsec_") && new != old);
        let row = "SELECT {} FROM workflow.endpoints WHERE name = 'rot'";
        assert_eq!(one::<i32>(&row.replace("{}", "secret_count")), Some(1));
        assert_eq!(
            one::<i32>(&row.replace("{}", "retiring_secret_count")),
            Some(1)
        );
        assert_eq!(
            one::<bool>(&row.replace("{}", "retiring_until > now() + interval '59 minutes'")),
            Some(true)
        );
        let third = one::<String>("SELECT wf_endpoint_rotate('rot', '0')").unwrap();
        assert_eq!(
            one::<i32>(&row.replace("{}", "retiring_secret_count")),
            Some(0),
            "keep_old 0 stops the replaced secrets signing at once"
        );
        assert_eq!(
            one::<Vec<String>>("SELECT secrets FROM workflow.endpoint_settings WHERE name = 'rot'"),
            Some(vec![third])
        );
        run("SELECT wf_endpoint_rotate('rot')");
        run("SELECT wf_endpoint('rot', secret => 'generate')");
        assert_eq!(
            one::<i32>(&row.replace("{}", "retiring_secret_count")),
            Some(0)
        );
    }

    /// Rotating faster than `keep_old` retires the oldest secrets early: at most four are
    /// rotated out at once, the newest, so a request carries at most five signatures.
    #[pg_test]
    fn rapid_rotations_keep_only_the_newest_retiring_secrets() {
        let mut secrets = vec![
            one::<String>("SELECT wf_endpoint('fast', 'https://fast.example.com/', 'generate')")
                .unwrap(),
        ];
        for _ in 0..60 {
            secrets.push(one::<String>("SELECT wf_endpoint_rotate('fast', '1 day')").unwrap());
        }
        let (retiring, current) = (
            one::<Vec<String>>(
                "SELECT retiring_secrets FROM workflow.endpoint_settings WHERE name = 'fast'",
            )
            .unwrap(),
            one::<Vec<String>>(
                "SELECT secrets FROM workflow.endpoint_settings WHERE name = 'fast'",
            )
            .unwrap(),
        );
        assert_eq!(current, secrets[60..]);
        assert_eq!(retiring, secrets[56..60], "the four newest, oldest first");
        assert_eq!(
            one::<i32>("SELECT retiring_secret_count FROM workflow.endpoints WHERE name = 'fast'"),
            Some(4)
        );
    }

    /// wf_publish makes one message per enabled subscriber whose patterns match, with the
    /// Standard Webhooks payload structure, per-subscriber keys, and none without subscribers.
    #[pg_test]
    fn wf_publish_fans_out_to_matching_enabled_subscribers_once_per_key() {
        run(
            "SELECT wf_endpoint('email', 'https://email.example.com/', event_types => '{order.created,user.*}')",
        );
        run(
            "SELECT wf_endpoint('analytics', 'https://analytics.example.com/', event_types => '{*}')",
        );
        run(
            "SELECT wf_endpoint('partner', 'https://partner.example.com/', event_types => '{order.*}')",
        );
        run("SELECT wf_endpoint('off', 'https://off.example.com/', event_types => '{*}')");
        run("UPDATE workflow.endpoint_settings SET disabled_at = now() WHERE name = 'off'");
        run("SELECT wf_endpoint('none', 'https://none.example.com/')");
        let targets = |ids: &str| {
            one::<String>(&format!(
                "SELECT string_agg(endpoint, ',' ORDER BY endpoint) FROM workflow.messages
                  WHERE id = ANY ('{ids}'::bigint[])"
            ))
        };
        let ids = one::<Vec<i64>>(
            "SELECT wf_publish('order.created', '{\"order\": 7}', idempotency_key => 'o7')",
        )
        .unwrap();
        assert_eq!(ids.len(), 3);
        let list = format!(
            "{{{}}}",
            ids.iter().map(i64::to_string).collect::<Vec<_>>().join(",")
        );
        assert_eq!(targets(&list).as_deref(), Some("analytics,email,partner"));
        assert_eq!(
            one::<i64>(
                "SELECT count(DISTINCT webhook_id) FROM workflow.outbox WHERE idempotency_key LIKE 'workflow.publish:%:o7'"
            ),
            Some(3)
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT payload->>'type' || ' ' || (payload->'data')::text || ' ' ||
                        (payload->>'timestamp' IS NOT NULL)::text
                   FROM workflow.outbox WHERE id = {}",
                ids[0]
            ))
            .as_deref(),
            Some("order.created {\"order\": 7} true")
        );
        assert_eq!(
            one::<Vec<i64>>("SELECT wf_publish('order.created', '{}', idempotency_key => 'o7')"),
            Some(ids.clone()),
            "a repeated key returns the first publish's messages"
        );
        let user = one::<Vec<i64>>("SELECT wf_publish('user.signed_up', '{}')").unwrap();
        let list = format!(
            "{{{}}}",
            user.iter()
                .map(i64::to_string)
                .collect::<Vec<_>>()
                .join(",")
        );
        assert_eq!(targets(&list).as_deref(), Some("analytics,email"));
        run("SELECT wf_endpoint('analytics', event_types => '{}')");
        assert_eq!(
            one::<Vec<i64>>("SELECT wf_publish('invoice.paid', '{}')"),
            Some(vec![]),
            "no subscriber: nothing stored"
        );
        assert_error(
            "SELECT wf_publish('order.*', '{}')",
            "22023",
            "an event type has no *",
        );
        assert_error(
            "SELECT wf_publish('order.created', '{}', idempotency_key => 'workflow.publish:x')",
            "22023",
            "keys with it are the extension's own",
        );
    }

    /// wf_replay sends a window of an endpoint's messages in the given statuses again, and
    /// Retention lowers the kept counts, never the totals: the counters `workflow.metrics`
    /// gives Prometheus only grow, also across the fold of the deltas.
    #[pg_test]
    fn retention_lowers_the_kept_counts_but_not_the_counters() {
        run("SELECT wf_endpoint('ct', 'https://ct.example.com/')");
        run(
            "INSERT INTO workflow.outbox (endpoint, payload, status, attempts, finished_at, delivered_at)
             SELECT 'ct', '{}', 'delivered', 1, now() - d, now() - d
               FROM unnest(ARRAY[interval '3 days', '2 days', '1 minute']) d",
        );
        run(
            "INSERT INTO workflow.message_counts (status, n, endpoint) VALUES ('delivered', 3, 'ct')",
        );
        let counts = "SELECT delivered || ' kept, ' || delivered_total || ' in all' FROM workflow.metrics WHERE endpoint = 'ct'";
        assert_eq!(one::<String>(counts).as_deref(), Some("3 kept, 3 in all"));
        let purged = Spi::connect_mut(|c| {
            crate::dispatcher::housekeeping::purge_batch(c, std::time::Duration::from_secs(86_400))
        })
        .unwrap();
        assert_eq!(purged, 2, "the two older than a day");
        assert_eq!(one::<String>(counts).as_deref(), Some("1 kept, 3 in all"));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.message_counts WHERE endpoint = 'ct'"),
            Some(2),
            "folded into one row of each sign"
        );
        run(
            "INSERT INTO workflow.message_counts (status, n, endpoint) VALUES ('delivered', 1, 'ct')",
        );
        Spi::connect_mut(|c| {
            crate::dispatcher::housekeeping::purge_batch(c, std::time::Duration::from_secs(86_400))
        })
        .unwrap();
        assert_eq!(one::<String>(counts).as_deref(), Some("2 kept, 4 in all"));
    }

    /// only those; it is the owner's.
    #[pg_test]
    fn wf_replay_sends_a_window_of_an_endpoints_messages_again() {
        run("SELECT wf_endpoint('rp', 'https://rp.example.com/')");
        run("SELECT wf_endpoint('other', 'https://other.example.com/')");
        run(
            "INSERT INTO workflow.outbox (endpoint, payload, status, attempts, last_attempt,
                    last_started_at, finished_at)
             SELECT e, '{}', s, 3, 3, now() - (m || ' minutes')::interval,
                    now() - (m || ' minutes')::interval + interval '1 second'
               FROM (VALUES ('rp', 'dead', 90), ('rp', 'dead', 30), ('rp', 'dead', 10),
                            ('rp', 'delivered', 20), ('rp', 'cancelled', 15),
                            ('other', 'dead', 20)) v(e, s, m)",
        );
        run("INSERT INTO workflow.message_counts (status, n, endpoint)
             SELECT status, count(*), endpoint FROM workflow.outbox GROUP BY status, endpoint");
        assert_eq!(
            one::<i64>(
                "SELECT wf_replay('rp', now() - interval '1 hour', now() - interval '5 minutes')"
            ),
            Some(2),
            "the two dead ones in the window"
        );
        assert_eq!(
            one::<String>(
                "SELECT string_agg(status || ':' || attempts, ',' ORDER BY id) FROM workflow.outbox WHERE endpoint = 'rp'"
            )
            .as_deref(),
            Some("dead:3,pending:0,pending:0,delivered:3,cancelled:3")
        );
        assert_eq!(
            one::<i64>(
                "SELECT wf_replay('rp', now() - interval '1 hour', statuses => '{delivered,cancelled}')"
            ),
            Some(2)
        );
        assert_eq!(
            one::<i64>("SELECT sum(n)::bigint FROM workflow.message_counts WHERE endpoint = 'rp'"),
            Some(1),
            "the counts follow: one dead message is left"
        );
        assert_eq!(
            one::<i64>("SELECT wf_replay(NULL, now() - interval '1 day')"),
            Some(0)
        );
        assert_error(
            "SELECT wf_replay('rp', now(), statuses => '{pending}')",
            "22023",
            "a replay sends dead, cancelled or delivered messages again",
        );
        assert_error("SELECT wf_replay('nope', now())", "42704", "does not exist");
        run("CREATE ROLE wf_test_replayer NOLOGIN");
        run("GRANT workflow_user TO wf_test_replayer");
        run("SET LOCAL ROLE wf_test_replayer");
        assert_error(
            "SELECT wf_replay('rp', now() - interval '1 day')",
            "42501",
            "permission denied",
        );
    }

    #[pg_test]
    fn wf_endpoint_rejects_bad_settings() {
        let url = "https://x.example.com/";
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', 'secret')"),
            "22023",
            "secret 1: a secret must have the form whsec_<base64>",
        );
        assert_error(
            &format!(
                "SELECT wf_endpoint('e', '{url}', 'whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw whsec_c2hvcnQ=')"
            ),
            "22023",
            "secret 2:",
        );
        assert_error(
            "SELECT wf_endpoint('e', 'gopher://x')",
            "22023",
            "url must use http or https",
        );
        assert_error(
            "SELECT wf_endpoint('e', NULL)",
            "42704",
            "endpoint \"e\" does not exist",
        );
        assert_error(
            &format!("SELECT wf_endpoint('https://e', '{url}')"),
            "22023",
            "looks like a URL",
        );
        assert_error(
            &format!(
                "SELECT wf_endpoint('e', '{url}', headers => '{{\"Idempotency-Key\": \"x\"}}')"
            ),
            "22023",
            "cannot be overridden",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', timeout => interval '-1 second')"),
            "22023",
            "timeout must be a positive interval",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', max_attempts => -1)"),
            "22023",
            "max_attempts must be between 1 and 1000",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', max_concurrency => 1001)"),
            "22023",
            "max_concurrency must be between 0 and 1000",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', rate_per_second => -2)"),
            "22023",
            "a rate is 0 (no limit) or between 0.1 and 100000",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', rate_per_second => 0.05)"),
            "22023",
            "a rate is 0 (no limit) or between 0.1 and 100000",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', event_types => '{{order*}}')"),
            "22023",
            "* may only stand alone or end a pattern after a dot",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', event_types => '{{\"\"}}')"),
            "22023",
            "event_types must not be empty",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', retry_schedule => '{{1s,8 days}}')"),
            "22023",
            "a delay must be more than 0 and at most 7 days",
        );
        assert_error(
            &format!("SELECT wf_endpoint('e', '{url}', retry_schedule => '{{1s,NULL}}')"),
            "22004",
            "retry_schedule (an entry) must not be NULL",
        );
        assert_error(
            "SELECT wf_endpoint_rotate('nope')",
            "42704",
            "endpoint \"nope\" does not exist",
        );
        assert_error(
            &format!(
                "SELECT wf_endpoint('e', '{url}'), wf_endpoint_rotate('e', interval '-1 hour')"
            ),
            "22023",
            "keep_old (in microseconds) must be between 0 and",
        );
        assert_error(
            "SELECT wf_endpoint_enable('nope')",
            "42704",
            "endpoint \"nope\" does not exist",
        );
    }

    #[pg_test]
    fn an_application_role_can_enqueue_but_not_manage_endpoints_or_read_secrets() {
        run("SELECT wf_endpoint('audited', 'https://audit.example.com/', 'generate')");
        run("CREATE ROLE wf_test_sender NOLOGIN");
        run("GRANT workflow_user TO wf_test_sender");
        run("SET LOCAL ROLE wf_test_sender");
        assert!(one::<i64>("SELECT wf_enqueue('audited', '{}')").is_some());
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.endpoints WHERE name = 'audited'"),
            Some(1)
        );
        assert_error(
            "SELECT wf_endpoint('audited', 'https://evil.example.com/')",
            "42501",
            "permission denied",
        );
        assert_error(
            "SELECT wf_endpoint_rotate('audited')",
            "42501",
            "permission denied",
        );
        // Publishing and the metrics are the application's; the subscriptions are not.
        assert_eq!(
            one::<Vec<i64>>("SELECT wf_publish('audit.nobody', '{}')"),
            Some(vec![])
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.metrics WHERE endpoint = 'audited'"),
            Some(1)
        );
        assert_error(
            "SELECT secrets FROM workflow.endpoint_settings",
            "42501",
            "permission denied",
        );
        assert_error(
            "SELECT * FROM workflow.outbox",
            "42501",
            "permission denied",
        );
        run("RESET ROLE");
    }

    /// The plans of one of the dispatcher's statements, generic (what the dispatcher runs)
    /// and custom (what Postgres would pick by itself for these arguments), over an outbox
    /// of 5,000 due and 5,000 delivered messages with fresh statistics.
    fn dispatcher_plans(
        statement: &crate::db::Statement,
        types: &str,
        args: &str,
    ) -> Vec<serde_json::Value> {
        run("INSERT INTO workflow.outbox (url, payload, next_attempt_at)
             SELECT 'https://example.com/', '{}', now() - interval '1 minute' FROM generate_series(1, 5000)");
        run("INSERT INTO workflow.outbox (url, payload, status, finished_at, delivered_at)
             SELECT 'https://example.com/', '{}', 'delivered', now() - interval '1 day', now() - interval '1 day'
               FROM generate_series(1, 5000)");
        run("ANALYZE workflow.outbox");
        plans(statement, types, args)
    }

    /// A statement's generic and custom plans, as `EXPLAIN (FORMAT JSON)` documents.
    fn plans(statement: &crate::db::Statement, types: &str, args: &str) -> Vec<serde_json::Value> {
        run(&format!(
            "PREPARE planned_statement({types}) AS {}",
            statement.sql
        ));
        let plans = ["force_generic_plan", "force_custom_plan"]
            .iter()
            .map(|mode| {
                run(&format!("SET LOCAL plan_cache_mode = {mode}"));
                one::<pgrx::Json>(&format!(
                    "EXPLAIN (FORMAT JSON) EXECUTE planned_statement({args})"
                ))
                .unwrap()
                .0
            })
            .collect();
        run("DEALLOCATE planned_statement");
        plans
    }

    /// Plan nodes whose work grows with the whole outbox (or all runs) rather than with the
    /// batch: a sequential scan of it, an index scan of it with no condition (every entry,
    /// the join filtering them), a sort, a merge join.
    fn backlog_sized_nodes(node: &serde_json::Value, found: &mut Vec<String>) {
        each_plan_node(node, &mut |node| {
            let kind = node["Node Type"].as_str().unwrap_or_default();
            let relation = node["Relation Name"].as_str().unwrap_or_default();
            let queue = relation == "outbox" || relation == "runs";
            // A flag index holds only the rows whose flag awaits the dispatcher: walking it
            // whole is what it is for.
            let whole_index = kind.starts_with("Index")
                && node["Index Cond"].is_null()
                && node["Index Name"].as_str() != Some("outbox_unpark_successor");
            // A sort of a CTE's rows sorts what the statement already holds (a walk of the
            // batch), not the table; a Result between them only gates it on a parameter.
            let sorts_batch = kind == "Sort" && reads_only_ctes(node);
            if (queue && (kind == "Seq Scan" || whole_index))
                || (kind == "Sort" && !sorts_batch)
                || kind == "Merge Join"
            {
                found.push(format!("{kind} {relation} {}", node["Index Name"]));
            }
        });
    }

    /// Whether every input of a plan node is a CTE scan, seen through gating Results (a
    /// Result with no input is a filter the planner found false: it reads nothing). The
    /// statement's CTEs and init plans hang under its top node too: they are not its input.
    fn reads_only_ctes(node: &serde_json::Value) -> bool {
        node["Plans"].as_array().is_some_and(|inputs| {
            inputs
                .iter()
                .filter(|input| {
                    !matches!(
                        input["Parent Relationship"].as_str(),
                        Some("InitPlan" | "SubPlan")
                    )
                })
                .all(|input| match input["Node Type"].as_str() {
                    Some("CTE Scan") => true,
                    Some("Result") => input["Plans"].is_null() || reads_only_ctes(input),
                    _ => false,
                })
        })
    }

    /// Visits a node of an `EXPLAIN (FORMAT JSON)` document and every node under it.
    fn each_plan_node(node: &serde_json::Value, visit: &mut impl FnMut(&serde_json::Value)) {
        visit(node);
        for child in node["Plans"].as_array().into_iter().flatten() {
            each_plan_node(child, visit);
        }
        if let Some(plan) = node.get("Plan") {
            each_plan_node(plan, visit);
        }
    }

    fn assert_batch_sized(plans: Vec<serde_json::Value>) {
        for plan in plans {
            let mut found = Vec::new();
            for root in plan.as_array().into_iter().flatten() {
                backlog_sized_nodes(root, &mut found);
            }
            assert!(found.is_empty(), "backlog-sized work {found:?} in {plan:#}");
        }
    }

    const CLAIM_TYPES: &str = "int4, interval, interval, int4, int4, int4, text[], int4[], bool, int8, text[], text[], int4[]";
    const CLAIM_ARGS: &str = "64, '10s', '10s', 10, 2, 16, '{https://example.com}', '{3}', true, workflow.database_identity(), '{https://example.com}', '{acme}', '{3}'";
    const CLAIM_ARGS_UNRANKED: &str = "64, '10s', '10s', 10, 2, 16, '{https://example.com}', '{3}', false, workflow.database_identity(), '{https://example.com}', '{acme}', '{3}'";

    #[pg_test]
    fn the_claim_walks_the_due_index_and_stops_at_the_batch() {
        assert_batch_sized(dispatcher_plans(
            &crate::dispatcher::claim::CLAIM,
            CLAIM_TYPES,
            CLAIM_ARGS,
        ));
        assert_batch_sized(plans(
            &crate::dispatcher::claim::CLAIM,
            CLAIM_TYPES,
            CLAIM_ARGS_UNRANKED,
        ));
    }

    #[pg_test]
    fn recording_outcomes_touches_only_their_messages() {
        assert_batch_sized(dispatcher_plans(
            &crate::dispatcher::record::RECORD,
            "text[]",
            r#"'{"(1,1,0,5,200,,\"\",delivered,0,false)","(2,1,0,5,200,,\"\",delivered,0,true)"}'"#,
        ));
    }

    /// Index scans of `index` in a plan, with their index conditions ("" when none).
    fn index_scans(node: &serde_json::Value, index: &str, found: &mut Vec<String>) {
        each_plan_node(node, &mut |node| {
            if node["Index Name"].as_str() == Some(index) {
                let condition = node["Index Cond"].as_str().unwrap_or_default();
                found.push(format!("{index}: {condition}"));
            }
        });
    }

    /// Statistics taken when nothing was pending or running — an idle system — and then a
    /// burst: 5,000 pending messages and 2,000 running workflows the planner does not know
    /// of. A statement that finds its rows by key must still go by key. Were it free to
    /// answer `status = 'pending'` from `outbox_due`, which the statistics call empty, it
    /// would read every pending message for each call; the dispatcher's record did, every
    /// round, until the next ANALYZE (bench/NOTES.md).
    ///
    /// Then the same with statistics that call the tables empty though they have pages:
    /// what an ANALYZE records while a large enqueueing transaction is still open (its rows
    /// are not live yet), and what the dispatcher's own refresh then trusts, since the page
    /// count matches. The record's "does the message still exist" probe ran as a walk of
    /// the whole primary key under that plan: a second a round until autovacuum analyzed.
    #[pg_test]
    fn key_lookups_go_by_key_when_the_statistics_are_stale() {
        run("INSERT INTO workflow.outbox (url, payload, status, finished_at, delivered_at)
             SELECT 'https://example.com/', '{}', 'delivered', now(), now() FROM generate_series(1, 5000)");
        run("INSERT INTO workflow.runs (name, status, owner, lease_duration, lease_expires_at, finished_at)
             SELECT 'stale', 'completed', NULL, '1 minute', NULL, now() FROM generate_series(1, 2000)");
        run("ANALYZE workflow.outbox, workflow.runs");
        run(
            "INSERT INTO workflow.outbox (url, payload) SELECT 'https://example.com/', '{}' FROM generate_series(1, 5000)",
        );
        run("INSERT INTO workflow.runs (name, owner, lease_duration, lease_expires_at)
             SELECT 'stale', 'me', '1 minute', now() + interval '1 minute' FROM generate_series(1, 2000)");
        let id = "'00000000-0000-0000-0000-000000000001'";
        let statements: [(&crate::db::Statement, &str, String); 12] = [
            (
                &crate::api::outbox::ENQUEUE,
                "text, text, jsonb, jsonb, text, timestamptz, uuid, text, text, text, text, int4, int4, int4",
                "'https://example.com/', NULL, '{}', NULL, NULL, NULL, NULL, NULL, NULL, 'acme',
                 'https://example.com:443', 40, 16, 2"
                    .into(),
            ),
            (
                &crate::dispatcher::record::RECORD,
                "text[]",
                r#"'{"(6001,1,0,5,200,,\"\",delivered,0,false)","(6002,1,0,5,200,,\"\",delivered,0,true)"}'"#
                    .into(),
            ),
            (
                &crate::dispatcher::record::FORGET_DELIVERED,
                "int8[], int4[]",
                "'{6001,6002}', '{1,1}'".into(),
            ),
            (
                &crate::dispatcher::record::CHECKPOINT_STEPS,
                "uuid[], text[], text[]",
                format!("ARRAY[{id}]::uuid[], '{{s}}', '{{null}}'"),
            ),
            (&crate::api::outbox::CANCEL, "int8", "6001".into()),
            (&crate::api::outbox::RETRY, "int8", "6001".into()),
            (
                &crate::runs::finish::CANCEL_WORKFLOW_MESSAGES,
                "uuid[]",
                format!("ARRAY[{id}]::uuid[]"),
            ),
            (
                &crate::dispatcher::record::LOCK_STEP_RUNS,
                "int8[]",
                "'{6001,6002}'".into(),
            ),
            (
                &crate::runs::finish::FINISH,
                "uuid, text, jsonb, text, text",
                format!("{id}, 'completed', NULL, NULL, NULL"),
            ),
            (&crate::dispatcher::parking::UNPARK, "int4", "1000".into()),
            (
                &crate::dispatcher::parking::UNPARK_LIMITED,
                "int4, int4, text[], int4[], text[], text[], text[]",
                "2, 16, '{https://example.com}', '{3}', '{https://example.com,e}', '{e}', '{acme}'"
                    .into(),
            ),
            (
                &crate::runs::queue::READY_WITHIN,
                "text, int4, int8",
                "'transfer', 8, NULL".into(),
            ),
        ];
        let walkers = [
            "outbox_due",
            "outbox_finished",
            "runs_claimable",
            "runs_finished",
        ];
        // The claim walks outbox_due by design; it must still stop at the batch.
        let claim = (
            &crate::dispatcher::claim::CLAIM,
            CLAIM_TYPES,
            CLAIM_ARGS.to_string(),
        );
        let checked: Vec<_> = statements
            .iter()
            .map(|statement| (statement, &walkers[..]))
            .chain([(&claim, &[][..])])
            .collect();
        let mut failures = Vec::new();
        for statistics in ["stale", "empty"] {
            if statistics == "empty" {
                // An ANALYZE early in a large enqueueing transaction: pages, no live row,
                // and the pages all-visible from the vacuum that emptied the table before.
                run("UPDATE pg_catalog.pg_class c
                        SET reltuples = 0, relpages = CASE c.oid WHEN i.indrelid THEN 1000 ELSE 100 END,
                            relallvisible = CASE c.oid WHEN i.indrelid THEN 1000 ELSE 0 END
                       FROM pg_catalog.pg_index i
                      WHERE i.indrelid IN ('workflow.outbox'::regclass, 'workflow.runs'::regclass)
                        AND c.oid IN (i.indrelid, i.indexrelid)");
            }
            for ((statement, types, args), forbidden) in &checked {
                for plan in plans(statement, types, args) {
                    let mut found = Vec::new();
                    for root in plan.as_array().into_iter().flatten() {
                        for index in forbidden.iter() {
                            index_scans(root, index, &mut found);
                        }
                        // A probe bounded to the ready runs (their expiry up to now) stops
                        // at its first: not a walk.
                        found.retain(|scan| !scan.contains("lease_expires_at <= $"));
                        backlog_sized_nodes(root, &mut found);
                    }
                    if !found.is_empty() {
                        failures.push(format!("{statistics}: {found:?} in {plan:#}"));
                    }
                }
            }
        }
        assert!(failures.is_empty(), "{}", failures.join("\n"));
    }

    /// Retention runs every round: with nothing old enough it must stop at the index's
    /// first entry, not walk every finished message checking each one's age.
    #[pg_test]
    fn retention_reads_only_the_expired_messages() {
        let plans = dispatcher_plans(
            &crate::dispatcher::housekeeping::PURGE_MESSAGES,
            "interval, int4",
            "'7 days', 500",
        );
        for plan in plans {
            let mut conditions = Vec::new();
            for root in plan.as_array().into_iter().flatten() {
                index_scans(root, "outbox_finished", &mut conditions);
            }
            assert!(
                !conditions.is_empty() && conditions.iter().all(|c| c.contains("finished_at <=")),
                "the scan of outbox_finished is not bounded by the cut-off: {plan:#}"
            );
        }
    }

    /// A transaction's messages due now to one destination beyond what it may have
    /// outstanding (its concurrency × the lease generations, or a second of its rate) are
    /// parked as they are inserted, and so is every later one while some are parked; a
    /// delayed message and a disabled endpoint's are not.
    #[pg_test]
    fn a_flood_in_one_transaction_parks_itself_beyond_its_destinations_room() {
        run("SELECT wf_endpoint('three', 'https://three.example.com/hook', max_concurrency => 3)");
        run(
            "SELECT wf_endpoint('paced', 'https://paced.example.com/hook', rate_per_second => 2.5)",
        );
        run("SELECT wf_endpoint('off', 'https://off.example.com/hook')");
        run("UPDATE workflow.endpoint_settings SET disabled_at = now() WHERE name = 'off'");
        run("SELECT wf_enqueue('three', '{}') FROM generate_series(1, 10)");
        run("SELECT wf_enqueue('paced', '{}') FROM generate_series(1, 5)");
        run("SELECT wf_enqueue('off', '{}') FROM generate_series(1, 100)");
        run("SELECT wf_enqueue('https://url.example.com/a', '{}') FROM generate_series(1, 100)");
        run("SELECT wf_enqueue('https://url.example.com/b', '{}', deliver_at => now() + interval '1 hour')
               FROM generate_series(1, 100)");
        let parked = |target: &str| {
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.outbox
                  WHERE coalesce(endpoint, url) LIKE '{target}%' AND parked = 'limit'"
            ))
            .unwrap()
        };
        assert_eq!(parked("three"), 10 - 3 * 2);
        assert_eq!(parked("paced"), 5 - 3);
        assert_eq!(
            parked("off"),
            0,
            "a disabled endpoint's messages wait for its enable"
        );
        let per_destination =
            one::<i32>("SELECT current_setting('workflow.max_concurrency_per_destination')::int")
                .unwrap() as i64;
        assert_eq!(
            parked("https://url.example.com/a"),
            100 - per_destination * 2
        );
        assert_eq!(
            parked("https://url.example.com/b"),
            0,
            "delayed messages are not due"
        );
        // A time given is the caller's, even now: such a message is left to the claim, whose
        // parking the dispatcher tracks (an enqueue's parking it learns of at the commit).
        run("SELECT wf_enqueue('three', '{}', deliver_at => now())");
        assert_eq!(parked("three"), 10 - 3 * 2);
    }

    /// A claim parks what it finds blocked, so that no later claim walks it again, and
    /// what unblocks a message brings it back through its flag: a head's recorded
    /// delivery, an application's cancel, an enable.
    #[pg_test]
    fn a_claim_parks_blocked_messages_and_their_flags_unpark_them() {
        use crate::dispatcher::{claim, parking};
        run("SELECT wf_endpoint('off', 'https://off.example.com/hook')");
        run("UPDATE workflow.endpoint_settings SET disabled_at = now() WHERE name = 'off'");
        run("SELECT wf_enqueue('off', '{}') FROM generate_series(1, 3)");
        let keyed: Vec<i64> = (0..3)
            .map(|_| {
                one::<i64>(&format!(
                    "SELECT wf_enqueue('{HOOK}', '{{}}', ordering_key => 'k')"
                ))
                .unwrap()
            })
            .collect();
        let free = one::<i64>(&format!("SELECT wf_enqueue('{HOOK}', '{{}}')")).unwrap();
        let settings = claim_settings();
        let claim = || {
            let claimed = Spi::connect_mut(|c| {
                claim::claim(
                    c,
                    10,
                    &settings,
                    &Default::default(),
                    &Default::default(),
                    true,
                )
            })
            .unwrap();
            let mut ids: Vec<i64> = claimed.jobs.iter().map(|j| j.id).collect();
            ids.sort();
            (ids, claimed.parked)
        };
        let unpark = || {
            let done = Spi::connect_mut(parking::unpark).unwrap();
            (done.messages, done.flags_kept)
        };
        let parked = || {
            one::<String>(
                "SELECT string_agg(parked || ':' || n, ',' ORDER BY parked)
                   FROM (SELECT parked, count(*) n FROM workflow.outbox
                          WHERE parked IS NOT NULL GROUP BY parked) p",
            )
        };

        assert_eq!(claim(), (vec![keyed[0], free], 5));
        assert_eq!(parked().as_deref(), Some("endpoint:3,ordering_key:2"));
        assert_eq!(claim(), (vec![], 0), "a parked message is not walked again");
        assert_eq!(unpark(), (0, 0), "nothing is unblocked yet");

        // The head's delivery flags its key: the next message, and only it, comes back.
        let delivered = crate::dispatcher::record::Recorded {
            id: keyed[0],
            attempt: 1,
            started: 0.0,
            duration_ms: 5.0,
            status_code: Some(200),
            error: None,
            body: None,
            state: "delivered",
            delay_s: 0.0,
            replaces_attempt: false,
        };
        let rows = crate::dispatcher::record::literals(&[delivered]);
        Spi::connect_mut(|c| {
            crate::db::execute(
                c,
                &crate::dispatcher::record::RECORD,
                &[rows.into()],
                |_| Ok(()),
            )
        })
        .unwrap();
        assert_eq!(unpark(), (1, 0));
        assert_eq!(claim(), (vec![keyed[1]], 0));

        // An application's cancel of the head (in flight, here) does the same.
        run(&format!("SELECT wf_cancel_message({})", keyed[1]));
        assert_eq!(unpark(), (1, 0));
        assert_eq!(claim(), (vec![keyed[2]], 0));

        // An enable lets the endpoint's messages go; every flag is cleared once done.
        run("SELECT wf_endpoint_enable('off')");
        assert_eq!(unpark(), (3, 0));
        assert_eq!(claim().0.len(), 3);
        assert_eq!(parked(), None);
        assert_eq!(
            one::<i64>(
                "SELECT (SELECT count(*) FROM workflow.outbox WHERE unpark_successor)
                      + (SELECT count(*) FROM workflow.endpoint_settings WHERE unpark_messages)"
            ),
            Some(0)
        );
        assert_eq!(unpark(), (0, 0));
    }

    /// The planning a round with nothing to send does (see `dispatcher::replan`) runs the
    /// claim and the let-go with nothing to do: beside a due message and one parked at its
    /// destination's limit, no row is claimed, parked, let go or written at all.
    #[pg_test]
    fn planning_again_claims_parks_and_unparks_nothing() {
        use crate::dispatcher::replan;
        let due = one::<i64>(&format!("SELECT wf_enqueue('{HOOK}', '{{}}')")).unwrap();
        let parked = one::<i64>(&format!("SELECT wf_enqueue('{HOOK}', '{{}}')")).unwrap();
        run(&format!(
            "UPDATE workflow.outbox SET parked = 'limit' WHERE id = {parked}"
        ));
        let rows = || {
            one::<String>(
                "SELECT string_agg(id || ' ' || ctid || ' ' || attempts || ' '
                                   || coalesce(parked, '-') || ' '
                                   || coalesce(leased_until::text, '-'), ', ' ORDER BY id)
                   FROM workflow.outbox",
            )
        };
        let before = rows();
        let settings = claim_settings();
        replan::after_a_failed_round();
        Spi::connect_mut(|c| replan::if_stale(c, &settings)).unwrap();
        assert_eq!(rows(), before, "rows {due} and {parked} are untouched");
    }

    /// An endpoint disabled again before its messages were let go keeps them parked.
    #[pg_test]
    fn an_endpoint_disabled_again_keeps_its_messages_parked() {
        use crate::dispatcher::{claim, parking};
        run("SELECT wf_endpoint('flaky', 'https://flaky.example.com/hook')");
        run("UPDATE workflow.endpoint_settings SET disabled_at = now() WHERE name = 'flaky'");
        run("SELECT wf_enqueue('flaky', '{}') FROM generate_series(1, 2)");
        let settings = claim_settings();
        let claimed = Spi::connect_mut(|c| {
            claim::claim(
                c,
                10,
                &settings,
                &Default::default(),
                &Default::default(),
                true,
            )
        })
        .unwrap();
        assert_eq!((claimed.jobs.len(), claimed.parked), (0, 2));
        run("SELECT wf_endpoint_enable('flaky')");
        run("UPDATE workflow.endpoint_settings SET disabled_at = now() WHERE name = 'flaky'");
        let done = Spi::connect_mut(parking::unpark).unwrap();
        assert_eq!((done.messages, done.flags_kept), (0, 0));
        assert_eq!(
            one::<i64>("SELECT count(*) FROM workflow.outbox WHERE parked = 'endpoint'"),
            Some(2)
        );
        assert_eq!(
            one::<bool>(
                "SELECT unpark_messages FROM workflow.endpoint_settings WHERE name = 'flaky'"
            ),
            None,
            "the flag is cleared: a later enable sets it again"
        );
    }

    /// A round's attempts reach their messages as rows of `workflow.attempt_outcome` in
    /// their text form: whatever a receiver answers arrives as it was, quotes, backslashes,
    /// commas, parentheses, line breaks and all; an absent answer stays NULL, not "".
    #[pg_test]
    fn recorded_text_arrives_as_the_receiver_sent_it() {
        let id = one::<i64>(&format!("SELECT wf_enqueue('{HOOK}', '{{}}')")).unwrap();
        run(&format!(
            "UPDATE workflow.outbox SET attempts = 1 WHERE id = {id}"
        ));
        let body = "{\"a\": \"(x, y)\"}\n\\N \"\" \\\" ü 🚀 ,)";
        let row = crate::dispatcher::record::Recorded {
            id,
            attempt: 1,
            started: 1_700_000_000.25,
            duration_ms: 12.5,
            status_code: Some(500),
            error: None,
            body: Some(body.to_string()),
            state: "pending",
            delay_s: 5.0,
            replaces_attempt: false,
        };
        let rows = crate::dispatcher::record::literals(&[row]);
        Spi::connect_mut(|c| {
            crate::db::execute(
                c,
                &crate::dispatcher::record::RECORD,
                &[rows.into()],
                |_| Ok(()),
            )
        })
        .unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT last_response_body FROM workflow.outbox WHERE id = {id}"
            ))
            .as_deref(),
            Some(body)
        );
        assert_eq!(
            one::<bool>(&format!(
                "SELECT last_error IS NULL AND last_status_code = 500 AND last_duration_ms = 12.5
                        AND last_started_at = to_timestamp(1700000000.25)
                        AND status = 'pending' AND next_attempt_at > now() + interval '4 seconds'
                   FROM workflow.outbox WHERE id = {id}"
            )),
            Some(true)
        );
    }

    /// The latest attempt stays on the message, the one it replaces moves to the log, and
    /// an outcome that no longer applies (its lease was lost) is logged all the same.
    #[pg_test]
    fn recording_keeps_the_latest_attempt_on_the_message_and_logs_the_rest() {
        let id = one::<i64>(&format!("SELECT wf_enqueue('{HOOK}', '{{}}')")).unwrap();
        // `replaces`: what the claim saw, whether the message held an earlier attempt.
        let record = |attempt: i32, code: i32, outcome: &str, replaces: bool| {
            let state = match outcome {
                "pending" => "pending",
                "dead" => "dead",
                _ => "delivered",
            };
            let row = crate::dispatcher::record::Recorded {
                id,
                attempt,
                started: f64::from(attempt),
                duration_ms: 5.0,
                status_code: Some(code),
                error: None,
                body: Some("body".to_string()),
                state,
                delay_s: 0.0,
                replaces_attempt: replaces,
            };
            let rows = crate::dispatcher::record::literals(&[row]);
            Spi::connect_mut(|client| {
                crate::db::execute(
                    client,
                    &crate::dispatcher::record::RECORD,
                    &[rows.into()],
                    |rows| Ok(rows.len()),
                )
            })
            .unwrap()
        };
        let claim = || {
            run(&format!(
                "UPDATE workflow.outbox SET attempts = attempts + 1 WHERE id = {id}"
            ))
        };
        let attempts = || {
            one::<String>(&format!(
                "SELECT string_agg(attempt || ':' || status_code, ',' ORDER BY started_at)
                   FROM workflow.attempts WHERE message_id = {id}"
            ))
        };
        let logged = || {
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.delivery_attempts WHERE message_id = {id}"
            ))
        };

        claim();
        assert_eq!(record(1, 500, "pending", false), 1);
        assert_eq!((attempts().as_deref(), logged()), (Some("1:500"), Some(0)));
        claim();
        claim(); // attempt 2 outlived its lease and was claimed again as attempt 3
        assert_eq!(
            record(2, 502, "pending", true),
            0,
            "a stale outcome changes nothing"
        );
        assert_eq!(
            (attempts().as_deref(), logged()),
            (Some("1:500,2:502"), Some(1))
        );
        assert_eq!(record(3, 200, "delivered", true), 1);
        assert_eq!(
            (attempts().as_deref(), logged()),
            (Some("1:500,2:502,3:200"), Some(2))
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT status || ' ' || last_status_code FROM workflow.messages WHERE id = {id}"
            ))
            .as_deref(),
            Some("delivered 200")
        );
    }

    #[pg_test]
    fn forgetting_deliveries_touches_only_their_messages() {
        assert_batch_sized(dispatcher_plans(
            &crate::dispatcher::record::FORGET_DELIVERED,
            "int8[], int4[]",
            "'{1,2}', '{1,1}'",
        ));
    }

    #[pg_test]
    fn retention_walks_the_finished_index_and_stops_at_the_batch() {
        assert_batch_sized(dispatcher_plans(
            &crate::dispatcher::housekeeping::PURGE_MESSAGES,
            "interval, int4",
            "'1 hour', 500",
        ));
    }

    /// The recorded output of a step, as text.
    fn step_text(id: pgrx::Uuid, step: &str) -> Option<String> {
        one::<String>(&format!("SELECT wf_step('{id}', '{step}')::text"))
    }

    #[pg_test]
    fn signals_queue_in_order_and_each_is_consumed_by_one_wait() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('pay', owner => 'a')").unwrap();
        run(&format!("SELECT wf_signal('{id}', 'paid', '1')"));
        run(&format!("SELECT wf_signal('{id}', 'paid', '2')"));
        run(&format!("SELECT wf_signal('{id}', 'other', '9')"));
        let wait = |step: &str, owner: &str| {
            one::<String>(&format!(
                "SELECT wf_wait('{id}', '{step}', 'paid', owner => '{owner}')::text"
            ))
        };
        let first = r#"{"signal": "paid", "payload": 1, "timed_out": false}"#;
        assert_eq!(wait("w1", "a").as_deref(), Some(first));
        assert_eq!(wait("w1", "a").as_deref(), Some(first), "a replay");
        assert_eq!(
            wait("w2", "a").as_deref(),
            Some(r#"{"signal": "paid", "payload": 2, "timed_out": false}"#)
        );
        assert_eq!(wait("w3", "a"), None, "nothing queued: parked");
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(' ', owner, waiting_for, waiting_until) FROM wf_status('{id}')"
            ))
            .as_deref(),
            Some("paid"),
            "parked without an owner, waiting for the signal without a deadline"
        );
        assert_eq!(
            one::<i64>("SELECT count(*) FROM wf_claim('pay', 'b')"),
            Some(0),
            "a wait without a timeout is not claimable"
        );
        run(&format!("SELECT wf_signal('{id}', 'paid', '3')"));
        assert_eq!(
            step_text(id, "w3").as_deref(),
            Some(r#"{"signal": "paid", "payload": 3, "timed_out": false}"#),
            "the signal that arrives for a parked wait is recorded as its step"
        );
        assert_eq!(
            one::<pgrx::Uuid>("SELECT wf_claim('pay', 'b')"),
            Some(id),
            "and the workflow is ready"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(' ', owner, waiting_for, recovery_attempts) FROM wf_status('{id}')"
            ))
            .as_deref(),
            Some("b 0"),
            "a claim after a signal is no recovery"
        );
        assert_eq!(
            wait("w3", "b").as_deref(),
            Some(r#"{"signal": "paid", "payload": 3, "timed_out": false}"#)
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(signal || ':' || coalesce(consumed_by, '-'), ',' ORDER BY id)
                   FROM workflow.signals WHERE workflow_id = '{id}'"
            ))
            .as_deref(),
            Some("paid:w1,paid:w2,other:-,paid:w3")
        );
    }

    #[pg_test]
    fn a_signal_with_a_key_is_sent_once() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('pay')").unwrap();
        let send = format!("SELECT wf_signal('{id}', 'paid', '1', 'evt-1')");
        let first = one::<i64>(&send);
        assert_eq!(one::<i64>(&send), first);
        let other = one::<pgrx::Uuid>("SELECT wf_start('pay')").unwrap();
        assert_ne!(
            one::<i64>(&format!(
                "SELECT wf_signal('{other}', 'paid', '1', 'evt-1')"
            )),
            first,
            "keys are per workflow"
        );
        assert_eq!(
            one::<i64>(&format!(
                "SELECT count(*) FROM workflow.signals WHERE workflow_id = '{id}'"
            )),
            Some(1)
        );
        // A sender that retries after the workflow finished gets its signal's id, not an
        // error; a new signal is still refused.
        run(&format!("SELECT wf_complete('{id}')"));
        assert_eq!(one::<i64>(&send), first);
        assert_error(
            &format!("SELECT wf_signal('{id}', 'paid', '1', 'evt-2')"),
            "55000",
            "is completed",
        );
    }

    #[pg_test]
    fn a_wait_that_times_out_is_ready_and_records_the_timeout() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('approve', owner => 'a')").unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT wf_wait('{id}', 'approval', 'approved', '1 millisecond', 'a')::text"
            )),
            None
        );
        // The deadline is a millisecond away; this transaction's clock only has to pass it.
        run("SELECT pg_sleep(0.01)");
        assert_eq!(
            one::<pgrx::Uuid>("SELECT wf_claim('approve', 'b')"),
            Some(id)
        );
        let timed_out = r#"{"timed_out": true}"#;
        let wait = format!("SELECT wf_wait('{id}', 'approval', 'approved', '1 hour', 'b')::text");
        assert_eq!(one::<String>(&wait).as_deref(), Some(timed_out));
        run(&format!("SELECT wf_signal('{id}', 'approved')"));
        assert_eq!(
            one::<String>(&wait).as_deref(),
            Some(timed_out),
            "a replay sees the timeout, not the late signal"
        );
        assert_eq!(
            one::<i32>(&format!("SELECT recovery_attempts FROM wf_status('{id}')")),
            Some(0)
        );
    }

    #[pg_test]
    fn waits_and_signals_refuse_what_they_cannot_do() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('w', owner => 'a')").unwrap();
        assert_error(
            &format!("SELECT wf_wait('{id}', 'nothing')"),
            "55000",
            "nothing to wait for",
        );
        assert_error(
            &format!("SELECT wf_wait('{id}', 's', 'x', owner => 'b')"),
            "55006",
            "not leased to b",
        );
        assert_error(
            &format!("SELECT wf_wait('{id}', 's', 'x', '0 seconds')"),
            "22023",
            "timeout",
        );
        assert_error(
            &format!("SELECT wf_signal('{id}', NULL)"),
            "22004",
            "signal",
        );
        assert_error(
            "SELECT wf_signal('00000000-0000-0000-0000-000000000000', 'x')",
            "P0002",
            "does not exist",
        );
        run(&format!("SELECT wf_complete('{id}')"));
        assert_error(
            &format!("SELECT wf_signal('{id}', 'x')"),
            "55000",
            "is completed",
        );
        assert_error(
            &format!("SELECT wf_wait('{id}', 's', 'x')"),
            "55000",
            "is completed",
        );
    }

    #[pg_test]
    fn a_durable_step_is_enqueued_once_and_wakes_its_waiting_workflow() {
        let id = one::<pgrx::Uuid>("SELECT wf_start('charge', owner => 'a')").unwrap();
        let enqueue = format!(
            "SELECT wf_enqueue('https://example.com/charge', '{{}}', workflow => '{id}', step => 'charge')"
        );
        let message = one::<i64>(&enqueue);
        assert_eq!(one::<i64>(&enqueue), message, "the same step again");
        assert_eq!(
            one::<String>(&format!(
                "SELECT wf_wait('{id}', 'charge', owner => 'a')::text"
            )),
            None
        );
        assert_eq!(
            one::<String>(&format!("SELECT waiting_for FROM wf_status('{id}')")).as_deref(),
            Some("charge")
        );
        // What the dispatcher runs when the message is finished.
        let statement = &crate::dispatcher::record::CHECKPOINT_STEPS;
        Spi::connect_mut(|client| {
            let args: [pgrx::datum::DatumWithOid; 3] = [
                vec![id].into(),
                vec!["charge"].into(),
                vec![r#"{"ok": true, "status": 200}"#].into(),
            ];
            crate::db::execute(client, statement, &args, |_| Ok(()))
        })
        .unwrap();
        assert_eq!(
            one::<pgrx::Uuid>("SELECT wf_claim('charge', 'b')"),
            Some(id),
            "the answer made the workflow ready"
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT wf_wait('{id}', 'charge', owner => 'b')::text"
            ))
            .as_deref(),
            Some(r#"{"ok": true, "status": 200}"#)
        );
    }

    #[pg_test]
    fn a_child_tells_its_parent_and_a_cancel_takes_the_children_along() {
        let parent = one::<pgrx::Uuid>("SELECT wf_start('order', owner => 'p')").unwrap();
        let child = |name: &str, of: pgrx::Uuid| {
            one::<pgrx::Uuid>(&format!("SELECT wf_start('{name}', parent => '{of}')")).unwrap()
        };
        let (done, running) = (child("email", parent), child("ship", parent));
        let grandchild = child("label", running);
        run(&format!(
            "SELECT wf_enqueue('https://example.com/label', '{{}}', workflow => '{grandchild}')"
        ));
        run(&format!(
            "SELECT wf_complete('{done}', '{{\"sent\": true}}')"
        ));
        assert_eq!(
            one::<String>(&format!(
                "SELECT wf_wait('{parent}', 'email done', 'workflow.finished', owner => 'p')
                        #>> '{{payload,status}}'"
            ))
            .as_deref(),
            Some("completed")
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT (payload->'output')::text || ' ' || (payload->>'workflow' = '{done}')
                   FROM workflow.signals WHERE workflow_id = '{parent}'"
            ))
            .as_deref(),
            Some(r#"{"sent": true} true"#)
        );
        assert_eq!(
            one::<pgrx::Uuid>(&format!("SELECT parent FROM wf_status('{running}')")),
            Some(parent)
        );
        run(&format!("SELECT wf_cancel('{parent}')"));
        assert_eq!(
            one::<String>(&format!(
                "SELECT string_agg(name || ':' || status, ',' ORDER BY name) FROM workflow.workflows
                  WHERE id IN ('{done}', '{running}', '{grandchild}')"
            ))
            .as_deref(),
            Some("email:completed,label:cancelled,ship:cancelled")
        );
        assert_eq!(
            one::<String>(&format!(
                "SELECT status FROM workflow.messages WHERE workflow_id = '{grandchild}'"
            ))
            .as_deref(),
            Some("cancelled")
        );
        assert_error(
            &format!("SELECT wf_start('late', parent => '{parent}')"),
            "55000",
            "is cancelled",
        );
        assert_error(
            "SELECT wf_start('orphan', parent => '00000000-0000-0000-0000-000000000000')",
            "P0002",
            "does not exist",
        );
    }

    #[pg_test]
    fn a_sweep_frees_the_leases_of_ended_sessions_and_keeps_live_ones() {
        // Three leases bound to this session by ownerless starts; two are then made to look
        // bound to sessions that ended: an earlier backend with this pid (pid reuse), and a
        // pid no backend has.
        let (live, reused, gone) = (start("sweep"), start("sweep"), start("sweep"));
        let explicit = one::<pgrx::Uuid>("SELECT wf_start('sweep', owner => 'me')")
            .unwrap()
            .to_string();
        assert_eq!(
            one::<bool>(&format!(
                "SELECT session_pid = pg_backend_pid() AND session_started IS NOT NULL
                   FROM workflow.runs WHERE id = '{live}'"
            )),
            Some(true),
            "an ownerless start binds the lease to this session"
        );
        assert_eq!(
            one::<bool>(&format!(
                "SELECT session_pid IS NULL FROM workflow.runs WHERE id = '{explicit}'"
            )),
            Some(true),
            "an explicit owner's lease is bound to no session"
        );
        run(&format!(
            "UPDATE workflow.runs SET session_started = session_started - interval '1 second' WHERE id = '{reused}'"
        ));
        run(&format!(
            "UPDATE workflow.runs SET session_pid = 2147483647 WHERE id = '{gone}'"
        ));
        // Inside one test every statement shares the test's statement time, which a sweep
        // takes for a binding newer than itself and leaves alone: age the bindings.
        run(
            "UPDATE workflow.runs SET updated_at = updated_at - interval '1 minute' WHERE name = 'sweep'",
        );
        let pid = one::<i32>("SELECT pg_backend_pid()").unwrap();
        for pids in [Some(vec![pid, 2_147_483_647]), None] {
            let freed =
                Spi::connect_mut(|client| crate::runs::sessions::free_orphaned(client, pids))
                    .unwrap_or_else(|e| panic!("{e}"));
            if freed == 0 {
                continue; // the second look: the first freed them
            }
            assert_eq!(freed, 2, "the pid-reused and the ended session's leases");
        }
        for (id, freed) in [
            (&live, false),
            (&reused, true),
            (&gone, true),
            (&explicit, false),
        ] {
            assert_eq!(
                one::<bool>(&format!(
                    "SELECT lease_expires_at <= clock_timestamp() AND session_pid IS NULL
                            AND owner IS NOT NULL
                       FROM workflow.runs WHERE id = '{id}'"
                )),
                Some(freed),
                "{id}: freed {freed}"
            );
        }
        assert_eq!(
            one::<i64>("SELECT count(*) FROM wf_claim('sweep', 'rescuer', max => 10)"),
            Some(2),
            "the freed leases are claimable, the live ones are not"
        );
        assert_eq!(
            one::<i32>(&format!(
                "SELECT recovery_attempts FROM workflow.runs WHERE id = '{gone}'"
            )),
            Some(1),
            "a freed session lease is recovered like an expired one"
        );
    }

    #[pg_test]
    fn a_push_handler_takes_a_url_or_an_endpoint_and_a_handled_start_is_ready() {
        run("SELECT wf_handler('pushed', 'https://handler.example.com/run')");
        let id = one::<pgrx::Uuid>("SELECT wf_start('pushed')").unwrap();
        assert_eq!(
            one::<String>(&format!(
                "SELECT concat_ws(' ', owner, lease_expires_at <= clock_timestamp()) FROM wf_status('{id}')"
            ))
            .as_deref(),
            Some("t"),
            "no owner, ready at once"
        );
        let owned = one::<pgrx::Uuid>("SELECT wf_start('pushed', owner => 'me')").unwrap();
        assert_eq!(
            one::<String>(&format!("SELECT owner FROM wf_status('{owned}')")).as_deref(),
            Some("me"),
            "a start with an owner is its own"
        );
        // What the dispatcher's round does.
        let pushed = Spi::connect_mut(|client| crate::runs::push::push_ready(client, 10, 10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pushed.count, 1);
        assert_eq!(
            one::<String>(&format!(
                "SELECT target || ' ' || (payload->>'type') || ' ' || (payload->>'owner' = (SELECT owner FROM wf_status('{id}')))
                   FROM workflow.messages WHERE workflow_id = '{id}'"
            ))
            .as_deref(),
            Some("https://handler.example.com/run workflow.ready true")
        );
        assert_error(
            "SELECT wf_handler('pushed', 'no-such-endpoint')",
            "42704",
            "does not exist",
        );
        assert_error(
            "SELECT wf_handler('pushed', 'ftp://handler.example.com/')",
            "22023",
            "target",
        );
        run("SELECT wf_handler_drop('pushed')");
        assert_error(
            "SELECT wf_handler_drop('pushed')",
            "42704",
            "no push handler",
        );
        // A push is found by its key: an application cannot make a message look like one.
        assert_error(
            &format!(
                "SELECT wf_enqueue('https://example.com/', '{{}}', idempotency_key => 'workflow.ready:{id}:x', workflow => '{id}')"
            ),
            "22023",
            "extension's own",
        );
    }

    /// An application can record steps without end; a push carries them only while they fit
    /// the payload limit, so that no workflow can make the round that pushes it fail.
    #[pg_test]
    fn a_push_leaves_out_steps_beyond_the_payload_limit() {
        run("SET LOCAL workflow.max_payload_bytes = '1kB'");
        run("SELECT wf_handler('big', 'https://handler.example.com/run')");
        let small = one::<pgrx::Uuid>("SELECT wf_start('big', owner => 'app')").unwrap();
        let large = one::<pgrx::Uuid>("SELECT wf_start('big', owner => 'app')").unwrap();
        run(&format!("SELECT wf_checkpoint('{small}', 'one', '\"s\"')"));
        for step in 0..3 {
            run(&format!(
                "SELECT wf_checkpoint('{large}', 'step {step}', to_jsonb(repeat('x', 600)))"
            ));
        }
        // Both ready now, as after their owner's lease.
        run(&format!(
            "UPDATE workflow.runs SET lease_expires_at = clock_timestamp() WHERE id IN ('{small}', '{large}')"
        ));
        let pushed = Spi::connect_mut(|client| crate::runs::push::push_ready(client, 10, 10))
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(pushed.count, 2);
        let push = |id: pgrx::Uuid| {
            one::<String>(&format!(
                "SELECT concat_ws(' ', payload->'steps', payload->>'steps_omitted')
                   FROM workflow.messages WHERE workflow_id = '{id}'"
            ))
        };
        assert_eq!(push(small).as_deref(), Some(r#"{"one": "s"} false"#));
        assert_eq!(
            push(large).as_deref(),
            Some("null true"),
            "1.8 kB of steps left out"
        );
    }
}

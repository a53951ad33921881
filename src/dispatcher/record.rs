//! Recording outcomes: every finished attempt of a round in one short transaction, as one
//! statement over arrays — the message's new state and latest attempt, and the attempt it
//! replaces moved to the log. The rare
//! consequences — endpoints disabled by a 410, checkpoints of durable HTTP steps — are
//! statements of their own, run only for a round that has them.

use super::send::{Outcome, storable};
use crate::config;
use crate::db::{self, Statement};
use crate::delivery::retry::{self, Decision, Kind};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{
    FLOAT4ARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, INTERVALOID, TEXTARRAYOID,
    UUIDARRAYOID,
};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashMap;
use std::time::SystemTime;

/// The part of a response body kept in `workflow.attempts`.
pub const RECORDED_BODY_BYTES: usize = 4096;

/// An outcome only changes its message if the message is still pending in the attempt that
/// produced it: a cancel, or a newer claim after this dispatcher lost its lease, wins.
/// A message an application holds locked (a `wf_cancel_message` not yet committed) is
/// skipped, never waited for: its outcome is kept for a later round. Returns the messages
/// it changed (`skipped` false) and the ones it skipped (`skipped` true). The update reaches
/// the locked rows by their `ctid` (locked by this statement, they cannot move), so the lock
/// costs no second index probe; the skipped ones are looked for only when a lock was missed.
/// Every other read of the outbox goes by key from the id array, so the plan does not hinge
/// on a join order.
///
/// Every read of the outbox has an index condition on the id array, even where a join
/// would express it: under statistics that call the outbox empty (an ANALYZE taken while a
/// large enqueueing transaction was still open) a join probe became a walk of the whole
/// primary key, a second a round.
///
/// The attempt becomes the message's latest (`last_*`); the one it replaces moves to the
/// log, read from the statement's snapshot, which is the row before this update (only the
/// dispatcher writes `last_*`, one round at a time). `$10` names the messages that hold
/// one, as their claims saw: most outcomes are first attempts, and looking up every
/// message again to find nothing was a tenth of the statement. An outcome that no longer
/// changes its message still happened: it goes to the log directly.
///
/// An outcome also unparks its message (a claim may have parked it after its lease ran
/// out), and a message with an ordering key that finishes flags its key's next message
/// for unparking (see `parking`).
pub(crate) static RECORD: Statement = Statement {
    sql: "WITH o AS (
              SELECT * FROM unnest($1::int8[], $2::int4[], $3::float8[], $4::float4[], $5::int4[],
                                   $6::text[], $7::text[], $8::text[], $9::float8[])
                       AS o(id, attempt, started, duration_ms, status_code, error, body, outcome,
                            delay_s)),
          locked AS (
              SELECT m.id, m.ctid FROM workflow.outbox m WHERE m.id = ANY ($1) FOR NO KEY UPDATE SKIP LOCKED),
          changed AS (
              UPDATE workflow.outbox m
                 SET status = o.outcome,
                     next_attempt_at = CASE WHEN o.outcome = 'pending'
                                            THEN clock_timestamp() + make_interval(secs => o.delay_s)
                                            ELSE m.next_attempt_at END,
                     leased_until = NULL,
                     last_attempt = o.attempt,
                     last_started_at = to_timestamp(o.started),
                     last_duration_ms = o.duration_ms,
                     last_status_code = o.status_code,
                     last_error = o.error,
                     last_response_body = o.body,
                     delivered_at = CASE WHEN o.outcome = 'delivered' THEN clock_timestamp() END,
                     finished_at = CASE WHEN o.outcome = 'pending' THEN NULL ELSE clock_timestamp() END,
                     parked = NULL,
                     unpark_successor = CASE WHEN o.outcome <> 'pending' AND m.ordering_key IS NOT NULL
                                             THEN true END
                FROM o
               WHERE m.ctid = ANY (ARRAY(SELECT ctid FROM locked)) AND m.id = o.id
                 AND m.status = 'pending' AND m.attempts = o.attempt
              RETURNING m.id, m.workflow_id, m.step, m.status, m.endpoint),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT status, count(*), endpoint FROM changed
               WHERE status IN ('delivered', 'dead') GROUP BY status, endpoint),
          logged AS (
              INSERT INTO workflow.delivery_attempts
                     (message_id, attempt, started_at, duration_ms, status_code, error, response_body)
              SELECT p.id, p.last_attempt, p.last_started_at, p.last_duration_ms, p.last_status_code,
                     p.last_error, p.last_response_body
                FROM workflow.outbox p
               WHERE p.id = ANY (ARRAY(SELECT id FROM changed WHERE id = ANY ($10)))
                 AND p.last_started_at IS NOT NULL
              UNION ALL
              SELECT o.id, o.attempt, to_timestamp(o.started), o.duration_ms, o.status_code, o.error, o.body
                FROM o
               WHERE o.id <> ALL (ARRAY(SELECT id FROM changed))
                 AND o.id = ANY (ARRAY(SELECT id FROM locked)))
          SELECT id, workflow_id, step, false FROM changed
          UNION ALL
          SELECT m.id, NULL, NULL, true FROM workflow.outbox m
           WHERE (SELECT count(*) FROM locked) < cardinality($1)
             AND m.id = ANY ($1) AND m.id <> ALL (ARRAY(SELECT id FROM locked))",
    args: &[
        INT8ARRAYOID,
        INT4ARRAYOID,
        FLOAT8ARRAYOID,
        FLOAT4ARRAYOID,
        INT4ARRAYOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        FLOAT8ARRAYOID,
        INT8ARRAYOID,
    ],
};

/// With `workflow.retention = 0` nothing finished is kept, so a delivered message is
/// deleted by the statement that learns of its delivery, with any attempts it had: no
/// outcome update, no attempt row, nothing left for retention. (Same condition as
/// `RECORD`: only a message still pending in the attempt that produced the outcome.)
pub(crate) static FORGET_DELIVERED: Statement = Statement {
    sql: "WITH o AS (SELECT * FROM unnest($1::int8[], $2::int4[]) AS o(id, attempt)),
          locked AS (
              SELECT m.id FROM workflow.outbox m WHERE m.id = ANY ($1) FOR UPDATE SKIP LOCKED),
          gone AS (
              DELETE FROM workflow.outbox m
               USING o
               WHERE m.id = ANY (ARRAY(SELECT id FROM locked)) AND m.id = o.id
                 AND m.status = 'pending' AND m.attempts = o.attempt
              RETURNING m.id, m.workflow_id, m.step),
          attempts AS (
              DELETE FROM workflow.delivery_attempts a
               WHERE a.message_id = ANY (ARRAY(SELECT id FROM gone)))
          SELECT id, workflow_id, step, false FROM gone
          UNION ALL
          SELECT m.id, NULL, NULL, true FROM workflow.outbox m
           WHERE (SELECT count(*) FROM locked) < cardinality($1)
             AND m.id = ANY ($1) AND m.id <> ALL (ARRAY(SELECT id FROM locked))",
    args: &[INT8ARRAYOID, INT4ARRAYOID],
};

/// A durable step is recorded with its run locked, like every write of a step, so that a
/// wait parking the run either sees the step or is woken by it. A run an application
/// holds is never waited for: this returns the messages (of `$1`) whose running run is
/// held by someone else, and their outcomes wait for a later round.
pub(crate) static LOCK_STEP_RUNS: Statement = Statement {
    sql: "WITH steps AS (
              SELECT m.id, m.workflow_id FROM workflow.outbox m
               WHERE m.id = ANY ($1) AND m.step IS NOT NULL),
          locked AS (
              SELECT r.id FROM workflow.runs r
               WHERE r.id = ANY (ARRAY(SELECT workflow_id FROM steps)) AND r.status = 'running'
                 FOR NO KEY UPDATE SKIP LOCKED)
          SELECT s.id FROM steps s
           WHERE s.workflow_id <> ALL (ARRAY(SELECT id FROM locked))
             AND s.workflow_id = ANY (ARRAY(
                     SELECT r.id FROM workflow.runs r
                      WHERE r.id = ANY (ARRAY(SELECT workflow_id FROM steps)) AND r.status = 'running'))",
    args: &[INT8ARRAYOID],
};

/// A finished durable HTTP step: its answer becomes the step's checkpoint, unless the
/// workflow finished meanwhile, the step was recorded some other way, or the wait for it
/// timed out (its deadline has passed: the timeout wins, as over a late signal).
/// A run parked waiting for the step becomes ready, and its name is notified; a run
/// claimed meanwhile keeps its lease and finds the step on its next wait.
pub(crate) static CHECKPOINT_STEPS: Statement = Statement {
    sql: "WITH recorded AS (
              INSERT INTO workflow.checkpoints (workflow_id, step, output)
              SELECT o.workflow_id, o.step, o.output::jsonb
                FROM unnest($1::uuid[], $2::text[], $3::text[]) AS o(workflow_id, step, output)
                JOIN workflow.runs r ON r.id = o.workflow_id AND r.status = 'running'
               WHERE r.id = ANY ($1)
                 AND (r.wait_step = o.step AND r.wait_signal IS NULL
                      AND r.wait_deadline <= clock_timestamp()) IS NOT TRUE
              ON CONFLICT (workflow_id, step) DO NOTHING
              RETURNING workflow_id, step),
          resolved AS (
              UPDATE workflow.runs r
                 SET wait_step = NULL, wait_signal = NULL, wait_deadline = NULL,
                     lease_expires_at = CASE WHEN r.owner IS NULL
                                             THEN least(coalesce(r.lease_expires_at, 'infinity'), clock_timestamp())
                                             ELSE r.lease_expires_at END,
                     updated_at = clock_timestamp()
               WHERE r.id = ANY (ARRAY(SELECT workflow_id FROM recorded))
                 AND r.wait_signal IS NULL
                 AND EXISTS (SELECT FROM recorded s WHERE s.workflow_id = r.id AND s.step = r.wait_step)
              RETURNING r.name, r.owner IS NULL AS ready),
          notified AS (
              SELECT pg_notify('workflow_ready', name) FROM (SELECT DISTINCT name FROM resolved WHERE ready) n)
          SELECT count(*) FROM notified",
    args: &[UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID],
};

/// A 410 Gone from a named endpoint disables it; its messages wait for wf_endpoint_enable.
/// An endpoint the owner is changing right now is skipped: its message is due again at
/// once, and the next 410 disables it.
static DISABLE_ENDPOINTS: Statement = Statement {
    sql: "UPDATE workflow.endpoint_settings e
             SET disabled_at = clock_timestamp(),
                 disabled_reason = 'the endpoint answered 410 Gone',
                 updated_at = clock_timestamp()
           WHERE e.name = ANY (ARRAY(
                     SELECT d.name FROM workflow.endpoint_settings d
                      WHERE d.name = ANY (ARRAY(SELECT m.endpoint FROM workflow.outbox m WHERE m.id = ANY ($1)))
                        AND d.disabled_at IS NULL
                        FOR NO KEY UPDATE SKIP LOCKED))",
    args: &[INT8ARRAYOID],
};

/// Endpoint health, on the rounds that change it: an endpoint's first failure since its
/// last success (`$2`, none of them also succeeding this round, `$1`) starts its failing
/// time; a success ends it; and an endpoint that has failed throughout
/// `workflow.endpoint_disable_after` (`$3`, NULL: never) is disabled, its messages kept
/// waiting. An endpoint the owner is changing right now is skipped until a later outcome.
static HEALTH: Statement = Statement {
    sql: "WITH recovered AS (
              UPDATE workflow.endpoint_settings e SET failing_since = NULL
               WHERE e.name = ANY (ARRAY(
                         SELECT d.name FROM workflow.endpoint_settings d
                          WHERE d.name = ANY ($1) AND d.failing_since IS NOT NULL
                            FOR NO KEY UPDATE SKIP LOCKED))),
          failing AS (
              UPDATE workflow.endpoint_settings e SET failing_since = clock_timestamp()
               WHERE e.name = ANY (ARRAY(
                         SELECT d.name FROM workflow.endpoint_settings d
                          WHERE d.name = ANY ($2) AND d.name <> ALL ($1) AND d.failing_since IS NULL
                            FOR NO KEY UPDATE SKIP LOCKED))),
          disabled AS (
              UPDATE workflow.endpoint_settings e
                 SET disabled_at = clock_timestamp(),
                     disabled_reason = 'no attempt succeeded since ' || e.failing_since
                                       || ' (workflow.endpoint_disable_after)',
                     updated_at = clock_timestamp()
               WHERE e.name = ANY (ARRAY(
                         SELECT d.name FROM workflow.endpoint_settings d
                          WHERE d.name = ANY ($2) AND d.name <> ALL ($1) AND d.disabled_at IS NULL
                            AND d.failing_since <= clock_timestamp() - $3
                            FOR NO KEY UPDATE SKIP LOCKED)))
          SELECT 1",
    args: &[TEXTARRAYOID, TEXTARRAYOID, INTERVALOID],
};

/// Hands back messages that were claimed but not sent (see `Outcome::released`): due again
/// at once, the claim's attempt not counted. A message held locked keeps its lease, which
/// runs out.
static RELEASE: Statement = Statement {
    sql: "WITH o AS (SELECT * FROM unnest($1::int8[], $2::int4[]) AS o(id, attempt)),
          locked AS (
              SELECT m.id FROM workflow.outbox m WHERE m.id = ANY ($1) FOR NO KEY UPDATE SKIP LOCKED)
          UPDATE workflow.outbox m
             SET attempts = m.attempts - 1, leased_until = NULL
            FROM o
           WHERE m.id = ANY (ARRAY(SELECT id FROM locked)) AND m.id = o.id
             AND m.status = 'pending' AND m.attempts = o.attempt",
    args: &[INT8ARRAYOID, INT4ARRAYOID],
};

/// The outcomes of `skipped` messages, for a later round; the rest are recorded.
pub fn take_skipped(outcomes: Vec<Outcome>, skipped: &[i64]) -> Vec<Outcome> {
    if skipped.is_empty() {
        return Vec::new();
    }
    outcomes
        .into_iter()
        .filter(|o| skipped.contains(&o.id))
        .collect()
}

/// Records a round of outcomes; call inside a transaction. `keep_delivered` is false when
/// `workflow.retention` is 0. Returns the messages skipped because an application held
/// them locked: their outcomes are for a later round.
pub fn record(
    client: &mut SpiClient<'_>,
    outcomes: &[Outcome],
    keep_delivered: bool,
) -> SpiResult<Vec<i64>> {
    if outcomes.is_empty() {
        return Ok(Vec::new());
    }
    let (released, outcomes): (Vec<&Outcome>, Vec<&Outcome>) =
        outcomes.iter().partition(|o| o.released);
    let held = held_by_their_runs(client, &outcomes)?;
    let outcomes: Vec<&Outcome> = outcomes
        .into_iter()
        .filter(|o| !held.contains(&o.id))
        .collect();
    if !released.is_empty() {
        let ids: Vec<i64> = released.iter().map(|o| o.id).collect();
        let attempts: Vec<i32> = released.iter().map(|o| o.attempt).collect();
        let args: [DatumWithOid; 2] = [ids.into(), attempts.into()];
        db::execute(client, &RELEASE, &args, |_| Ok(()))?;
    }
    let mut rng = rand::rng();
    let default_schedule = config::retry_schedule();
    let n = outcomes.len();
    let (mut ids, mut attempts, mut started, mut durations) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let (mut codes, mut errors, mut bodies, mut states) = (
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
        Vec::with_capacity(n),
    );
    let mut delays = Vec::with_capacity(n);
    let mut replacing = Vec::new();
    let (mut forget_ids, mut forget_attempts) = (Vec::new(), Vec::new());
    // Only the few outcomes with consequences beyond their message.
    let (mut steps, mut disables) = (HashMap::new(), Vec::new());
    let mut health = Health::default();
    for outcome in outcomes {
        let decision = if outcome.refused {
            Decision::Dead
        } else {
            retry::decide(
                outcome.status,
                outcome.attempt.max(1) as u32,
                outcome.max_attempts.max(1) as u32,
                Kind {
                    named_endpoint: outcome.named_endpoint,
                    durable_step: outcome.durable_step,
                },
                outcome.retry_after,
                outcome
                    .retry_schedule
                    .as_deref()
                    .unwrap_or(&default_schedule),
                &mut rng,
            )
        };
        // A step's answer is the step's business, not a sign of the destination's health.
        if decision != Decision::Answered {
            health.note(outcome, decision == Decision::Delivered);
        }
        let (state, delay) = match decision {
            Decision::Delivered | Decision::Answered => ("delivered", 0.0),
            Decision::RetryAfter(delay) => ("pending", delay.as_secs_f64()),
            Decision::Dead => ("dead", 0.0),
            Decision::DisableEndpoint => ("pending", 0.0),
        };
        // A durable step is recorded when its message is finished, delivered or dead, so
        // that its workflow never waits for an answer that will not come.
        let finished = matches!(
            decision,
            Decision::Delivered | Decision::Answered | Decision::Dead
        );
        if finished && let Some(output) = step_output(outcome, decision == Decision::Delivered) {
            steps.insert(outcome.id, output);
        }
        // A message with an ordering key is kept until its flag has unparked the next.
        let delivered = matches!(decision, Decision::Delivered | Decision::Answered);
        if delivered && !keep_delivered && !outcome.ordered {
            forget_ids.push(outcome.id);
            forget_attempts.push(outcome.attempt);
            continue;
        }
        ids.push(outcome.id);
        attempts.push(outcome.attempt);
        if outcome.replaces_attempt {
            replacing.push(outcome.id);
        }
        started.push(
            outcome
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
        );
        durations.push(outcome.duration.as_secs_f32() * 1000.0);
        codes.push(outcome.status.map(i32::from));
        errors.push(outcome.error.clone());
        bodies.push(
            outcome
                .body
                .as_deref()
                .map(|b| truncate(b, RECORDED_BODY_BYTES).to_string()),
        );
        states.push(state);
        delays.push(delay);
        if decision == Decision::DisableEndpoint {
            disables.push(outcome.id);
        }
    }
    // The messages each statement changed, with the workflow step a delivery checkpoints;
    // read only when a consequence needs them (most rounds have none).
    let consequences = !steps.is_empty() || !disables.is_empty();
    let mut changed: HashMap<i64, Option<(pgrx::Uuid, String)>> = HashMap::new();
    let mut skipped = Vec::new();
    let mut read_changed = |rows: pgrx::spi::SpiTupleTable<'_>| -> SpiResult<()> {
        for row in rows {
            let id = row.get::<i64>(1)?.unwrap_or_default();
            if row.get::<bool>(4)? == Some(true) {
                skipped.push(id);
            } else if consequences {
                let workflow = row.get::<pgrx::Uuid>(2)?;
                let step = row.get::<String>(3)?;
                changed.insert(id, workflow.zip(step));
            }
        }
        Ok(())
    };
    if !ids.is_empty() {
        let args: [DatumWithOid; 10] = [
            ids.into(),
            attempts.into(),
            started.into(),
            durations.into(),
            codes.into(),
            errors.into(),
            bodies.into(),
            states.into(),
            delays.into(),
            replacing.into(),
        ];
        db::execute(client, &RECORD, &args, &mut read_changed)?;
    }
    if !forget_ids.is_empty() {
        let args: [DatumWithOid; 2] = [forget_ids.into(), forget_attempts.into()];
        db::execute(client, &FORGET_DELIVERED, &args, &mut read_changed)?;
    }
    // A consequence only follows an outcome that changed its message.
    let (mut workflows, mut names, mut outputs) = (Vec::new(), Vec::new(), Vec::new());
    for (id, output) in steps {
        if let Some(Some((workflow, step))) = changed.get(&id) {
            workflows.push(*workflow);
            names.push(step.clone());
            outputs.push(output);
        }
    }
    if !workflows.is_empty() {
        let args: [DatumWithOid; 3] = [workflows.into(), names.into(), outputs.into()];
        db::execute(client, &CHECKPOINT_STEPS, &args, |_| Ok(()))?;
    }
    disables.retain(|id| changed.contains_key(id));
    if !disables.is_empty() {
        db::execute(client, &DISABLE_ENDPOINTS, &[disables.into()], |_| Ok(()))?;
    }
    if health.changes() {
        let disable_after = config::endpoint_disable_after().map(|after| {
            pgrx::datum::Interval::from_micros(after.as_micros().min(i64::MAX as u128) as i64)
        });
        let args: [DatumWithOid; 3] = [
            health.succeeded.into(),
            health.failed.into(),
            disable_after.into(),
        ];
        db::execute(client, &HEALTH, &args, |_| Ok(()))?;
    }
    skipped.extend(held);
    Ok(skipped)
}

/// The named endpoints a round's outcomes succeeded and failed for, and whether that may
/// change their health (see `HEALTH`): a failure always may (it starts a failing time or
/// ends one in a disable), a success only for an endpoint that was failing.
#[derive(Default)]
struct Health {
    succeeded: Vec<String>,
    failed: Vec<String>,
    recovers: bool,
}

impl Health {
    fn note(&mut self, outcome: &Outcome, delivered: bool) {
        if !outcome.named_endpoint {
            return;
        }
        let name = outcome.destination.to_string();
        if delivered {
            self.recovers |= outcome.endpoint_failing;
            if !self.succeeded.contains(&name) {
                self.succeeded.push(name);
            }
        } else if !self.failed.contains(&name) {
            self.failed.push(name);
        }
    }

    fn changes(&self) -> bool {
        self.recovers || !self.failed.is_empty()
    }
}

/// The durable steps among `outcomes` whose runs an application holds (see `LOCK_STEP_RUNS`).
fn held_by_their_runs(client: &mut SpiClient<'_>, outcomes: &[&Outcome]) -> SpiResult<Vec<i64>> {
    let steps: Vec<i64> = outcomes
        .iter()
        .filter(|o| o.durable_step)
        .map(|o| o.id)
        .collect();
    if steps.is_empty() {
        return Ok(Vec::new());
    }
    db::execute(client, &LOCK_STEP_RUNS, &[steps.into()], |rows| {
        rows.into_iter()
            .map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
            .collect()
    })
}

/// The checkpoint of a durable HTTP step: status, headers, and the body as JSON when it is
/// JSON, else as a string.
/// The checkpoint of a finished durable step: `{"ok": true, "status", "headers", "body"}`
/// for a delivery; `{"ok": false, …, "error"}` for a dead message (no answer: `status`,
/// `headers` and `body` are null).
fn step_output(outcome: &Outcome, ok: bool) -> Option<String> {
    if !outcome.durable_step {
        return None;
    }
    let body = outcome.body.as_deref().unwrap_or_default();
    let body = match serde_json::from_str(body) {
        Ok(mut json) => {
            without_nul(&mut json);
            json
        }
        // Not JSON, or JSON serde_json will not hold (too deep, a number out of range).
        Err(_) => serde_json::Value::String(body.to_string()),
    };
    let body = if outcome.body.is_none() {
        serde_json::Value::Null
    } else {
        body
    };
    let mut output = serde_json::json!({
        "ok": ok,
        "status": outcome.status,
        "headers": outcome.headers.clone().unwrap_or(serde_json::Value::Null),
        "body": body,
    });
    if !ok {
        let error = match (&outcome.error, outcome.status) {
            (Some(error), _) => storable(error.clone()),
            (None, Some(status)) if retry::classify_status(status) == retry::Verdict::Retry => {
                format!("the receiver answered {status}, and no attempts are left")
            }
            (None, Some(status)) => format!("the receiver answered {status}"),
            (None, None) => "no answer".to_string(),
        };
        output["error"] = serde_json::Value::String(error);
    }
    Some(output.to_string())
}

/// jsonb has no NUL character, though JSON can spell one (`\u0000`): each becomes U+FFFD,
/// in keys and in strings, so that no response can fail the record of its round.
fn without_nul(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(text) => *text = storable(std::mem::take(text)),
        Value::Array(items) => items.iter_mut().for_each(without_nul),
        Value::Object(map) if map.keys().any(|k| k.contains('\0')) => {
            let entries = std::mem::take(map);
            for (key, mut item) in entries {
                without_nul(&mut item);
                map.insert(storable(key), item);
            }
        }
        Value::Object(map) => map.values_mut().for_each(without_nul),
        _ => {}
    }
}

/// Cuts at a character boundary at or below `max` bytes.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

#[cfg(test)]
mod tests {
    use super::{truncate, without_nul};

    #[test]
    fn nul_characters_become_replacement_characters_everywhere() {
        let mut json: serde_json::Value =
            serde_json::from_str(r#"{"a\u0000": ["x\u0000y", {"b": "\u0000"}], "n": 1}"#).unwrap();
        without_nul(&mut json);
        assert_eq!(
            json,
            serde_json::json!({"a\u{FFFD}": ["x\u{FFFD}y", {"b": "\u{FFFD}"}], "n": 1})
        );
        assert!(!json.to_string().contains("\\u0000"));
    }

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}

//! Recording outcomes: every finished attempt of a round in one short transaction, as one
//! statement over arrays — the message's new state and latest attempt, and the attempt it
//! replaces moved to the log. The rare consequences — endpoints disabled by a 410,
//! checkpoints of durable HTTP steps — are statements of their own, run only for a round
//! that has them.

use super::send::{Outcome, storable};
use crate::config;
use crate::db::{self, Statement};
use crate::delivery::retry::{self, Decision, Kind};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{INT4ARRAYOID, INT8ARRAYOID, INTERVALOID, TEXTARRAYOID, UUIDARRAYOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashMap;
use std::time::{Duration, SystemTime};

/// The part of a response body kept in `workflow.attempts`.
pub const RECORDED_BODY_BYTES: usize = 4096;

/// An outcome only changes its message if the message is still pending in the attempt that
/// produced it: a cancel, or a newer claim after this dispatcher lost its lease, wins.
pub(crate) static RECORD: Statement = Statement {
    sql: include_str!("record/record.sql"),
    args: &[TEXTARRAYOID],
};

/// With `workflow.retention = 0` nothing finished is kept, so a delivered message is
/// deleted by the statement that learns of its delivery, with any attempts it had: no
/// outcome update, no attempt row, nothing left for retention.
pub(crate) static FORGET_DELIVERED: Statement = Statement {
    sql: include_str!("record/forget_delivered.sql"),
    args: &[INT8ARRAYOID, INT4ARRAYOID],
};

/// A durable step is recorded with its run locked, like every write of a step, so that a
/// wait parking the run either sees the step or is woken by it.
pub(crate) static LOCK_STEP_RUNS: Statement = Statement {
    sql: include_str!("record/lock_step_runs.sql"),
    args: &[INT8ARRAYOID],
};

/// A finished durable HTTP step: its answer becomes the step's checkpoint, unless the
/// workflow finished meanwhile, the step was recorded some other way, or the wait for it
/// timed out (its deadline has passed: the timeout wins, as over a late signal).
pub(crate) static CHECKPOINT_STEPS: Statement = Statement {
    sql: include_str!("record/checkpoint_steps.sql"),
    args: &[UUIDARRAYOID, TEXTARRAYOID, TEXTARRAYOID],
};

/// A 410 Gone from a named endpoint disables it; its messages wait for wf_endpoint_enable.
static DISABLE_ENDPOINTS: Statement = Statement {
    sql: include_str!("record/disable_endpoints.sql"),
    args: &[INT8ARRAYOID],
};

/// Endpoint health, on the rounds that change it: an endpoint's first failure since its
/// last success (`$2`, none of them also succeeding this round, `$1`) starts its failing
/// time; a success ends it; and an endpoint that has failed throughout
/// `workflow.endpoint_disable_after` (`$3`, NULL: never) is disabled, its messages kept
/// waiting.
static HEALTH: Statement = Statement {
    sql: include_str!("record/health.sql"),
    args: &[TEXTARRAYOID, TEXTARRAYOID, INTERVALOID],
};

/// Hands back messages that were claimed but not sent (see `Outcome::released`): due again
/// at once, the claim's attempt not counted.
static RELEASE: Statement = Statement {
    sql: include_str!("record/release.sql"),
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

/// One outcome as `RECORD` takes it: a row of the type `workflow.attempt_outcome`.
#[derive(Debug, Clone, PartialEq)]
pub struct Recorded {
    pub id: i64,
    pub attempt: i32,
    /// When the request started, in seconds since the Unix epoch.
    pub started: f64,
    pub duration_ms: f32,
    pub status_code: Option<i32>,
    pub error: Option<String>,
    pub body: Option<String>,
    /// The message's state after it: `delivered`, `pending` (a retry) or `dead`.
    pub state: &'static str,
    /// For a retry: seconds until it is due.
    pub delay_s: f64,
    /// The message held an earlier attempt (as its claim saw), which moves to the log.
    pub replaces_attempt: bool,
}

impl Recorded {
    /// The row as `record_in` reads it: fields in the type's order, NULL as nothing, text
    /// quoted with its quotes and backslashes escaped.
    fn literal(&self) -> String {
        fn quoted(out: &mut String, text: &str) {
            out.push('"');
            for c in text.chars() {
                if c == '"' || c == '\\' {
                    out.push('\\');
                }
                out.push(c);
            }
            out.push('"');
        }
        let mut out = String::with_capacity(
            64 + self.error.as_ref().map_or(0, String::len)
                + self.body.as_ref().map_or(0, String::len),
        );
        out.push_str(&format!(
            "({},{},{},{},",
            self.id, self.attempt, self.started, self.duration_ms
        ));
        if let Some(code) = self.status_code {
            out.push_str(&code.to_string());
        }
        out.push(',');
        if let Some(error) = &self.error {
            quoted(&mut out, error);
        }
        out.push(',');
        if let Some(body) = &self.body {
            quoted(&mut out, body);
        }
        out.push_str(&format!(
            ",{},{},{})",
            self.state, self.delay_s, self.replaces_attempt
        ));
        out
    }
}

/// The rows as `RECORD`'s one argument.
pub fn literals(rows: &[Recorded]) -> Vec<String> {
    rows.iter().map(Recorded::literal).collect()
}

/// What recording a round's outcomes writes, decided from the outcomes alone.
#[derive(Debug, Default)]
pub struct RecordPlan {
    /// The attempts to record on their messages (`RECORD`).
    pub rows: Vec<Recorded>,
    /// Delivered messages nothing keeps (`workflow.retention = 0`): id and attempt
    /// (`FORGET_DELIVERED`).
    pub forget: Vec<(i64, i32)>,
    /// The checkpoints of finished durable steps, by message (`CHECKPOINT_STEPS`).
    pub steps: HashMap<i64, String>,
    /// Messages whose answer disables their endpoint (`DISABLE_ENDPOINTS`).
    pub disables: Vec<i64>,
    /// What the outcomes say of their named endpoints (`HEALTH`).
    health: Health,
}

/// Decides what each outcome does to its message: the retry policy's decision, the
/// step it checkpoints, the endpoint it disables. `keep_delivered` is false when
/// `workflow.retention` is 0; `default_schedule` is `workflow.retry_schedule`.
pub fn plan_record(
    outcomes: &[&Outcome],
    keep_delivered: bool,
    default_schedule: &[Duration],
    rng: &mut impl rand::Rng,
) -> RecordPlan {
    let mut plan = RecordPlan {
        rows: Vec::with_capacity(outcomes.len()),
        ..RecordPlan::default()
    };
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
                    .unwrap_or(default_schedule),
                rng,
            )
        };
        // A step's answer is the step's business, not a sign of the destination's health.
        if decision != Decision::Answered {
            plan.health.note(outcome, decision == Decision::Delivered);
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
            plan.steps.insert(outcome.id, output);
        }
        // A message with an ordering key is kept until its flag has unparked the next.
        let delivered = matches!(decision, Decision::Delivered | Decision::Answered);
        if delivered && !keep_delivered && !outcome.ordered {
            plan.forget.push((outcome.id, outcome.attempt));
            continue;
        }
        if decision == Decision::DisableEndpoint {
            plan.disables.push(outcome.id);
        }
        plan.rows.push(Recorded {
            id: outcome.id,
            attempt: outcome.attempt,
            started: outcome
                .started_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .unwrap_or_default()
                .as_secs_f64(),
            duration_ms: outcome.duration.as_secs_f32() * 1000.0,
            status_code: outcome.status.map(i32::from),
            error: outcome.error.clone(),
            body: outcome
                .body
                .as_deref()
                .map(|b| truncate(b, RECORDED_BODY_BYTES).to_string()),
            state,
            delay_s: delay,
            replaces_attempt: outcome.replaces_attempt,
        });
    }
    plan
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
    let plan = plan_record(
        &outcomes,
        keep_delivered,
        &config::retry_schedule(),
        &mut rand::rng(),
    );
    let mut skipped = apply(client, plan)?;
    skipped.extend(held);
    Ok(skipped)
}

/// Runs a record plan's statements; returns the messages skipped because an application
/// held them locked.
fn apply(client: &mut SpiClient<'_>, plan: RecordPlan) -> SpiResult<Vec<i64>> {
    let RecordPlan {
        rows,
        forget,
        steps,
        mut disables,
        health,
    } = plan;
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
    if !rows.is_empty() {
        db::execute(
            client,
            &RECORD,
            &[literals(&rows).into()],
            &mut read_changed,
        )?;
    }
    if !forget.is_empty() {
        let (ids, attempts): (Vec<i64>, Vec<i32>) = forget.into_iter().unzip();
        let args: [DatumWithOid; 2] = [ids.into(), attempts.into()];
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
    Ok(skipped)
}

/// The named endpoints a round's outcomes succeeded and failed for, and whether that may
/// change their health (see `HEALTH`): a failure always may (it starts a failing time or
/// ends one in a disable), a success only for an endpoint that was failing.
#[derive(Debug, Default)]
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

/// The durable steps among `outcomes` whose runs an application holds (see
/// `LOCK_STEP_RUNS`).
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

/// The checkpoint of a finished durable HTTP step: `{"ok": true, "status", "headers",
/// "body"}` for a delivery; `{"ok": false, …, "error"}` for a dead message (no answer:
/// `status`, `headers` and `body` are null). The body is kept as JSON when it is JSON, else
/// as a string. None for an outcome that is not a durable step.
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
    use super::{Outcome, Recorded, plan_record, truncate, without_nul};
    use std::sync::Arc;
    use std::time::{Duration, SystemTime};

    /// A first attempt at a named endpoint that answered `status`, 5 attempts allowed.
    fn answered(status: Option<u16>) -> Outcome {
        Outcome {
            id: 7,
            attempt: 1,
            max_attempts: 5,
            named_endpoint: true,
            durable_step: false,
            ordered: false,
            replaces_attempt: false,
            started_at: SystemTime::UNIX_EPOCH + Duration::from_secs(100),
            duration: Duration::from_millis(3),
            status,
            error: status.is_none().then(|| "connection refused".to_string()),
            refused: false,
            body: status.map(|_| "{}".to_string()),
            retry_after: None,
            headers: None,
            released: false,
            destination: Arc::from("orders"),
            tenant: Arc::from(""),
            retry_schedule: None,
            endpoint_failing: false,
        }
    }

    /// What the plan does with one outcome: the message's state (or "forgotten"), whether a
    /// step is checkpointed, whether the endpoint is disabled, and what health hears.
    fn planned(outcome: Outcome, keep_delivered: bool) -> (&'static str, bool, bool, String) {
        let schedule = [Duration::from_secs(5), Duration::from_secs(300)];
        let plan = plan_record(&[&outcome], keep_delivered, &schedule, &mut rand::rng());
        let state = match (plan.rows.first(), plan.forget.first()) {
            (Some(row), None) => row.state,
            (None, Some(_)) => "forgotten",
            other => panic!("one outcome, one fate: {other:?}"),
        };
        let health = format!(
            "ok {:?} failed {:?}",
            plan.health.succeeded, plan.health.failed
        );
        (
            state,
            !plan.steps.is_empty(),
            !plan.disables.is_empty(),
            health,
        )
    }

    #[test]
    fn each_outcome_is_planned_as_its_decision_says() {
        let step = |status| Outcome {
            durable_step: true,
            ..answered(status)
        };
        let ordered = Outcome {
            ordered: true,
            ..answered(Some(200))
        };
        let last = Outcome {
            attempt: 5,
            ..answered(Some(503))
        };
        let refused = Outcome {
            refused: true,
            ..answered(None)
        };
        let ok = r#"ok ["orders"] failed []"#.to_string();
        let failed = r#"ok [] failed ["orders"]"#.to_string();
        let quiet = "ok [] failed []".to_string();
        let cases = [
            (
                "a 200 is delivered",
                answered(Some(200)),
                true,
                ("delivered", false, false, ok.clone()),
            ),
            (
                "a 503 with attempts left is retried",
                answered(Some(503)),
                true,
                ("pending", false, false, failed.clone()),
            ),
            (
                "no answer is retried",
                answered(None),
                true,
                ("pending", false, false, failed.clone()),
            ),
            (
                "a 503 on the last attempt is dead",
                last,
                true,
                ("dead", false, false, failed.clone()),
            ),
            (
                "a refused destination is dead at once",
                refused,
                true,
                ("dead", false, false, failed.clone()),
            ),
            (
                "a 410 disables the named endpoint",
                answered(Some(410)),
                true,
                ("pending", false, true, failed.clone()),
            ),
            (
                "a step's 404 answers the step, health untouched",
                step(Some(404)),
                true,
                ("delivered", true, false, quiet),
            ),
            (
                "a step's 200 is its checkpoint",
                step(Some(200)),
                true,
                ("delivered", true, false, ok.clone()),
            ),
            (
                "retention 0 forgets a delivery",
                answered(Some(200)),
                false,
                ("forgotten", false, false, ok.clone()),
            ),
            (
                "but keeps a keyed one for its successor's flag",
                ordered,
                false,
                ("delivered", false, false, ok),
            ),
        ];
        for (case, outcome, keep_delivered, expected) in cases {
            assert_eq!(planned(outcome, keep_delivered), expected, "{case}");
        }
    }

    #[test]
    fn a_retry_waits_for_its_scheduled_delay() {
        let schedule = [Duration::from_secs(5)];
        let outcome = answered(Some(503));
        let plan = plan_record(&[&outcome], true, &schedule, &mut rand::rng());
        let delay = plan.rows[0].delay_s;
        assert!((4.0..=6.0).contains(&delay), "{delay}");
        assert_eq!(plan.rows[0].started, 100.0);
    }

    #[test]
    fn a_row_literal_survives_quotes_backslashes_and_nulls() {
        let row = Recorded {
            id: 1,
            attempt: 2,
            started: 1.5,
            duration_ms: 0.25,
            status_code: None,
            error: Some(r#"a "quoted", \ (odd) error"#.to_string()),
            body: None,
            state: "pending",
            delay_s: 5.0,
            replaces_attempt: true,
        };
        assert_eq!(
            row.literal(),
            r#"(1,2,1.5,0.25,,"a \"quoted\", \\ (odd) error",,pending,5,true)"#
        );
    }

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

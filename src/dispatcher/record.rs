//! Recording outcomes: every finished attempt of a round in one short transaction, as one
//! statement over arrays — an attempt row each, and the message's new state. The rare
//! consequences — endpoints disabled by a 410, checkpoints of durable HTTP steps — are
//! statements of their own, run only for a round that has them.

use super::send::Outcome;
use crate::db::{self, Statement};
use crate::delivery::retry::{self, Decision};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{FLOAT4ARRAYOID, FLOAT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashSet;
use std::time::SystemTime;

/// The part of a response body kept in `workflow.attempts`.
pub const RECORDED_BODY_BYTES: usize = 4096;

/// An outcome only changes its message if the message is still pending in the attempt that
/// produced it: a cancel, or a newer claim after this dispatcher lost its lease, wins.
/// Returns the messages it changed. The outbox is reached by key from the id array, so the
/// plan does not hinge on a join order.
pub(crate) static RECORD: Statement = Statement {
    sql: "WITH o AS (
              SELECT * FROM unnest($1::int8[], $2::int4[], $3::float8[], $4::float4[], $5::int4[],
                                   $6::text[], $7::text[], $8::text[], $9::float8[])
                       AS o(id, attempt, started, duration_ms, status_code, error, body, outcome,
                            delay_s)),
          logged AS (
              INSERT INTO workflow.delivery_attempts
                     (message_id, attempt, started_at, duration_ms, status_code, error, response_body)
              SELECT o.id, o.attempt, to_timestamp(o.started), o.duration_ms, o.status_code, o.error, o.body
                FROM o
               WHERE EXISTS (SELECT FROM workflow.outbox m WHERE m.id = o.id))
          UPDATE workflow.outbox m
             SET status = o.outcome,
                 next_attempt_at = CASE WHEN o.outcome = 'pending'
                                        THEN clock_timestamp() + make_interval(secs => o.delay_s)
                                        ELSE m.next_attempt_at END,
                 leased_until = NULL,
                 last_status_code = o.status_code,
                 last_error = o.error,
                 delivered_at = CASE WHEN o.outcome = 'delivered' THEN clock_timestamp() END,
                 finished_at = CASE WHEN o.outcome = 'pending' THEN NULL ELSE clock_timestamp() END
            FROM o
           WHERE m.id = ANY ($1) AND m.id = o.id AND m.status = 'pending' AND m.attempts = o.attempt
          RETURNING m.id",
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
    ],
};

/// A delivered durable HTTP step: its response becomes the step's checkpoint, unless the
/// workflow finished meanwhile or the step was recorded some other way.
static CHECKPOINT_STEPS: Statement = Statement {
    sql: "INSERT INTO workflow.checkpoints (workflow_id, step, output)
          SELECT m.workflow_id, m.step, o.output::jsonb
            FROM unnest($1::int8[], $2::text[]) AS o(id, output)
            JOIN workflow.outbox m ON m.id = o.id
            JOIN workflow.runs r ON r.id = m.workflow_id AND r.status = 'running'
           WHERE m.step IS NOT NULL
          ON CONFLICT (workflow_id, step) DO NOTHING",
    args: &[INT8ARRAYOID, TEXTARRAYOID],
};

/// A 410 Gone from a named endpoint disables it; its messages wait for wf_endpoint_enable.
static DISABLE_ENDPOINTS: Statement = Statement {
    sql: "UPDATE workflow.endpoint_settings e
             SET disabled_at = clock_timestamp(),
                 disabled_reason = 'the endpoint answered 410 Gone',
                 updated_at = clock_timestamp()
            FROM workflow.outbox m
           WHERE m.id = ANY ($1) AND e.name = m.endpoint AND e.disabled_at IS NULL",
    args: &[INT8ARRAYOID],
};

/// Records a round of outcomes; call inside a transaction.
pub fn record(client: &mut SpiClient<'_>, outcomes: &[Outcome]) -> SpiResult<()> {
    if outcomes.is_empty() {
        return Ok(());
    }
    let mut rng = rand::rng();
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
    // Only the few outcomes with consequences beyond their message.
    let (mut steps, mut disables) = (Vec::new(), Vec::new());
    for outcome in outcomes {
        let decision = if outcome.refused {
            Decision::Dead
        } else {
            retry::decide(
                outcome.status,
                outcome.attempt.max(1) as u32,
                outcome.max_attempts.max(1) as u32,
                outcome.named_endpoint,
                outcome.retry_after,
                &mut rng,
            )
        };
        let (state, delay) = match decision {
            Decision::Delivered => ("delivered", 0.0),
            Decision::RetryAfter(delay) => ("pending", delay.as_secs_f64()),
            Decision::Dead => ("dead", 0.0),
            Decision::DisableEndpoint => ("pending", 0.0),
        };
        ids.push(outcome.id);
        attempts.push(outcome.attempt);
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
        if decision == Decision::Delivered
            && let Some(output) = step_output(outcome)
        {
            steps.push((outcome.id, output));
        }
        if decision == Decision::DisableEndpoint {
            disables.push(outcome.id);
        }
    }
    let args: [DatumWithOid; 9] = [
        ids.into(),
        attempts.into(),
        started.into(),
        durations.into(),
        codes.into(),
        errors.into(),
        bodies.into(),
        states.into(),
        delays.into(),
    ];
    let changed = db::execute(client, &RECORD, &args, |rows| {
        rows.map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
            .collect::<SpiResult<HashSet<i64>>>()
    })?;
    // A consequence only follows an outcome that changed its message.
    steps.retain(|(id, _)| changed.contains(id));
    disables.retain(|id| changed.contains(id));
    if !steps.is_empty() {
        let (ids, outputs): (Vec<i64>, Vec<String>) = steps.into_iter().unzip();
        db::execute(
            client,
            &CHECKPOINT_STEPS,
            &[ids.into(), outputs.into()],
            |_| Ok(()),
        )?;
    }
    if !disables.is_empty() {
        db::execute(client, &DISABLE_ENDPOINTS, &[disables.into()], |_| Ok(()))?;
    }
    Ok(())
}

/// The checkpoint of a durable HTTP step: status, headers, and the body as JSON when it is
/// JSON, else as a string.
fn step_output(outcome: &Outcome) -> Option<String> {
    if !outcome.durable_step {
        return None;
    }
    let body = outcome.body.as_deref().unwrap_or_default();
    let body =
        serde_json::from_str(body).unwrap_or_else(|_| serde_json::Value::String(body.to_string()));
    let output = serde_json::json!({
        "status": outcome.status,
        "headers": outcome.headers.clone().unwrap_or(serde_json::Value::Null),
        "body": body,
    });
    Some(output.to_string())
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
    use super::truncate;

    #[test]
    fn truncation_respects_character_boundaries() {
        assert_eq!(truncate("héllo", 2), "h");
        assert_eq!(truncate("héllo", 3), "hé");
        assert_eq!(truncate("abc", 10), "abc");
    }
}

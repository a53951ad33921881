//! The destinations' health (G11), kept by the dispatcher: what a round's outcomes make of
//! it (`delivery::health`), stored in `workflow.destinations`, and what follows.
//!
//! A failing destination is a limit of one request at a time, and none before its next
//! probe is due: the claim's room for it (`claim::destination_room!`) says so, so its due
//! messages are parked at its limit as they are walked, and its failed messages are parked
//! with their retry time kept. `parking::UNPARK_LIMITED` lets one go when a probe is due,
//! the oldest whose retry time has come. Its first answer makes every one of its parked
//! messages due now, and they go out at its limits.
//!
//! The dispatcher keeps the failing ones in memory between rounds (it is their only writer
//! besides `wf_endpoint_enable`, whose commit leaves an unpark flag, and the worker reads
//! them again then); the table is what a restarted dispatcher starts from.

use super::send::Outcome;
use crate::db::{self, Statement};
use crate::delivery::health::{self, Change, Health, Seen};
use crate::delivery::retry::{self, Verdict};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{FLOAT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stores the destinations' new states: `$2` their states, `$3` failed requests in a row,
/// `$4` seconds until the next probe (NULL: healthy). `since` moves only with the state.
static SAVE: Statement = Statement {
    sql: "INSERT INTO workflow.destinations AS d (destination, state, since, probes, next_probe_at)
          SELECT t.destination, t.state, clock_timestamp(), t.probes,
                 clock_timestamp() + make_interval(secs => t.probe_in)
            FROM unnest($1::text[], $2::text[], $3::int4[], $4::float8[])
                 AS t(destination, state, probes, probe_in)
          ON CONFLICT (destination) DO UPDATE
             SET state = EXCLUDED.state,
                 since = CASE WHEN d.state = EXCLUDED.state THEN d.since ELSE EXCLUDED.since END,
                 probes = EXCLUDED.probes,
                 next_probe_at = EXCLUDED.next_probe_at",
    args: &[TEXTARRAYOID, TEXTARRAYOID, INT4ARRAYOID, FLOAT8ARRAYOID],
};

/// Parks the messages `$1` that a failed request left pending, at their destination's
/// limit, with their retry time: they wait for a probe's turn, or for the outage's end.
static PARK_FAILED: Statement = Statement {
    sql: "UPDATE workflow.outbox m SET parked = 'limit'
           WHERE m.id = ANY ($1) AND m.status = 'pending' AND m.parked IS NULL",
    args: &[INT8ARRAYOID],
};

/// Makes every message parked at the destinations `$1` due now: their outage ended. Found
/// through `outbox_limited`; a message an application holds locked keeps its time.
static RELEASE: Statement = Statement {
    sql: "WITH waiting AS (
              SELECT m.id FROM workflow.outbox m
               WHERE coalesce(m.endpoint, m.origin) = ANY ($1) AND m.parked = 'limit'
                 AND m.next_attempt_at > clock_timestamp()
                 FOR NO KEY UPDATE SKIP LOCKED)
          UPDATE workflow.outbox m SET next_attempt_at = clock_timestamp()
           WHERE m.id = ANY (ARRAY(SELECT id FROM waiting))",
    args: &[TEXTARRAYOID],
};

/// The failing destinations, with seconds until their next probe.
static FAILING: Statement = Statement {
    sql: "SELECT destination, probes,
                 extract(epoch FROM next_probe_at - clock_timestamp())::float8
            FROM workflow.destinations WHERE state = 'failing'",
    args: &[],
};

/// A failing destination as the dispatcher keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failing {
    pub probes: u32,
    /// When its next probe may start.
    pub probe_at: Instant,
}

/// What a round's outcomes show of each destination they went to: answered, or failed.
/// Requests that never went out (released, refused by the SSRF guard, unsendable) show
/// nothing.
pub fn seen(outcomes: &[&Outcome]) -> HashMap<Arc<str>, Seen> {
    let mut seen: HashMap<Arc<str>, Seen> = HashMap::new();
    for outcome in outcomes.iter().filter(|o| !o.released && !o.refused) {
        let this = if answered(outcome.status) {
            Seen::Answered
        } else {
            Seen::Failed
        };
        let entry = seen.entry(Arc::clone(&outcome.destination)).or_insert(this);
        if this == Seen::Answered {
            *entry = Seen::Answered;
        }
    }
    seen
}

/// An answer that shows the destination up: a success, or a refusal it meant.
fn answered(status: Option<u16>) -> bool {
    match status {
        Some(status @ 200..=299) => retry::classify_status(status) == Verdict::Delivered,
        Some(status @ 400..=499) => retry::classify_status(status) != Verdict::Retry,
        _ => false,
    }
}

/// The changes a round's outcomes make, given the failing destinations as they stand.
pub fn changes(
    seen: &HashMap<Arc<str>, Seen>,
    failing: &HashMap<Arc<str>, Failing>,
) -> Vec<(Arc<str>, Change)> {
    seen.iter()
        .filter_map(|(destination, seen)| {
            let health = failing
                .get(destination)
                .map_or(Health::Healthy, |f| Health::Failing { probes: f.probes });
            let change = health::next(health, *seen);
            // A healthy destination that answered changes nothing: the common round.
            (change.health != Health::Healthy || change.release)
                .then(|| (Arc::clone(destination), change))
        })
        .collect()
}

/// The messages of `outcomes` whose request failed at a destination that is failing after
/// `changes`: they wait parked for a probe's turn or the outage's end.
fn to_park(outcomes: &[&Outcome], changes: &[(Arc<str>, Change)]) -> Vec<i64> {
    outcomes
        .iter()
        .filter(|o| !o.released && !o.refused && !answered(o.status))
        .filter(|o| {
            changes.iter().any(|(destination, change)| {
                *destination == o.destination && change.health != Health::Healthy
            })
        })
        .map(|o| o.id)
        .collect()
}

/// What a round's recorded `outcomes` make of the destinations, given the failing ones as
/// they stand: stores the changes, parks the failed messages of destinations failing now,
/// and releases those whose outage ended, in the round's transaction. Returns the changes,
/// for the worker to keep once the round commits.
pub fn observe(
    client: &mut SpiClient<'_>,
    outcomes: &[&Outcome],
    failing: &HashMap<Arc<str>, Failing>,
) -> SpiResult<Vec<(Arc<str>, Change)>> {
    let changes = changes(&seen(outcomes), failing);
    apply(client, &changes, to_park(outcomes, &changes))?;
    Ok(changes)
}

/// Applies `changes` in the round's transaction: stores them, parks the failed messages
/// `failed` of destinations that are failing now, and releases those whose outage ended.
fn apply(
    client: &mut SpiClient<'_>,
    changes: &[(Arc<str>, Change)],
    failed: Vec<i64>,
) -> SpiResult<()> {
    if changes.is_empty() {
        return Ok(());
    }
    let (mut names, mut states, mut probes, mut probe_in) = (vec![], vec![], vec![], vec![]);
    let mut released = Vec::new();
    for (destination, change) in changes {
        names.push(destination.to_string());
        states.push(change.health.as_str());
        probes.push(change.health.probes().min(i32::MAX as u32) as i32);
        probe_in.push(change.next_probe_in.map(|d| d.as_secs_f64()));
        if change.release {
            released.push(destination.to_string());
        }
    }
    let args: [DatumWithOid; 4] = [names.into(), states.into(), probes.into(), probe_in.into()];
    db::execute(client, &SAVE, &args, |_| Ok(()))?;
    if !failed.is_empty() {
        db::execute(client, &PARK_FAILED, &[failed.into()], |_| Ok(()))?;
    }
    if !released.is_empty() {
        db::execute(client, &RELEASE, &[released.into()], |_| Ok(()))?;
    }
    Ok(())
}

/// The failing destinations as stored; for a dispatcher that starts, and after an
/// endpoint's change (an enable ends its failing).
pub fn load(client: &mut SpiClient<'_>) -> SpiResult<HashMap<Arc<str>, Failing>> {
    db::execute(client, &FAILING, &[], |rows| {
        let mut failing = HashMap::new();
        let now = Instant::now();
        for row in rows {
            let Some(destination) = row.get::<String>(1)? else {
                continue;
            };
            let probes = row.get::<i32>(2)?.unwrap_or(1).max(1) as u32;
            let wait = row.get::<f64>(3)?.unwrap_or(0.0).max(0.0);
            failing.insert(
                Arc::from(destination),
                Failing {
                    probes,
                    probe_at: now + Duration::from_secs_f64(wait.min(86_400.0)),
                },
            );
        }
        Ok(failing)
    })
}

#[cfg(test)]
mod tests {
    use super::answered;

    #[test]
    fn an_answer_is_a_success_or_a_meant_refusal() {
        for status in [200, 204, 400, 402, 404, 410, 422] {
            assert!(answered(Some(status)), "{status}");
        }
        for status in [
            None,
            Some(302),
            Some(408),
            Some(409),
            Some(425),
            Some(429),
            Some(500),
            Some(503),
            Some(103),
        ] {
            assert!(!answered(status), "{status:?}");
        }
    }
}

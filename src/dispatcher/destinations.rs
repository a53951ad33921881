//! The destinations' health (G11), kept by the dispatcher: what a round's outcomes make of
//! it (`delivery::health`), stored in `workflow.destinations`, and what follows.
//!
//! A failing destination is a limit of one request at a time, and none before its next
//! probe is due: the claim's room for it (`claim/claim.sql`) says so, so its due
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
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{FLOAT8ARRAYOID, INT4ARRAYOID, INT8ARRAYOID, TEXTARRAYOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Stores the failing destinations' states: `$2` unreachable requests in a row, `$3`
/// seconds until the next probe.
static SAVE: Statement = Statement {
    sql: include_str!("destinations/save.sql"),
    args: &[TEXTARRAYOID, INT4ARRAYOID, FLOAT8ARRAYOID],
};

/// Forgets the destinations `$1` whose outage ended: a healthy destination has no row.
static FORGET: Statement = Statement {
    sql: include_str!("destinations/forget.sql"),
    args: &[TEXTARRAYOID],
};

/// Parks the messages `$1` that a failed request left pending, at their destination's
/// limit, with their retry time: they wait for a probe's turn, or for the outage's end.
static PARK_FAILED: Statement = Statement {
    sql: include_str!("destinations/park_failed.sql"),
    args: &[INT8ARRAYOID],
};

/// Makes every message parked at the destinations `$1` due now, with the messages `$2`
/// (failed in the round that ended the outage): their outage ended.
static RELEASE: Statement = Statement {
    sql: include_str!("destinations/release.sql"),
    args: &[TEXTARRAYOID, INT8ARRAYOID],
};

/// The failing destinations, with seconds until their next probe and since they failed.
static FAILING: Statement = Statement {
    sql: include_str!("destinations/failing.sql"),
    args: &[],
};

/// A failing destination as the dispatcher keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Failing {
    pub probes: u32,
    /// When it started failing, and when its next probe may start.
    pub since: Instant,
    pub probe_at: Instant,
}

/// What the dispatcher knows of the destinations' health between rounds: the failing ones,
/// and the healthy ones with unreachable requests in a row (kept in memory only).
#[derive(Debug, Clone, Default)]
pub struct Known {
    pub failing: HashMap<Arc<str>, Failing>,
    pub suspect: HashMap<Arc<str>, u32>,
}

impl Known {
    /// A destination's health, and how long it has been failing.
    fn health(&self, destination: &Arc<str>) -> (Health, Duration) {
        match self.failing.get(destination) {
            Some(f) => (Health::Failing { probes: f.probes }, f.since.elapsed()),
            None => (
                Health::Healthy {
                    failures: self.suspect.get(destination).copied().unwrap_or(0),
                },
                Duration::ZERO,
            ),
        }
    }
}

/// What a round's outcomes show of each destination they went to. Requests that never
/// went out (released, refused by the SSRF guard, unsendable) show nothing.
pub fn seen(outcomes: &[&Outcome]) -> HashMap<Arc<str>, Seen> {
    let mut seen: HashMap<Arc<str>, Seen> = HashMap::new();
    for outcome in outcomes.iter().filter(|o| !o.released && !o.refused) {
        let entry = seen
            .entry(Arc::clone(&outcome.destination))
            .or_insert(Seen::Unreachable {
                requests: 0,
                retry_after: None,
            });
        match (health::unreachable(outcome.status), &mut *entry) {
            (false, _) => *entry = Seen::Answered,
            (
                true,
                Seen::Unreachable {
                    requests,
                    retry_after,
                },
            ) => {
                *requests += 1;
                *retry_after = (*retry_after).max(outcome.retry_after);
            }
            (true, Seen::Answered) => {}
        }
    }
    seen
}

/// The changes a round's outcomes make, given what is known.
pub fn changes(seen: &HashMap<Arc<str>, Seen>, known: &Known) -> Vec<(Arc<str>, Change)> {
    seen.iter()
        .filter_map(|(destination, seen)| {
            let (health, failing_for) = known.health(destination);
            let change = health::next(health, *seen, failing_for);
            // A healthy destination that answered, and was not suspect, changes nothing:
            // the common round.
            (change.health != health || change.health.is_failing() || change.release)
                .then(|| (Arc::clone(destination), change))
        })
        .collect()
}

/// The messages of `outcomes` that found their destination unreachable, at destinations
/// `which` says yes to after `changes`.
fn unreachable_at(
    outcomes: &[&Outcome],
    changes: &[(Arc<str>, Change)],
    which: impl Fn(&Change) -> bool,
) -> Vec<i64> {
    outcomes
        .iter()
        .filter(|o| !o.released && !o.refused && health::unreachable(o.status))
        .filter(|o| {
            changes
                .iter()
                .any(|(destination, change)| *destination == o.destination && which(change))
        })
        .map(|o| o.id)
        .collect()
}

/// What a round's recorded `outcomes` make of the destinations, given what is known:
/// stores the failing ones, parks their unreachable messages, forgets and releases those
/// whose outage ended, in the round's transaction. Returns the changes, for the worker to
/// keep once the round commits.
pub fn observe(
    client: &mut SpiClient<'_>,
    outcomes: &[&Outcome],
    known: &Known,
) -> SpiResult<Vec<(Arc<str>, Change)>> {
    let changes = changes(&seen(outcomes), known);
    if changes.is_empty() {
        return Ok(changes);
    }
    let (mut names, mut probes, mut probe_in) = (vec![], vec![], vec![]);
    let mut recovered = Vec::new();
    for (destination, change) in &changes {
        if change.health.is_failing() {
            names.push(destination.to_string());
            probes.push(change.health.probes().min(i32::MAX as u32) as i32);
            probe_in.push(change.next_probe_in.map(|d| d.as_secs_f64()));
        }
        if change.release {
            recovered.push(destination.to_string());
        }
    }
    if !names.is_empty() {
        let args: [DatumWithOid; 3] = [names.into(), probes.into(), probe_in.into()];
        db::execute(client, &SAVE, &args, |_| Ok(()))?;
        let parked = unreachable_at(outcomes, &changes, |c| c.health.is_failing());
        if !parked.is_empty() {
            db::execute(client, &PARK_FAILED, &[parked.into()], |_| Ok(()))?;
        }
    }
    if !recovered.is_empty() {
        db::execute(client, &FORGET, &[recovered.clone().into()], |_| Ok(()))?;
        let due_now = unreachable_at(outcomes, &changes, |c| c.release);
        let args: [DatumWithOid; 2] = [recovered.into(), due_now.into()];
        db::execute(client, &RELEASE, &args, |_| Ok(()))?;
    }
    Ok(changes)
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
            let failed_for = row
                .get::<f64>(4)?
                .unwrap_or(0.0)
                .clamp(0.0, 86_400.0 * 365.0);
            failing.insert(
                Arc::from(destination),
                Failing {
                    probes,
                    since: now
                        .checked_sub(Duration::from_secs_f64(failed_for))
                        .unwrap_or(now),
                    probe_at: now + Duration::from_secs_f64(wait.min(86_400.0)),
                },
            );
        }
        Ok(failing)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(failing: &[(&str, u32)], suspect: &[(&str, u32)]) -> Known {
        Known {
            failing: failing
                .iter()
                .map(|(d, probes)| {
                    (
                        Arc::from(*d),
                        Failing {
                            probes: *probes,
                            since: Instant::now(),
                            probe_at: Instant::now(),
                        },
                    )
                })
                .collect(),
            suspect: suspect.iter().map(|(d, n)| (Arc::from(*d), *n)).collect(),
        }
    }

    fn lost(requests: u32) -> Seen {
        Seen::Unreachable {
            requests,
            retry_after: None,
        }
    }

    #[test]
    fn only_what_changes_a_destination_is_a_change() {
        let known = known(&[("down", 2)], &[("shaky", 2)]);
        let seen: HashMap<Arc<str>, Seen> = [
            ("fine", Seen::Answered),
            ("shaky", lost(1)),
            ("down", Seen::Answered),
            ("new", lost(1)),
        ]
        .into_iter()
        .map(|(d, s)| (Arc::from(d), s))
        .collect();
        let mut changes: Vec<(String, Change)> = changes(&seen, &known)
            .into_iter()
            .map(|(d, c)| (d.to_string(), c))
            .collect();
        changes.sort_by(|a, b| a.0.cmp(&b.0));
        let names: Vec<&str> = changes.iter().map(|(d, _)| d.as_str()).collect();
        assert_eq!(
            names,
            ["down", "new", "shaky"],
            "a healthy destination that answered writes nothing"
        );
        assert!(changes[0].1.release, "the first answer ends the outage");
        assert_eq!(changes[1].1.health, Health::Healthy { failures: 1 });
        assert!(changes[2].1.health.is_failing(), "the third in a row");
    }
}

//! A destination's health (G11), as a state machine in plain Rust: what a round's outcomes
//! for one destination — an endpoint, a URL's origin, a push handler — make of its state.
//!
//! - **Healthy**: its messages go out at its limits. Requests that find it unreachable or
//!   overloaded (no answer, 502, 503, 504, 429) are counted; any other answer resets the
//!   count. Other failures (a 500, a 409) are the message's business: retried on its own
//!   schedule, they say nothing of the destination.
//! - **Failing**: `FAILURES_TO_FAIL` such requests in a row. It is probed with one request at
//!   a time, at most one per probe interval: a tenth of how long it has been failing, from
//!   1 s to 8 s (or what the last `Retry-After` asked for, up to an hour). A short outage is
//!   noticed to end within a tenth of its length; a long one costs one request every 8 s.
//!   Its other messages wait, parked, and use no attempts.
//!
//! Its first answer ends the outage: every message waiting for it is due at once, and goes
//! out at its limits. A destination disabled by its owner or by
//! `workflow.endpoint_disable_after` is the endpoint's own state, kept apart
//! (`endpoint_settings.disabled_at`).

use std::time::Duration;

/// How many unreachable requests in a row make a healthy destination failing: one timeout
/// or one overloaded answer is a message's bad luck, not an outage.
pub const FAILURES_TO_FAIL: u32 = 3;
/// The shortest probe interval, the first after a destination starts failing.
pub const FIRST_PROBE: Duration = Duration::from_secs(1);
/// The longest probe interval of the schedule: a destination back from an outage waits at
/// most this long for its next probe, and a long outage costs one request per interval.
pub const LONGEST_PROBE: Duration = Duration::from_secs(8);
/// The probe interval is this share of the time the destination has been failing.
pub const PROBE_SHARE: u32 = 10;
/// The longest wait a `Retry-After` may ask for between probes.
pub const LONGEST_RETRY_AFTER: Duration = Duration::from_secs(3600);

/// What the dispatcher knows of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Health {
    /// Reachable; `failures` unreachable requests in a row since its last answer.
    Healthy { failures: u32 },
    /// Failing since its last answer; `probes` unreachable requests in a row since then.
    Failing { probes: u32 },
}

impl Default for Health {
    fn default() -> Self {
        Health::Healthy { failures: 0 }
    }
}

/// What one round's outcomes for a destination showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// At least one request got an answer that shows the destination up: any status but
    /// 502, 503, 504 and 429.
    Answered,
    /// Every request found it unreachable or overloaded, `requests` of them; the longest
    /// `Retry-After` among them, if any.
    Unreachable {
        requests: u32,
        retry_after: Option<Duration>,
    },
}

/// A destination's next state and what changes with it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub health: Health,
    /// The next probe may start this long after now (while failing).
    pub next_probe_in: Option<Duration>,
    /// The outage ended: every message waiting for the destination is due now.
    pub release: bool,
}

/// Whether a request's result shows the destination unreachable or overloaded.
pub fn unreachable(status: Option<u16>) -> bool {
    matches!(status, None | Some(429 | 502 | 503 | 504))
}

/// The transition a round's outcomes make; `failing_for` is how long the destination has
/// been failing (zero if it is not).
pub fn next(health: Health, seen: Seen, failing_for: Duration) -> Change {
    match (health, seen) {
        (Health::Healthy { .. }, Seen::Answered) => healthy(false),
        (Health::Failing { .. }, Seen::Answered) => healthy(true),
        (
            Health::Healthy { failures },
            Seen::Unreachable {
                requests,
                retry_after,
            },
        ) => {
            let failures = failures.saturating_add(requests);
            if failures >= FAILURES_TO_FAIL {
                failing(1, Duration::ZERO, retry_after)
            } else {
                Change {
                    health: Health::Healthy { failures },
                    next_probe_in: None,
                    release: false,
                }
            }
        }
        (Health::Failing { probes }, Seen::Unreachable { retry_after, .. }) => {
            failing(probes.saturating_add(1), failing_for, retry_after)
        }
    }
}

fn healthy(release: bool) -> Change {
    Change {
        health: Health::Healthy { failures: 0 },
        next_probe_in: None,
        release,
    }
}

fn failing(probes: u32, failing_for: Duration, retry_after: Option<Duration>) -> Change {
    let asked = retry_after.map_or(Duration::ZERO, |d| d.min(LONGEST_RETRY_AFTER));
    Change {
        health: Health::Failing { probes },
        next_probe_in: Some(probe_interval(failing_for).max(asked)),
        release: false,
    }
}

/// The wait before the next probe of a destination failing for `failing_for`.
pub fn probe_interval(failing_for: Duration) -> Duration {
    (failing_for / PROBE_SHARE).clamp(FIRST_PROBE, LONGEST_PROBE)
}

impl Health {
    pub fn is_failing(self) -> bool {
        matches!(self, Health::Failing { .. })
    }

    pub fn probes(self) -> u32 {
        match self {
            Health::Healthy { .. } => 0,
            Health::Failing { probes } => probes,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transitions_are_the_table() {
        let s = Duration::from_secs;
        let ok = |failures| Health::Healthy { failures };
        let down = |probes| Health::Failing { probes };
        let lost = |requests| Seen::Unreachable {
            requests,
            retry_after: None,
        };
        let cases = [
            // (from, seen, failing for, to, next probe in, release)
            (ok(0), Seen::Answered, s(0), ok(0), None, false),
            (ok(2), Seen::Answered, s(0), ok(0), None, false),
            (ok(0), lost(1), s(0), ok(1), None, false),
            (ok(1), lost(1), s(0), ok(2), None, false),
            (ok(2), lost(1), s(0), down(1), Some(s(1)), false),
            (ok(0), lost(5), s(0), down(1), Some(s(1)), false),
            (down(1), lost(1), s(5), down(2), Some(s(1)), false),
            (down(2), lost(1), s(30), down(3), Some(s(3)), false),
            (down(3), lost(1), s(60), down(4), Some(s(6)), false),
            (down(40), lost(1), s(900), down(41), Some(s(8)), false),
            (down(1), Seen::Answered, s(5), ok(0), None, true),
            (down(40), Seen::Answered, s(900), ok(0), None, true),
            (
                down(1),
                Seen::Unreachable {
                    requests: 1,
                    retry_after: Some(s(60)),
                },
                s(5),
                down(2),
                Some(s(60)),
                false,
            ),
            (
                down(1),
                Seen::Unreachable {
                    requests: 1,
                    retry_after: Some(s(86_400)),
                },
                s(5),
                down(2),
                Some(s(3600)),
                false,
            ),
        ];
        for (from, seen, failing_for, to, probe, release) in cases {
            let change = next(from, seen, failing_for);
            assert_eq!(
                change,
                Change {
                    health: to,
                    next_probe_in: probe,
                    release
                },
                "{from:?} seeing {seen:?}"
            );
        }
    }

    #[test]
    fn only_an_unreachable_or_overloaded_destination_counts_toward_an_outage() {
        for status in [None, Some(429), Some(502), Some(503), Some(504)] {
            assert!(unreachable(status), "{status:?}");
        }
        for status in [200, 204, 302, 400, 402, 404, 408, 409, 410, 425, 500, 501] {
            assert!(!unreachable(Some(status)), "{status}");
        }
    }

    #[test]
    fn a_long_outage_costs_a_request_per_longest_interval() {
        let mut health = Health::default();
        let mut elapsed = Duration::ZERO;
        let mut failing_since = None;
        let mut requests = 0;
        while elapsed < Duration::from_secs(15 * 60) {
            let failing_for = failing_since.map_or(Duration::ZERO, |since| elapsed - since);
            let change = next(
                health,
                Seen::Unreachable {
                    requests: 1,
                    retry_after: None,
                },
                failing_for,
            );
            if change.health.is_failing() && failing_since.is_none() {
                failing_since = Some(elapsed);
            }
            health = change.health;
            elapsed += change.next_probe_in.unwrap_or(Duration::from_millis(1));
            requests += 1;
        }
        // 9,000 messages at 10 a second in 15 minutes: requests stay under 2% of them.
        assert!(requests < 180, "{requests} requests in 15 minutes");
    }

    #[test]
    fn a_short_outage_is_seen_to_end_within_a_tenth_of_its_length() {
        let s = Duration::from_secs;
        for (failing_for, at_most) in [(s(5), s(1)), (s(20), s(2)), (s(60), s(6)), (s(3600), s(8))]
        {
            assert!(probe_interval(failing_for) <= at_most, "{failing_for:?}");
        }
    }
}

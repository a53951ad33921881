//! A destination's health (G11), as a state machine in plain Rust: what a round's outcomes
//! for one destination — an endpoint, a URL's origin, a push handler — make of its state.
//!
//! - **Healthy**: its messages go out at its limits.
//! - **Failing**: its requests fail (no answer, or one that asks to try again). It is
//!   probed with one request at a time, at most one per probe interval (1 s, doubling to
//!   8 s); its other messages wait, parked, and use no attempts.
//!
//! Its first answer — a success, or a refusal that proves it is up — ends the outage: every
//! message waiting for it is due at once, and goes out at its limits. A destination disabled
//! by its owner or by `workflow.endpoint_disable_after` is the endpoint's own state, kept
//! apart (`endpoint_settings.disabled_at`).

use std::time::Duration;

/// The first probe interval after a failure; it doubles with each failed probe.
pub const FIRST_PROBE: Duration = Duration::from_secs(1);
/// The longest probe interval: a destination back from an outage waits at most this long
/// for its next probe, and a long outage costs one request per interval.
pub const LONGEST_PROBE: Duration = Duration::from_secs(8);

/// What the dispatcher knows of a destination.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Health {
    #[default]
    Healthy,
    /// Failing since its last answer; `probes` failed requests in a row since then.
    Failing { probes: u32 },
}

/// What one round's outcomes for a destination showed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// At least one request got an answer that shows the destination up: a 2xx, or a
    /// refusal it meant (a 4xx other than 408/409/425/429).
    Answered,
    /// Every request failed: no answer (timeout, refused, reset), a 5xx, 408, 409, 425 or
    /// 429, or a redirect.
    Failed,
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

/// The transition a round's outcomes make.
pub fn next(health: Health, seen: Seen) -> Change {
    match (health, seen) {
        (Health::Healthy, Seen::Answered) => Change {
            health: Health::Healthy,
            next_probe_in: None,
            release: false,
        },
        (Health::Failing { .. }, Seen::Answered) => Change {
            health: Health::Healthy,
            next_probe_in: None,
            release: true,
        },
        (Health::Healthy, Seen::Failed) => failing(1),
        (Health::Failing { probes }, Seen::Failed) => failing(probes.saturating_add(1)),
    }
}

fn failing(probes: u32) -> Change {
    Change {
        health: Health::Failing { probes },
        next_probe_in: Some(probe_interval(probes)),
        release: false,
    }
}

/// The wait before the next probe after `probes` failed requests in a row.
pub fn probe_interval(probes: u32) -> Duration {
    let doubled = FIRST_PROBE.saturating_mul(1u32 << probes.saturating_sub(1).min(16));
    doubled.min(LONGEST_PROBE)
}

impl Health {
    /// As stored (`workflow.destinations.state` and `probes`).
    pub fn as_str(self) -> &'static str {
        match self {
            Health::Healthy => "healthy",
            Health::Failing { .. } => "failing",
        }
    }

    pub fn probes(self) -> u32 {
        match self {
            Health::Healthy => 0,
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
        let cases = [
            // (from, seen, to, next probe in, release)
            (
                Health::Healthy,
                Seen::Answered,
                Health::Healthy,
                None,
                false,
            ),
            (
                Health::Healthy,
                Seen::Failed,
                Health::Failing { probes: 1 },
                Some(s(1)),
                false,
            ),
            (
                Health::Failing { probes: 1 },
                Seen::Failed,
                Health::Failing { probes: 2 },
                Some(s(2)),
                false,
            ),
            (
                Health::Failing { probes: 2 },
                Seen::Failed,
                Health::Failing { probes: 3 },
                Some(s(4)),
                false,
            ),
            (
                Health::Failing { probes: 3 },
                Seen::Failed,
                Health::Failing { probes: 4 },
                Some(s(8)),
                false,
            ),
            (
                Health::Failing { probes: 40 },
                Seen::Failed,
                Health::Failing { probes: 41 },
                Some(s(8)),
                false,
            ),
            (
                Health::Failing { probes: 1 },
                Seen::Answered,
                Health::Healthy,
                None,
                true,
            ),
            (
                Health::Failing { probes: 40 },
                Seen::Answered,
                Health::Healthy,
                None,
                true,
            ),
        ];
        for (from, seen, to, probe, release) in cases {
            let change = next(from, seen);
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
    fn a_long_outage_costs_a_request_per_longest_interval() {
        let mut health = Health::Healthy;
        let mut elapsed = Duration::ZERO;
        let mut probes = 0;
        while elapsed < Duration::from_secs(15 * 60) {
            let change = next(health, Seen::Failed);
            health = change.health;
            elapsed += change.next_probe_in.unwrap();
            probes += 1;
        }
        // 9,000 messages at 10 a second in 15 minutes: probes stay under 2% of them.
        assert!(probes < 180, "{probes} probes in 15 minutes");
    }
}

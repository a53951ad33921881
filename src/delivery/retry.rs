//! What an HTTP outcome means for a message, and when to try again.

use rand::Rng;
use std::time::{Duration, SystemTime};

/// The delays between attempts by default: Svix's, in all about 27.6 hours, so that a
/// message is retried for more than a day even with every delay jittered to its shortest.
pub const DEFAULT_SCHEDULE: &str = "5s, 5min, 30min, 2h, 5h, 10h, 10h";
/// Each delay is drawn uniformly within this fraction of its scheduled length, either way,
/// so that messages that failed together do not all come back together.
pub const JITTER: f64 = 0.1;
/// A receiver cannot push a message further out than this with `Retry-After`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);
/// Most entries a schedule may have, and the longest one delay may be.
pub const MAX_SCHEDULE_ENTRIES: usize = 100;
pub const MAX_DELAY: Duration = Duration::from_secs(7 * 24 * 60 * 60);

/// Parses a schedule such as `5s, 5min, 30min, 2h`: comma-separated delays, each a number
/// (decimals allowed) and one of the units `ms`, `s`, `min`, `h`, `d`.
pub fn parse_schedule(text: &str) -> Result<Vec<Duration>, String> {
    let mut delays = Vec::new();
    for entry in text.split(',').map(str::trim) {
        if entry.is_empty() {
            return Err("an entry is empty".into());
        }
        let split = entry
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(|| format!("\"{entry}\" has no unit (ms, s, min, h or d)"))?;
        let (number, unit) = entry.split_at(split);
        let number: f64 = number
            .parse()
            .map_err(|_| format!("\"{entry}\" does not start with a number"))?;
        let seconds = match unit.trim() {
            "ms" => 0.001,
            "s" => 1.0,
            "min" => 60.0,
            "h" => 3600.0,
            "d" => 86400.0,
            other => return Err(format!("\"{other}\" is not a unit (ms, s, min, h or d)")),
        };
        delays.push(schedule_entry(number * seconds)?);
    }
    check_length(delays.len())?;
    Ok(delays)
}

/// One delay of `seconds`, if it is within the range a schedule allows.
pub fn schedule_entry(seconds: f64) -> Result<Duration, String> {
    if !(seconds.is_finite() && seconds > 0.0 && seconds <= MAX_DELAY.as_secs_f64()) {
        return Err(format!(
            "a delay must be more than 0 and at most {} days",
            MAX_DELAY.as_secs() / 86400
        ));
    }
    Ok(Duration::from_secs_f64(seconds))
}

pub fn check_length(entries: usize) -> Result<(), String> {
    match entries {
        0 => Err("a schedule needs at least one delay".into()),
        n if n > MAX_SCHEDULE_ENTRIES => Err(format!(
            "a schedule has at most {MAX_SCHEDULE_ENTRIES} delays, not {n}"
        )),
        _ => Ok(()),
    }
}

/// What one attempt's result asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Delivered,
    /// Worth trying again (a transient refusal or a transport failure).
    Retry,
    /// The receiver said no: trying again will not help.
    Reject,
    /// 410: the receiver is gone for good.
    Gone,
}

/// Classifies a response status. Redirects are failures: they are not followed, and a
/// receiver that moved must be reconfigured, not chased.
pub fn classify_status(status: u16) -> Verdict {
    match status {
        200..=299 => Verdict::Delivered,
        408 | 409 | 425 | 429 | 500..=599 => Verdict::Retry,
        410 => Verdict::Gone,
        _ => Verdict::Reject,
    }
}

/// The delay after failed attempt `attempt` (from 1): the schedule's entry for it (its
/// last entry once the schedule is used up), jittered by [`JITTER`].
pub fn backoff(attempt: u32, schedule: &[Duration], rng: &mut impl Rng) -> Duration {
    let Some(last) = schedule.last() else {
        return Duration::ZERO;
    };
    let scheduled = schedule
        .get(attempt.saturating_sub(1) as usize)
        .unwrap_or(last);
    scheduled.mul_f64(rng.random_range(1.0 - JITTER..=1.0 + JITTER))
}

/// When to try again: the scheduled delay, but never before the receiver's `Retry-After`.
pub fn next_delay(
    attempt: u32,
    schedule: &[Duration],
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Duration {
    let jittered = backoff(attempt, schedule, rng);
    match retry_after {
        Some(wait) => jittered.max(wait.min(MAX_RETRY_AFTER)),
        None => jittered,
    }
}

/// Where a message stands after an attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    Delivered,
    /// Pending again, due after this delay.
    RetryAfter(Duration),
    Dead,
    /// Pending, but its named endpoint is disabled until an operator re-enables it.
    DisableEndpoint,
    /// A durable step's final answer that is no success (a declined card's 402): the
    /// step's outcome, recorded; the message is delivered, and the destination is healthy.
    Answered,
}

/// What kind of message an attempt was for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Kind {
    /// To a named endpoint, which a 410 disables.
    pub named_endpoint: bool,
    /// A durable HTTP step, whose final answer is its outcome.
    pub durable_step: bool,
}

/// Decides a message's fate from one attempt: `status` is `None` when the request failed
/// without a response (timeout, refused, reset). `attempt` counts from 1.
pub fn decide(
    status: Option<u16>,
    attempt: u32,
    max_attempts: u32,
    kind: Kind,
    retry_after: Option<Duration>,
    schedule: &[Duration],
    rng: &mut impl Rng,
) -> Decision {
    let verdict = status.map_or(Verdict::Retry, classify_status);
    match verdict {
        Verdict::Delivered => Decision::Delivered,
        // A 4xx refusal answers a step; a redirect or a code outside HTTP's answers nothing.
        Verdict::Gone | Verdict::Reject
            if kind.durable_step && status.is_some_and(|s| (400..500).contains(&s)) =>
        {
            Decision::Answered
        }
        Verdict::Gone if kind.named_endpoint => Decision::DisableEndpoint,
        Verdict::Gone | Verdict::Reject => Decision::Dead,
        Verdict::Retry if attempt >= max_attempts => Decision::Dead,
        Verdict::Retry => Decision::RetryAfter(next_delay(attempt, schedule, retry_after, rng)),
    }
}

/// Parses `Retry-After`: delay-seconds or an HTTP-date.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if let Ok(seconds) = value.parse::<u64>() {
        return Some(Duration::from_secs(seconds));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(at.duration_since(now).unwrap_or(Duration::ZERO))
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::StdRng;

    #[test]
    fn statuses_are_classified_as_the_spec_says() {
        for status in [200, 201, 204, 299] {
            assert_eq!(classify_status(status), Verdict::Delivered, "{status}");
        }
        for status in [408, 409, 425, 429, 500, 502, 503, 504, 599] {
            assert_eq!(classify_status(status), Verdict::Retry, "{status}");
        }
        for status in [100, 301, 302, 307, 308, 400, 401, 403, 404, 422] {
            assert_eq!(classify_status(status), Verdict::Reject, "{status}");
        }
        assert_eq!(classify_status(410), Verdict::Gone);
    }

    fn default() -> Vec<Duration> {
        parse_schedule(DEFAULT_SCHEDULE).unwrap()
    }

    #[test]
    fn the_default_schedule_retries_for_more_than_a_day_at_its_shortest() {
        let total: Duration = default().iter().sum();
        assert!(
            total.mul_f64(1.0 - JITTER) >= Duration::from_secs(24 * 3600),
            "{total:?}"
        );
        assert_eq!(default().len(), 7);
    }

    #[test]
    fn each_delay_is_its_entry_jittered_and_the_last_entry_repeats() {
        let mut rng = StdRng::seed_from_u64(7);
        let schedule = default();
        for attempt in 1..=12u32 {
            let entry = schedule[(attempt as usize - 1).min(schedule.len() - 1)];
            for _ in 0..200 {
                let delay = backoff(attempt, &schedule, &mut rng);
                assert!(delay >= entry.mul_f64(1.0 - JITTER), "attempt {attempt}");
                assert!(delay <= entry.mul_f64(1.0 + JITTER), "attempt {attempt}");
            }
        }
        let samples: Vec<Duration> = (0..1000).map(|_| backoff(1, &schedule, &mut rng)).collect();
        let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        assert!(*min < Duration::from_millis(4600), "{min:?}");
        assert!(*max > Duration::from_millis(5400), "{max:?}");
    }

    #[test]
    fn schedules_parse_and_bad_ones_say_why() {
        assert_eq!(
            parse_schedule("250ms, 1.5s,2min , 1h, 1d").unwrap(),
            vec![
                Duration::from_millis(250),
                Duration::from_millis(1500),
                Duration::from_secs(120),
                Duration::from_secs(3600),
                Duration::from_secs(86400)
            ]
        );
        for (bad, why) in [
            ("", "empty"),
            ("5s,,5s", "empty"),
            ("5", "no unit"),
            ("5 weeks", "not a unit"),
            ("x5s", "number"),
            ("0s", "more than 0"),
            ("8d", "at most 7 days"),
        ] {
            let error = parse_schedule(bad).unwrap_err();
            assert!(error.contains(why), "{bad}: {error}");
        }
        assert!(parse_schedule(&vec!["1s"; 101].join(",")).is_err());
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let mut rng = StdRng::seed_from_u64(3);
        let schedule = [Duration::from_secs(1)];
        assert!(
            next_delay(1, &schedule, Some(Duration::from_secs(30)), &mut rng)
                >= Duration::from_secs(30)
        );
        assert_eq!(
            next_delay(
                1,
                &schedule,
                Some(Duration::from_secs(10_000_000)),
                &mut rng
            ),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn decisions_follow_the_delivery_protocol() {
        let mut rng = StdRng::seed_from_u64(5);
        let schedule = default();
        let mut decide = |status, attempt, named_endpoint| {
            let kind = Kind {
                named_endpoint,
                durable_step: false,
            };
            decide(status, attempt, 3, kind, None, &schedule, &mut rng)
        };
        assert_eq!(decide(Some(204), 1, false), Decision::Delivered);
        assert!(matches!(
            decide(Some(503), 1, false),
            Decision::RetryAfter(_)
        ));
        assert!(
            matches!(decide(None, 2, false), Decision::RetryAfter(_)),
            "transport errors are retried"
        );
        assert_eq!(
            decide(Some(503), 3, false),
            Decision::Dead,
            "max_attempts reached"
        );
        assert_eq!(decide(None, 3, false), Decision::Dead);
        assert_eq!(
            decide(Some(404), 1, false),
            Decision::Dead,
            "the receiver said no"
        );
        assert_eq!(
            decide(Some(302), 1, false),
            Decision::Dead,
            "redirects are not followed"
        );
        assert_eq!(decide(Some(410), 1, true), Decision::DisableEndpoint);
        assert_eq!(
            decide(Some(410), 1, false),
            Decision::Dead,
            "a bare URL has no endpoint to disable"
        );
    }

    #[test]
    fn a_durable_steps_final_answer_is_its_outcome_and_no_answer_is_still_a_failure() {
        let mut rng = StdRng::seed_from_u64(7);
        let schedule = default();
        let step = |named_endpoint| Kind {
            named_endpoint,
            durable_step: true,
        };
        let mut decide =
            |status, attempt, kind| decide(status, attempt, 3, kind, None, &schedule, &mut rng);
        for (status, why) in [
            (402, "a declined card"),
            (404, "not found"),
            (422, "unprocessable"),
        ] {
            assert_eq!(
                decide(Some(status), 1, step(true)),
                Decision::Answered,
                "{why}"
            );
        }
        for (status, why) in [
            (302, "a redirect is not followed, and answers nothing"),
            (103, "an informational code is no answer"),
            (600, "nor is a code outside HTTP's"),
        ] {
            assert_eq!(decide(Some(status), 1, step(true)), Decision::Dead, "{why}");
        }
        assert_eq!(
            decide(Some(410), 1, step(true)),
            Decision::Answered,
            "a step's 410 answers the step and leaves its endpoint enabled"
        );
        assert_eq!(decide(Some(200), 1, step(false)), Decision::Delivered);
        for retried in [408, 409, 425, 429, 500, 503] {
            assert!(
                matches!(
                    decide(Some(retried), 1, step(false)),
                    Decision::RetryAfter(_)
                ),
                "{retried} is transient for a step too"
            );
            assert_eq!(
                decide(Some(retried), 3, step(false)),
                Decision::Dead,
                "{retried} with no attempts left"
            );
        }
        assert_eq!(
            decide(None, 3, step(false)),
            Decision::Dead,
            "a step that never got an answer is dead"
        );
    }

    #[test]
    fn retry_after_accepts_seconds_and_http_dates() {
        let now = httpdate::parse_http_date("Wed, 21 Oct 2015 07:28:00 GMT").unwrap();
        assert_eq!(
            parse_retry_after("120", now),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:28:30 GMT", now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now),
            Some(Duration::ZERO)
        );
        assert_eq!(parse_retry_after("soon", now), None);
    }
}

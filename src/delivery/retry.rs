//! What an HTTP outcome means for a message, and when to try again.

use rand::Rng;
use std::time::{Duration, SystemTime};

/// The first retry waits up to this long; each further one doubles it, up to `MAX_BACKOFF`.
pub const BASE_BACKOFF: Duration = Duration::from_secs(1);
pub const MAX_BACKOFF: Duration = Duration::from_secs(60 * 60);
/// A receiver cannot push a message further out than this with `Retry-After`.
pub const MAX_RETRY_AFTER: Duration = Duration::from_secs(24 * 60 * 60);

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

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base·2^(attempt-1))]`.
pub fn backoff(attempt: u32, rng: &mut impl Rng) -> Duration {
    let exponent = attempt.saturating_sub(1).min(31);
    let ceiling = BASE_BACKOFF
        .saturating_mul(1u32 << exponent)
        .min(MAX_BACKOFF);
    Duration::from_micros(rng.random_range(0..=ceiling.as_micros() as u64))
}

/// When to try again: the jittered backoff, but never before the receiver's `Retry-After`.
pub fn next_delay(attempt: u32, retry_after: Option<Duration>, rng: &mut impl Rng) -> Duration {
    let jittered = backoff(attempt, rng);
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
}

/// Decides a message's fate from one attempt: `status` is `None` when the request failed
/// without a response (timeout, refused, reset). `attempt` counts from 1.
pub fn decide(
    status: Option<u16>,
    attempt: u32,
    max_attempts: u32,
    named_endpoint: bool,
    retry_after: Option<Duration>,
    rng: &mut impl Rng,
) -> Decision {
    let verdict = status.map_or(Verdict::Retry, classify_status);
    match verdict {
        Verdict::Delivered => Decision::Delivered,
        Verdict::Gone if named_endpoint => Decision::DisableEndpoint,
        Verdict::Gone | Verdict::Reject => Decision::Dead,
        Verdict::Retry if attempt >= max_attempts => Decision::Dead,
        Verdict::Retry => Decision::RetryAfter(next_delay(attempt, retry_after, rng)),
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

    #[test]
    fn backoff_stays_within_its_doubling_ceiling_and_the_cap() {
        let mut rng = StdRng::seed_from_u64(7);
        for attempt in 1..=40u32 {
            let ceiling = BASE_BACKOFF
                .saturating_mul(1 << attempt.saturating_sub(1).min(31))
                .min(MAX_BACKOFF);
            for _ in 0..200 {
                assert!(backoff(attempt, &mut rng) <= ceiling, "attempt {attempt}");
            }
        }
    }

    #[test]
    fn backoff_is_jittered_over_the_whole_range() {
        let mut rng = StdRng::seed_from_u64(11);
        let samples: Vec<Duration> = (0..1000).map(|_| backoff(4, &mut rng)).collect();
        let (min, max) = (samples.iter().min().unwrap(), samples.iter().max().unwrap());
        assert!(*min < Duration::from_millis(500), "{min:?}");
        assert!(*max > Duration::from_millis(7500), "{max:?}");
    }

    #[test]
    fn retry_after_is_a_floor_and_is_capped() {
        let mut rng = StdRng::seed_from_u64(3);
        assert!(next_delay(1, Some(Duration::from_secs(30)), &mut rng) >= Duration::from_secs(30));
        assert_eq!(
            next_delay(1, Some(Duration::from_secs(10_000_000)), &mut rng),
            MAX_RETRY_AFTER
        );
    }

    #[test]
    fn decisions_follow_the_delivery_protocol() {
        let mut rng = StdRng::seed_from_u64(5);
        let mut decide =
            |status, attempt, endpoint| decide(status, attempt, 3, endpoint, None, &mut rng);
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

//! Per-destination limits on the HTTP side: how many requests one destination (an
//! endpoint, or a URL origin) has in flight, and how fast they start. The claim already
//! keeps each destination's outstanding requests within its limits (see `claim`); this
//! is where the requests themselves wait their turn.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::Semaphore;

/// A rate limit lets through this share of a second's requests at once (at least one):
/// 2 of 20 a second, 200 of 2,000.
pub const BURST_SECONDS: f64 = 0.1;
/// Past this many destinations, the ones with nothing in flight are forgotten.
const REMEMBERED: usize = 1024;

/// The limits of every destination the dispatcher has sent to lately.
#[derive(Default)]
pub struct Limits {
    destinations: Mutex<HashMap<Arc<str>, Arc<Destination>>>,
}

pub struct Destination {
    permits: Arc<Semaphore>,
    state: Mutex<State>,
}

struct State {
    concurrency: usize,
    pace: Option<Pace>,
}

/// A rate limit as a virtual schedule (GCRA): `next` is when the next request would start
/// if requests came exactly at the rate; up to a burst of them may start early.
struct Pace {
    rate: f64,
    next: Instant,
}

impl Limits {
    /// The destination's limits, made to match the ones the claim read.
    pub fn get(
        &self,
        runtime: &tokio::runtime::Handle,
        name: &Arc<str>,
        concurrency: usize,
        rate: Option<f64>,
    ) -> Arc<Destination> {
        let mut destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if destinations.len() > REMEMBERED {
            destinations.retain(|_, d| Arc::strong_count(d) > 1);
        }
        let destination = destinations
            .entry(Arc::clone(name))
            .or_insert_with(|| {
                Arc::new(Destination {
                    permits: Arc::new(Semaphore::new(concurrency)),
                    state: Mutex::new(State {
                        concurrency,
                        pace: None,
                    }),
                })
            })
            .clone();
        drop(destinations);
        destination.update(runtime, concurrency, rate);
        destination
    }
}

impl Destination {
    fn update(&self, runtime: &tokio::runtime::Handle, concurrency: usize, rate: Option<f64>) {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        if concurrency > state.concurrency {
            self.permits.add_permits(concurrency - state.concurrency);
        } else if concurrency < state.concurrency {
            // Take the surplus permits as requests in flight return them, and keep them.
            let permits = Arc::clone(&self.permits);
            let surplus = (state.concurrency - concurrency) as u32;
            runtime.spawn(async move {
                if let Ok(taken) = permits.acquire_many(surplus).await {
                    taken.forget();
                }
            });
        }
        state.concurrency = concurrency;
        state.pace = match (rate, state.pace.take()) {
            (None, _) => None,
            (Some(rate), Some(pace)) => Some(Pace { rate, ..pace }),
            (Some(rate), None) => Some(Pace {
                rate,
                next: Instant::now(),
            }),
        };
    }

    /// One of the destination's requests in flight; waits for it until `deadline`.
    pub async fn permit(&self, deadline: Instant) -> Option<tokio::sync::OwnedSemaphorePermit> {
        let waited =
            tokio::time::timeout_at(deadline.into(), Arc::clone(&self.permits).acquire_owned());
        waited.await.ok()?.ok()
    }

    /// When the next request may start under the rate limit (now without one), and takes
    /// that turn; `None` if the turn comes after `deadline`, which is then not taken.
    pub fn turn(&self, deadline: Instant) -> Option<Instant> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let Some(pace) = state.pace.as_mut() else {
            return Some(now);
        };
        let interval = Duration::from_secs_f64(1.0 / pace.rate);
        let burst = (pace.rate * BURST_SECONDS).ceil().max(1.0);
        let tolerance = interval.mul_f64(burst - 1.0);
        let next = pace.next.max(now);
        let start = next.checked_sub(tolerance).unwrap_or(now).max(now);
        if start > deadline {
            return None;
        }
        pace.next = next + interval;
        Some(start)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn destination(rate: f64) -> Destination {
        Destination {
            permits: Arc::new(Semaphore::new(1)),
            state: Mutex::new(State {
                concurrency: 1,
                pace: Some(Pace {
                    rate,
                    next: Instant::now(),
                }),
            }),
        }
    }

    #[test]
    fn a_rate_lets_a_burst_through_then_spaces_requests() {
        let d = destination(20.0);
        let far = Instant::now() + Duration::from_secs(60);
        let starts: Vec<Instant> = (0..22).map(|_| d.turn(far).unwrap()).collect();
        let first = starts[0];
        // A burst of two (a tenth of a second at 20/s), then one every 50 ms.
        assert!(starts[1] - first < Duration::from_millis(5));
        let spacing = starts[21] - starts[1];
        assert!(
            (spacing.as_secs_f64() - 1.0).abs() < 0.01,
            "20 turns after the burst took {spacing:?}"
        );
    }

    #[test]
    fn a_turn_past_the_deadline_is_not_taken() {
        let d = destination(1.0);
        let soon = Instant::now() + Duration::from_millis(100);
        assert!(d.turn(soon).is_some());
        assert!(d.turn(soon).is_none(), "the second turn is a second away");
        assert!(d.turn(Instant::now() + Duration::from_secs(2)).is_some());
    }
}

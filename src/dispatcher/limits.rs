//! Per-destination limits on the HTTP side: how many requests one destination (an
//! endpoint, or a URL origin) has in flight, and how fast they start. The claim already
//! keeps each destination's outstanding requests within its limits (see `claim`); this
//! is where the requests themselves wait their turn.
//!
//! The claim takes up to two generations of a destination's requests (see
//! `claim::LEASE_GENERATIONS`), so at a busy destination a claimed request waits for a
//! generation ahead of it. Those waiting get their slot round-robin by tenant, like the
//! claim's turns: another tenant's request waits for the next slot that frees, not behind
//! a whole generation of one tenant's flood.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::oneshot;

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
    slots: Arc<Mutex<Slots>>,
    state: Mutex<State>,
}

struct State {
    pace: Option<Pace>,
}

/// The destination's requests in flight, and those waiting for a slot, by tenant.
struct Slots {
    limit: usize,
    in_flight: usize,
    waiting: BTreeMap<Arc<str>, VecDeque<Waiter>>,
    /// The tenant given the last slot: the next goes to the tenant after it.
    served_last: Option<Arc<str>>,
    next_ticket: u64,
}

struct Waiter {
    ticket: u64,
    granted: oneshot::Sender<()>,
}

/// A request's slot at its destination, given back when dropped.
pub struct Slot {
    slots: Arc<Mutex<Slots>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.slots
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .release();
    }
}

impl Slots {
    /// A slot given back: the next waiter gets it.
    fn release(&mut self) {
        debug_assert!(self.in_flight > 0, "a slot given back that was not counted");
        self.in_flight = self.in_flight.saturating_sub(1);
        self.grant();
    }

    /// Gives free slots to those waiting, a tenant at a time, round-robin. A waiter that
    /// gave up (its task ended) is passed over.
    fn grant(&mut self) {
        while self.in_flight < self.limit {
            let after = self.served_last.clone();
            let tenant = after
                .as_ref()
                .and_then(|last| {
                    self.waiting
                        .range::<str, _>((
                            std::ops::Bound::Excluded(&**last),
                            std::ops::Bound::Unbounded,
                        ))
                        .next()
                })
                .or_else(|| self.waiting.iter().next())
                .map(|(tenant, _)| Arc::clone(tenant));
            let Some(tenant) = tenant else {
                return;
            };
            let queue = self.waiting.get_mut(&tenant).expect("a waiting tenant");
            let waiter = queue.pop_front().expect("a tenant waits with a request");
            if queue.is_empty() {
                self.waiting.remove(&tenant);
            }
            if waiter.granted.send(()).is_ok() {
                self.in_flight += 1;
                self.served_last = Some(tenant);
            }
        }
    }

    /// Takes back a waiter that gave up at its deadline; false if it was granted a slot
    /// meanwhile (which the caller then gives back).
    fn withdraw(&mut self, tenant: &Arc<str>, ticket: u64) -> bool {
        let Some(queue) = self.waiting.get_mut(tenant) else {
            return false;
        };
        let Some(at) = queue.iter().position(|w| w.ticket == ticket) else {
            return false;
        };
        queue.remove(at);
        if queue.is_empty() {
            self.waiting.remove(tenant);
        }
        true
    }
}

/// A rate limit as a virtual schedule (GCRA): `next` is when the next request would start
/// if requests came exactly at the rate; up to a burst of them may start early.
struct Pace {
    rate: f64,
    next: Instant,
}

impl Limits {
    /// The destination's limits, made to match the ones the claim read.
    pub fn get(&self, name: &Arc<str>, concurrency: usize, rate: Option<f64>) -> Arc<Destination> {
        let mut destinations = self.destinations.lock().unwrap_or_else(|e| e.into_inner());
        if destinations.len() > REMEMBERED {
            destinations.retain(|_, d| Arc::strong_count(d) > 1);
        }
        let destination = destinations
            .entry(Arc::clone(name))
            .or_insert_with(|| {
                Arc::new(Destination {
                    slots: Arc::new(Mutex::new(Slots {
                        limit: concurrency,
                        in_flight: 0,
                        waiting: BTreeMap::new(),
                        served_last: None,
                        next_ticket: 0,
                    })),
                    state: Mutex::new(State { pace: None }),
                })
            })
            .clone();
        drop(destinations);
        destination.update(concurrency, rate);
        destination
    }
}

impl Destination {
    fn update(&self, concurrency: usize, rate: Option<f64>) {
        {
            // A lower limit takes effect as requests in flight return their slots.
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.limit != concurrency {
                slots.limit = concurrency;
                slots.grant();
            }
        }
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        state.pace = match (rate, state.pace.take()) {
            (None, _) => None,
            (Some(rate), Some(pace)) => Some(Pace { rate, ..pace }),
            (Some(rate), None) => Some(Pace {
                rate,
                next: Instant::now(),
            }),
        };
    }

    /// A slot for one of `tenant`'s requests; waits for it until `deadline`, served
    /// round-robin by tenant with the other requests waiting.
    pub async fn slot(&self, tenant: &Arc<str>, deadline: Instant) -> Option<Slot> {
        let (ticket, mut granted) = {
            let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
            if slots.in_flight < slots.limit && slots.waiting.is_empty() {
                slots.in_flight += 1;
                slots.served_last = Some(Arc::clone(tenant));
                return Some(Slot {
                    slots: Arc::clone(&self.slots),
                });
            }
            let ticket = slots.next_ticket;
            slots.next_ticket += 1;
            let (granted, wait) = oneshot::channel();
            slots
                .waiting
                .entry(Arc::clone(tenant))
                .or_default()
                .push_back(Waiter { ticket, granted });
            (ticket, wait)
        };
        // The receiver outlives the timeout, so that a slot granted as the deadline passes
        // is counted, found below and given back.
        match tokio::time::timeout_at(deadline.into(), &mut granted).await {
            Ok(Ok(())) => Some(Slot {
                slots: Arc::clone(&self.slots),
            }),
            // Dropped unsent: no slot was counted for us.
            Ok(Err(_)) => None,
            Err(_) => {
                let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
                if !slots.withdraw(tenant, ticket) && granted.try_recv().is_ok() {
                    slots.release();
                }
                None
            }
        }
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
            slots: Arc::new(Mutex::new(Slots {
                limit: 1,
                in_flight: 0,
                waiting: BTreeMap::new(),
                served_last: None,
                next_ticket: 0,
            })),
            state: Mutex::new(State {
                pace: Some(Pace {
                    rate,
                    next: Instant::now(),
                }),
            }),
        }
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap()
    }

    /// A destination with room for one request, one held by tenant "a" whose four more
    /// then wait, and one of "b" after them: "b" gets the second slot, not the sixth.
    #[test]
    fn waiting_requests_get_their_slots_round_robin_by_tenant() {
        let rt = runtime();
        let limits = Limits::default();
        let d = limits.get(&Arc::from("d"), 1, None);
        let far = Instant::now() + Duration::from_secs(60);
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("a"), Arc::from("b"));
        let order = Arc::new(Mutex::new(Vec::new()));
        rt.block_on(async {
            let held = d.slot(&a, far).await.expect("a free slot");
            let mut waiting = Vec::new();
            for (n, tenant) in [&a, &a, &a, &a, &b].into_iter().enumerate() {
                let (d, tenant, order) = (Arc::clone(&d), Arc::clone(tenant), Arc::clone(&order));
                waiting.push(tokio::spawn(async move {
                    let _slot = d.slot(&tenant, far).await.expect("a slot in time");
                    order.lock().unwrap().push(format!("{tenant}{n}"));
                    tokio::task::yield_now().await;
                }));
                tokio::task::yield_now().await;
            }
            drop(held);
            for task in waiting {
                task.await.unwrap();
            }
        });
        assert_eq!(*order.lock().unwrap(), ["b4", "a0", "a1", "a2", "a3"]);
    }

    /// A request that gives up at its deadline leaves no slot taken.
    #[test]
    fn a_request_past_its_deadline_gives_its_place_back() {
        let rt = runtime();
        let limits = Limits::default();
        let d = limits.get(&Arc::from("d"), 1, None);
        let tenant: Arc<str> = Arc::from("");
        rt.block_on(async {
            let held = d
                .slot(&tenant, Instant::now() + Duration::from_secs(60))
                .await;
            let soon = Instant::now() + Duration::from_millis(20);
            assert!(
                d.slot(&tenant, soon).await.is_none(),
                "no slot while one is held"
            );
            drop(held);
            let now = Instant::now() + Duration::from_millis(1);
            assert!(
                d.slot(&tenant, now).await.is_some(),
                "the slot is free again"
            );
        });
    }

    /// Requests giving up at their deadlines while slots free on other threads: whatever
    /// the interleaving, every slot is accounted for once they are all done.
    #[test]
    fn slots_stay_counted_when_deadlines_race_releases() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_time()
            .build()
            .unwrap();
        let limits = Limits::default();
        let d = limits.get(&Arc::from("d"), 2, None);
        rt.block_on(async {
            let mut tasks = Vec::new();
            for n in 0..400u64 {
                let d = Arc::clone(&d);
                tasks.push(tokio::spawn(async move {
                    let tenant: Arc<str> = Arc::from(if n % 2 == 0 { "a" } else { "b" });
                    let deadline = Instant::now() + Duration::from_micros(200 + (n % 7) * 150);
                    if let Some(slot) = d.slot(&tenant, deadline).await {
                        tokio::time::sleep(Duration::from_micros(300)).await;
                        drop(slot);
                    }
                }));
            }
            for task in tasks {
                task.await.unwrap();
            }
        });
        let slots = d.slots.lock().unwrap();
        assert_eq!(slots.in_flight, 0, "every slot given back");
        assert!(slots.waiting.is_empty(), "nobody left waiting");
    }

    /// A lower limit holds back new requests until enough in flight have returned.
    #[test]
    fn a_lower_limit_takes_effect_as_requests_return() {
        let rt = runtime();
        let limits = Limits::default();
        let name: Arc<str> = Arc::from("d");
        let tenant: Arc<str> = Arc::from("");
        let far = Instant::now() + Duration::from_secs(60);
        rt.block_on(async {
            let d = limits.get(&name, 2, None);
            let first = d.slot(&tenant, far).await;
            let second = d.slot(&tenant, far).await;
            let d = limits.get(&name, 1, None);
            drop(first);
            let soon = Instant::now() + Duration::from_millis(20);
            assert!(
                d.slot(&tenant, soon).await.is_none(),
                "one in flight is the limit"
            );
            drop(second);
            assert!(d.slot(&tenant, far).await.is_some());
        });
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

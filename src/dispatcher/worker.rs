//! The dispatcher's main loop, on the Postgres main thread: the only thread that touches
//! Postgres. Every database access is a short transaction between HTTP rounds.
//!
//! A round is one transaction: record the outcomes that are due for it, claim what there is
//! room for, look up when the next message is due. Claims may run ahead of the HTTP side by
//! one generation of requests (up to `2 × max_concurrency` outstanding), so that the threads
//! always have work queued while the main thread records and claims.
//!
//! A record waits for its WAL flush, a claim does not (see
//! `claim::commit_without_waiting`). While no backlog keeps the rounds coming, an outcome
//! waits up to `state::RECORD_WITHIN` for others to share its flush, unless someone waits for it
//! (a durable step's workflow, the next message of its ordering key) or enough have
//! gathered. Delivery itself is not delayed: a commit that enqueues wakes a round at once,
//! and only outcomes wait.

use super::claim::{self, Settings};
use super::database;
use super::destinations::{self, Failing};
use super::housekeeping;
use super::parking;
use super::plan::{self, RoundInputs, RoundPlan, plan_round};
use super::ready;
use super::record;
use super::replan;
use super::send::{Outcome, Sender};
use super::state::{Destinations, HELD_RETRY, Outcomes, Parking, Timers};
use super::statistics;
use super::transaction::{self, Failure};
use super::waiting::Waiter;
use crate::config;
use crate::delivery::health;
use crate::identity::{self, Dispatch};
use crate::runs::{push, sessions};
use crate::wake;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::prelude::*;
use pgrx::spi::SpiClient;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Retention runs every poll interval, within these bounds.
const HOUSEKEEPING_MIN: Duration = Duration::from_secs(1);
const HOUSEKEEPING_MAX: Duration = Duration::from_secs(30);
/// After SIGTERM, how long requests in flight may take to finish and be recorded. The rest
/// stay leased and are sent again after a restart (at-least-once).
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// Claimed messages, in flight or queued for a free connection, per allowed request.
const OUTSTANDING_PER_SLOT: usize = claim::LEASE_GENERATIONS as usize;
/// How long after a lease's expiry the look that announces it runs.
const READY_LOOK_SLACK: Duration = Duration::from_millis(1);
/// How soon the push tries again a name whose queue an application's claim held.
const BUSY_QUEUE_RETRY: Duration = Duration::from_millis(20);

/// How often the dispatcher looks at every session-bound lease, for sessions whose exit no
/// callback reported.
const SESSION_SWEEP: Duration = Duration::from_secs(60);
/// After a failed round, the next waits this long, doubling up to the poll interval.
const FAILED_ROUND_BACKOFF: Duration = Duration::from_millis(100);
/// The schema version this library's statements are written for.
const SCHEMA_VERSION: &str = env!("CARGO_PKG_VERSION");

static EXTENSION_VERSION: &str =
    "SELECT extversion FROM pg_catalog.pg_extension WHERE extname = 'workflow'";

struct State {
    /// This dispatcher's slot in shared memory (see `wake`).
    slot: usize,
    sender: Sender,
    waiter: Waiter,
    /// Claimed and not yet back from the HTTP side: in flight or queued there.
    outstanding: usize,
    /// Whether more may be due than the last round claimed: it took all it asked for, or
    /// had no room to ask.
    backlog: bool,
    outcomes: Outcomes,
    parking: Parking,
    destinations: Destinations,
    timers: Timers,
    /// Whether this database has the extension at this library's version. Checked in a
    /// transaction of its own, so the claim that follows starts after `CREATE EXTENSION`
    /// committed and sees its tables; checked again after a failed round (a `DROP
    /// EXTENSION`, say).
    installed: bool,
    /// The version found last, so that a schema waiting for `ALTER EXTENSION … UPDATE` is
    /// reported once, not every poll.
    reported_version: Option<String>,
    /// Rounds failed in a row, for the back-off and so that a failure is logged once.
    failed_rounds: u32,
    /// SIGTERM arrived (pgrx's flag is reset by reading it, so it is kept here).
    stop_requested: bool,
    /// Why delivery is paused, as last read (see `identity`); `None`: it is not.
    paused: Option<String>,
}

/// What a round tells the loop.
struct Round {
    claimed_a_full_batch: bool,
    next_due: Option<Duration>,
}

/// What a round's transaction is given: its plan, and what the worker knows.
struct RoundWork<'a> {
    plan: RoundPlan,
    outcomes: &'a [Outcome],
    keep_delivered: bool,
    settings: Settings,
    known: &'a destinations::Known,
    outstanding: &'a HashMap<Arc<str>, usize>,
    /// The same by destination and tenant.
    tenants: &'a HashMap<(Arc<str>, Arc<str>), usize>,
    /// The destinations with messages parked at their limit that the round looks at.
    limited: &'a [Arc<str>],
    /// The tenant each limited destination served last.
    turns: &'a HashMap<Arc<str>, String>,
    /// The most requests any destination has outstanding.
    most_outstanding: usize,
}

/// What a round that claimed saw of the destinations' limits.
struct LimitsSeen {
    /// The destinations it looked at that still have messages parked at their limit.
    still_limited: Vec<String>,
    /// The smallest room any destination has, when the round read it.
    smallest_room: Option<usize>,
    /// The tenant each destination it let messages go for served last.
    served_last: Vec<(String, String)>,
    /// Whether it looked for every destination with parked messages.
    found: bool,
}

/// What one round's transaction did, for the worker to keep once it committed.
#[derive(Default)]
struct RoundDone {
    claimed: claim::Claimed,
    /// When the next message is due (zero: now).
    next_due: Option<Duration>,
    /// Outcomes not recorded: an application held their messages locked.
    skipped: Vec<i64>,
    /// Whether the unpark ran, and then whether it kept flags for later.
    kept_flags: Option<bool>,
    /// What the round's push did.
    pushed: push::Pushed,
    /// What a round that claimed saw of the destinations' limits.
    limits: Option<LimitsSeen>,
    /// What the round's outcomes changed of the destinations' health.
    health: Vec<(Arc<str>, health::Change)>,
    /// The failing destinations as stored, when the round read them.
    failing_now: Option<HashMap<Arc<str>, Failing>>,
    /// Whether delivery is paused, when the round read it (or paused a copy).
    dispatch: Option<Dispatch>,
}

pub fn run(slot: usize) {
    let sender = match Sender::start(config::allow_private_networks(), config::max_concurrency()) {
        Ok(sender) => sender,
        Err(e) => {
            // Started again by the launcher after RESTART_AFTER; better than a half-alive worker.
            log!("workflow dispatcher could not start its HTTP client: {e}");
            return;
        }
    };
    wake::publish_latch(slot);
    let mut state = State {
        slot,
        waiter: Waiter::new(sender.wake_fd()),
        sender,
        outstanding: 0,
        backlog: false,
        outcomes: Outcomes::default(),
        parking: Parking::new(),
        destinations: Destinations::default(),
        timers: Timers::new(),
        installed: false,
        reported_version: None,
        failed_rounds: 0,
        stop_requested: false,
        paused: None,
    };

    loop {
        if state.stopping() {
            shut_down(state);
            return;
        }
        if database::leave_requested(state.slot) {
            log!("workflow dispatcher leaves its database for DROP DATABASE");
            shut_down(state);
            return;
        }
        if BackgroundWorker::sighup_received() {
            // SAFETY: reloading the configuration on the main thread, outside a transaction.
            unsafe { pg_sys::ProcessConfigFile(pg_sys::GucContext::PGC_SIGHUP) };
            state
                .sender
                .set_allow_private_networks(config::allow_private_networks());
            state.sender.set_max_concurrency(config::max_concurrency());
        }
        if !state.installed {
            state.installed = schema_is_current(&mut state);
            if !state.installed {
                sleep(&state, config::poll_interval());
                continue;
            }
        }
        // Before the round reads the outbox: commits from here on wake us for anything due
        // before the longest sleep this round can end in.
        wake::looks_again_within(state.slot, config::poll_interval());
        let round = record_and_claim(&mut state);
        if state.failed_rounds > 0 {
            back_off(&mut state);
            continue;
        }
        housekeep(&mut state);
        if free_ended_sessions(&mut state) || announce_ready(&mut state) {
            continue; // a push is due
        }

        let full = state.outstanding >= max_outstanding();
        if round.claimed_a_full_batch && !full {
            continue; // more may be due right now
        }
        let nap = match round.next_due {
            Some(due) if !full => due.min(config::poll_interval()),
            _ => config::poll_interval(),
        }
        .min(
            state
                .timers
                .next_ready_look
                .saturating_duration_since(Instant::now()),
        )
        .min(state.destinations.next_probe().map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        }));
        sleep_until_work(&mut state, nap);
    }
}

impl State {
    /// Takes what the HTTP side finished.
    fn collect(&mut self) {
        let held = self.outcomes.take_held(false);
        self.keep(held);
        let arrived = self.sender.finished();
        if arrived.is_empty() {
            return;
        }
        self.outstanding = self.outstanding.saturating_sub(arrived.len());
        for outcome in &arrived {
            self.destinations
                .returned(&outcome.destination, &outcome.tenant);
            self.parking.returned(&outcome.destination);
        }
        self.keep(arrived);
    }

    fn stopping(&mut self) -> bool {
        self.stop_requested |= BackgroundWorker::sigterm_received();
        self.stop_requested
    }

    /// Outcomes to record: new ones, or ones a round could not record and gives back.
    fn keep(&mut self, outcomes: Vec<Outcome>) {
        // A released message is due again at once, so its release is not held back; nor is
        // the outcome that makes room for messages parked at their destination's limit, nor
        // a failing destination's probe.
        let awaited = outcomes.iter().any(|o| {
            o.durable_step
                || o.ordered
                || o.released
                || self.parking.limits(&o.destination)
                || self.destinations.is_failing(&o.destination)
        });
        self.outcomes.keep(outcomes, awaited);
    }

    fn record_due(&self) -> bool {
        self.outcomes.record_due(self.backlog, max_outstanding())
    }

    /// Notes how a transaction ended: a failure is logged when it starts a series (with
    /// the back-off, a persistent one is not logged every round), and makes the worker
    /// check the extension, and read what it keeps of the outbox, again.
    fn note<T>(&mut self, result: &Result<T, Failure>) {
        match result {
            Ok(_) => self.failed_rounds = 0,
            Err(failure) => {
                if self.failed_rounds == 0
                    && let Failure::Error(message) = failure
                {
                    log!(
                        "workflow dispatcher: a round failed and was rolled back, its outcomes are kept for the next: {message}"
                    );
                }
                self.failed_rounds = self.failed_rounds.saturating_add(1);
                self.installed = false;
                replan::after_a_failed_round();
                self.parking.forget();
                self.destinations.forget();
            }
        }
    }

    /// Whether a backlog waits for the room the outcomes made (any room: waiting for more
    /// first was slower, bench/NOTES.md).
    fn room_for_backlog(&self) -> bool {
        self.backlog && self.outstanding < max_outstanding()
    }
}

/// Sleeps up to `nap`, until a commit or a signal sets the latch, or the HTTP side's
/// outcomes call for a round: they are due for recording, or a backlog waits for the room
/// they made. Other outcomes are collected and wait for the next round.
fn sleep_until_work(state: &mut State, nap: Duration) {
    let until = Instant::now() + nap;
    loop {
        let wake_at = state.outcomes.wake_at(until);
        let events = sleep(state, wake_at.saturating_duration_since(Instant::now()));
        if events & (pg_sys::WL_LATCH_SET | pg_sys::WL_TIMEOUT) as i32 != 0 {
            return;
        }
        state.collect();
        if state.record_due() || state.room_for_backlog() {
            return;
        }
    }
}

/// After a failed round: waits 100 ms, doubling with each failure in a row up to the poll
/// interval, whatever else wakes the worker meanwhile (commits, outcomes, which are
/// collected), so that a failure that persists costs a round per back-off, not a spin.
/// Only SIGTERM cuts it short.
fn back_off(state: &mut State) {
    let doubling = 2u32.pow(state.failed_rounds.clamp(1, 16) - 1);
    let until = Instant::now() + (FAILED_ROUND_BACKOFF * doubling).min(config::poll_interval());
    while Instant::now() < until && !state.stopping() {
        sleep(state, until.saturating_duration_since(Instant::now()));
        state.collect();
    }
}

/// Publishes when we look again, then waits that long at most. Statistics still held back
/// (a backend sends them at most once a second) cap the nap, so that an idle dispatcher's
/// last writes reach pgstat — and autovacuum — in a second, not a poll interval.
fn sleep(state: &State, nap: Duration) -> i32 {
    // SAFETY: on the main thread, between transactions.
    let stats_due_in = unsafe { pg_sys::pgstat_report_stat(false) };
    let nap = if stats_due_in > 0 {
        nap.min(Duration::from_millis(stats_due_in as u64))
    } else {
        nap
    };
    wake::looks_again_within(state.slot, nap);
    state.waiter.wait(nap)
}

fn max_outstanding() -> usize {
    config::max_concurrency() * OUTSTANDING_PER_SLOT
}

/// One round: plan it from what the worker knows, run the plan in one transaction, keep
/// what it found, and hand the claimed messages to the HTTP side.
fn record_and_claim(state: &mut State) -> Round {
    state.collect();
    let flags = wake::flags_raised(state.slot);
    let parks = wake::parked_at_enqueue(state.slot);
    let records_keyed = state.record_due() && state.outcomes.any_ordered();
    let plan = plan_round(&RoundInputs {
        record_due: state.record_due(),
        outstanding: state.outstanding,
        max_outstanding: max_outstanding(),
        batch_size: config::batch_size(),
        byte_budget_rows: claim::rows_within_byte_budget(config::max_payload_bytes()),
        unpark_due: state.parking.unpark_due(flags, records_keyed),
        limited_known: state.parking.limited_known(parks, config::poll_interval()),
        failing_known: state.destinations.failing_known(),
        smallest_room: state.destinations.smallest_room(),
        most_outstanding: state.destinations.most_outstanding(),
        pushing: state.timers.pushing,
        paused: state.paused.is_some(),
    });
    if plan.idle_full {
        // Full, and nothing to record: outcomes that make room wake us.
        state.backlog = true;
        return Round {
            claimed_a_full_batch: false,
            next_due: None,
        };
    }
    let outcomes = if plan.record {
        state.outcomes.take()
    } else {
        Vec::new()
    };
    if plan.reread {
        // An endpoint's limits may have changed (a commit that flagged), or a poll interval
        // passed: every destination gets a look.
        state.parking.all_have_room();
    }
    for destination in state.destinations.probes_due() {
        state.parking.has_room(destination);
    }
    let looked = state.parking.to_look_at();
    let work = RoundWork {
        plan,
        outcomes: &outcomes,
        keep_delivered: keeps_delivered(),
        settings: Settings {
            request_timeout: config::request_timeout(),
            max_attempts: config::max_attempts(),
            concurrency_per_destination: config::max_concurrency_per_destination(),
        },
        known: &state.destinations.health,
        outstanding: &state.destinations.outstanding,
        tenants: &state.destinations.tenants,
        limited: &looked,
        turns: state.parking.turns(),
        most_outstanding: state.destinations.most_outstanding(),
    };
    let result = transaction::run_round(|| Spi::connect_mut(|client| round(client, &work)));
    state.note(&result);
    let Ok(done) = result else {
        // A failed round was rolled back whole: its outcomes wait for the next.
        state.keep(outcomes);
        return Round {
            claimed_a_full_batch: false,
            next_due: None,
        };
    };
    let claimed_a_full_batch = plan.claim > 0 && done.next_due == Some(Duration::ZERO);
    // Resumed: the next round claims at once.
    let resumed = state.paused.is_some() && matches!(done.dispatch, Some(Dispatch::Serving));
    let next_due = if resumed {
        Some(Duration::ZERO)
    } else {
        done.next_due
    };
    state.keep_round(done, outcomes, &looked, (flags, parks), records_keyed);
    // A full walk, or unparked messages the claim may not have reached: more is due now;
    // or no room to claim at all.
    state.backlog = claimed_a_full_batch || (plan.claim == 0 && state.paused.is_none());
    Round {
        claimed_a_full_batch,
        next_due,
    }
}

/// The round's transaction: record, unpark, push, claim, as the plan says.
fn round(client: &mut SpiClient<'_>, work: &RoundWork<'_>) -> Result<RoundDone, Failure> {
    let plan = &work.plan;
    // Before recording: the record's plans are the ones stale statistics hurt.
    let records = !work.outcomes.is_empty();
    if records {
        statistics::refresh_if_grown(client)?;
    }
    let skipped = record::record(client, work.outcomes, work.keep_delivered)?;
    let recorded: Vec<&Outcome> = work
        .outcomes
        .iter()
        .filter(|o| !skipped.contains(&o.id))
        .collect();
    let health = destinations::observe(client, &recorded, work.known)?;
    // Read after the unpark, which forgets an enabled endpoint's failing.
    let read_failing = |client: &mut SpiClient<'_>| {
        if plan.reread {
            destinations::load(client).map(Some)
        } else {
            Ok(None)
        }
    };
    // Before anything is claimed or pushed: a pause, or a copy found now, holds this round.
    let dispatch = if plan.reread {
        Some(dispatch_state(client)?)
    } else {
        None
    };
    // (A round planned while paused claims nothing: plan_round saw to that.)
    let paused = matches!(dispatch, Some(Dispatch::Paused(_)));
    if plan.claim == 0 || paused {
        let failing_now = read_failing(client)?;
        if !records {
            statistics::refresh_if_grown(client)?;
        }
        return Ok(RoundDone {
            skipped,
            health,
            failing_now,
            dispatch,
            ..RoundDone::default()
        });
    }
    if plan.commit_without_waiting {
        claim::commit_without_waiting(client)?;
    }
    let unparked = if plan.unpark {
        parking::unpark(client)?
    } else {
        parking::Unparked::default()
    };
    let failing_now = read_failing(client)?;
    let pushed = if plan.push {
        push::push_ready(client, plan.claim as i32, config::max_recovery_attempts())?
    } else {
        push::Pushed::default()
    };
    let mut limited: Vec<String> = work.limited.iter().map(|d| d.to_string()).collect();
    if plan.find_limited {
        limited.extend(parking::limited_destinations(client)?);
        limited.sort_unstable();
        limited.dedup();
    }
    let per_destination = work.settings.concurrency_per_destination;
    let unparked_limited = if limited.is_empty() {
        None
    } else {
        Some(parking::unpark_limited(
            client,
            limited,
            per_destination,
            work.outstanding,
            work.turns,
        )?)
    };
    let smallest_room = if plan.read_smallest_room {
        Some(claim::smallest_room(client, per_destination)?)
    } else {
        None
    };
    // A destination that turned failing in this round's record has room for one; rooms
    // read again in this round (an endpoint's limits changed) rank by what they say now.
    let ranked = plan.ranked
        || !health.is_empty()
        || smallest_room
            .is_some_and(|room| plan::ranks(Some(room), work.most_outstanding, plan.claim));
    let claimed = claim::claim(
        client,
        plan.claim,
        &work.settings,
        work.outstanding,
        work.tenants,
        ranked,
    )?;
    // A message written in another database: this one is a copy, and nothing was claimed.
    let dispatch = if claimed.copied {
        Some(Dispatch::Paused(identity::pause_copy(client)?))
    } else {
        dispatch
    };
    let unparked_messages = unparked.messages + unparked_limited.as_ref().map_or(0, |u| u.messages);
    let next_due = if claimed.took(plan.claim) || unparked_messages > 0 {
        Some(Duration::ZERO)
    } else if unparked.flags_kept > 0 {
        // A flag kept for a row an application holds: tried again like a held outcome.
        Some(claim::next_due(client)?.map_or(HELD_RETRY, |due| due.min(HELD_RETRY)))
    } else {
        claim::next_due(client)?
    };
    // Last, and only when nothing waits to be sent, nor was committed for us since the
    // round began: see `statistics` and `replan`.
    if !records && claimed.jobs.is_empty() && unparked_messages == 0 && !woken() {
        statistics::refresh_if_grown(client)?;
        replan::if_stale(client, &work.settings)?;
    }
    Ok(RoundDone {
        claimed,
        next_due,
        skipped,
        kept_flags: plan.unpark.then_some(unparked.flags_kept > 0),
        pushed,
        limits: Some(match unparked_limited {
            Some(u) => LimitsSeen {
                still_limited: u.still_limited,
                smallest_room,
                served_last: u.served_last,
                found: plan.find_limited,
            },
            None => LimitsSeen {
                still_limited: Vec::new(),
                smallest_room,
                served_last: Vec::new(),
                found: plan.find_limited,
            },
        }),
        health,
        failing_now,
        dispatch,
    })
}

/// Whether a commit (or a signal) has set the latch since the worker last slept.
fn woken() -> bool {
    // SAFETY: MyLatch is this process's own latch; reading its flag is what WaitLatch does.
    unsafe { (*pg_sys::MyLatch).is_set != 0 }
}

/// Whether delivery may go on: a copy not yet paused is paused now.
fn dispatch_state(client: &mut SpiClient<'_>) -> Result<Dispatch, Failure> {
    Ok(match identity::read(client)? {
        Dispatch::Copy => Dispatch::Paused(identity::pause_copy(client)?),
        known => known,
    })
}

impl State {
    /// Keeps whether delivery is paused, and says so in the log when that changes.
    fn keep_dispatch(&mut self, dispatch: Dispatch) {
        let paused = match dispatch {
            Dispatch::Paused(reason) => Some(reason),
            Dispatch::Serving | Dispatch::Copy => None,
        };
        match (&self.paused, &paused) {
            (None, Some(reason)) => log!("workflow dispatcher: delivery paused: {reason}"),
            (Some(_), None) => log!("workflow dispatcher: delivery resumed"),
            _ => {}
        }
        self.paused = paused;
    }

    /// Keeps what a committed round found, and sends what it claimed.
    fn keep_round(
        &mut self,
        done: RoundDone,
        outcomes: Vec<Outcome>,
        looked: &[Arc<str>],
        (flags, parks): (Option<u64>, Option<u64>),
        records_keyed: bool,
    ) {
        let RoundDone {
            claimed,
            next_due: _,
            skipped,
            kept_flags,
            pushed,
            limits,
            health,
            failing_now,
            dispatch,
        } = done;
        if let Some(dispatch) = dispatch {
            self.keep_dispatch(dispatch);
        }
        self.parking
            .unparked(flags, kept_flags, records_keyed, config::poll_interval());
        // A pushed workflow's handler that dies is found when its lease ends.
        if let Some(end) = pushed.leases_end {
            self.timers.next_ready_look = self
                .timers
                .next_ready_look
                .min(Instant::now() + end + READY_LOOK_SLACK);
        }
        // A queue an application's claim held: the push takes its turn there shortly,
        // not at the next poll.
        if pushed.busy_queue {
            self.timers.push_again = true;
            self.timers.next_ready_look = self
                .timers
                .next_ready_look
                .min(Instant::now() + BUSY_QUEUE_RETRY);
        }
        // Outcomes of messages an application held locked: recorded by a later round.
        self.outcomes.hold(record::take_skipped(outcomes, &skipped));
        self.destinations
            .keep_health(health, failing_now, &mut self.parking);
        if let Some(seen) = limits {
            if let Some(room) = seen.smallest_room {
                self.destinations.set_smallest_room(room);
            }
            self.parking.looked(
                looked,
                seen.still_limited,
                seen.served_last,
                seen.found.then_some(parks),
            );
        }
        for destination in claimed.limited {
            self.parking.parked(destination.into());
        }
        for destination in looked {
            if !self.parking.limits(destination) {
                self.destinations.nothing_to_probe(destination);
            }
        }
        self.outstanding += claimed.jobs.len();
        // Committed: the HTTP side may start.
        for job in claimed.jobs {
            self.destinations.sent(&job.destination, &job.tenant);
            self.sender.send(job);
        }
    }
}

/// Records every outcome back from the HTTP side, due or not.
fn record_all(state: &mut State) {
    let held = state.outcomes.take_held(true);
    state.keep(held);
    state.collect();
    let outcomes = state.outcomes.take();
    if outcomes.is_empty() {
        return;
    }
    let keep_delivered = keeps_delivered();
    let known = &state.destinations.health;
    let result = transaction::run_round(|| {
        Ok(Spi::connect_mut(|client| {
            let skipped = record::record(client, &outcomes, keep_delivered)?;
            let recorded: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| !skipped.contains(&o.id))
                .collect();
            let health = destinations::observe(client, &recorded, known)?;
            Ok::<_, pgrx::spi::SpiError>((skipped, health))
        })?)
    });
    state.note(&result);
    match result {
        Ok((skipped, health)) => {
            state
                .outcomes
                .hold(record::take_skipped(outcomes, &skipped));
            state
                .destinations
                .keep_health(health, None, &mut state.parking);
        }
        Err(_) => state.keep(outcomes),
    }
}

/// `workflow.retention = 0` keeps nothing finished: a delivered message goes at once.
fn keeps_delivered() -> bool {
    !config::retention().is_zero()
}

/// Whether the extension is installed at the version this library's statements expect.
/// Between installing a new library and `ALTER EXTENSION workflow UPDATE` the dispatcher
/// waits (messages wait with it), and says so once.
fn schema_is_current(state: &mut State) -> bool {
    let found = transaction::run(|| {
        Ok(Spi::connect(|client| {
            client
                .select(EXTENSION_VERSION, Some(1), &[])?
                .first()
                .get_one::<String>()
        })?)
    })
    .ok()
    .flatten();
    if let Some(version) = &found
        && version != SCHEMA_VERSION
        && state.reported_version.as_ref() != Some(version)
    {
        log!(
            "workflow dispatcher: the extension in this database is version {version}, the library is {SCHEMA_VERSION}; \
             messages wait until ALTER EXTENSION workflow UPDATE"
        );
    }
    let current = found.as_deref() == Some(SCHEMA_VERSION);
    state.reported_version = found;
    current
}

fn housekeep(state: &mut State) {
    if Instant::now() < state.timers.next_housekeeping {
        return;
    }
    let retention = config::retention();
    let mut caught_up = false;
    for _ in 0..housekeeping::MAX_BATCHES {
        let removed = transaction::run_round(|| {
            Ok(Spi::connect_mut(|client| {
                housekeeping::purge_batch(client, retention)
            })?)
        });
        state.note(&removed);
        if removed.unwrap_or(0) < housekeeping::BATCH as usize {
            caught_up = true;
            break;
        }
    }
    // Behind (every batch was full): go on after the next round rather than a poll
    // interval later, so that retention keeps pace with delivery.
    state.timers.next_housekeeping = if caught_up {
        Instant::now() + config::poll_interval().clamp(HOUSEKEEPING_MIN, HOUSEKEEPING_MAX)
    } else {
        Instant::now()
    };
}

/// Frees the leases of sessions that ended: those whose exits the slot reported, or every
/// session-bound lease's at the start, every `SESSION_SWEEP`, and when more exits came than
/// the slot remembers. Returns whether a round should push at once (a freed workflow of a
/// pushed name).
fn free_ended_sessions(state: &mut State) -> bool {
    let Some(reported) = wake::ended_since(state.slot, state.timers.sessions_seen) else {
        return false;
    };
    let sweep = Instant::now() >= state.timers.next_session_sweep;
    let pids = match reported.values {
        _ if sweep => None,
        Some(pids) if pids.is_empty() => return false,
        Some(pids) => Some(pids),
        None => None,
    };
    let everyone = pids.is_none();
    let freed = transaction::run_round(|| {
        Ok(Spi::connect_mut(|client| {
            sessions::free_orphaned(client, pids)
        })?)
    });
    state.note(&freed);
    if freed.is_ok() {
        state.timers.sessions_seen = Some(reported.count);
        if everyone {
            state.timers.next_session_sweep = Instant::now() + SESSION_SWEEP;
        }
    }
    state.timers.pushing && freed.is_ok_and(|freed| freed > 0)
}

/// Tells applications about the workflows that became ready with time alone, when due.
/// Returns whether a round should push at once.
fn announce_ready(state: &mut State) -> bool {
    if let Some(reported) = wake::prepared_since(state.slot, state.timers.prepared_seen)
        && Some(reported.count) != state.timers.prepared_seen
    {
        state.timers.prepared_seen = Some(reported.count);
        match reported.values {
            Some(xids) => {
                let watched = state
                    .timers
                    .prepared
                    .get_or_insert_with(|| Some(Vec::new()));
                if let Some(watched) = watched {
                    watched.extend(xids.into_iter().map(i64::from));
                }
            }
            // More than the slot remembers, or a first look after some were prepared.
            None if reported.count > 0 => state.timers.prepared = Some(None),
            None => {}
        }
        state.timers.next_ready_look = Instant::now();
    }
    if let Some(at) = wake::take_timer(state.slot) {
        // SAFETY: reading the clock, on the main thread.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let wait = Duration::from_micros(at.saturating_sub(now).max(0) as u64);
        state.timers.next_ready_look = state
            .timers
            .next_ready_look
            .min(Instant::now() + wait + READY_LOOK_SLACK);
    }
    if Instant::now() < state.timers.next_ready_look {
        return false;
    }
    let watched = state.timers.prepared.clone();
    let since = if watched.is_some() {
        None
    } else {
        state.timers.ready_up_to
    };
    let looked = transaction::run_round(|| {
        Ok(Spi::connect_mut(|client| {
            let still = match watched.clone() {
                Some(xids) => Some(ready::still_prepared(client, xids)?),
                None => None,
            };
            Ok::<_, pgrx::spi::SpiError>((ready::announce(client, since)?, still))
        })?)
    });
    state.note(&looked);
    let poll = config::poll_interval();
    let mut push_now = false;
    let next = match looked {
        Ok((looked, still)) => {
            // Every name was announced after the prepared transactions no longer waiting
            // had ended; the ones still prepared are watched until they do.
            state.timers.prepared = still.filter(|xids| !xids.is_empty()).map(Some);
            state.timers.ready_up_to = looked.up_to;
            // A handler just made (or a first look) may have ready workflows waiting.
            let again = std::mem::take(&mut state.timers.push_again);
            push_now = looked.pushing && (looked.became_ready || !state.timers.pushing || again);
            state.timers.pushing = looked.pushing;
            // Just past the next expiry, so that the look after it finds it expired.
            looked
                .next_expiry_in
                .map_or(poll, |d| (d + READY_LOOK_SLACK).min(poll))
        }
        Err(_) => poll,
    };
    state.timers.next_ready_look = Instant::now() + next;
    push_now
}

/// Stops claiming, releases the jobs that have not started, records what finishes within
/// the grace period, and leaves the rest leased for the next dispatcher.
fn shut_down(mut state: State) {
    state.sender.stop_starting();
    let deadline = Instant::now() + SHUTDOWN_GRACE;
    while state.outstanding > 0 && Instant::now() < deadline {
        record_all(&mut state);
        if state.outstanding > 0 {
            state
                .waiter
                .wait(deadline.saturating_duration_since(Instant::now()));
        }
    }
    record_all(&mut state);
    if state.outstanding > 0 {
        log!(
            "workflow dispatcher stopping with {} requests outstanding; their messages will be sent again",
            state.outstanding
        );
    }
    state.sender.shutdown();
}

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
//! waits up to `RECORD_WITHIN` for others to share its flush, unless someone waits for it
//! (a durable step's workflow, the next message of its ordering key) or enough have
//! gathered. Delivery itself is not delayed: a commit that enqueues wakes a round at once,
//! and only outcomes wait.

use super::claim::{self, Settings};
use super::database;
use super::destinations::{self, Failing};
use super::housekeeping;
use super::parking;
use super::plan::{RoundInputs, plan_round};
use super::ready;
use super::record;
use super::send::{Outcome, Sender};
use super::statistics;
use super::transaction::{self, Failure};
use super::waiting::Waiter;
use crate::config;
use crate::delivery::health;
use crate::runs::{push, sessions};
use crate::wake;
use pgrx::bgworkers::BackgroundWorker;
use pgrx::datum::TimestampWithTimeZone;
use pgrx::prelude::*;
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
/// How long an outcome may wait to be recorded with others, so that several share one WAL
/// flush at moderate rates (bench/NOTES.md). The lease (request timeouts plus
/// `LEASE_MARGIN`) is far longer, and a crash loses what waits here as it would lose an
/// unflushed record: the messages are sent again (G2).
const RECORD_WITHIN: Duration = Duration::from_millis(10);
/// How long the outcome of a message an application held locked waits before a round
/// tries to record it again.
const HELD_RETRY: Duration = Duration::from_millis(500);
/// How long after a lease's expiry the look that announces it runs.
const READY_LOOK_SLACK: Duration = Duration::from_millis(1);

/// Most healthy destinations whose unreachable requests in a row the worker counts.
const MAX_SUSPECTS: usize = 4096;
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
    /// Back from the HTTP side, not yet recorded.
    unrecorded: Vec<Outcome>,
    /// When the oldest of `unrecorded` came back.
    unrecorded_since: Option<Instant>,
    /// Whether a workflow or an ordering key waits for one of `unrecorded`.
    awaited: bool,
    /// Outcomes a round skipped because an application held their messages locked, and
    /// since when: tried again after `HELD_RETRY`.
    held: Vec<Outcome>,
    held_since: Option<Instant>,
    /// Whether more may be due than the last round claimed: it took all it asked for, or
    /// had no room to ask.
    backlog: bool,
    next_housekeeping: Instant,
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
    /// What the last unpark saw (see `parking`): the slot's count of commits that left a
    /// flag, whether it kept flags for later, and when it runs again at the latest (for
    /// flags no commit counted: a prepared transaction's, or a hand edit's).
    flags_seen: Option<u64>,
    flags_kept: bool,
    next_unpark: Instant,
    /// A round recorded outcomes of keyed messages, so flagged their keys, and ran no
    /// unpark (it had no room to claim).
    flagged_by_record: bool,
    /// Where the announcements of workflows ready with time alone stand (see `ready`): up
    /// to when they are done, and when the next look is due.
    ready_up_to: Option<TimestampWithTimeZone>,
    next_ready_look: Instant,
    /// Whether some workflow name has a push handler, as the last look saw: only then does
    /// a round push ready workflows.
    pushing: bool,
    /// Transactions prepared after making workflows ready, as last counted (see
    /// `wake::readiness_prepared`), and the ones that may still wait for their COMMIT
    /// PREPARED (`Some(None)`: any of this database's): while there are any, every look
    /// announces every ready name.
    prepared_seen: Option<u64>,
    prepared: Option<Option<Vec<i64>>>,
    /// Backends with session-bound leases that exited, as last counted, and when to look
    /// at every session-bound lease unprompted (see `runs::sessions`).
    sessions_seen: Option<u64>,
    next_session_sweep: Instant,
    /// Claimed and not yet back, per destination (a destination's room, `claim/claim.sql`).
    by_destination: HashMap<Arc<str>, usize>,
    /// The destinations with messages parked at their limit, and whether room may have
    /// freed since the last unpark (one of their requests came back). Only this dispatcher
    /// parks them, so after `limited_known` (a look at the outbox since the schema was last
    /// checked) the map names every one.
    limited: HashMap<Arc<str>, bool>,
    limited_known: bool,
    /// The destinations' health (see `destinations`): the failing ones and when each may be
    /// probed next, as stored when `failing_known` (read again at the next unpark
    /// otherwise), and the healthy ones with unreachable requests in a row.
    health: destinations::Known,
    failing_known: bool,
    /// The destinations' limits as last read, read again whenever a round looks at the
    /// unpark flags (an endpoint's change leaves one).
    limits: claim::Rooms,
}

struct Round {
    claimed_a_full_batch: bool,
    next_due: Option<Duration>,
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
    /// When the first lease of a workflow pushed this round runs out.
    pushed_leases_end: Option<Duration>,
    /// After a look at the limited destinations: those still limited, and the smallest room.
    still_limited: Option<(Vec<String>, Option<usize>)>,
    /// What the round's outcomes changed of the destinations' health.
    health: Vec<(Arc<str>, health::Change)>,
    /// The failing destinations as stored, when the round read them.
    failing_now: Option<HashMap<Arc<str>, Failing>>,
}

pub fn run(slot: usize) {
    let sender = match Sender::start(config::allow_private_networks(), config::max_concurrency()) {
        Ok(sender) => sender,
        Err(e) => {
            // Restarted by the postmaster after RESTART_AFTER; better than a half-alive worker.
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
        unrecorded: Vec::new(),
        unrecorded_since: None,
        awaited: false,
        held: Vec::new(),
        held_since: None,
        backlog: false,
        next_housekeeping: Instant::now(),
        installed: false,
        reported_version: None,
        failed_rounds: 0,
        stop_requested: false,
        flags_seen: None,
        flags_kept: false,
        next_unpark: Instant::now(),
        flagged_by_record: false,
        ready_up_to: None,
        next_ready_look: Instant::now(),
        pushing: false,
        prepared_seen: None,
        prepared: None,
        sessions_seen: None,
        next_session_sweep: Instant::now(),
        by_destination: HashMap::new(),
        limited: HashMap::new(),
        limited_known: false,
        health: destinations::Known::default(),
        failing_known: false,
        limits: claim::Rooms::default(),
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
                .next_ready_look
                .saturating_duration_since(Instant::now()),
        )
        .min(state.next_probe().map_or(Duration::MAX, |at| {
            at.saturating_duration_since(Instant::now())
        }));
        sleep_until_work(&mut state, nap);
    }
}

impl State {
    /// Takes what the HTTP side finished.
    fn collect(&mut self) {
        if self
            .held_since
            .is_some_and(|since| since.elapsed() >= HELD_RETRY)
        {
            self.held_since = None;
            let held = std::mem::take(&mut self.held);
            self.keep(held);
        }
        let arrived = self.sender.finished();
        if arrived.is_empty() {
            return;
        }
        self.outstanding = self.outstanding.saturating_sub(arrived.len());
        for outcome in &arrived {
            if let Some(n) = self.by_destination.get_mut(&outcome.destination) {
                *n = n.saturating_sub(1);
                if *n == 0 {
                    self.by_destination.remove(&outcome.destination);
                }
            }
            if !self.limited.is_empty()
                && let Some(room) = self.limited.get_mut(&outcome.destination)
            {
                *room = true;
            }
        }
        self.keep(arrived);
    }

    fn stopping(&mut self) -> bool {
        self.stop_requested |= BackgroundWorker::sigterm_received();
        self.stop_requested
    }

    /// Outcomes to record: new ones, or ones a round could not record and gives back.
    fn keep(&mut self, outcomes: Vec<Outcome>) {
        if outcomes.is_empty() {
            return;
        }
        self.unrecorded_since.get_or_insert_with(Instant::now);
        // A released message is due again at once, so its release is not held back; nor is
        // the outcome that makes room for messages parked at their destination's limit.
        self.awaited |= outcomes.iter().any(|o| {
            o.durable_step
                || o.ordered
                || o.released
                || (!self.limited.is_empty() && self.limited.contains_key(&o.destination))
                // A probe's outcome sets the destination's next turn: until it is recorded,
                // another round would see room for a second probe.
                || self.health.failing.contains_key(&o.destination)
        });
        self.unrecorded.extend(outcomes);
    }

    /// Whether a round should act on unpark flags: a commit left one since the last look,
    /// the last look kept some, this round or an earlier one without a look records an
    /// outcome of a keyed message (whose record flags its key), or a poll interval has
    /// passed.
    fn unpark_due(&self, flags: Option<u64>, records_keyed: bool) -> bool {
        flags.is_none()
            || flags != self.flags_seen
            || self.flags_kept
            || records_keyed
            || self.flagged_by_record
            || Instant::now() >= self.next_unpark
    }

    /// Keeps what a committed round changed of the destinations' health: a failing one is
    /// limited (its messages wait parked, one probe at a time); one whose outage ended has
    /// room for all of them. A change of the failing set may change the smallest room.
    fn keep_health(
        &mut self,
        changes: Vec<(Arc<str>, health::Change)>,
        stored: Option<HashMap<Arc<str>, Failing>>,
    ) {
        let now = Instant::now();
        for (destination, change) in changes {
            match change.health {
                health::Health::Healthy { failures } => {
                    if self.health.failing.remove(&destination).is_some() {
                        self.limits.smallest_room = None;
                    }
                    if failures == 0 {
                        self.health.suspect.remove(&destination);
                    } else {
                        // Bounded: forgetting a count only delays an outage's notice.
                        if self.health.suspect.len() >= MAX_SUSPECTS {
                            self.health.suspect.clear();
                        }
                        self.health
                            .suspect
                            .insert(Arc::clone(&destination), failures);
                    }
                    if change.release {
                        self.limited.insert(destination, true);
                    }
                }
                health::Health::Failing { probes } => {
                    let probe_at = now + change.next_probe_in.unwrap_or_default();
                    self.health.suspect.remove(&destination);
                    let since = self.health.failing.get(&destination).map(|f| f.since);
                    if since.is_none() {
                        self.limits.smallest_room = None;
                    }
                    let failing = Failing {
                        probes,
                        since: since.unwrap_or(now),
                        probe_at,
                    };
                    self.health
                        .failing
                        .insert(Arc::clone(&destination), failing);
                    self.limited.entry(destination).or_insert(false);
                }
            }
        }
        if let Some(stored) = stored {
            for destination in stored.keys() {
                self.limited.entry(Arc::clone(destination)).or_insert(false);
            }
            let same = stored.len() == self.health.failing.len()
                && stored.keys().all(|d| self.health.failing.contains_key(d));
            if !same {
                self.limits.smallest_room = None;
            }
            self.health.failing = stored;
            self.failing_known = true;
        }
    }

    /// A failing destination the round looked at and found nothing parked for: nothing to
    /// probe. It is looked at again after the longest probe interval, not every round.
    fn nothing_to_probe(&mut self, destination: &Arc<str>) {
        if let Some(failing) = self.health.failing.get_mut(destination) {
            failing.probe_at = Instant::now() + health::LONGEST_PROBE;
        }
    }

    /// When the next failing destination may be probed again: its turn has not come yet.
    /// (One whose turn has come gets room at each round until its probe's outcome sets the
    /// next turn; waking for it again before then would spin.)
    fn next_probe(&self) -> Option<Instant> {
        let now = Instant::now();
        self.health
            .failing
            .values()
            .map(|f| f.probe_at)
            .filter(|at| *at > now)
            .min()
    }

    /// Outcomes a round skipped: for a round `HELD_RETRY` from now.
    fn hold(&mut self, outcomes: Vec<Outcome>) {
        if outcomes.is_empty() {
            return;
        }
        self.held_since.get_or_insert_with(Instant::now);
        self.held.extend(outcomes);
    }

    /// Notes how a transaction ended: a failure is logged when it starts a series (with
    /// the back-off, a persistent one is not logged every round), and makes the worker
    /// check the extension again.
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
                self.limited_known = false;
                self.failing_known = false;
                self.limits = claim::Rooms::default();
            }
        }
    }

    /// Under a backlog every round records what came back: the rounds follow each other
    /// anyway, and holding outcomes back only splits them into more transactions
    /// (bench/NOTES.md).
    fn record_due(&self) -> bool {
        self.unrecorded_since.is_some_and(|since| {
            self.backlog
                || self.awaited
                || self.unrecorded.len() >= max_outstanding() / 2
                || since.elapsed() >= RECORD_WITHIN
        })
    }

    fn take_unrecorded(&mut self) -> Vec<Outcome> {
        self.unrecorded_since = None;
        self.awaited = false;
        std::mem::take(&mut self.unrecorded)
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
        let mut wake_at = match state.unrecorded_since {
            Some(since) => until.min(since + RECORD_WITHIN),
            None => until,
        };
        if let Some(since) = state.held_since {
            wake_at = wake_at.min(since + HELD_RETRY);
        }
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

/// One round's transaction: the outcomes due for recording, then a claim for the room left.
fn record_and_claim(state: &mut State) -> Round {
    state.collect();
    let flags = wake::flags_raised(state.slot);
    let records_keyed = state.record_due() && state.unrecorded.iter().any(|o| o.ordered);
    let plan = plan_round(&RoundInputs {
        record_due: state.record_due(),
        outstanding: state.outstanding,
        max_outstanding: max_outstanding(),
        batch_size: config::batch_size(),
        byte_budget_rows: claim::rows_within_byte_budget(config::max_payload_bytes()),
        unpark_due: state.unpark_due(flags, records_keyed),
        limited_known: state.limited_known,
        failing_known: state.failing_known,
        smallest_room: state.limits.smallest_room,
        most_outstanding: state.by_destination.values().copied().max().unwrap_or(0),
        pushing: state.pushing,
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
        state.take_unrecorded()
    } else {
        Vec::new()
    };
    let limit = plan.claim;
    let unpark = plan.unpark;
    let settings = Settings {
        request_timeout: config::request_timeout(),
        max_attempts: config::max_attempts(),
        concurrency_per_destination: config::max_concurrency_per_destination(),
    };
    let keep_delivered = keeps_delivered();
    if plan.load_failing {
        // An endpoint's limits may have changed (a commit that flagged), or a poll interval
        // passed: every destination gets a look.
        state.limited.values_mut().for_each(|room| *room = true);
    }
    // A failing destination whose probe is due has room for it.
    let now = Instant::now();
    for (destination, failing) in &state.health.failing {
        if failing.probe_at <= now {
            state.limited.insert(Arc::clone(destination), true);
        }
    }
    let known = state.health.clone();
    let limited_known = state.limited_known;
    // The limited destinations this round looks at: those with room, or all before the
    // first look; after the round they are what the unpark says.
    let looked: Vec<Arc<str>> = state
        .limited
        .iter()
        .filter(|(_, room)| **room || !limited_known)
        .map(|(destination, _)| Arc::clone(destination))
        .collect();
    let with_room: Vec<String> = looked.iter().map(|d| d.to_string()).collect();
    let by_destination = &state.by_destination;
    let result = transaction::run_round(|| {
        Spi::connect_mut(|client| {
            statistics::refresh_if_grown(client)?;
            let skipped = record::record(client, &outcomes, keep_delivered)?;
            let recorded: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| !skipped.contains(&o.id))
                .collect();
            let health = destinations::observe(client, &recorded, &known)?;
            // Read after the unpark, which forgets an enabled endpoint's failing.
            let load_failing = |client: &mut pgrx::spi::SpiClient<'_>| {
                if plan.load_failing {
                    destinations::load(client).map(Some)
                } else {
                    Ok(None)
                }
            };
            if limit == 0 {
                let failing_now = load_failing(client)?;
                return Ok(RoundDone {
                    skipped,
                    health,
                    failing_now,
                    ..RoundDone::default()
                });
            }
            if plan.commit_without_waiting {
                claim::commit_without_waiting(client)?;
            }
            let unparked = if unpark {
                parking::unpark(client)?
            } else {
                parking::Unparked::default()
            };
            let failing_now = load_failing(client)?;
            let pushed_leases_end = if plan.push {
                push::push_ready(client, limit as i32, config::max_recovery_attempts())?.1
            } else {
                None
            };
            let mut with_room = with_room.clone();
            if plan.find_limited {
                with_room.extend(parking::limited_destinations(client)?);
            }
            let unparked_limited = if with_room.is_empty() {
                None
            } else {
                Some(parking::unpark_limited(
                    client,
                    with_room,
                    settings.concurrency_per_destination,
                    by_destination,
                )?)
            };
            let smallest_room = if plan.read_smallest_room {
                Some(claim::smallest_room(
                    client,
                    settings.concurrency_per_destination,
                )?)
            } else {
                None
            };
            // A destination that turned failing in this round's record has room for one.
            let ranked = plan.ranked || !health.is_empty();
            let claimed = claim::claim(client, limit, &settings, by_destination, ranked)?;
            let unparked_messages =
                unparked.messages + unparked_limited.as_ref().map_or(0, |u| u.messages);
            let next_due = if claimed.took(limit) || unparked_messages > 0 {
                Some(Duration::ZERO)
            } else if unparked.flags_kept > 0 {
                // A flag kept for a row an application holds: tried again like a held outcome.
                Some(claim::next_due(client)?.map_or(HELD_RETRY, |due| due.min(HELD_RETRY)))
            } else {
                claim::next_due(client)?
            };
            Ok(RoundDone {
                claimed,
                next_due,
                skipped,
                kept_flags: unpark.then_some(unparked.flags_kept > 0),
                pushed_leases_end,
                still_limited: Some((
                    unparked_limited.map_or_else(Vec::new, |u| u.still_limited),
                    smallest_room,
                )),
                health,
                failing_now,
            })
        })
    });
    state.note(&result);
    // A failed round was rolled back whole: its outcomes wait for the next.
    let RoundDone {
        claimed,
        next_due,
        skipped,
        kept_flags,
        pushed_leases_end,
        still_limited,
        health,
        failing_now,
    } = match result {
        Ok(done) => done,
        Err(_) => {
            state.keep(outcomes);
            return Round {
                claimed_a_full_batch: false,
                next_due: None,
            };
        }
    };
    match kept_flags {
        Some(kept) => {
            state.flags_seen = flags;
            state.flags_kept = kept;
            state.next_unpark = Instant::now() + config::poll_interval();
            state.flagged_by_record = false;
        }
        None => state.flagged_by_record |= records_keyed,
    }
    // A pushed workflow's handler that dies is found when its lease ends.
    if let Some(end) = pushed_leases_end {
        state.next_ready_look = state
            .next_ready_look
            .min(Instant::now() + end + READY_LOOK_SLACK);
    }
    // Outcomes of messages an application held locked: recorded by a later round.
    state.hold(record::take_skipped(outcomes, &skipped));
    state.keep_health(health, failing_now);
    // A full walk, or unparked messages the claim may not have reached: more is due now.
    let claimed_a_full_batch = limit > 0 && next_due == Some(Duration::ZERO);
    state.backlog = claimed_a_full_batch || limit == 0;
    if let Some((still_limited, smallest_room)) = still_limited {
        if smallest_room.is_some() {
            state.limits.smallest_room = smallest_room;
        }
        for destination in &looked {
            state.limited.remove(destination);
        }
        for destination in still_limited {
            state.limited.insert(destination.into(), false);
        }
        state.limited_known = true;
    }
    for destination in claimed.limited {
        state.limited.entry(destination.into()).or_insert(false);
    }
    for destination in &looked {
        if !state.limited.contains_key(destination) {
            state.nothing_to_probe(destination);
        }
    }
    state.outstanding += claimed.jobs.len();
    // Committed: the HTTP side may start.
    for job in claimed.jobs {
        *state
            .by_destination
            .entry(Arc::clone(&job.destination))
            .or_insert(0) += 1;
        state.sender.send(job);
    }
    Round {
        claimed_a_full_batch,
        next_due,
    }
}

/// Records every outcome back from the HTTP side, due or not.
fn record_all(state: &mut State) {
    state.held_since = None;
    let held = std::mem::take(&mut state.held);
    state.keep(held);
    state.collect();
    let outcomes = state.take_unrecorded();
    if outcomes.is_empty() {
        return;
    }
    let keep_delivered = keeps_delivered();
    let known = state.health.clone();
    let result = transaction::run_round(|| {
        Ok(Spi::connect_mut(|client| {
            let skipped = record::record(client, &outcomes, keep_delivered)?;
            let recorded: Vec<&Outcome> = outcomes
                .iter()
                .filter(|o| !skipped.contains(&o.id))
                .collect();
            let health = destinations::observe(client, &recorded, &known)?;
            Ok::<_, pgrx::spi::SpiError>((skipped, health))
        })?)
    });
    state.note(&result);
    match result {
        Ok((skipped, health)) => {
            state.hold(record::take_skipped(outcomes, &skipped));
            state.keep_health(health, None);
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
    if Instant::now() < state.next_housekeeping {
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
    state.next_housekeeping = if caught_up {
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
    let Some(reported) = wake::ended_since(state.slot, state.sessions_seen) else {
        return false;
    };
    let sweep = Instant::now() >= state.next_session_sweep;
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
        state.sessions_seen = Some(reported.count);
        if everyone {
            state.next_session_sweep = Instant::now() + SESSION_SWEEP;
        }
    }
    state.pushing && freed.is_ok_and(|freed| freed > 0)
}

/// Tells applications about the workflows that became ready with time alone, when due.
/// Returns whether a round should push at once.
fn announce_ready(state: &mut State) -> bool {
    if let Some(reported) = wake::prepared_since(state.slot, state.prepared_seen)
        && Some(reported.count) != state.prepared_seen
    {
        state.prepared_seen = Some(reported.count);
        match reported.values {
            Some(xids) => {
                let watched = state.prepared.get_or_insert_with(|| Some(Vec::new()));
                if let Some(watched) = watched {
                    watched.extend(xids.into_iter().map(i64::from));
                }
            }
            // More than the slot remembers, or a first look after some were prepared.
            None if reported.count > 0 => state.prepared = Some(None),
            None => {}
        }
        state.next_ready_look = Instant::now();
    }
    if let Some(at) = wake::take_timer(state.slot) {
        // SAFETY: reading the clock, on the main thread.
        let now = unsafe { pg_sys::GetCurrentTimestamp() };
        let wait = Duration::from_micros(at.saturating_sub(now).max(0) as u64);
        state.next_ready_look = state
            .next_ready_look
            .min(Instant::now() + wait + READY_LOOK_SLACK);
    }
    if Instant::now() < state.next_ready_look {
        return false;
    }
    let watched = state.prepared.clone();
    let since = if watched.is_some() {
        None
    } else {
        state.ready_up_to
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
            state.prepared = still.filter(|xids| !xids.is_empty()).map(Some);
            state.ready_up_to = looked.up_to;
            // A handler just made (or a first look) may have ready workflows waiting.
            push_now = looked.pushing && (looked.became_ready || !state.pushing);
            state.pushing = looked.pushing;
            // Just past the next expiry, so that the look after it finds it expired.
            looked
                .next_expiry_in
                .map_or(poll, |d| (d + READY_LOOK_SLACK).min(poll))
        }
        Err(_) => poll,
    };
    state.next_ready_look = Instant::now() + next;
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

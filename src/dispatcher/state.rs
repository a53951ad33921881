//! What the worker remembers between rounds, in four owned parts: the outcomes waiting to
//! be recorded, the parking it has to undo, the destinations' load and health, and the
//! timers of its side duties. Each part keeps its own rules; the round (`worker`) reads
//! them into a plan and hands each what the round found.

use super::destinations::{Failing, Known};
use super::send::Outcome;
use crate::delivery::health;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long an outcome may wait to be recorded with others, so that several share one WAL
/// flush at moderate rates (bench/NOTES.md). The lease (request timeouts plus
/// `LEASE_MARGIN`) is far longer, and a crash loses what waits here as it would lose an
/// unflushed record: the messages are sent again (G2).
pub const RECORD_WITHIN: Duration = Duration::from_millis(10);
/// How long the outcome of a message an application held locked waits before a round
/// tries to record it again.
pub const HELD_RETRY: Duration = Duration::from_millis(500);
/// Most healthy destinations whose unreachable requests in a row the worker counts.
const MAX_SUSPECTS: usize = 4096;

/// Outcomes back from the HTTP side, not yet recorded.
#[derive(Default)]
pub struct Outcomes {
    unrecorded: Vec<Outcome>,
    /// When the oldest of `unrecorded` came back.
    since: Option<Instant>,
    /// Whether a workflow, an ordering key or a destination waits for one of them.
    awaited: bool,
    /// Outcomes a round skipped because an application held their messages locked, and
    /// since when: tried again after `HELD_RETRY`.
    held: Vec<Outcome>,
    held_since: Option<Instant>,
}

impl Outcomes {
    /// Outcomes to record; `awaited` says whether something waits for one of them.
    pub fn keep(&mut self, outcomes: Vec<Outcome>, awaited: bool) {
        if outcomes.is_empty() {
            return;
        }
        self.since.get_or_insert_with(Instant::now);
        self.awaited |= awaited;
        self.unrecorded.extend(outcomes);
    }

    /// Outcomes a round skipped: for a round `HELD_RETRY` from now.
    pub fn hold(&mut self, outcomes: Vec<Outcome>) {
        if outcomes.is_empty() {
            return;
        }
        self.held_since.get_or_insert_with(Instant::now);
        self.held.extend(outcomes);
    }

    /// The held outcomes, once their wait is over (`all`: at once).
    pub fn take_held(&mut self, all: bool) -> Vec<Outcome> {
        let due = self
            .held_since
            .is_some_and(|since| since.elapsed() >= HELD_RETRY);
        if !(all || due) {
            return Vec::new();
        }
        self.held_since = None;
        std::mem::take(&mut self.held)
    }

    /// Whether a round should record now. Under a backlog every round records what came
    /// back: the rounds follow each other anyway, and holding outcomes back only splits
    /// them into more transactions (bench/NOTES.md).
    pub fn record_due(&self, backlog: bool, max_outstanding: usize) -> bool {
        self.since.is_some_and(|since| {
            backlog
                || self.awaited
                || self.unrecorded.len() >= max_outstanding / 2
                || since.elapsed() >= RECORD_WITHIN
        })
    }

    /// Whether one of them has an ordering key (its record flags the key's next message).
    pub fn any_ordered(&self) -> bool {
        self.unrecorded.iter().any(|o| o.ordered)
    }

    pub fn take(&mut self) -> Vec<Outcome> {
        self.since = None;
        self.awaited = false;
        std::mem::take(&mut self.unrecorded)
    }

    /// The earliest of `until` and the moments these outcomes call for a round.
    pub fn wake_at(&self, until: Instant) -> Instant {
        let mut at = until;
        if let Some(since) = self.since {
            at = at.min(since + RECORD_WITHIN);
        }
        if let Some(since) = self.held_since {
            at = at.min(since + HELD_RETRY);
        }
        at
    }
}

/// What the worker must undo of the claim's parking (see `parking`).
pub struct Parking {
    /// The slot's count of commits that left an unpark flag, as the last unpark saw it;
    /// whether that unpark kept flags for later; when it runs again at the latest (for
    /// flags no commit counted: a prepared transaction's, or a hand edit's).
    flags_seen: Option<u64>,
    flags_kept: bool,
    next_unpark: Instant,
    /// A round recorded outcomes of keyed messages, so flagged their keys, and ran no
    /// unpark (it had no room to claim).
    flagged_by_record: bool,
    /// The destinations with messages parked at their limit, and whether room may have
    /// freed since the last unpark (one of their requests came back). Only this dispatcher
    /// and enqueues park them (see `api::crowding`), and an enqueue that parked counts its
    /// commit; so after `limited_known` (a look at the outbox since the schema was last
    /// checked), with no such commit counted since `parks_seen`, the map names every one.
    /// A prepared transaction's commit counts nothing (it commits elsewhere, later), so
    /// the look is taken again each poll interval too (`found_at`).
    limited: HashMap<Arc<str>, bool>,
    limited_known: bool,
    parks_seen: Option<u64>,
    found_at: Option<Instant>,
    /// The tenant each destination with parked messages served last: its next unpark
    /// starts with the tenant after it (round-robin).
    turns: HashMap<Arc<str>, String>,
}

impl Parking {
    pub fn new() -> Parking {
        Parking {
            flags_seen: None,
            flags_kept: false,
            next_unpark: Instant::now(),
            flagged_by_record: false,
            limited: HashMap::new(),
            limited_known: false,
            parks_seen: None,
            found_at: None,
            turns: HashMap::new(),
        }
    }

    pub fn turns(&self) -> &HashMap<Arc<str>, String> {
        &self.turns
    }

    /// Whether a round should act on unpark flags: a commit left one since the last look,
    /// the last look kept some, this round or an earlier one without a look records an
    /// outcome of a keyed message (whose record flags its key), or a poll interval has
    /// passed.
    pub fn unpark_due(&self, flags: Option<u64>, records_keyed: bool) -> bool {
        flags.is_none()
            || flags != self.flags_seen
            || self.flags_kept
            || records_keyed
            || self.flagged_by_record
            || Instant::now() >= self.next_unpark
    }

    /// After a committed round: `kept` is `Some` when it ran the unpark (whether that kept
    /// flags for later); without one, flags its record left wait for the next.
    pub fn unparked(
        &mut self,
        flags: Option<u64>,
        kept: Option<bool>,
        records_keyed: bool,
        poll: Duration,
    ) {
        match kept {
            Some(kept) => {
                self.flags_seen = flags;
                self.flags_kept = kept;
                self.next_unpark = Instant::now() + poll;
                self.flagged_by_record = false;
            }
            None => self.flagged_by_record |= records_keyed,
        }
    }

    /// Whether the map names every destination with parked messages, given how many
    /// commits of enqueues that parked the slot has counted (`parks`), and that a look
    /// older than `poll` is looked at again.
    pub fn limited_known(&self, parks: Option<u64>, poll: Duration) -> bool {
        self.limited_known
            && parks == self.parks_seen
            && self.found_at.is_some_and(|at| at.elapsed() < poll)
    }

    /// Whether messages of `destination` wait parked at its limit.
    pub fn limits(&self, destination: &Arc<str>) -> bool {
        !self.limited.is_empty() && self.limited.contains_key(destination)
    }

    /// A request to `destination` came back: if it has messages parked, room may have freed.
    pub fn returned(&mut self, destination: &Arc<str>) {
        if !self.limited.is_empty()
            && let Some(room) = self.limited.get_mut(destination)
        {
            *room = true;
        }
    }

    /// `destination` has room, or may have: the next round looks at it.
    pub fn has_room(&mut self, destination: Arc<str>) {
        self.limited.insert(destination, true);
    }

    /// `destination` has messages parked at its limit, and no room known yet.
    pub fn parked(&mut self, destination: Arc<str>) {
        self.limited.entry(destination).or_insert(false);
    }

    /// Every destination gets a look (an endpoint's limits may have changed).
    pub fn all_have_room(&mut self) {
        self.limited.values_mut().for_each(|room| *room = true);
    }

    /// The limited destinations a round looks at: those with room, or all before the first
    /// look.
    pub fn to_look_at(&self) -> Vec<Arc<str>> {
        self.limited
            .iter()
            .filter(|(_, room)| **room || !self.limited_known)
            .map(|(destination, _)| Arc::clone(destination))
            .collect()
    }

    /// After a round's look at `looked`: what the unpark left parked is all that is. `found`
    /// when the round also looked for every destination with parked messages, with the
    /// count of parking commits read before it.
    pub fn looked(
        &mut self,
        looked: &[Arc<str>],
        still_limited: Vec<String>,
        served_last: Vec<(String, String)>,
        found: Option<Option<u64>>,
    ) {
        for destination in looked {
            self.limited.remove(destination);
        }
        for destination in still_limited {
            self.limited.insert(destination.into(), false);
        }
        for (destination, tenant) in served_last {
            self.turns.insert(destination.into(), tenant);
        }
        // A destination with nothing parked any more starts its next turn afresh.
        let limited = &self.limited;
        self.turns
            .retain(|destination, _| limited.contains_key(destination));
        if let Some(parks) = found {
            self.limited_known = true;
            self.parks_seen = parks;
            self.found_at = Some(Instant::now());
        }
    }

    /// After a failed round: the next looks at the outbox again.
    pub fn forget(&mut self) {
        self.limited_known = false;
    }
}

/// The destinations as the worker knows them: its requests outstanding at each, their
/// health, and the smallest room any has.
#[derive(Default)]
pub struct Destinations {
    /// Claimed and not yet back, per destination (a destination's room, `claim/claim.sql`).
    pub outstanding: HashMap<Arc<str>, usize>,
    /// The same by destination and tenant: a tenant with fewer than two outstanding at a
    /// destination may have requests claimed beyond its room (see `claim/claim.sql`).
    pub tenants: HashMap<(Arc<str>, Arc<str>), usize>,
    /// The failing ones and when each may be probed next, as stored when `failing_known`
    /// (read again at the next unpark otherwise), and the healthy ones with unreachable
    /// requests in a row.
    pub health: Known,
    failing_known: bool,
    /// The smallest room any destination has, as last read (see `claim::smallest_room`);
    /// `None` before the first read, and after a change that may lower it.
    smallest_room: Option<usize>,
}

impl Destinations {
    pub fn sent(&mut self, destination: &Arc<str>, tenant: &Arc<str>) {
        *self.outstanding.entry(Arc::clone(destination)).or_insert(0) += 1;
        *self
            .tenants
            .entry((Arc::clone(destination), Arc::clone(tenant)))
            .or_insert(0) += 1;
    }

    pub fn returned(&mut self, destination: &Arc<str>, tenant: &Arc<str>) {
        if let Some(n) = self.outstanding.get_mut(destination) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.outstanding.remove(destination);
            }
        }
        let key = (Arc::clone(destination), Arc::clone(tenant));
        if let Some(n) = self.tenants.get_mut(&key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.tenants.remove(&key);
            }
        }
    }

    /// The most requests one destination has outstanding.
    pub fn most_outstanding(&self) -> usize {
        self.outstanding.values().copied().max().unwrap_or(0)
    }

    pub fn failing_known(&self) -> bool {
        self.failing_known
    }

    pub fn smallest_room(&self) -> Option<usize> {
        self.smallest_room
    }

    pub fn set_smallest_room(&mut self, room: usize) {
        self.smallest_room = Some(room);
    }

    /// Whether `destination` is failing: a probe's outcome sets its next turn, and until
    /// it is recorded, another round would see room for a second probe.
    pub fn is_failing(&self, destination: &Arc<str>) -> bool {
        self.health.failing.contains_key(destination)
    }

    /// The failing destinations whose probe is due: each has room for it.
    pub fn probes_due(&self) -> Vec<Arc<str>> {
        let now = Instant::now();
        self.health
            .failing
            .iter()
            .filter(|(_, failing)| failing.probe_at <= now)
            .map(|(destination, _)| Arc::clone(destination))
            .collect()
    }

    /// When the next failing destination may be probed again: its turn has not come yet.
    /// (One whose turn has come gets room at each round until its probe's outcome sets the
    /// next turn; waking for it again before then would spin.)
    pub fn next_probe(&self) -> Option<Instant> {
        let now = Instant::now();
        self.health
            .failing
            .values()
            .map(|f| f.probe_at)
            .filter(|at| *at > now)
            .min()
    }

    /// A failing destination the round looked at and found nothing parked for: nothing to
    /// probe. It is looked at again after the longest probe interval, not every round.
    pub fn nothing_to_probe(&mut self, destination: &Arc<str>) {
        if let Some(failing) = self.health.failing.get_mut(destination) {
            failing.probe_at = Instant::now() + health::LONGEST_PROBE;
        }
    }

    /// Keeps what a committed round changed of the destinations' health: a failing one is
    /// limited (its messages wait parked, one probe at a time); one whose outage ended has
    /// room for all of them. A change of the failing set may change the smallest room.
    pub fn keep_health(
        &mut self,
        changes: Vec<(Arc<str>, health::Change)>,
        stored: Option<HashMap<Arc<str>, Failing>>,
        parking: &mut Parking,
    ) {
        let now = Instant::now();
        for (destination, change) in changes {
            match change.health {
                health::Health::Healthy { failures } => {
                    if self.health.failing.remove(&destination).is_some() {
                        self.smallest_room = None;
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
                        parking.has_room(destination);
                    }
                }
                health::Health::Failing { probes } => {
                    let probe_at = now + change.next_probe_in.unwrap_or_default();
                    self.health.suspect.remove(&destination);
                    let since = self.health.failing.get(&destination).map(|f| f.since);
                    if since.is_none() {
                        self.smallest_room = None;
                    }
                    let failing = Failing {
                        probes,
                        since: since.unwrap_or(now),
                        probe_at,
                    };
                    self.health
                        .failing
                        .insert(Arc::clone(&destination), failing);
                    parking.parked(destination);
                }
            }
        }
        if let Some(stored) = stored {
            for destination in stored.keys() {
                parking.parked(Arc::clone(destination));
            }
            let same = stored.len() == self.health.failing.len()
                && stored.keys().all(|d| self.health.failing.contains_key(d));
            if !same {
                self.smallest_room = None;
            }
            self.health.failing = stored;
            self.failing_known = true;
        }
    }

    /// After a failed round: what was read is read again.
    pub fn forget(&mut self) {
        self.failing_known = false;
        self.smallest_room = None;
    }
}

/// The worker's side duties on a clock: retention, announcing workflows ready with time
/// alone (see `ready`), and freeing the leases of sessions that ended (see
/// `runs::sessions`).
pub struct Timers {
    pub next_housekeeping: Instant,
    /// Announcements are done up to this time; the next look is due then.
    pub ready_up_to: Option<pgrx::datum::TimestampWithTimeZone>,
    pub next_ready_look: Instant,
    /// Whether some workflow name has a push handler, as the last look saw: only then does
    /// a round push ready workflows.
    pub pushing: bool,
    /// Whether the last push passed over a queue another claimer held: the next look
    /// pushes whatever became ready.
    pub push_again: bool,
    /// Transactions prepared after making workflows ready, as last counted (see
    /// `wake::readiness_prepared`), and the ones that may still wait for their COMMIT
    /// PREPARED (`Some(None)`: any of this database's): while there are any, every look
    /// announces every ready name.
    pub prepared_seen: Option<u64>,
    pub prepared: Option<Option<Vec<i64>>>,
    /// Backends with session-bound leases that exited, as last counted, and when to look
    /// at every session-bound lease unprompted.
    pub sessions_seen: Option<u64>,
    pub next_session_sweep: Instant,
}

impl Timers {
    pub fn new() -> Timers {
        let now = Instant::now();
        Timers {
            next_housekeeping: now,
            ready_up_to: None,
            next_ready_look: now,
            pushing: false,
            push_again: false,
            prepared_seen: None,
            prepared: None,
            sessions_seen: None,
            next_session_sweep: now,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const POLL: Duration = Duration::from_secs(10);

    /// When a round must look for every destination with parked messages again: before
    /// any look, after a commit that parked at enqueue, after a failed round, and once the
    /// look is a poll interval old (a prepared transaction's parking counts nothing).
    #[test]
    fn the_parked_destinations_are_looked_for_when_they_may_have_changed() {
        let mut parking = Parking::new();
        assert!(!parking.limited_known(Some(3), POLL), "never looked");

        parking.looked(&[], Vec::new(), Vec::new(), None);
        assert!(
            !parking.limited_known(Some(3), POLL),
            "a round that did not look for them"
        );

        parking.looked(&[], vec!["d".into()], Vec::new(), Some(Some(3)));
        assert!(
            parking.limited_known(Some(3), POLL),
            "looked, nothing since"
        );
        assert!(
            !parking.limited_known(Some(4), POLL),
            "an enqueue that parked committed since"
        );
        assert!(
            !parking.limited_known(Some(3), Duration::ZERO),
            "the look is a poll interval old"
        );

        parking.looked(&[], Vec::new(), Vec::new(), None);
        assert!(
            parking.limited_known(Some(3), POLL),
            "a round without a look keeps the last one"
        );

        parking.forget();
        assert!(
            !parking.limited_known(Some(3), POLL),
            "after a failed round"
        );
    }
}

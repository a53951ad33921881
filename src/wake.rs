//! Wake on commit: a transaction that enqueued sets its database's dispatcher latch when it
//! commits, so delivery starts within milliseconds instead of at the next poll. A rollback
//! wakes nothing. The idea is pg_net's `wake_at_commit`.
//!
//! Each dispatcher publishes its latch in a slot of shared memory. The commit callback
//! finds the slot of `MyDatabaseId` and sets that latch: a few atomic loads, nothing that
//! can fail (a panic in a commit callback would take the backend down).
//!
//! A message due later than the dispatcher's next look at the outbox needs no wake-up:
//! each dispatcher also publishes when it will look again without being woken, and a
//! commit wakes it only for a message due before that. Scheduled messages (`deliver_at`
//! in the future) then cost the dispatcher nothing at commit time; before, every such
//! commit made it run a round, on the cores the committing clients were using.
//! No wake-up is lost: the dispatcher publishes an upper bound (now + poll interval)
//! before it reads the outbox, and only lowers it, to its actual wake time, before it
//! sleeps; a commit that reads either value and does not wake it is due after the
//! dispatcher looks again anyway.

use pgrx::callbacks::{PgXactCallbackEvent, register_xact_callback};
use pgrx::prelude::*;
use pgrx::{PGRXSharedMemory, PgAtomic, pg_shmem_init, pg_sys};
use std::cell::Cell;
use std::sync::atomic::{
    AtomicBool, AtomicI32, AtomicI64, AtomicU32, AtomicU64, AtomicUsize, Ordering,
};
use std::time::Duration;

/// The most databases `workflow.databases` may list.
pub const MAX_DISPATCHERS: usize = 32;
/// How many reported exits of sessions, and prepared transactions, a slot remembers: more
/// between two looks of its dispatcher and it looks at them all.
pub const REMEMBERED: usize = 32;

#[derive(Default)]
#[repr(C)]
pub(crate) struct Slot {
    /// The database the launcher assigned the slot to (its oid; 0: never assigned).
    database: AtomicU32,
    /// The pid of the dispatcher running in the slot; 0 when none runs. Set as it starts,
    /// cleared as it exits (a crash resets all shared memory).
    pid: AtomicI32,
    /// Address of the dispatcher's `PGPROC.procLatch`, in shared memory; 0 when vacant.
    latch: AtomicUsize,
    /// When the dispatcher will look at the outbox again unwoken (a `TimestampTz`).
    looks_again_at: AtomicI64,
    /// When a `DROP DATABASE` of the slot's database asked its dispatcher to leave (a
    /// `TimestampTz`; 0: never). See `database`.
    pub(crate) leave_requested_at: AtomicI64,
    /// Whether the slot's dispatcher started connecting and has not connected since.
    pub(crate) connecting: AtomicBool,
    /// Connection attempts that failed in a row.
    pub(crate) connect_failures: AtomicU32,
    /// Committed transactions that left an unpark flag (see `parking`), counted after each
    /// commit: the dispatcher runs its unpark when this grows, not every round.
    flags_raised: AtomicU64,
    /// Committed transactions that enqueued messages parked at their destination's limit
    /// (see `api::crowding`): the dispatcher looks for such destinations when this grows.
    parked_at_enqueue: AtomicU64,
    /// The earliest timer (a sleep's end, a wait's deadline) committed since the dispatcher
    /// last took it, as a `TimestampTz`; 0: none. The dispatcher announces the workflows a
    /// timer makes ready (see `ready`), and looks at it then.
    earliest_timer: AtomicI64,
    /// Backends that held session-bound leases and exited, counted as they exit, and the
    /// pids of the last `REMEMBERED` (the n-th in `ended_pids[n % REMEMBERED]`, written
    /// before the count): the dispatcher frees those sessions' leases (see `runs::sessions`).
    sessions_ended: AtomicU64,
    ended_cursor: AtomicU64,
    ended_pids: [AtomicI32; REMEMBERED],
    /// Transactions prepared (two-phase) after making workflows ready, counted once
    /// prepared, with their transaction ids like the pids above: until they are committed
    /// or rolled back, the dispatcher announces readiness itself (see `runs::readiness`).
    readiness_prepared: AtomicU64,
    prepared_cursor: AtomicU64,
    prepared_xids: [AtomicU32; REMEMBERED],
}

#[repr(C)]
pub struct Slots {
    slots: [Slot; MAX_DISPATCHERS],
    /// Address of the launcher's `PGPROC.procLatch`; 0 before it starts.
    launcher_latch: AtomicUsize,
}

impl Default for Slots {
    fn default() -> Self {
        Slots {
            slots: std::array::from_fn(|_| Slot::default()),
            launcher_latch: AtomicUsize::new(0),
        }
    }
}

// SAFETY: only atomics, valid at any address and in any process.
unsafe impl PGRXSharedMemory for Slots {}

// SAFETY: the name is ours alone.
static SLOTS: PgAtomic<Slots> = unsafe { PgAtomic::new(c"workflow_dispatcher_slots") };

/// Set in `_PG_init` when the library is preloaded, before the postmaster forks anyone, so
/// every backend knows whether `SLOTS` exists. Without preload there is no dispatcher and
/// nothing to wake.
static SHARED_MEMORY: AtomicBool = AtomicBool::new(false);

thread_local! {
    /// Whether this transaction already registered its commit wake.
    static ARMED: Cell<bool> = const { Cell::new(false) };
    /// The earliest due time this transaction enqueued (a `TimestampTz`).
    static EARLIEST_DUE: Cell<i64> = const { Cell::new(i64::MAX) };
    /// Whether this transaction leaves an unpark flag.
    static RAISES_FLAG: Cell<bool> = const { Cell::new(false) };
    /// Whether this transaction enqueued a message parked at its destination's limit.
    static PARKS: Cell<bool> = const { Cell::new(false) };
    /// The earliest timer this transaction set (a `TimestampTz`).
    static EARLIEST_TIMER: Cell<i64> = const { Cell::new(i64::MAX) };
}

/// Slot `slot` in shared memory, when the library was preloaded.
pub(crate) fn slot(slot: usize) -> Option<&'static Slot> {
    if !SHARED_MEMORY.load(Ordering::Acquire) || slot >= MAX_DISPATCHERS {
        return None;
    }
    Some(&SLOTS.get().slots[slot])
}

/// The slot whose dispatcher serves database `oid`, with its latch.
pub(crate) fn slot_serving(oid: u32) -> Option<(&'static Slot, usize)> {
    if !SHARED_MEMORY.load(Ordering::Acquire) {
        return None;
    }
    SLOTS
        .get()
        .slots
        .iter()
        .find(|slot| slot.database.load(Ordering::Acquire) == oid)
        .map(|slot| (slot, slot.latch.load(Ordering::Acquire)))
}

/// Called by the launcher before it starts a dispatcher for database `oid` in slot `slot`:
/// a slot taken over from another database forgets that one's connection attempts and
/// drop request. (The dispatcher connects to the database its slot names.)
pub(crate) fn assign(slot: usize, oid: u32) {
    let Some(slot) = self::slot(slot) else {
        return;
    };
    if slot.database.swap(oid, Ordering::AcqRel) != oid {
        slot.connecting.store(false, Ordering::Release);
        slot.connect_failures.store(0, Ordering::Release);
        slot.leave_requested_at.store(0, Ordering::Release);
    }
}

/// The pid of the dispatcher running in slot `slot`, and the database it was assigned.
pub(crate) fn occupant(slot: usize) -> Option<(i32, u32)> {
    let slot = self::slot(slot)?;
    let pid = slot.pid.load(Ordering::Acquire);
    (pid != 0).then(|| (pid, slot.database.load(Ordering::Acquire)))
}

/// Gives slot `slot` back to database `oid` after a dispatcher could not be started in it.
pub(crate) fn unassign(slot: usize, oid: u32) {
    if let Some(slot) = self::slot(slot) {
        slot.database.store(oid, Ordering::Release);
    }
}

/// The database slot `slot` was last assigned to.
pub(crate) fn assigned(slot: usize) -> Option<u32> {
    self::slot(slot).map(|slot| slot.database.load(Ordering::Acquire))
}

/// Called by a dispatcher as it starts: the slot is its own until the process exits. False
/// if another dispatcher holds it (one a launcher started before it was itself restarted):
/// this one must leave.
pub(crate) fn occupy(slot: usize) -> bool {
    let Some(shared) = self::slot(slot) else {
        return true;
    };
    // SAFETY: the backend's own pid; registering an exit callback on the main thread.
    unsafe {
        let pid = pg_sys::MyProcPid;
        if shared
            .pid
            .compare_exchange(0, pid, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return false;
        }
        pg_sys::on_shmem_exit(Some(vacate), pg_sys::Datum::from(slot));
    }
    true
}

/// The dispatcher's exit: nothing wakes its latch any more, and the launcher, woken, may
/// start another. Atomics and a latch only.
unsafe extern "C-unwind" fn vacate(_code: std::ffi::c_int, slot: pg_sys::Datum) {
    if let Some(slot) = self::slot(slot.value()) {
        slot.latch.store(0, Ordering::Release);
        // SAFETY: the backend's own pid.
        let pid = unsafe { pg_sys::MyProcPid };
        let _ = slot
            .pid
            .compare_exchange(pid, 0, Ordering::AcqRel, Ordering::Acquire);
        let launcher = SLOTS.get().launcher_latch.load(Ordering::Acquire);
        if launcher != 0 {
            // SAFETY: the address is a PGPROC latch in shared memory.
            unsafe { pg_sys::SetLatch(launcher as *mut pg_sys::Latch) };
        }
    }
}

/// Called by the launcher once started: a dispatcher that exits wakes it.
pub(crate) fn publish_launcher_latch() {
    if !SHARED_MEMORY.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: MyProc is set for a background worker with shared memory access.
    let latch = unsafe { &raw mut (*pg_sys::MyProc).procLatch };
    SLOTS
        .get()
        .launcher_latch
        .store(latch as usize, Ordering::Release);
}

/// Requests the slots; only from `_PG_init` during `shared_preload_libraries`.
pub fn init_shared_memory() {
    pg_shmem_init!(SLOTS);
    SHARED_MEMORY.store(true, Ordering::Release);
}

/// Called by the dispatcher serving `MyDatabaseId`, once connected.
pub fn publish_latch(slot: usize) {
    if !SHARED_MEMORY.load(Ordering::Acquire) || slot >= MAX_DISPATCHERS {
        return;
    }
    let slot = &SLOTS.get().slots[slot];
    // SAFETY: MyProc and MyDatabaseId are set once the worker is connected.
    unsafe {
        let latch = &raw mut (*pg_sys::MyProc).procLatch;
        slot.looks_again_at.store(i64::MAX, Ordering::SeqCst);
        slot.database
            .store(pg_sys::MyDatabaseId.to_u32(), Ordering::Release);
        slot.latch.store(latch as usize, Ordering::Release);
    }
}

/// Called by the dispatcher: it will look at the outbox again within `within`, woken or
/// not. Before a round, with the longest sleep it may take; before sleeping, with the
/// sleep it takes.
pub fn looks_again_within(slot: usize, within: Duration) {
    if !SHARED_MEMORY.load(Ordering::Acquire) || slot >= MAX_DISPATCHERS {
        return;
    }
    // SAFETY: reading the clock, on the dispatcher's main thread.
    let now = unsafe { pg_sys::GetCurrentTimestamp() };
    let within = i64::try_from(within.as_micros()).unwrap_or(i64::MAX);
    SLOTS.get().slots[slot]
        .looks_again_at
        .store(now.saturating_add(within), Ordering::SeqCst);
}

/// Like [`on_commit`], for a transaction that leaves an unpark flag: the commit also
/// counts in its dispatcher's slot, so that the next round runs the unpark.
pub fn flag_on_commit() {
    RAISES_FLAG.with(|raises| raises.set(true));
    on_commit();
}

/// Like [`on_commit`], for a transaction that enqueued a message parked at its
/// destination's limit: the commit also counts in its dispatcher's slot, so that the next
/// round looks for the destinations with parked messages (it may have stopped tracking
/// this one since the enqueue's snapshot was taken).
pub fn parked_on_commit() {
    PARKS.with(|parks| parks.set(true));
    on_commit();
}

/// Like [`on_commit_for`], for a transaction that sets a workflow timer ending at `at`: the
/// commit also leaves it in its dispatcher's slot, so that the dispatcher announces the
/// workflow when it is ready, not up to a poll interval later.
pub fn timer_on_commit(at: pg_sys::TimestampTz) {
    EARLIEST_TIMER.with(|earliest| earliest.set(earliest.get().min(at)));
    on_commit_for(at);
}

/// The earliest timer committed in slot `slot`'s database since the last call, if any.
pub(crate) fn take_timer(slot: usize) -> Option<pg_sys::TimestampTz> {
    let at = self::slot(slot)?.earliest_timer.swap(0, Ordering::AcqRel);
    (at != 0).then_some(at)
}

/// How many committed transactions left an unpark flag in slot `slot`'s database so far.
/// Read before the statement that acts on the flags: every commit counted by then is
/// visible to it.
pub(crate) fn flags_raised(slot: usize) -> Option<u64> {
    self::slot(slot).map(|slot| slot.flags_raised.load(Ordering::Acquire))
}

/// How many committed transactions enqueued parked messages in slot `slot`'s database so
/// far. Read before the statement that looks for them: every commit counted by then is
/// visible to it.
pub(crate) fn parked_at_enqueue(slot: usize) -> Option<u64> {
    self::slot(slot).map(|slot| slot.parked_at_enqueue.load(Ordering::Acquire))
}

/// What a slot reported since the dispatcher last looked: the values counted since
/// `seen` (the count it saw then), and the count now. `None` for the values when more
/// were counted than the slot remembers, or when it looks for the first time.
pub(crate) struct Reported<T> {
    pub values: Option<Vec<T>>,
    pub count: u64,
}

/// The sessions with bound leases that ended in slot `slot`'s database since `seen`.
pub(crate) fn ended_since(slot: usize, seen: Option<u64>) -> Option<Reported<i32>> {
    let slot = self::slot(slot)?;
    Some(reported(
        &slot.sessions_ended,
        &slot.ended_pids,
        seen,
        |pid| pid.load(Ordering::Acquire),
    ))
}

/// The transactions prepared after making workflows ready in slot `slot`'s database since
/// `seen`.
pub(crate) fn prepared_since(slot: usize, seen: Option<u64>) -> Option<Reported<u32>> {
    let slot = self::slot(slot)?;
    Some(reported(
        &slot.readiness_prepared,
        &slot.prepared_xids,
        seen,
        |xid| xid.load(Ordering::Acquire),
    ))
}

fn reported<A, T>(
    count: &AtomicU64,
    ring: &[A; REMEMBERED],
    seen: Option<u64>,
    read: impl Fn(&A) -> T,
) -> Reported<T> {
    let now = count.load(Ordering::Acquire);
    let values = seen
        .filter(|seen| now.saturating_sub(*seen) <= REMEMBERED as u64)
        .map(|seen| {
            (seen..now)
                .map(|n| read(&ring[(n % REMEMBERED as u64) as usize]))
                .collect()
        });
    Reported { values, count: now }
}

/// From a backend's exit callback, after it left the proc array: it held a session-bound
/// lease, so its database's dispatcher should free what it held. Only atomics and a latch.
pub fn session_ended(pid: i32) {
    serving_slots(|slot| {
        let n = slot.ended_cursor.fetch_add(1, Ordering::AcqRel);
        slot.ended_pids[(n % REMEMBERED as u64) as usize].store(pid, Ordering::Release);
        slot.sessions_ended.fetch_add(1, Ordering::AcqRel);
        true
    });
}

/// Once a transaction that made workflows ready is prepared (two-phase): it could not
/// notify (Postgres forbids NOTIFY in a prepared transaction), so its dispatcher announces
/// readiness until the transaction `xid` is committed or rolled back.
pub fn readiness_prepared(xid: u32) {
    serving_slots(|slot| {
        let n = slot.prepared_cursor.fetch_add(1, Ordering::AcqRel);
        slot.prepared_xids[(n % REMEMBERED as u64) as usize].store(xid, Ordering::Release);
        slot.readiness_prepared.fetch_add(1, Ordering::AcqRel);
        true
    });
}

/// Runs `note` on the slots serving this backend's database, and sets the latch of each
/// for which it returns true. Safe to call from any callback: atomics and `SetLatch` only.
fn serving_slots(note: impl Fn(&Slot) -> bool) {
    if !SHARED_MEMORY.load(Ordering::Acquire) {
        return;
    }
    // SAFETY: a backend connected to a database reads its own MyDatabaseId.
    let database = unsafe { pg_sys::MyDatabaseId.to_u32() };
    for slot in &SLOTS.get().slots {
        if slot.database.load(Ordering::Acquire) != database {
            continue;
        }
        let latch = slot.latch.load(Ordering::Acquire);
        if note(slot) && latch != 0 {
            // SAFETY: the address is a PGPROC latch in shared memory (see `wake_dispatcher`).
            unsafe { pg_sys::SetLatch(latch as *mut pg_sys::Latch) };
        }
    }
}

/// Arms a wake-up of this database's dispatcher for when the current transaction commits:
/// something is due now.
pub fn on_commit() {
    // SAFETY: reading the clock.
    on_commit_for(unsafe { pg_sys::GetCurrentTimestamp() });
}

/// Arms a wake-up for a message due at `due` (a `TimestampTz`), taken only if the
/// dispatcher would not look again by then. Cheap to call for every enqueue: only the
/// first call in a transaction registers callbacks.
pub fn on_commit_for(due: pg_sys::TimestampTz) {
    if !SHARED_MEMORY.load(Ordering::Acquire) {
        return;
    }
    EARLIEST_DUE.with(|earliest| earliest.set(earliest.get().min(due)));
    if ARMED.with(Cell::get) {
        return;
    }
    ARMED.with(|armed| armed.set(true));
    register_xact_callback(PgXactCallbackEvent::Commit, || {
        let due = EARLIEST_DUE.with(Cell::get);
        let flagged = RAISES_FLAG.with(Cell::get);
        let parked = PARKS.with(Cell::get);
        let timer = EARLIEST_TIMER.with(Cell::get);
        disarm();
        wake_dispatcher(due, flagged, parked, timer);
    });
    register_xact_callback(PgXactCallbackEvent::Abort, disarm);
    // A prepared transaction commits later, elsewhere; the poll delivers it (the messages
    // it parked too: the dispatcher looks for parked ones each poll interval).
    register_xact_callback(PgXactCallbackEvent::Prepare, disarm);
}

fn disarm() {
    ARMED.with(|armed| armed.set(false));
    EARLIEST_DUE.with(|earliest| earliest.set(i64::MAX));
    RAISES_FLAG.with(|raises| raises.set(false));
    PARKS.with(|parks| parks.set(false));
    EARLIEST_TIMER.with(|earliest| earliest.set(i64::MAX));
}

fn wake_dispatcher(
    due: pg_sys::TimestampTz,
    flagged: bool,
    parked: bool,
    timer: pg_sys::TimestampTz,
) {
    serving_slots(|slot| {
        if flagged {
            slot.flags_raised.fetch_add(1, Ordering::AcqRel);
        }
        if parked {
            slot.parked_at_enqueue.fetch_add(1, Ordering::AcqRel);
        }
        if timer != i64::MAX {
            // The earlier of the one left there and ours (a timer is never at 0, 2000-01-01).
            let _ = slot
                .earliest_timer
                .fetch_update(Ordering::AcqRel, Ordering::Acquire, |left| {
                    Some(if left == 0 { timer } else { left.min(timer) })
                });
        }
        // The latch is a PGPROC latch in shared memory, valid for the life of the cluster;
        // if its dispatcher died and the PGPROC was reused, the worst case is one spurious
        // wake-up of another process.
        due < slot.looks_again_at.load(Ordering::SeqCst)
    });
}

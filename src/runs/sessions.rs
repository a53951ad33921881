//! Leases bound to the session that took them (G11): a workflow started or claimed without
//! an explicit owner is held by the backend that did it, and when that backend exits — its
//! client crashed, was killed, lost its connection — the lease is free at once, not when it
//! runs out.
//!
//! A session is named by its backend's pid and start time, so that a later backend that
//! reuses the pid is a different session. A backend that binds a lease registers an exit
//! callback that leaves its pid in its database's wake slot and wakes the dispatcher; the
//! dispatcher then frees the leases of those pids whose session is no longer in
//! `pg_stat_activity`, and announces them. It also looks at every session-bound lease at
//! its start and every minute, for exits no callback reported (a backend killed with the
//! whole server, one that exited while no dispatcher ran, more exits at once than the slot
//! holds). Without a dispatcher, a session-bound lease runs out like any other.

use crate::db::{self, Statement};
use pgrx::pg_sys::{self, INT4ARRAYOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::cell::Cell;

thread_local! {
    /// Whether this backend registered its exit callback.
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// This backend's start, which with its pid names the session; registers the exit
/// callback the first time a lease is bound to it. For the statements that take a lease
/// without an owner (as their session-start argument); `None` (bind nothing: the lease runs
/// out as an explicit owner's would) if the start cannot be read.
pub fn bind() -> Option<pgrx::datum::TimestampWithTimeZone> {
    // SAFETY: set once when the backend starts.
    let started = unsafe { pg_sys::MyStartTimestamp };
    let started = pgrx::datum::TimestampWithTimeZone::try_from(started).ok()?;
    if !HOOKED.with(Cell::get) {
        // SAFETY: registering a process-exit callback on the main thread; Postgres keeps
        // up to 20, and this one is registered once per backend.
        unsafe { pg_sys::on_proc_exit(Some(session_ended), pg_sys::Datum::from(0)) };
        HOOKED.with(|hooked| hooked.set(true));
    }
    Some(started)
}

/// Runs after the backend left the proc array and `pg_stat_activity`, so the dispatcher it
/// wakes no longer sees the session. It touches only the wake slots in the main shared
/// memory segment, which a backend keeps mapped until it exits (it never detaches it), and
/// sets a latch, which is a signal: atomics and a `kill`, nothing that can fail or panic.
unsafe extern "C-unwind" fn session_ended(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    // SAFETY: the backend's own pid, set at its start.
    crate::wake::session_ended(unsafe { pg_sys::MyProcPid });
}

/// Frees the leases whose session is gone, of the sessions with pids `$1` (NULL: of every
/// session with a bound lease): due at once (the owner's name stays, so the claim that
/// takes the run counts a recovery, as for an expired lease), and announced.
static FREE_ORPHANED: Statement = Statement {
    sql: include_str!("sessions/free_orphaned.sql"),
    args: &[INT4ARRAYOID],
};

/// Frees the leases of sessions that ended: of the backends `pids` (their exits reported),
/// or of every ended session (`None`). Returns how many. For the dispatcher.
pub fn free_orphaned(client: &mut SpiClient<'_>, pids: Option<Vec<i32>>) -> SpiResult<usize> {
    db::execute(client, &FREE_ORPHANED, &[pids.into()], |rows| {
        Ok(rows.first().get::<i64>(1)?.unwrap_or(0) as usize)
    })
}

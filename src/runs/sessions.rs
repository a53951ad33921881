//! Leases bound to the session that took them (G11): a workflow started or claimed without
//! an explicit owner is held by the backend that did it, and when that backend exits — its
//! client crashed, was killed, lost its connection — the lease is free at once, not when it
//! runs out.
//!
//! A session is named by its backend's pid and start time, so that a later backend that
//! reuses the pid is a different session. A backend that binds a lease registers an exit
//! callback that wakes its database's dispatcher; the dispatcher then frees the leases of
//! every session that is no longer in `pg_stat_activity`, and announces them. It also looks
//! at its start and every poll interval, for sessions whose exit no callback reported (a
//! backend killed with the whole server, or one that exited while no dispatcher ran).
//! Without a dispatcher, a session-bound lease runs out like any other.

use crate::db::{self, Statement};
use pgrx::pg_sys;
use pgrx::spi::{SpiClient, SpiResult};
use std::cell::Cell;

thread_local! {
    /// Whether this backend registered its exit callback.
    static HOOKED: Cell<bool> = const { Cell::new(false) };
}

/// This backend's start, which with its pid names the session; registers the exit
/// callback the first time a lease is bound to it. For the statements that take a lease
/// without an owner (as their session-start argument).
pub fn bind() -> pgrx::datum::TimestampWithTimeZone {
    if !HOOKED.with(Cell::get) {
        // SAFETY: registering a process-exit callback on the main thread; Postgres keeps
        // up to 20, and this one is registered once per backend.
        unsafe { pg_sys::on_proc_exit(Some(session_ended), pg_sys::Datum::from(0)) };
        HOOKED.with(|hooked| hooked.set(true));
    }
    // SAFETY: set once when the backend starts.
    let started = unsafe { pg_sys::MyStartTimestamp };
    pgrx::datum::TimestampWithTimeZone::try_from(started)
        .unwrap_or_else(|_| pgrx::datum::TimestampWithTimeZone::negative_infinity())
}

/// Runs after the backend left the proc array and `pg_stat_activity`, so the dispatcher it
/// wakes no longer sees the session. Only atomics and a latch: nothing here can fail.
unsafe extern "C-unwind" fn session_ended(_code: std::ffi::c_int, _arg: pg_sys::Datum) {
    crate::wake::session_ended();
}

/// Frees the leases whose session is gone: due at once (the owner's name stays, so the
/// claim that takes the run counts a recovery, as for an expired lease), and announced.
/// Finds them through `runs_sessions`, so its work grows with the session-bound leases, not
/// with the runs; a run someone holds locked is left for the next look. Returns how many
/// leases it freed.
static FREE_ORPHANED: Statement = Statement {
    sql: "WITH alive AS MATERIALIZED (
              SELECT pid, backend_start FROM pg_catalog.pg_stat_get_activity(NULL::integer)),
          orphaned AS (
              SELECT r.id FROM workflow.runs r
               WHERE r.session_pid IS NOT NULL
                 AND NOT EXISTS (SELECT FROM alive a
                                  WHERE a.pid = r.session_pid AND a.backend_start = r.session_started)
                 FOR NO KEY UPDATE SKIP LOCKED),
          freed AS (
              UPDATE workflow.runs r
                 SET lease_expires_at = CASE WHEN r.status = 'running' AND r.owner IS NOT NULL
                                             THEN least(r.lease_expires_at, clock_timestamp())
                                             ELSE r.lease_expires_at END,
                     session_pid = NULL, session_started = NULL,
                     updated_at = statement_timestamp()
               WHERE r.id = ANY (ARRAY(SELECT id FROM orphaned)) AND r.session_pid IS NOT NULL
              RETURNING r.name, r.status = 'running' AND r.owner IS NOT NULL AS ready),
          sent AS (
              SELECT pg_notify('workflow_ready', name) FROM (SELECT DISTINCT name FROM freed WHERE ready) n)
          SELECT (SELECT count(*) FROM freed WHERE ready), (SELECT count(*) FROM sent)",
    args: &[],
};

/// Frees the leases of sessions that ended; returns how many. For the dispatcher.
pub fn free_orphaned(client: &mut SpiClient<'_>) -> SpiResult<usize> {
    db::execute(client, &FREE_ORPHANED, &[], |rows| {
        Ok(rows.first().get::<i64>(1)?.unwrap_or(0) as usize)
    })
}

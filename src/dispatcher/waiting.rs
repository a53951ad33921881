//! How the main thread sleeps: on its latch (a commit that enqueued, a signal), the HTTP
//! side's wake-up socket, and postmaster death, with a timeout.
//!
//! One wait-event set serves the worker's whole life. `WaitLatchOrSocket` builds and frees
//! one per call: an `epoll_create1`, two `epoll_ctl` and a `close` on every sleep, which
//! under a backlog is every round.

use pgrx::pg_sys;
use std::os::fd::RawFd;
use std::time::Duration;

const EVENTS: usize = 3;

pub struct Waiter {
    set: *mut pg_sys::WaitEventSet,
}

impl Waiter {
    /// Call on the main thread. `socket` must stay open while the waiter is used.
    pub fn new(socket: RawFd) -> Waiter {
        let none = std::ptr::null_mut();
        // SAFETY: on the main thread, after the latch is set up; the set lives in
        // TopMemoryContext for as long as the process.
        unsafe {
            let set = pg_sys::CreateWaitEventSet(pg_sys::TopMemoryContext, EVENTS as i32);
            pg_sys::AddWaitEventToSet(
                set,
                pg_sys::WL_LATCH_SET,
                pg_sys::PGINVALID_SOCKET,
                pg_sys::MyLatch,
                none,
            );
            pg_sys::AddWaitEventToSet(set, pg_sys::WL_SOCKET_READABLE, socket, none.cast(), none);
            pg_sys::AddWaitEventToSet(
                set,
                pg_sys::WL_EXIT_ON_PM_DEATH,
                pg_sys::PGINVALID_SOCKET,
                none.cast(),
                none,
            );
            Waiter { set }
        }
    }

    /// Sleeps until something happens or `timeout` passes; returns what happened as `WL_*`
    /// bits (`WL_TIMEOUT` alone when nothing did). Exits if the postmaster dies.
    pub fn wait(&self, timeout: Duration) -> i32 {
        let mut happened = [pg_sys::WaitEvent {
            pos: 0,
            events: 0,
            fd: pg_sys::PGINVALID_SOCKET,
            user_data: std::ptr::null_mut(),
        }; EVENTS];
        // Rounded up: a timeout that rounds down to 0 ms would make the wait a busy loop.
        let millis = timeout.as_micros().div_ceil(1000).min(i32::MAX as u128);
        // SAFETY: the set and MyLatch belong to this process, used on its main thread.
        unsafe {
            let count = pg_sys::WaitEventSetWait(
                self.set,
                millis as _,
                happened.as_mut_ptr(),
                EVENTS as i32,
                pg_sys::PG_WAIT_EXTENSION,
            );
            pg_sys::ResetLatch(pg_sys::MyLatch);
            if count <= 0 {
                return pg_sys::WL_TIMEOUT as i32;
            }
            happened[..count as usize]
                .iter()
                .fold(0, |bits, event| bits | event.events as i32)
        }
    }
}

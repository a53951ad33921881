//! Planning the round's two largest statements again while the dispatcher has nothing to
//! send.
//!
//! The round's statements are kept as generic plans, which Postgres makes again at their
//! next use once something invalidated them: an ANALYZE (the dispatcher's own, or
//! autovacuum's), a VACUUM, DDL. The claim and the let-go of messages parked at their
//! destination's limit cost more to plan than to run, and their next use is typically the
//! round right after a burst commits: it would send the burst's first requests that much
//! later, and what another tenant enqueues just after the burst would then wait for those
//! requests to come back (bench/NOTES.md, thirteenth session). So an invalidation of any
//! relation marks the plans stale, and a round that sends nothing runs the two with nothing
//! to do, which makes their plans again there. (Invalidations of other catalogs, such as a
//! function's, also reset kept plans and are not watched: DDL on the extension's functions
//! is rare.)

use super::claim::{self, Settings};
use super::parking;
use pgrx::pg_sys;
use pgrx::spi::{SpiClient, SpiResult};
use std::cell::Cell;
use std::collections::HashMap;

thread_local! {
    /// Whether a relation was invalidated since the plans were last made. True at first:
    /// nothing is planned yet.
    static STALE: Cell<bool> = const { Cell::new(true) };
}

/// Starts watching for invalidations. Call once, on the main thread, after connecting.
pub fn watch() {
    // SAFETY: registers a callback for the life of the backend, on the main thread.
    unsafe { pg_sys::CacheRegisterRelcacheCallback(Some(invalidated), pg_sys::Datum::from(0)) };
}

/// A round that failed may have lost its planning with it: plan again at the next chance.
pub fn after_a_failed_round() {
    STALE.with(|stale| stale.set(true));
}

/// Called by Postgres, on the main thread, for each relcache invalidation it processes.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn invalidated(_arg: pg_sys::Datum, _relid: pg_sys::Oid) {
    STALE.with(|stale| stale.set(true));
}

/// Plans the claim and the let-go again if a relation was invalidated since the last time
/// this ran; call inside a round that sends nothing (both run with nothing to do).
pub fn if_stale(client: &mut SpiClient<'_>, settings: &Settings) -> SpiResult<()> {
    if !STALE.with(|stale| stale.replace(false)) {
        return Ok(());
    }
    let none = HashMap::new();
    claim::claim(client, 0, settings, &none, &HashMap::new(), true)?;
    parking::unpark_limited(
        client,
        Vec::new(),
        settings.concurrency_per_destination,
        &none,
        &HashMap::new(),
    )?;
    Ok(())
}

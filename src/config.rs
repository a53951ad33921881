//! Every `workflow.*` setting: its default, its range, and a typed accessor.
//!
//! All of these are `USERSET` where a session may sensibly choose its own value (a demo or
//! a test shortening a lease), and every one takes effect on the next call that reads it.

use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::time::Duration;

const SECONDS_PER_DAY: i32 = 24 * 60 * 60;

static LEASE_DURATION: GucSetting<i32> = GucSetting::<i32>::new(60);
static MAX_RECOVERY_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);
static RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * SECONDS_PER_DAY);
static MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);

/// Registers the settings; called once from `_PG_init`.
pub fn register() {
    GucRegistry::define_int_guc(
        c"workflow.lease_duration",
        c"How long a workflow stays leased to its starter or claimer without a checkpoint.",
        c"A running workflow whose lease has expired can be claimed by wf_claim. Every \
          wf_checkpoint renews the lease. Range 1s to 1 day.",
        &LEASE_DURATION,
        1,
        SECONDS_PER_DAY,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"workflow.max_recovery_attempts",
        c"How many times wf_claim may recover one workflow before it is failed.",
        c"Each claim of an expired workflow counts one recovery attempt; the claim past this \
          number marks the workflow failed instead of handing it out again.",
        &MAX_RECOVERY_ATTEMPTS,
        0,
        1_000_000,
        GucContext::Userset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"workflow.retention",
        c"How long finished workflows are kept before they are removed.",
        c"Completed, failed and cancelled workflows older than this are deleted in small \
          batches. 0 removes them at the first opportunity.",
        &RETENTION,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"workflow.max_payload_bytes",
        c"The largest jsonb document accepted as input, output or payload.",
        c"Measured as the document's stored size before compression. Range 1kB to 256MB.",
        &MAX_PAYLOAD_BYTES,
        1024,
        256 * 1024 * 1024,
        GucContext::Userset,
        GucFlags::UNIT_BYTE,
    );
    // SAFETY: called from _PG_init on the main thread, after our variables are defined.
    unsafe { pgrx::pg_sys::MarkGUCPrefixReserved(c"workflow".as_ptr()) };
}

pub fn lease_duration() -> Duration {
    Duration::from_secs(LEASE_DURATION.get().max(1) as u64)
}

pub fn max_recovery_attempts() -> i32 {
    MAX_RECOVERY_ATTEMPTS.get()
}

pub fn retention() -> Duration {
    Duration::from_secs(RETENTION.get().max(0) as u64)
}

pub fn max_payload_bytes() -> usize {
    MAX_PAYLOAD_BYTES.get().max(0) as usize
}

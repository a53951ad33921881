//! Every `workflow.*` setting: its default, its range, and a typed accessor.
//!
//! Settings a session may sensibly choose for itself (its default lease) are `USERSET` and
//! take effect on the next call. A setting that bounds the dispatcher's memory (the payload
//! limit) or decides the fate of other applications' workflows (the recovery cap, applied
//! by whichever session claims) is `SUSET`: an application must not be able to change it. The dispatcher's settings are `SIGHUP`: they
//! take effect on reload (`pg_reload_conf()`), `workflow.databases` included (the launcher
//! starts and stops dispatchers to match).

use crate::delivery::retry;
use pgrx::{GucContext, GucFlags, GucRegistry, GucSetting};
use std::ffi::CString;
use std::time::Duration;

const SECONDS_PER_DAY: i32 = 24 * 60 * 60;

static LEASE_DURATION: GucSetting<i32> = GucSetting::<i32>::new(60);
static MAX_RECOVERY_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(10);
static RETENTION: GucSetting<i32> = GucSetting::<i32>::new(7 * SECONDS_PER_DAY);
static MAX_PAYLOAD_BYTES: GucSetting<i32> = GucSetting::<i32>::new(1024 * 1024);
static DATABASES: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"postgres"));
static MAX_CONCURRENCY: GucSetting<i32> = GucSetting::<i32>::new(32);
static BATCH_SIZE: GucSetting<i32> = GucSetting::<i32>::new(100);
static POLL_INTERVAL_MS: GucSetting<i32> = GucSetting::<i32>::new(5_000);
static REQUEST_TIMEOUT_MS: GucSetting<i32> = GucSetting::<i32>::new(30_000);
static MAX_ATTEMPTS: GucSetting<i32> = GucSetting::<i32>::new(8);
static MAX_CONCURRENCY_PER_DESTINATION: GucSetting<i32> = GucSetting::<i32>::new(16);
static RETRY_SCHEDULE: GucSetting<Option<CString>> =
    GucSetting::<Option<CString>>::new(Some(c"5s, 5min, 30min, 2h, 5h, 10h, 10h"));
static ENDPOINT_DISABLE_AFTER: GucSetting<i32> = GucSetting::<i32>::new(5 * SECONDS_PER_DAY);
static ALLOW_PRIVATE_NETWORKS: GucSetting<bool> = GucSetting::<bool>::new(false);

/// Registers the settings; called once from `_PG_init`. `preloading`: whether the library
/// loads through shared_preload_libraries, the only time a restart-only setting can be made.
pub fn register(preloading: bool) {
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
        c"How many times in a row wf_claim may recover one workflow before it is failed.",
        c"A claim that takes over an owner's expired lease counts one recovery attempt (a \
          claim after a sleep does not, and every new checkpoint restarts the count); the \
          claim past this number marks the workflow failed instead of handing it out again. \
          Superuser-only: the claimer's session applies it to every application's workflows.",
        &MAX_RECOVERY_ATTEMPTS,
        0,
        1_000_000,
        GucContext::Suset,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"workflow.retention",
        c"How long finished workflows and messages are kept before they are removed.",
        c"Completed, failed and cancelled workflows, and delivered, dead and cancelled \
          messages, older than this are deleted in small batches. 0 removes them at the first \
          opportunity: a dead message too, before anyone can retry it.",
        &RETENTION,
        0,
        i32::MAX,
        GucContext::Userset,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"workflow.max_payload_bytes",
        c"The largest jsonb document accepted as input, output or payload.",
        c"Measured as the document's stored size before compression. Range 1kB to 256MB. \
          Superuser-only: it bounds what the dispatcher holds in memory.",
        &MAX_PAYLOAD_BYTES,
        1024,
        256 * 1024 * 1024,
        GucContext::Suset,
        GucFlags::UNIT_BYTE,
    );
    if preloading {
        GucRegistry::define_string_guc(
            c"workflow.databases",
            c"Comma-separated databases that each get a webhook dispatcher.",
            c"One background worker per listed database delivers its outbox; takes effect on reload.",
            &DATABASES,
            GucContext::Sighup,
            GucFlags::default(),
        );
    }
    GucRegistry::define_int_guc(
        c"workflow.max_concurrency",
        c"Most HTTP requests a dispatcher has in flight at once.",
        c"Range 1 to 1000.",
        &MAX_CONCURRENCY,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"workflow.batch_size",
        c"Most messages a dispatcher claims in one transaction.",
        c"Range 1 to 10000.",
        &BATCH_SIZE,
        1,
        10_000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_int_guc(
        c"workflow.poll_interval",
        c"How often an idle dispatcher looks for due messages without being woken.",
        c"Commits that enqueue wake the dispatcher at once; this is the fallback for \
          retries and delayed messages. Range 10ms to 1h.",
        &POLL_INTERVAL_MS,
        10,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"workflow.request_timeout",
        c"How long one webhook request may take, response body included.",
        c"A named endpoint's timeout overrides it. Range 100ms to 1h.",
        &REQUEST_TIMEOUT_MS,
        100,
        3_600_000,
        GucContext::Sighup,
        GucFlags::UNIT_MS,
    );
    GucRegistry::define_int_guc(
        c"workflow.max_concurrency_per_destination",
        c"Most HTTP requests in flight to one destination at once.",
        c"A destination is a named endpoint, or the origin (scheme, host and port) of URL \
          targets. An endpoint's max_concurrency overrides it. Capped at half of \
          workflow.max_concurrency, whatever that is, so that a destination that hangs \
          leaves slots to the others. Range 1 to 1000.",
        &MAX_CONCURRENCY_PER_DESTINATION,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    // SAFETY: the check hook below only parses the new value; it is guarded against panics.
    unsafe {
        GucRegistry::define_string_guc_with_hooks(
            c"workflow.retry_schedule",
            c"The delays between the attempts of a message that keeps failing.",
            c"Comma-separated delays with units ms, s, min, h or d; the n-th retry waits the \
              n-th delay (the last one once they are used up), jittered by 10% either way, \
              and never less than the receiver's Retry-After. An endpoint's retry_schedule \
              overrides it.",
            &RETRY_SCHEDULE,
            GucContext::Sighup,
            GucFlags::default(),
            Some(check_retry_schedule),
            None,
            None,
        );
    }
    GucRegistry::define_int_guc(
        c"workflow.endpoint_disable_after",
        c"How long an endpoint may fail without one success before it is disabled.",
        c"An endpoint whose every attempt failed for this long is disabled: its messages \
          wait, nothing is lost, until wf_endpoint_enable. 0 never disables one.",
        &ENDPOINT_DISABLE_AFTER,
        0,
        i32::MAX,
        GucContext::Sighup,
        GucFlags::UNIT_S,
    );
    GucRegistry::define_int_guc(
        c"workflow.max_attempts",
        c"Attempts before a message that keeps failing is dead.",
        c"A named endpoint's max_attempts overrides it. The default, 8, is one attempt and \
          one retry per delay of the default workflow.retry_schedule. Range 1 to 1000.",
        &MAX_ATTEMPTS,
        1,
        1000,
        GucContext::Sighup,
        GucFlags::default(),
    );
    GucRegistry::define_bool_guc(
        c"workflow.allow_private_networks",
        c"Allow webhooks to loopback, private, link-local and metadata addresses.",
        c"Off by default: a message cannot make the database server reach into its own \
          network (SSRF). Resolved addresses are checked, not only host names.",
        &ALLOW_PRIVATE_NETWORKS,
        GucContext::Sighup,
        GucFlags::default(),
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

/// The databases named in `workflow.databases`, trimmed, without duplicates or blanks.
pub fn databases() -> Vec<String> {
    let raw = DATABASES
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut names: Vec<String> = Vec::new();
    for name in raw.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        if !names.iter().any(|n| n == name) {
            names.push(name.to_string());
        }
    }
    names
}

pub fn max_concurrency() -> usize {
    MAX_CONCURRENCY.get().max(1) as usize
}

pub fn batch_size() -> usize {
    BATCH_SIZE.get().max(1) as usize
}

pub fn poll_interval() -> Duration {
    Duration::from_millis(POLL_INTERVAL_MS.get().max(10) as u64)
}

pub fn request_timeout() -> Duration {
    Duration::from_millis(REQUEST_TIMEOUT_MS.get().max(100) as u64)
}

pub fn max_attempts() -> i32 {
    MAX_ATTEMPTS.get().max(1)
}

/// A destination's default cap: the setting, but never more than half of
/// `workflow.max_concurrency`, so that one destination that never answers cannot hold
/// every request slot (an endpoint's own `max_concurrency` is its owner's choice).
pub fn max_concurrency_per_destination() -> usize {
    let half = (max_concurrency() / 2).max(1);
    (MAX_CONCURRENCY_PER_DESTINATION.get().max(1) as usize).min(half)
}

/// The default retry schedule (its check hook has validated it).
pub fn retry_schedule() -> Vec<Duration> {
    let text = RETRY_SCHEDULE
        .get()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    retry::parse_schedule(&text)
        .unwrap_or_else(|_| retry::parse_schedule(retry::DEFAULT_SCHEDULE).unwrap_or_default())
}

/// `None`: endpoints are never disabled for failing.
pub fn endpoint_disable_after() -> Option<Duration> {
    let seconds = ENDPOINT_DISABLE_AFTER.get();
    (seconds > 0).then(|| Duration::from_secs(seconds as u64))
}

/// Refuses a `workflow.retry_schedule` that does not parse, saying why.
#[pgrx::pg_guard]
unsafe extern "C-unwind" fn check_retry_schedule(
    newval: *mut *mut std::ffi::c_char,
    _extra: *mut *mut std::ffi::c_void,
    _source: pgrx::pg_sys::GucSource::Type,
) -> bool {
    // SAFETY: Postgres passes the candidate value, a NUL-terminated string or NULL.
    let text = unsafe {
        if newval.is_null() || (*newval).is_null() {
            return false;
        }
        std::ffi::CStr::from_ptr(*newval)
            .to_string_lossy()
            .into_owned()
    };
    match retry::parse_schedule(&text) {
        Ok(_) => true,
        Err(reason) => {
            let detail = CString::new(reason).unwrap_or_default();
            // SAFETY: the detail is copied into palloc'd memory, as GUC_check_errdetail does.
            unsafe {
                pgrx::pg_sys::GUC_check_errdetail_string = pgrx::pg_sys::pstrdup(detail.as_ptr());
            }
            false
        }
    }
}

pub fn allow_private_networks() -> bool {
    ALLOW_PRIVATE_NETWORKS.get()
}

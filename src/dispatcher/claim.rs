//! Claiming due messages: one short transaction hands a batch to this dispatcher with a
//! lease, and commits before any HTTP starts.

use crate::db::{self, Statement};
use crate::delivery::headers;
use crate::delivery::signing::Secret;
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::pg_sys::{
    BOOLOID, INT4ARRAYOID, INT4OID, INT8ARRAYOID, INT8OID, INTERVALOID, TEXTARRAYOID,
};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// A claim holds a message for `LEASE_GENERATIONS` request timeouts plus this margin: the
/// dispatcher claims up to one generation of requests ahead of what it sends, so a claimed
/// message may wait for one request timeout before its own starts. If the dispatcher has
/// not recorded an outcome by then, it died, and the message is due again.
pub const LEASE_GENERATIONS: i32 = 2;
pub const LEASE_MARGIN: Duration = Duration::from_secs(10);

/// The most payload bytes one claim may bring into the dispatcher's memory. A claim takes
/// at most as many messages as fit at `workflow.max_payload_bytes` (superuser-only) each,
/// with their headers at the most headers allow: a bound, not an estimate.
pub const CLAIM_BYTES: usize = 64 * 1024 * 1024;

/// How many messages a claim may take within [`CLAIM_BYTES`]; at least one.
pub fn rows_within_byte_budget(max_payload_bytes: usize) -> usize {
    (CLAIM_BYTES / (max_payload_bytes + headers::MAX_BYTES).max(1)).max(1)
}

/// Walks up to a batch of due messages and claims those that may go now, parking the
/// blocked ones; `claim.sql` says how and why.
pub static CLAIM: Statement = Statement {
    sql: include_str!("claim/claim.sql"),
    args: &[
        INT4OID,
        INTERVALOID,
        INTERVALOID,
        INT4OID,
        INT4OID,
        INT4OID,
        TEXTARRAYOID,
        INT4ARRAYOID,
        BOOLOID,
        INT8OID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        INT4ARRAYOID,
    ],
};

/// The smallest number of requests any destination may have outstanding (see
/// `claim.sql`): an endpoint's own limits, or the default for the rest; none while
/// a destination is failing.
static SMALLEST_ROOM: Statement = Statement {
    sql: include_str!("claim/smallest_room.sql"),
    args: &[INT4OID, INT4OID],
};

/// Reads the smallest room of any destination; see `SMALLEST_ROOM`.
pub fn smallest_room(client: &mut SpiClient<'_>, per_destination: usize) -> SpiResult<usize> {
    let args: [DatumWithOid; 2] = [
        (per_destination.min(i32::MAX as usize) as i32).into(),
        LEASE_GENERATIONS.into(),
    ];
    let room: Option<i32> =
        db::execute(client, &SMALLEST_ROOM, &args, |rows| rows.first().get_one())?;
    Ok(room.unwrap_or(1).max(0) as usize)
}

/// How long until the next pending message becomes due.
static NEXT_DUE: Statement = Statement {
    sql: include_str!("claim/next_due.sql"),
    args: &[],
};

/// One claimed delivery attempt, with everything the HTTP side needs and nothing of Postgres.
#[derive(Debug)]
pub struct Job {
    pub id: i64,
    /// 1 for the first attempt.
    pub attempt: i32,
    pub max_attempts: i32,
    pub url: String,
    pub body: String,
    pub webhook_id: String,
    pub idempotency_key: Option<String>,
    /// Endpoint headers, then message headers (a message header wins over the endpoint's).
    pub headers: Vec<(String, String)>,
    pub secrets: Vec<Secret>,
    pub timeout: Duration,
    pub durable_step: bool,
    pub named_endpoint: bool,
    /// Has an ordering key: the key's next message waits for this one's outcome.
    pub ordered: bool,
    /// The message holds an earlier attempt, which this one's outcome moves to the log.
    pub replaces_attempt: bool,
    /// Before this instant the request must have ended: then the claim's lease runs out,
    /// and another claim may send the message again.
    pub lease_deadline: Instant,
    /// Why the message cannot be sent as stored (a secret or header that no longer
    /// parses): it goes dead with this reason instead of out unsigned or without them.
    pub unsendable: Option<String>,
    /// Where the per-destination limits count it: its endpoint, or its URL's origin.
    pub destination: Arc<str>,
    /// Who the message is for ('' for none): a busy destination's slots go round-robin
    /// by tenant (see `limits`).
    pub tenant: Arc<str>,
    /// The destination's limits: requests in flight at once, and per second.
    pub concurrency: usize,
    pub rate_per_second: Option<f64>,
    /// The endpoint's own retry schedule, if it has one.
    pub retry_schedule: Option<Arc<[Duration]>>,
    /// Whether the endpoint had failed since its last success when this was claimed.
    pub endpoint_failing: bool,
}

pub struct Settings {
    pub request_timeout: Duration,
    pub max_attempts: i32,
    pub concurrency_per_destination: usize,
}

fn interval(duration: Duration) -> Interval {
    Interval::from_micros(duration.as_micros().min(i64::MAX as u128) as i64)
}

/// Lets the current transaction's commit return before its WAL reaches disk.
static COMMIT_WITHOUT_WAITING: Statement = Statement {
    sql: include_str!("claim/commit_without_waiting.sql"),
    args: &[],
};

pub fn commit_without_waiting(client: &mut SpiClient<'_>) -> SpiResult<()> {
    db::execute(client, &COMMIT_WITHOUT_WAITING, &[], |_| Ok(()))
}

/// Cancels, among the durable steps just claimed `$1`, those their workflow decided without
/// — the workflow finished, the step is recorded, or the wait for it timed out — so that
/// none is sent (G10); the claim's attempt is taken back.
static CANCEL_DECIDED_STEPS: Statement = Statement {
    sql: include_str!("claim/cancel_decided_steps.sql"),
    args: &[INT8ARRAYOID],
};

/// What one claim took: `jobs.len() + parked` of the due messages it walked.
#[derive(Default)]
pub struct Claimed {
    pub jobs: Vec<Job>,
    /// Found blocked and parked.
    pub parked: usize,
    /// The destinations some of whose messages were parked at their limit.
    pub limited: Vec<String>,
    /// The walk met a message written in another database: this one is a copy, and the
    /// claim took nothing (see `identity`).
    pub copied: bool,
}

impl Claimed {
    /// Whether the walk took all it asked for, so more may be due right now.
    pub fn took(&self, limit: usize) -> bool {
        self.jobs.len() + self.parked >= limit
    }
}

/// Walks up to `limit` due messages, claiming and parking them; call inside a transaction
/// and commit before sending.
pub fn claim(
    client: &mut SpiClient<'_>,
    limit: usize,
    settings: &Settings,
    outstanding: &HashMap<Arc<str>, usize>,
    tenants: &HashMap<(Arc<str>, Arc<str>), usize>,
    ranked: bool,
) -> SpiResult<Claimed> {
    // Earlier than the database's clock_timestamp() in the claim: the deadline errs early.
    let claimed_at = Instant::now();
    let (busy, counts) = db_arrays(outstanding);
    let mut busy_at = Vec::with_capacity(tenants.len());
    let mut busy_tenants = Vec::with_capacity(tenants.len());
    let mut busy_counts = Vec::with_capacity(tenants.len());
    for ((destination, tenant), n) in tenants {
        busy_at.push(destination.to_string());
        busy_tenants.push(tenant.to_string());
        busy_counts.push((*n).min(i32::MAX as usize) as i32);
    }
    let args: [DatumWithOid; 13] = [
        (limit.min(i32::MAX as usize) as i32).into(),
        interval(settings.request_timeout).into(),
        interval(LEASE_MARGIN).into(),
        settings.max_attempts.into(),
        LEASE_GENERATIONS.into(),
        (settings.concurrency_per_destination.min(i32::MAX as usize) as i32).into(),
        busy.into(),
        counts.into(),
        ranked.into(),
        crate::identity::current().into(),
        busy_at.into(),
        busy_tenants.into(),
        busy_counts.into(),
    ];
    db::execute(client, &CLAIM, &args, |rows| {
        let mut claimed = Claimed {
            jobs: Vec::with_capacity(rows.len()),
            ..Claimed::default()
        };
        if rows.is_empty() {
            return Ok(claimed);
        }
        let [
            id,
            attempt,
            url,
            body,
            endpoint_headers,
            message_headers,
            idempotency_key,
            webhook_id,
            secrets,
            max_attempts,
            timeout_ms,
            durable_step,
            named_endpoint,
            ordered,
            replaces_attempt,
            parked,
            destination,
            tenant,
            concurrency,
            rate_per_second,
            retry_schedule_ms,
            endpoint_failing,
            limited,
            copied,
        ] = db::ordinals(
            &rows,
            [
                "id",
                "attempt",
                "url",
                "body",
                "endpoint_headers",
                "message_headers",
                "idempotency_key",
                "webhook_id",
                "secrets",
                "max_attempts",
                "timeout_ms",
                "durable_step",
                "named_endpoint",
                "ordered",
                "replaces_attempt",
                "parked",
                "destination",
                "tenant",
                "concurrency",
                "rate_per_second",
                "retry_schedule_ms",
                "endpoint_failing",
                "limited",
                "copied",
            ],
        )?;
        for row in rows {
            claimed.copied = row.get::<i64>(copied)?.unwrap_or(0) > 0;
            claimed.parked = row.get::<i64>(parked)?.unwrap_or(0).max(0) as usize;
            if claimed.limited.is_empty() {
                let names: Option<Vec<Option<String>>> = row.get(limited)?;
                claimed.limited = names.unwrap_or_default().into_iter().flatten().collect();
            }
            let Some(id) = row.get::<i64>(id)? else {
                continue; // the one row of a walk that claimed nothing
            };
            let endpoint_headers: Option<String> = row.get(endpoint_headers)?;
            let message_headers: Option<String> = row.get(message_headers)?;
            let secrets: Option<Vec<Option<String>>> = row.get(secrets)?;
            let (headers, bad_headers) =
                merge_headers(endpoint_headers.as_deref(), message_headers.as_deref());
            let (secrets, bad_secret) = parse_secrets(secrets.unwrap_or_default());
            let timeout =
                Duration::from_millis(row.get::<i64>(timeout_ms)?.unwrap_or(30_000).max(1) as u64);
            claimed.jobs.push(Job {
                id,
                attempt: row.get(attempt)?.unwrap_or(1),
                url: row.get(url)?.unwrap_or_default(),
                body: row.get(body)?.unwrap_or_default(),
                headers,
                idempotency_key: row.get(idempotency_key)?,
                webhook_id: row.get(webhook_id)?.unwrap_or_default(),
                secrets,
                max_attempts: row.get(max_attempts)?.unwrap_or(1),
                timeout,
                durable_step: row.get(durable_step)?.unwrap_or(false),
                named_endpoint: row.get(named_endpoint)?.unwrap_or(false),
                ordered: row.get(ordered)?.unwrap_or(false),
                replaces_attempt: row.get(replaces_attempt)?.unwrap_or(true),
                lease_deadline: claimed_at + timeout * LEASE_GENERATIONS as u32 + LEASE_MARGIN,
                unsendable: bad_secret.or(bad_headers),
                destination: row.get::<String>(destination)?.unwrap_or_default().into(),
                tenant: row.get::<String>(tenant)?.unwrap_or_default().into(),
                concurrency: row.get::<i32>(concurrency)?.unwrap_or(1).max(1) as usize,
                rate_per_second: row.get::<f64>(rate_per_second)?.filter(|rate| *rate > 0.0),
                retry_schedule: schedule(row.get::<Vec<Option<f64>>>(retry_schedule_ms)?),
                endpoint_failing: row.get::<bool>(endpoint_failing)?.unwrap_or(false),
            });
        }
        Ok(claimed)
    })
    .and_then(|mut claimed| {
        let steps: Vec<i64> = claimed
            .jobs
            .iter()
            .filter(|job| job.durable_step)
            .map(|job| job.id)
            .collect();
        if steps.is_empty() {
            return Ok(claimed);
        }
        let cancelled: Vec<i64> =
            db::execute(client, &CANCEL_DECIDED_STEPS, &[steps.into()], |rows| {
                rows.into_iter()
                    .map(|row| row.get::<i64>(1).map(Option::unwrap_or_default))
                    .collect()
            })?;
        // Set aside like a parked message: walked, not sent.
        claimed.parked += cancelled.len();
        claimed.jobs.retain(|job| !cancelled.contains(&job.id));
        Ok(claimed)
    })
}

/// The destinations with requests outstanding, and how many, as the statements take them.
pub fn db_arrays(outstanding: &HashMap<Arc<str>, usize>) -> (Vec<String>, Vec<i32>) {
    outstanding
        .iter()
        .filter(|(_, n)| **n > 0)
        .map(|(destination, n)| (destination.to_string(), (*n).min(i32::MAX as usize) as i32))
        .unzip()
}

/// An endpoint's retry schedule from its milliseconds; none when it has none.
fn schedule(millis: Option<Vec<Option<f64>>>) -> Option<Arc<[Duration]>> {
    let delays: Vec<Duration> = millis?
        .into_iter()
        .flatten()
        .filter(|ms| ms.is_finite() && *ms > 0.0)
        .map(|ms| Duration::from_secs_f64(ms / 1000.0))
        .collect();
    (!delays.is_empty()).then(|| delays.into())
}

/// Milliseconds until the next pending message is due; `None` when none is pending.
pub fn next_due(client: &mut SpiClient<'_>) -> SpiResult<Option<Duration>> {
    let millis: Option<i64> = db::execute(client, &NEXT_DUE, &[], |rows| rows.first().get_one())?;
    Ok(millis.map(|ms| Duration::from_millis(ms.max(0) as u64)))
}

/// The endpoint's headers, then the message's (which win). Both were validated when they
/// were stored; if one no longer parses (a row restored or edited by hand), the message
/// is not sent without it: the reason comes back instead.
fn merge_headers(
    endpoint: Option<&str>,
    message: Option<&str>,
) -> (Vec<(String, String)>, Option<String>) {
    let mut merged: Vec<(String, String)> = Vec::new();
    for (whose, doc) in [("endpoint", endpoint), ("message", message)] {
        let Some(doc) = doc else { continue };
        let parsed = serde_json::from_str(doc)
            .map_err(|e| e.to_string())
            .and_then(|value| headers::parse(&value).map_err(|e| e.to_string()));
        match parsed {
            Ok(pairs) => {
                for (name, value) in pairs {
                    merged.retain(|(existing, _)| *existing != name);
                    merged.push((name, value));
                }
            }
            Err(reason) => {
                return (
                    Vec::new(),
                    Some(format!("not sent: the stored {whose} headers {reason}")),
                );
            }
        }
    }
    (merged, None)
}

/// The endpoint's secrets; if one does not parse, none is used and the message is not
/// sent unsigned: the reason (never the secret) comes back instead.
fn parse_secrets(stored: Vec<Option<String>>) -> (Vec<Secret>, Option<String>) {
    let mut secrets = Vec::with_capacity(stored.len());
    for (position, text) in stored.into_iter().flatten().enumerate() {
        match Secret::parse(&text) {
            Ok(secret) => secrets.push(secret),
            Err(e) => {
                let reason = format!(
                    "not sent: the endpoint's secret {} is malformed ({e}); set it again with wf_endpoint",
                    position + 1
                );
                return (Vec::new(), Some(reason));
            }
        }
    }
    (secrets, None)
}

#[cfg(test)]
mod tests {
    use super::{merge_headers, parse_secrets};

    #[test]
    fn message_headers_win_over_endpoint_headers() {
        let merged = merge_headers(
            Some(r#"{"x-a": "endpoint", "x-b": "b"}"#),
            Some(r#"{"X-A": "message"}"#),
        );
        assert_eq!(
            merged,
            (
                vec![
                    ("x-b".to_string(), "b".to_string()),
                    ("x-a".to_string(), "message".to_string())
                ],
                None
            )
        );
    }

    #[test]
    fn unparsable_or_reserved_headers_fail_closed() {
        for (endpoint, message) in [
            (Some("not json"), None),
            (None, Some(r#"{"webhook-id": "forged"}"#)),
        ] {
            let (headers, reason) = merge_headers(endpoint, message);
            assert!(headers.is_empty());
            assert!(reason.unwrap().starts_with("not sent: the stored"));
        }
    }

    #[test]
    fn a_malformed_secret_fails_closed_without_showing_it() {
        let good = crate::delivery::signing::Secret::generate();
        let (secrets, reason) = parse_secrets(vec![Some(good), Some("whsec_%%%".into())]);
        assert!(secrets.is_empty());
        let reason = reason.unwrap();
        assert!(reason.contains("secret 2 is malformed"), "{reason}");
        assert!(!reason.contains("%%%"), "{reason}");
    }

    #[test]
    fn a_claim_is_bounded_by_bytes() {
        use super::{CLAIM_BYTES, rows_within_byte_budget};
        assert!(rows_within_byte_budget(1024 * 1024) * (1024 * 1024) <= CLAIM_BYTES);
        assert_eq!(rows_within_byte_budget(256 * 1024 * 1024), 1);
    }
}

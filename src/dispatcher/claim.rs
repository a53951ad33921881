//! Claiming due messages: one short transaction hands a batch to this dispatcher with a
//! lease, and commits before any HTTP starts.

use crate::db::{self, Statement};
use crate::delivery::headers;
use crate::delivery::signing::Secret;
use pgrx::datum::{DatumWithOid, Interval};
use pgrx::pg_sys::{INT4ARRAYOID, INT4OID, INT8ARRAYOID, INTERVALOID, TEXTARRAYOID};
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

/// How many requests a destination may have outstanding per request it may have in flight:
/// as for the dispatcher as a whole, one generation queued behind the one in flight.
/// A rate-limited destination may have at most a second of its rate outstanding, so that
/// none waits for its turn past its lease. A failing destination (see `destinations`) may
/// have one, its probe, and none before the probe is due.
macro_rules! destination_room {
    ($destination:expr, $generations:literal, $default:literal, $busy:literal, $counts:literal) => {
        concat!(
            "(least(coalesce((SELECT CASE WHEN coalesce(s.next_probe_at, '-infinity') <= clock_timestamp()
                                          THEN 1 ELSE 0 END
                                FROM workflow.destinations s
                               WHERE s.destination = ",
            $destination,
            " AND s.state = 'failing'), 2147483647),
                   coalesce((SELECT least(coalesce(e.max_concurrency, ",
            $default,
            ") * ",
            $generations,
            ",
                                     CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                          ELSE greatest(1, ceil(e.rate_per_second))::int END)
                          FROM workflow.endpoint_settings e WHERE e.name = ",
            $destination,
            "),
                       ",
            $default,
            " * ",
            $generations,
            "))
              - coalesce((SELECT b.n FROM unnest(",
            $busy,
            "::text[], ",
            $counts,
            "::int4[]) AS b(destination, n)
                           WHERE b.destination = ",
            $destination,
            "), 0))"
        )
    };
}
pub(crate) use destination_room;

/// Walks up to `$1` due messages, oldest due first, and claims those that may go now. A
/// message waits while its named endpoint is disabled, while an older message of its
/// ordering key is pending (the key's head is the only one sent, so a failing head blocks
/// only its own key), and while its destination — its endpoint, or its URL's origin — has
/// as many requests outstanding as its limits allow (`destination_room!`; `$7`/`$8` are the
/// destinations with requests outstanding, and how many). Such a blocked message is parked
/// instead (see `parking`): out of `outbox_due`, so no later claim walks it again; every
/// row the walk takes is claimed or parked, so each claim makes progress and its work
/// grows with `$1`, never with what is blocked. The last columns count the parked, and
/// name the destinations parked at their limit; a walk that claims nothing still returns
/// one row, its other columns NULL.
///
/// The dispatcher runs this as a generic plan (see `worker`), which cannot know `$1`, so
/// the statement is shaped to leave the planner no costly choice:
/// - `due` walks `outbox_due` in index order and stops after `$1` rows: what blocks a row
///   is found by per-row `EXISTS` probes. Messages in flight keep their due time and sit at
///   the head of the index, so a claim steps over at most the outstanding ones. (Joining
///   the endpoint's settings here let the planner hash-join and sort the whole backlog.)
/// - the updates find their rows by primary key from arrays, not by a join, which a
///   generic plan estimated at a tenth of the table and ran as a merge join over the whole
///   primary key;
/// - the endpoint's settings are joined to the claimed rows only;
/// - the lease goes to `leased_until`, which no index covers: the claim is a HOT update.
macro_rules! claim {
    ($limits:expr) => {
        concat!(
            "WITH due AS (
              SELECT m.id, m.next_attempt_at, coalesce(m.endpoint, m.origin) AS destination,
                     m.endpoint IS NOT NULL AND EXISTS (
                        SELECT FROM workflow.endpoint_settings d
                         WHERE d.name = m.endpoint AND d.disabled_at IS NOT NULL) AS behind_endpoint,
                     m.ordering_key IS NOT NULL AND EXISTS (
                        SELECT FROM workflow.outbox p
                         WHERE p.ordering_key = m.ordering_key AND p.status = 'pending' AND p.id < m.id) AS behind_key
                FROM workflow.outbox m
               WHERE (m.status = 'pending') IS TRUE AND m.parked IS NULL
                 AND m.next_attempt_at <= (SELECT clock_timestamp())
                 AND (m.leased_until IS NULL OR m.leased_until <= (SELECT clock_timestamp()))
               ORDER BY m.next_attempt_at
               LIMIT $1
                 FOR UPDATE OF m SKIP LOCKED),
          ",
            $limits,
            "
          parked AS (
              UPDATE workflow.outbox m
                 SET parked = CASE WHEN m.id = ANY (ARRAY(SELECT id FROM due WHERE behind_endpoint))
                                   THEN 'endpoint'
                                   WHEN m.id = ANY (ARRAY(SELECT id FROM limited)) THEN 'limit'
                                   ELSE 'ordering_key' END
               WHERE m.id = ANY (ARRAY(SELECT id FROM due WHERE behind_endpoint OR behind_key
                                       UNION ALL SELECT id FROM limited))
              RETURNING m.id),
          claimed AS (
              UPDATE workflow.outbox m
                 SET attempts = m.attempts + 1,
                     leased_until = clock_timestamp()
                         + COALESCE((SELECT e.timeout FROM workflow.endpoint_settings e
                                      WHERE e.name = m.endpoint), $2) * $5
                         + $3
               WHERE m.id = ANY (ARRAY(SELECT id FROM sendable
                                        WHERE id <> ALL (ARRAY(SELECT id FROM limited))))
              RETURNING m.id, m.attempts, m.url, m.endpoint, m.payload, m.headers,
                        m.idempotency_key, m.webhook_id, m.step, m.ordering_key,
                        m.last_started_at, coalesce(m.endpoint, m.origin) AS destination)
          SELECT c.id, c.attempts, COALESCE(e.url, c.url), c.payload::text,
                 e.headers::text, c.headers::text,
                 -- A published message's key is its publish's, per endpoint (see wf_publish).
                 CASE WHEN starts_with(c.idempotency_key, 'workflow.publish:')
                      THEN substr(c.idempotency_key, length('workflow.publish:' || c.endpoint || ':') + 1)
                      ELSE c.idempotency_key END,
                 c.webhook_id,
                 -- Secrets being rotated out sign too, until their time is up.
                 e.secrets || CASE WHEN e.retiring_until > clock_timestamp()
                                   THEN e.retiring_secrets ELSE '{}' END,
                 COALESCE(e.max_attempts, $4),
                 (extract(epoch FROM COALESCE(e.timeout, $2)) * 1000)::bigint,
                 c.step IS NOT NULL, c.endpoint IS NOT NULL, c.ordering_key IS NOT NULL,
                 c.last_started_at IS NOT NULL, p.n, c.destination,
                 coalesce(e.max_concurrency, $6), e.rate_per_second,
                 CASE WHEN e.retry_schedule IS NOT NULL
                      THEN ARRAY(SELECT (extract(epoch FROM d) * 1000)::float8 FROM unnest(e.retry_schedule) d)
                 END,
                 e.failing_since IS NOT NULL, l.destinations
            FROM (SELECT count(*) AS n FROM parked) p
           CROSS JOIN (SELECT array_agg(DISTINCT destination) AS destinations FROM limited) l
            LEFT JOIN (claimed c LEFT JOIN workflow.endpoint_settings e ON e.name = c.endpoint) ON true"
        )
    };
}

const CLAIM_ARGS: &[pgrx::pg_sys::Oid] = &[
    INT4OID,
    INTERVALOID,
    INTERVALOID,
    INT4OID,
    INT4OID,
    INT4OID,
    TEXTARRAYOID,
    INT4ARRAYOID,
];

/// The claim that ranks each destination's rows and sets aside those beyond its room.
pub static CLAIM: Statement = Statement {
    sql: claim!(concat!(
        "sendable AS (
              SELECT d.id, d.destination,
                     row_number() OVER (PARTITION BY d.destination ORDER BY d.next_attempt_at, d.id) AS rank
                FROM due d
               WHERE NOT (d.behind_endpoint OR d.behind_key)),
          rooms AS (
              SELECT d.destination, ",
        destination_room!("d.destination", "$5", "$6", "$7", "$8"),
        " AS room
                FROM (SELECT DISTINCT destination FROM sendable) d),
          limited AS MATERIALIZED (
              SELECT s.id, s.destination FROM sendable s JOIN rooms r ON r.destination = s.destination
               WHERE s.rank > r.room),"
    )),
    args: CLAIM_ARGS,
};

/// The claim for a round in which no destination can reach its limit (see
/// [`Rooms::binding`]), which then need not rank the rows it walks (see bench/NOTES.md).
pub static CLAIM_WITHIN_LIMITS: Statement = Statement {
    sql: claim!(
        "sendable AS (
              SELECT d.id, d.destination FROM due d WHERE NOT (d.behind_endpoint OR d.behind_key)),
          limited AS (SELECT NULL::bigint AS id, NULL::text AS destination WHERE false),"
    ),
    args: CLAIM_ARGS,
};

/// The smallest number of requests any destination may have outstanding (see
/// `destination_room!`): an endpoint's own limits, or the default for the rest; none while
/// a destination is failing.
static SMALLEST_ROOM: Statement = Statement {
    sql: "SELECT least($1 * $2, min(least(coalesce(e.max_concurrency, $1) * $2,
                                           CASE WHEN e.rate_per_second IS NULL THEN 2147483647
                                                ELSE greatest(1, ceil(e.rate_per_second))::int END)),
                        CASE WHEN EXISTS (SELECT FROM workflow.destinations s WHERE s.state = 'failing')
                             THEN 0 END)
            FROM workflow.endpoint_settings e",
    args: &[INT4OID, INT4OID],
};

/// What the dispatcher knows of the destinations' limits, to skip the ranking when none
/// can bind (see `plan::plan_round`).
#[derive(Default)]
pub struct Rooms {
    /// The smallest room any destination has, as last read; `None` before the first read.
    pub smallest_room: Option<usize>,
}

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

/// How long until the next pending message becomes due. Messages already due but not
/// claimable — parked, or leased — do not count: what unblocks them (an enable, a head's
/// outcome, a cancel, this dispatcher's own outcome) wakes the dispatcher itself, and
/// counting them would make it spin. The one
/// exception, the lease of a dispatcher that died, is noticed within a poll interval.
/// Capped at a day, so that no stored time (an `infinity` from before 0.2.0) can make the
/// subtraction fail.
static NEXT_DUE: Statement = Statement {
    sql: "SELECT (extract(epoch FROM least(min(next_attempt_at), clock_timestamp() + interval '1 day')
                                     - clock_timestamp()) * 1000)::bigint
            FROM workflow.outbox
           WHERE (status = 'pending') IS TRUE AND parked IS NULL
             AND next_attempt_at > (SELECT clock_timestamp())",
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
///
/// For a transaction that only claims. If a crash loses its commit, its messages are due
/// and unleased again and are sent again at once: the at-least-once path of a lease that
/// runs out, a lease sooner (G2: a request in flight during a crash may be repeated). The
/// commit becomes durable with the next one that is waited for, since WAL is flushed in
/// order: the record of its outcomes at the latest. Recording always waits: a delivered
/// message must not turn pending, nor a durable step's checkpoint vanish, once seen.
static COMMIT_WITHOUT_WAITING: Statement = Statement {
    sql: "SELECT pg_catalog.set_config('synchronous_commit', 'off', true)",
    args: &[],
};

pub fn commit_without_waiting(client: &mut SpiClient<'_>) -> SpiResult<()> {
    db::execute(client, &COMMIT_WITHOUT_WAITING, &[], |_| Ok(()))
}

/// Cancels, among the durable steps just claimed `$1`, those their workflow decided without
/// — the workflow finished, the step is recorded, or the wait for it timed out — so that
/// none is sent (G10); the claim's attempt is taken back. Run only for a claim that took
/// durable steps: a probe of the runs in the claim's walk made every claim several times
/// dearer (bench/NOTES.md). Returns the cancelled messages.
static CANCEL_DECIDED_STEPS: Statement = Statement {
    sql: "WITH decided AS (
              SELECT m.id FROM workflow.outbox m
               WHERE m.id = ANY ($1) AND m.step IS NOT NULL
                 AND EXISTS (SELECT FROM workflow.runs r
                              WHERE r.id = m.workflow_id
                                AND (r.status <> 'running'
                                     OR (r.wait_step = m.step AND r.wait_signal IS NULL
                                         AND r.wait_deadline <= clock_timestamp())
                                     OR EXISTS (SELECT FROM workflow.checkpoints c
                                                 WHERE c.workflow_id = m.workflow_id AND c.step = m.step)))),
          cancelled AS (
              UPDATE workflow.outbox m
                 SET status = 'cancelled', finished_at = clock_timestamp(), leased_until = NULL,
                     attempts = greatest(m.attempts - 1, 0),
                     unpark_successor = CASE WHEN m.ordering_key IS NOT NULL THEN true END
               WHERE m.id = ANY (ARRAY(SELECT id FROM decided)) AND m.status = 'pending'
              RETURNING m.id, m.endpoint),
          counted AS (
              INSERT INTO workflow.message_counts (status, n, endpoint)
              SELECT 'cancelled', count(*), endpoint FROM cancelled GROUP BY endpoint)
          SELECT id FROM cancelled",
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
    ranked: bool,
) -> SpiResult<Claimed> {
    // Earlier than the database's clock_timestamp() in the claim: the deadline errs early.
    let claimed_at = Instant::now();
    let (busy, counts) = db_arrays(outstanding);
    let args: [DatumWithOid; 8] = [
        (limit.min(i32::MAX as usize) as i32).into(),
        interval(settings.request_timeout).into(),
        interval(LEASE_MARGIN).into(),
        settings.max_attempts.into(),
        LEASE_GENERATIONS.into(),
        (settings.concurrency_per_destination.min(i32::MAX as usize) as i32).into(),
        busy.into(),
        counts.into(),
    ];
    let statement = if ranked { &CLAIM } else { &CLAIM_WITHIN_LIMITS };
    db::execute(client, statement, &args, |rows| {
        let mut claimed = Claimed {
            jobs: Vec::with_capacity(rows.len()),
            ..Claimed::default()
        };
        for row in rows {
            claimed.parked = row.get::<i64>(16)?.unwrap_or(0).max(0) as usize;
            if claimed.limited.is_empty() {
                let limited: Option<Vec<Option<String>>> = row.get(22)?;
                claimed.limited = limited.unwrap_or_default().into_iter().flatten().collect();
            }
            let Some(id) = row.get::<i64>(1)? else {
                continue; // the one row of a walk that claimed nothing
            };
            let endpoint_headers: Option<String> = row.get(5)?;
            let message_headers: Option<String> = row.get(6)?;
            let secrets: Option<Vec<Option<String>>> = row.get(9)?;
            let (headers, bad_headers) =
                merge_headers(endpoint_headers.as_deref(), message_headers.as_deref());
            let (secrets, bad_secret) = parse_secrets(secrets.unwrap_or_default());
            let timeout =
                Duration::from_millis(row.get::<i64>(11)?.unwrap_or(30_000).max(1) as u64);
            claimed.jobs.push(Job {
                id,
                attempt: row.get(2)?.unwrap_or(1),
                url: row.get(3)?.unwrap_or_default(),
                body: row.get(4)?.unwrap_or_default(),
                headers,
                idempotency_key: row.get(7)?,
                webhook_id: row.get(8)?.unwrap_or_default(),
                secrets,
                max_attempts: row.get(10)?.unwrap_or(1),
                timeout,
                durable_step: row.get(12)?.unwrap_or(false),
                named_endpoint: row.get(13)?.unwrap_or(false),
                ordered: row.get(14)?.unwrap_or(false),
                replaces_attempt: row.get(15)?.unwrap_or(true),
                lease_deadline: claimed_at + timeout * LEASE_GENERATIONS as u32 + LEASE_MARGIN,
                unsendable: bad_secret.or(bad_headers),
                destination: row.get::<String>(17)?.unwrap_or_default().into(),
                concurrency: row.get::<i32>(18)?.unwrap_or(1).max(1) as usize,
                rate_per_second: row.get::<f64>(19)?.filter(|rate| *rate > 0.0),
                retry_schedule: schedule(row.get::<Vec<Option<f64>>>(20)?),
                endpoint_failing: row.get::<bool>(21)?.unwrap_or(false),
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

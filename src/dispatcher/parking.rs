//! Parking: blocked messages out of the due path, and back in when they are unblocked.
//!
//! A claim parks what it finds blocked (see `claim::CLAIM`): a message behind a disabled
//! endpoint (`parked = 'endpoint'`) or behind an older pending message of its ordering key
//! (`'ordering_key'`). `outbox_due` leaves parked messages out, so no claim walks them
//! again, however many there are. What unblocks them leaves a flag, which a round of the
//! dispatcher acts on before it claims:
//! - a message with an ordering key that stops being pending (its outcome recorded, or a
//!   cancel) sets `outbox.unpark_successor`: the key's new head is unparked;
//! - `wf_endpoint_enable` sets `endpoint_settings.unpark_messages`: the endpoint's messages
//!   are unparked, a batch a round.
//!
//! Why a flag, and not the unpark itself in the writer's transaction: the claim that parks
//! may commit after the writer's snapshot was taken, and then the writer would not see the
//! message it should unpark. The dispatcher reads the flag in a statement of its own, whose
//! snapshot sees the flag and every park committed before it; and a claim after that
//! statement already sees what the flag announced, so it parks nothing for that reason.
//! A flag is cleared only when its work is done: a message an application holds locked
//! keeps its flag for a later round, and is never waited for.
//!
//! A round looks at the flags only when there may be some (see `worker`): an application's
//! commit that left one counts itself in the dispatcher's slot (`wake::flag_on_commit`),
//! a round that records a keyed message's outcome flags its key itself, kept flags are
//! looked at again, and a poll interval without a look ends in one.
//!
//! A message whose destination is at its limit (`'limit'`) needs no flag: only this
//! dispatcher parks it, and only its own requests coming back make room. The worker keeps
//! the destinations it parked such messages for, and each round lets go of what their
//! returned requests made room for (`UNPARK_LIMITED`); a dispatcher that starts finds
//! them with `LIMITED_DESTINATIONS`.

use super::claim;
use crate::db::{self, Statement};
use pgrx::datum::DatumWithOid;
use pgrx::pg_sys::{INT4ARRAYOID, INT4OID, TEXTARRAYOID};
use pgrx::spi::{SpiClient, SpiResult};
use std::collections::HashMap;
use std::sync::Arc;

/// How many flags, and how many messages of an enabled endpoint, one round handles.
pub const UNPARK_BATCH: i32 = 1000;

/// Unparks what the flags name, clears the flags whose work is done, and returns how many
/// messages it unparked and how many flags it kept.
///
/// For each flagged message, the key's head (its lowest pending id, by `outbox_ordering`)
/// is unparked if it was parked behind the key; a head parked behind its endpoint stays,
/// its endpoint's flag lets it go. For one flagged endpoint, the first `$1` of its messages
/// in due order are unparked while it is enabled; its flag is cleared when none is left, or
/// when it is disabled again (then its messages rightly stay).
///
/// Only `flagged` and `candidates` may read the parked and flag indexes: the heads are
/// looked up by primary key with `parked` kept out of their condition, and locked by key
/// too. Under statistics that call those indexes empty, a condition on `parked` let the
/// planner walk the whole parked index to find a few ids.
pub(crate) static UNPARK: Statement = Statement {
    sql: "WITH flagged AS (
              SELECT f.id, f.ordering_key FROM workflow.outbox f
               WHERE f.unpark_successor IS TRUE
               LIMIT $1
                 FOR NO KEY UPDATE SKIP LOCKED),
          heads AS (
              SELECT f.id AS flagged,
                     (SELECT h.id FROM workflow.outbox h
                       WHERE h.ordering_key = f.ordering_key AND h.status = 'pending'
                       ORDER BY h.id LIMIT 1) AS head
                FROM flagged f),
          parked_heads AS MATERIALIZED (
              SELECT m.id, m.parked = 'ordering_key' AS behind_key FROM workflow.outbox m
               WHERE m.id = ANY (ARRAY(SELECT head FROM heads))),
          freed_heads AS (
              SELECT m.id FROM workflow.outbox m
               WHERE m.id = ANY (ARRAY(SELECT id FROM parked_heads WHERE behind_key))
                 FOR NO KEY UPDATE SKIP LOCKED),
          endpoint AS (
              SELECT e.name, e.disabled_at IS NULL AS enabled FROM workflow.endpoint_settings e
               WHERE e.unpark_messages IS TRUE
               LIMIT 1
                 FOR NO KEY UPDATE SKIP LOCKED),
          candidates AS (
              SELECT m.id FROM workflow.outbox m
               WHERE m.endpoint = (SELECT name FROM endpoint WHERE enabled) AND m.parked = 'endpoint'
               ORDER BY m.next_attempt_at
               LIMIT $1),
          freed_messages AS (
              SELECT m.id FROM workflow.outbox m
               WHERE m.id = ANY (ARRAY(SELECT id FROM candidates))
                 FOR NO KEY UPDATE SKIP LOCKED),
          unparked AS (
              UPDATE workflow.outbox m SET parked = NULL
               WHERE m.id = ANY (ARRAY(SELECT id FROM freed_heads UNION ALL SELECT id FROM freed_messages))
              RETURNING m.id),
          keys_done AS (
              UPDATE workflow.outbox m SET unpark_successor = NULL
               WHERE m.id = ANY (ARRAY(
                         SELECT h.flagged FROM heads h
                          WHERE h.head IS NULL
                             OR h.head <> ALL (ARRAY(SELECT id FROM parked_heads WHERE behind_key))
                             OR h.head = ANY (ARRAY(SELECT id FROM freed_heads))))
              RETURNING 1),
          -- An endpoint its owner enabled is no longer failing: its next request is no probe.
          forgotten AS (
              DELETE FROM workflow.destinations d
               WHERE d.destination = (SELECT name FROM endpoint WHERE enabled)),
          endpoint_done AS (
              UPDATE workflow.endpoint_settings e SET unpark_messages = NULL
               WHERE e.name = (SELECT name FROM endpoint)
                 AND (NOT (SELECT enabled FROM endpoint)
                      OR ((SELECT count(*) FROM candidates) < $1
                          AND (SELECT count(*) FROM freed_messages) = (SELECT count(*) FROM candidates)))
              RETURNING 1)
          SELECT (SELECT count(*) FROM unparked),
                 (SELECT count(*) FROM flagged) - (SELECT count(*) FROM keys_done)
                 + (SELECT count(*) FROM endpoint) - (SELECT count(*) FROM endpoint_done)",
    args: &[INT4OID],
};

/// What one [`unpark`] did.
#[derive(Default)]
pub struct Unparked {
    pub messages: usize,
    /// Flags left for a later round: a message locked by an application, or an endpoint
    /// with more messages than one round lets go.
    pub flags_kept: usize,
}

/// Unparks what the flags committed so far name; call inside the round's transaction,
/// before the claim, which then sees the unparked messages as due.
pub fn unpark(client: &mut SpiClient<'_>) -> SpiResult<Unparked> {
    db::execute(client, &UNPARK, &[UNPARK_BATCH.into()], |rows| {
        let row = rows.first();
        let count = |n: Option<i64>| n.unwrap_or(0).max(0) as usize;
        Ok(Unparked {
            messages: count(row.get(1)?),
            flags_kept: count(row.get(2)?),
        })
    })
}

/// Lets go of messages parked at their destination's limit (`'limit'`, see `claim`), as
/// many of each destination `$5` as it has room for now (the claim's `destination_room!`,
/// with `$3`/`$4` the destinations with requests outstanding), oldest due first; a message
/// a failed request parked waits for its retry time (see `destinations`). Returns,
/// for each, whether any are left parked. A message an application holds locked stays for
/// a later round.
pub(crate) static UNPARK_LIMITED: Statement = Statement {
    sql: concat!(
        "WITH room AS (
              SELECT t.destination,
                     -- A disabled endpoint has no room: its enable lets its messages go.
                     CASE WHEN EXISTS (SELECT FROM workflow.endpoint_settings e
                                        WHERE e.name = t.destination AND e.disabled_at IS NOT NULL)
                          THEN 0
                          ELSE greatest(",
        crate::dispatcher::claim::destination_room!("t.destination", "$1", "$2", "$3", "$4"),
        ", 0) END AS n
                FROM unnest($5::text[]) AS t(destination)),
          freed AS (
              SELECT f.id, r.destination FROM room r
               CROSS JOIN LATERAL (
                     SELECT m.id FROM workflow.outbox m
                      WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                        AND m.next_attempt_at <= clock_timestamp()
                      ORDER BY coalesce(m.endpoint, m.origin), m.next_attempt_at
                      LIMIT r.n
                        FOR NO KEY UPDATE SKIP LOCKED) f),
          -- A failing destination whose probe is due, none of whose messages' retry time
          -- has come (a quiet backlog, all of it tried): the one due soonest is the probe,
          -- early. An early probe is no attempt of the message's own: its count is kept
          -- (the claim adds the one taken back here), so that probing never shortens the
          -- message's retries.
          early AS (
              SELECT e.id FROM room r
               CROSS JOIN LATERAL (
                     SELECT m.id FROM workflow.outbox m
                      WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                        AND m.next_attempt_at > clock_timestamp()
                      ORDER BY coalesce(m.endpoint, m.origin), m.next_attempt_at
                      LIMIT 1
                        FOR NO KEY UPDATE SKIP LOCKED) e
               WHERE r.n > 0
                 AND EXISTS (SELECT FROM workflow.destinations s
                              WHERE s.destination = r.destination AND s.state = 'failing')
                 AND NOT EXISTS (SELECT FROM freed f WHERE f.destination = r.destination)),
          unparked AS (
              UPDATE workflow.outbox m
                 SET parked = NULL,
                     attempts = CASE WHEN m.id = ANY (ARRAY(SELECT id FROM early))
                                     THEN greatest(m.attempts - 1, 0) ELSE m.attempts END,
                     next_attempt_at = CASE WHEN m.id = ANY (ARRAY(SELECT id FROM early))
                                            THEN clock_timestamp() ELSE m.next_attempt_at END
               WHERE m.id = ANY (ARRAY(SELECT id FROM freed UNION ALL SELECT id FROM early))
              RETURNING m.id)
          SELECT r.destination,
                 -- A probe per destination (LIMIT keeps the planner from hashing the
                 -- whole index instead).
                 (SELECT true FROM workflow.outbox m
                   WHERE coalesce(m.endpoint, m.origin) = r.destination AND m.parked = 'limit'
                     AND m.id <> ALL (ARRAY(SELECT id FROM freed UNION ALL SELECT id FROM early))
                   LIMIT 1) IS NOT NULL,
                 (SELECT count(*) FROM unparked)
            FROM room r"
    ),
    args: &[INT4OID, INT4OID, TEXTARRAYOID, INT4ARRAYOID, TEXTARRAYOID],
};

/// The destinations with messages parked at their limit, one index probe each (a skip
/// scan of `outbox_limited`): what a dispatcher that starts has to let go as room frees.
static LIMITED_DESTINATIONS: Statement = Statement {
    sql: "WITH RECURSIVE d AS (
              (SELECT coalesce(endpoint, origin) AS destination FROM workflow.outbox
                WHERE parked = 'limit' ORDER BY coalesce(endpoint, origin) LIMIT 1)
              UNION ALL
              SELECT (SELECT coalesce(m.endpoint, m.origin) FROM workflow.outbox m
                       WHERE m.parked = 'limit' AND coalesce(m.endpoint, m.origin) > d.destination
                       ORDER BY coalesce(m.endpoint, m.origin) LIMIT 1)
                FROM d WHERE d.destination IS NOT NULL)
          SELECT destination FROM d WHERE destination IS NOT NULL",
    args: &[],
};

/// What `unpark_limited` did: the destinations that still have messages parked, and how
/// many messages it let go.
pub struct UnparkedLimited {
    pub still_limited: Vec<String>,
    pub messages: usize,
}

/// Lets go of what `destinations` have room for; see `UNPARK_LIMITED`.
pub fn unpark_limited(
    client: &mut SpiClient<'_>,
    destinations: Vec<String>,
    per_destination: usize,
    outstanding: &HashMap<Arc<str>, usize>,
) -> SpiResult<UnparkedLimited> {
    let (busy, counts) = claim::db_arrays(outstanding);
    let args: [DatumWithOid; 5] = [
        claim::LEASE_GENERATIONS.into(),
        (per_destination.min(i32::MAX as usize) as i32).into(),
        busy.into(),
        counts.into(),
        destinations.into(),
    ];
    db::execute(client, &UNPARK_LIMITED, &args, |rows| {
        let mut done = UnparkedLimited {
            still_limited: Vec::new(),
            messages: 0,
        };
        for row in rows {
            done.messages = row.get::<i64>(3)?.unwrap_or(0).max(0) as usize;
            if row.get::<bool>(2)? == Some(true) {
                done.still_limited.extend(row.get::<String>(1)?);
            }
        }
        Ok(done)
    })
}

/// See `LIMITED_DESTINATIONS`.
pub fn limited_destinations(client: &mut SpiClient<'_>) -> SpiResult<Vec<String>> {
    db::execute(client, &LIMITED_DESTINATIONS, &[], |rows| {
        let mut found = Vec::new();
        for row in rows {
            found.extend(row.get::<String>(1)?);
        }
        Ok(found)
    })
}

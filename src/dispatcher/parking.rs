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
pub(crate) static UNPARK: Statement = Statement {
    sql: include_str!("parking/unpark.sql"),
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

/// Lets go of what some destinations have room for, oldest due first.
pub(crate) static UNPARK_LIMITED: Statement = Statement {
    sql: include_str!("parking/unpark_limited.sql"),
    args: &[
        INT4OID,
        INT4OID,
        TEXTARRAYOID,
        INT4ARRAYOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
        TEXTARRAYOID,
    ],
};

/// The destinations with messages parked at their limit, one index probe each (a skip scan
/// of `outbox_limited`): what a dispatcher that starts has to let go as room frees.
static LIMITED_DESTINATIONS: Statement = Statement {
    sql: include_str!("parking/limited_destinations.sql"),
    args: &[],
};

/// What `unpark_limited` did: the destinations that still have messages parked, how many
/// messages it let go, and the tenant each destination served last (its next turn starts
/// after it).
pub struct UnparkedLimited {
    pub still_limited: Vec<String>,
    pub messages: usize,
    pub served_last: Vec<(String, String)>,
}

/// Lets go of what `destinations` have room for; see `UNPARK_LIMITED`.
pub fn unpark_limited(
    client: &mut SpiClient<'_>,
    destinations: Vec<String>,
    per_destination: usize,
    outstanding: &HashMap<Arc<str>, usize>,
    turns: &HashMap<Arc<str>, String>,
) -> SpiResult<UnparkedLimited> {
    let (busy, counts) = claim::db_arrays(outstanding);
    let (served, last): (Vec<String>, Vec<String>) = destinations
        .iter()
        .filter_map(|d| turns.get(d.as_str()).map(|t| (d.clone(), t.clone())))
        .unzip();
    let args: [DatumWithOid; 7] = [
        claim::LEASE_GENERATIONS.into(),
        (per_destination.min(i32::MAX as usize) as i32).into(),
        busy.into(),
        counts.into(),
        destinations.into(),
        served.into(),
        last.into(),
    ];
    db::execute(client, &UNPARK_LIMITED, &args, |rows| {
        let mut done = UnparkedLimited {
            still_limited: Vec::new(),
            messages: 0,
            served_last: Vec::new(),
        };
        for row in rows {
            done.messages = row.get::<i64>(3)?.unwrap_or(0).max(0) as usize;
            let destination = row.get::<String>(1)?;
            if row.get::<bool>(2)? == Some(true) {
                done.still_limited.extend(destination.clone());
            }
            if let (Some(destination), Some(tenant)) = (destination, row.get::<String>(4)?) {
                done.served_last.push((destination, tenant));
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

//! Handing ready runs to an owner: `wf_claim`, `wf_claim_runs` and the dispatcher's push
//! all go through [`claim`], which also fails the runs that have been recovered too often
//! and tells their parents. Names with a queue are claimed within its limits (`queue`).

use super::finish;
use super::queue::{self, Wait};
use crate::db::{self, Statement};
use crate::document::Document;
use crate::error::WfError;
use pgrx::datum::{DatumWithOid, Interval, TimestampWithTimeZone};
use pgrx::pg_sys::{BOOLOID, INT4OID, INTERVALOID, TEXTOID, TIMESTAMPTZOID, UUIDARRAYOID};
use pgrx::spi::SpiClient;

/// Locks up to `$2` ready runs of the name `$1`, oldest expiry first.
static READY_OF_NAME: Statement = Statement {
    sql: include_str!("claim/ready_of_name.sql"),
    args: &[TEXTOID, INT4OID],
};

/// Locks up to `$1` ready runs of any name, oldest expiry first.
static READY_OF_ANY_NAME: Statement = Statement {
    sql: include_str!("claim/ready_of_any_name.sql"),
    args: &[INT4OID],
};

/// Hands the locked ready runs `$1` out, or fails those recovered too often.
static HAND_OUT: Statement = Statement {
    sql: include_str!("claim/hand_out.sql"),
    args: &[
        UUIDARRAYOID,
        TEXTOID,
        INTERVALOID,
        INT4OID,
        TIMESTAMPTZOID,
        BOOLOID,
    ],
};

/// Which ready runs a claim takes.
#[derive(Clone, Copy)]
pub enum Ready<'a> {
    /// `wf_claim(name, …)`.
    OfName(&'a str),
    /// `wf_claim(NULL, …)`.
    OfAnyName,
    /// The dispatcher's push: the runs of the names with a handler.
    ForHandlers,
}

impl Ready<'_> {
    /// Locks up to `max` of them, oldest expiry first.
    fn lock(self, client: &mut SpiClient<'_>, max: i32) -> Result<Vec<pgrx::Uuid>, WfError> {
        let read = |rows: pgrx::spi::SpiTupleTable<'_>| {
            let mut ids = Vec::with_capacity(rows.len());
            for row in rows {
                ids.extend(row.get::<pgrx::Uuid>(1)?);
            }
            Ok(ids)
        };
        Ok(match self {
            Ready::OfName(name) => {
                db::execute(client, &READY_OF_NAME, &[name.into(), max.into()], read)
            }
            Ready::OfAnyName => db::execute(client, &READY_OF_ANY_NAME, &[max.into()], read),
            Ready::ForHandlers => {
                let args = [max.into(), crate::identity::current().into()];
                db::execute(client, &super::push::READY_FOR_HANDLERS, &args, read)
            }
        }?)
    }
}

/// What a worker needs of the runs it claimed, in claim order: what a push carries.
static CLAIMED_RUNS: Statement = Statement {
    sql: include_str!("claim/claimed_runs.sql"),
    args: &[UUIDARRAYOID],
};

/// Who a claim is for.
#[derive(Clone, Copy)]
pub struct Claimer<'a> {
    /// NULL: the calling session, its lease bound to it.
    pub owner: Option<&'a str>,
    /// NULL: each run's own lease duration.
    pub lease: Option<Interval>,
    /// `workflow.max_recovery_attempts` as the server sets it.
    pub max_recovery_attempts: i32,
}

/// Claims up to `max` of the `ready` runs for `claimer`: of a name with a queue within its
/// limits, round-robin by tenant (`queue`); of the others in order of their expiry. A run
/// failed for too many recoveries uses up a slot of the batch, and its parent is told; the
/// claim of names without a queue looks again until the batch is full or nothing ready is
/// left. Returns the runs handed out.
pub fn claim(
    client: &mut SpiClient<'_>,
    ready: Ready<'_>,
    claimer: Claimer<'_>,
    max: i32,
) -> Result<Vec<pgrx::Uuid>, WfError> {
    Ok(claim_noting_busy_queues(client, ready, claimer, max)?.0)
}

/// [`claim`], and whether it passed over a name whose queue another claimer held (it takes
/// no turn there; the push tries again soon).
pub fn claim_noting_busy_queues(
    client: &mut SpiClient<'_>,
    ready: Ready<'_>,
    claimer: Claimer<'_>,
    max: i32,
) -> Result<(Vec<pgrx::Uuid>, bool), WfError> {
    let handing = Handing {
        claimer,
        session: match claimer.owner {
            Some(_) => None,
            None => super::sessions::bind(),
        },
        pushed: matches!(ready, Ready::ForHandlers),
    };
    let mut claimed = Vec::new();
    if let Ready::OfName(name) = ready
        && let Some(locked) = queue::ready_within(client, name, max, Wait::Awhile, None)?
    {
        handing.hand_out(client, &locked, &mut claimed)?;
        return Ok((claimed, false));
    }
    let mut busy = false;
    if !matches!(ready, Ready::OfName(_)) {
        // The names with a queue first, in a random order, each within its limits; the
        // statement below leaves them out. Their limits keep them from taking every slot,
        // and the order keeps any one of them from always coming last.
        let written_in = handing.pushed.then(crate::identity::current);
        for name in queue::names(client, handing.pushed)? {
            let wanted = max - claimed.len() as i32;
            if wanted <= 0 {
                break;
            }
            match queue::ready_within(client, &name, wanted, Wait::Skip, written_in)? {
                Some(locked) => handing.hand_out(client, &locked, &mut claimed)?,
                None => busy = true,
            }
        }
    }
    while (claimed.len() as i32) < max {
        let wanted = max - claimed.len() as i32;
        let locked = ready.lock(client, wanted)?;
        if locked.is_empty() {
            break;
        }
        handing.hand_out(client, &locked, &mut claimed)?;
        if locked.len() < wanted as usize {
            break;
        }
    }
    Ok((claimed, busy))
}

/// How a claim hands locked runs out.
struct Handing<'a> {
    claimer: Claimer<'a>,
    /// The claiming session's start, for a lease bound to it (no owner).
    session: Option<TimestampWithTimeZone>,
    /// Whether this is the dispatcher's push.
    pushed: bool,
}

impl Handing<'_> {
    /// Hands the locked runs out, adding those handed out to `claimed`, and fails those
    /// recovered too often, telling their parents.
    fn hand_out(
        &self,
        client: &mut SpiClient<'_>,
        locked: &[pgrx::Uuid],
        claimed: &mut Vec<pgrx::Uuid>,
    ) -> Result<(), WfError> {
        if locked.is_empty() {
            return Ok(());
        }
        let args: [DatumWithOid; 6] = [
            locked.to_vec().into(),
            self.claimer.owner.into(),
            self.claimer.lease.into(),
            self.claimer.max_recovery_attempts.into(),
            self.session.into(),
            self.pushed.into(),
        ];
        let failed = db::execute(client, &HAND_OUT, &args, |rows| {
            let mut failed = Vec::new();
            for row in rows {
                let id = row.get::<pgrx::Uuid>(1)?;
                if row.get::<bool>(2)? != Some(true) {
                    failed.extend(id);
                }
            }
            Ok(failed)
        })?;
        claimed.extend(locked.iter().filter(|id| !failed.contains(id)));
        for id in failed {
            finish::after_failure(client, id)?;
        }
        Ok(())
    }
}

/// One claimed run as `wf_claim_runs` returns it.
pub type ClaimedRun = (
    pgrx::Uuid,
    String,
    Option<Document>,
    Document,
    Option<String>,
    TimestampWithTimeZone,
);

/// The claimed runs with their input, steps, tenant and lease, in claim order. (Run as a
/// writing statement, so that it sees the claim before it in the same transaction.)
pub fn claimed_runs(
    client: &mut SpiClient<'_>,
    ids: Vec<pgrx::Uuid>,
) -> Result<Vec<ClaimedRun>, WfError> {
    if ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(db::execute(client, &CLAIMED_RUNS, &[ids.into()], |rows| {
        let mut runs = Vec::with_capacity(rows.len());
        for row in rows {
            runs.push((
                db::required(row.get(1)?)?,
                db::required(row.get(2)?)?,
                row.get::<Document>(3)?.map(Document::transfer),
                db::required(row.get::<Document>(4)?)?.transfer(),
                row.get(5)?,
                db::required(row.get(6)?)?,
            ));
        }
        Ok(runs)
    })?)
}

//! Keeping the planner's picture of the outbox current while it grows.
//!
//! The dispatcher's statements are prepared once and kept as generic plans; Postgres plans
//! them again only when something invalidates them (an ANALYZE, a VACUUM, DDL). A plan made
//! while the outbox was empty — the normal state of an idle system, once retention deleted
//! the delivered messages and vacuum truncated the table — expects one row, and a burst of
//! messages then meets nested loops that walk the whole outbox once per outcome
//! (bench/NOTES.md). Autovacuum analyzes such a table
//! within `autovacuum_naptime`, a minute by default; the dispatcher does not wait. A round
//! compares each hot table's size with the size its statistics describe, the same two
//! numbers the planner reads, and analyzes a table that has more than doubled. The ANALYZE
//! invalidates the kept plans of every backend, so the statements that run after it are
//! planned again with the new numbers.
//!
//! Pages alone are not enough: an ANALYZE while a large enqueueing transaction is still
//! open records its pages but none of its rows (they are not live yet), and once it
//! commits the page count matches what the statistics say. So the live rows that
//! committed transactions reported to the statistics system are compared too.
//!
//! The plans that went wrong were the record's, which meet the backlog once per outcome.
//! So a round with outcomes analyzes before it records them, and a round without them
//! analyzes at its end, and only if it sent nothing and nothing was committed for it
//! meanwhile: an ANALYZE of a burst in the claim right after its commit would delay the
//! burst's first requests, and everything enqueued just after the burst would wait for
//! those requests too (bench/NOTES.md, thirteenth session). The burst's first outcomes
//! come back a request later, and their round analyzes.

use pgrx::pg_sys;
use pgrx::spi::{SpiClient, SpiResult};
use std::ffi::CStr;

/// Small tables are cheap to scan whatever the plan: no ANALYZE below this many pages, or
/// rows.
const SLACK_PAGES: i64 = 8;
const SLACK_ROWS: i64 = 500;

/// The hot tables, and the statement that refreshes each one's statistics.
const TABLES: [(&CStr, &str); 2] = [
    (c"outbox", "ANALYZE workflow.outbox"),
    (c"delivery_attempts", "ANALYZE workflow.delivery_attempts"),
];

/// Analyzes the hot tables whose statistics have fallen behind; returns how many. Call in
/// a transaction.
///
/// A table that autovacuum is working on is left alone (its statistics are on their way):
/// the ANALYZE's lock is taken here, without waiting, before the ANALYZE asks for it.
/// (`ANALYZE (SKIP_LOCKED)` would do the same but log a WARNING for every round that
/// finds the lock taken, which during a long vacuum is hundreds a second.)
pub fn refresh_if_grown(client: &mut SpiClient<'_>) -> SpiResult<usize> {
    let mut analyzed = 0;
    for (table, analyze) in TABLES {
        if outgrown(table) {
            client.update(analyze, None, &[])?;
            analyzed += 1;
        }
    }
    Ok(analyzed)
}

/// Whether `workflow.<table>` holds more than twice the pages or the live rows its
/// statistics were taken at, and this transaction could take the lock ANALYZE needs (it
/// then holds it until it ends). Costs a few catalog-cache lookups, one `lseek` and one
/// statistics-entry lookup, no statement.
fn outgrown(table: &CStr) -> bool {
    // SAFETY: on the main thread inside a transaction; a missing schema or table (the
    // extension being dropped) reads as "not outgrown", and the relation is closed before
    // returning.
    unsafe {
        let namespace = pg_sys::get_namespace_oid(c"workflow".as_ptr(), true);
        if namespace == pg_sys::InvalidOid {
            return false;
        }
        let relid = pg_sys::get_relname_relid(table.as_ptr(), namespace);
        if relid == pg_sys::InvalidOid {
            return false;
        }
        let lock = pg_sys::AccessShareLock as pg_sys::LOCKMODE;
        let rel = pg_sys::try_relation_open(relid, lock);
        if rel.is_null() {
            return false;
        }
        let pages =
            pg_sys::RelationGetNumberOfBlocksInFork(rel, pg_sys::ForkNumber::MAIN_FORKNUM) as i64;
        let described_pages = i64::from((*(*rel).rd_rel).relpages).max(0);
        let described_rows = ((*(*rel).rd_rel).reltuples as i64).max(0);
        pg_sys::relation_close(rel, lock);
        // Reported at commit (within a second), so an open transaction's rows do not count.
        let counted = pg_sys::pgstat_fetch_stat_tabentry(relid);
        let live_rows = if counted.is_null() {
            0
        } else {
            (*counted).n_live_tuples
        };
        (pages > 2 * described_pages + SLACK_PAGES || live_rows > 2 * described_rows + SLACK_ROWS)
            && pg_sys::ConditionalLockRelationOid(
                relid,
                pg_sys::ShareUpdateExclusiveLock as pg_sys::LOCKMODE,
            )
    }
}

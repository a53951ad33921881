//! `workflow`: durable workflows and a transactional outbox inside PostgreSQL.
//!
//! # Layout
//! Data flows one way, and each module has one job:
//!
//! - [`api`] — the SQL surface (`wf_*`), thin: check arguments, run statements, map errors.
//! - [`workflow`] — the model in plain Rust: states, transitions, argument rules.
//! - [`delivery`] — the delivery protocol in plain Rust: signing, retry policy, URL and
//!   address checks, header rules.
//! - [`runs`] — the floor under both: lease guards, claiming, children, signals, readiness,
//!   session-bound leases; what the SQL surface and the dispatcher both do to runs.
//! - [`dispatcher`] — the background worker: claim, send (tokio + reqwest on their own
//!   threads), record, housekeeping.
//! - [`identity`] — which database this is, and whether its dispatcher may deliver (G12).
//! - [`wake`] — the shared-memory slot each dispatcher publishes, and the wake-ups that
//!   commits and exiting sessions leave in it.
//! - [`db`] — SPI with kept, typed plans; the only place that talks to the executor.
//! - [`error`] — every error with its SQLSTATE, raised in one place.
//! - [`config`] — every `workflow.*` setting with its default and range.
//! - `schema.sql` — tables, indexes, views and grants, shipped with the extension;
//!   `sql/` holds the upgrade scripts between released versions.
//!
//! The contract is `SPEC.md` (shared with the team); the README is the user's reference.

use pgrx::prelude::*;

mod api;
mod config;
mod db;
mod delivery;
mod dispatcher;
mod document;
mod error;
mod identity;
mod runs;
mod wake;
mod workflow;

pgrx::pg_module_magic!();

extension_sql_file!("schema.sql", name = "schema", bootstrap);

// Applications get EXECUTE on the wf_* functions through `workflow_user` only; internal
// functions stay with the extension owner.
extension_sql!(
    r#"
DO $$
DECLARE
    fn regprocedure;
BEGIN
    FOR fn IN
        SELECT p.oid::regprocedure
          FROM pg_catalog.pg_proc p
          JOIN pg_catalog.pg_depend d
            ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid AND d.deptype = 'e'
          JOIN pg_catalog.pg_extension e ON e.oid = d.refobjid AND e.extname = 'workflow'
         WHERE p.proname LIKE 'wf\_%' OR p.pronamespace = 'workflow'::regnamespace
    LOOP
        EXECUTE pg_catalog.format('REVOKE ALL ON FUNCTION %s FROM PUBLIC', fn);
        -- Endpoints hold secrets and destinations, handlers choose destinations, queues
        -- limit every application's workflows of a name, and delivery is paused and
        -- resumed for the whole database: the owner's business, not the app's.
        IF fn::text LIKE 'wf\_%' AND fn::text NOT LIKE 'wf\_endpoint%'
           AND fn::text NOT LIKE 'wf\_handler%' AND fn::text NOT LIKE 'wf\_replay%'
           AND fn::text NOT LIKE 'wf\_dispatch%' AND fn::text NOT LIKE 'wf\_queue%' THEN
            EXECUTE pg_catalog.format('GRANT EXECUTE ON FUNCTION %s TO workflow_user', fn);
        END IF;
    END LOOP;
END
$$;
"#,
    name = "grants",
    finalize
);

#[pg_guard]
pub extern "C-unwind" fn _PG_init() {
    // The dispatcher and its shared memory exist only when the library is preloaded; the
    // SQL API works without them, and messages wait.
    // SAFETY: reading postmaster globals during library load.
    let preloading =
        unsafe { pg_sys::process_shared_preload_libraries_in_progress && !pg_sys::IsBinaryUpgrade };
    config::register(preloading);
    if preloading {
        wake::init_shared_memory();
        dispatcher::database::install_drop_hook();
        dispatcher::launcher::register();
    }
}

#[cfg(any(test, feature = "pg_test"))]
mod pg_tests;

/// Settings for the `#[pg_test]` cluster.
#[cfg(test)]
pub mod pg_test {
    pub fn setup(_options: Vec<&str>) {}

    pub fn postgresql_conf_options() -> Vec<&'static str> {
        vec![]
    }
}

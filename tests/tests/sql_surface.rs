//! The public SQL surface, checked against a golden file (`tests/golden/sql_surface.txt`):
//! every function with its arguments, defaults, result, volatility, security, settings and
//! who may execute it; every view with its columns and who may read it; every setting with
//! its default, range and context. An API change shows in review as a change of that file.
//!
//! After a deliberate change: `WORKFLOW_BLESS=1 cargo test -p workflow-tests --test sql_surface`
//! rewrites the file.

use std::path::PathBuf;
use std::time::Duration;
use workflow_tests::{dispatch_cluster, dispatcher_pid};

/// Who besides the owner holds `$privilege` in the ACL `$acl`, or `owner only`.
macro_rules! grantees {
    ($acl:literal, $privilege:literal, $owner:literal) => {
        concat!(
            "coalesce((SELECT string_agg(CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE a.grantee::regrole::text END,
                                         ', ' ORDER BY 1)
                         FROM aclexplode(", $acl, ") a
                        WHERE a.privilege_type = '", $privilege, "' AND a.grantee <> ", $owner, "),
                      'owner only')"
        )
    };
}

const SURFACE: &str = concat!("
WITH ext AS (SELECT oid FROM pg_catalog.pg_extension WHERE extname = 'workflow'),
functions AS (
    SELECT 'function ' || n.nspname || '.' || p.proname || '(' || pg_catalog.pg_get_function_arguments(p.oid)
           || ') → ' || pg_catalog.pg_get_function_result(p.oid)
           || ' | ' || CASE p.provolatile WHEN 'i' THEN 'immutable' WHEN 's' THEN 'stable' ELSE 'volatile' END
           || CASE WHEN p.proisstrict THEN ', strict' ELSE '' END
           || CASE WHEN p.prosecdef THEN ', security definer' ELSE '' END
           || coalesce(' | ' || array_to_string(p.proconfig, ', '), '')
           || ' | execute: ' || ", grantees!("p.proacl", "EXECUTE", "p.proowner"), " AS line
      FROM pg_catalog.pg_proc p
      JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
      JOIN pg_catalog.pg_depend d ON d.classid = 'pg_catalog.pg_proc'::regclass AND d.objid = p.oid
                                  AND d.deptype = 'e' AND d.refobjid = (SELECT oid FROM ext)),
views AS (
    SELECT 'view ' || c.oid::regclass::text || '(' || (
               SELECT string_agg(a.attname || ' ' || pg_catalog.format_type(a.atttypid, a.atttypmod), ', '
                                 ORDER BY a.attnum)
                 FROM pg_catalog.pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 AND NOT a.attisdropped)
           || ') | select: ' || ", grantees!("c.relacl", "SELECT", "c.relowner"), " AS line
      FROM pg_catalog.pg_class c
     WHERE c.relkind = 'v' AND c.relnamespace = 'workflow'::regnamespace),
settings AS (
    SELECT 'setting ' || name || ' = ' || coalesce(boot_val, '') || coalesce(' ' || unit, '')
           || ' | ' || vartype || coalesce(' ' || min_val || '..' || max_val, '') || ' | ' || context AS line
      FROM pg_catalog.pg_settings WHERE name LIKE 'workflow.%')
SELECT string_agg(line, E'\\n' ORDER BY line) FROM (
    SELECT line FROM functions UNION ALL SELECT line FROM views UNION ALL SELECT line FROM settings) s");

fn golden() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("golden/sql_surface.txt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_public_sql_surface_is_the_golden_one() {
    let client = dispatch_cluster().connect().await;
    // Every setting is defined once the library is loaded, as it is in the dispatcher.
    dispatcher_pid(&client, Duration::from_secs(30)).await;
    client.batch_execute("LOAD 'workflow'").await.unwrap();
    let surface: String = client.query_one(SURFACE, &[]).await.unwrap().get(0);
    let surface = format!("{surface}\n");
    if std::env::var_os("WORKFLOW_BLESS").is_some() {
        std::fs::write(golden(), &surface).expect("write the golden file");
        return;
    }
    let expected = std::fs::read_to_string(golden()).unwrap_or_default();
    if surface != expected {
        let added: Vec<&str> = surface
            .lines()
            .filter(|l| !expected.lines().any(|e| e == *l))
            .collect();
        let removed: Vec<&str> = expected
            .lines()
            .filter(|l| !surface.lines().any(|s| s == *l))
            .collect();
        panic!(
            "the SQL surface changed.\nnow:\n  {}\nno longer:\n  {}\nIf that is meant, run \
             WORKFLOW_BLESS=1 cargo test -p workflow-tests --test sql_surface and commit the file.",
            added.join("\n  "),
            removed.join("\n  ")
        );
    }
}

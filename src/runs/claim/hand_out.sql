-- Hands the ready runs $1, locked by one of the ready_*.sql statements in this
-- transaction, to the owner $2 for the lease $3 (NULL: each run's own), and returns each
-- run with whether it was handed out (false: failed instead, see below).
--
-- Without an owner ($2 NULL) the lease is this session's, under its own name, and bound
-- to it when $5 (its start; see sessions.rs) is given. Taking over an owner's expired
-- lease is a recovery and is counted (a checkpoint forgives the count); a run already
-- recovered $4 times in a row is failed instead: a workflow that kills every process that
-- runs it must not loop forever (the failure is counted in workflow_counts). A parked
-- run's readiness (no owner) is no recovery, and for the dispatcher's push ($6) neither is
-- taking over from a pushed owner whose push never reached its handler (still pending,
-- dead, or cancelled): an unreachable handler must not use up a workflow's recoveries.
WITH decided AS (
    SELECT r.id, k.recovery, k.recovery AND r.recovery_attempts >= $4 AS give_up
      FROM workflow.runs r
     CROSS JOIN LATERAL (
           SELECT r.owner IS NOT NULL
                  AND NOT ($6 AND EXISTS (
                          SELECT FROM workflow.outbox m
                           WHERE m.idempotency_key = 'workflow.ready:' || r.id || ':' || r.owner
                             AND m.status IN ('pending', 'dead', 'cancelled'))) AS recovery) k
     WHERE r.id = ANY ($1) AND r.status = 'running'),
handed AS (
    UPDATE workflow.runs r
       SET recovery_attempts = r.recovery_attempts + CASE WHEN d.recovery THEN 1 ELSE 0 END,
           updated_at = statement_timestamp(),
           status = CASE WHEN d.give_up THEN 'failed' ELSE 'running' END,
           error = CASE WHEN d.give_up
                        THEN format('recovery abandoned: its lease expired %s times without a checkpoint between, workflow.max_recovery_attempts is %s',
                                    r.recovery_attempts + 1, $4)
                        ELSE r.error END,
           finished_at = CASE WHEN d.give_up THEN statement_timestamp() END,
           owner = CASE WHEN d.give_up THEN NULL
                        ELSE coalesce($2, session_user || ':' || pg_backend_pid()) END,
           session_pid = CASE WHEN d.give_up OR $5 IS NULL THEN NULL ELSE pg_backend_pid() END,
           session_started = CASE WHEN d.give_up THEN NULL ELSE $5 END,
           wait_step = CASE WHEN d.give_up THEN NULL ELSE r.wait_step END,
           wait_signal = CASE WHEN d.give_up THEN NULL ELSE r.wait_signal END,
           wait_deadline = CASE WHEN d.give_up THEN NULL ELSE r.wait_deadline END,
           lease_duration = coalesce($3, r.lease_duration),
           lease_expires_at = CASE WHEN d.give_up THEN NULL
                                   ELSE clock_timestamp() + coalesce($3, r.lease_duration) END
      FROM decided d
     WHERE r.id = d.id
    RETURNING r.id, NOT d.give_up AS handed_out, r.name),
counted AS (
    INSERT INTO workflow.workflow_counts (name, status, n)
    SELECT name, 'failed', count(*) FROM handed WHERE NOT handed_out GROUP BY name)
SELECT id, handed_out FROM handed;

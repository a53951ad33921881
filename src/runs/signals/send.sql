-- Queues the signal $2 with the payload $3 and the idempotency key $4 for the run $1, or,
-- when $5 names the step of the wait it resolves, records it as that step and makes a
-- parked run ready. Returns the signal's id and whether the run became ready.
WITH sent AS (
    INSERT INTO workflow.run_signals (workflow_id, name, payload, idempotency_key, consumed_at, consumed_by)
    VALUES ($1, $2, $3, $4, CASE WHEN $5::text IS NOT NULL THEN statement_timestamp() END, $5)
    RETURNING id),
step AS (
    INSERT INTO workflow.checkpoints (workflow_id, step, output)
    SELECT $1, $5, jsonb_build_object('signal', $2::text, 'payload', $3::jsonb, 'timed_out', false)
     WHERE $5 IS NOT NULL),
run AS (
    UPDATE workflow.runs
       SET updated_at = statement_timestamp(),
           wait_step = CASE WHEN $5 IS NULL THEN wait_step END,
           wait_signal = CASE WHEN $5 IS NULL THEN wait_signal END,
           wait_deadline = CASE WHEN $5 IS NULL THEN wait_deadline END,
           lease_expires_at = CASE WHEN $5 IS NOT NULL AND owner IS NULL
                                   THEN least(coalesce(lease_expires_at, 'infinity'), clock_timestamp())
                                   ELSE lease_expires_at END
     WHERE id = $1
    RETURNING $5 IS NOT NULL AND owner IS NULL AS ready)
SELECT (SELECT id FROM sent), (SELECT ready FROM run);

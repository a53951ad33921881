-- Consumes the oldest queued signal $3 of the run $1 into the step $2; returns the
-- step's output, none if nothing is queued.
WITH oldest AS (
    SELECT id, payload FROM workflow.run_signals
     WHERE workflow_id = $1 AND name = $3 AND consumed_at IS NULL
     ORDER BY id LIMIT 1
       FOR UPDATE),
consumed AS (
    UPDATE workflow.run_signals s
       SET consumed_at = statement_timestamp(), consumed_by = $2
      FROM oldest o WHERE s.id = o.id
    RETURNING o.payload)
INSERT INTO workflow.checkpoints (workflow_id, step, output)
SELECT $1, $2, jsonb_build_object('signal', $3::text, 'payload', payload, 'timed_out', false)
  FROM consumed
RETURNING output;

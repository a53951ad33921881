-- Writes the runs of the durable steps a replay may send: of the endpoint $1 (NULL: URL
-- targets), in a status of $3, among the first $4 messages finished since $2 (replay.sql's
-- $1, $4, $6 and $2). It runs before replay.sql looks at them, so that a finish racing
-- the replay either comes first and is seen, or waits for it (and under REPEATABLE READ
-- fails instead of missing it). Runs are locked before messages, as a finish locks them.
UPDATE workflow.runs r SET updated_at = statement_timestamp()
 WHERE r.id = ANY (ARRAY(
           SELECT m.workflow_id FROM workflow.outbox m
            WHERE m.id = ANY (ARRAY(
                      SELECT e.id FROM workflow.outbox e
                       WHERE (e.status <> 'pending') IS TRUE AND e.finished_at >= $2
                       ORDER BY e.finished_at
                       LIMIT $4))
              AND m.step IS NOT NULL AND m.endpoint IS NOT DISTINCT FROM $1
              AND m.status::text = ANY ($3)));

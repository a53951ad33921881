-- Records finished durable HTTP steps: the answer $3 (JSON text, see record.rs,
-- `step_output`) becomes the checkpoint of the step $2 of the workflow $1, position by
-- position in the three arrays, unless the workflow finished meanwhile, the step was
-- recorded some other way, or the wait for it timed out (its deadline has passed: the
-- timeout wins, as over a late signal). Returns how many names it notified.
--
-- A run parked waiting for the step becomes ready, and its name is notified; a run
-- claimed meanwhile keeps its lease and finds the step on its next wait.
WITH recorded AS (
    INSERT INTO workflow.checkpoints (workflow_id, step, output)
    SELECT o.workflow_id, o.step, o.output::jsonb
      FROM unnest($1::uuid[], $2::text[], $3::text[]) AS o(workflow_id, step, output)
      JOIN workflow.runs r ON r.id = o.workflow_id AND r.status = 'running'
     WHERE r.id = ANY ($1)
       AND (r.wait_step = o.step AND r.wait_signal IS NULL
            AND r.wait_deadline <= clock_timestamp()) IS NOT TRUE
    ON CONFLICT (workflow_id, step) DO NOTHING
    RETURNING workflow_id, step),
resolved AS (
    UPDATE workflow.runs r
       SET wait_step = NULL, wait_signal = NULL, wait_deadline = NULL,
           lease_expires_at = CASE WHEN r.owner IS NULL
                                   THEN least(coalesce(r.lease_expires_at, 'infinity'), clock_timestamp())
                                   ELSE r.lease_expires_at END,
           updated_at = clock_timestamp()
     WHERE r.id = ANY (ARRAY(SELECT workflow_id FROM recorded))
       AND r.wait_signal IS NULL
       AND EXISTS (SELECT FROM recorded s WHERE s.workflow_id = r.id AND s.step = r.wait_step)
    RETURNING r.name, r.owner IS NULL AS ready),
notified AS (
    SELECT pg_notify('workflow_ready', name) FROM (SELECT DISTINCT name FROM resolved WHERE ready) n)
SELECT count(*) FROM notified;

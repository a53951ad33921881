-- The status of the message $1, and for a durable step whose workflow decided without it,
-- what it decided (G10): the step recorded, the wait for it timed out, or the workflow's
-- status.
SELECT m.status,
       CASE WHEN m.step IS NULL THEN NULL
            WHEN EXISTS (SELECT FROM workflow.checkpoints c
                          WHERE c.workflow_id = m.workflow_id AND c.step = m.step)
            THEN 'recorded'
            WHEN r.status IS DISTINCT FROM 'running' THEN coalesce(r.status, 'removed')
            WHEN r.wait_step = m.step AND r.wait_signal IS NULL
                 AND r.wait_deadline <= clock_timestamp()
            THEN 'timed out'
       END
  FROM workflow.outbox m LEFT JOIN workflow.runs r ON r.id = m.workflow_id
 WHERE m.id = $1;

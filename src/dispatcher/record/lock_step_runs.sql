-- Locks the running runs of the durable steps among the messages $1, skipping the runs
-- someone else holds; returns the messages whose run is held, whose outcomes wait for a
-- later round.
--
-- A durable step is recorded with its run locked, like every write of a step, so that a
-- wait parking the run either sees the step or is woken by it. A run an application
-- holds is never waited for.
WITH steps AS (
    SELECT m.id, m.workflow_id FROM workflow.outbox m
     WHERE m.id = ANY ($1) AND m.step IS NOT NULL),
locked AS (
    SELECT r.id FROM workflow.runs r
     WHERE r.id = ANY (ARRAY(SELECT workflow_id FROM steps)) AND r.status = 'running'
       FOR NO KEY UPDATE SKIP LOCKED)
SELECT s.id FROM steps s
 WHERE s.workflow_id <> ALL (ARRAY(SELECT id FROM locked))
   AND s.workflow_id = ANY (ARRAY(
           SELECT r.id FROM workflow.runs r
            WHERE r.id = ANY (ARRAY(SELECT workflow_id FROM steps)) AND r.status = 'running'));

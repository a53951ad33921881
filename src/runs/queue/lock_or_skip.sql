-- Locks the queue of the workflow name $1 for this claim, unless another claimer holds it.
-- Returns whether it locked it, and whether the name has a queue at all. Held until this
-- transaction ends: the statements after it see every lease a claimer of the name
-- committed before.
WITH locked AS (
    SELECT name FROM workflow.queue_settings WHERE name = $1 FOR NO KEY UPDATE SKIP LOCKED)
SELECT EXISTS (SELECT FROM locked) AS locked,
       EXISTS (SELECT FROM workflow.queue_settings WHERE name = $1) AS queued;

-- Locks up to $1 ready runs of any name without a queue, oldest expiry first, skipping the
-- runs another claimer holds locked; hand_out.sql then hands them out. (The names with a
-- queue are claimed within its limits afterwards: runs/queue.)
--
-- names: every name with a running workflow, found by skipping through runs_claimable one
-- name at a time (the last name is followed by a NULL row that ends the walk); each name's
-- oldest ready runs come from the same index, so the work grows with the number of names,
-- not of runs (the same walk as dispatcher/ready/announce.sql). The chosen runs are then
-- locked by key, each one's readiness checked again on the row.
WITH RECURSIVE names (name) AS (
    (SELECT name FROM workflow.runs WHERE (status = 'running') IS TRUE ORDER BY name LIMIT 1)
    UNION ALL
    SELECT (SELECT r.name FROM workflow.runs r
             WHERE (r.status = 'running') IS TRUE AND r.name > n.name
             ORDER BY r.name LIMIT 1)
      FROM names n WHERE n.name IS NOT NULL),
ready AS (
    SELECT c.id
      FROM names n
     CROSS JOIN LATERAL (
           SELECT r.id, r.lease_expires_at FROM workflow.runs r
            WHERE r.name = n.name AND (r.status = 'running') IS TRUE
              AND r.lease_expires_at <= (SELECT clock_timestamp())
            ORDER BY r.lease_expires_at LIMIT $1) c
     WHERE NOT EXISTS (SELECT FROM workflow.queue_settings q WHERE q.name = n.name)
     ORDER BY c.lease_expires_at LIMIT $1)
SELECT id
  FROM workflow.runs
 WHERE id = ANY (ARRAY(SELECT id FROM ready))
   AND status = 'running' AND lease_expires_at <= clock_timestamp()
 ORDER BY lease_expires_at
   FOR NO KEY UPDATE SKIP LOCKED;

-- The workflow names with a queue and a ready workflow, with a push handler too when $1
-- (the push), in a random order: claims of any name take these within their limits, one
-- name at a time, and no name's turn always comes last.
SELECT q.name FROM workflow.queue_settings q
 WHERE (NOT $1 OR EXISTS (SELECT FROM workflow.handlers h WHERE h.name = q.name))
   -- The oldest expiry in runs_claimable's order, not an EXISTS (see finish/finish.sql).
   AND (SELECT r.lease_expires_at FROM workflow.runs r
         WHERE r.name = q.name AND (r.status = 'running') IS TRUE
           AND r.lease_expires_at <= (SELECT clock_timestamp())
         ORDER BY r.lease_expires_at LIMIT 1) IS NOT NULL
 ORDER BY random();

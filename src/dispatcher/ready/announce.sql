-- Notifies each name with a running workflow whose lease expired after $1 (NULL: ever)
-- and by now. Returns the now it looked up to, the seconds until the next expiry, how many
-- names it notified, and whether any name has a push handler.
--
-- names: every name with a running workflow, found by skipping through runs_claimable one
-- name at a time, so the work grows with the names, not the runs (the last name is
-- followed by a NULL row that ends the walk); each name's expiries come from the same
-- index. The same walk is written in runs/claim/ready_of_any_name.sql.
WITH RECURSIVE names (name) AS (
    (SELECT name FROM workflow.runs WHERE (status = 'running') IS TRUE ORDER BY name LIMIT 1)
    UNION ALL
    SELECT (SELECT r.name FROM workflow.runs r
             WHERE (r.status = 'running') IS TRUE AND r.name > n.name
             ORDER BY r.name LIMIT 1)
      FROM names n WHERE n.name IS NOT NULL),
now AS MATERIALIZED (SELECT clock_timestamp() AS t),
per_name AS MATERIALIZED (
    SELECT n.name,
           EXISTS (SELECT FROM workflow.runs r
                    WHERE r.name = n.name AND (r.status = 'running') IS TRUE
                      AND r.lease_expires_at > coalesce($1, '-infinity')
                      AND r.lease_expires_at <= (SELECT t FROM now)) AS became_ready,
           (SELECT r.lease_expires_at FROM workflow.runs r
             WHERE r.name = n.name AND (r.status = 'running') IS TRUE
               AND r.lease_expires_at > (SELECT t FROM now)
             ORDER BY r.lease_expires_at LIMIT 1) AS next_expiry
      FROM names n WHERE n.name IS NOT NULL),
sent AS (
    SELECT pg_notify('workflow_ready', name) FROM per_name WHERE became_ready)
SELECT (SELECT t FROM now) AS looked_until,
       extract(epoch FROM (SELECT min(next_expiry) FROM per_name) - (SELECT t FROM now))::float8
           AS next_expiry_in,
       (SELECT count(*) FROM sent) AS notified,
       EXISTS (SELECT FROM workflow.handlers) AS any_handler;

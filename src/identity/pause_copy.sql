-- Pauses this database, $1 its identity, as a copy of another: every row of
-- workflow.dispatch gets the same pause and reason (a row the restore brought and the
-- install's own), unless one is paused already, whose reason stays. Returns the reason.
WITH paused AS (
    SELECT max(coalesce(paused_reason, 'paused')) FILTER (WHERE paused_at IS NOT NULL) AS reason
      FROM workflow.dispatch),
reason AS (
    SELECT coalesce(p.reason,
                    'a copy of another database (this one is ' || $1 || '): restored from a '
                    || 'dump or made from a template, it delivers and pushes nothing until '
                    || 'wf_dispatch_resume()') AS text
      FROM paused p),
updated AS (
    UPDATE workflow.dispatch
       SET paused_at = coalesce(paused_at, clock_timestamp()),
           paused_reason = (SELECT text FROM reason)
     RETURNING 1),
inserted AS (
    INSERT INTO workflow.dispatch (identity, paused_at, paused_reason)
    SELECT $1, clock_timestamp(), (SELECT text FROM reason)
     WHERE NOT EXISTS (SELECT FROM workflow.dispatch))
SELECT text FROM reason;

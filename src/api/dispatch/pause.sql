-- Pauses delivery for this database ($1 its identity) with the reason $2: every row of
-- workflow.dispatch is paused (a copy's row stays beside the install's, and still names
-- the other database). Pausing again keeps the first pause's time, and its reason when $2
-- is NULL.
WITH updated AS (
    UPDATE workflow.dispatch
       SET paused_at = coalesce(paused_at, clock_timestamp()),
           paused_reason = coalesce($2, paused_reason, 'paused by wf_dispatch_pause()')
    RETURNING 1)
INSERT INTO workflow.dispatch (identity, paused_at, paused_reason)
SELECT $1, clock_timestamp(), coalesce($2, 'paused by wf_dispatch_pause()')
 WHERE NOT EXISTS (SELECT FROM updated);

-- Folds the committed count deltas: the messages' into one row per status, endpoint and
-- sign, so that `wf_stats` sums a handful of rows and the positive rows stay a counter
-- that only grows (every writer adds rows of one sign); the workflows' into one row per
-- name and status (they only grow). Rows of transactions still open stay as they are.
WITH messages AS (DELETE FROM workflow.message_counts RETURNING status, n, endpoint),
messages_folded AS (
    INSERT INTO workflow.message_counts (status, n, endpoint)
    SELECT status, sum(n), endpoint FROM messages
     GROUP BY status, endpoint, n > 0 HAVING sum(n) <> 0),
workflows AS (DELETE FROM workflow.workflow_counts RETURNING name, status, n)
INSERT INTO workflow.workflow_counts (name, status, n)
SELECT name, status, sum(n) FROM workflows GROUP BY name, status;

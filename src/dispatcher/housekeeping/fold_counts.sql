-- Folds the committed count deltas into one row per status, endpoint and sign, so that
-- `wf_stats` sums a handful of rows, and the positive rows stay a counter that only grows
-- (every writer adds rows of one sign). Rows of transactions still open stay as they are.
WITH folded AS (DELETE FROM workflow.message_counts RETURNING status, n, endpoint)
INSERT INTO workflow.message_counts (status, n, endpoint)
SELECT status, sum(n), endpoint FROM folded GROUP BY status, endpoint, n > 0 HAVING sum(n) <> 0;

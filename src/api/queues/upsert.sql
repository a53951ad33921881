-- Sets the queue of the workflow name $1: at most $2 of its workflows leased at once, $3
-- of one tenant's, $4 leases started a second. NULL keeps what is set (no limit, for a new
-- queue); 0 removes the limit. A rate set anew starts with a full bucket (a second's
-- worth, or one lease).
INSERT INTO workflow.queue_settings AS q
       (name, max_running, max_running_per_tenant, rate_per_second, tokens)
VALUES ($1, nullif($2, 0), nullif($3, 0), nullif($4, 0), greatest(coalesce(nullif($4, 0), 1), 1))
ON CONFLICT (name) DO UPDATE
   SET max_running = CASE WHEN $2 IS NULL THEN q.max_running ELSE nullif($2, 0) END,
       max_running_per_tenant = CASE WHEN $3 IS NULL THEN q.max_running_per_tenant
                                     ELSE nullif($3, 0) END,
       rate_per_second = CASE WHEN $4 IS NULL THEN q.rate_per_second ELSE nullif($4, 0) END,
       tokens = CASE WHEN $4 IS NULL THEN q.tokens ELSE greatest(coalesce(nullif($4, 0), 1), 1) END,
       refilled_at = CASE WHEN $4 IS NULL THEN q.refilled_at ELSE statement_timestamp() END,
       updated_at = statement_timestamp();

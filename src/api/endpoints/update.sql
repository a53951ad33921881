-- Changes the endpoint $1 without touching its URL ($2, NULL here: upsert.sql takes a
-- URL); there is nothing to create. Returns true if the endpoint exists.
--
-- The fields are $3 the secrets, $4 the headers, $5 the timeout, $6 the most attempts, $7
-- the most requests in flight, $8 the requests per second, $9 the event types and $10 the
-- retry schedule. Each of $4…$10 changes only when it is given, the documented empty
-- values ('{}', 0, '0') resetting it; $11 says whether $3 replaces the secrets, which ends
-- a rotation.
UPDATE workflow.endpoint_settings AS e SET
       url = COALESCE($2, e.url),
       secrets = CASE WHEN $11 THEN COALESCE($3, '{}') ELSE e.secrets END,
       retiring_secrets = CASE WHEN $11 THEN NULL ELSE e.retiring_secrets END,
       retiring_until = CASE WHEN $11 THEN NULL ELSE e.retiring_until END,
       headers = CASE WHEN $4 IS NULL THEN e.headers ELSE nullif($4, '{}') END,
       timeout = CASE WHEN $5 IS NULL THEN e.timeout ELSE nullif($5, '0') END,
       max_attempts = CASE WHEN $6 IS NULL THEN e.max_attempts ELSE nullif($6, 0) END,
       max_concurrency = CASE WHEN $7 IS NULL THEN e.max_concurrency ELSE nullif($7, 0) END,
       rate_per_second = CASE WHEN $8 IS NULL THEN e.rate_per_second ELSE nullif($8, 0) END,
       event_types = CASE WHEN $9 IS NULL THEN e.event_types ELSE nullif($9, '{}') END,
       retry_schedule = CASE WHEN $10 IS NULL THEN e.retry_schedule ELSE nullif($10, '{}') END,
       updated_at = statement_timestamp()
 WHERE e.name = $1
RETURNING true;

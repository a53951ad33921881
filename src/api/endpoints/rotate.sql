-- Rotates the secrets of the endpoint $1: the new secret $2 signs from now on, and the
-- current ones (with any still being rotated out) go on signing until $3 from now. At most
-- $4 secrets are being rotated out at once, the newest: rotating faster than `keep_old`
-- retires the oldest early, so that a request never carries more than $4 + 1 signatures.
-- Returns the name if the endpoint exists.
UPDATE workflow.endpoint_settings e
   SET retiring_secrets = (SELECT k[greatest(cardinality(k) - $4 + 1, 1):]
                             FROM (SELECT CASE WHEN e.retiring_until > statement_timestamp()
                                               THEN e.retiring_secrets ELSE '{}' END
                                          || e.secrets AS k) kept),
       retiring_until = statement_timestamp() + $3,
       secrets = ARRAY[$2],
       updated_at = statement_timestamp()
 WHERE name = $1
RETURNING name;

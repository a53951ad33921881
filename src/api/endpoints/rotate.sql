-- A rotation: the new secret signs from now on, and the current ones (with any still
-- being rotated out) go on signing until `$3` from now.
UPDATE workflow.endpoint_settings e
   SET retiring_secrets = CASE WHEN e.retiring_until > statement_timestamp()
                               THEN e.retiring_secrets ELSE '{}' END || e.secrets,
       retiring_until = statement_timestamp() + $3,
       secrets = ARRAY[$2],
       updated_at = statement_timestamp()
 WHERE name = $1
RETURNING name;

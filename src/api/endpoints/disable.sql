-- Disables the endpoint $1 by hand, for the reason $2 (NULL: the reason it has if it is
-- disabled already, else a default one); returns its name if it exists. Its messages
-- wait, parked by the next claim that finds them; nothing is attempted until it is
-- enabled. A second disable keeps the first one's time.
UPDATE workflow.endpoint_settings
   SET disabled_at = coalesce(disabled_at, statement_timestamp()),
       disabled_reason = coalesce($2, CASE WHEN disabled_at IS NULL
                                           THEN 'disabled by its owner (wf_endpoint_disable)'
                                           ELSE disabled_reason END),
       updated_at = statement_timestamp()
 WHERE name = $1
RETURNING name;

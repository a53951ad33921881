-- Disables the endpoint by hand: its messages wait, parked by the next claim that finds
-- them; nothing is attempted until it is enabled.
UPDATE workflow.endpoint_settings
   SET disabled_at = coalesce(disabled_at, statement_timestamp()),
       disabled_reason = coalesce($2, CASE WHEN disabled_at IS NULL
                                           THEN 'disabled by its owner (wf_endpoint_disable)'
                                           ELSE disabled_reason END),
       updated_at = statement_timestamp()
 WHERE name = $1
RETURNING name;

-- Disables the named endpoints of the messages $1, which a 410 Gone answered; their
-- messages wait for wf_endpoint_enable. An endpoint the owner is changing right now is
-- skipped: its message is due again at once, and the next 410 disables it.
UPDATE workflow.endpoint_settings e
   SET disabled_at = clock_timestamp(),
       disabled_reason = 'the endpoint answered 410 Gone',
       updated_at = clock_timestamp()
 WHERE e.name = ANY (ARRAY(
           SELECT d.name FROM workflow.endpoint_settings d
            WHERE d.name = ANY (ARRAY(SELECT m.endpoint FROM workflow.outbox m WHERE m.id = ANY ($1)))
              AND d.disabled_at IS NULL
              FOR NO KEY UPDATE SKIP LOCKED));

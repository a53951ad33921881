-- Drops the secrets a rotation replaced once their time to go on signing is up
-- (`wf_endpoint_rotate`). An endpoint the owner is changing right now waits for the next
-- pass; the claim stops signing with them on time either way.
UPDATE workflow.endpoint_settings e SET retiring_secrets = NULL, retiring_until = NULL
 WHERE e.name = ANY (ARRAY(
           SELECT d.name FROM workflow.endpoint_settings d
            WHERE d.retiring_until <= clock_timestamp()
              FOR NO KEY UPDATE SKIP LOCKED));

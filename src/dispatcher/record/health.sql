-- Updates the named endpoints' health, on the rounds that change it: an endpoint's first
-- failure since its last success (`$2`, none of them also succeeding this round, `$1`)
-- starts its failing time; a success ends it; and an endpoint that has failed throughout
-- `workflow.endpoint_disable_after` (`$3`, NULL: never) is disabled, its messages kept
-- waiting. An endpoint the owner is changing right now is skipped until a later outcome.
WITH recovered AS (
    UPDATE workflow.endpoint_settings e SET failing_since = NULL
     WHERE e.name = ANY (ARRAY(
               SELECT d.name FROM workflow.endpoint_settings d
                WHERE d.name = ANY ($1) AND d.failing_since IS NOT NULL
                  FOR NO KEY UPDATE SKIP LOCKED))),
failing AS (
    UPDATE workflow.endpoint_settings e SET failing_since = clock_timestamp()
     WHERE e.name = ANY (ARRAY(
               SELECT d.name FROM workflow.endpoint_settings d
                WHERE d.name = ANY ($2) AND d.name <> ALL ($1) AND d.failing_since IS NULL
                  FOR NO KEY UPDATE SKIP LOCKED))),
disabled AS (
    UPDATE workflow.endpoint_settings e
       SET disabled_at = clock_timestamp(),
           disabled_reason = 'no attempt succeeded since ' || e.failing_since
                             || ' (workflow.endpoint_disable_after)',
           updated_at = clock_timestamp()
     WHERE e.name = ANY (ARRAY(
               SELECT d.name FROM workflow.endpoint_settings d
                WHERE d.name = ANY ($2) AND d.name <> ALL ($1) AND d.disabled_at IS NULL
                  AND d.failing_since <= clock_timestamp() - $3
                  FOR NO KEY UPDATE SKIP LOCKED)))
SELECT 1;

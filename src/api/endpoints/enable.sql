-- Enables the endpoint $1 and lets go of everything waiting for it (G11): those of its
-- messages waiting on their retry schedule (parked at a failing destination's limit, or
-- tried before and due later) are due now; a message scheduled for later and never tried
-- keeps its time. The flag (unpark_messages) has the dispatcher unpark the messages parked
-- while the endpoint was disabled and forget its failing state (parking/unpark.sql), so
-- its next request is no probe. It is set on every call, so that an enable also frees
-- messages parked while the endpoint was disabled by hand. The failing time starts again:
-- the endpoint gets a whole workflow.endpoint_disable_after to recover.
WITH enabled AS (
    UPDATE workflow.endpoint_settings
       SET disabled_at = NULL, disabled_reason = NULL, updated_at = statement_timestamp(),
           unpark_messages = true, failing_since = NULL
     WHERE name = $1
    RETURNING name),
parked_due AS (
    UPDATE workflow.outbox m SET next_attempt_at = statement_timestamp()
     WHERE m.endpoint = (SELECT name FROM enabled) AND m.parked IS NOT NULL
       AND m.next_attempt_at > statement_timestamp()),
retried_due AS (
    UPDATE workflow.outbox m SET next_attempt_at = statement_timestamp()
     WHERE (m.status = 'pending') IS TRUE AND m.parked IS NULL
       AND m.next_attempt_at > statement_timestamp()
       AND m.endpoint = (SELECT name FROM enabled) AND m.attempts > 0)
SELECT name FROM enabled;

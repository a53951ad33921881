-- Resolves the wait of the run $1, whose step has just been recorded: the run goes on as
-- a checkpoint would leave it — its lease renewed if it has an owner, ready if it is
-- parked. Returns whether it is parked (no owner).
UPDATE workflow.runs
   SET wait_step = NULL, wait_signal = NULL, wait_deadline = NULL,
       recovery_attempts = 0,
       lease_expires_at = CASE WHEN owner IS NULL
                               THEN least(coalesce(lease_expires_at, 'infinity'), clock_timestamp())
                               ELSE clock_timestamp() + lease_duration END,
       updated_at = statement_timestamp()
 WHERE id = $1
RETURNING owner IS NULL;

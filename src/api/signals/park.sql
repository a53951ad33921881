-- Parks the run on a wait: no owner, claimable from the deadline on (never without one).
UPDATE workflow.runs
   SET owner = NULL, session_pid = NULL, session_started = NULL,
       wait_step = $2, wait_signal = $3,
       wait_deadline = clock_timestamp() + $4, lease_expires_at = clock_timestamp() + $4,
       updated_at = statement_timestamp()
 WHERE id = $1
RETURNING wait_deadline;

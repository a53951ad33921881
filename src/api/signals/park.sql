-- Parks the run $1 on a wait for its step $2, which the signal $3 answers (NULL: the
-- durable HTTP step $2's message), with the timeout $4: no owner, claimable from the
-- deadline on (never without one, $4 NULL). Returns the deadline.
UPDATE workflow.runs
   SET owner = NULL, session_pid = NULL, session_started = NULL,
       wait_step = $2, wait_signal = $3,
       wait_deadline = clock_timestamp() + $4, lease_expires_at = clock_timestamp() + $4,
       updated_at = statement_timestamp()
 WHERE id = $1
RETURNING wait_deadline;

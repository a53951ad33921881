-- The workflow $1 as `wf_status` shows it.
SELECT name, status, input, output, error, steps_done, last_step,
       created_at, updated_at, finished_at, owner, lease_expires_at, recovery_attempts,
       idempotency_key, parent, waiting_for, waiting_until, tenant
  FROM workflow.workflows WHERE id = $1;

-- The message $1 as `wf_message` shows it.
SELECT target, status, attempts, next_attempt_at, last_status_code, last_error,
       delivered_at, created_at, webhook_id
  FROM workflow.messages WHERE id = $1;

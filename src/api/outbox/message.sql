-- One message as `wf_message_status` shows it.
SELECT target, status, attempts, next_attempt_at, last_status_code, last_error,
       delivered_at, created_at, webhook_id
  FROM workflow.messages WHERE id = $1;

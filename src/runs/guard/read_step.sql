-- One row: whether the run $1 exists, and the output of its step $2 if it was recorded.
SELECT r.id IS NOT NULL, c.output
  FROM (SELECT $1::uuid AS id) k
  LEFT JOIN workflow.runs r ON r.id = k.id
  LEFT JOIN workflow.checkpoints c ON c.workflow_id = k.id AND c.step = $2;

-- One row: whether the run exists, and the step's output if it was recorded.
SELECT r.id IS NOT NULL, c.output
  FROM (SELECT $1::uuid AS id) k
  LEFT JOIN workflow.runs r ON r.id = k.id
  LEFT JOIN workflow.checkpoints c ON c.workflow_id = k.id AND c.step = $2;

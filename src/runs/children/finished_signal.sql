-- The parent of the finished run $1, if it has one, and the payload of its
-- `workflow.finished` signal.
SELECT parent, jsonb_build_object('workflow', id, 'name', name, 'status', status,
                                  'output', output, 'error', error)
  FROM workflow.runs WHERE id = $1 AND parent IS NOT NULL;

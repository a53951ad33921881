-- Whether the dispatcher may deliver for this database, $1 its identity: the reason it is
-- paused (NULL: it is not), and whether a row names another database (a copy its
-- dispatcher has not paused yet). Also true when no row is left (a hand edit): the
-- dispatcher then pauses rather than guess. Read-only; one row.
SELECT max(coalesce(paused_reason, 'paused')) FILTER (WHERE paused_at IS NOT NULL) AS paused_reason,
       coalesce(bool_or(identity <> $1), true) AS foreign_identity
  FROM workflow.dispatch;

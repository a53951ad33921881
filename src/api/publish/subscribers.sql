-- The enabled endpoints whose `event_types` match `$1`: the type itself, `*`, or a
-- `prefix.*` it starts with. KEY SHARE: none is deleted under its new message.
SELECT e.name FROM workflow.endpoint_settings e
 WHERE e.disabled_at IS NULL AND e.event_types IS NOT NULL
   AND EXISTS (SELECT FROM unnest(e.event_types) p
                WHERE p = $1 OR p = '*'
                   OR (right(p, 2) = '.*' AND starts_with($1, left(p, -1))))
 ORDER BY e.name
   FOR KEY SHARE;

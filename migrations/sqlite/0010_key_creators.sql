-- An API key is worth at most its creator's current role: from now on leaving the agency
-- revokes the creator's keys and being made a member lowers their admin keys, in the same
-- transaction. Keys made before that rule are brought in line here once (pipepay also caps
-- every key at its creator's role when it is used, so this only makes the list tell the truth).
UPDATE api_keys
SET revoked_at = CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)
WHERE revoked_at IS NULL
  AND NOT EXISTS (
    SELECT 1 FROM memberships m WHERE m.agency_id = api_keys.agency_id AND m.user_id = api_keys.created_by
  );

UPDATE api_keys
SET role = 'member'
WHERE revoked_at IS NULL
  AND role = 'admin'
  AND EXISTS (
    SELECT 1 FROM memberships m
    WHERE m.agency_id = api_keys.agency_id AND m.user_id = api_keys.created_by AND m.role = 'member'
  );

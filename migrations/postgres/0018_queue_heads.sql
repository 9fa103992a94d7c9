-- Issue 14: the claim reads one row per client account with work, not every ready job.
-- `ready_at` is never later than the account's earliest ready job (NULL: no ready job);
-- `busy_until` is never later than the lease of its running job (NULL: none running). Both
-- are kept by the queue's statements (store::jobs), and a claim that finds them stale puts
-- them right, so they may be early but never late: work is never hidden, at worst looked at
-- once for nothing.
ALTER TABLE queue_turns ADD COLUMN ready_at BIGINT;
ALTER TABLE queue_turns ADD COLUMN busy_until BIGINT;

INSERT INTO queue_turns (client_id, served_at)
SELECT DISTINCT client_id, 0 FROM jobs WHERE state IN ('ready', 'running')
ON CONFLICT (client_id) DO NOTHING;

UPDATE queue_turns SET
    ready_at = (SELECT MIN(run_at) FROM jobs j WHERE j.client_id = queue_turns.client_id AND j.state = 'ready'),
    busy_until = (SELECT MAX(lease_until) FROM jobs j WHERE j.client_id = queue_turns.client_id AND j.state = 'running');

-- Only accounts with work, least recently served first: the claim walks this in order and
-- stops at the first few it can serve.
CREATE INDEX queue_turns_waiting ON queue_turns (served_at, client_id)
    WHERE ready_at IS NOT NULL OR busy_until IS NOT NULL;

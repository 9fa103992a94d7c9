-- When reconciliation last asked Flutterwave about a link. Links are checked in turn, least
-- recently checked first, so links nobody pays (they stay open) never crowd out a newer one
-- whose payment's webhook was lost.
ALTER TABLE payment_links ADD COLUMN checked_at BIGINT;
CREATE INDEX payment_links_to_check ON payment_links (client_id, checked_at);

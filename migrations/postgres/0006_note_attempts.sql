-- When a note was first sent to Kommo. A note sent but not recorded as posted may be on the
-- lead already (Kommo took it and its answer was lost, or pipepay stopped before recording):
-- the next attempt reads the lead's notes before sending it again.
ALTER TABLE payment_links ADD COLUMN note_attempted_at BIGINT;
ALTER TABLE payment_links ADD COLUMN paid_note_attempted_at BIGINT;

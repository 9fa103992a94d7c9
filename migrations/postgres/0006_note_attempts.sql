-- The words of a note as first sent to Kommo, and when (ms). A note sent but not recorded as
-- posted may be on the lead already (Kommo took it and its answer was lost, or pipepay stopped
-- before recording it): the next attempt looks for these same words among the lead's notes
-- made since then, and sends them, not a text rendered afresh (a template edited meanwhile,
-- or a link since replaced, would read differently and be sent twice).
ALTER TABLE payment_links ADD COLUMN note_attempt TEXT;
ALTER TABLE payment_links ADD COLUMN note_attempted_at BIGINT;
ALTER TABLE payment_links ADD COLUMN paid_note_attempt TEXT;
ALTER TABLE payment_links ADD COLUMN paid_note_attempted_at BIGINT;
ALTER TABLE lead_notices ADD COLUMN attempt TEXT;
ALTER TABLE lead_notices ADD COLUMN attempted_at BIGINT;

-- Kommo's adaptive pace per account (issue #12): after a 429 the account's requests are spaced
-- wider and recover gradually. Shared here so every instance slows down, not only the one told.
-- The pace ramps from `pace_start_us` (the spacing right after the cut) from `pace_from_us`
-- (wall-clock microseconds when the cut's hold ends); NULL means the configured pace.
ALTER TABLE kommo_rate ADD COLUMN pace_from_us BIGINT;
ALTER TABLE kommo_rate ADD COLUMN pace_start_us BIGINT;

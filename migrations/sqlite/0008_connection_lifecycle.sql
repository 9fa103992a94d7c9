-- Marketplace installs (issue #12): the same install call made again (same code) is one row,
-- and unclaimed installs are forgotten after PIPEPAY_KOMMO_INSTALL_TTL, oldest first.
ALTER TABLE kommo_installs ADD COLUMN code_hash BLOB;
CREATE UNIQUE INDEX kommo_installs_by_code ON kommo_installs (code_hash);
CREATE INDEX kommo_installs_by_age ON kommo_installs (created_at);

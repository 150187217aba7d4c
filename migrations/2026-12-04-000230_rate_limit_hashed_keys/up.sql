-- Rate-limit windows were named in plain text ('login_fail:<address>:<ip>') and an account's
-- erasure deleted every row whose name contained its address, so erasing 'lice@x' cleared
-- the lockout of 'alice@x'. Names are now SHA-256 hashes (api/src/auth/rate_limit.rs), and
-- `subject` is the hash of the one identifier (address, user id or IP) a window belongs to:
-- the table names nobody, and an erasure deletes exactly its own windows.
--
-- The old rows cannot be renamed here (their text is not split unambiguously into parts);
-- they are dropped. Windows are short (15 minutes to an hour by default), so this only ends
-- the lockouts and caps running at the moment of the upgrade.
DELETE FROM rate_limits;
ALTER TABLE rate_limits ADD COLUMN subject text NOT NULL;
CREATE INDEX rate_limits_subject_idx ON rate_limits (subject);

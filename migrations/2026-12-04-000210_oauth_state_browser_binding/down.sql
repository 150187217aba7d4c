ALTER TABLE oauth_states DROP COLUMN browser_nonce_hash;

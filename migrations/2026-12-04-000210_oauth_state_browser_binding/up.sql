-- The SHA-256 of the nonce in the browser's gi2_oauth_state cookie: the callback must come
-- from the browser that started the sign-in (login CSRF). Pending sign-ins started before
-- this have no nonce and could never finish; they are dropped (they live ten minutes).
DELETE FROM oauth_states;
ALTER TABLE oauth_states ADD COLUMN browser_nonce_hash bytea NOT NULL;

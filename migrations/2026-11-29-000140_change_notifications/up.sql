-- Every process that serves HTTP keeps credential checks and generation pages in memory
-- (api/src/read_cache.rs). These triggers tell it, on commit, whose entries went stale,
-- whichever process or tool made the change: 'a:<user id>' for credentials, 'g:<user id>'
-- for generations. PostgreSQL folds identical notifications of one transaction into one.

-- The argument names the column holding the user's id (`id` on users, `user_id` elsewhere).
CREATE FUNCTION gi2_notify_credentials() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('gi2_changes', 'a:' || (to_jsonb(OLD) ->> TG_ARGV[0]));
    RETURN NULL;
END $$;

CREATE FUNCTION gi2_notify_generations() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF TG_OP <> 'DELETE' THEN
        PERFORM pg_notify('gi2_changes', 'g:' || NEW.user_id::text);
    END IF;
    IF TG_OP <> 'INSERT' THEN
        PERFORM pg_notify('gi2_changes', 'g:' || OLD.user_id::text);
    END IF;
    RETURN NULL;
END $$;

-- Only the columns a credential check reads: the once-a-minute "last used" writes do not
-- flush anything.
CREATE TRIGGER users_notify_credentials AFTER UPDATE OF disabled_at OR DELETE ON users
    FOR EACH ROW EXECUTE FUNCTION gi2_notify_credentials('id');
CREATE TRIGGER sessions_notify_credentials AFTER UPDATE OF revoked_at, expires_at, user_id OR DELETE ON sessions
    FOR EACH ROW EXECUTE FUNCTION gi2_notify_credentials('user_id');
CREATE TRIGGER api_keys_notify_credentials AFTER UPDATE OF revoked_at, expires_at, user_id, key_hash OR DELETE ON api_keys
    FOR EACH ROW EXECUTE FUNCTION gi2_notify_credentials('user_id');

CREATE TRIGGER generations_notify AFTER INSERT OR UPDATE OR DELETE ON generations
    FOR EACH ROW EXECUTE FUNCTION gi2_notify_generations();
CREATE TRIGGER generation_images_notify AFTER INSERT OR UPDATE OR DELETE ON generation_images
    FOR EACH ROW EXECUTE FUNCTION gi2_notify_generations();
CREATE TRIGGER webhook_deliveries_notify AFTER INSERT OR UPDATE OR DELETE ON webhook_deliveries
    FOR EACH ROW EXECUTE FUNCTION gi2_notify_generations();

DROP TRIGGER webhook_deliveries_notify ON webhook_deliveries;
DROP TRIGGER generation_images_notify ON generation_images;
DROP TRIGGER generations_notify ON generations;
DROP TRIGGER api_keys_notify_credentials ON api_keys;
DROP TRIGGER sessions_notify_credentials ON sessions;
DROP TRIGGER users_notify_credentials ON users;
DROP FUNCTION gi2_notify_generations();
DROP FUNCTION gi2_notify_credentials();

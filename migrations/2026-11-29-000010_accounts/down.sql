DROP TABLE rate_limits;
DROP TABLE consents;
DROP TABLE activity_events;
DROP TABLE email_tokens;
DROP TABLE refresh_tokens;
DROP TABLE sessions;
DROP TABLE users;

-- Rendered mails waiting for (or done with) delivery; a `send_mail` job delivers each.
CREATE TABLE outbox_mails (
    id          uuid PRIMARY KEY,
    to_address  text NOT NULL,
    template    text NOT NULL,
    subject     text NOT NULL,
    text_body   text NOT NULL,
    html_body   text NOT NULL,
    -- Extra headers such as List-Unsubscribe, as a JSON object.
    headers     jsonb NOT NULL DEFAULT '{}'::jsonb,
    status      text NOT NULL DEFAULT 'pending' CHECK (status IN ('pending', 'sent', 'failed')),
    attempts    integer NOT NULL DEFAULT 0,
    last_error  text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);

CREATE INDEX outbox_mails_status_idx ON outbox_mails (status, created_at);

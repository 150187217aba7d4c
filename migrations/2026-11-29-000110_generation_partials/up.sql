-- Partial images a streaming model sent while drawing, for the events stream.
CREATE TABLE generation_partials (
    generation_id   uuid NOT NULL REFERENCES generations (id) ON DELETE CASCADE,
    idx             integer NOT NULL,
    object_key      text NOT NULL,
    created_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (generation_id, idx)
);

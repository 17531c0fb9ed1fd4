-- The application schema the example jobs work on (the seeds' apps, reduced
-- to what the jobs touch). Created by `sundial demo` in the application
-- database. Instants are ISO 8601 UTC text ('2026-11-22T10:00:00Z').
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    plan          TEXT NOT NULL CHECK (plan IN ('FREE', 'TRIAL', 'PAID')),
    timezone      TEXT NOT NULL,
    withdrawn_at  TEXT
);

CREATE TABLE IF NOT EXISTS sessions (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    token       TEXT NOT NULL,
    expires_at  TEXT NOT NULL
);

CREATE TABLE IF NOT EXISTS food_entries (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    name        TEXT NOT NULL,
    calories    INTEGER NOT NULL,
    eaten_at    TEXT NOT NULL,
    deleted_at  TEXT
);

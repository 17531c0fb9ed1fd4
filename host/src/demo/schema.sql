-- The application schema the example jobs work on (the seeds' apps, reduced
-- to what the jobs touch). Created by `sundial demo` in the application
-- database. Instants are ISO 8601 UTC text ('2026-11-22T10:00:00Z'), which
-- compares correctly as text; calendar dates are 'YYYY-MM-DD' text in the
-- user's local calendar.
--
-- Every index below exists for a job's query; the comment names the job.
CREATE TABLE IF NOT EXISTS users (
    id            INTEGER PRIMARY KEY,
    name          TEXT NOT NULL,
    plan          TEXT NOT NULL CHECK (plan IN ('FREE', 'TRIAL', 'PAID')),
    timezone      TEXT NOT NULL,
    withdrawn_at  TEXT
);

-- weekly-report: the distinct zones, to find those at Monday 03:00-05:59 local.
CREATE INDEX IF NOT EXISTS users_by_timezone ON users (timezone);

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

-- A user's nutrition targets (seed 000). At most one is active; older ones
-- stay as history with active = 0.
CREATE TABLE IF NOT EXISTS targets (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    calories    INTEGER NOT NULL,
    protein_g   INTEGER NOT NULL,
    fat_g       INTEGER NOT NULL,
    carbs_g     INTEGER NOT NULL,
    active      INTEGER NOT NULL DEFAULT 1 CHECK (active IN (0, 1)),
    created_at  TEXT NOT NULL
);

-- snapshot, recommendation: the active target of each user, joined by user id.
CREATE UNIQUE INDEX IF NOT EXISTS targets_one_active_per_user ON targets (user_id) WHERE active = 1;

-- The target that applied on a past day, fixed once written (snapshot job).
CREATE TABLE IF NOT EXISTS daily_target_snapshots (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    date        TEXT NOT NULL,
    target_id   INTEGER NOT NULL REFERENCES targets(id),
    calories    INTEGER NOT NULL,
    protein_g   INTEGER NOT NULL,
    fat_g       INTEGER NOT NULL,
    carbs_g     INTEGER NOT NULL,
    created_at  TEXT NOT NULL,
    UNIQUE (user_id, date)
);

-- What a user ate on a day, summed (written by the app; read by recommendation).
CREATE TABLE IF NOT EXISTS daily_nutrition_reports (
    id          INTEGER PRIMARY KEY,
    user_id     INTEGER NOT NULL REFERENCES users(id),
    date        TEXT NOT NULL,
    calories    INTEGER NOT NULL,
    protein_g   INTEGER NOT NULL,
    fat_g       INTEGER NOT NULL,
    carbs_g     INTEGER NOT NULL,
    UNIQUE (user_id, date)
);

-- "Today's suggestion" (recommendation job); body is JSON text.
CREATE TABLE IF NOT EXISTS meal_recommendations (
    id                  INTEGER PRIMARY KEY,
    user_id             INTEGER NOT NULL REFERENCES users(id),
    generated_for_date  TEXT NOT NULL,
    calorie_budget      INTEGER NOT NULL,
    body                TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    UNIQUE (user_id, generated_for_date)
);

-- Training sessions (seed 002). finalized_at is set when a workout ends
-- completed or partial; abandoned ones normally have none.
CREATE TABLE IF NOT EXISTS workouts (
    id                INTEGER PRIMARY KEY,
    user_id           INTEGER NOT NULL REFERENCES users(id),
    status            TEXT NOT NULL CHECK (status IN ('completed', 'partial', 'abandoned')),
    started_at        TEXT NOT NULL,
    finalized_at      TEXT,
    duration_minutes  INTEGER NOT NULL
);

-- metrics, weekly-report: a user's workouts in a time window.
CREATE INDEX IF NOT EXISTS workouts_by_user_finalized ON workouts (user_id, finalized_at);

-- Per-user behaviour metrics for a local date (metrics job).
CREATE TABLE IF NOT EXISTS user_behavior_metrics (
    id               INTEGER PRIMARY KEY,
    user_id          INTEGER NOT NULL REFERENCES users(id),
    metrics_date     TEXT NOT NULL,
    workouts_7d      INTEGER NOT NULL,
    workouts_30d     INTEGER NOT NULL,
    minutes_7d       INTEGER NOT NULL,
    minutes_30d      INTEGER NOT NULL,
    active_days_30d  INTEGER NOT NULL,
    streak_days      INTEGER NOT NULL,
    last_workout_at  TEXT,
    computed_at      TEXT NOT NULL,
    UNIQUE (user_id, metrics_date)
);

-- Weekly training report and a naive prediction (weekly-report job); the
-- week is Monday..Sunday in the user's zone, prediction is JSON text.
CREATE TABLE IF NOT EXISTS weekly_reports (
    id                  INTEGER PRIMARY KEY,
    user_id             INTEGER NOT NULL REFERENCES users(id),
    week_start          TEXT NOT NULL,
    workouts            INTEGER NOT NULL,
    completed_workouts  INTEGER NOT NULL,
    minutes             INTEGER NOT NULL,
    prediction          TEXT NOT NULL,
    created_at          TEXT NOT NULL,
    UNIQUE (user_id, week_start)
);

-- Listed companies (listed-companies job, seed 004): upserted from a JSON
-- list fetched over HTTP; `updated_at` is when the row last changed. Not demo
-- data: `sundial demo` leaves it as it is.
CREATE TABLE IF NOT EXISTS listed_companies (
    code        TEXT PRIMARY KEY,
    name        TEXT NOT NULL,
    market      TEXT,
    updated_at  TEXT NOT NULL
);

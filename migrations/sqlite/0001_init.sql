-- Sundial's own tables (seed 004's scheduler_settings, jobs, job_executions),
-- grown with what the scheduling semantics need. Instants are UTC text as
-- written by sqlx (RFC 3339), which sorts chronologically.

-- One row: the global switch.
CREATE TABLE scheduler_settings (
    id          INTEGER PRIMARY KEY CHECK (id = 1),
    is_enabled  INTEGER NOT NULL DEFAULT 1,
    created_at  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE jobs (
    id                  INTEGER PRIMARY KEY,
    name                TEXT NOT NULL UNIQUE,
    description         TEXT NOT NULL DEFAULT '',
    -- 'single' or 'items' (seed 004's job_type).
    job_type            TEXT NOT NULL,
    schedule            TEXT NOT NULL,
    timezone            TEXT NOT NULL DEFAULT 'UTC',
    is_enabled          INTEGER NOT NULL DEFAULT 1,
    last_run_at         TEXT,
    next_run_at         TEXT,
    -- The last scheduled instant handled (fired, skipped or missed). The next
    -- fire is computed from it, never from "now".
    last_scheduled_for  TEXT,
    component_digest    TEXT,
    component_version   INTEGER,
    load_error          TEXT,
    -- Scheduled instants not run because of the misfire policy (host down,
    -- clock stepped forward), counted so they are visible.
    missed_fires        INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

CREATE TABLE job_executions (
    id                  INTEGER PRIMARY KEY,
    job_id              INTEGER NOT NULL REFERENCES jobs(id),
    trigger             TEXT NOT NULL,
    scheduled_for       TEXT NOT NULL,
    attempt             INTEGER NOT NULL DEFAULT 1,
    parent_id           INTEGER REFERENCES job_executions(id),
    status              TEXT NOT NULL,
    started_at          TEXT,
    completed_at        TEXT,
    component_digest    TEXT,
    component_version   INTEGER,
    node                TEXT,
    items_total         INTEGER NOT NULL DEFAULT 0,
    items_ok            INTEGER NOT NULL DEFAULT 0,
    items_skipped       INTEGER NOT NULL DEFAULT 0,
    items_failed        INTEGER NOT NULL DEFAULT 0,
    changed             INTEGER NOT NULL DEFAULT 0,
    error_class         TEXT,
    error_message       TEXT,
    summary             TEXT,
    logs                TEXT NOT NULL DEFAULT '',
    logs_truncated      INTEGER NOT NULL DEFAULT 0,
    args                TEXT NOT NULL DEFAULT '{}',
    -- Set while running once the execution outlives the job's expected duration.
    overrun             INTEGER NOT NULL DEFAULT 0,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL
);

-- Exactly one execution per (job, scheduled instant, attempt) for fires of
-- the schedule: what makes restarts, clock steps and several hosts safe.
-- Manual runs are not scheduled instants and are not constrained.
CREATE UNIQUE INDEX job_executions_one_per_instant
    ON job_executions (job_id, scheduled_for, attempt)
    WHERE trigger IN ('schedule', 'catch-up', 'retry');

CREATE INDEX job_executions_by_job ON job_executions (job_id, id DESC);
CREATE INDEX job_executions_by_status ON job_executions (status) WHERE status IN ('queued', 'running');

-- Failed and skipped items of item jobs, with their reasons (bounded per execution).
CREATE TABLE execution_items (
    execution_id  INTEGER NOT NULL REFERENCES job_executions(id) ON DELETE CASCADE,
    item_key      TEXT NOT NULL,
    outcome       TEXT NOT NULL,          -- 'skipped' or 'failed'
    error_class   TEXT NOT NULL,
    message       TEXT NOT NULL,
    PRIMARY KEY (execution_id, item_key)
);

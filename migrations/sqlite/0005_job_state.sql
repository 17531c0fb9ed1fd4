-- Job-private key-value state (the `state` interface of `sundial:job`, granted
-- with `state = true`), kept between executions. Keyed by the job's name, so it
-- survives new versions of the job and host restarts.
CREATE TABLE job_state (
    job_name    TEXT NOT NULL,
    key         TEXT NOT NULL,
    value       BLOB NOT NULL,
    updated_at  TEXT NOT NULL,
    PRIMARY KEY (job_name, key)
);

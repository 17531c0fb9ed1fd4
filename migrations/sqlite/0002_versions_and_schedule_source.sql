-- Where a job's effective schedule comes from: 'configuration' (sundial.toml or
-- the component's default) or 'api' (set by an operator through the HTTP API;
-- kept across restarts and configuration changes until reset).
ALTER TABLE jobs ADD COLUMN schedule_source TEXT NOT NULL DEFAULT 'configuration';

-- Every component version a job has had, in order.
CREATE TABLE job_versions (
    job_id      INTEGER NOT NULL REFERENCES jobs(id),
    version     INTEGER NOT NULL,
    digest      TEXT NOT NULL,
    first_seen  TEXT NOT NULL,
    PRIMARY KEY (job_id, version)
);

INSERT INTO job_versions (job_id, version, digest, first_seen)
    SELECT id, component_version, component_digest, updated_at FROM jobs
    WHERE component_version IS NOT NULL AND component_digest IS NOT NULL;

-- Retention deletes old executions in batches: find them by completion time,
-- and find the retries that point at them without scanning the table.
CREATE INDEX job_executions_by_completion ON job_executions (completed_at) WHERE completed_at IS NOT NULL;
CREATE INDEX job_executions_by_parent ON job_executions (parent_id) WHERE parent_id IS NOT NULL;

-- The component bytes of a job's most recent versions (older versions keep
-- their row, with NULL here), so an operator can roll back to one of them
-- without its file.
ALTER TABLE job_versions ADD COLUMN component BLOB;

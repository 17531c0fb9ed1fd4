-- Fuel (wasmtime's count of executed guest instructions) an execution used,
-- when the host meters fuel; NULL otherwise and for native jobs.
ALTER TABLE job_executions ADD COLUMN fuel_consumed INTEGER;

-- Fuel (wasmtime's count of executed guest instructions) an execution used,
-- for components; NULL for native jobs and executions that never ran.
ALTER TABLE job_executions ADD COLUMN fuel_consumed INTEGER;

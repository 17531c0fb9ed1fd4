//! Host integration tests, on real components built from the repo's guest
//! crates and real SQLite files.
//!
//! Modules:
//! - `fixtures`: component variants and item-job tables (shared with the benches).
//! - `helpers`: building components once, temporary environments, polling.
//! - `api`: the HTTP API over a real socket: endpoints, errors, security.
//! - `reload`: hot reload from the watched jobs directory.
//! - `ui`: the operator UI in headless chromium (through chromedriver).
//! - `sandbox`: hostile guests: files, sockets, environment, recursion,
//!   floods, huge results.
//! - `runs`: run-now of the example and fixture jobs; every failure class.
//! - `scheduling`: fires from a manual clock, exactly once per instant,
//!   restarts, crash recovery, overlap, retries.
//! - `limits`: concurrency limits (host-wide and per job) and priorities.
//! - `local_time`: item-local schedules: one execution per group of zones at
//!   the users' local time, per-user delivery times, DST.
//! - `items`: the per-item loop: isolation, rollback, limit, dry run.
//! - `cli`: the `sundial` binary as an operator uses it.
//! - `authoring`: a job author's loop: `sundial new`, `build`, `run --component`,
//!   deploying to a running host.
//! - `fuzz_load`: arbitrary and mutated bytes through the component loader.
//! - `notify`: webhook notifications against a real receiver.
//! - `otlp`: OpenTelemetry export of the execution spans (feature `otlp`).
//! - `wit_versions`: released `sundial:job` contracts never change; components
//!   built against each still run.
//! - `embedding`: the builder, a shared pool, native jobs, graceful shutdown,
//!   and the example application that mounts Sundial under a prefix.
//! - `jobs_snapshot`, `jobs_recommendation`, `jobs_metrics`, `jobs_weekly`:
//!   the seed jobs from `jobs/` on hand-made fixtures and on the demo data.
//! - `jobs_listed_companies`: the HTTP job against a local server, and the
//!   per-job HTTP allowlist.
//! - `python`: the `cleanup` job written in Python (componentize-py), next
//!   to the Rust one.
//! - `postgres`: Sundial's tables, the application database and job state on
//!   Postgres (the server in `SUNDIAL_TEST_POSTGRES_URL`, and a private one
//!   to restart), and several hosts sharing them: exactly once per instant,
//!   crashed and fenced hosts, an item run finished by another host.
//! - `shared_items`: an item run's pages shared by workers on one host and
//!   on several (`item_workers`, Postgres): helpers killed or paused mid-run.
//! - `state`: key-value state: kept across executions, versions and restarts,
//!   the grant, dry runs, limits, item jobs.

// Test code: failing loudly is the point.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod fixtures;
mod helpers;

mod api;
mod authoring;
mod backup;
mod cli;
mod embedding;
mod fuzz_load;
mod items;
mod jobs_listed_companies;
mod jobs_metrics;
mod jobs_recommendation;
mod jobs_snapshot;
mod jobs_weekly;
mod limits;
mod local_time;
mod notify;
mod otlp;
mod postgres;
mod python;
mod reload;
mod resume;
mod runs;
mod sandbox;
mod scheduling;
mod shared_items;
mod state;
mod ui;
mod wit_versions;

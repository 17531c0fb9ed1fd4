//! Sundial: an embeddable, actor-based runtime for scheduled background jobs
//! whose logic ships as sandboxed WebAssembly components.
//!
//! Start with [`host::Host`]: it opens the [`store`], starts the
//! [`runtime`] (wasmtime) and the [`actors`] (scheduler, one supervisor per
//! job, repository, loader), and loads every `*.wasm` in the jobs directory.
//!
//! ```no_run
//! use sundial::config::Config;
//! use sundial::host::{Host, HostOptions};
//! use sundial::model::RunArgs;
//!
//! # async fn example() -> anyhow::Result<()> {
//! let mut options = HostOptions::new(Config::load(None)?);
//! options.schedule = false; // one-shot: no scheduler
//! let host = Host::start(options).await?;
//! let report = host.run_now("cleanup", RunArgs::default()).await?;
//! println!("{}: {:?}", report.status, report.summary);
//! # Ok(()) }
//! ```
//!
//! Applications that embed Sundial start it with [`host::Host::builder`]
//! (their own database pool, native jobs, the API mounted in their own
//! actix-web app): see the [`embedding`] guide.
//!
//! Layout: `runtime/` knows wasmtime and nothing of actix; `actors/` knows
//! actix and nothing of wasmtime internals; `store/` owns all SQL;
//! `schedule/` is the pure crontab and time-zone logic.

pub mod actors;
pub mod api;
pub mod authoring;
pub mod builtin;
pub mod cli;
pub mod clock;
pub mod config;
pub mod demo;
#[doc = include_str!("../../docs/embedding.md")]
pub mod embedding {}
pub mod events;
pub mod host;
pub mod lease;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod runtime;
pub mod schedule;
pub mod slots;
pub mod store;
pub mod telemetry;

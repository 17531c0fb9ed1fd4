//! The actors of a running host: actix, and nothing of wasmtime internals.
//!
//! ```text
//!   Loader ──deploy──▶ JobSupervisor (one per job) ◀──fire── Scheduler
//!                          │
//!                          ▼
//!                      Repository (the store)
//! ```
//!
//! All actors live on the host's actix arbiter; guest execution happens on the
//! runtime's worker threads and reports back by future completion.

pub mod loader;
pub mod repository;
pub mod scheduler;
pub mod supervisor;

pub use loader::Loader;
pub use repository::Repository;
pub use scheduler::Scheduler;
pub use supervisor::JobSupervisor;

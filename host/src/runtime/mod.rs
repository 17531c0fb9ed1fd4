//! The WebAssembly runtime: wasmtime, and nothing of actix.
//!
//! One [`Runtime`] owns one `Engine` (epoch interruption on, component-model
//! concurrency off: jobs are synchronous calls and this is ~3× faster per
//! call), one `Linker` with the `sundial:job` imports and a deny-by-default
//! WASI, a ticker thread advancing the epoch, a pool of worker threads that
//! run guests (guest code must never block an actix arbiter), and a small
//! Tokio runtime on which host calls do their database IO.
//!
//! Invariants:
//! - a [`ComponentVersion`] is fully validated (compiled, linked against the
//!   restricted linker, typed exports, `describe` ran) before anyone sees it,
//!   and holds its `InstancePre`, so an execution only instantiates;
//! - every execution gets a fresh `Store` with its own memory limit, deadline
//!   and cancel token.

mod bindings;
mod component;
mod exec;
pub mod host;
mod items;
mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use component::{ComponentVersion, LoadError, MAX_COMPONENT_BYTES};
pub use exec::{Invocation, Limits};
pub use host::{CancelToken, Progress};
pub use items::{BATCH_ITEMS, BATCH_TIME, CHECKPOINT_TABLE};

use crate::clock::Clock;
use crate::model::RunReport;
use host::HostState;
use pool::WorkerPool;

/// How often the epoch advances: the resolution of deadlines and cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Errors setting up the runtime itself.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// wasmtime refused the configuration.
    #[error("cannot create the WebAssembly engine: {0}")]
    Engine(String),
    /// The IO runtime could not start.
    #[error("cannot start the IO runtime")]
    Io(#[source] std::io::Error),
    /// The worker that ran a task went away (it panicked).
    #[error("a runtime worker stopped unexpectedly")]
    WorkerLost,
}

/// The WebAssembly runtime (cheap to clone).
#[derive(Clone)]
pub struct Runtime {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime").finish_non_exhaustive()
    }
}

struct Inner {
    engine: Engine,
    linker: Linker<HostState>,
    pool: WorkerPool,
    io: Option<tokio::runtime::Runtime>,
    clock: Arc<dyn Clock>,
    ticker_stop: Arc<AtomicBool>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.ticker_stop.store(true, Ordering::SeqCst);
        // Dropping a Tokio runtime from async code panics; shut it down in the
        // background instead, whatever thread we are on.
        if let Some(io) = self.io.take() {
            io.shutdown_background();
        }
    }
}

impl Runtime {
    /// Creates the engine, linker, worker pool and epoch ticker.
    pub fn new(clock: Arc<dyn Clock>) -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(true);
        config.concurrency_support(false);
        config.wasm_component_model(true);
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        bindings::Job::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sundial-io")
            .enable_all()
            .build()
            .map_err(RuntimeError::Io)?;

        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            std::thread::Builder::new()
                .name("sundial-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                    }
                })
                .map_err(RuntimeError::Io)?;
        }

        Ok(Runtime {
            inner: Arc::new(Inner {
                engine,
                linker,
                pool: WorkerPool::new("sundial-guest"),
                io: Some(io),
                clock,
                ticker_stop,
            }),
        })
    }

    /// The clock guests see through `time.now`.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Validates and compiles a component on a worker thread.
    pub async fn load(&self, bytes: Vec<u8>) -> Result<Arc<ComponentVersion>, LoadError> {
        let rt = self.clone();
        match self.inner.pool.run(move || component::load(&rt, &bytes)).await {
            Ok(r) => r.map(Arc::new),
            Err(_) => Err(LoadError::Host(RuntimeError::WorkerLost.to_string())),
        }
    }

    /// Validates and compiles a component on the calling thread.
    pub fn load_blocking(&self, bytes: &[u8]) -> Result<Arc<ComponentVersion>, LoadError> {
        component::load(self, bytes).map(Arc::new)
    }

    /// Runs one execution on a worker thread and reports how it ended.
    pub async fn execute(&self, version: Arc<ComponentVersion>, invocation: Invocation) -> RunReport {
        let rt = self.clone();
        match self.inner.pool.run(move || exec::execute(&rt, &version, invocation)).await {
            Ok(report) => report,
            Err(_) => RunReport::host_failure(RuntimeError::WorkerLost.to_string()),
        }
    }

    fn io(&self) -> tokio::runtime::Handle {
        match &self.inner.io {
            Some(io) => io.handle().clone(),
            // Only during drop; never observed by callers.
            None => tokio::runtime::Handle::current(),
        }
    }

    /// Runs a future on the runtime's IO threads from synchronous code.
    pub fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        self.io().block_on(f)
    }
}

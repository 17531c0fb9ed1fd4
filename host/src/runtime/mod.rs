//! The WebAssembly runtime: wasmtime, and nothing of actix.
//!
//! One [`Runtime`] owns one `Engine` (epoch interruption on, fuel when budgeted, component-model
//! concurrency off: jobs are synchronous calls and this is ~3× faster per
//! call), one `Linker` with the `sundial:job` imports, a deny-by-default WASI
//! and `wasi:http` restricted to each job's allowlist (see `runtime/http.rs`), a ticker
//! thread advancing the epoch, a pool of worker threads that run guests (guest
//! code must never block an actix arbiter), and a small Tokio runtime on which
//! outbound HTTP does its IO.
//!
//! Invariants:
//! - a [`ComponentVersion`] is fully validated (compiled, linked against the
//!   restricted linker, typed exports, `describe` ran) before anyone sees it,
//!   and holds its `InstancePre`, so an execution only instantiates;
//! - every execution gets a fresh `Store` with its own memory limit, deadline
//!   and cancel token.

mod bindings;
mod cache;
mod clock;
mod component;
mod dispatch;
mod exec;
pub mod host;
mod http;
mod items;
mod native;
mod output;
mod pool;
mod shared;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use wasmtime::component::{HasSelf, Linker};
use wasmtime::{Config, Engine};

pub use component::{ComponentVersion, ContentKey, LoadError, MAX_COMPONENT_BYTES, digest};
pub use exec::{Helper, Invocation, Limits};
pub use host::{CancelToken, Progress};
pub use http::{DEFAULT_HTTP_TIMEOUT, HttpRateLimit, MAX_HTTP_RESPONSE_BYTES, STOP_CHECK};
pub use items::{
    BATCH_ITEMS, BATCH_TIME, CHECKPOINT_TABLE, ClosureItems, Failure, ItemDriver, ItemResult, ItemRun, NativeItem,
    run_with,
};
pub use native::{JobCode, NativeContext, NativeError, NativeJob, NativeOutcome};
pub use shared::SharedItems;

use crate::clock::Clock;
use crate::model::RunReport;
use host::HostState;
use pool::WorkerPool;

/// Executions prepared ahead of their instant at most (each holds an instance
/// and its memory until its instant). Past it, an execution waits for a slot
/// and is prepared then, late, rather than holding more memory.
const MAX_PREPARED: usize = 4096;

/// Validated versions kept in memory, so that bytes loaded again (a file
/// put back, a rollback, a deploy of bytes just validated) go live without
/// reading the compiled-artifact cache or calling `describe` again. Each
/// holds its compiled code, hence the small bound.
pub const RECENT_VERSIONS: usize = 8;

/// Versions pushed out of the recent list (dropped outside its lock).
type Evicted = std::collections::VecDeque<Arc<ComponentVersion>>;

/// How often the epoch advances: the resolution of deadlines and cancellation.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Engine instrumentation and per-call checks. Epoch interruption and the
/// checks are on in every host (turning them off is only for measuring what
/// they cost); fuel is metered when the configuration gives a job a budget
/// ([`crate::config::Config::meters_fuel`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineSettings {
    /// Deadlines and cancellation checked in guest code on every epoch tick.
    pub epoch_interruption: bool,
    /// Guest instructions counted, fuel budgets enforced, and the fuel each
    /// execution used recorded.
    pub fuel: bool,
    /// Host calls check the deadline and cancellation, and memory growth
    /// is checked against the job's limit.
    pub host_checks: bool,
}

impl Default for EngineSettings {
    fn default() -> Self {
        EngineSettings { epoch_interruption: true, fuel: false, host_checks: true }
    }
}

impl EngineSettings {
    /// The defaults, metering fuel if `fuel`.
    pub fn with_fuel(fuel: bool) -> Self {
        EngineSettings { fuel, ..EngineSettings::default() }
    }
}

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

/// What a version is known by before it is live: its digest and what its
/// `describe` returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Described {
    /// Hex sha256 of the file.
    pub digest: String,
    /// What `describe` returned.
    pub info: crate::model::JobInfo,
}

impl Described {
    fn of(version: &ComponentVersion) -> Described {
        Described { digest: version.digest.clone(), info: version.info.clone() }
    }
}

/// How a load's [`Described`] reaches its caller.
enum Announced {
    /// Sent before the load, from the artifact cache's entry.
    Sent(Described),
    /// To send once the load has succeeded.
    AtEnd(tokio::sync::oneshot::Sender<Described>),
}

/// A load under way (see [`Runtime::load_staged`]).
#[derive(Debug)]
pub struct StagedLoad {
    /// The version's digest and `describe` record: at once if the artifact
    /// cache has an entry for the bytes (what it says, unchecked: only the
    /// verdict confirms it), otherwise when the load has succeeded.
    /// Dropped unsent if the load fails before they are known.
    pub described: tokio::sync::oneshot::Receiver<Described>,
    /// Sent when the load ends, before its outcome: `true` if it produced a
    /// version with exactly what was sent on `described`.
    pub verdict: tokio::sync::oneshot::Receiver<bool>,
    /// The outcome.
    pub loaded: Loading,
}

/// The outcome of a load under way.
#[derive(Debug)]
pub struct Loading(tokio::sync::oneshot::Receiver<Result<Arc<ComponentVersion>, LoadError>>);

impl Loading {
    /// Waits for the load to end.
    pub async fn wait(self) -> Result<Arc<ComponentVersion>, LoadError> {
        match self.0.await {
            Ok(r) => r,
            Err(_) => Err(LoadError::Host(RuntimeError::WorkerLost.to_string())),
        }
    }
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
    settings: EngineSettings,
    linker: Linker<HostState>,
    pool: WorkerPool,
    /// Makes prepared executions' guest calls at their instants.
    dispatcher: dispatch::Dispatcher,
    io: Option<tokio::runtime::Runtime>,
    clock: Arc<dyn Clock>,
    ticker_stop: Arc<AtomicBool>,
    /// The [`MAX_PREPARED`] slots.
    prepared: Arc<tokio::sync::Semaphore>,
    cache: Option<cache::ArtifactCache>,
    /// The versions loaded last, newest first (see [`RECENT_VERSIONS`]).
    recent: std::sync::Mutex<std::collections::VecDeque<Arc<ComponentVersion>>>,
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
        Runtime::with_cache(clock, None)
    }

    /// Like [`Runtime::new`], keeping compiled components in `cache_dir` so
    /// they are not compiled again (after a restart, or for bytes seen
    /// before). A cache that cannot be opened is logged and not used.
    pub fn with_cache(clock: Arc<dyn Clock>, cache_dir: Option<&std::path::Path>) -> Result<Runtime, RuntimeError> {
        Runtime::with_settings(clock, cache_dir, EngineSettings::default())
    }

    /// Like [`Runtime::with_cache`], with engine instrumentation chosen.
    /// Without epoch interruption no deadline or cancellation reaches guest
    /// code; without fuel no budget holds and nothing is counted.
    pub fn with_settings(
        clock: Arc<dyn Clock>,
        cache_dir: Option<&std::path::Path>,
        settings: EngineSettings,
    ) -> Result<Runtime, RuntimeError> {
        let mut config = Config::new();
        config.epoch_interruption(settings.epoch_interruption);
        config.consume_fuel(settings.fuel);
        config.concurrency_support(false);
        config.wasm_component_model(true);
        // Only the system's unwinder would read it; registering it with the
        // system is most of what loading a cached artifact costs.
        config.native_unwind_info(false);
        let engine = Engine::new(&config).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        clock::add_to_linker(&mut linker).map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_sync(&mut linker)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;
        bindings::Job::add_to_linker::<HostState, HasSelf<HostState>>(&mut linker, |s| s)
            .map_err(|e| RuntimeError::Engine(format!("{e:#}")))?;

        let io = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("sundial-io")
            .enable_all()
            .build()
            .map_err(RuntimeError::Io)?;

        // One dispatcher a core: more could not make more calls at once.
        let dispatcher =
            dispatch::Dispatcher::new(std::thread::available_parallelism().map(std::num::NonZero::get).unwrap_or(2));
        let ticker_stop = Arc::new(AtomicBool::new(false));
        {
            let engine = engine.clone();
            let stop = ticker_stop.clone();
            let watch = dispatcher.watch();
            std::thread::Builder::new()
                .name("sundial-epoch".into())
                .spawn(move || {
                    while !stop.load(Ordering::Relaxed) {
                        std::thread::sleep(EPOCH_TICK);
                        engine.increment_epoch();
                        watch.check();
                    }
                })
                .map_err(RuntimeError::Io)?;
        }

        let cache = cache_dir.and_then(|dir| match cache::ArtifactCache::open(dir, &engine) {
            Ok(c) => Some(c),
            Err(e) => {
                tracing::warn!(dir = %dir.display(), error = %e, "cannot use the compiled-component cache");
                None
            }
        });
        Ok(Runtime {
            inner: Arc::new(Inner {
                cache,
                engine,
                settings,
                linker,
                pool: WorkerPool::new("sundial-guest"),
                dispatcher,
                io: Some(io),
                clock,
                ticker_stop,
                prepared: Arc::new(tokio::sync::Semaphore::new(MAX_PREPARED)),
                recent: Default::default(),
            }),
        })
    }

    /// The clock guests see through `time.now`.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.inner.clock
    }

    /// Validates and compiles a component on a worker thread.
    pub async fn load(&self, bytes: impl Into<Arc<[u8]>>) -> Result<Arc<ComponentVersion>, LoadError> {
        let bytes: Arc<[u8]> = bytes.into();
        component::check_size(&bytes)?;
        let key = ContentKey::of(&bytes);
        self.load_keyed(bytes, key).await
    }

    /// [`Runtime::load`] of bytes whose [`ContentKey`] the caller has
    /// already computed.
    pub async fn load_keyed(&self, bytes: Arc<[u8]>, key: ContentKey) -> Result<Arc<ComponentVersion>, LoadError> {
        self.start_load(bytes, key, false).loaded.wait().await
    }

    /// Starts loading bytes whose [`ContentKey`] the caller has computed,
    /// for a caller that prepares the version's use while it loads: if the
    /// artifact cache has an entry for them, what it says the version is
    /// (digest, `describe` record) is known at once, unchecked, and the
    /// verdict says whether the load produced exactly that.
    pub fn load_staged(&self, bytes: Arc<[u8]>, key: ContentKey) -> StagedLoad {
        self.start_load(bytes, key, true)
    }

    /// Starts a load on a worker thread; with `early`, first reads what the
    /// artifact cache says of the bytes (a small file) on the calling thread.
    fn start_load(&self, bytes: Arc<[u8]>, key: ContentKey, early: bool) -> StagedLoad {
        let (described_tx, described) = tokio::sync::oneshot::channel();
        let (verdict_tx, verdict) = tokio::sync::oneshot::channel();
        let (done, loaded) = tokio::sync::oneshot::channel();
        let staged = StagedLoad { described, verdict, loaded: Loading(loaded) };
        if let Some(version) = self.recent(key) {
            let _ = described_tx.send(Described::of(&version));
            let _ = verdict_tx.send(true);
            let _ = done.send(Ok(version));
            return staged;
        }
        // What the cache says the version will be, unchecked: known now,
        // before the load; whoever acts on it waits for the verdict.
        let (early, meta) = match self.inner.cache.as_ref().filter(|_| early).and_then(|c| c.peek(key)) {
            Some((e, meta)) => (Some(Described { digest: e.digest, info: e.info }), Some(meta)),
            None => (None, None),
        };
        let announced = match early {
            Some(early) => {
                let _ = described_tx.send(early.clone());
                Announced::Sent(early)
            }
            None => Announced::AtEnd(described_tx),
        };
        let rt = self.clone();
        drop(self.inner.pool.run(move || match rt.load_new(&bytes, key, meta) {
            Ok((version, evicted)) => {
                let as_described = match announced {
                    Announced::Sent(early) => early == Described::of(&version),
                    Announced::AtEnd(tx) => tx.send(Described::of(&version)).is_ok(),
                };
                // The verdict first: whoever waits on it has more to do.
                let _ = verdict_tx.send(as_described);
                let _ = done.send(Ok(version));
                // Unmapping the code of versions pushed out of the recent
                // list is not part of this load.
                drop(evicted);
            }
            Err(e) => {
                let _ = verdict_tx.send(false);
                let _ = done.send(Err(e));
            }
        }));
        staged
    }

    /// Validates and compiles a component on the calling thread (bytes
    /// loaded lately are not validated again: the same content key is the same
    /// component).
    pub fn load_blocking(&self, bytes: &[u8]) -> Result<Arc<ComponentVersion>, LoadError> {
        component::check_size(bytes)?;
        let key = ContentKey::of(bytes);
        if let Some(version) = self.recent(key) {
            return Ok(version);
        }
        self.load_new(bytes, key, None).map(|(version, _evicted)| version)
    }

    /// Loads bytes not loaded lately; also returns the versions this pushed
    /// out of the recent list, for the caller to drop when it suits it.
    /// `meta`: the cache entry's metadata file, if already read.
    fn load_new(
        &self,
        bytes: &[u8],
        key: ContentKey,
        meta: Option<cache::Meta>,
    ) -> Result<(Arc<ComponentVersion>, Evicted), LoadError> {
        let version = Arc::new(component::load(self, bytes, key, meta)?);
        let evicted = self.remember(version.clone());
        Ok((version, evicted))
    }

    fn recent(&self, key: ContentKey) -> Option<Arc<ComponentVersion>> {
        let mut recent = self.inner.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let i = recent.iter().position(|v| v.key == key)?;
        let version = recent.remove(i)?;
        recent.push_front(version.clone());
        Some(version)
    }

    fn remember(&self, version: Arc<ComponentVersion>) -> Evicted {
        let mut recent = self.inner.recent.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        recent.retain(|v| v.key != version.key);
        recent.push_front(version);
        let keep = RECENT_VERSIONS.min(recent.len());
        recent.split_off(keep)
    }

    /// Runs one execution on a worker thread and reports how it ended.
    pub async fn execute(&self, version: Arc<ComponentVersion>, invocation: Invocation) -> RunReport {
        self.execute_at(JobCode::Component(version), invocation, None).await
    }

    /// Runs one execution of a component or a native job on a worker thread.
    pub async fn execute_code(&self, code: JobCode, invocation: Invocation) -> RunReport {
        self.execute_at(code, invocation, None).await
    }

    /// Runs one execution whose guest call must start at `at` (a scheduled
    /// instant a moment ahead): the store and instance are prepared now, on a
    /// worker, so that at the instant only the call is left (once one of the
    /// [`MAX_PREPARED`] slots is free). Without `at` it runs at once.
    pub async fn execute_at(
        &self,
        code: JobCode,
        invocation: Invocation,
        at: Option<chrono::DateTime<chrono::Utc>>,
    ) -> RunReport {
        let until_at = || at.and_then(|at| (at - self.inner.clock.now()).to_std().ok()).unwrap_or(Duration::ZERO);
        let wait = until_at();
        let lost = || RunReport::host_failure(RuntimeError::WorkerLost.to_string());
        let rt = self.clone();
        // Everything the run logs (guest log calls included) is inside this span.
        let digest = code.digest();
        let span = tracing::info_span!(
            "execution",
            job = %invocation.ctx.job_name,
            execution = invocation.ctx.execution_id.0,
            trigger = %invocation.ctx.trigger,
            attempt = invocation.ctx.attempt,
            code = %digest.get(..12).unwrap_or(&digest),
        );
        if let JobCode::Component(version) = &code
            && !wait.is_zero()
        {
            // The semaphore is never closed.
            let Ok(slot) = self.inner.prepared.clone().acquire_owned().await else { return lost() };
            // Waiting for the slot took some of the time before the instant (or all of it).
            let wait = until_at();
            let due = std::time::Instant::now() + wait;
            let version = version.clone();
            let in_span = span.clone();
            let prepared =
                self.pool_run(move || in_span.in_scope(|| exec::prepare(&rt, &version, invocation, wait))).await;
            let Some(prepared) = prepared else { return lost() };
            // The guest call at the instant, on a dispatcher; the store's
            // teardown and the report after the calls due with it. The slot
            // is held until the call starts (or the call is dropped unmade).
            let (reply, report) = tokio::sync::oneshot::channel();
            let rt = self.clone();
            self.inner.dispatcher.schedule(
                due,
                Box::new(move || {
                    drop(slot);
                    let called = span.in_scope(|| exec::call_prepared(&rt, prepared));
                    Box::new(move || {
                        let _ = reply.send(span.in_scope(|| called.finish()));
                    })
                }),
            );
            return report.await.unwrap_or_else(|_| lost());
        }
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        let run = move || {
            span.in_scope(|| match code {
                JobCode::Component(version) => exec::execute(&rt, &version, invocation),
                JobCode::Native(job) => native::execute_native(&rt, &*job, invocation),
            })
        };
        self.pool_run(run).await.unwrap_or_else(lost)
    }

    /// Helps with another host's shared item run of a job on this component
    /// version, if one is open: works its pages on a worker thread until none
    /// is left to claim. Returns the items done.
    pub async fn help_items(&self, version: Arc<ComponentVersion>, helper: Helper) -> Result<u64, String> {
        let rt = self.clone();
        self.pool_run(move || exec::help(&rt, &version, helper))
            .await
            .unwrap_or_else(|| Err(RuntimeError::WorkerLost.to_string()))
    }

    /// Executions prepared ahead of their instant whose guest call has not
    /// started yet (each holds an instance and its memory).
    pub fn prepared_waiting(&self) -> usize {
        MAX_PREPARED - self.inner.prepared.available_permits()
    }

    async fn pool_run<R: Send + 'static>(&self, f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
        self.inner.pool.run(f).await.ok()
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

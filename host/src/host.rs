//! Wiring: a running [`Host`] is the store, the runtime and the actors.
//!
//! Must be started inside an actix `System` (the binary does that; tests use
//! `#[actix_rt::test]`).

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::loader::{GetSupervisor, LoadAll, LoadSummary, LoaderError, LoaderSetup};
use crate::actors::repository::{GetGlobalEnabled, MarkCrashed};
use crate::actors::scheduler::Shutdown;
use crate::actors::supervisor::{CancelRun, RetryCrashed, RunNow, RunRejected, RunStarted};
use crate::actors::{Loader, Repository, Scheduler};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DEFAULT_DATABASE, DEFAULT_JOBS_DIR};
use crate::events::{Event, Events};
use crate::model::{ExecutionId, ExecutionRecord, RunArgs, RunReport};
use crate::runtime::{NativeJob, Runtime, RuntimeError};
use crate::store::appdb::AppDb;
use crate::store::{Store, StoreError};

/// Errors starting or using a host.
#[derive(Debug, thiserror::Error)]
pub enum HostError {
    /// The store could not be opened.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// The runtime could not start.
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    /// The jobs directory is unusable.
    #[error(transparent)]
    Loader(#[from] LoaderError),
    /// The application database URL is invalid.
    #[error(transparent)]
    AppDb(#[from] crate::store::appdb::AppDbOpenError),
    /// No loaded job has this name.
    #[error("unknown job {name:?}{hint}")]
    UnknownJob {
        /// The name asked for.
        name: String,
        /// What is known instead.
        hint: String,
    },
    /// The overlap gate refused the run.
    #[error(transparent)]
    Rejected(#[from] RunRejected),
    /// An actor stopped.
    #[error("host actor unavailable: {0}")]
    Mailbox(#[from] MailboxError),
    /// The execution ended without a report (the host is shutting down).
    #[error("the execution was abandoned while the host stopped")]
    Abandoned,
}

/// Everything needed to start a host.
#[derive(Debug, Clone)]
pub struct HostOptions {
    /// Parsed configuration (paths in it resolve against its directory).
    pub config: Config,
    /// Sundial's database URL; overrides the configuration.
    pub database_url: Option<String>,
    /// The jobs directory; overrides the configuration.
    pub jobs_dir: Option<PathBuf>,
    /// Whether to run the scheduler (false for one-shot commands).
    pub schedule: bool,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// This host's name in execution rows.
    pub node: String,
    /// Events a slow subscriber may fall behind by before missing some.
    pub event_capacity: usize,
    /// Native jobs to run besides the components (the built-in `backup` is
    /// added when the configuration has a `[jobs.backup]` section).
    pub native_jobs: Vec<Arc<dyn NativeJob>>,
}

impl HostOptions {
    /// Options from a configuration, with the system clock.
    pub fn new(config: Config) -> Self {
        HostOptions {
            config,
            database_url: None,
            jobs_dir: None,
            schedule: true,
            clock: Arc::new(SystemClock),
            node: node_name(),
            event_capacity: 4096,
            native_jobs: Vec::new(),
        }
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        match (&self.database_url, &self.config.database) {
            (Some(url), _) => url.clone(),
            (None, Some(url)) => self.config.resolve_url(url),
            (None, None) => self.config.resolve_url(DEFAULT_DATABASE),
        }
    }

    /// The effective application database URL (defaults to Sundial's own).
    pub fn app_database_url(&self) -> String {
        match &self.config.app_database {
            Some(url) => self.config.resolve_url(url),
            None => self.database_url(),
        }
    }

    /// The effective jobs directory.
    pub fn jobs_dir(&self) -> PathBuf {
        match (&self.jobs_dir, &self.config.jobs_dir) {
            (Some(d), _) => d.clone(),
            (None, Some(d)) => self.config.resolve(d),
            (None, None) => self.config.resolve(std::path::Path::new(DEFAULT_JOBS_DIR)),
        }
    }
}

/// `hostname:pid`, the name this host writes into execution rows.
pub fn node_name() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into());
    format!("{host}:{}", std::process::id())
}

/// A running host.
pub struct Host {
    /// The store (for read-only interfaces).
    pub store: Store,
    /// The repository actor.
    pub repo: Addr<Repository>,
    /// The scheduler, if scheduling.
    pub scheduler: Option<Addr<Scheduler>>,
    /// The loader.
    pub loader: Addr<Loader>,
    /// The runtime.
    pub runtime: Runtime,
    /// What loading the jobs directory found.
    pub loaded: LoadSummary,
    events: Events,
}

impl Host {
    /// Opens the store, marks executions a dead host left running as crashed,
    /// loads the jobs directory and (if asked) starts scheduling.
    pub async fn start(options: HostOptions) -> Result<Host, HostError> {
        let store = Store::open(&options.database_url()).await?;
        let repo = Repository::new(store.clone()).start();
        let crashed: Vec<ExecutionRecord> =
            if options.schedule { repo.send(MarkCrashed {}).await?? } else { Vec::new() };
        if !crashed.is_empty() {
            tracing::warn!(count = crashed.len(), "executions left running by a previous host marked crashed");
        }
        let app_url = options.app_database_url();
        let app_db = AppDb::open(&app_url)?;
        let runtime = Runtime::new(options.clock.clone())?;
        let scheduler = if options.schedule {
            let enabled = repo.send(GetGlobalEnabled {}).await??;
            Some(Scheduler::new(repo.clone(), options.clock.clone(), enabled).start())
        } else {
            None
        };
        let events = crate::events::channel(options.event_capacity);
        let mut native = options.native_jobs.clone();
        if options.config.jobs.contains_key("backup") && !native.iter().any(|n| n.info().name == "backup") {
            let mut files = vec![app_db.path().to_path_buf()];
            if let Ok(own) = crate::store::appdb::sqlite_path(&options.database_url()) {
                files.insert(0, own);
            }
            native.push(Arc::new(crate::builtin::Backup::new(files, options.config.base_dir.clone())));
        }
        let loader = Loader::new(LoaderSetup {
            dir: options.jobs_dir(),
            config: Arc::new(options.config.clone()),
            runtime: runtime.clone(),
            repo: repo.clone(),
            scheduler: scheduler.clone(),
            app_db: Some(app_db),
            clock: options.clock.clone(),
            node: options.node.clone(),
            events: events.clone(),
            native,
        })
        .start();
        let loaded = loader.send(LoadAll).await??;
        for e in crashed {
            if let Some(s) = loader.send(GetSupervisor { name: e.job_name.clone() }).await? {
                s.do_send(RetryCrashed {
                    id: e.id,
                    scheduled_for: e.scheduled_for,
                    attempt: e.attempt,
                    parent: e.parent_id,
                    args: e.args,
                });
            }
        }
        Ok(Host { store, repo, scheduler, loader, runtime, loaded, events })
    }

    /// Execution events from now on.
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<Event> {
        self.events.subscribe()
    }

    /// Runs a job now and waits for the end of the execution.
    pub async fn run_now(&self, job: &str, args: RunArgs) -> Result<RunReport, HostError> {
        let started = self.start_run(job, args).await?;
        started.done.await.map_err(|_| HostError::Abandoned)
    }

    /// Asks the job's supervisor to cancel a running execution; returns whether it was
    /// running on this host. The execution ends `cancelled` within an epoch tick
    /// of guest code, or when its current host call returns.
    pub async fn cancel(&self, id: ExecutionId) -> Result<bool, HostError> {
        let Some(e) = self.store.get_execution(id).await? else { return Ok(false) };
        match self.loader.send(GetSupervisor { name: e.job_name }).await? {
            Some(s) => Ok(s.send(CancelRun { id }).await?),
            None => Ok(false),
        }
    }

    /// Starts a run through the job's overlap gate without waiting for it.
    pub async fn start_run(&self, job: &str, args: RunArgs) -> Result<RunStarted, HostError> {
        let Some(supervisor) = self.loader.send(GetSupervisor { name: job.to_string() }).await? else {
            let hint = if self.loaded.loaded.is_empty() {
                " (no jobs are loaded)".to_string()
            } else {
                format!(" (loaded jobs: {})", self.loaded.loaded.join(", "))
            };
            return Err(HostError::UnknownJob { name: job.to_string(), hint });
        };
        Ok(supervisor.send(RunNow { args }).await??)
    }

    /// Stops firing and closes the store. Executions still running finish on
    /// their worker threads, but their outcome is no longer recorded; the next
    /// host marks them crashed.
    pub async fn stop(self) {
        if let Some(s) = &self.scheduler {
            let _ = s.send(Shutdown).await;
        }
        self.store.close().await;
    }
}

//! Wiring: a running [`Host`] is the store, the runtime and the actors.
//!
//! Must be started inside an actix `System` (the binary does that; tests use
//! `#[actix_rt::test]`).

use std::path::PathBuf;
use std::sync::Arc;

use actix::prelude::*;

use crate::actors::loader::{
    AllSupervisors, DeployComponent, DeployError, GetSupervisor, LoadAll, LoadSummary, LoaderError, LoaderSetup, Watch,
};
use crate::actors::repository::{GetGlobalEnabled, MarkCrashed};
use crate::actors::scheduler::{RegisterJob, Shutdown, SwitchJob, SwitchScheduler};
use crate::actors::supervisor::{
    CancelRun, JobSnapshot, JobSupervisor, LiveProgress, RetryCrashed, RunNow, RunRejected, RunStarted, Snapshot,
    UpdateJob,
};
use crate::actors::{Loader, Repository, Scheduler};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DEFAULT_DATABASE, DEFAULT_JOBS_DIR};
use crate::events::{Event, Events};
use crate::model::{ExecutionId, ExecutionRecord, JobRecord, RunArgs, RunReport, ScheduleSource};
use crate::runtime::{MAX_COMPONENT_BYTES, NativeJob, Runtime, RuntimeError};
use crate::schedule::Schedule;
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
    /// A schedule given through an interface is invalid.
    #[error(transparent)]
    InvalidSchedule(#[from] crate::schedule::ScheduleError),
    /// A deployed component failed validation.
    #[error(transparent)]
    InvalidComponent(#[from] crate::runtime::LoadError),
    /// A valid deployed component could not be put in place.
    #[error(transparent)]
    Deploy(#[from] DeployError),
    /// The execution ended without a report (the host is shutting down).
    #[error("the execution was abandoned while the host stopped")]
    Abandoned,
}

/// Compiled components are cached here, relative to the configuration.
pub const DEFAULT_CACHE_DIR: &str = ".sundial-cache";

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

    /// The compiled-component cache directory.
    pub fn cache_dir(&self) -> PathBuf {
        self.config.resolve(self.config.cache_dir.as_deref().unwrap_or(std::path::Path::new(DEFAULT_CACHE_DIR)))
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

/// A running host. Clones share the same actors and store.
#[derive(Clone)]
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
    /// The configuration the host started with.
    pub config: Arc<Config>,
    /// This host's name in execution rows.
    pub node: String,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// Counters and histograms fed by the host's events (`/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
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
        let runtime = Runtime::with_cache(options.clock.clone(), Some(&options.cache_dir()))?;
        let scheduler = if options.schedule {
            let enabled = repo.send(GetGlobalEnabled {}).await??;
            Some(Scheduler::new(repo.clone(), options.clock.clone(), enabled).start())
        } else {
            None
        };
        let events = crate::events::channel(options.event_capacity);
        let metrics = crate::metrics::Metrics::new();
        metrics.follow(events.subscribe());
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
        if options.schedule
            && let Err(e) = loader.send(Watch).await?
        {
            tracing::error!(error = %e, "new and changed components will only be loaded at the next start");
        }
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
        Ok(Host {
            store,
            repo,
            scheduler,
            loader,
            runtime,
            loaded,
            config: Arc::new(options.config),
            node: options.node,
            clock: options.clock,
            metrics,
            events,
        })
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
        let supervisor = self.supervisor(job).await?;
        Ok(supervisor.send(RunNow { args }).await??)
    }

    /// The supervisor of a loaded job.
    async fn supervisor(&self, job: &str) -> Result<Addr<JobSupervisor>, HostError> {
        if let Some(s) = self.loader.send(GetSupervisor { name: job.to_string() }).await? {
            return Ok(s);
        }
        let mut names: Vec<String> = self.loader.send(AllSupervisors).await?.into_iter().map(|(n, _)| n).collect();
        names.sort();
        let hint = if names.is_empty() {
            " (no jobs are loaded)".to_string()
        } else {
            format!(" (loaded jobs: {})", names.join(", "))
        };
        Err(HostError::UnknownJob { name: job.to_string(), hint })
    }

    /// What the job's supervisor knows: configuration, grants, running executions.
    pub async fn job_snapshot(&self, job: &str) -> Result<JobSnapshot, HostError> {
        Ok(self.supervisor(job).await?.send(Snapshot).await?)
    }

    /// Every loaded job's snapshot, by name.
    pub async fn snapshots(&self) -> Result<Vec<JobSnapshot>, HostError> {
        let mut all = Vec::new();
        for (_, s) in self.loader.send(AllSupervisors).await? {
            all.push(s.send(Snapshot).await?);
        }
        all.sort_by(|a, b| a.job.name.cmp(&b.job.name));
        Ok(all)
    }

    /// Progress of the executions running on this host.
    pub async fn live_progress(&self) -> Result<std::collections::HashMap<ExecutionId, LiveProgress>, HostError> {
        Ok(self.snapshots().await?.into_iter().flat_map(|s| s.running).collect())
    }

    /// Sets the global switch. Takes effect at once; running executions finish.
    pub async fn set_enabled(&self, enabled: bool) -> Result<(), HostError> {
        match &self.scheduler {
            Some(s) => s.send(SwitchScheduler { enabled }).await?,
            None => self.store.set_global_enabled(enabled).await?,
        }
        let _ = self.events.send(Event::SchedulerChanged { enabled });
        Ok(())
    }

    /// Sets a job's switch. Takes effect at once; running executions finish.
    pub async fn set_job_enabled(&self, job: &str, enabled: bool) -> Result<(), HostError> {
        self.supervisor(job).await?;
        let switched = match &self.scheduler {
            Some(s) => s.send(SwitchJob { name: job.to_string(), enabled }).await?,
            None => false,
        };
        if !switched {
            self.store.set_job_enabled(job, enabled).await?;
        }
        let _ = self.events.send(Event::JobChanged { job: job.to_string() });
        Ok(())
    }

    /// Overrides a job's schedule (`Some((expression, zone))`; the zone
    /// defaults to the current one), or returns it to the configured one
    /// (`None`). Validated like configuration; the override is stored and
    /// survives restarts. A changed schedule starts its series from now.
    pub async fn set_schedule(
        &self,
        job: &str,
        schedule: Option<(String, Option<String>)>,
    ) -> Result<JobRecord, HostError> {
        let supervisor = self.supervisor(job).await?;
        let snap = supervisor.send(Snapshot).await?;
        let (expression, zone, source) = match schedule {
            Some((expression, zone)) => {
                (expression, zone.unwrap_or_else(|| snap.job.timezone.clone()), ScheduleSource::Api)
            }
            None => (snap.config.schedule.clone(), snap.config.timezone.clone(), ScheduleSource::Configuration),
        };
        Schedule::parse(&expression, &zone)?;
        let record = self.store.set_schedule(job, &expression, &zone, source).await?;
        supervisor.send(UpdateJob { job: record.clone() }).await?;
        if let Some(s) = &self.scheduler {
            s.send(RegisterJob { job: record.clone(), misfire: snap.config.misfire, supervisor }).await??;
        }
        tracing::info!(job, schedule = %expression, timezone = %zone, source = %source, "schedule changed");
        let _ = self.events.send(Event::JobChanged { job: job.to_string() });
        // The scheduler has stored the next fire meanwhile.
        Ok(self.store.get_job(job).await?.unwrap_or(record))
    }

    /// Validates a component exactly as the loader does and, if it passes,
    /// writes it into the jobs directory and puts it live for the job's next
    /// execution. Replies with the stored job (its new version).
    pub async fn deploy(&self, bytes: Vec<u8>) -> Result<JobRecord, HostError> {
        if bytes.len() > MAX_COMPONENT_BYTES {
            return Err(crate::runtime::LoadError::TooLarge { size: bytes.len(), max: MAX_COMPONENT_BYTES }.into());
        }
        let version = self.runtime.load(bytes.clone()).await?;
        Ok(self.loader.send(DeployComponent { bytes, version }).await??)
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

//! Wiring: a running [`Host`] is the store, the runtime and the actors.
//!
//! Must be started inside an actix `System` (the binary does that; tests use
//! `#[actix_rt::test]`).

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use actix::prelude::*;

use crate::actors::loader::{
    AllSupervisors, DeployComponent, DeployError, GetSupervisor, LoadAll, LoadSummary, LoaderError, LoaderSetup,
    Unwatch, Watch,
};
use crate::actors::repository::{GetGlobalEnabled, MarkCrashed};
use crate::actors::scheduler::{RegisterJob, Shutdown, SwitchJob, SwitchScheduler};
use crate::actors::supervisor::{
    CancelRun, Drain, JobSnapshot, JobSupervisor, LiveProgress, RunNow, RunRejected, RunStarted, Snapshot, UpdateJob,
};
use crate::actors::{Loader, Repository, Scheduler};
use crate::clock::{Clock, SystemClock};
use crate::config::{Config, DEFAULT_DATABASE, DEFAULT_JOBS_DIR};
use crate::events::{Event, Events};
use crate::model::{ExecutionId, ExecutionRecord, JobRecord, RunArgs, RunReport, ScheduleSource, VersionRecord};
use crate::runtime::{MAX_COMPONENT_BYTES, NativeJob, Runtime, RuntimeError};
use crate::schedule::Schedule;
use crate::store::appdb::AppDb;
use crate::store::{KEEP_VERSIONS, Store, StoreError};

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
    /// The configuration asks for what this setup cannot do.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Another scheduling host runs on the same SQLite database.
    #[error(transparent)]
    HostLock(#[from] crate::store::host_lock::HostLockError),
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
    /// A rollback was refused.
    #[error(transparent)]
    Rollback(#[from] RollbackError),
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
    /// Native jobs to run besides the components (the built-ins `backup`
    /// and `retention` are added when the configuration has a
    /// `[jobs.backup]` or `[jobs.retention]` section).
    pub native_jobs: Vec<Arc<dyn NativeJob>>,
    /// An application's pool to keep Sundial's tables in (its database file
    /// is then also the default application database); overrides
    /// `database_url`.
    pub database_pool: Option<sqlx::SqlitePool>,
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
            database_pool: None,
        }
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        if let Some(pool) = &self.database_pool {
            return format!("sqlite://{}", pool.connect_options().get_filename().display());
        }
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
    /// The host-wide limit on running executions (`max_running`), if any.
    pub slots: Option<crate::slots::Slots>,
    events: Events,
    /// The application database (for item-local jobs' `item_zones_query`).
    app_db: AppDb,
    /// A scheduling host's hold on its SQLite database, released at shutdown.
    lock: Arc<std::sync::Mutex<Option<crate::store::host_lock::HostLock>>>,
    /// Renews this host's lease until stopped (at shutdown).
    lease_task: Arc<std::sync::Mutex<Option<crate::lease::LeaseTask>>>,
}

impl Host {
    /// Opens the store, marks executions a dead host left running as crashed,
    /// loads the jobs directory and (if asked) starts scheduling.
    pub async fn start(options: HostOptions) -> Result<Host, HostError> {
        options.config.check_item_workers(&options.app_database_url())?;
        let store = match &options.database_pool {
            Some(pool) => Store::with_pool(pool.clone()).await?,
            None => Store::open(&options.database_url()).await?,
        };
        // Before anything else: a second host on a SQLite file must not take
        // the first one's running executions for crashed ones. (Hosts sharing
        // a Postgres database tell each other apart by their leases.)
        let lock = match crate::store::appdb::sqlite_path(&options.database_url()) {
            Ok(path) if options.schedule && !store.is_postgres() => {
                match crate::store::host_lock::HostLock::acquire(&path, &options.node) {
                    Ok(lock) => Some(lock),
                    Err(e) => {
                        store.close().await;
                        return Err(e.into());
                    }
                }
            }
            _ => None,
        };
        let lease = options.config.lease();
        if let Err(e) = store.register_host(&options.node, env!("CARGO_PKG_VERSION"), lease).await {
            store.close().await;
            return Err(e.into());
        }
        let repo = Repository::new(store.clone()).start();
        let crashed: Vec<ExecutionRecord> =
            if options.schedule { repo.send(MarkCrashed { own: options.node.clone() }).await?? } else { Vec::new() };
        if !crashed.is_empty() {
            tracing::warn!(count = crashed.len(), "executions left running by a host that died marked crashed");
        }
        let app_url = options.app_database_url();
        let app_db = AppDb::open(&app_url)?;
        // Jobs' key-value state lives in Sundial's database (migrated above).
        let state_db = crate::store::state::StateDb::open(&options.database_url(), app_db.path())?;
        let settings = crate::runtime::EngineSettings::with_fuel(options.config.meters_fuel());
        let runtime = Runtime::with_settings(options.clock.clone(), Some(&options.cache_dir()), settings)?;
        let scheduler = if options.schedule {
            let enabled = repo.send(GetGlobalEnabled {}).await??;
            Some(Scheduler::new(repo.clone(), options.clock.clone(), enabled).start())
        } else {
            None
        };
        let events = crate::events::channel(options.event_capacity);
        let metrics = crate::metrics::Metrics::new();
        metrics.follow(events.subscribe());
        if options.schedule {
            crate::notify::follow(
                options.config.webhooks.clone(),
                store.clone(),
                options.node.clone(),
                events.subscribe(),
            );
        }
        let mut native = options.native_jobs.clone();
        if options.config.jobs.contains_key("backup") && !native.iter().any(|n| n.info().name == "backup") {
            let mut files: Vec<PathBuf> = app_db.path().map(|p| p.to_path_buf()).into_iter().collect();
            if let Ok(own) = crate::store::appdb::sqlite_path(&options.database_url()) {
                files.insert(0, own);
            }
            native.push(Arc::new(crate::builtin::Backup::new(files, options.config.base_dir.clone())));
        }
        if options.config.jobs.contains_key("retention") && !native.iter().any(|n| n.info().name == "retention") {
            let url = options.database_url();
            let database = if crate::store::is_postgres_url(&url) {
                Some(crate::builtin::RetentionTarget::Postgres(url))
            } else {
                crate::store::appdb::sqlite_path(&url).ok().map(crate::builtin::RetentionTarget::Sqlite)
            };
            match database {
                Some(database) => native.push(Arc::new(crate::builtin::Retention { database })),
                None => tracing::error!("the retention job needs Sundial's database as a file or on Postgres"),
            }
        }
        let slots = options.config.max_running.map(|n| crate::slots::Slots::new(n as usize));
        let loader = Loader::new(LoaderSetup {
            dir: options.jobs_dir(),
            config: Arc::new(options.config.clone()),
            runtime: runtime.clone(),
            repo: repo.clone(),
            scheduler: scheduler.clone(),
            app_db: Some(app_db.clone()),
            state_db: Some(state_db),
            slots: slots.clone(),
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
        crate::lease::retry_crashed(&loader, crashed).await;
        let lease_task = crate::lease::spawn(crate::lease::LeaseSetup {
            store: store.clone(),
            repo: repo.clone(),
            loader: loader.clone(),
            node: options.node.clone(),
            lease,
            sweep: options.schedule && store.is_postgres(),
        });
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
            slots,
            events,
            app_db,
            lock: Arc::new(std::sync::Mutex::new(lock)),
            lease_task: Arc::new(std::sync::Mutex::new(Some(lease_task))),
        })
    }

    /// A builder for an embedded host (see the [`embedding`](crate::embedding) guide).
    pub fn builder() -> HostBuilder {
        HostBuilder::new()
    }

    /// The HTTP API, `/healthz`, `/metrics` and the UI as an actix-web
    /// configuration, to mount in an application's own `App`, usually under
    /// a prefix: `web::scope("/sundial").configure(host.http(options))`.
    pub fn http(
        &self,
        options: crate::api::ApiOptions,
    ) -> impl Fn(&mut actix_web::web::ServiceConfig) + Clone + Send + 'static {
        crate::api::configure(self.clone(), options)
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
            s.send(RegisterJob {
                job: record.clone(),
                misfire: snap.config.misfire,
                supervisor,
                item_zones: snap.config.item_zones.clone(),
                app_db: Some(self.app_db.clone()),
            })
            .await??;
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
        let bytes: Arc<[u8]> = bytes.into();
        let version = self.runtime.load(bytes.clone()).await?;
        Ok(self.loader.send(DeployComponent { bytes, version }).await??)
    }

    /// Puts an earlier version of a job's component live again, from the
    /// bytes the store keeps for the last [`KEEP_VERSIONS`] versions (the file
    /// need not exist any more). `to` is a version number (`3` or `v3`) or a
    /// digest prefix of at least 8 hex digits; `None` is the newest earlier
    /// version whose code differs from the live one. The component is
    /// validated and installed like a deploy: written into the jobs directory
    /// (so a restart keeps it) and live for the job's next execution, as a
    /// new version number with the old digest.
    pub async fn rollback(&self, job: &str, to: Option<&str>) -> Result<RolledBack, HostError> {
        self.supervisor(job).await?;
        let record = self.store.get_job(job).await?.ok_or_else(|| StoreError::UnknownJob(job.to_string()))?;
        let live = record.component_digest.clone().unwrap_or_default();
        if live.starts_with("native:") {
            return Err(RollbackError::Native(job.to_string()).into());
        }
        let current = record.component_version.unwrap_or(0);
        let versions = self.store.job_versions(record.id, u32::MAX).await?;
        let target = match to.map(str::trim) {
            None => versions
                .iter()
                .find(|v| v.version < current && v.digest != live && v.kept)
                .ok_or_else(|| RollbackError::NoEarlier { job: job.to_string() })?,
            Some(t) => {
                let number = t.strip_prefix('v').unwrap_or(t).parse::<i64>().ok();
                let by_number = number.and_then(|n| versions.iter().find(|v| v.version == n));
                let digest_like = t.len() >= 8 && t.chars().all(|c| c.is_ascii_hexdigit());
                let found = match number {
                    // A number that is no version but could be a digest prefix is one.
                    Some(_) if by_number.is_some() || !digest_like => by_number,
                    _ if digest_like => {
                        let t = t.to_ascii_lowercase();
                        let matching: Vec<&VersionRecord> =
                            versions.iter().filter(|v| v.digest.starts_with(&t)).collect();
                        if matching.iter().any(|v| v.digest != matching[0].digest) {
                            let message = format!("digest prefix {t:?} matches several versions; give more digits");
                            return Err(RollbackError::BadTarget(message).into());
                        }
                        // The same code may have several versions: the newest that is kept.
                        matching.iter().find(|v| v.kept).or(matching.first()).copied()
                    }
                    _ => {
                        return Err(RollbackError::BadTarget(format!(
                            "{t:?} is neither a version number (3 or v3) nor a digest prefix of at least 8 hex digits"
                        ))
                        .into());
                    }
                };
                found.ok_or_else(|| RollbackError::UnknownVersion { job: job.to_string(), to: t.to_string() })?
            }
        };
        if target.digest == live {
            return Err(RollbackError::AlreadyLive { job: job.to_string(), version: target.version, current }.into());
        }
        let bytes = match self.store.version_component(record.id, target.version).await? {
            Some(b) if target.kept => b,
            _ => return Err(RollbackError::NotKept { job: job.to_string(), version: target.version }.into()),
        };
        let job_now = self.deploy(bytes).await?;
        tracing::info!(job, to = target.version, digest = %target.digest, live_as = ?job_now.component_version,
            "rolled back");
        Ok(RolledBack { from: current, to: target.clone(), job: job_now })
    }

    /// Stops the host gracefully: no new runs start (scheduled fires,
    /// retries, queued and manual runs are refused), runs in flight get
    /// `grace` to finish, then are cancelled and recorded `cancelled`; the
    /// store is closed once every outcome is written. Runs that do not end
    /// even after cancellation (a native job that never checks
    /// [`should_stop`](crate::runtime::NativeContext::should_stop)) are
    /// abandoned: the next host marks them crashed.
    pub async fn shutdown(&self, grace: Duration) -> ShutdownReport {
        let started = std::time::Instant::now();
        let _ = self.loader.send(Unwatch).await;
        if let Some(s) = &self.scheduler {
            let _ = s.send(Shutdown).await;
        }
        let supervisors: Vec<Addr<JobSupervisor>> = match self.loader.send(AllSupervisors).await {
            Ok(all) => all.into_iter().map(|(_, s)| s).collect(),
            Err(_) => Vec::new(),
        };
        let in_flight = drain(&supervisors, false).await;
        let mut report = ShutdownReport { in_flight: in_flight.len(), ..ShutdownReport::default() };
        if !in_flight.is_empty() {
            tracing::info!(
                running = in_flight.len(),
                grace_secs = grace.as_secs_f64(),
                "waiting for running executions"
            );
        }
        // A grace too long to add (Duration::MAX: "wait for ever") is a year.
        let until = started.checked_add(grace).unwrap_or_else(|| started + Duration::from_secs(365 * 24 * 3600));
        let mut running = wait_drained(&supervisors, in_flight, false, until).await;
        if !running.is_empty() {
            tracing::warn!(running = running.len(), "grace period over; cancelling the executions still running");
            report.cancelled = drain(&supervisors, true).await.into_iter().filter(|id| id.0 > 0).collect();
            running = wait_drained(&supervisors, running, true, std::time::Instant::now() + CANCEL_WAIT).await;
        }
        if !running.is_empty() {
            tracing::error!(running = ?running, "executions did not stop after cancellation; the next host marks them crashed");
        }
        report.abandoned = running;
        let lease_task = self.lease_task.lock().ok().and_then(|mut t| t.take());
        if let Some(task) = lease_task {
            task.stop().await;
        }
        if let Err(e) = self.store.unregister_host(&self.node).await {
            tracing::warn!(error = %e, "cannot remove this host from the hosts table");
        }
        self.store.close().await;
        if let Ok(mut lock) = self.lock.lock() {
            lock.take();
        }
        report.took = started.elapsed();
        tracing::info!(
            in_flight = report.in_flight,
            cancelled = report.cancelled.len(),
            abandoned = report.abandoned.len(),
            took_ms = report.took.as_millis() as u64,
            "host stopped"
        );
        report
    }

    /// [`shutdown`](Host::shutdown) without a grace period: runs in flight
    /// are cancelled at once (and recorded `cancelled`).
    pub async fn stop(self) {
        self.shutdown(Duration::ZERO).await;
    }
}

/// Why a rollback was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RollbackError {
    /// Native jobs are code in the host: there is nothing to roll back.
    #[error("{0:?} is a native job; its code is part of the host and has no versions to roll back to")]
    Native(String),
    /// No earlier, different, kept version.
    #[error("job {job:?} has no earlier version to roll back to (the last {KEEP_VERSIONS} versions are kept)")]
    NoEarlier {
        /// The job.
        job: String,
    },
    /// No version matches.
    #[error("job {job:?} has no version {to:?}")]
    UnknownVersion {
        /// The job.
        job: String,
        /// What was asked for.
        to: String,
    },
    /// The version's code is no longer kept.
    #[error("version {version} of job {job:?} is too old: only the last {KEEP_VERSIONS} versions' components are kept")]
    NotKept {
        /// The job.
        job: String,
        /// The version asked for.
        version: i64,
    },
    /// The version asked for is the live code already.
    #[error("version {version} of job {job:?} has the same code as the live version {current}; nothing to do")]
    AlreadyLive {
        /// The job.
        job: String,
        /// The version asked for.
        version: i64,
        /// The live version.
        current: i64,
    },
    /// `to` is neither a version nor a digest prefix.
    #[error("{0}")]
    BadTarget(String),
}

/// A rollback that went live.
#[derive(Debug, Clone)]
pub struct RolledBack {
    /// The version live before.
    pub from: i64,
    /// The version whose code is live again.
    pub to: VersionRecord,
    /// The job now (its new version number has `to`'s digest).
    pub job: JobRecord,
}

/// How long cancelled executions get to record their end before the host
/// stops without them.
pub const CANCEL_WAIT: Duration = Duration::from_secs(10);

/// How a [`Host::shutdown`] went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ShutdownReport {
    /// Executions running (or being started) when the shutdown began.
    pub in_flight: usize,
    /// Executions cancelled when the grace period ran out.
    pub cancelled: Vec<ExecutionId>,
    /// Executions that did not end even after cancellation.
    pub abandoned: Vec<ExecutionId>,
    /// How long the shutdown took.
    pub took: Duration,
}

/// Tells every supervisor to start nothing new; returns what is in flight.
async fn drain(supervisors: &[Addr<JobSupervisor>], cancel: bool) -> Vec<ExecutionId> {
    let mut running = Vec::new();
    for s in supervisors {
        if let Ok(ids) = s.send(Drain { cancel }).await {
            running.extend(ids);
        }
    }
    running
}

/// Polls the supervisors (cancelling what starts meanwhile, with `cancel`)
/// until nothing is in flight or `deadline` passes; returns what is still
/// running.
async fn wait_drained(
    supervisors: &[Addr<JobSupervisor>],
    mut running: Vec<ExecutionId>,
    cancel: bool,
    deadline: std::time::Instant,
) -> Vec<ExecutionId> {
    while !running.is_empty() && std::time::Instant::now() < deadline {
        actix_rt::time::sleep(Duration::from_millis(20).min(deadline - std::time::Instant::now())).await;
        running = drain(supervisors, cancel).await;
    }
    running
}

/// Builds a [`Host`] for an application that embeds Sundial. Everything has
/// a default: an empty configuration, `sundial.db` and `jobs/` in the
/// working directory, the system clock, scheduling on.
///
/// ```no_run
/// # async fn example(pool: sqlx::SqlitePool) -> Result<(), sundial::host::HostError> {
/// use std::time::Duration;
/// let host = sundial::host::Host::builder()
///     .database_pool(pool)   // or .database_url("sqlite://app.db")
///     .jobs_dir("jobs")
///     .start()
///     .await?;
/// // … serve, run jobs, subscribe to events …
/// host.shutdown(Duration::from_secs(30)).await;
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
pub struct HostBuilder {
    options: HostOptions,
}

impl Default for HostBuilder {
    fn default() -> Self {
        HostBuilder::new()
    }
}

impl HostBuilder {
    /// Defaults: no configuration file, the system clock, scheduling on.
    pub fn new() -> Self {
        let config = Config { base_dir: PathBuf::from("."), ..Config::default() };
        HostBuilder { options: HostOptions::new(config) }
    }

    /// Job settings, grants, defaults (as in `sundial.toml`; relative paths
    /// resolve against `config.base_dir`).
    pub fn config(mut self, config: Config) -> Self {
        self.options.config = config;
        self
    }

    /// Sundial's database by URL (`sqlite://path`).
    pub fn database_url(mut self, url: impl Into<String>) -> Self {
        self.options.database_url = Some(url.into());
        self.options.database_pool = None;
        self
    }

    /// Keeps Sundial's tables in the database of the application's pool,
    /// which Sundial also uses for its reads. The same file is the default
    /// database that jobs granted database access work on.
    pub fn database_pool(mut self, pool: sqlx::SqlitePool) -> Self {
        self.options.database_pool = Some(pool);
        self.options.database_url = None;
        self
    }

    /// The directory of `*.wasm` job components (created if missing, and
    /// watched: components dropped into it go live).
    pub fn jobs_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.jobs_dir = Some(dir.into());
        self
    }

    /// Where compiled components are cached.
    pub fn cache_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.options.config.cache_dir = Some(dir.into());
        self
    }

    /// The clock (a [`ManualClock`](crate::clock::ManualClock) in tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.options.clock = clock;
        self
    }

    /// A job implemented in Rust, run in-process and scheduled, recorded and
    /// shown like component jobs.
    pub fn native_job(mut self, job: impl NativeJob) -> Self {
        self.options.native_jobs.push(Arc::new(job));
        self
    }

    /// Whether to fire schedules (off: jobs run only when asked).
    pub fn schedule(mut self, on: bool) -> Self {
        self.options.schedule = on;
        self
    }

    /// This host's name in execution rows (default `hostname:pid`).
    pub fn node_name(mut self, name: impl Into<String>) -> Self {
        self.options.node = name.into();
        self
    }

    /// Opens the store, loads the jobs and (unless turned off) starts
    /// scheduling. Must be called inside an actix system (an
    /// `#[actix_web::main]` application is one).
    pub async fn start(self) -> Result<Host, HostError> {
        let dir = self.options.jobs_dir();
        if !dir.is_dir() {
            std::fs::create_dir_all(&dir)
                .map_err(|e| LoaderError::Dir { dir: dir.clone(), message: format!("cannot create it: {e}") })?;
        }
        Host::start(self.options).await
    }
}

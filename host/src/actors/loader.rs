//! `Loader`: turns `*.wasm` files in the jobs directory into running jobs.
//! Each file is validated completely (see `runtime::ComponentVersion`) before
//! anything changes; a file that fails leaves the previous version of its job
//! running and the failure logged and recorded. Validated components are
//! registered with the repository, handed to their supervisor (created on
//! first sight) and scheduled.
//!
//! While the host schedules, the loader also watches the directory
//! ([`Watch`]): bursts of events for a file are debounced, then the file is
//! loaded as at start, so a new or changed `.wasm` goes live without a
//! restart. Policies: a file whose bytes did not change is left alone; a
//! symlink is refused (nothing outside the directory is loaded); a removed
//! file leaves the job running its last loaded version, marked with a load
//! error saying so, until a file for it appears again.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::prelude::*;

use super::repository::{KeepComponent, Repository, SetLoadError, UpsertJob, UpsertJobPending};
use super::scheduler::{RegisterJob, Scheduler};
use super::supervisor::{Deploy, Hold, JobSupervisor, SupervisorSetup};
use crate::clock::Clock;
use crate::config::{Config, JobConfig};
use crate::events::{Event, Events};
use crate::model::JobRecord;
use crate::runtime::{ComponentVersion, ContentKey, JobCode, MAX_COMPONENT_BYTES, NativeJob, Runtime};
use crate::store::JobDefinition;
use crate::store::appdb::AppDb;
use crate::store::state::StateDb;

/// Loads job components.
pub struct Loader {
    dir: PathBuf,
    config: Arc<Config>,
    runtime: Runtime,
    repo: Addr<Repository>,
    scheduler: Option<Addr<Scheduler>>,
    app_db: Option<AppDb>,
    state_db: Option<StateDb>,
    slots: Option<crate::slots::Slots>,
    clock: Arc<dyn Clock>,
    node: String,
    events: Events,
    native: Vec<Arc<dyn NativeJob>>,
    supervisors: HashMap<String, Loaded>,
    watcher: Option<notify::RecommendedWatcher>,
    /// Files with events not yet handled, and when the last one came.
    pending: HashMap<PathBuf, Instant>,
    /// Files being loaded now (one load per file at a time, so an older
    /// read never lands after a newer one).
    loading: std::collections::HashSet<PathBuf>,
    /// What deploys wrote to each file lately: the watcher sees those writes
    /// too, sometimes late, and must not load them a second time (a late read
    /// of an earlier deploy's file would otherwise go live again as a new
    /// version after a newer deploy).
    own_writes: HashMap<PathBuf, Vec<(ContentKey, Instant)>>,
}

/// How long a deploy's own write is recognised when the watcher reports it.
const OWN_WRITE_MEMORY: Duration = Duration::from_secs(10);

/// A loaded job: its supervisor, its file and the code it runs.
struct Loaded {
    supervisor: Addr<JobSupervisor>,
    path: PathBuf,
    code: JobCode,
    /// Whether a load error is recorded on the job (its file was rejected or removed).
    failed: bool,
}

/// How long a file must be quiet before it is loaded (writers write in
/// pieces; editors and copies touch a file several times).
pub const DEBOUNCE: Duration = Duration::from_millis(200);

/// What the loader needs.
pub struct LoaderSetup {
    /// The jobs directory.
    pub dir: PathBuf,
    /// Configuration.
    pub config: Arc<Config>,
    /// The runtime.
    pub runtime: Runtime,
    /// The repository.
    pub repo: Addr<Repository>,
    /// The scheduler, absent for one-shot commands.
    pub scheduler: Option<Addr<Scheduler>>,
    /// The application database.
    pub app_db: Option<AppDb>,
    /// Where jobs' key-value state is kept.
    pub state_db: Option<StateDb>,
    /// The host-wide limit on running executions, if any.
    pub slots: Option<crate::slots::Slots>,
    /// The clock.
    pub clock: Arc<dyn Clock>,
    /// This host's name.
    pub node: String,
    /// Where execution events go.
    pub events: Events,
    /// Native jobs (built-in or the embedding application's).
    pub native: Vec<Arc<dyn NativeJob>>,
}

impl Loader {
    /// A loader for `setup.dir`.
    pub fn new(s: LoaderSetup) -> Self {
        Loader {
            // Absolute, so the watcher's paths and the loaded files' paths compare equal.
            dir: s.dir.canonicalize().unwrap_or(s.dir),
            config: s.config,
            runtime: s.runtime,
            repo: s.repo,
            scheduler: s.scheduler,
            app_db: s.app_db,
            state_db: s.state_db,
            slots: s.slots,
            clock: s.clock,
            node: s.node,
            events: s.events,
            native: s.native,
            supervisors: HashMap::new(),
            watcher: None,
            pending: HashMap::new(),
            loading: Default::default(),
            own_writes: HashMap::new(),
        }
    }

    fn install(
        &mut self,
        path: PathBuf,
        code: JobCode,
        config: JobConfig,
        job: JobRecord,
        hold: Option<HoldHandle>,
        noticed: Option<Instant>,
    ) -> Result<String, String> {
        let name = job.name.clone();
        if let Some(l) = self.supervisors.get(&name)
            && l.path != path
            && l.path.exists()
        {
            return Err(format!("job {name:?} is already provided by {}", l.path.display()));
        }
        let version_no = job.component_version.unwrap_or(1);
        let live = code.clone();
        let supervisor = match self.supervisors.get_mut(&name) {
            Some(l) => {
                let deploy = Deploy { code, version_no, config: config.clone(), job: job.clone(), noticed };
                match hold {
                    // The supervisor is waiting for exactly this.
                    Some(hold) => {
                        if let Err(deploy) = hold.send(deploy) {
                            l.supervisor.do_send(deploy);
                        }
                    }
                    None => l.supervisor.do_send(deploy),
                }
                // A job whose file was renamed now lives in the new one.
                l.path = path;
                l.code = live;
                l.failed = false;
                l.supervisor.clone()
            }
            None => {
                let addr = JobSupervisor::new(SupervisorSetup {
                    job: job.clone(),
                    config: config.clone(),
                    code,
                    runtime: self.runtime.clone(),
                    repo: self.repo.clone(),
                    app_db: self.app_db.clone(),
                    state_db: self.state_db.clone(),
                    slots: self.slots.clone(),
                    clock: self.clock.clone(),
                    node: self.node.clone(),
                    lease: self.config.lease(),
                    events: self.events.clone(),
                })
                .start();
                self.supervisors
                    .insert(name.clone(), Loaded { supervisor: addr.clone(), path, code: live, failed: false });
                addr
            }
        };
        if let Some(s) = &self.scheduler {
            s.do_send(RegisterJob {
                job,
                misfire: config.misfire,
                supervisor,
                item_zones: config.item_zones.clone(),
                app_db: self.app_db.clone(),
            });
        }
        let _ = self.events.send(Event::JobChanged { job: name.clone() });
        Ok(name)
    }

    /// Where a job's component lives: the file it was loaded from, or
    /// `<name>.wasm` for a new job. Refuses native jobs and another job's file.
    fn file_for(&self, name: &str) -> Result<PathBuf, DeployError> {
        if let Some(l) = self.supervisors.get(name) {
            if self.native.iter().any(|n| n.info().name == name) {
                return Err(DeployError::Native(name.to_string()));
            }
            return Ok(l.path.clone());
        }
        let path = self.dir.join(format!("{name}.wasm"));
        if let Some(other) = self.job_at(&path) {
            return Err(DeployError::FileTaken { path, job: other });
        }
        Ok(path)
    }

    /// The job loaded from `path`, if any.
    fn job_at(&self, path: &Path) -> Option<String> {
        self.supervisors.iter().find(|(_, l)| l.path == path).map(|(n, _)| n.clone())
    }

    /// Records (and logs) why a file was not loaded, on its job if known.
    fn reject(&mut self, path: &Path, job: Option<String>, message: &str) {
        tracing::error!(file = %path.display(), error = %message, "job component rejected");
        if let Some(name) = job.or_else(|| self.job_at(path)) {
            if let Some(l) = self.supervisors.get_mut(&name) {
                l.failed = true;
            }
            self.repo.do_send(SetLoadError { name: name.clone(), error: Some(message.to_string()) });
            let _ = self.events.send(Event::JobChanged { job: name });
        }
    }

    /// Handles a file after its events have settled (the last at `since`):
    /// load it, or apply the removal policy.
    fn settle(&mut self, path: PathBuf, since: Instant, ctx: &mut Context<Self>) {
        if self.loading.contains(&path) {
            // Try again once the load in flight has landed.
            self.pending.insert(path.clone(), Instant::now());
            return self.settle_later(path, DEBOUNCE, ctx);
        }
        let meta = match std::fs::symlink_metadata(&path) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return self.removed(&path),
            Err(e) => return self.reject(&path, None, &format!("cannot read: {e}")),
        };
        if meta.file_type().is_symlink() || !meta.is_file() {
            let message =
                "not a regular file (symlinks are not followed, so nothing outside the jobs directory is loaded)";
            return self.reject(&path, None, message);
        }
        let runtime = self.runtime.clone();
        let repo = self.repo.clone();
        let config = self.config.clone();
        let unchanged = self.job_at(&path).and_then(|n| self.supervisors.get(&n)).and_then(|l| l.code.key());
        let own: Vec<ContentKey> = self.own_writes(&path);
        let supervisors = self.supervisor_addrs();
        let file = path.clone();
        let read_at = Instant::now();
        let work = async move {
            let bytes: Arc<[u8]> = read_component(&file)?.into();
            let key = ContentKey::of(&bytes);
            if unchanged == Some(key) || own.contains(&key) {
                return Ok(None);
            }
            // The bytes (kept for rollback) are written once the version is
            // live, not on the way to it.
            let (registered, hold) =
                load_registered(&runtime, &repo, &config, &supervisors, bytes.clone(), key).await?;
            Ok(Some((registered, hold, bytes)))
        };
        self.loading.insert(path.clone());
        ctx.spawn(work.into_actor(self).map(move |res, act, _| {
            act.loading.remove(&path);
            if !matches!(res, Ok(None)) {
                // Someone else wrote the file since: from now on the same
                // bytes as an earlier deploy are theirs, and load.
                if let Some(writes) = act.own_writes.get_mut(&path) {
                    writes.retain(|(_, at)| *at > read_at);
                }
            }
            let outcome = match res {
                Ok(None) => return act.restored(&path),
                Ok(Some(((code, config, job), hold, bytes))) => {
                    let keep = job.component_version.map(|version| KeepComponent {
                        job: job.id,
                        version,
                        digest: code.digest(),
                        bytes,
                    });
                    let installed =
                        act.install(path.clone(), code, config, job, hold, Some(since)).map_err(|e| (None, e));
                    if let (Ok(_), Some(keep)) = (&installed, keep) {
                        act.keep_for_rollback(keep);
                    }
                    installed
                }
                Err(e) => Err(e),
            };
            match outcome {
                Ok(name) => tracing::info!(job = %name, file = %path.display(), "job reloaded"),
                Err((name, message)) => act.reject(&path, name, &message),
            }
        }));
    }

    /// Writes a live version's bytes for rollback, in the background; a
    /// failure is logged (the version stays live, it cannot be rolled back to).
    fn keep_for_rollback(&self, keep: KeepComponent) {
        let repo = self.repo.clone();
        actix::spawn(async move {
            let job = keep.job;
            let kept = repo.send(keep).await.map_err(|e| e.to_string()).and_then(|r| r.map_err(|e| e.to_string()));
            if let Err(error) = kept {
                tracing::error!(job = job.0, %error, "cannot keep the component for rollback");
            }
        });
    }

    /// Every loaded job's supervisor, by name.
    fn supervisor_addrs(&self) -> HashMap<String, Addr<JobSupervisor>> {
        self.supervisors.iter().map(|(n, l)| (n.clone(), l.supervisor.clone())).collect()
    }

    /// The content keys of what deploys wrote to `path` within [`OWN_WRITE_MEMORY`].
    fn own_writes(&mut self, path: &Path) -> Vec<ContentKey> {
        let Some(writes) = self.own_writes.get_mut(path) else { return Vec::new() };
        writes.retain(|(_, at)| at.elapsed() < OWN_WRITE_MEMORY);
        let keys: Vec<ContentKey> = writes.iter().map(|(k, _)| *k).collect();
        if writes.is_empty() {
            self.own_writes.remove(path);
        }
        keys
    }

    /// The running version's own bytes are back: clear the job's load error.
    fn restored(&mut self, path: &Path) {
        let Some(name) = self.job_at(path) else { return };
        if let Some(l) = self.supervisors.get_mut(&name)
            && l.failed
        {
            l.failed = false;
            tracing::info!(job = %name, file = %path.display(), "the running version's file is back");
            self.repo.do_send(SetLoadError { name: name.clone(), error: None });
            let _ = self.events.send(Event::JobChanged { job: name });
        }
    }

    /// A job's file is gone: the job keeps its last loaded version, marked.
    fn removed(&mut self, path: &Path) {
        let Some(name) = self.job_at(path) else { return };
        let Some(l) = self.supervisors.get_mut(&name) else { return };
        l.failed = true;
        let file = path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
        let message = format!(
            "its file {file} was removed; the last loaded version ({}) keeps running until a file for the job appears again",
            short(&l.code.digest())
        );
        tracing::warn!(job = %name, file = %path.display(), "{message}");
        self.repo.do_send(SetLoadError { name: name.clone(), error: Some(message) });
        let _ = self.events.send(Event::JobChanged { job: name });
    }
}

/// The first 12 characters of a digest.
fn short(digest: &str) -> &str {
    digest.get(..12).unwrap_or(digest)
}

/// Reads a component file, refusing one over the size limit before reading it.
fn read_component(path: &Path) -> Result<Vec<u8>, (Option<String>, String)> {
    let meta = std::fs::metadata(path).map_err(|e| (None, format!("cannot read: {e}")))?;
    if meta.len() > MAX_COMPONENT_BYTES as u64 {
        return Err((
            None,
            format!("file is {} bytes, larger than the limit of {MAX_COMPONENT_BYTES} bytes", meta.len()),
        ));
    }
    std::fs::read(path).map_err(|e| (None, format!("cannot read: {e}")))
}

/// Why a deployed component was not put in place (it is valid).
#[derive(Debug, thiserror::Error)]
pub enum DeployError {
    /// The job is built in or the embedding application's.
    #[error("job {0:?} is a native job; a component cannot replace it")]
    Native(String),
    /// The file name the job would get belongs to another job.
    #[error("the jobs directory's {} already holds job {job:?}; rename that file first",
        path.file_name().map(|n| n.to_string_lossy()).unwrap_or_default())]
    FileTaken {
        /// The file.
        path: PathBuf,
        /// Its job.
        job: String,
    },
    /// Configuration rejects the job (grants, schedule).
    #[error("{0}")]
    Config(String),
    /// The file could not be written.
    #[error("cannot write the component into the jobs directory: {0}")]
    Write(String),
    /// The job could not be registered.
    #[error("cannot register the job: {0}")]
    Register(String),
}

impl Actor for Loader {
    type Context = Context<Self>;
}

/// Why the jobs directory could not be read at all.
#[derive(Debug, Clone, thiserror::Error)]
pub enum LoaderError {
    /// Missing or unreadable.
    #[error("cannot read jobs directory {dir}: {message}")]
    Dir {
        /// The directory.
        dir: PathBuf,
        /// Why.
        message: String,
    },
}

/// The outcome of loading the directory.
#[derive(Debug, Clone, Default)]
pub struct LoadSummary {
    /// Jobs loaded, by name.
    pub loaded: Vec<String>,
    /// Files rejected, with why.
    pub failed: Vec<(PathBuf, String)>,
}

/// Sent at start: load every `*.wasm` in the jobs directory.
#[derive(Debug, Message)]
#[rtype(result = "Result<LoadSummary, LoaderError>")]
pub struct LoadAll;

/// The `*.wasm` files directly in `dir`, sorted. Symlinks and other
/// non-regular files are ignored so nothing outside the directory is loaded.
pub fn wasm_files(dir: &Path) -> Result<Vec<PathBuf>, LoaderError> {
    let err = |e: std::io::Error| LoaderError::Dir { dir: dir.to_path_buf(), message: e.to_string() };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(err)? {
        let entry = entry.map_err(err)?;
        let path = entry.path();
        let regular = entry.file_type().map(|t| t.is_file()).unwrap_or(false);
        if regular && path.extension().is_some_and(|e| e == "wasm") {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

type LoadResult = Result<(JobCode, JobConfig, JobRecord), (Option<String>, String)>;

/// Where a native job is "from" (instead of a file).
fn native_origin(name: &str) -> PathBuf {
    PathBuf::from(format!("<native job {name}>"))
}

impl Handler<LoadAll> for Loader {
    type Result = ResponseActFuture<Self, Result<LoadSummary, LoaderError>>;

    fn handle(&mut self, _: LoadAll, _: &mut Context<Self>) -> Self::Result {
        let files = match wasm_files(&self.dir) {
            Ok(f) => f,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        let runtime = self.runtime.clone();
        let repo = self.repo.clone();
        let config = self.config.clone();
        let native = self.native.clone();
        let work = async move {
            let mut results: Vec<(PathBuf, LoadResult)> = Vec::new();
            for job in native {
                let name = job.info().name;
                let r = register(&repo, &config, JobCode::Native(job), None).await;
                results.push((native_origin(&name), r));
            }
            for path in files {
                let r = load_one(&runtime, &repo, &config, &path).await;
                results.push((path, r));
            }
            results
        };
        Box::pin(work.into_actor(self).map(|results, act, _| {
            let mut summary = LoadSummary::default();
            for (path, r) in results {
                let outcome = match r {
                    Ok((version, config, job)) => {
                        act.install(path.clone(), version, config, job, None, None).map_err(|e| (None, e))
                    }
                    Err(e) => Err(e),
                };
                match outcome {
                    Ok(name) => {
                        tracing::info!(job = %name, file = %path.display(), "job loaded");
                        summary.loaded.push(name);
                    }
                    Err((name, message)) => {
                        act.reject(&path, name, &message);
                        summary.failed.push((path, message));
                    }
                }
            }
            Ok(summary)
        }))
    }
}

async fn load_one(runtime: &Runtime, repo: &Addr<Repository>, config: &Config, path: &Path) -> LoadResult {
    let bytes: Arc<[u8]> = read_component(path)?.into();
    let version: Arc<ComponentVersion> = runtime.load(bytes.clone()).await.map_err(|e| (None, e.to_string()))?;
    register(repo, config, JobCode::Component(version), Some(bytes)).await
}

/// The loader's side of a [`Hold`]: the new version goes through it.
type HoldHandle = tokio::sync::oneshot::Sender<Deploy>;

/// Holds a job's supervisor (if it has one) while its new version is
/// recorded, so that no run starts on the old code once the stored job shows
/// the new one. Dropping the handle without sending releases it.
async fn hold(supervisor: Option<&Addr<JobSupervisor>>) -> Option<HoldHandle> {
    let supervisor = supervisor?;
    let (tx, rx) = tokio::sync::oneshot::channel();
    supervisor.send(Hold { code: rx }).await.ok()?;
    Some(tx)
}

/// Loads a changed file's component and records it with the repository,
/// holding its job's supervisor until the caller installs it. The version
/// is recorded while its code is still loading (a cached artifact's digest
/// and `describe` record are known first), in a transaction that commits
/// only if the load succeeds.
async fn load_registered(
    runtime: &Runtime,
    repo: &Addr<Repository>,
    config: &Config,
    supervisors: &HashMap<String, Addr<JobSupervisor>>,
    bytes: Arc<[u8]>,
    key: ContentKey,
) -> Result<((JobCode, JobConfig, JobRecord), Option<HoldHandle>), (Option<String>, String)> {
    let failed = |e: crate::runtime::LoadError| (None, e.to_string());
    let staged = runtime.load_staged(bytes, key);
    let Ok(described) = staged.described.await else {
        // Sent unless the load failed: this reports its error.
        let version = staged.loaded.wait().await.map_err(failed)?;
        let hold = hold(supervisors.get(&version.info.name)).await;
        return Ok((register(repo, config, JobCode::Component(version), None).await?, hold));
    };
    let (def, job_config) = definition(config, &described.info, described.digest, None)?;
    let hold = hold(supervisors.get(&described.info.name)).await;
    // Sent now, answered once the load's verdict is in.
    let pending = repo.send(UpsertJobPending { def, verdict: staged.verdict });
    let version = staged.loaded.wait().await.map_err(failed)?;
    match pending.await {
        Ok(Ok(job)) => Ok(((JobCode::Component(version), job_config, job), hold)),
        // Not recorded (the load ended with another record, or the store
        // could not hold the transaction): record the version as loaded.
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "recording a reloaded version afresh");
            Ok((register(repo, config, JobCode::Component(version), None).await?, hold))
        }
        Err(e) => Err((Some(version.info.name.clone()), e.to_string())),
    }
}

/// What the repository records for a job: its definition under `config`.
fn definition(
    config: &Config,
    info: &crate::model::JobInfo,
    digest: String,
    component: Option<Arc<[u8]>>,
) -> Result<(JobDefinition, JobConfig), (Option<String>, String)> {
    let job_config = config.job(info).map_err(|e| (Some(info.name.clone()), e.to_string()))?;
    let def = JobDefinition {
        name: info.name.clone(),
        description: info.description.clone(),
        kind: info.kind,
        schedule: job_config.schedule.clone(),
        timezone: job_config.timezone.clone(),
        enabled: job_config.enabled,
        digest,
        component,
    };
    Ok((def, job_config))
}

/// Records a validated job (and its bytes, kept for rollback) with the repository.
async fn register(repo: &Addr<Repository>, config: &Config, code: JobCode, component: Option<Arc<[u8]>>) -> LoadResult {
    let (def, job_config) = definition(config, &code.info(), code.digest(), component)?;
    let name = def.name.clone();
    let job = match repo.send(UpsertJob { def }).await {
        Ok(Ok(job)) => job,
        Ok(Err(e)) => return Err((Some(name), format!("{:#}", anyhow::Error::new(e)))),
        Err(e) => return Err((Some(name), e.to_string())),
    };
    Ok((code, job_config, job))
}

/// Sent by interfaces: the supervisor of a job.
#[derive(Debug, Message)]
#[rtype(result = "Option<Addr<JobSupervisor>>")]
pub struct GetSupervisor {
    /// The job.
    pub name: String,
}

impl Handler<GetSupervisor> for Loader {
    type Result = Option<Addr<JobSupervisor>>;

    fn handle(&mut self, msg: GetSupervisor, _: &mut Context<Self>) -> Self::Result {
        self.supervisors.get(&msg.name).map(|l| l.supervisor.clone())
    }
}

/// Sent by the deploy endpoint: a component the runtime has validated, and its
/// bytes. The file is written into the jobs directory (atomically, so a
/// restart loads it too) and the job goes live for its next execution.
/// Replies with the stored job.
#[derive(Message)]
#[rtype(result = "Result<JobRecord, DeployError>")]
pub struct DeployComponent {
    /// The file's bytes.
    pub bytes: Arc<[u8]>,
    /// The validated component.
    pub version: Arc<ComponentVersion>,
}

impl Handler<DeployComponent> for Loader {
    type Result = ResponseActFuture<Self, Result<JobRecord, DeployError>>;

    fn handle(&mut self, msg: DeployComponent, _: &mut Context<Self>) -> Self::Result {
        let name = msg.version.info.name.clone();
        let checked = self.file_for(&name).and_then(|path| {
            self.config.job(&msg.version.info).map(|_| path).map_err(|e| DeployError::Config(e.to_string()))
        });
        let path = match checked {
            Ok(path) => path,
            Err(e) => return Box::pin(async move { Err(e) }.into_actor(self)),
        };
        self.own_writes.entry(path.clone()).or_default().push((msg.version.key, Instant::now()));
        let repo = self.repo.clone();
        let config = self.config.clone();
        let supervisor = self.supervisors.get(&name).map(|l| l.supervisor.clone());
        let work = async move {
            write_atomically(&path, &msg.bytes).map_err(|e| DeployError::Write(e.to_string()))?;
            let hold = hold(supervisor.as_ref()).await;
            let registered = register(&repo, &config, JobCode::Component(msg.version), Some(msg.bytes)).await;
            registered.map(|r| (path, r, hold)).map_err(|(_, e)| DeployError::Register(e))
        };
        Box::pin(work.into_actor(self).map(|res, act, _| {
            let (path, (code, config, job), hold) = res?;
            tracing::info!(job = %job.name, file = %path.display(), version = ?job.component_version,
                "component deployed");
            act.install(path, code, config, job.clone(), hold, None).map_err(DeployError::Register)?;
            Ok(job)
        }))
    }
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// and a rename, so a reader never sees half a component.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    use std::io::Write as _;
    let dir = path.parent().unwrap_or(Path::new("."));
    let stem = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let tmp = dir.join(format!(".{stem}.{}.partial", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Sent by interfaces: every loaded job's supervisor, by name.
#[derive(Debug, Message)]
#[rtype(result = "Vec<(String, Addr<JobSupervisor>)>")]
pub struct AllSupervisors;

impl Handler<AllSupervisors> for Loader {
    type Result = MessageResult<AllSupervisors>;

    fn handle(&mut self, _: AllSupervisors, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.supervisors.iter().map(|(n, l)| (n.clone(), l.supervisor.clone())).collect())
    }
}

/// Sent once the jobs directory is loaded, by a host that schedules: watch
/// the directory and load what changes in it.
#[derive(Debug, Message)]
#[rtype(result = "Result<(), LoaderError>")]
pub struct Watch;

impl Handler<Watch> for Loader {
    type Result = Result<(), LoaderError>;

    fn handle(&mut self, _: Watch, ctx: &mut Context<Self>) -> Self::Result {
        use notify::Watcher as _;
        let addr = ctx.address();
        let handler = move |event: notify::Result<notify::Event>| match event {
            Ok(e) => {
                // When the watcher thread had it: where a reload's latency starts.
                let seen = Instant::now();
                use notify::event::{AccessKind, AccessMode, EventKind, ModifyKind, RenameMode};
                // Reading a file changes nothing (and the loader's own reads
                // would otherwise come back as events); a close after writing does.
                if matches!(e.kind, EventKind::Access(a) if a != AccessKind::Close(AccessMode::Write)) {
                    return;
                }
                // A file renamed into place is complete (atomic installs,
                // `sundial deploy`): no need to wait for it to go quiet.
                let renamed_to = match e.kind {
                    EventKind::Modify(ModifyKind::Name(RenameMode::To)) => e.paths.first().cloned(),
                    EventKind::Modify(ModifyKind::Name(RenameMode::Both)) => e.paths.get(1).cloned(),
                    _ => None,
                };
                for path in e.paths {
                    let complete = renamed_to.as_ref() == Some(&path);
                    addr.do_send(FileEvent { path, complete, seen });
                }
            }
            Err(e) => tracing::warn!(error = %e, "watching the jobs directory"),
        };
        let err = |e: notify::Error| LoaderError::Dir { dir: self.dir.clone(), message: format!("cannot watch: {e}") };
        let mut watcher = notify::recommended_watcher(handler).map_err(err)?;
        watcher.watch(&self.dir, notify::RecursiveMode::NonRecursive).map_err(err)?;
        self.watcher = Some(watcher);
        tracing::info!(dir = %self.dir.display(), "watching the jobs directory");
        Ok(())
    }
}

/// Sent when the host stops: stop watching the jobs directory.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Unwatch;

impl Handler<Unwatch> for Loader {
    type Result = ();

    fn handle(&mut self, _: Unwatch, _: &mut Context<Self>) {
        if self.watcher.take().is_some() {
            tracing::debug!(dir = %self.dir.display(), "no longer watching the jobs directory");
        }
        self.pending.clear();
    }
}

/// Sent by the watcher: something happened to a file in the jobs directory.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct FileEvent {
    path: PathBuf,
    /// The file was renamed into place, so it is whole: load it now.
    complete: bool,
    /// When the watcher had the event.
    seen: Instant,
}

impl Handler<FileEvent> for Loader {
    type Result = ();

    fn handle(&mut self, msg: FileEvent, ctx: &mut Context<Self>) {
        let path = msg.path;
        let hidden = path.file_name().is_none_or(|n| n.to_string_lossy().starts_with('.'));
        if hidden || path.extension().is_none_or(|e| e != "wasm") || path.parent() != Some(self.dir.as_path()) {
            return;
        }
        if msg.complete {
            self.pending.remove(&path);
            return self.settle(path, msg.seen, ctx);
        }
        let first = !self.pending.contains_key(&path);
        self.pending.insert(path.clone(), msg.seen);
        if first {
            self.settle_later(path, DEBOUNCE, ctx);
        }
    }
}

impl Loader {
    /// Settles `path` once no event has come for it for [`DEBOUNCE`].
    fn settle_later(&mut self, path: PathBuf, wait: Duration, ctx: &mut Context<Self>) {
        ctx.run_later(wait, move |act, ctx| {
            let Some(last) = act.pending.get(&path).copied() else { return };
            let quiet = last.elapsed();
            if quiet < DEBOUNCE {
                act.settle_later(path, DEBOUNCE - quiet, ctx);
            } else {
                act.pending.remove(&path);
                act.settle(path, last, ctx);
            }
        });
    }
}

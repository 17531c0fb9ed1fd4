//! `JobSupervisor`: one per job. Owns the job's current component version and
//! applies its policies around every execution:
//!
//! 1. the overlap gate (`skip` records the fire as skipped, `queue-one` keeps
//!    one waiting, `allow` runs concurrently) — run-now passes the same gate;
//! 2. the execution row is written *before* the guest is called — `running`,
//!    or `queued` for a scheduled fire that arrived ahead of its instant (the
//!    instance is prepared meanwhile and the row turns `running` at the
//!    instant) — and finished after, whatever happened;
//! 3. retries with exponential backoff and jitter, for retryable guest errors
//!    and traps only, each attempt its own row linked to the first.
//!
//! In-flight executions keep the `Arc` of the version they started with; a
//! deploy only changes what the next execution uses.

use std::collections::HashMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actix::prelude::*;
use chrono::{DateTime, Utc};
use tokio::sync::oneshot;

use super::repository::{CreateExecution, FinishExecution, FlagOverrun, MarkRunning, Repository, UpdateProgress};
use crate::clock::Clock;
use crate::config::JobConfig;
use crate::events::{Event, Events, ItemCounts};
use crate::model::{
    ErrorClass, ExecutionId, ExecutionStatus, JobKind, JobRecord, OverlapPolicy, RunArgs, RunContext, RunReport,
    Trigger,
};
use crate::runtime::{CancelToken, Helper, Invocation, JobCode, Progress, Runtime, SharedItems};
use crate::slots::{Slot, Slots};
use crate::store::NewExecution;
use crate::store::appdb::AppDb;
use crate::store::state::StateDb;

/// How often a running item job's counts are written to its execution row.
const PROGRESS_EVERY: Duration = Duration::from_secs(1);
/// How often a job with `item_workers` looks for other hosts' shared item
/// runs to help with.
const HELP_EVERY: Duration = Duration::from_secs(1);

/// Supervises one job.
pub struct JobSupervisor {
    job: JobRecord,
    config: JobConfig,
    code: JobCode,
    /// `code.digest()`, computed once.
    digest: String,
    version_no: i64,
    runtime: Runtime,
    repo: Addr<Repository>,
    app_db: Option<AppDb>,
    state_db: Option<StateDb>,
    /// The host-wide limit on running executions.
    host_slots: Option<Slots>,
    /// The job's own limit (`max_running`).
    job_slots: Option<Slots>,
    clock: Arc<dyn Clock>,
    node: String,
    /// This host's lease (a shared item run's claims hold as long).
    lease: Duration,
    /// Whether this host is helping with a shared item run of the job.
    helping: bool,
    /// Looks for shared item runs to help with (jobs with `item_workers`).
    help_timer: Option<actix::SpawnHandle>,
    /// Stops the helping workers when the host stops.
    help_cancel: CancelToken,
    events: Events,
    active: HashMap<ExecutionId, (CancelToken, Arc<Progress>)>,
    /// Runs in `active` still waiting to start (a slot, their jitter), with
    /// the flag their run sets when they do.
    waiting: HashMap<ExecutionId, Arc<std::sync::atomic::AtomicBool>>,
    /// Executions whose guest has ended and whose row is being written.
    finishing: std::collections::HashSet<ExecutionId>,
    /// Runs prepared ahead whose row does not say `running` yet.
    unmarked: std::collections::HashSet<ExecutionId>,
    /// Runs that passed the gate but have no row yet.
    starting: usize,
    /// Runs waiting for the one in flight: at most one under `queue-one`;
    /// for an item-local job, every group's fire (each is for other users).
    queued: std::collections::VecDeque<StartRequest>,
    /// Set by [`Drain`]: the host is stopping, nothing new starts.
    draining: bool,
}

/// What a supervisor needs at creation.
pub struct SupervisorSetup {
    /// The stored job.
    pub job: JobRecord,
    /// Its effective configuration.
    pub config: JobConfig,
    /// Its validated component, or native code.
    pub code: JobCode,
    /// The runtime.
    pub runtime: Runtime,
    /// The repository.
    pub repo: Addr<Repository>,
    /// The application database, if configured.
    pub app_db: Option<AppDb>,
    /// Where jobs' key-value state is kept (Sundial's database).
    pub state_db: Option<StateDb>,
    /// The host-wide limit on running executions, if any.
    pub slots: Option<Slots>,
    /// The host's clock.
    pub clock: Arc<dyn Clock>,
    /// This host's name.
    pub node: String,
    /// This host's lease.
    pub lease: Duration,
    /// Where execution events go.
    pub events: Events,
}

struct StartRequest {
    trigger: Trigger,
    scheduled_for: DateTime<Utc>,
    /// When the guest call must start, if that is still ahead (the scheduler
    /// fires a moment early so the execution can be prepared).
    at: Option<DateTime<Utc>>,
    attempt: i64,
    parent: Option<ExecutionId>,
    args: RunArgs,
    done: Option<oneshot::Sender<RunReport>>,
    created: Option<oneshot::Sender<ExecutionId>>,
}

impl JobSupervisor {
    /// A supervisor for a loaded job.
    pub fn new(s: SupervisorSetup) -> Self {
        let version_no = s.job.component_version.unwrap_or(1);
        let job_slots = s.config.max_running.map(|n| Slots::new(n as usize));
        JobSupervisor {
            job: s.job,
            config: s.config,
            digest: s.code.digest(),
            code: s.code,
            version_no,
            runtime: s.runtime,
            repo: s.repo,
            app_db: s.app_db,
            state_db: s.state_db,
            host_slots: s.slots,
            job_slots,
            clock: s.clock,
            node: s.node,
            lease: s.lease,
            helping: false,
            help_timer: None,
            help_cancel: CancelToken::new(),
            events: s.events,
            active: HashMap::new(),
            waiting: HashMap::new(),
            finishing: Default::default(),
            unmarked: Default::default(),
            starting: 0,
            queued: Default::default(),
            draining: false,
        }
    }

    fn busy(&self) -> Option<ExecutionId> {
        if self.starting > 0 {
            return Some(ExecutionId(0));
        }
        self.active.keys().filter(|id| !self.finishing.contains(id)).min().copied()
    }

    /// The run's arguments, completed with the job's configured ones (the
    /// run's own win).
    fn effective_args(&self, run: &RunArgs) -> RunArgs {
        let mut args = run.clone();
        for (k, v) in &self.config.args {
            if !args.args.iter().any(|(a, _)| a == k) {
                args.args.push((k.clone(), v.clone()));
            }
        }
        args
    }

    fn new_execution(
        &self,
        req: &StartRequest,
        status: ExecutionStatus,
        skip: Option<(ErrorClass, String)>,
    ) -> NewExecution {
        let args = self.effective_args(&req.args);
        NewExecution {
            job_id: self.job.id,
            trigger: req.trigger,
            scheduled_for: req.scheduled_for,
            attempt: req.attempt,
            parent_id: req.parent,
            status,
            digest: Some(self.digest.clone()),
            version: Some(self.version_no),
            node: self.node.clone(),
            args,
            skip,
        }
    }

    /// Records a fire that the overlap gate turned away.
    fn record_skip(&self, req: &StartRequest, active: ExecutionId) {
        // Id 0: the running execution's row is being written right now.
        let message = if active.0 > 0 {
            format!("execution {active} of this job is still running (overlap policy skip)")
        } else {
            "an earlier execution of this job is still running (overlap policy skip)".to_string()
        };
        tracing::info!(job = %self.job.name, scheduled_for = %req.scheduled_for, "{message}");
        let new = self.new_execution(req, ExecutionStatus::Skipped, Some((ErrorClass::Overlap, message)));
        self.repo.do_send(CreateExecution { new });
    }

    /// Passes the gate and starts, queues or skips. Replies with the execution
    /// id once its row exists.
    fn submit(&mut self, req: StartRequest, ctx: &mut Context<Self>) -> Result<Option<ExecutionId>, RunRejected> {
        if self.draining {
            tracing::info!(job = %self.job.name, trigger = %req.trigger, scheduled_for = %req.scheduled_for,
                "not started: the host is stopping");
            return Err(RunRejected::Stopping);
        }
        if let Some(active) = self.busy() {
            // An item-local job's groups are different users, not a repeat of
            // the run in flight: each waits its turn.
            let group = self.config.item_zones.is_some() && req.trigger != Trigger::Manual;
            match self.config.overlap {
                OverlapPolicy::Allow => {}
                _ if group && self.queued.len() < MAX_QUEUED_GROUPS => {
                    tracing::info!(job = %self.job.name, scheduled_for = %req.scheduled_for,
                        "a group of zones waits for the run in flight");
                    self.queued.push_back(req);
                    return Ok(None);
                }
                OverlapPolicy::QueueOne if self.queued.is_empty() => {
                    self.queued.push_back(req);
                    return Ok(None);
                }
                OverlapPolicy::Skip | OverlapPolicy::QueueOne => {
                    if req.trigger != Trigger::Manual {
                        self.record_skip(&req, active);
                    }
                    return Err(RunRejected::Overlap { active });
                }
            }
        }
        self.start(req, ctx);
        Ok(None)
    }

    /// When a run for `scheduled_for` is due: scheduled runs start at the
    /// job's fixed jitter offset after their instant.
    fn due_at(&self, trigger: Trigger, scheduled_for: DateTime<Utc>) -> DateTime<Utc> {
        if trigger != Trigger::Schedule || self.config.jitter.is_zero() {
            return scheduled_for;
        }
        let offset = jitter_offset(&self.job.name, self.config.jitter);
        scheduled_for + chrono::TimeDelta::from_std(offset).unwrap_or_default()
    }

    /// Whether a concurrency limit applies to this job's executions.
    fn limited(&self) -> bool {
        self.host_slots.is_some() || self.job_slots.is_some()
    }

    /// The slots a run needs, if they are free now (the job's own first).
    fn try_slots(&self) -> Option<HeldSlots> {
        let job = match &self.job_slots {
            Some(s) => Some(s.try_acquire()?),
            None => None,
        };
        let host = match &self.host_slots {
            Some(s) => Some(s.try_acquire()?),
            None => None,
        };
        Some(HeldSlots { _job: job, _host: host })
    }

    fn start(&mut self, req: StartRequest, ctx: &mut Context<Self>) {
        self.starting += 1;
        // Taken now, so that the row says `queued` when the run must wait.
        let held = if self.limited() { self.try_slots() } else { None };
        let waits = self.limited() && held.is_none();
        let status = if req.at.is_some() || waits { ExecutionStatus::Queued } else { ExecutionStatus::Running };
        let new = self.new_execution(&req, status, None);
        let repo = self.repo.clone();
        let created = async move { repo.send(CreateExecution { new }).await };
        ctx.spawn(created.into_actor(self).map(move |res, act, ctx| {
            act.starting -= 1;
            match res {
                Ok(Ok(Some(id))) => act.launch(id, req, held, ctx),
                Ok(Ok(None)) => {
                    tracing::debug!(job = %act.job.name, scheduled_for = %req.scheduled_for,
                        "this scheduled instant already has an execution; not running it again");
                    act.start_queued(ctx);
                }
                Ok(Err(e)) => {
                    tracing::error!(job = %act.job.name, error = %format!("{:#}", anyhow::Error::new(e)),
                        "cannot record the execution; not running it");
                    act.start_queued(ctx);
                }
                Err(e) => {
                    tracing::error!(job = %act.job.name, error = %e, "repository unavailable; not running");
                    act.start_queued(ctx);
                }
            }
        }));
    }

    fn launch(&mut self, id: ExecutionId, mut req: StartRequest, held: Option<HeldSlots>, ctx: &mut Context<Self>) {
        if let Some(created) = req.created.take() {
            let _ = created.send(id);
        }
        let cancel = CancelToken::new();
        let progress = Progress::new();
        self.active.insert(id, (cancel.clone(), progress.clone()));
        let wait_cancel = cancel.clone();
        let waits = self.limited() && held.is_none();
        let slot_wait = waits.then(|| SlotWait {
            job: self.job_slots.clone(),
            host: self.host_slots.clone(),
            priority: self.config.priority,
            scheduled_for: req.scheduled_for,
            cancel: cancel.clone(),
            repo: self.repo.clone(),
            clock: self.clock.clone(),
            id,
        });
        let args = self.effective_args(&req.args);
        let state = match (&self.code, &self.state_db) {
            (JobCode::Component(_), Some(db)) if self.config.state => Some(db.session(&self.job.name, args.dry_run)),
            _ => None,
        };
        let invocation = Invocation {
            ctx: RunContext {
                execution_id: id,
                job_name: self.job.name.clone(),
                scheduled_for: req.scheduled_for,
                timezone: context_zone(&args).unwrap_or(&self.job.timezone).to_string(),
                trigger: req.trigger,
                attempt: u32::try_from(req.attempt).unwrap_or(u32::MAX),
                args,
            },
            limits: self.config.limits.clone(),
            db: self.app_db.as_ref().map(|d| d.session(self.config.database)),
            state,
            cancel,
            progress,
            shared: self.shared_items(),
        };
        tracing::info!(job = %self.job.name, execution = %id, trigger = %req.trigger, attempt = req.attempt,
            version = self.version_no, "execution started");
        let started = Event::ExecutionStarted {
            id,
            job: self.job.name.clone(),
            trigger: req.trigger,
            scheduled_for: req.scheduled_for,
            attempt: req.attempt,
        };
        // Cancelled when the run ends: a job firing every second would
        // otherwise leave an hour's worth of these timers behind.
        let overrun_timer = ctx.run_later(self.config.expected_duration, move |act, _| {
            if act.active.contains_key(&id) && !act.finishing.contains(&id) {
                tracing::warn!(job = %act.job.name, execution = %id,
                    expected_secs = act.config.expected_duration.as_secs(),
                    "execution is running longer than expected");
                act.repo.do_send(FlagOverrun { id });
                let expected_secs = act.config.expected_duration.as_secs();
                let _ = act.events.send(Event::ExecutionOverrun { id, job: act.job.name.clone(), expected_secs });
            }
        });
        let runtime = self.runtime.clone();
        let items = self.code.kind() == JobKind::Items;
        let progress_timer = {
            let mut last = None;
            ctx.run_interval(PROGRESS_EVERY, move |act, _| {
                let Some((_, p)) = act.active.get(&id) else { return };
                let counts = [&p.done, &p.total, &p.ok, &p.skipped, &p.failed].map(|c| c.load(Ordering::Relaxed));
                if last == Some(counts) {
                    return;
                }
                last = Some(counts);
                let [done, total, ok, skipped, failed] = counts;
                if items {
                    act.repo.do_send(UpdateProgress { id, total: done, ok, skipped, failed });
                }
                let total = (total != u64::MAX).then_some(total);
                let job = act.job.name.clone();
                let _ = act.events.send(Event::ExecutionProgress { id, job, done, total, ok, skipped, failed });
            })
        };
        let code = self.code.clone();
        let repo = self.repo.clone();
        let at = req.at;
        // A run prepared ahead turns `running` a moment after its instant,
        // not at it: at the instant a thousand such writes would compete with
        // the guest calls due then. A run that ends before the moment is
        // marked with its report instead.
        if let Some(at) = at
            && slot_wait.is_none()
        {
            let wait = (at - self.clock.now()).to_std().unwrap_or(Duration::ZERO);
            self.unmarked.insert(id);
            ctx.run_later(wait + MARK_RUNNING_AFTER, move |act, _| {
                if act.unmarked.remove(&id) {
                    act.repo.do_send(MarkRunning { id, at });
                }
            });
        }
        let lead_wait =
            at.and_then(|at| (at - self.clock.now()).to_std().ok()).and_then(|w| w.checked_sub(PREPARE_LEAD));
        // Sent when the run starts: now, or after its waits below.
        let waits_first = lead_wait.is_some() || slot_wait.is_some();
        let events = self.events.clone();
        let begun = Arc::new(std::sync::atomic::AtomicBool::new(!waits_first));
        if waits_first {
            self.waiting.insert(id, begun.clone());
        } else {
            let _ = events.send(started.clone());
        }
        let run = async move {
            // A long wait for its start (a jitter offset) holds nothing: the
            // instance is prepared only in the last moment before it.
            if let Some(wait) = lead_wait
                && !wait_or_cancel(wait, &wait_cancel).await
            {
                return not_started(&wait_cancel, "before its start");
            }
            // A run that must wait for a slot stays `queued` until it has one.
            let _held = match (held, slot_wait) {
                (Some(held), _) => Some(held),
                (None, Some(wait)) => match wait.acquire().await {
                    Ok(held) => Some(held),
                    Err(report) => return report,
                },
                (None, None) => None,
            };
            if waits_first {
                if wait_cancel.is_cancelled() {
                    return not_started(&wait_cancel, "before its start");
                }
                begun.store(true, Ordering::SeqCst);
                let _ = events.send(started);
            }
            runtime.execute_at(code, invocation, at).await
        };
        ctx.spawn(run.into_actor(self).map(move |report, act, ctx| {
            // The guest is done: the overlap gate opens now, not once the row
            // is written, so a run asked for as soon as the row shows the end
            // is not refused. The execution stays in flight (for shutdown)
            // until its row is final.
            act.finishing.insert(id);
            ctx.cancel_future(progress_timer);
            ctx.cancel_future(overrun_timer);
            if act.unmarked.remove(&id)
                && let Some(started) = report.guest_started_at
            {
                act.repo.do_send(MarkRunning { id, at: started });
            }
            let save = async move {
                let saved = repo.send(FinishExecution { id, report: report.clone() }).await;
                (report, saved)
            };
            ctx.spawn(save.into_actor(act).map(move |(report, saved), act, ctx| {
                act.active.remove(&id);
                act.waiting.remove(&id);
                act.finishing.remove(&id);
                match saved {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => tracing::error!(job = %act.job.name, execution = %id,
                        error = %format!("{:#}", anyhow::Error::new(e)), "cannot record how the execution ended"),
                    Err(e) => {
                        tracing::error!(job = %act.job.name, execution = %id, error = %e, "repository unavailable")
                    }
                }
                act.finished(id, req, report, ctx);
            }));
        }));
    }

    fn finished(&mut self, id: ExecutionId, req: StartRequest, report: RunReport, ctx: &mut Context<Self>) {
        let _ = self.events.send(Event::ExecutionFinished {
            id,
            job: self.job.name.clone(),
            trigger: req.trigger,
            scheduled_for: req.scheduled_for,
            due_at: self.due_at(req.trigger, req.scheduled_for),
            status: report.status,
            guest_started_at: report.guest_started_at,
            finished_at: self.clock.now(),
            items: ItemCounts {
                total: report.items_total,
                ok: report.items_ok,
                skipped: report.items_skipped,
                failed: report.items_failed,
            },
        });
        let level_ok = matches!(report.status, ExecutionStatus::Succeeded | ExecutionStatus::Skipped);
        if level_ok {
            tracing::info!(job = %self.job.name, execution = %id, status = %report.status,
                summary = report.summary.as_deref().unwrap_or(""), "execution finished");
        } else {
            tracing::warn!(job = %self.job.name, execution = %id, status = %report.status,
                error = report.error_message.as_deref().unwrap_or(""), "execution finished");
        }
        let retryable = report.status == ExecutionStatus::Failed
            && matches!(report.error_class, Some(ErrorClass::Retryable | ErrorClass::Trap));
        if retryable && req.attempt < i64::from(self.config.max_attempts) {
            let delay = backoff(self.config.retry_backoff, req.attempt);
            tracing::info!(job = %self.job.name, execution = %id, attempt = req.attempt + 1,
                delay_ms = delay.as_millis() as u64, "retrying");
            let retry = StartRequest {
                trigger: Trigger::Retry,
                scheduled_for: req.scheduled_for,
                at: None,
                attempt: req.attempt + 1,
                parent: Some(req.parent.unwrap_or(id)),
                args: req.args.clone(),
                done: None,
                created: None,
            };
            ctx.run_later(delay, move |act, ctx| {
                let _ = act.submit(retry, ctx);
            });
        }
        if let Some(done) = req.done {
            let _ = done.send(report);
        }
        self.start_queued(ctx);
    }

    fn start_queued(&mut self, ctx: &mut Context<Self>) {
        if self.busy().is_none()
            && let Some(next) = self.queued.pop_front()
        {
            self.start(next, ctx);
        }
    }
}

/// The report of a run cancelled before its guest started.
fn not_started(cancel: &CancelToken, when: &str) -> RunReport {
    let mut r = RunReport::new(ExecutionStatus::Cancelled);
    r.error_class = Some(ErrorClass::Cancelled);
    r.error_message = Some(if cancel.by_shutdown() {
        format!("not started: the host stopped {when}")
    } else {
        format!("{} {when}", cancel.reason())
    });
    r
}

/// How long after its instant a run prepared ahead is marked `running`.
const MARK_RUNNING_AFTER: Duration = Duration::from_millis(100);

/// How long before its start an execution's instance is prepared.
const PREPARE_LEAD: Duration = Duration::from_secs(1);

/// Sleeps for `wait`, checking `cancel` every 100 ms; false if cancelled.
async fn wait_or_cancel(wait: Duration, cancel: &CancelToken) -> bool {
    let until = tokio::time::Instant::now() + wait;
    loop {
        if cancel.is_cancelled() {
            return false;
        }
        let now = tokio::time::Instant::now();
        if now >= until {
            return true;
        }
        tokio::time::sleep((until - now).min(Duration::from_millis(100))).await;
    }
}

/// A job's jitter offset: fixed by its name (so a restart does not move it),
/// spread evenly over `[0, window)`.
pub fn jitter_offset(job: &str, window: Duration) -> Duration {
    use sha2::Digest;
    let window_ms = u64::try_from(window.as_millis()).unwrap_or(u64::MAX);
    if window_ms == 0 {
        return Duration::ZERO;
    }
    let hash = sha2::Sha256::digest(job.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&hash[..8]);
    Duration::from_millis(u64::from_le_bytes(first) % window_ms)
}

/// The slots a running execution holds, given back when it ends.
struct HeldSlots {
    _job: Option<Slot>,
    _host: Option<Slot>,
}

/// A run waiting for its slots (see [`crate::slots`]).
struct SlotWait {
    job: Option<Slots>,
    host: Option<Slots>,
    priority: i32,
    scheduled_for: DateTime<Utc>,
    cancel: CancelToken,
    repo: Addr<Repository>,
    clock: Arc<dyn Clock>,
    id: ExecutionId,
}

impl SlotWait {
    /// The job's slot, then the host's, in priority order; then the row says
    /// `running`. Cancelled while waiting: the report of a cancelled run.
    async fn acquire(self) -> Result<HeldSlots, RunReport> {
        let cancelled = || not_started(&self.cancel, "while waiting for a slot");
        let job = match &self.job {
            Some(s) => Some(s.acquire(self.priority, self.scheduled_for, &self.cancel).await.ok_or_else(cancelled)?),
            None => None,
        };
        let host = match &self.host {
            Some(s) => Some(s.acquire(self.priority, self.scheduled_for, &self.cancel).await.ok_or_else(cancelled)?),
            None => None,
        };
        self.repo.do_send(MarkRunning { id: self.id, at: self.clock.now() });
        Ok(HeldSlots { _job: job, _host: host })
    }
}

/// Exponential backoff with up to 25 % jitter: `base * 2^(attempt-1)`, capped at an hour.
fn backoff(base: Duration, attempt: i64) -> Duration {
    let exp = u32::try_from(attempt.saturating_sub(1)).unwrap_or(0).min(16);
    let delay = base.saturating_mul(1u32 << exp).min(Duration::from_secs(3600));
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_i64(attempt);
    let jitter_permille = h.finish() % 250;
    delay + delay.mul_f64(jitter_permille as f64 / 1000.0)
}

impl Actor for JobSupervisor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.watch_shared_runs(ctx);
    }
}

impl JobSupervisor {
    /// How the job's item runs are shared (`item_workers`), if they are.
    fn shared_items(&self) -> Option<SharedItems> {
        Some(SharedItems {
            workers: self.config.item_workers?,
            node: self.node.clone(),
            lease: self.lease,
            state_db: self.state_db.clone().filter(|_| self.config.state),
        })
    }

    /// Looks for other hosts' shared runs every [`HELP_EVERY`] while the job
    /// has `item_workers`.
    fn watch_shared_runs(&mut self, ctx: &mut Context<Self>) {
        match (self.config.item_workers, self.help_timer) {
            (Some(_), None) => self.help_timer = Some(ctx.run_interval(HELP_EVERY, |act, ctx| act.help(ctx))),
            (None, Some(timer)) => {
                ctx.cancel_future(timer);
                self.help_timer = None;
            }
            _ => {}
        }
    }

    /// Helps with another host's shared run of the job, if one is open on
    /// this host's version of the component and this host runs none itself.
    fn help(&mut self, ctx: &mut Context<Self>) {
        if self.helping || self.draining || !self.active.is_empty() {
            return;
        }
        let (Some(items), Some(db), JobCode::Component(version)) = (self.shared_items(), &self.app_db, &self.code)
        else {
            return;
        };
        if db.path().is_some() {
            return;
        }
        self.helping = true;
        let helper = Helper {
            job: self.job.name.clone(),
            db: db.clone(),
            limits: self.config.limits.clone(),
            items,
            cancel: self.help_cancel.clone(),
        };
        let (rt, version) = (self.runtime.clone(), version.clone());
        let work = async move { rt.help_items(version, helper).await };
        ctx.spawn(work.into_actor(self).map(|done, act, _| {
            act.helping = false;
            match done {
                Ok(0) => {}
                Ok(items) => tracing::info!(job = %act.job.name, items, "helped with a shared item run"),
                Err(e) => tracing::warn!(job = %act.job.name, error = %e, "cannot help with shared item runs"),
            }
        }));
    }
}

/// Why a run was not started.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunRejected {
    /// The overlap policy forbids a second execution.
    #[error("job is already running (execution {active}); its overlap policy forbids a second run")]
    Overlap {
        /// The execution in the way (0 if it has no id yet).
        active: ExecutionId,
    },
    /// The execution row could not be written, so the guest was not called.
    #[error("the run could not be recorded, so it was not started (see the host log)")]
    NotRecorded,
    /// The host is shutting down and starts nothing new.
    #[error("the host is stopping and starts no new runs")]
    Stopping,
}

/// Sent by the scheduler when a scheduled instant is due.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct Fire {
    /// The instant.
    pub scheduled_for: DateTime<Utc>,
    /// `schedule` or `catch-up`.
    pub trigger: Trigger,
    /// Run arguments from the schedule (an item-local job's group of zones).
    pub args: Vec<(String, String)>,
}

impl Handler<Fire> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Fire, ctx: &mut Context<Self>) {
        let due = self.due_at(msg.trigger, msg.scheduled_for);
        let early = (due - self.clock.now()).to_std().ok().filter(|w| !w.is_zero());
        let mut req = StartRequest {
            trigger: msg.trigger,
            scheduled_for: msg.scheduled_for,
            at: None,
            attempt: 1,
            parent: None,
            args: RunArgs { args: msg.args, ..RunArgs::default() },
            done: None,
            created: None,
        };
        if let Some(wait) = early {
            if self.busy().is_some() {
                // The overlap gate is decided at the instant, not before it.
                ctx.run_later(wait, move |act, ctx| {
                    let _ = act.submit(req, ctx);
                });
                return;
            }
            req.at = Some(due);
        }
        let _ = self.submit(req, ctx);
    }
}

/// Sent by interfaces (CLI, API): run now. Replies with a receiver of the
/// final report, or why the run was refused.
#[derive(Debug, Message)]
#[rtype(result = "Result<RunStarted, RunRejected>")]
pub struct RunNow {
    /// Operator arguments.
    pub args: RunArgs,
}

/// A run that passed the gate and has its execution row.
#[derive(Debug)]
pub struct RunStarted {
    /// The execution.
    pub id: ExecutionId,
    /// Resolves with the report when the execution ends.
    pub done: oneshot::Receiver<RunReport>,
}

impl Handler<RunNow> for JobSupervisor {
    type Result = ResponseFuture<Result<RunStarted, RunRejected>>;

    fn handle(&mut self, msg: RunNow, ctx: &mut Context<Self>) -> Self::Result {
        let scheduled_for = match msg.args.date.as_deref().and_then(|d| local_midnight(d, &self.job.timezone)) {
            Some(t) => t,
            None => self.clock.now(),
        };
        let (done_tx, done) = oneshot::channel();
        let (created_tx, created) = oneshot::channel();
        let req = StartRequest {
            trigger: Trigger::Manual,
            scheduled_for,
            at: None,
            attempt: 1,
            parent: None,
            args: msg.args,
            done: Some(done_tx),
            created: Some(created_tx),
        };
        if let Err(e) = self.submit(req, ctx) {
            return Box::pin(async move { Err(e) });
        }
        Box::pin(async move {
            let id = created.await.map_err(|_| RunRejected::NotRecorded)?;
            Ok(RunStarted { id, done })
        })
    }
}

/// At most this many fires of an item-local job's groups wait for the run
/// in flight; more are skipped (recorded) like any overlapping fire.
const MAX_QUEUED_GROUPS: usize = 256;

/// The zone an item-local execution's context names: the first of its
/// group's zones (they all share the local date and time of the instant).
fn context_zone(args: &RunArgs) -> Option<&str> {
    let zones = args.args.iter().find(|(k, _)| k == crate::actors::scheduler::ZONES_ARG)?;
    zones.1.split(',').next().filter(|z| crate::schedule::parse_timezone(z).is_ok())
}

/// Midnight of a `YYYY-MM-DD` date in `zone` (for `--date` backfills).
fn local_midnight(date: &str, zone: &str) -> Option<DateTime<Utc>> {
    use chrono::TimeZone;
    let tz: chrono_tz::Tz = zone.parse().ok()?;
    let day = chrono::NaiveDate::parse_from_str(date, "%Y-%m-%d").ok()?;
    let t = tz.from_local_datetime(&day.and_hms_opt(0, 0, 0)?).earliest()?;
    Some(t.with_timezone(&Utc))
}

/// Sent by the loader: a new validated version of this job's component, and
/// its (possibly changed) configuration.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Deploy {
    /// The component (or native code).
    pub code: JobCode,
    /// Its version number.
    pub version_no: i64,
    /// The job's effective configuration.
    pub config: JobConfig,
    /// The stored job.
    pub job: JobRecord,
    /// For a reload of a changed file: when the host saw the file event
    /// that completed it (the reload's latency is measured from there).
    pub noticed: Option<Instant>,
}

impl Handler<Deploy> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Deploy, ctx: &mut Context<Self>) {
        self.apply(msg);
        self.watch_shared_runs(ctx);
    }
}

/// Sent by the loader just before it records a new version of the job: the
/// supervisor handles nothing else until the new code arrives through
/// `code` (or the loader drops it, having recorded nothing), so no run can
/// start on the old code once the stored job shows the new version.
#[derive(Message)]
#[rtype(result = "()")]
pub struct Hold {
    /// Where the new version comes from.
    pub code: oneshot::Receiver<Deploy>,
}

impl std::fmt::Debug for Hold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Hold").finish_non_exhaustive()
    }
}

impl Handler<Hold> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, msg: Hold, ctx: &mut Context<Self>) {
        ctx.wait(async move { msg.code.await.ok() }.into_actor(self).map(|deploy, act, ctx| {
            if let Some(deploy) = deploy {
                act.apply(deploy);
                act.watch_shared_runs(ctx);
            }
        }));
    }
}

impl JobSupervisor {
    fn apply(&mut self, msg: Deploy) {
        self.digest = msg.code.digest();
        self.code = msg.code;
        self.version_no = msg.version_no;
        self.config = msg.config;
        self.job = msg.job;
        // Live from here: the next run starts on this code.
        let took = msg.noticed.map(|noticed| noticed.elapsed());
        if let Some(took) = took {
            let _ = self.events.send(Event::JobReloaded {
                job: self.job.name.clone(),
                version: self.version_no,
                digest: self.digest.clone(),
                took_us: u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
            });
        }
        tracing::info!(job = %self.job.name, version = self.version_no, digest = %self.digest, reload = ?took, "new version live");
    }
}

/// Sent at start for an execution a crashed host cut short: re-run it as the
/// next attempt if the job's `retry_on_crash` is set. Replies whether it did.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct RetryCrashed {
    /// The crashed execution.
    pub id: ExecutionId,
    /// Its instant.
    pub scheduled_for: DateTime<Utc>,
    /// Its attempt.
    pub attempt: i64,
    /// Its first attempt, if it was a retry.
    pub parent: Option<ExecutionId>,
    /// Its arguments.
    pub args: RunArgs,
}

impl Handler<RetryCrashed> for JobSupervisor {
    type Result = bool;

    fn handle(&mut self, msg: RetryCrashed, ctx: &mut Context<Self>) -> bool {
        if !self.config.retry_on_crash {
            return false;
        }
        tracing::info!(job = %self.job.name, execution = %msg.id, "re-running an execution cut short by a crash");
        let req = StartRequest {
            trigger: Trigger::Retry,
            scheduled_for: msg.scheduled_for,
            at: None,
            attempt: msg.attempt + 1,
            parent: Some(msg.parent.unwrap_or(msg.id)),
            args: msg.args,
            done: None,
            created: None,
        };
        self.submit(req, ctx).is_ok()
    }
}

/// Sent by interfaces: cancel a running execution. Replies whether it was running here.
#[derive(Debug, Message)]
#[rtype(result = "bool")]
pub struct CancelRun {
    /// The execution.
    pub id: ExecutionId,
}

impl Handler<CancelRun> for JobSupervisor {
    type Result = bool;

    fn handle(&mut self, msg: CancelRun, _: &mut Context<Self>) -> bool {
        match self.active.get(&msg.id) {
            Some((token, _)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

/// Sent when the host stops: start nothing new (scheduled fires, retries,
/// queued or manual runs) and reply with what is still in flight; with
/// `cancel`, also cancel it. Sent again to poll until nothing is.
#[derive(Debug, Message)]
#[rtype(result = "Vec<ExecutionId>")]
pub struct Drain {
    /// Cancel the runs in flight.
    pub cancel: bool,
}

impl Handler<Drain> for JobSupervisor {
    type Result = MessageResult<Drain>;

    fn handle(&mut self, msg: Drain, _: &mut Context<Self>) -> Self::Result {
        self.help_cancel.cancel_for_shutdown();
        if msg.cancel {
            for (id, (token, _)) in &self.active {
                if !token.is_cancelled() {
                    tracing::info!(job = %self.job.name, execution = %id, "cancelling: the host is stopping");
                    token.cancel_for_shutdown();
                }
            }
        }
        // Runs still waiting to start do not start while the host stops.
        for (id, begun) in &self.waiting {
            if let Some((token, _)) = self.active.get(id)
                && !begun.load(Ordering::SeqCst)
                && !token.is_cancelled()
            {
                tracing::info!(job = %self.job.name, execution = %id, "not starting: the host is stopping");
                token.cancel_for_shutdown();
            }
        }
        if !self.draining {
            self.draining = true;
            for q in self.queued.drain(..) {
                let zones = q.args.args.iter().find(|(k, _)| k == crate::actors::scheduler::ZONES_ARG);
                match zones {
                    Some((_, zones)) => tracing::warn!(job = %self.job.name, scheduled_for = %q.scheduled_for,
                        %zones, "queued run dropped: the host is stopping; run it with --arg sundial.zones=<zones>"),
                    None => tracing::info!(job = %self.job.name, trigger = %q.trigger,
                        "queued run dropped: the host is stopping"),
                }
            }
        }
        let mut running: Vec<ExecutionId> = self.active.keys().copied().collect();
        // A run whose row is being written has no id yet.
        running.extend(std::iter::repeat_n(ExecutionId(0), self.starting));
        MessageResult(running)
    }
}

/// What interfaces show about a job that only its supervisor knows.
#[derive(Debug, Clone)]
pub struct JobSnapshot {
    /// The job as the supervisor last stored it.
    pub job: JobRecord,
    /// Its effective configuration (grants, limits, policies; `schedule` and
    /// `timezone` are the configured ones, before any operator override).
    pub config: JobConfig,
    /// What the job says about itself (requested capabilities).
    pub info: crate::model::JobInfo,
    /// Running executions: `(id, progress)`.
    pub running: Vec<(ExecutionId, LiveProgress)>,
}

impl JobSnapshot {
    /// Where what the job asks for (`describe`) and what it is granted
    /// differ: HTTP hosts either way, too little database access, and
    /// key-value state asked for but not granted.
    pub fn grant_mismatches(&self) -> Vec<String> {
        use crate::model::{Capability, DbAccess};
        let mut mismatches = crate::config::http_grant_mismatches(&self.info, &self.config.limits.http);
        let asked = self.info.capabilities.iter().find_map(|c| match c {
            Capability::Database(a) => Some(*a),
            _ => None,
        });
        let granted = self.config.database;
        let enough = |asked| match asked {
            DbAccess::None => true,
            DbAccess::ReadOnly => granted != DbAccess::None,
            DbAccess::ReadWrite => granted == DbAccess::ReadWrite,
        };
        if let Some(asked) = asked
            && !enough(asked)
        {
            mismatches.push(format!("requests {asked} database access but is granted {granted}"));
        }
        mismatches.extend(crate::config::state_grant_mismatch(&self.info, self.config.state));
        mismatches
    }
}

/// A running execution's progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LiveProgress {
    /// Units (items) done.
    pub done: u64,
    /// Units in total, when known.
    pub total: Option<u64>,
}

/// Sent by interfaces: the job's snapshot.
#[derive(Debug, Message)]
#[rtype(result = "JobSnapshot")]
pub struct Snapshot;

impl Handler<Snapshot> for JobSupervisor {
    type Result = MessageResult<Snapshot>;

    fn handle(&mut self, _: Snapshot, _: &mut Context<Self>) -> Self::Result {
        let running = self
            .active
            .iter()
            .map(|(id, (_, p))| {
                let (done, total) = p.snapshot();
                (*id, LiveProgress { done, total })
            })
            .collect();
        MessageResult(JobSnapshot {
            job: self.job.clone(),
            config: self.config.clone(),
            info: self.code.info(),
            running,
        })
    }
}

/// Sent when an operator changed the stored job (its schedule): the
/// supervisor's copy follows.
#[derive(Debug, Message)]
#[rtype(result = "()")]
pub struct UpdateJob {
    /// The stored job.
    pub job: JobRecord,
}

impl Handler<UpdateJob> for JobSupervisor {
    type Result = ();

    fn handle(&mut self, msg: UpdateJob, _: &mut Context<Self>) {
        self.job = msg.job;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_offsets_are_fixed_per_job_and_spread_over_the_window() {
        let w = Duration::from_secs(300);
        assert_eq!(jitter_offset("snapshot", w), jitter_offset("snapshot", w));
        assert_eq!(jitter_offset("snapshot", Duration::ZERO), Duration::ZERO);
        let offsets: Vec<Duration> = (0..1000).map(|i| jitter_offset(&format!("job-{i}"), w)).collect();
        assert!(offsets.iter().all(|o| *o < w));
        // Evenly spread: each minute of the five gets roughly a fifth.
        for minute in 0..5 {
            let n = offsets.iter().filter(|o| o.as_secs() / 60 == minute).count();
            assert!((150..=250).contains(&n), "minute {minute}: {n} of 1000");
        }
    }

    #[test]
    fn backoff_doubles_with_bounded_jitter() {
        let base = Duration::from_secs(10);
        for attempt in 1..=4 {
            let d = backoff(base, attempt);
            let nominal = base * (1 << (attempt - 1));
            assert!(d >= nominal && d <= nominal.mul_f64(1.25), "attempt {attempt}: {d:?}");
        }
        assert!(backoff(base, 40) <= Duration::from_secs(4500));
    }

    #[test]
    fn backfill_dates_start_at_local_midnight() {
        let t = local_midnight("2026-11-22", "Asia/Tokyo").unwrap();
        assert_eq!(t.to_rfc3339(), "2026-11-21T15:00:00+00:00");
        assert!(local_midnight("2026-02-30", "UTC").is_none());
    }
}

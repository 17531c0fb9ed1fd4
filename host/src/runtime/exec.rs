//! Running one execution: a fresh store, the guest call(s), and a report that
//! keeps the failure classes apart (guest error, trap, timeout, host failure).

use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::{Store, UpdateDeadline};
use wasmtime_wasi::WasiCtxBuilder;

use super::Runtime;
use super::bindings::{Job, types as wit};
use super::component::ComponentVersion;
use super::host::{
    CancelToken, FuelMeter, HostFailure, HostState, Interrupt, LOG_CAP_BYTES, Limiter, LogBuffer, Progress,
};
use super::http::HttpGuard;
use super::output::CappedPipe;
use super::shared::{Claims, SharedItems};
use crate::model::{DbAccess, ErrorClass, ExecutionStatus, HttpAllowlist, RunContext, RunReport, Trigger};
use crate::store::appdb::{AppDb, AppSession};
use crate::store::state::JobState;

/// Per-execution limits: time, memory, and the network the job may reach.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Wall-clock deadline for the whole execution, guest and host calls.
    pub timeout: Duration,
    /// Linear memory the guest may use.
    pub memory_bytes: usize,
    /// Hosts the guest may reach over HTTP (none by default).
    pub http: HttpAllowlist,
    /// Outbound HTTP requests a second across the job's executions (none: unlimited).
    pub http_rate: Option<super::http::HttpRateLimit>,
    /// Fuel (about one unit per guest instruction) one execution may use
    /// (none: unlimited; the fuel used is recorded either way).
    pub fuel: Option<u64>,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            timeout: Duration::from_secs(300),
            memory_bytes: 256 << 20,
            http: HttpAllowlist::default(),
            http_rate: None,
            fuel: None,
        }
    }
}

/// Everything one execution needs besides the component.
pub struct Invocation {
    /// What the guest is told.
    pub ctx: RunContext,
    /// Deadline and memory.
    pub limits: Limits,
    /// The application database session, if one is configured.
    pub db: Option<AppSession>,
    /// The job's key-value state, if the job is granted it (`state = true`).
    /// Open it with the run's `dry_run`: a dry run's writes are then kept in
    /// memory only. Native jobs do not use it.
    pub state: Option<JobState>,
    /// Set by an operator to stop the execution.
    pub cancel: CancelToken,
    /// Live progress for the actor side.
    pub progress: Arc<Progress>,
    /// Share an item run's pages with other workers (the job's
    /// `item_workers`): used when the application database is Postgres, the
    /// grant read-write, and the run neither a dry run nor limited.
    pub shared: Option<SharedItems>,
}

/// What the workers of a shared item run need besides the component.
pub(crate) struct SharedSetup {
    pub items: SharedItems,
    pub ctx: RunContext,
    pub limits: Limits,
    pub db: AppDb,
    pub cancel: CancelToken,
}

impl SharedSetup {
    /// A shared setup for an invocation, if it can share.
    fn new(inv: &Invocation) -> Option<SharedSetup> {
        let items = inv.shared.clone()?;
        let db = inv.db.as_ref()?;
        let eligible = db.is_postgres()
            && db.access() == DbAccess::ReadWrite
            && !inv.ctx.args.dry_run
            && inv.ctx.args.limit.is_none();
        eligible.then(|| SharedSetup {
            items,
            ctx: inv.ctx.clone(),
            limits: inv.limits.clone(),
            db: db.database().clone(),
            cancel: inv.cancel.clone(),
        })
    }

    /// The invocation of one more worker.
    fn invocation(&self) -> Invocation {
        Invocation {
            ctx: self.ctx.clone(),
            limits: self.limits.clone(),
            db: Some(self.db.session(DbAccess::ReadWrite)),
            state: self.items.state_db.as_ref().map(|s| s.session(&self.ctx.job_name, false)),
            cancel: self.cancel.clone(),
            progress: Progress::new(),
            shared: None,
        }
    }
}

/// One more worker of a shared item run, on the current thread, with an
/// instance and a database session of its own. Returns the items it did.
pub(crate) fn work_shared(rt: &Runtime, version: &Arc<ComponentVersion>, setup: &SharedSetup, claims: &Claims) -> u64 {
    let Prepared { mut store, job, wctx, timeout, .. } = prepare(rt, version, setup.invocation(), Duration::ZERO);
    let _io = rt.io().enter();
    let mut report = match job {
        Ok(job) => super::items::work_pages(rt, version, &mut store, job, &wctx, timeout, claims),
        Err(e) => RunReport::host_failure(format!("cannot instantiate the component: {e:#}")),
    };
    finish(store, &mut report);
    if let (Some(class), Some(message)) = (report.error_class, &report.error_message) {
        tracing::warn!(job = %setup.ctx.job_name, %class, "a worker of the shared item run stopped: {message}");
    }
    report.items_total
}

/// What a host needs to help with other hosts' shared runs of a job.
pub struct Helper {
    /// The job.
    pub job: String,
    /// Its application database.
    pub db: AppDb,
    /// Its limits.
    pub limits: Limits,
    /// Its `item_workers`, this host's name and lease.
    pub items: SharedItems,
    /// Stops the helping workers (the host is stopping).
    pub cancel: CancelToken,
}

/// Looks for an open shared run of the helper's job on this component
/// version and works it with the job's workers until no page is left to
/// claim. Returns the items done.
pub(crate) fn help(rt: &Runtime, version: &Arc<ComponentVersion>, h: Helper) -> Result<u64, String> {
    let mut db = h.db.session(DbAccess::ReadWrite);
    let runs = super::shared::open_runs(&mut db, &h.job, &version.digest, h.items.lease);
    db.close();
    let runs = runs.map_err(|e| format!("cannot look for shared item runs: {e}"))?;
    // The first run whose context this host can read.
    let Some((open, ctx)) = runs.into_iter().find_map(|open| match super::shared::decode_context(&open.context) {
        Ok(ctx) => Some((open, ctx)),
        Err(e) => {
            tracing::warn!(job = %h.job, run = %open.run_key, "not helping with a shared item run: {e}");
            None
        }
    }) else {
        return Ok(0);
    };
    let claims = Claims::new(&h.job, &open.run_key, &h.items.node, h.items.lease);
    let setup = SharedSetup { items: h.items, ctx, limits: h.limits, db: h.db, cancel: h.cancel };
    let span = tracing::info_span!("helping", job = %h.job, execution = setup.ctx.execution_id.0);
    let done = std::thread::scope(|scope| {
        let workers: Vec<_> = (0..setup.items.workers)
            .map(|_| {
                let (span, setup, claims) = (span.clone(), &setup, &claims);
                scope.spawn(move || span.in_scope(|| work_shared(rt, version, setup, claims)))
            })
            .collect();
        workers.into_iter().map(|w| w.join().unwrap_or(0)).sum()
    });
    Ok(done)
}

/// A store for one execution, its deadline armed.
pub(crate) fn new_store(
    rt: &Runtime,
    job_name: &str,
    execution_id: i64,
    timeout: Duration,
    memory_bytes: usize,
    db: Option<AppSession>,
    progress: Arc<Progress>,
) -> Store<HostState> {
    let deadline = Instant::now() + timeout;
    new_store_with(rt, job_name, execution_id, deadline, memory_bytes, None, db, None, progress, CancelToken::new())
}

#[allow(clippy::too_many_arguments)]
fn new_store_with(
    rt: &Runtime,
    job_name: &str,
    execution_id: i64,
    deadline: Instant,
    memory_bytes: usize,
    fuel: Option<u64>,
    db: Option<AppSession>,
    state: Option<JobState>,
    progress: Arc<Progress>,
    cancel: CancelToken,
) -> Store<HostState> {
    // Deny by default: no preopened directories, no environment, no
    // arguments, no sockets, no HTTP host, stdin closed; stdout/stderr
    // captured with a cap.
    let mut db = db;
    if let Some(session) = db.as_mut() {
        let cancel = cancel.clone();
        session.interrupt_when(move || cancel.is_cancelled() || Instant::now() >= deadline);
    }
    let stdout = CappedPipe::new(LOG_CAP_BYTES);
    let stderr = CappedPipe::new(LOG_CAP_BYTES);
    let wasi = WasiCtxBuilder::new()
        .stdout(stdout.clone())
        .stderr(stderr.clone())
        .allow_tcp(false)
        .allow_udp(false)
        .allow_ip_name_lookup(false)
        .build();
    let state = HostState {
        wasi,
        http_ctx: Default::default(),
        http: HttpGuard::deny_all(job_name, deadline, cancel.clone()),
        table: Default::default(),
        limiter: Limiter { max_memory_bytes: memory_bytes, max_table_elements: 1_000_000, memory_limit_hit: false },
        job_name: job_name.to_string(),
        execution_id,
        clock: rt.inner.clock.clone(),
        deadline,
        cancel,
        interrupt: None,
        db,
        state,
        logs: LogBuffer::default(),
        progress,
        stdout,
        stderr,
        fuel: FuelMeter::new(fuel),
        checks: rt.inner.settings.host_checks,
    };
    store_for(rt, state)
}

/// Wraps execution state in a new store: memory limit, the fuel the meter
/// says this store starts with, and deadline and cancellation checked on
/// every epoch tick.
fn store_for(rt: &Runtime, state: HostState) -> Store<HostState> {
    let fuel = state.fuel.start;
    let mut store = Store::new(&rt.inner.engine, state);
    if rt.inner.settings.host_checks {
        store.limiter(|s| &mut s.limiter);
    }
    if rt.inner.settings.fuel {
        // Only fails when the engine does not meter fuel, checked above.
        let _ = store.set_fuel(fuel);
    }
    if !rt.inner.settings.epoch_interruption {
        return store;
    }
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|mut ctx| {
        let state = ctx.data_mut();
        if state.cancel.is_cancelled() {
            state.interrupt = Some(Interrupt::Cancelled);
            return Ok(UpdateDeadline::Interrupt);
        }
        if Instant::now() >= state.deadline {
            state.interrupt = Some(Interrupt::Timeout);
            return Ok(UpdateDeadline::Interrupt);
        }
        Ok(UpdateDeadline::Continue(1))
    });
    store
}

/// After a trap neither the instance nor its store may be entered again: move
/// the execution's state (database session, logs, output, progress) into a
/// fresh store with a fresh instance.
pub(crate) fn fresh_instance(
    rt: &Runtime,
    version: &ComponentVersion,
    store: &mut Store<HostState>,
) -> wasmtime::Result<Job> {
    let placeholder = new_store(rt, "", 0, Duration::ZERO, 0, None, Progress::new());
    let old = std::mem::replace(store, placeholder);
    let left = fuel_left(&old);
    let mut state = old.into_data();
    state.table = Default::default();
    state.limiter.memory_limit_hit = false;
    // The budget is the execution's: the fresh store gets what is left.
    state.fuel.used_before = state.fuel.used(left);
    state.fuel.start = left;
    *store = store_for(rt, state);
    version.pre.instantiate(&mut *store)
}

fn wit_context(ctx: &RunContext) -> wit::Context {
    wit::Context {
        execution_id: ctx.execution_id.0,
        job_name: ctx.job_name.clone(),
        scheduled_for: ctx.scheduled_for.timestamp_millis(),
        timezone: ctx.timezone.clone(),
        trigger: match ctx.trigger {
            Trigger::Schedule => wit::Trigger::Schedule,
            Trigger::Manual => wit::Trigger::Manual,
            Trigger::Retry => wit::Trigger::Retry,
            Trigger::CatchUp => wit::Trigger::CatchUp,
        },
        attempt: ctx.attempt,
        date: ctx.args.date.clone(),
        limit: ctx.args.limit,
        dry_run: ctx.args.dry_run,
        args: ctx.args.args.clone(),
    }
}

/// Fuel the store has left (the meter's start when the engine does not meter).
pub(crate) fn fuel_left(store: &Store<HostState>) -> u64 {
    store.get_fuel().unwrap_or(store.data().fuel.start)
}

fn timed_out(timeout: Duration) -> (ExecutionStatus, ErrorClass, String) {
    (ExecutionStatus::TimedOut, ErrorClass::Timeout, format!("deadline of {} exceeded", humantime(timeout)))
}

fn cancelled(state: &HostState) -> (ExecutionStatus, ErrorClass, String) {
    (ExecutionStatus::Cancelled, ErrorClass::Cancelled, state.cancel.reason().into())
}

/// Whether the execution must stop now (cancelled, or past its deadline),
/// checked between guest calls.
pub(crate) fn interruption(state: &HostState, timeout: Duration) -> Option<(ExecutionStatus, ErrorClass, String)> {
    if state.cancel.is_cancelled() {
        return Some(cancelled(state));
    }
    (Instant::now() >= state.deadline).then(|| timed_out(timeout))
}

/// Classifies a failed guest call from the error and what the store saw.
pub(crate) fn classify(
    err: &wasmtime::Error,
    state: &HostState,
    timeout: Duration,
) -> (ExecutionStatus, ErrorClass, String) {
    match state.interrupt {
        Some(Interrupt::Timeout) => return timed_out(timeout),
        Some(Interrupt::Cancelled) => return cancelled(state),
        None => {}
    }
    if state.limiter.memory_limit_hit {
        return (
            ExecutionStatus::Failed,
            ErrorClass::Memory,
            format!("memory limit of {} MiB exceeded", state.limiter.max_memory_bytes >> 20),
        );
    }
    if let Some(h) = err.downcast_ref::<HostFailure>() {
        return (ExecutionStatus::Failed, ErrorClass::Host, h.to_string());
    }
    if let (Some(wasmtime::Trap::OutOfFuel), Some(budget)) = (err.downcast_ref::<wasmtime::Trap>(), state.fuel.budget) {
        return (ExecutionStatus::Failed, ErrorClass::Fuel, format!("fuel budget of {budget} exhausted"));
    }
    let mut message = match err.downcast_ref::<wasmtime::Trap>() {
        Some(trap) => format!("guest trapped: {trap}"),
        None => format!("guest trapped: {err:#}"),
    };
    // A Rust guest prints its panic message to stderr before trapping.
    let stderr = String::from_utf8_lossy(&state.stderr.contents().0).to_string();
    if let Some(panic) = stderr.lines().skip_while(|l| !l.contains("panicked at")).nth(1) {
        message = format!("{message} (panic: {panic})");
    }
    (ExecutionStatus::Failed, ErrorClass::Trap, message)
}

fn humantime(d: Duration) -> String {
    let ms = d.as_millis();
    if ms.is_multiple_of(1000) { format!("{}s", ms / 1000) } else { format!("{ms}ms") }
}

/// Largest result message (summary) a guest may return; error messages
/// are cut to it.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 * 1024;

/// `message` cut to [`MAX_MESSAGE_BYTES`] on a character boundary, marked.
fn bounded(mut message: String) -> String {
    if message.len() > MAX_MESSAGE_BYTES {
        let total = message.len();
        let mut cut = MAX_MESSAGE_BYTES;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
        message.push_str(&format!("… ({total} bytes, cut)"));
    }
    message
}

pub(crate) fn guest_error(e: wit::JobError) -> (ErrorClass, String) {
    match e {
        wit::JobError::Skip(m) => (ErrorClass::Skip, bounded(m)),
        wit::JobError::Retryable(m) => (ErrorClass::Retryable, bounded(m)),
        wit::JobError::Fatal(m) => (ErrorClass::Fatal, bounded(m)),
    }
}

/// An execution ready to be called: its store is built and the component
/// instantiated, so that at the scheduled instant only the guest call is left.
pub(crate) struct Prepared {
    store: Store<HostState>,
    job: wasmtime::Result<Job>,
    wctx: wit::Context,
    timeout: Duration,
    version: Arc<ComponentVersion>,
    shared: Option<SharedSetup>,
}

/// Builds the store and instance for an execution whose guest call starts in
/// `starts_in` (its deadline counts from then).
pub(crate) fn prepare(rt: &Runtime, version: &Arc<ComponentVersion>, inv: Invocation, starts_in: Duration) -> Prepared {
    let shared = SharedSetup::new(&inv);
    let Invocation { ctx, limits, db, state, cancel, progress, shared: _ } = inv;
    // wasi:http does its IO on the runtime's IO threads.
    let _io = rt.io().enter();
    let deadline = Instant::now() + starts_in + limits.timeout;
    let mut store = new_store_with(
        rt,
        &ctx.job_name,
        ctx.execution_id.0,
        deadline,
        limits.memory_bytes,
        limits.fuel,
        db,
        state,
        progress,
        cancel,
    );
    store.data_mut().http.allowlist = limits.http;
    store.data_mut().http.rate = limits.http_rate;
    let wctx = wit_context(&ctx);
    let mut job = version.pre.instantiate(&mut store);
    if !starts_in.is_zero() {
        job = warm_up(version, &mut store, job);
    }
    Prepared { store, job, wctx, timeout: limits.timeout, version: version.clone(), shared }
}

/// Makes a prepared instance's first guest call ahead of its instant:
/// `describe`, which a job answers without side effects (it answered it when
/// the component was loaded). What a first call costs — the guest's
/// constructors, its allocator's first `memory.grow`, the first touch of its
/// stack and heap pages — is then paid here, not between the instant and the
/// run (measured: a `run` call 16.7 -> 3.5 µs). The fuel it used is given
/// back and anything it logged dropped; if it fails, a fresh instance in the
/// same store takes its place, as if nothing had been tried.
fn warm_up(
    version: &ComponentVersion,
    store: &mut Store<HostState>,
    job: wasmtime::Result<Job>,
) -> wasmtime::Result<Job> {
    let Ok(instance) = job else { return job };
    // None when the engine does not meter fuel.
    let fuel = store.get_fuel().ok();
    let warmed = instance.call_describe(&mut *store).is_ok();
    if let Some(fuel) = fuel {
        let _ = store.set_fuel(fuel);
    }
    store.data_mut().logs = LogBuffer::default();
    if warmed { Ok(instance) } else { version.pre.instantiate(&mut *store) }
}

/// An execution whose guest has returned: its report still to finish, its
/// store still to drop.
pub(crate) struct Called {
    store: Store<HostState>,
    report: RunReport,
}

impl Called {
    /// Closes the execution's sessions, moves its captured output into the
    /// report, drops the store and returns the report.
    pub(crate) fn finish(self) -> RunReport {
        let Called { store, mut report } = self;
        finish(store, &mut report);
        report
    }
}

/// Calls a prepared execution's guest and runs it to its end on the current
/// (worker) thread.
pub(crate) fn run_prepared(rt: &Runtime, prepared: Prepared) -> RunReport {
    call_prepared(rt, prepared).finish()
}

/// Calls a prepared execution's guest and runs it until the guest returns,
/// leaving the rest for [`Called::finish`].
pub(crate) fn call_prepared(rt: &Runtime, prepared: Prepared) -> Called {
    let Prepared { mut store, job, wctx, timeout, version, shared } = prepared;
    let _io = rt.io().enter();
    let report = match job {
        // Cancelled or out of time while instantiating: say so, like a run.
        Err(e) if store.data().interrupt.is_some() => {
            let (status, class, message) = classify(&e, store.data(), timeout);
            let mut report = RunReport::new(status);
            report.fail(status, class, message);
            report
        }
        Err(e) => RunReport::host_failure(format!("cannot instantiate the component: {e:#}")),
        Ok(job) => match version.info.kind {
            crate::model::JobKind::Single => run_single(rt, &mut store, &job, &wctx, timeout),
            crate::model::JobKind::Items => {
                super::items::run_items(rt, &version, &mut store, job, &wctx, timeout, shared.as_ref())
            }
        },
    };
    Called { store, report }
}

/// Runs an execution to its end on the current (worker) thread.
pub(crate) fn execute(rt: &Runtime, version: &Arc<ComponentVersion>, inv: Invocation) -> RunReport {
    run_prepared(rt, prepare(rt, version, inv, Duration::ZERO))
}

fn run_single(
    rt: &Runtime,
    store: &mut Store<HostState>,
    job: &Job,
    ctx: &wit::Context,
    timeout: Duration,
) -> RunReport {
    let dry_run = ctx.dry_run;
    if dry_run
        && let Some(db) = store.data_mut().db.as_mut()
        && let Err(e) = db.begin()
    {
        return RunReport::host_failure(format!("cannot start the dry-run transaction: {e}"));
    }
    let mut report = RunReport::new(ExecutionStatus::Succeeded);
    report.guest_started_at = Some(rt.clock().now());
    match job.call_run(&mut *store, ctx) {
        Ok(Ok(outcome)) => match outcome.message.as_ref().map(String::len) {
            Some(len) if len > MAX_MESSAGE_BYTES => report.fail(
                ExecutionStatus::Failed,
                ErrorClass::Fatal,
                format!("the job's result message is {len} bytes; results are limited to {MAX_MESSAGE_BYTES} bytes"),
            ),
            _ => {
                report.changed = outcome.changed;
                report.summary = outcome.message;
            }
        },
        Ok(Err(e)) => {
            let (class, message) = guest_error(e);
            let status = if class == ErrorClass::Skip { ExecutionStatus::Skipped } else { ExecutionStatus::Failed };
            report.fail(status, class, message);
        }
        Err(e) => {
            let (status, class, message) = classify(&e, store.data(), timeout);
            report.fail(status, class, message);
        }
    }
    report
}

/// Closes the database session, writes the key-value state writes that
/// waited for it, and moves captured output into the report.
fn finish(mut store: Store<HostState>, report: &mut RunReport) {
    if let Ok(left) = store.get_fuel() {
        report.fuel_consumed = Some(store.data().fuel.used(left));
    }
    let state = store.data_mut();
    if let Some(db) = state.db.take() {
        db.close();
    }
    if let Some(kv) = state.state.take()
        && let Err(e) = kv.close()
    {
        let message = format!("the job's key-value state writes were lost: {e}");
        tracing::error!(job = %state.job_name, execution = state.execution_id, "{message}");
        state.logs.push("ERROR", &message);
        if matches!(report.status, ExecutionStatus::Succeeded | ExecutionStatus::Partial) {
            report.fail(ExecutionStatus::Failed, ErrorClass::Host, message);
        }
    }
    state.log_http_denials();
    let mut logs = std::mem::take(&mut state.logs);
    for (name, pipe) in [("STDOUT", &state.stdout), ("STDERR", &state.stderr)] {
        let (out, dropped) = pipe.contents();
        if !out.is_empty() {
            for line in String::from_utf8_lossy(&out).lines() {
                logs.push(name, line);
            }
        }
        if dropped > 0 {
            logs.truncated = true;
            logs.text.push_str(&format!("{name} truncated: {dropped} more bytes were written and dropped\n"));
        }
    }
    report.logs = logs.text;
    report.logs_truncated = logs.truncated;
}

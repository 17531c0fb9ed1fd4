//! Native jobs: Rust code an application (or Sundial itself, for built-ins
//! such as `backup`) runs in-process, scheduled, supervised, recorded and
//! shown exactly like component jobs.
//!
//! Native code is trusted: it is not sandboxed and cannot be preempted. It
//! runs on the same worker threads as guests, gets the same database session
//! (grant, interrupt at the deadline) and should poll
//! [`NativeContext::should_stop`] in long loops so that deadlines and
//! cancellation take effect.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Instant;

use super::Runtime;
use super::component::ComponentVersion;
use super::exec::Invocation;
use super::host::{CancelToken, LogBuffer, Progress};
use crate::model::{ErrorClass, ExecutionStatus, JobInfo, JobKind, RunContext, RunReport};
use crate::store::appdb::AppSession;

/// How a native job failed; the same classes as a component's `job-error`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NativeError {
    /// A precondition is not met: the execution is `skipped`.
    #[error("{0}")]
    Skip(String),
    /// Worth retrying (with the job's retry policy).
    #[error("{0}")]
    Retryable(String),
    /// Not worth retrying.
    #[error("{0}")]
    Fatal(String),
}

/// What a successful native run reports.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NativeOutcome {
    /// Rows (or files, …) changed.
    pub changed: u64,
    /// One line for operators.
    pub message: Option<String>,
}

/// A job implemented in Rust inside the host process.
pub trait NativeJob: Send + Sync + 'static {
    /// Name, description, default schedule and zone, requested grants.
    fn info(&self) -> JobInfo;
    /// A version string recorded with every execution (e.g. the crate's version).
    fn version(&self) -> String {
        "1".to_string()
    }
    /// Runs once.
    fn run(&self, ctx: &mut NativeContext<'_>) -> Result<NativeOutcome, NativeError>;
}

impl std::fmt::Debug for dyn NativeJob {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NativeJob").field("name", &self.info().name).finish_non_exhaustive()
    }
}

/// What a native run sees.
pub struct NativeContext<'a> {
    /// The execution (instant, trigger, attempt, operator arguments).
    pub run: &'a RunContext,
    /// The application database session, if the job has a grant.
    pub db: Option<&'a mut AppSession>,
    /// Live progress.
    pub progress: Arc<Progress>,
    cancel: CancelToken,
    deadline: Instant,
    logs: LogBuffer,
}

impl NativeContext<'_> {
    /// True once the execution was cancelled or its deadline passed: return soon.
    pub fn should_stop(&self) -> bool {
        self.cancel.is_cancelled() || Instant::now() >= self.deadline
    }

    /// Adds a line to the execution's captured log (and the host's log).
    pub fn log(&mut self, message: &str) {
        tracing::info!(target: "sundial::native", job = %self.run.job_name, execution = %self.run.execution_id, "{message}");
        self.logs.push("INFO", message);
    }

    /// An operator argument.
    pub fn arg(&self, name: &str) -> Option<&str> {
        self.run.args.args.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// Whether this is a dry run: change nothing, report what would change.
    pub fn dry_run(&self) -> bool {
        self.run.args.dry_run
    }
}

/// The code behind a job: a validated component or a native implementation.
#[derive(Clone)]
pub enum JobCode {
    /// A WebAssembly component.
    Component(Arc<ComponentVersion>),
    /// Native Rust.
    Native(Arc<dyn NativeJob>),
}

impl std::fmt::Debug for JobCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            JobCode::Component(v) => f.debug_tuple("Component").field(&v.digest).finish(),
            JobCode::Native(n) => f.debug_tuple("Native").field(&n.info().name).finish(),
        }
    }
}

impl JobCode {
    /// What identifies this code in execution rows: the component's sha256,
    /// or `native:<name>@<version>`.
    pub fn digest(&self) -> String {
        match self {
            JobCode::Component(v) => v.digest.clone(),
            JobCode::Native(n) => format!("native:{}@{}", n.info().name, n.version()),
        }
    }

    /// The component's [`ContentKey`] (none for a native job).
    pub fn key(&self) -> Option<super::ContentKey> {
        match self {
            JobCode::Component(v) => Some(v.key),
            JobCode::Native(_) => None,
        }
    }

    /// Single-shot or item job (without copying the whole [`JobInfo`]).
    pub fn kind(&self) -> JobKind {
        match self {
            JobCode::Component(v) => v.info.kind,
            JobCode::Native(n) => n.info().kind,
        }
    }

    /// What the job says about itself.
    pub fn info(&self) -> JobInfo {
        match self {
            JobCode::Component(v) => v.info.clone(),
            JobCode::Native(n) => n.info(),
        }
    }
}

/// Runs a native job to its end on the current (worker) thread.
pub(crate) fn execute_native(rt: &Runtime, job: &dyn NativeJob, inv: Invocation) -> RunReport {
    // Native code reaches its own storage; the `state` grant is for components.
    let Invocation { ctx, limits, db, state: _, cancel, progress, shared: _ } = inv;
    let deadline = Instant::now() + limits.timeout;
    let mut db = db;
    if let Some(session) = db.as_mut() {
        let cancel = cancel.clone();
        session.interrupt_when(move || cancel.is_cancelled() || Instant::now() >= deadline);
        if ctx.args.dry_run
            && let Err(e) = session.begin()
        {
            return RunReport::host_failure(format!("cannot start the dry-run transaction: {e}"));
        }
    }
    let mut report = RunReport::new(ExecutionStatus::Succeeded);
    report.guest_started_at = Some(rt.clock().now());
    let mut nctx = NativeContext {
        run: &ctx,
        db: db.as_mut(),
        progress,
        cancel: cancel.clone(),
        deadline,
        logs: LogBuffer::default(),
    };
    let result = std::panic::catch_unwind(AssertUnwindSafe(|| job.run(&mut nctx)));
    let logs = std::mem::take(&mut nctx.logs);
    drop(nctx);
    match result {
        Ok(Ok(outcome)) => {
            report.changed = outcome.changed;
            report.summary = outcome.message;
        }
        Ok(Err(NativeError::Skip(m))) => report.fail(ExecutionStatus::Skipped, ErrorClass::Skip, m),
        Ok(Err(NativeError::Retryable(m))) => report.fail(ExecutionStatus::Failed, ErrorClass::Retryable, m),
        Ok(Err(NativeError::Fatal(m))) => report.fail(ExecutionStatus::Failed, ErrorClass::Fatal, m),
        Err(panic) => {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            report.fail(ExecutionStatus::Failed, ErrorClass::Trap, format!("native job panicked: {what}"));
        }
    }
    if cancel.is_cancelled() && report.status != ExecutionStatus::Succeeded {
        report.fail(ExecutionStatus::Cancelled, ErrorClass::Cancelled, cancel.reason().into());
    } else if Instant::now() >= deadline && report.status == ExecutionStatus::Failed {
        report.fail(ExecutionStatus::TimedOut, ErrorClass::Timeout, "deadline exceeded".into());
    }
    if let Some(session) = db {
        session.close();
    }
    report.logs = logs.text;
    report.logs_truncated = logs.truncated;
    report
}

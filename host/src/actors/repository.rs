//! `Repository`: the actor that owns the runtime's store in a running host.
//! Other actors never touch SQL; they send these messages. Handlers return
//! futures, so slow queries never block the arbiter; SQLite writes are still
//! serialised by the store's single writer connection.
//!
//! The two writes on every execution's path — creating its row before the
//! guest runs, finishing it after — are group-committed: requests that arrive
//! while a batch is being written go into the next batch, in one transaction.
//! When a thousand jobs fire in the same second this turns a thousand commits
//! in front of the last guest into a handful.

use actix::prelude::*;
use chrono::{DateTime, Utc};
use std::sync::Arc;
use tokio::sync::oneshot;

use crate::model::{ExecutionId, ExecutionRecord, JobId, JobRecord, RunReport};
use crate::store::{JobDefinition, NewExecution, ScheduleAdvance, Store, StoreError, Verdict};

/// Owns the [`Store`].
pub struct Repository {
    store: Store,
    creates: Batch<NewExecution, Option<ExecutionId>>,
    finishes: Batch<(ExecutionId, RunReport), ()>,
    advances: Batch<ScheduleAdvance, ()>,
    runnings: Batch<(ExecutionId, DateTime<Utc>), ()>,
}

impl Repository {
    /// A repository over `store`.
    pub fn new(store: Store) -> Self {
        Repository {
            store,
            creates: Batch::default(),
            finishes: Batch::default(),
            advances: Batch::default(),
            runnings: Batch::default(),
        }
    }
}

type Reply<O> = oneshot::Sender<Result<O, StoreError>>;
type BatchFuture<O> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Vec<O>, StoreError>>>>;

/// Requests waiting for the next group commit.
struct Batch<I, O> {
    pending: Vec<(I, Reply<O>)>,
    writing: bool,
}

impl<I, O> Default for Batch<I, O> {
    fn default() -> Self {
        Batch { pending: Vec::new(), writing: false }
    }
}

/// Starts writing the pending requests of one batch unless a write is under
/// way; when it ends, answers every request and starts the next batch.
fn flush<I: 'static, O: 'static>(
    act: &mut Repository,
    ctx: &mut Context<Repository>,
    batch: fn(&mut Repository) -> &mut Batch<I, O>,
    write: fn(Store, Vec<I>) -> BatchFuture<O>,
) {
    let b = batch(act);
    if b.writing || b.pending.is_empty() {
        return;
    }
    b.writing = true;
    let (inputs, replies): (Vec<I>, Vec<Reply<O>>) = std::mem::take(&mut b.pending).into_iter().unzip();
    let fut = write(act.store.clone(), inputs);
    ctx.spawn(fut.into_actor(act).map(move |result, act, ctx| {
        match result {
            Ok(outputs) => {
                for (reply, out) in replies.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) => {
                let message = format!("{:#}", anyhow::Error::new(e));
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Batch(message.clone())));
                }
            }
        }
        batch(act).writing = false;
        flush(act, ctx, batch, write);
    }));
}

/// Queues `input` for the next group commit of `batch` and replies when it is written.
fn enqueue<I: 'static, O: 'static>(
    act: &mut Repository,
    ctx: &mut Context<Repository>,
    input: I,
    batch: fn(&mut Repository) -> &mut Batch<I, O>,
    write: fn(Store, Vec<I>) -> BatchFuture<O>,
) -> ResponseFuture<Result<O, StoreError>> {
    let (tx, rx) = oneshot::channel();
    batch(act).pending.push((input, tx));
    flush(act, ctx, batch, write);
    Box::pin(async move { rx.await.unwrap_or(Err(StoreError::Closed)) })
}

/// Sent by a supervisor before calling the guest. Replies with the new
/// execution's id, or `None` if this scheduled instant already has one.
#[derive(Debug)]
pub struct CreateExecution {
    /// The row to insert.
    pub new: NewExecution,
}

impl Message for CreateExecution {
    type Result = Result<Option<ExecutionId>, StoreError>;
}

impl Handler<CreateExecution> for Repository {
    type Result = ResponseFuture<Result<Option<ExecutionId>, StoreError>>;

    fn handle(&mut self, msg: CreateExecution, ctx: &mut Context<Self>) -> Self::Result {
        enqueue(
            self,
            ctx,
            msg.new,
            |a| &mut a.creates,
            |store, batch| Box::pin(async move { store.create_executions(batch).await }),
        )
    }
}

/// Sent by a supervisor when an execution that waited (prepared ahead of
/// its instant, or for a slot) has started: `queued` becomes `running`.
#[derive(Debug)]
pub struct MarkRunning {
    /// The execution.
    pub id: ExecutionId,
    /// When it started.
    pub at: DateTime<Utc>,
}

impl Message for MarkRunning {
    type Result = Result<(), StoreError>;
}

impl Handler<MarkRunning> for Repository {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: MarkRunning, ctx: &mut Context<Self>) -> Self::Result {
        enqueue(
            self,
            ctx,
            (msg.id, msg.at),
            |a| &mut a.runnings,
            |store, batch| Box::pin(async move { store.mark_running(batch).await }),
        )
    }
}

/// Sent by a supervisor when an execution ended, whatever happened.
#[derive(Debug)]
pub struct FinishExecution {
    /// The execution.
    pub id: ExecutionId,
    /// How it ended.
    pub report: RunReport,
}

impl Message for FinishExecution {
    type Result = Result<(), StoreError>;
}

impl Handler<FinishExecution> for Repository {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: FinishExecution, ctx: &mut Context<Self>) -> Self::Result {
        enqueue(
            self,
            ctx,
            (msg.id, msg.report),
            |a| &mut a.finishes,
            |store, batch| {
                Box::pin(async move {
                    let n = batch.len();
                    store.finish_executions(batch).await.map(|()| vec![(); n])
                })
            },
        )
    }
}

impl Actor for Repository {
    type Context = Context<Self>;
}

/// Declares a message and its handler, which runs `$body` with a clone of the
/// store as `$store` and the message as `$msg`.
macro_rules! repo_message {
    ($(#[$doc:meta])* $name:ident { $($field:ident : $ty:ty),* $(,)? } -> $ret:ty, |$store:ident, $msg:ident| $body:expr) => {
        $(#[$doc])*
        #[derive(Debug)]
        pub struct $name { $(#[allow(missing_docs)] pub $field: $ty),* }

        impl Message for $name {
            type Result = Result<$ret, StoreError>;
        }

        impl Handler<$name> for Repository {
            type Result = ResponseFuture<Result<$ret, StoreError>>;

            #[allow(unused_variables)]
            fn handle(&mut self, $msg: $name, _: &mut Context<Self>) -> Self::Result {
                let $store = self.store.clone();
                Box::pin(async move { $body })
            }
        }
    };
}

repo_message!(
    /// Sent by the loader: register or update a job. Replies with the stored job.
    UpsertJob { def: JobDefinition } -> JobRecord,
    |store, msg| store.upsert_job(&msg.def).await
);

repo_message!(
    /// Sent by the loader while a reloaded version is still loading: register
    /// it, committed only if `verdict` says the load succeeded.
    UpsertJobPending { def: JobDefinition, verdict: Verdict } -> JobRecord,
    |store, msg| store.upsert_job_pending(&msg.def, msg.verdict).await
);

repo_message!(
    /// Sent by the loader once a reloaded version is live: keep its bytes for rollback.
    KeepComponent { job: JobId, version: i64, digest: String, bytes: Arc<[u8]> } -> (),
    |store, msg| store.keep_component(msg.job, msg.version, &msg.digest, &msg.bytes).await
);

repo_message!(
    /// Sent by the loader: record (or clear) why a job's file was rejected.
    SetLoadError { name: String, error: Option<String> } -> (),
    |store, msg| store.set_load_error(&msg.name, msg.error.as_deref()).await
);

repo_message!(
    /// Sent by interfaces: all jobs.
    ListJobs {} -> Vec<JobRecord>,
    |store, msg| store.list_jobs().await
);

repo_message!(
    /// Sent by interfaces: one job by name, `None` if unknown.
    GetJob { name: String } -> Option<JobRecord>,
    |store, msg| store.get_job(&msg.name).await
);

repo_message!(
    /// Sent by the scheduler: persist a job's switch.
    SetJobEnabled { name: String, enabled: bool } -> (),
    |store, msg| store.set_job_enabled(&msg.name, msg.enabled).await
);

repo_message!(
    /// Sent by the scheduler: read the global switch.
    GetGlobalEnabled {} -> bool,
    |store, msg| store.global_enabled().await
);

repo_message!(
    /// Sent by the scheduler: persist the global switch.
    SetGlobalEnabled { enabled: bool } -> (),
    |store, msg| store.set_global_enabled(msg.enabled).await
);

repo_message!(
    /// Sent by the scheduler: the next fire of a job that has not fired yet.
    SetNextRun { job: JobId, next_run_at: Option<DateTime<Utc>> } -> (),
    |store, msg| store.set_next_run(msg.job, msg.next_run_at).await
);

repo_message!(
    /// Sent at start (and, on Postgres, after each heartbeat): executions a
    /// dead host left running become `crashed`; replies with them. `own` is
    /// this host, whose executions are never taken.
    MarkCrashed { own: String } -> Vec<ExecutionRecord>,
    |store, msg| store.mark_crashed(&msg.own).await
);

repo_message!(
    /// Sent by a supervisor: an execution outlived the job's expected duration.
    FlagOverrun { id: ExecutionId } -> (),
    |store, msg| store.flag_overrun(msg.id).await
);

repo_message!(
    /// Sent by a supervisor about once a second while an item job runs: its counts so far.
    UpdateProgress { id: ExecutionId, total: u64, ok: u64, skipped: u64, failed: u64 } -> (),
    |store, msg| store.update_progress(msg.id, [msg.total, msg.ok, msg.skipped, msg.failed]).await
);

repo_message!(
    /// Sent by interfaces: a job's executions, newest first.
    ListExecutions { job: String, limit: u32, before: Option<ExecutionId> } -> Vec<ExecutionRecord>,
    |store, msg| store.list_executions(&msg.job, msg.limit, msg.before).await
);

repo_message!(
    /// Sent by interfaces: one execution.
    GetExecution { id: ExecutionId } -> Option<ExecutionRecord>,
    |store, msg| store.get_execution(msg.id).await
);

/// Sent by the scheduler (no reply awaited): a job's last handled instant, its
/// next fire and the instants it missed. Group-committed.
#[derive(Debug)]
pub struct AdvanceSchedule(pub ScheduleAdvance);

impl Message for AdvanceSchedule {
    type Result = Result<(), StoreError>;
}

impl Handler<AdvanceSchedule> for Repository {
    type Result = ResponseFuture<Result<(), StoreError>>;

    fn handle(&mut self, msg: AdvanceSchedule, ctx: &mut Context<Self>) -> Self::Result {
        enqueue(
            self,
            ctx,
            msg.0,
            |a| &mut a.advances,
            |store, batch| {
                Box::pin(async move {
                    let n = batch.len();
                    store.advance_schedules(batch).await.map(|()| vec![(); n])
                })
            },
        )
    }
}

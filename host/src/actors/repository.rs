//! `Repository`: the actor that owns the runtime's store in a running host.
//! Other actors never touch SQL; they send these messages. Handlers return
//! futures, so slow queries never block the arbiter; SQLite writes are still
//! serialised by the store's single writer connection.

use actix::prelude::*;
use chrono::{DateTime, Utc};

use crate::model::{ExecutionId, ExecutionRecord, JobId, JobRecord, RunReport};
use crate::store::{JobDefinition, NewExecution, Store, StoreError};

/// Owns the [`Store`].
pub struct Repository {
    store: Store,
}

impl Repository {
    /// A repository over `store`.
    pub fn new(store: Store) -> Self {
        Repository { store }
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
    /// Sent by the scheduler: the last handled instant and the next fire.
    AdvanceSchedule { job: JobId, last_scheduled_for: DateTime<Utc>, next_run_at: Option<DateTime<Utc>>, missed: u64 } -> (),
    |store, msg| store.advance_schedule(msg.job, msg.last_scheduled_for, msg.next_run_at, msg.missed).await
);

repo_message!(
    /// Sent by the scheduler: the next fire of a job that has not fired yet.
    SetNextRun { job: JobId, next_run_at: Option<DateTime<Utc>> } -> (),
    |store, msg| store.set_next_run(msg.job, msg.next_run_at).await
);

repo_message!(
    /// Sent by a supervisor before calling the guest. `None`: this scheduled
    /// instant already has an execution.
    CreateExecution { new: NewExecution } -> Option<ExecutionId>,
    |store, msg| store.create_execution(&msg.new).await
);

repo_message!(
    /// Sent by a supervisor when an execution ended, whatever happened.
    FinishExecution { id: ExecutionId, report: RunReport } -> (),
    |store, msg| store.finish_execution(msg.id, &msg.report).await
);

repo_message!(
    /// Sent at start: executions a dead host left running become `crashed`;
    /// replies with them.
    MarkCrashed {} -> Vec<ExecutionRecord>,
    |store, msg| store.mark_crashed().await
);

repo_message!(
    /// Sent by a supervisor: an execution outlived the job's expected duration.
    FlagOverrun { id: ExecutionId } -> (),
    |store, msg| store.flag_overrun(msg.id).await
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

//! Persistence of Sundial's own tables. All of the runtime's SQL lives here,
//! one module per backend:
//! - [SQLite](sqlite) by default: a file next to the configuration, one
//!   scheduling host at a time ([`host_lock`]);
//! - [Postgres](postgres) for production and for several hosts sharing one
//!   database (`postgres://` or `postgresql://` URLs).
//!
//! [`Store`] is the same interface over either; every host also records a
//! lease in table `hosts` (see [`Store::register_host`]).

pub mod appdb;
mod appdb_pg;
pub mod host_lock;
mod hot;
mod postgres;
mod rows;
mod sqlite;
pub mod state;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::SqlitePool;

use crate::model::{
    ErrorClass, ExecutionId, ExecutionRecord, ExecutionStatus, HostRecord, JobId, JobKind, JobRecord, RunArgs,
    RunReport, ScheduleSource, Trigger, VersionRecord,
};

/// Errors of the runtime's store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database URL is malformed.
    #[error("invalid database url {url:?}")]
    Url {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// The database could not be opened.
    #[error("cannot open database {url:?}")]
    Open {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// Migrations failed.
    #[error("cannot migrate database {url:?}")]
    Migrate {
        /// The URL given.
        url: String,
        /// Why.
        #[source]
        source: sqlx::migrate::MigrateError,
    },
    /// A query failed.
    #[error("database error while {action}")]
    Query {
        /// What the store was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: sqlx::Error,
    },
    /// A write on the store's writer thread failed.
    #[error("database error while {action}")]
    Write {
        /// What the store was doing.
        action: &'static str,
        /// Why.
        #[source]
        source: rusqlite::Error,
    },
    /// A stored value could not be read back.
    #[error("corrupt value in column {column}: {message}")]
    Corrupt {
        /// Column.
        column: &'static str,
        /// Why.
        message: String,
    },
    /// No such job.
    #[error("unknown job {0:?}")]
    UnknownJob(String),
    /// A batched write failed; the message is the first caller's error.
    #[error("{0}")]
    Batch(String),
    /// The repository stopped before answering.
    #[error("the repository stopped")]
    Closed,
    /// A pending write was rolled back: what it waited for did not happen.
    #[error("not recorded: the load it waited for did not produce that version")]
    Abandoned,
    /// A shared pool is on an in-memory database.
    #[error("Sundial needs a database file; the pool given is on an in-memory SQLite database")]
    InMemory,
}

fn q(action: &'static str) -> impl FnOnce(sqlx::Error) -> StoreError {
    move |source| StoreError::Query { action, source }
}

/// Formats an instant the one way the store writes instants.
pub fn ts(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
}

fn parse_ts(column: &'static str, s: &str) -> Result<DateTime<Utc>, StoreError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDateTime::parse_from_str(s, "%Y-%m-%d %H:%M:%S%.f")
        .map(|n| n.and_utc())
        .map_err(|e| StoreError::Corrupt { column, message: format!("{s:?}: {e}") })
}

fn parse_enum<T: FromStr>(column: &'static str, s: &str) -> Result<T, StoreError>
where
    T::Err: std::fmt::Display,
{
    s.parse().map_err(|e: T::Err| StoreError::Corrupt { column, message: e.to_string() })
}

/// A job's definition as the loader and configuration make it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobDefinition {
    /// Unique name.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Single or items.
    pub kind: JobKind,
    /// Effective cron expression.
    pub schedule: String,
    /// Effective zone.
    pub timezone: String,
    /// Whether configuration enables it. `None` keeps the stored switch (an
    /// operator's enable/disable survives restarts); new jobs start enabled.
    pub enabled: Option<bool>,
    /// sha256 of the component.
    pub digest: String,
    /// The component's bytes, kept for rollback (`None` for native jobs).
    pub component: Option<std::sync::Arc<[u8]>>,
}

/// Whether what a pending write waits for happened: `true` commits it;
/// `false`, or the sender dropped, rolls it back.
pub type Verdict = tokio::sync::oneshot::Receiver<bool>;

/// How many of a job's most recent versions keep their component bytes, so
/// that an operator can roll back to them.
pub const KEEP_VERSIONS: i64 = 5;

/// A job's schedule moving on (see [`Store::advance_schedule`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScheduleAdvance {
    /// The job.
    pub job: JobId,
    /// The last scheduled instant handled.
    pub last_scheduled_for: DateTime<Utc>,
    /// The next fire.
    pub next_run_at: Option<DateTime<Utc>>,
    /// Instants missed on the way.
    pub missed: u64,
}

/// A new execution row.
#[derive(Debug, Clone, PartialEq)]
pub struct NewExecution {
    /// The job.
    pub job_id: JobId,
    /// Why.
    pub trigger: Trigger,
    /// The instant it stands for.
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The first attempt, for retries.
    pub parent_id: Option<ExecutionId>,
    /// Initial status: `running`, `queued`, or `skipped` for a fire recorded as skipped.
    pub status: ExecutionStatus,
    /// Component digest.
    pub digest: Option<String>,
    /// Component version.
    pub version: Option<i64>,
    /// This host.
    pub node: String,
    /// Operator arguments.
    pub args: RunArgs,
    /// For skipped fires: why.
    pub skip: Option<(ErrorClass, String)>,
}

/// Whether a database URL names a Postgres database.
pub fn is_postgres_url(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

/// A database URL fit for messages and logs: a password in it is replaced by `***`.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else { return url.to_string() };
    let Some((userinfo, host)) = rest.split_once('@') else { return url.to_string() };
    match userinfo.split_once(':') {
        Some((user, _password)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

#[derive(Debug, Clone)]
enum Backend {
    Sqlite(sqlite::SqliteStore),
    Postgres(postgres::PgStore),
}

/// The runtime's store (cheap to clone): SQLite or Postgres behind one interface.
#[derive(Debug, Clone)]
pub struct Store {
    backend: Backend,
}

/// Methods both backends implement with the same signature.
macro_rules! delegate {
    ($( $(#[$meta:meta])* pub async fn $name:ident(&self $(, $arg:ident : $ty:ty)* $(,)?) -> $ret:ty; )*) => {
        $(
            $(#[$meta])*
            pub async fn $name(&self $(, $arg: $ty)*) -> $ret {
                match &self.backend {
                    Backend::Sqlite(s) => s.$name($($arg),*).await,
                    Backend::Postgres(p) => p.$name($($arg),*).await,
                }
            }
        )*
    };
}

impl Store {
    /// Opens (creating if missing, on SQLite) and migrates the database at
    /// `url`: `sqlite://…` or `postgres://…`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let backend = if is_postgres_url(url) {
            Backend::Postgres(postgres::PgStore::open(url, &redact_url(url)).await?)
        } else {
            Backend::Sqlite(sqlite::SqliteStore::open(url).await?)
        };
        Ok(Store { backend })
    }

    /// Keeps Sundial's tables in the database of an application's existing
    /// SQLite pool: the application's pool serves Sundial's reads, and
    /// Sundial adds its own writer connection to the same file (SQLite allows
    /// one writer at a time, so Sundial queues its writes rather than take the
    /// pool's connections). The database must be a file, and is switched to
    /// WAL so readers and the writer do not block each other.
    pub async fn with_pool(pool: SqlitePool) -> Result<Store, StoreError> {
        Ok(Store { backend: Backend::Sqlite(sqlite::SqliteStore::with_pool(pool).await?) })
    }

    /// Whether the tables are on Postgres (where several hosts may share them).
    pub fn is_postgres(&self) -> bool {
        matches!(self.backend, Backend::Postgres(_))
    }

    /// Closes the pools (not an application's shared pool).
    pub async fn close(&self) {
        match &self.backend {
            Backend::Sqlite(s) => s.close().await,
            Backend::Postgres(p) => p.close().await,
        }
    }

    /// Records the last scheduled instant handled, the next fire, and how many
    /// instants were missed on the way.
    pub async fn advance_schedule(
        &self,
        job: JobId,
        last_scheduled_for: DateTime<Utc>,
        next_run_at: Option<DateTime<Utc>>,
        missed: u64,
    ) -> Result<(), StoreError> {
        self.advance_schedules(vec![ScheduleAdvance { job, last_scheduled_for, next_run_at, missed }]).await
    }

    /// Inserts an execution row. Returns `None` if this scheduled instant of the
    /// job already has one (the unique key): the fire was handled before, by
    /// this host or another.
    pub async fn create_execution(&self, new: &NewExecution) -> Result<Option<ExecutionId>, StoreError> {
        Ok(self.create_executions(vec![new.clone()]).await?.into_iter().next().flatten())
    }

    /// Records how an execution ended, with its failed and skipped items.
    pub async fn finish_execution(&self, id: ExecutionId, report: &RunReport) -> Result<(), StoreError> {
        self.finish_executions(vec![(id, report.clone())]).await
    }

    delegate! {
        /// The global scheduler switch.
        pub async fn global_enabled(&self) -> Result<bool, StoreError>;
        /// Sets the global scheduler switch.
        pub async fn set_global_enabled(&self, enabled: bool) -> Result<(), StoreError>;
        /// Registers a job or updates its definition. The component version
        /// increases whenever the digest changes.
        pub async fn upsert_job(&self, def: &JobDefinition) -> Result<JobRecord, StoreError>;
        /// [`Store::upsert_job`] in a transaction held open until `verdict`:
        /// committed if it is `true`, else rolled back
        /// ([`StoreError::Abandoned`]). A reload records its version while
        /// the version's code is still being loaded, and the record only
        /// stands if that load succeeds.
        pub async fn upsert_job_pending(&self, def: &JobDefinition, verdict: Verdict) -> Result<JobRecord, StoreError>;
        /// Keeps a job version's component bytes (for rollback) if the version
        /// still has that digest, and drops the bytes of versions older than the
        /// last [`KEEP_VERSIONS`].
        pub async fn keep_component(&self, job: JobId, version: i64, digest: &str, bytes: &[u8]) -> Result<(), StoreError>;
        /// The kept component bytes of one version of a job.
        pub async fn version_component(&self, job: JobId, version: i64) -> Result<Option<Vec<u8>>, StoreError>;
        /// Sets a job's effective schedule and where it comes from. A changed
        /// schedule or zone starts a new series from now on.
        pub async fn set_schedule(&self, name: &str, schedule: &str, timezone: &str, source: ScheduleSource) -> Result<JobRecord, StoreError>;
        /// A job's component versions, newest first (at most `limit`), with how
        /// many executions each ran.
        pub async fn job_versions(&self, job: JobId, limit: u32) -> Result<Vec<VersionRecord>, StoreError>;
        /// The newest execution of every job (or of `job` only): `(job name, id, status)`.
        pub async fn last_executions(&self, job: Option<JobId>) -> Result<Vec<(String, ExecutionId, ExecutionStatus)>, StoreError>;
        /// Executions queued or running (on any host), oldest first.
        pub async fn active_executions(&self) -> Result<Vec<ExecutionRecord>, StoreError>;
        /// Records why the latest file of a job was rejected (or clears it).
        pub async fn set_load_error(&self, name: &str, error: Option<&str>) -> Result<(), StoreError>;
        /// All jobs, by name.
        pub async fn list_jobs(&self) -> Result<Vec<JobRecord>, StoreError>;
        /// One job by name.
        pub async fn get_job(&self, name: &str) -> Result<Option<JobRecord>, StoreError>;
        /// Enables or disables a job.
        pub async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<(), StoreError>;
        /// [`Store::advance_schedule`] for many jobs in one transaction.
        pub async fn advance_schedules(&self, batch: Vec<ScheduleAdvance>) -> Result<(), StoreError>;
        /// Records the next fire without moving the last scheduled instant.
        pub async fn set_next_run(&self, job: JobId, next_run_at: Option<DateTime<Utc>>) -> Result<(), StoreError>;
        /// Inserts execution rows in one transaction (group commit); `None`
        /// for a scheduled instant that already has one.
        pub async fn create_executions(&self, batch: Vec<NewExecution>) -> Result<Vec<Option<ExecutionId>>, StoreError>;
        /// Records how executions ended, in one transaction (group commit).
        pub async fn finish_executions(&self, batch: Vec<(ExecutionId, RunReport)>) -> Result<(), StoreError>;
        /// Moves executions that waited from `queued` to `running`, started at
        /// the instant given, and records that instant as their jobs' last
        /// run (group commit); an execution that already ended keeps its row.
        pub async fn mark_running(&self, batch: Vec<(ExecutionId, DateTime<Utc>)>) -> Result<Vec<()>, StoreError>;
        /// Marks `crashed` the executions a dead host left `running` or
        /// `queued` (never those of `own`, this host), and returns them. On
        /// SQLite, at the start of the one scheduling host, that is every such
        /// row; on Postgres, those of hosts whose lease ran out.
        pub async fn mark_crashed(&self, own: &str) -> Result<Vec<ExecutionRecord>, StoreError>;
        /// Records a running item execution's counts so far (`[total, ok, skipped, failed]`).
        pub async fn update_progress(&self, id: ExecutionId, counts: [u64; 4]) -> Result<(), StoreError>;
        /// Flags a running execution as longer than expected.
        pub async fn flag_overrun(&self, id: ExecutionId) -> Result<(), StoreError>;
        /// The newest executions of a job, newest first, before `before` if given.
        pub async fn list_executions(&self, job: &str, limit: u32, before: Option<ExecutionId>) -> Result<Vec<ExecutionRecord>, StoreError>;
        /// One execution.
        pub async fn get_execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, StoreError>;
        /// Failed and skipped items of an execution: `(key, outcome, class, message)`.
        pub async fn execution_items(&self, id: ExecutionId) -> Result<Vec<(String, String, String, String)>, StoreError>;
        /// Records this host (`node`, running Sundial `version`) with a lease
        /// of `lease` from now.
        pub async fn register_host(&self, node: &str, version: &str, lease: Duration) -> Result<(), StoreError>;
        /// Renews this host's lease for `lease` from now; `false` if it had run
        /// out already (the host's executions may have been taken for crashed).
        pub async fn heartbeat(&self, node: &str, lease: Duration) -> Result<bool, StoreError>;
        /// Removes this host's row (at a clean shutdown).
        pub async fn unregister_host(&self, node: &str) -> Result<(), StoreError>;
        /// Hosts whose lease holds, oldest first.
        pub async fn live_hosts(&self) -> Result<Vec<HostRecord>, StoreError>;
    }
}

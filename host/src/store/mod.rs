//! Persistence of Sundial's own tables. All of the runtime's SQL lives here.
//!
//! SQLite by default: a file, WAL, and one writer connection (SQLite allows one
//! writer at a time anyway; a single pooled writer turns lock contention into
//! an in-process queue instead of `SQLITE_BUSY`), plus a few reader
//! connections. Instants are stored as fixed-width RFC 3339 UTC text
//! (`2026-11-22T07:00:00.000Z`) so they compare and sort as text and the unique
//! key on scheduled instants sees one spelling per instant.

pub mod appdb;
pub mod host_lock;
mod hot;
pub mod state;

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, NaiveDateTime, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteRow, SqliteSynchronous};
use sqlx::{Row, SqlitePool};

use crate::model::{
    ErrorClass, ExecutionId, ExecutionRecord, ExecutionStatus, JobId, JobKind, JobRecord, RunArgs, RunReport,
    ScheduleSource, Trigger, VersionRecord,
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
    /// A shared pool is on an in-memory database.
    #[error("Sundial needs a database file; the pool given is on an in-memory SQLite database")]
    InMemory,
}

/// The connection settings Sundial relies on: WAL, a busy timeout, foreign keys.
fn tuned(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
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

fn opt_ts(row: &SqliteRow, column: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
    let v: Option<String> = row.try_get(column).map_err(q("reading a row"))?;
    v.map(|s| parse_ts(column, &s)).transpose()
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

/// How many of a job's most recent versions keep their component bytes, so
/// that an operator can roll back to them.
pub const KEEP_VERSIONS: i64 = 5;

/// Applies the migrations. sqlx's migration lock is a no-op on SQLite, so two
/// processes opening a new database at once (say `serve` and `history`) race;
/// each migration runs in its own transaction, so the loser's attempt rolls
/// back whole and a retry finds it applied.
async fn migrate(pool: &SqlitePool) -> Result<(), sqlx::migrate::MigrateError> {
    let migrator = sqlx::migrate!("../migrations/sqlite");
    let mut attempt = 0;
    loop {
        match migrator.run(pool).await {
            Ok(()) => return Ok(()),
            Err(e) if attempt < 10 => {
                attempt += 1;
                tracing::debug!(error = %e, attempt, "migration raced with another process; retrying");
                tokio::time::sleep(Duration::from_millis(50 * attempt)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// Opens the writer pool. Several processes opening a new database at once
/// (say `serve` and a `sundial run` from OS cron) contend for the switch to
/// WAL, and SQLite reports some of that contention as busy without calling
/// the busy handler; the open is retried for up to the busy timeout.
async fn open_writer(options: SqliteConnectOptions) -> Result<SqlitePool, sqlx::Error> {
    let started = std::time::Instant::now();
    let mut pause = Duration::from_millis(5);
    loop {
        let opened = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.clone())
            .await;
        match opened {
            Err(e) if is_busy(&e) && started.elapsed() < appdb::BUSY_TIMEOUT => {
                tracing::debug!(error = %e, "database busy while opening; retrying");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_millis(200));
            }
            other => return other,
        }
    }
}

/// Whether an error is SQLite's "database is locked" or "busy" (any extended code).
fn is_busy(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => {
            db.code().and_then(|c| c.parse::<i32>().ok()).is_some_and(|c| c & 0xff == 5 || c & 0xff == 6)
        }
        _ => false,
    }
}

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

/// The runtime's store (cheap to clone).
#[derive(Debug, Clone)]
pub struct Store {
    writer: SqlitePool,
    reader: SqlitePool,
    hot: std::sync::Arc<hot::HotWriter>,
    /// The reader is an application's pool: closing the store leaves it open.
    shared_reader: bool,
}

impl Store {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<Store, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Url { url: url.to_string(), source })?
            .create_if_missing(true);
        let reader_options = tuned(options.clone()).read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(reader_options);
        Store::connect(url, options, reader).await
    }

    /// Keeps Sundial's tables in the database of an application's existing
    /// pool: the application's pool serves Sundial's reads, and Sundial adds
    /// its own writer connection to the same file (SQLite allows one writer
    /// at a time, so Sundial queues its writes rather than take the pool's
    /// connections). The database must be a file, and is switched to WAL so
    /// readers and the writer do not block each other.
    pub async fn with_pool(pool: SqlitePool) -> Result<Store, StoreError> {
        let options = (*pool.connect_options()).clone();
        // The file SQLite has open (empty for an in-memory database).
        let file: String = sqlx::query_scalar("SELECT file FROM pragma_database_list WHERE name = 'main'")
            .fetch_one(&pool)
            .await
            .map_err(q("reading the pool's database file"))?;
        if file.is_empty() {
            return Err(StoreError::InMemory);
        }
        let options = options.filename(&file);
        let mut store = Store::connect(&format!("sqlite://{file}"), options, pool).await?;
        store.shared_reader = true;
        Ok(store)
    }

    async fn connect(url: &str, options: SqliteConnectOptions, reader: SqlitePool) -> Result<Store, StoreError> {
        let writer = open_writer(tuned(options).create_if_missing(true))
            .await
            .map_err(|source| StoreError::Open { url: url.to_string(), source })?;
        migrate(&writer).await.map_err(|source| StoreError::Migrate { url: url.to_string(), source })?;
        let path = appdb::sqlite_path(url).map_err(|e| StoreError::Batch(e.to_string()))?;
        let hot = hot::HotWriter::open(&path)?;
        let store = Store { writer, reader, hot: std::sync::Arc::new(hot), shared_reader: false };
        let now = ts(Utc::now());
        sqlx::query(
            "INSERT INTO scheduler_settings (id, is_enabled, created_at, updated_at) VALUES (1, 1, $1, $1)
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(&now)
        .execute(&store.writer)
        .await
        .map_err(q("creating the scheduler settings"))?;
        Ok(store)
    }

    /// Closes the pools (not an application's shared pool).
    pub async fn close(&self) {
        self.writer.close().await;
        if !self.shared_reader {
            self.reader.close().await;
        }
    }

    /// The global scheduler switch.
    pub async fn global_enabled(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT is_enabled FROM scheduler_settings WHERE id = 1")
            .fetch_one(&self.reader)
            .await
            .map_err(q("reading the scheduler switch"))
    }

    /// Sets the global scheduler switch.
    pub async fn set_global_enabled(&self, enabled: bool) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        sqlx::query("UPDATE scheduler_settings SET is_enabled = $1, updated_at = $2 WHERE id = 1")
            .bind(enabled)
            .bind(ts(Utc::now()))
            .execute(&self.writer)
            .await
            .map_err(q("setting the scheduler switch"))?;
        Ok(())
    }

    /// Registers a job or updates its definition. The component version
    /// increases whenever the digest changes.
    pub async fn upsert_job(&self, def: &JobDefinition) -> Result<JobRecord, StoreError> {
        let now = ts(Utc::now());
        let name = def.name.clone();
        let def = def.clone();
        // One transaction on the writer thread: a reload goes live sooner.
        self.hot
            .transaction("registering a job", move |tx| {
                let (id, version, digest): (i64, Option<i64>, Option<String>) = tx
                    .prepare_cached(
                        "INSERT INTO jobs (name, description, job_type, schedule, timezone, is_enabled,
                               component_digest, component_version, created_at, updated_at)
             VALUES (?1, ?2, ?3, ?4, ?5, COALESCE(?6, 1), ?7, 1, ?8, ?8)
             ON CONFLICT (name) DO UPDATE SET
                description = excluded.description,
                job_type = excluded.job_type,
                is_enabled = COALESCE(?6, jobs.is_enabled),
                component_version = CASE
                    WHEN jobs.component_digest IS excluded.component_digest THEN jobs.component_version
                    ELSE COALESCE(jobs.component_version, 0) + 1 END,
                component_digest = excluded.component_digest,
                -- A changed schedule or zone starts a new series from now on.
                -- An operator's override (schedule_source 'api') stays.
                last_scheduled_for = CASE
                    WHEN jobs.schedule_source = 'api'
                      OR (jobs.schedule = excluded.schedule AND jobs.timezone = excluded.timezone)
                    THEN jobs.last_scheduled_for ELSE NULL END,
                schedule = CASE WHEN jobs.schedule_source = 'api' THEN jobs.schedule ELSE excluded.schedule END,
                timezone = CASE WHEN jobs.schedule_source = 'api' THEN jobs.timezone ELSE excluded.timezone END,
                load_error = NULL,
                updated_at = excluded.updated_at
             RETURNING id, component_version, component_digest",
                    )?
                    .query_row(
                        rusqlite::params![
                            def.name,
                            def.description,
                            def.kind.as_str(),
                            def.schedule,
                            def.timezone,
                            def.enabled,
                            def.digest,
                            now,
                        ],
                        |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
                    )?;
                if let Some(version) = version {
                    tx.execute(
                        "INSERT INTO job_versions (job_id, version, digest, first_seen) VALUES (?1, ?2, ?3, ?4)
                         ON CONFLICT (job_id, version) DO NOTHING",
                        rusqlite::params![id, version, digest, now],
                    )?;
                    if let Some(bytes) = &def.component {
                        keep_component_in(tx, id, version, &def.digest, bytes)?;
                    }
                }
                Ok(())
            })
            .await?;
        self.get_job(&name).await?.ok_or(StoreError::UnknownJob(name))
    }

    /// Keeps a job version's component bytes (for rollback) if the version
    /// still has that digest, and drops the bytes of versions older than the
    /// last [`KEEP_VERSIONS`].
    pub async fn keep_component(&self, job: JobId, version: i64, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        let (digest, bytes) = (digest.to_string(), bytes.to_vec());
        self.hot
            .transaction("keeping a job version's component", move |tx| {
                keep_component_in(tx, job.0, version, &digest, &bytes)
            })
            .await
    }

    /// The kept component bytes of one version of a job.
    pub async fn version_component(&self, job: JobId, version: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT component FROM job_versions WHERE job_id = $1 AND version = $2")
                .bind(job.0)
                .bind(version)
                .fetch_optional(&self.reader)
                .await
                .map_err(q("reading a job version's component"))?;
        Ok(bytes.flatten())
    }

    /// Sets a job's effective schedule and where it comes from. A changed
    /// schedule or zone starts a new series from now on.
    pub async fn set_schedule(
        &self,
        name: &str,
        schedule: &str,
        timezone: &str,
        source: ScheduleSource,
    ) -> Result<JobRecord, StoreError> {
        let _turn = appdb::WriteTurn::take();
        let done = sqlx::query(
            "UPDATE jobs SET
                last_scheduled_for = CASE WHEN schedule = $2 AND timezone = $3
                                     THEN last_scheduled_for ELSE NULL END,
                schedule = $2, timezone = $3, schedule_source = $4, updated_at = $5
             WHERE name = $1",
        )
        .bind(name)
        .bind(schedule)
        .bind(timezone)
        .bind(source.as_str())
        .bind(ts(Utc::now()))
        .execute(&self.writer)
        .await
        .map_err(q("changing a schedule"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownJob(name.to_string()));
        }
        self.get_job(name).await?.ok_or_else(|| StoreError::UnknownJob(name.to_string()))
    }

    /// A job's component versions, newest first (at most `limit`), with how
    /// many executions each ran.
    pub async fn job_versions(&self, job: JobId, limit: u32) -> Result<Vec<VersionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.version, v.digest, v.first_seen, v.component IS NOT NULL AS kept,
                    (SELECT COUNT(*) FROM job_executions e
                     WHERE e.job_id = v.job_id AND e.component_version = v.version) AS executions
             FROM job_versions v WHERE v.job_id = $1 ORDER BY v.version DESC LIMIT $2",
        )
        .bind(job.0)
        .bind(i64::from(limit))
        .fetch_all(&self.reader)
        .await
        .map_err(q("listing job versions"))?;
        rows.iter()
            .map(|r| {
                let first_seen: String = r.try_get("first_seen").map_err(q("reading a job version"))?;
                Ok(VersionRecord {
                    version: r.try_get("version").map_err(q("reading a job version"))?,
                    digest: r.try_get("digest").map_err(q("reading a job version"))?,
                    first_seen: parse_ts("first_seen", &first_seen)?,
                    executions: r.try_get("executions").map_err(q("reading a job version"))?,
                    kept: r.try_get("kept").map_err(q("reading a job version"))?,
                })
            })
            .collect()
    }

    /// The newest execution of every job (or of `job` only): `(job name, id, status)`.
    pub async fn last_executions(
        &self,
        job: Option<JobId>,
    ) -> Result<Vec<(String, ExecutionId, ExecutionStatus)>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.name, e.id, e.status FROM jobs j
             JOIN job_executions e ON e.id = (SELECT MAX(id) FROM job_executions WHERE job_id = j.id)
             WHERE $1 IS NULL OR j.id = $1",
        )
        .bind(job.map(|j| j.0))
        .fetch_all(&self.reader)
        .await
        .map_err(q("reading the last executions"))?;
        rows.iter()
            .map(|r| {
                let status: String = r.try_get(2).map_err(q("reading the last executions"))?;
                Ok((
                    r.try_get(0).map_err(q("reading the last executions"))?,
                    ExecutionId(r.try_get(1).map_err(q("reading the last executions"))?),
                    parse_enum("status", &status)?,
                ))
            })
            .collect()
    }

    /// Executions queued or running (on any host), oldest first.
    pub async fn active_executions(&self) -> Result<Vec<ExecutionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT e.*, j.name AS job_name FROM job_executions e JOIN jobs j ON j.id = e.job_id
             WHERE e.status IN ('queued', 'running') ORDER BY e.id LIMIT 1000",
        )
        .fetch_all(&self.reader)
        .await
        .map_err(q("listing running executions"))?;
        rows.iter().map(execution_from_row).collect()
    }

    /// Records why the latest file of a job was rejected (or clears it).
    pub async fn set_load_error(&self, name: &str, error: Option<&str>) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        sqlx::query("UPDATE jobs SET load_error = $2, updated_at = $3 WHERE name = $1")
            .bind(name)
            .bind(error)
            .bind(ts(Utc::now()))
            .execute(&self.writer)
            .await
            .map_err(q("recording a load error"))?;
        Ok(())
    }

    /// All jobs, by name.
    pub async fn list_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM jobs ORDER BY name").fetch_all(&self.reader).await.map_err(q("listing jobs"))?;
        rows.iter().map(job_from_row).collect()
    }

    /// One job by name.
    pub async fn get_job(&self, name: &str) -> Result<Option<JobRecord>, StoreError> {
        // Read through the writer so a caller sees its own writes at once.
        let row = sqlx::query("SELECT * FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.writer)
            .await
            .map_err(q("reading a job"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Enables or disables a job.
    pub async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        let done = sqlx::query("UPDATE jobs SET is_enabled = $2, updated_at = $3 WHERE name = $1")
            .bind(name)
            .bind(enabled)
            .bind(ts(Utc::now()))
            .execute(&self.writer)
            .await
            .map_err(q("switching a job"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownJob(name.to_string()));
        }
        Ok(())
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

    /// [`Store::advance_schedule`] for many jobs in one transaction.
    pub async fn advance_schedules(&self, batch: Vec<ScheduleAdvance>) -> Result<(), StoreError> {
        let now = ts(Utc::now());
        let rows: Vec<(i64, String, Option<String>, i64)> = batch
            .iter()
            .map(|a| {
                (a.job.0, ts(a.last_scheduled_for), a.next_run_at.map(ts), i64::try_from(a.missed).unwrap_or(i64::MAX))
            })
            .collect();
        self.hot
            .transaction("advancing schedules", move |tx| {
                let mut stmt = tx.prepare_cached(
                    "UPDATE jobs SET last_scheduled_for = ?2, next_run_at = ?3, updated_at = ?4,
                         missed_fires = missed_fires + ?5 WHERE id = ?1",
                )?;
                for (job, last, next, missed) in rows {
                    stmt.execute(rusqlite::params![job, last, next, now, missed])?;
                }
                Ok(())
            })
            .await
    }

    /// Records the next fire without moving the last scheduled instant.
    pub async fn set_next_run(&self, job: JobId, next_run_at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        sqlx::query("UPDATE jobs SET next_run_at = $2 WHERE id = $1")
            .bind(job.0)
            .bind(next_run_at.map(ts))
            .execute(&self.writer)
            .await
            .map_err(q("recording the next run"))?;
        Ok(())
    }

    /// Inserts an execution row. Returns `None` if this scheduled instant of the
    /// job already has one (the unique key): the fire was handled before.
    pub async fn create_execution(&self, new: &NewExecution) -> Result<Option<ExecutionId>, StoreError> {
        Ok(self.create_executions(vec![new.clone()]).await?.pop().flatten())
    }

    /// Inserts execution rows in one transaction (group commit), in order.
    pub async fn create_executions(&self, batch: Vec<NewExecution>) -> Result<Vec<Option<ExecutionId>>, StoreError> {
        let now = ts(Utc::now());
        self.hot
            .transaction("creating executions", move |tx| {
                let mut insert = tx.prepare_cached(
                    "INSERT INTO job_executions (job_id, trigger, scheduled_for, attempt, parent_id, status,
                         started_at, completed_at, component_digest, component_version, node, error_class,
                         error_message, args, created_at, updated_at)
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?15)
                     ON CONFLICT DO NOTHING
                     RETURNING id",
                )?;
                let mut last_run = tx.prepare_cached("UPDATE jobs SET last_run_at = ?2 WHERE id = ?1")?;
                let mut ids = Vec::with_capacity(batch.len());
                for new in &batch {
                    let args = serde_json::to_string(&new.args).unwrap_or_else(|_| "{}".into());
                    let (class, message) = match &new.skip {
                        Some((c, m)) => (Some(c.as_str()), Some(m.as_str())),
                        None => (None, None),
                    };
                    let running = new.status == ExecutionStatus::Running;
                    let id: Option<i64> = insert
                        .query_row(
                            rusqlite::params![
                                new.job_id.0,
                                new.trigger.as_str(),
                                ts(new.scheduled_for),
                                new.attempt,
                                new.parent_id.map(|p| p.0),
                                new.status.as_str(),
                                running.then_some(&now),
                                new.status.is_final().then_some(&now),
                                new.digest,
                                new.version,
                                new.node,
                                class,
                                message,
                                args,
                                now,
                            ],
                            |r| r.get(0),
                        )
                        .map(Some)
                        .or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                    if id.is_some() && running {
                        last_run.execute(rusqlite::params![new.job_id.0, now])?;
                    }
                    ids.push(id.map(ExecutionId));
                }
                Ok(ids)
            })
            .await
    }

    /// Records how an execution ended, with its failed and skipped items.
    pub async fn finish_execution(&self, id: ExecutionId, report: &RunReport) -> Result<(), StoreError> {
        self.finish_executions(vec![(id, report.clone())]).await
    }

    /// Records how executions ended, in one transaction (group commit).
    pub async fn finish_executions(&self, batch: Vec<(ExecutionId, RunReport)>) -> Result<(), StoreError> {
        let now = ts(Utc::now());
        self.hot
            .transaction("finishing executions", move |tx| {
                let mut finish = tx.prepare_cached(
                    "UPDATE job_executions SET status = ?2, completed_at = ?3, items_total = ?4, items_ok = ?5,
                         items_skipped = ?6, items_failed = ?7, changed = ?8, error_class = ?9, error_message = ?10,
                         summary = ?11, logs = ?12, logs_truncated = ?13, updated_at = ?3,
                         started_at = COALESCE(started_at, ?14), fuel_consumed = ?15
                     WHERE id = ?1",
                )?;
                let mut item = tx.prepare_cached(
                    "INSERT INTO execution_items (execution_id, item_key, outcome, error_class, message)
                     VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
                )?;
                let int = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
                for (id, report) in &batch {
                    finish.execute(rusqlite::params![
                        id.0,
                        report.status.as_str(),
                        now,
                        int(report.items_total),
                        int(report.items_ok),
                        int(report.items_skipped),
                        int(report.items_failed),
                        int(report.changed),
                        report.error_class.map(|c| c.as_str()),
                        report.error_message,
                        report.summary,
                        report.logs,
                        report.logs_truncated,
                        report.guest_started_at.map(ts).unwrap_or_else(|| now.clone()),
                        report.fuel_consumed.map(int),
                    ])?;
                    for p in &report.problems {
                        let outcome = if p.class == ErrorClass::Skip { "skipped" } else { "failed" };
                        item.execute(rusqlite::params![id.0, p.key, outcome, p.class.as_str(), p.message])?;
                    }
                }
                Ok(())
            })
            .await
    }

    /// Moves executions prepared ahead of their instant from `queued` to
    /// `running` (group commit); an execution that already ended is left alone.
    pub async fn mark_running(&self, batch: Vec<ExecutionId>) -> Result<Vec<()>, StoreError> {
        let now = ts(Utc::now());
        let ids: Vec<i64> = batch.iter().map(|i| i.0).collect();
        let n = ids.len();
        self.hot
            .transaction("marking executions running", move |tx| {
                let mut running = tx.prepare_cached(
                    "UPDATE job_executions SET status = 'running', started_at = ?2, updated_at = ?2
                     WHERE id = ?1 AND status = 'queued' RETURNING job_id",
                )?;
                let mut last_run = tx.prepare_cached("UPDATE jobs SET last_run_at = ?2 WHERE id = ?1")?;
                for id in ids {
                    let job: Option<i64> =
                        running.query_row(rusqlite::params![id, now], |r| r.get(0)).map(Some).or_else(|e| match e {
                            rusqlite::Error::QueryReturnedNoRows => Ok(None),
                            e => Err(e),
                        })?;
                    if let Some(job) = job {
                        last_run.execute(rusqlite::params![job, now])?;
                    }
                }
                Ok(vec![(); n])
            })
            .await
    }

    /// Marks executions left `running` or `queued` by a host that died as
    /// `crashed`, and returns them.
    pub async fn mark_crashed(&self) -> Result<Vec<ExecutionRecord>, StoreError> {
        let _turn = appdb::WriteTurn::take();
        let now = ts(Utc::now());
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE job_executions SET status = 'crashed', error_class = 'crash',
                 error_message = 'the host stopped while this execution ran', completed_at = $1, updated_at = $1
             WHERE status IN ('running', 'queued') RETURNING id",
        )
        .bind(now)
        .fetch_all(&self.writer)
        .await
        .map_err(q("marking crashed executions"))?;
        let mut crashed = Vec::with_capacity(ids.len());
        for id in ids {
            if let Some(e) = self.get_execution(ExecutionId(id)).await? {
                crashed.push(e);
            }
        }
        Ok(crashed)
    }

    /// Records a running item execution's counts so far (`[total, ok, skipped, failed]`).
    pub async fn update_progress(&self, id: ExecutionId, counts: [u64; 4]) -> Result<(), StoreError> {
        let now = ts(Utc::now());
        let [total, ok, skipped, failed] = counts.map(|n| i64::try_from(n).unwrap_or(i64::MAX));
        self.hot
            .transaction("recording progress", move |tx| {
                tx.prepare_cached(
                    "UPDATE job_executions SET items_total = ?2, items_ok = ?3, items_skipped = ?4,
                         items_failed = ?5, updated_at = ?6 WHERE id = ?1 AND status = 'running'",
                )?
                .execute(rusqlite::params![id.0, total, ok, skipped, failed, now])?;
                Ok(())
            })
            .await
    }

    /// Flags a running execution as longer than expected.
    pub async fn flag_overrun(&self, id: ExecutionId) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        sqlx::query("UPDATE job_executions SET overrun = 1 WHERE id = $1")
            .bind(id.0)
            .execute(&self.writer)
            .await
            .map_err(q("flagging an overrun"))?;
        Ok(())
    }

    /// The newest executions of a job, newest first, before `before` if given.
    pub async fn list_executions(
        &self,
        job: &str,
        limit: u32,
        before: Option<ExecutionId>,
    ) -> Result<Vec<ExecutionRecord>, StoreError> {
        let _turn = appdb::WriteTurn::take();
        let rows = sqlx::query(
            "SELECT e.*, j.name AS job_name FROM job_executions e JOIN jobs j ON j.id = e.job_id
             WHERE j.name = $1 AND ($2 IS NULL OR e.id < $2)
             ORDER BY e.id DESC LIMIT $3",
        )
        .bind(job)
        .bind(before.map(|b| b.0))
        .bind(i64::from(limit))
        .fetch_all(&self.writer)
        .await
        .map_err(q("listing executions"))?;
        rows.iter().map(execution_from_row).collect()
    }

    /// One execution.
    pub async fn get_execution(&self, id: ExecutionId) -> Result<Option<ExecutionRecord>, StoreError> {
        let row = sqlx::query(
            "SELECT e.*, j.name AS job_name FROM job_executions e JOIN jobs j ON j.id = e.job_id WHERE e.id = $1",
        )
        .bind(id.0)
        .fetch_optional(&self.writer)
        .await
        .map_err(q("reading an execution"))?;
        row.as_ref().map(execution_from_row).transpose()
    }

    /// Failed and skipped items of an execution: `(key, outcome, class, message)`.
    pub async fn execution_items(&self, id: ExecutionId) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT item_key, outcome, error_class, message FROM execution_items WHERE execution_id = $1
             ORDER BY rowid LIMIT 1000",
        )
        .bind(id.0)
        .fetch_all(&self.reader)
        .await
        .map_err(q("reading execution items"))?;
        rows.iter()
            .map(|r| {
                Ok((
                    r.try_get(0).map_err(q("reading execution items"))?,
                    r.try_get(1).map_err(q("reading execution items"))?,
                    r.try_get(2).map_err(q("reading execution items"))?,
                    r.try_get(3).map_err(q("reading execution items"))?,
                ))
            })
            .collect()
    }
}

fn job_from_row(r: &SqliteRow) -> Result<JobRecord, StoreError> {
    let g = |c: &'static str| -> Result<String, StoreError> { r.try_get(c).map_err(q("reading a job")) };
    Ok(JobRecord {
        id: JobId(r.try_get("id").map_err(q("reading a job"))?),
        name: g("name")?,
        description: g("description")?,
        kind: parse_enum("job_type", &g("job_type")?)?,
        schedule: g("schedule")?,
        timezone: g("timezone")?,
        enabled: r.try_get("is_enabled").map_err(q("reading a job"))?,
        last_run_at: opt_ts(r, "last_run_at")?,
        next_run_at: opt_ts(r, "next_run_at")?,
        last_scheduled_for: opt_ts(r, "last_scheduled_for")?,
        component_digest: r.try_get("component_digest").map_err(q("reading a job"))?,
        component_version: r.try_get("component_version").map_err(q("reading a job"))?,
        load_error: r.try_get("load_error").map_err(q("reading a job"))?,
        missed_fires: r.try_get("missed_fires").map_err(q("reading a job"))?,
        schedule_source: parse_enum("schedule_source", &g("schedule_source")?)?,
    })
}

fn execution_from_row(r: &SqliteRow) -> Result<ExecutionRecord, StoreError> {
    let e = q("reading an execution");
    let get_i = |c: &'static str| -> Result<i64, StoreError> { r.try_get(c).map_err(q("reading an execution")) };
    let status: String = r.try_get("status").map_err(e)?;
    let trigger: String = r.try_get("trigger").map_err(q("reading an execution"))?;
    let class: Option<String> = r.try_get("error_class").map_err(q("reading an execution"))?;
    let scheduled: String = r.try_get("scheduled_for").map_err(q("reading an execution"))?;
    let args: String = r.try_get("args").map_err(q("reading an execution"))?;
    Ok(ExecutionRecord {
        id: ExecutionId(get_i("id")?),
        job_id: JobId(get_i("job_id")?),
        job_name: r.try_get("job_name").map_err(q("reading an execution"))?,
        trigger: parse_enum("trigger", &trigger)?,
        scheduled_for: parse_ts("scheduled_for", &scheduled)?,
        attempt: get_i("attempt")?,
        parent_id: r.try_get::<Option<i64>, _>("parent_id").map_err(q("reading an execution"))?.map(ExecutionId),
        status: parse_enum("status", &status)?,
        started_at: opt_ts(r, "started_at")?,
        finished_at: opt_ts(r, "completed_at")?,
        component_digest: r.try_get("component_digest").map_err(q("reading an execution"))?,
        component_version: r.try_get("component_version").map_err(q("reading an execution"))?,
        node: r.try_get("node").map_err(q("reading an execution"))?,
        items_total: get_i("items_total")?,
        items_ok: get_i("items_ok")?,
        items_skipped: get_i("items_skipped")?,
        items_failed: get_i("items_failed")?,
        changed: get_i("changed")?,
        error_class: class.map(|c| parse_enum("error_class", &c)).transpose()?,
        error_message: r.try_get("error_message").map_err(q("reading an execution"))?,
        summary: r.try_get("summary").map_err(q("reading an execution"))?,
        logs: r.try_get("logs").map_err(q("reading an execution"))?,
        logs_truncated: r.try_get("logs_truncated").map_err(q("reading an execution"))?,
        args: serde_json::from_str(&args).unwrap_or_default(),
        overrun: r.try_get("overrun").map_err(q("reading an execution"))?,
        fuel_consumed: r.try_get("fuel_consumed").map_err(q("reading an execution"))?,
    })
}

/// [`Store::keep_component`] inside a transaction.
fn keep_component_in(
    tx: &rusqlite::Transaction<'_>,
    job_id: i64,
    version: i64,
    digest: &str,
    bytes: &[u8],
) -> Result<(), rusqlite::Error> {
    tx.execute(
        "UPDATE job_versions SET component = ?3
         WHERE job_id = ?1 AND version = ?2 AND digest = ?4 AND component IS NULL",
        rusqlite::params![job_id, version, bytes, digest],
    )?;
    tx.execute(
        "UPDATE job_versions SET component = NULL
         WHERE job_id = ?1 AND version <= ?2 AND component IS NOT NULL",
        rusqlite::params![job_id, version - KEEP_VERSIONS],
    )?;
    Ok(())
}

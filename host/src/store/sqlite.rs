//! Sundial's tables on SQLite: a file, WAL, and one writer connection (SQLite
//! allows one writer at a time anyway; a single pooled writer turns lock
//! contention into an in-process queue instead of `SQLITE_BUSY`), plus a few
//! reader connections. The writes on every execution's way run on the
//! [`hot`](super::hot) writer thread. Instants are stored as fixed-width RFC
//! 3339 UTC text (`2026-11-22T07:00:00.000Z`) so they compare and sort as
//! text and the unique key on scheduled instants sees one spelling per
//! instant.

use std::str::FromStr;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::SqlitePool;
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous};

use super::rows::{
    execution_from_row, host_from_row, item_problem_from_row, job_from_row, last_execution_from_row, version_from_row,
};
use super::{JobDefinition, KEEP_VERSIONS, NewExecution, ScheduleAdvance, StoreError, Verdict, appdb, hot, q, ts};
use crate::model::{
    ErrorClass, ExecutionId, ExecutionRecord, ExecutionStatus, HostRecord, JobId, JobRecord, RunReport, ScheduleSource,
    VersionRecord,
};

/// The connection settings Sundial relies on: WAL, a busy timeout, foreign keys.
fn tuned(options: SqliteConnectOptions) -> SqliteConnectOptions {
    options
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Normal)
        .busy_timeout(Duration::from_secs(10))
        .foreign_keys(true)
}

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

/// Sundial's tables in a SQLite file.
#[derive(Debug, Clone)]
pub(super) struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    hot: std::sync::Arc<hot::HotWriter>,
    /// The reader is an application's pool: closing the store leaves it open.
    shared_reader: bool,
}

impl SqliteStore {
    /// Opens (creating if missing) and migrates the database at `url`.
    pub async fn open(url: &str) -> Result<SqliteStore, StoreError> {
        let options = SqliteConnectOptions::from_str(url)
            .map_err(|source| StoreError::Url { url: url.to_string(), source })?
            .create_if_missing(true);
        let reader_options = tuned(options.clone()).read_only(true);
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(30))
            .connect_lazy_with(reader_options);
        SqliteStore::connect(url, options, reader).await
    }

    /// Keeps Sundial's tables in the database of an application's existing
    /// pool: the application's pool serves Sundial's reads, and Sundial adds
    /// its own writer connection to the same file (SQLite allows one writer
    /// at a time, so Sundial queues its writes rather than take the pool's
    /// connections). The database must be a file, and is switched to WAL so
    /// readers and the writer do not block each other.
    pub async fn with_pool(pool: SqlitePool) -> Result<SqliteStore, StoreError> {
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
        let mut store = SqliteStore::connect(&format!("sqlite://{file}"), options, pool).await?;
        store.shared_reader = true;
        Ok(store)
    }

    async fn connect(url: &str, options: SqliteConnectOptions, reader: SqlitePool) -> Result<SqliteStore, StoreError> {
        let writer = open_writer(tuned(options).create_if_missing(true))
            .await
            .map_err(|source| StoreError::Open { url: url.to_string(), source })?;
        migrate(&writer).await.map_err(|source| StoreError::Migrate { url: url.to_string(), source })?;
        let path = appdb::sqlite_path(url).map_err(|e| StoreError::Batch(e.to_string()))?;
        let hot = hot::HotWriter::open(&path)?;
        let store = SqliteStore { writer, reader, hot: std::sync::Arc::new(hot), shared_reader: false };
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
        let (def, now) = (def.clone(), ts(Utc::now()));
        // One transaction on the writer thread: a reload goes live sooner.
        self.hot.transaction("registering a job", move |tx| upsert_job_in(tx, &def, &now)).await?
    }

    /// [`SqliteStore::upsert_job`], committed once `verdict` is `true`.
    pub async fn upsert_job_pending(&self, def: &JobDefinition, verdict: Verdict) -> Result<JobRecord, StoreError> {
        let (def, now) = (def.clone(), ts(Utc::now()));
        self.hot.transaction_pending("registering a job", move |tx| upsert_job_in(tx, &def, &now), verdict).await?
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
        rows.iter().map(version_from_row).collect()
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
        rows.iter().map(last_execution_from_row).collect()
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

    /// [`Store::advance_schedule`] for many jobs in one transaction. The last
    /// scheduled instant only moves forward; missed instants are counted only
    /// with a move.
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
                    "UPDATE jobs SET
                         missed_fires = missed_fires + CASE
                             WHEN last_scheduled_for IS NULL OR last_scheduled_for < ?2 THEN ?5 ELSE 0 END,
                         last_scheduled_for = CASE
                             WHEN last_scheduled_for IS NULL OR last_scheduled_for < ?2 THEN ?2
                             ELSE last_scheduled_for END,
                         next_run_at = ?3, updated_at = ?4
                     WHERE id = ?1",
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

    /// Moves executions that waited from `queued` to `running`, started at
    /// the instant given, and records that instant as their jobs' last run
    /// (group commit); an execution that already ended keeps its row.
    pub async fn mark_running(&self, batch: Vec<(ExecutionId, DateTime<Utc>)>) -> Result<Vec<()>, StoreError> {
        let now = ts(Utc::now());
        let n = batch.len();
        self.hot
            .transaction("marking executions running", move |tx| {
                let mut running = tx.prepare_cached(
                    "UPDATE job_executions SET status = 'running', started_at = ?2, updated_at = ?3
                     WHERE id = ?1 AND status = 'queued'",
                )?;
                let mut last_run = tx.prepare_cached(
                    "UPDATE jobs SET last_run_at = ?2
                     WHERE id = (SELECT job_id FROM job_executions WHERE id = ?1)
                       AND (last_run_at IS NULL OR last_run_at < ?2)",
                )?;
                for (id, at) in batch {
                    let at = ts(at);
                    running.execute(rusqlite::params![id.0, at, now])?;
                    last_run.execute(rusqlite::params![id.0, at])?;
                }
                Ok(vec![(); n])
            })
            .await
    }

    /// Marks executions left `running` or `queued` by a host that died as
    /// `crashed`, and returns them. One scheduling host uses a SQLite file at
    /// a time (the host lock), so at its start every such row not its own is
    /// a dead host's.
    pub async fn mark_crashed(&self, own: &str) -> Result<Vec<ExecutionRecord>, StoreError> {
        let _turn = appdb::WriteTurn::take();
        let now = ts(Utc::now());
        let ids: Vec<i64> = sqlx::query_scalar(
            "UPDATE job_executions SET status = 'crashed', error_class = 'crash',
                 error_message = 'the host stopped while this execution ran', completed_at = $1, updated_at = $1
             WHERE status IN ('running', 'queued') AND (node IS NULL OR node <> $2) RETURNING id",
        )
        .bind(now)
        .bind(own)
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
        rows.iter().map(item_problem_from_row).collect()
    }

    /// Records this host and its lease (dropping the rows of hosts whose lease
    /// ran out).
    pub async fn register_host(&self, node: &str, version: &str, lease: Duration) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        let now = Utc::now();
        let mut tx = self.writer.begin().await.map_err(q("registering this host"))?;
        sqlx::query("DELETE FROM hosts WHERE lease_expires_at < $1")
            .bind(ts(now))
            .execute(&mut *tx)
            .await
            .map_err(q("registering this host"))?;
        sqlx::query(
            "INSERT INTO hosts (node, version, started_at, heartbeat_at, lease_expires_at) VALUES ($1, $2, $3, $3, $4)
             ON CONFLICT (node) DO UPDATE SET version = excluded.version, started_at = excluded.started_at,
                 heartbeat_at = excluded.heartbeat_at, lease_expires_at = excluded.lease_expires_at",
        )
        .bind(node)
        .bind(version)
        .bind(ts(now))
        .bind(ts(now + lease))
        .execute(&mut *tx)
        .await
        .map_err(q("registering this host"))?;
        tx.commit().await.map_err(q("registering this host"))
    }

    /// Extends this host's lease; `false` if it had already run out (or the
    /// row is gone).
    pub async fn heartbeat(&self, node: &str, lease: Duration) -> Result<bool, StoreError> {
        let _turn = appdb::WriteTurn::take();
        let now = Utc::now();
        let done = sqlx::query(
            "UPDATE hosts SET heartbeat_at = $2, lease_expires_at = $3 WHERE node = $1 AND lease_expires_at > $2",
        )
        .bind(node)
        .bind(ts(now))
        .bind(ts(now + lease))
        .execute(&self.writer)
        .await
        .map_err(q("renewing this host's lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes this host's row (at a clean shutdown).
    pub async fn unregister_host(&self, node: &str) -> Result<(), StoreError> {
        let _turn = appdb::WriteTurn::take();
        sqlx::query("DELETE FROM hosts WHERE node = $1")
            .bind(node)
            .execute(&self.writer)
            .await
            .map_err(q("unregistering this host"))?;
        Ok(())
    }

    /// Hosts whose lease holds, oldest first.
    pub async fn live_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM hosts WHERE lease_expires_at > $1 ORDER BY started_at, node")
            .bind(ts(Utc::now()))
            .fetch_all(&self.reader)
            .await
            .map_err(q("listing hosts"))?;
        rows.iter().map(host_from_row).collect()
    }
}

/// [`SqliteStore::keep_component`] inside a transaction.
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

/// Registers or updates a job inside `tx`; the stored job after it.
fn upsert_job_in(
    tx: &rusqlite::Transaction<'_>,
    def: &JobDefinition,
    now: &str,
) -> Result<Result<JobRecord, StoreError>, rusqlite::Error> {
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
        tx.prepare_cached(
            "INSERT INTO job_versions (job_id, version, digest, first_seen) VALUES (?1, ?2, ?3, ?4)
             ON CONFLICT (job_id, version) DO NOTHING",
        )?
        .execute(rusqlite::params![id, version, digest, now])?;
        if let Some(bytes) = &def.component {
            keep_component_in(tx, id, version, &def.digest, bytes)?;
        }
    }
    // Read back on the same connection: no second trip.
    tx.prepare_cached("SELECT * FROM jobs WHERE id = ?1")?.query_row([id], |r| Ok(job_from_row(r)))
}

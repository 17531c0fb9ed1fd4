//! Sundial's tables on Postgres, for production and for several hosts on one
//! database.
//!
//! Every write is a short transaction on a pooled connection; nothing is held
//! open while a guest runs. What keeps several hosts correct:
//! - each scheduled instant of a job is one row (the unique key
//!   `job_executions_one_per_instant`): the host whose insert lands runs it,
//!   the others find the row and do not;
//! - rows in a batch are written in one order (by job, then instant), so two
//!   hosts writing overlapping batches never deadlock;
//! - a host holds a lease (table `hosts`, instants from the database's clock)
//!   that it renews by heartbeat; executions of a host whose lease ran out
//!   are marked `crashed` by a live host, and from then on the late host's
//!   writes to them are refused (fenced): its outcome never overwrites the
//!   row another host has settled.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use sqlx::postgres::{PgConnectOptions, PgConnection, PgPoolOptions, PgRow};
use sqlx::{PgPool, Row};

use super::rows::{
    execution_from_row, host_from_row, item_problem_from_row, job_from_row, last_execution_from_row, version_from_row,
};
use super::{JobDefinition, KEEP_VERSIONS, NewExecution, ScheduleAdvance, StoreError, Verdict, q};
use crate::model::{
    ErrorClass, ExecutionId, ExecutionRecord, ExecutionStatus, HostRecord, JobId, JobRecord, RunReport, ScheduleSource,
    VersionRecord,
};

/// Connections per host: the hot writes are few and short.
const MAX_CONNECTIONS: u32 = 8;

/// Sundial's tables in a Postgres database.
#[derive(Debug, Clone)]
pub(super) struct PgStore {
    pool: PgPool,
}

/// Whether a failed transaction can be run again as a whole: Postgres aborted
/// it (deadlock, serialization), so nothing of it was committed.
fn retryable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::Database(db) => matches!(db.code().as_deref(), Some("40P01" | "40001")),
        _ => false,
    }
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Connects to and migrates the database at `url`.
    pub async fn open(url: &str, shown: &str) -> Result<PgStore, StoreError> {
        let options: PgConnectOptions =
            url.parse().map_err(|source| StoreError::Url { url: shown.to_string(), source })?;
        let pool = PgPoolOptions::new()
            .max_connections(MAX_CONNECTIONS)
            .acquire_timeout(Duration::from_secs(30))
            .connect_with(options.application_name("sundial"))
            .await
            .map_err(|source| StoreError::Open { url: shown.to_string(), source })?;
        // sqlx takes an advisory lock around the migrations: hosts starting
        // together migrate once.
        sqlx::migrate!("../migrations/postgres")
            .run(&pool)
            .await
            .map_err(|source| StoreError::Migrate { url: shown.to_string(), source })?;
        sqlx::query(
            "INSERT INTO scheduler_settings (id, is_enabled, created_at, updated_at) VALUES (1, TRUE, now(), now())
             ON CONFLICT (id) DO NOTHING",
        )
        .execute(&pool)
        .await
        .map_err(q("creating the scheduler settings"))?;
        Ok(PgStore { pool })
    }

    /// Runs `body` in a transaction, again (up to four times) when Postgres
    /// aborted it for a deadlock or a serialization failure.
    async fn transaction<T>(
        &self,
        action: &'static str,
        mut body: impl for<'c> FnMut(&'c mut PgConnection) -> BoxFuture<'c, Result<T, sqlx::Error>>,
    ) -> Result<T, StoreError> {
        let mut attempt = 0u32;
        loop {
            let result = async {
                let mut tx = self.pool.begin().await?;
                let out = body(&mut tx).await?;
                tx.commit().await?;
                Ok(out)
            }
            .await;
            match result {
                Err(e) if retryable(&e) && attempt < 4 => {
                    attempt += 1;
                    tracing::debug!(error = %e, attempt, action, "transaction aborted by Postgres; running it again");
                    tokio::time::sleep(Duration::from_millis(10 << attempt)).await;
                }
                other => return other.map_err(q(action)),
            }
        }
    }

    /// Closes the pool.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// The global scheduler switch.
    pub async fn global_enabled(&self) -> Result<bool, StoreError> {
        sqlx::query_scalar("SELECT is_enabled FROM scheduler_settings WHERE id = 1")
            .fetch_one(&self.pool)
            .await
            .map_err(q("reading the scheduler switch"))
    }

    /// Sets the global scheduler switch.
    pub async fn set_global_enabled(&self, enabled: bool) -> Result<(), StoreError> {
        sqlx::query("UPDATE scheduler_settings SET is_enabled = $1, updated_at = now() WHERE id = 1")
            .bind(enabled)
            .execute(&self.pool)
            .await
            .map_err(q("setting the scheduler switch"))?;
        Ok(())
    }

    /// Registers a job or updates its definition.
    pub async fn upsert_job(&self, def: &JobDefinition) -> Result<JobRecord, StoreError> {
        let now = Utc::now();
        self.transaction("registering a job", |c| {
            let def = def.clone();
            Box::pin(async move { upsert_job_in(c, &def, now).await })
        })
        .await
        .and_then(|row| job_from_row(&row))
    }

    /// [`PgStore::upsert_job`], committed once `verdict` is `true` (not
    /// run again if Postgres aborts it: the caller can register afresh).
    pub async fn upsert_job_pending(&self, def: &JobDefinition, verdict: Verdict) -> Result<JobRecord, StoreError> {
        let action = "registering a job";
        let row = async {
            let mut tx = self.pool.begin().await?;
            let row = upsert_job_in(&mut tx, def, Utc::now()).await?;
            if verdict.await != Ok(true) {
                // Dropping the transaction rolls it back.
                return Ok(None);
            }
            tx.commit().await?;
            Ok(Some(row))
        }
        .await
        .map_err(q(action))?;
        job_from_row(&row.ok_or(StoreError::Abandoned)?)
    }

    /// Keeps a job version's component bytes (see `Store::keep_component`).
    pub async fn keep_component(&self, job: JobId, version: i64, digest: &str, bytes: &[u8]) -> Result<(), StoreError> {
        self.transaction("keeping a job version's component", |c| {
            let (digest, bytes) = (digest.to_string(), bytes.to_vec());
            Box::pin(async move { keep_component_in(c, job.0, version, &digest, &bytes).await })
        })
        .await
    }

    /// The kept component bytes of one version of a job.
    pub async fn version_component(&self, job: JobId, version: i64) -> Result<Option<Vec<u8>>, StoreError> {
        let bytes: Option<Option<Vec<u8>>> =
            sqlx::query_scalar("SELECT component FROM job_versions WHERE job_id = $1 AND version = $2")
                .bind(job.0)
                .bind(version)
                .fetch_optional(&self.pool)
                .await
                .map_err(q("reading a job version's component"))?;
        Ok(bytes.flatten())
    }

    /// Sets a job's effective schedule and where it comes from.
    pub async fn set_schedule(
        &self,
        name: &str,
        schedule: &str,
        timezone: &str,
        source: ScheduleSource,
    ) -> Result<JobRecord, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET
                last_scheduled_for = CASE WHEN schedule = $2 AND timezone = $3
                                     THEN last_scheduled_for ELSE NULL END,
                schedule = $2, timezone = $3, schedule_source = $4, updated_at = now()
             WHERE name = $1",
        )
        .bind(name)
        .bind(schedule)
        .bind(timezone)
        .bind(source.as_str())
        .execute(&self.pool)
        .await
        .map_err(q("changing a schedule"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownJob(name.to_string()));
        }
        self.get_job(name).await?.ok_or_else(|| StoreError::UnknownJob(name.to_string()))
    }

    /// A job's component versions, newest first.
    pub async fn job_versions(&self, job: JobId, limit: u32) -> Result<Vec<VersionRecord>, StoreError> {
        let rows = sqlx::query(
            "SELECT v.version, v.digest, v.first_seen, v.component IS NOT NULL AS kept,
                    (SELECT COUNT(*) FROM job_executions e
                     WHERE e.job_id = v.job_id AND e.component_version = v.version) AS executions
             FROM job_versions v WHERE v.job_id = $1 ORDER BY v.version DESC LIMIT $2",
        )
        .bind(job.0)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing job versions"))?;
        rows.iter().map(version_from_row).collect()
    }

    /// The newest execution of every job (or of `job` only).
    pub async fn last_executions(
        &self,
        job: Option<JobId>,
    ) -> Result<Vec<(String, ExecutionId, ExecutionStatus)>, StoreError> {
        let rows = sqlx::query(
            "SELECT j.name, e.id, e.status FROM jobs j
             JOIN job_executions e ON e.id = (SELECT MAX(id) FROM job_executions WHERE job_id = j.id)
             WHERE $1::bigint IS NULL OR j.id = $1",
        )
        .bind(job.map(|j| j.0))
        .fetch_all(&self.pool)
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
        .fetch_all(&self.pool)
        .await
        .map_err(q("listing running executions"))?;
        rows.iter().map(execution_from_row).collect()
    }

    /// Records why the latest file of a job was rejected (or clears it).
    pub async fn set_load_error(&self, name: &str, error: Option<&str>) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET load_error = $2, updated_at = now() WHERE name = $1")
            .bind(name)
            .bind(error)
            .execute(&self.pool)
            .await
            .map_err(q("recording a load error"))?;
        Ok(())
    }

    /// All jobs, by name.
    pub async fn list_jobs(&self) -> Result<Vec<JobRecord>, StoreError> {
        let rows =
            sqlx::query("SELECT * FROM jobs ORDER BY name").fetch_all(&self.pool).await.map_err(q("listing jobs"))?;
        rows.iter().map(job_from_row).collect()
    }

    /// One job by name.
    pub async fn get_job(&self, name: &str) -> Result<Option<JobRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM jobs WHERE name = $1")
            .bind(name)
            .fetch_optional(&self.pool)
            .await
            .map_err(q("reading a job"))?;
        row.as_ref().map(job_from_row).transpose()
    }

    /// Enables or disables a job.
    pub async fn set_job_enabled(&self, name: &str, enabled: bool) -> Result<(), StoreError> {
        let done = sqlx::query("UPDATE jobs SET is_enabled = $2, updated_at = now() WHERE name = $1")
            .bind(name)
            .bind(enabled)
            .execute(&self.pool)
            .await
            .map_err(q("switching a job"))?;
        if done.rows_affected() == 0 {
            return Err(StoreError::UnknownJob(name.to_string()));
        }
        Ok(())
    }

    /// Moves jobs' schedules on, in one transaction. Every host's scheduler
    /// advances the same jobs: the last scheduled instant only moves forward,
    /// and missed instants are counted by the host that moves it first.
    pub async fn advance_schedules(&self, mut batch: Vec<ScheduleAdvance>) -> Result<(), StoreError> {
        batch.sort_by_key(|a| a.job.0);
        self.transaction("advancing schedules", |c| {
            let batch = batch.clone();
            Box::pin(async move {
                for a in batch {
                    sqlx::query(
                        "UPDATE jobs SET
                             missed_fires = missed_fires + CASE
                                 WHEN last_scheduled_for IS NULL OR last_scheduled_for < $2 THEN $4 ELSE 0 END,
                             last_scheduled_for = GREATEST(last_scheduled_for, $2),
                             next_run_at = $3, updated_at = now()
                         WHERE id = $1",
                    )
                    .bind(a.job.0)
                    .bind(a.last_scheduled_for)
                    .bind(a.next_run_at)
                    .bind(int(a.missed))
                    .execute(&mut *c)
                    .await?;
                }
                Ok(())
            })
        })
        .await
    }

    /// Records the next fire without moving the last scheduled instant.
    pub async fn set_next_run(&self, job: JobId, next_run_at: Option<DateTime<Utc>>) -> Result<(), StoreError> {
        sqlx::query("UPDATE jobs SET next_run_at = $2 WHERE id = $1")
            .bind(job.0)
            .bind(next_run_at)
            .execute(&self.pool)
            .await
            .map_err(q("recording the next run"))?;
        Ok(())
    }

    /// Inserts execution rows in one transaction; `None` for a scheduled
    /// instant that already has one (another host's, or an earlier fire).
    pub async fn create_executions(&self, batch: Vec<NewExecution>) -> Result<Vec<Option<ExecutionId>>, StoreError> {
        let now = Utc::now();
        // One order for every host's batches: no deadlock between two hosts
        // inserting the same instants.
        let mut order: Vec<usize> = (0..batch.len()).collect();
        order.sort_by_key(|&i| (batch[i].job_id.0, batch[i].scheduled_for, batch[i].attempt));
        let (batch, order) = (Arc::new(batch), Arc::new(order));
        let ids = self
            .transaction("recording executions", |c| {
                let (batch, order) = (batch.clone(), order.clone());
                Box::pin(async move {
                    let mut ids = vec![None; batch.len()];
                    for &i in order.iter() {
                        let new = &batch[i];
                        let args = serde_json::to_string(&new.args).unwrap_or_else(|_| "{}".into());
                        let (class, message) = match &new.skip {
                            Some((c, m)) => (Some(c.as_str()), Some(m.as_str())),
                            None => (None, None),
                        };
                        let running = new.status == ExecutionStatus::Running;
                        let id: Option<i64> = sqlx::query_scalar(
                            "INSERT INTO job_executions (job_id, trigger, scheduled_for, attempt, parent_id, status,
                                 started_at, completed_at, component_digest, component_version, node, error_class,
                                 error_message, args, created_at, updated_at)
                             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $15)
                             ON CONFLICT DO NOTHING
                             RETURNING id",
                        )
                        .bind(new.job_id.0)
                        .bind(new.trigger.as_str())
                        .bind(new.scheduled_for)
                        .bind(new.attempt)
                        .bind(new.parent_id.map(|p| p.0))
                        .bind(new.status.as_str())
                        .bind(running.then_some(now))
                        .bind(new.status.is_final().then_some(now))
                        .bind(&new.digest)
                        .bind(new.version)
                        .bind(&new.node)
                        .bind(class)
                        .bind(message)
                        .bind(args)
                        .bind(now)
                        .fetch_optional(&mut *c)
                        .await?;
                        if id.is_some() && running {
                            sqlx::query("UPDATE jobs SET last_run_at = $2 WHERE id = $1")
                                .bind(new.job_id.0)
                                .bind(now)
                                .execute(&mut *c)
                                .await?;
                        }
                        ids[i] = id.map(ExecutionId);
                    }
                    Ok(ids)
                })
            })
            .await?;
        Ok(ids)
    }

    /// Records how executions ended, in one transaction. An execution no
    /// longer queued or running was settled elsewhere (marked crashed after
    /// this host's lease ran out): its outcome is refused and logged.
    pub async fn finish_executions(&self, mut batch: Vec<(ExecutionId, RunReport)>) -> Result<(), StoreError> {
        let now = Utc::now();
        batch.sort_by_key(|(id, _)| id.0);
        let batch = Arc::new(batch);
        let fenced = self
            .transaction("finishing executions", |c| {
                let batch = batch.clone();
                Box::pin(async move {
                    let mut fenced = Vec::new();
                    for (id, report) in batch.iter() {
                        let done = sqlx::query(
                            "UPDATE job_executions SET status = $2, completed_at = $3, items_total = $4,
                                 items_ok = $5, items_skipped = $6, items_failed = $7, changed = $8,
                                 error_class = $9, error_message = $10, summary = $11, logs = $12,
                                 logs_truncated = $13, updated_at = $3, started_at = COALESCE(started_at, $14),
                                 fuel_consumed = $15
                             WHERE id = $1 AND status IN ('queued', 'running')",
                        )
                        .bind(id.0)
                        .bind(report.status.as_str())
                        .bind(now)
                        .bind(int(report.items_total))
                        .bind(int(report.items_ok))
                        .bind(int(report.items_skipped))
                        .bind(int(report.items_failed))
                        .bind(int(report.changed))
                        .bind(report.error_class.map(|c| c.as_str()))
                        .bind(&report.error_message)
                        .bind(&report.summary)
                        .bind(&report.logs)
                        .bind(report.logs_truncated)
                        .bind(report.guest_started_at.unwrap_or(now))
                        .bind(report.fuel_consumed.map(int))
                        .execute(&mut *c)
                        .await?;
                        if done.rows_affected() == 0 {
                            fenced.push(*id);
                            continue;
                        }
                        for p in &report.problems {
                            let outcome = if p.class == ErrorClass::Skip { "skipped" } else { "failed" };
                            sqlx::query(
                                "INSERT INTO execution_items (execution_id, item_key, outcome, error_class, message)
                                 VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
                            )
                            .bind(id.0)
                            .bind(&p.key)
                            .bind(outcome)
                            .bind(p.class.as_str())
                            .bind(&p.message)
                            .execute(&mut *c)
                            .await?;
                        }
                    }
                    Ok(fenced)
                })
            })
            .await?;
        for id in fenced {
            tracing::warn!(
                execution = id.0,
                "outcome refused: the execution was settled by another host (this host's lease ran out)"
            );
        }
        Ok(())
    }

    /// Moves executions prepared ahead of their instant from `queued` to `running`.
    pub async fn mark_running(&self, mut batch: Vec<(ExecutionId, DateTime<Utc>)>) -> Result<Vec<()>, StoreError> {
        let n = batch.len();
        batch.sort_by_key(|(id, _)| id.0);
        self.transaction("marking executions running", |c| {
            let batch = batch.clone();
            Box::pin(async move {
                for (id, at) in batch {
                    sqlx::query(
                        "UPDATE job_executions SET status = 'running', started_at = $2, updated_at = now()
                         WHERE id = $1 AND status = 'queued'",
                    )
                    .bind(id.0)
                    .bind(at)
                    .execute(&mut *c)
                    .await?;
                    sqlx::query(
                        "UPDATE jobs SET last_run_at = $2
                         WHERE id = (SELECT job_id FROM job_executions WHERE id = $1)
                           AND (last_run_at IS NULL OR last_run_at < $2)",
                    )
                    .bind(id.0)
                    .bind(at)
                    .execute(&mut *c)
                    .await?;
                }
                Ok(vec![(); n])
            })
        })
        .await
    }

    /// Marks `crashed` the executions left `running` or `queued` by hosts
    /// whose lease ran out (never `own`'s), and returns them.
    pub async fn mark_crashed(&self, own: &str) -> Result<Vec<ExecutionRecord>, StoreError> {
        let rows = sqlx::query(
            "WITH crashed AS (
                 UPDATE job_executions e SET status = 'crashed', error_class = 'crash',
                     error_message = 'the host ' || COALESCE(e.node, '?')
                         || ' stopped (or lost its lease) while this execution ran',
                     completed_at = now(), updated_at = now()
                 WHERE e.status IN ('running', 'queued')
                   AND (e.node IS NULL OR e.node <> $1)
                   AND NOT EXISTS (SELECT 1 FROM hosts h WHERE h.node = e.node AND h.lease_expires_at > now())
                 RETURNING e.*)
             SELECT crashed.*, j.name AS job_name FROM crashed JOIN jobs j ON j.id = crashed.job_id
             ORDER BY crashed.id",
        )
        .bind(own)
        .fetch_all(&self.pool)
        .await
        .map_err(q("marking crashed executions"))?;
        rows.iter().map(execution_from_row).collect()
    }

    /// Records a running item execution's counts so far.
    pub async fn update_progress(&self, id: ExecutionId, counts: [u64; 4]) -> Result<(), StoreError> {
        let [total, ok, skipped, failed] = counts.map(int);
        sqlx::query(
            "UPDATE job_executions SET items_total = $2, items_ok = $3, items_skipped = $4,
                 items_failed = $5, updated_at = now() WHERE id = $1 AND status = 'running'",
        )
        .bind(id.0)
        .bind(total)
        .bind(ok)
        .bind(skipped)
        .bind(failed)
        .execute(&self.pool)
        .await
        .map_err(q("recording progress"))?;
        Ok(())
    }

    /// Flags a running execution as longer than expected.
    pub async fn flag_overrun(&self, id: ExecutionId) -> Result<(), StoreError> {
        sqlx::query("UPDATE job_executions SET overrun = TRUE WHERE id = $1")
            .bind(id.0)
            .execute(&self.pool)
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
        let rows = sqlx::query(
            "SELECT e.*, j.name AS job_name FROM job_executions e JOIN jobs j ON j.id = e.job_id
             WHERE j.name = $1 AND ($2::bigint IS NULL OR e.id < $2)
             ORDER BY e.id DESC LIMIT $3",
        )
        .bind(job)
        .bind(before.map(|b| b.0))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
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
        .fetch_optional(&self.pool)
        .await
        .map_err(q("reading an execution"))?;
        row.as_ref().map(execution_from_row).transpose()
    }

    /// Failed and skipped items of an execution: `(key, outcome, class, message)`.
    pub async fn execution_items(&self, id: ExecutionId) -> Result<Vec<(String, String, String, String)>, StoreError> {
        let rows = sqlx::query(
            "SELECT item_key, outcome, error_class, message FROM execution_items WHERE execution_id = $1
             ORDER BY seq LIMIT 1000",
        )
        .bind(id.0)
        .fetch_all(&self.pool)
        .await
        .map_err(q("reading execution items"))?;
        rows.iter().map(item_problem_from_row).collect()
    }

    /// Records this host and its lease, from the database's clock (dropping
    /// the rows of hosts whose lease ran out long ago).
    pub async fn register_host(&self, node: &str, version: &str, lease: Duration) -> Result<(), StoreError> {
        let (node, version) = (node.to_string(), version.to_string());
        let lease = lease.as_secs_f64();
        self.transaction("registering this host", |c| {
            let (node, version) = (node.clone(), version.clone());
            Box::pin(async move {
                sqlx::query("DELETE FROM hosts WHERE lease_expires_at < now() - interval '1 day'")
                    .execute(&mut *c)
                    .await?;
                sqlx::query(
                    "INSERT INTO hosts (node, version, started_at, heartbeat_at, lease_expires_at)
                     VALUES ($1, $2, now(), now(), now() + make_interval(secs => $3))
                     ON CONFLICT (node) DO UPDATE SET version = excluded.version, started_at = excluded.started_at,
                         heartbeat_at = excluded.heartbeat_at, lease_expires_at = excluded.lease_expires_at",
                )
                .bind(node)
                .bind(version)
                .bind(lease)
                .execute(&mut *c)
                .await?;
                Ok(())
            })
        })
        .await
    }

    /// Extends this host's lease; `false` if it had already run out.
    pub async fn heartbeat(&self, node: &str, lease: Duration) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE hosts SET heartbeat_at = now(), lease_expires_at = now() + make_interval(secs => $2)
             WHERE node = $1 AND lease_expires_at > now()",
        )
        .bind(node)
        .bind(lease.as_secs_f64())
        .execute(&self.pool)
        .await
        .map_err(q("renewing this host's lease"))?;
        Ok(done.rows_affected() == 1)
    }

    /// Removes this host's row (at a clean shutdown).
    pub async fn unregister_host(&self, node: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM hosts WHERE node = $1")
            .bind(node)
            .execute(&self.pool)
            .await
            .map_err(q("unregistering this host"))?;
        Ok(())
    }

    /// Hosts whose lease holds, oldest first.
    pub async fn live_hosts(&self) -> Result<Vec<HostRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM hosts WHERE lease_expires_at > now() ORDER BY started_at, node")
            .fetch_all(&self.pool)
            .await
            .map_err(q("listing hosts"))?;
        rows.iter().map(host_from_row).collect()
    }
}

/// Keeps a version's bytes and drops those of versions older than the last
/// [`KEEP_VERSIONS`], inside a transaction.
async fn keep_component_in(
    c: &mut PgConnection,
    job_id: i64,
    version: i64,
    digest: &str,
    bytes: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE job_versions SET component = $3
         WHERE job_id = $1 AND version = $2 AND digest = $4 AND component IS NULL",
    )
    .bind(job_id)
    .bind(version)
    .bind(bytes)
    .bind(digest)
    .execute(&mut *c)
    .await?;
    sqlx::query(
        "UPDATE job_versions SET component = NULL
         WHERE job_id = $1 AND version <= $2 AND component IS NOT NULL",
    )
    .bind(job_id)
    .bind(version - KEEP_VERSIONS)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// Registers or updates a job on `c` (in a transaction); the stored job's row after it.
async fn upsert_job_in(c: &mut PgConnection, def: &JobDefinition, now: DateTime<Utc>) -> Result<PgRow, sqlx::Error> {
    let row = sqlx::query(
        "INSERT INTO jobs (name, description, job_type, schedule, timezone, is_enabled,
             component_digest, component_version, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, COALESCE($6, TRUE), $7, 1, $8, $8)
         ON CONFLICT (name) DO UPDATE SET
            description = excluded.description,
            job_type = excluded.job_type,
            is_enabled = COALESCE($6, jobs.is_enabled),
            component_version = CASE
                WHEN jobs.component_digest IS NOT DISTINCT FROM excluded.component_digest
                THEN jobs.component_version
                ELSE COALESCE(jobs.component_version, 0) + 1 END,
            component_digest = excluded.component_digest,
            last_scheduled_for = CASE
                WHEN jobs.schedule_source = 'api'
                  OR (jobs.schedule = excluded.schedule AND jobs.timezone = excluded.timezone)
                THEN jobs.last_scheduled_for ELSE NULL END,
            schedule = CASE WHEN jobs.schedule_source = 'api' THEN jobs.schedule
                       ELSE excluded.schedule END,
            timezone = CASE WHEN jobs.schedule_source = 'api' THEN jobs.timezone
                       ELSE excluded.timezone END,
            load_error = NULL,
            updated_at = excluded.updated_at
         RETURNING id, component_version, component_digest",
    )
    .bind(&def.name)
    .bind(&def.description)
    .bind(def.kind.as_str())
    .bind(&def.schedule)
    .bind(&def.timezone)
    .bind(def.enabled)
    .bind(&def.digest)
    .bind(now)
    .fetch_one(&mut *c)
    .await?;
    let id: i64 = row.try_get(0)?;
    let version: Option<i64> = row.try_get(1)?;
    let digest: Option<String> = row.try_get(2)?;
    if let Some(version) = version {
        sqlx::query(
            "INSERT INTO job_versions (job_id, version, digest, first_seen) VALUES ($1, $2, $3, $4)
             ON CONFLICT (job_id, version) DO NOTHING",
        )
        .bind(id)
        .bind(version)
        .bind(digest)
        .bind(now)
        .execute(&mut *c)
        .await?;
        if let Some(bytes) = &def.component {
            keep_component_in(c, id, version, &def.digest, bytes).await?;
        }
    }
    // Read back in the same transaction: no second trip.
    sqlx::query("SELECT * FROM jobs WHERE id = $1").bind(id).fetch_one(&mut *c).await
}

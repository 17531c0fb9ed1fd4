//! Reading the runtime's rows, written once for both backends: SQLite keeps
//! instants as RFC 3339 text and flags as integers, Postgres as `timestamptz`
//! and `boolean`; [`Cols`] hides the difference.

use chrono::{DateTime, Utc};
use sqlx::Row;
use sqlx::postgres::PgRow;
use sqlx::sqlite::SqliteRow;

use super::{StoreError, parse_enum, parse_ts, q};
use crate::model::{ExecutionId, ExecutionRecord, ExecutionStatus, HostRecord, JobId, JobRecord, VersionRecord};

/// A row of either backend, read column by column.
pub(super) trait Cols {
    /// A text column.
    fn text(&self, c: &'static str) -> Result<String, StoreError>;
    /// A nullable text column.
    fn opt_text(&self, c: &'static str) -> Result<Option<String>, StoreError>;
    /// An integer column.
    fn int(&self, c: &'static str) -> Result<i64, StoreError>;
    /// A nullable integer column.
    fn opt_int(&self, c: &'static str) -> Result<Option<i64>, StoreError>;
    /// A flag.
    fn flag(&self, c: &'static str) -> Result<bool, StoreError>;
    /// A nullable instant.
    fn opt_ts(&self, c: &'static str) -> Result<Option<DateTime<Utc>>, StoreError>;

    /// An instant.
    fn ts(&self, c: &'static str) -> Result<DateTime<Utc>, StoreError> {
        self.opt_ts(c)?.ok_or(StoreError::Corrupt { column: c, message: "unexpected NULL".into() })
    }
}

const READ: &str = "reading a row";

/// The columns every row type reads alike (instants differ: see each impl),
/// each read with `$get` and its error turned into a [`StoreError`] by `$err`.
macro_rules! common_cols {
    ($get:ident, $err:expr) => {
        fn text(&self, c: &'static str) -> Result<String, StoreError> {
            self.$get(c).map_err($err)
        }
        fn opt_text(&self, c: &'static str) -> Result<Option<String>, StoreError> {
            self.$get(c).map_err($err)
        }
        fn int(&self, c: &'static str) -> Result<i64, StoreError> {
            self.$get(c).map_err($err)
        }
        fn opt_int(&self, c: &'static str) -> Result<Option<i64>, StoreError> {
            self.$get(c).map_err($err)
        }
        fn flag(&self, c: &'static str) -> Result<bool, StoreError> {
            self.$get(c).map_err($err)
        }
    };
}

impl Cols for SqliteRow {
    common_cols!(try_get, q(READ));
    fn opt_ts(&self, c: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_text(c)?.map(|s| parse_ts(c, &s)).transpose()
    }
}

/// A row read on the SQLite writer thread's own connection.
impl Cols for rusqlite::Row<'_> {
    common_cols!(get, |source| StoreError::Write { action: READ, source });
    fn opt_ts(&self, c: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.opt_text(c)?.map(|s| parse_ts(c, &s)).transpose()
    }
}

impl Cols for PgRow {
    common_cols!(try_get, q(READ));
    fn opt_ts(&self, c: &'static str) -> Result<Option<DateTime<Utc>>, StoreError> {
        self.try_get(c).map_err(q(READ))
    }
}

/// A row of `job_versions` with its execution count (`executions`) and
/// whether its bytes are kept (`kept`).
pub(super) fn version_from_row(r: &impl Cols) -> Result<VersionRecord, StoreError> {
    Ok(VersionRecord {
        version: r.int("version")?,
        digest: r.text("digest")?,
        first_seen: r.ts("first_seen")?,
        executions: r.int("executions")?,
        kept: r.flag("kept")?,
    })
}

/// `(name, id, status)` of a job's newest execution.
pub(super) fn last_execution_from_row(r: &impl Cols) -> Result<(String, ExecutionId, ExecutionStatus), StoreError> {
    Ok((r.text("name")?, ExecutionId(r.int("id")?), parse_enum("status", &r.text("status")?)?))
}

/// `(key, outcome, class, message)` of a failed or skipped item.
pub(super) fn item_problem_from_row(r: &impl Cols) -> Result<(String, String, String, String), StoreError> {
    Ok((r.text("item_key")?, r.text("outcome")?, r.text("error_class")?, r.text("message")?))
}

pub(super) fn job_from_row(r: &impl Cols) -> Result<JobRecord, StoreError> {
    Ok(JobRecord {
        id: JobId(r.int("id")?),
        name: r.text("name")?,
        description: r.text("description")?,
        kind: parse_enum("job_type", &r.text("job_type")?)?,
        schedule: r.text("schedule")?,
        timezone: r.text("timezone")?,
        enabled: r.flag("is_enabled")?,
        last_run_at: r.opt_ts("last_run_at")?,
        next_run_at: r.opt_ts("next_run_at")?,
        last_scheduled_for: r.opt_ts("last_scheduled_for")?,
        component_digest: r.opt_text("component_digest")?,
        component_version: r.opt_int("component_version")?,
        load_error: r.opt_text("load_error")?,
        missed_fires: r.int("missed_fires")?,
        schedule_source: parse_enum("schedule_source", &r.text("schedule_source")?)?,
    })
}

pub(super) fn execution_from_row(r: &impl Cols) -> Result<ExecutionRecord, StoreError> {
    Ok(ExecutionRecord {
        id: ExecutionId(r.int("id")?),
        job_id: JobId(r.int("job_id")?),
        job_name: r.text("job_name")?,
        trigger: parse_enum("trigger", &r.text("trigger")?)?,
        scheduled_for: r.ts("scheduled_for")?,
        attempt: r.int("attempt")?,
        parent_id: r.opt_int("parent_id")?.map(ExecutionId),
        status: parse_enum("status", &r.text("status")?)?,
        started_at: r.opt_ts("started_at")?,
        finished_at: r.opt_ts("completed_at")?,
        component_digest: r.opt_text("component_digest")?,
        component_version: r.opt_int("component_version")?,
        node: r.opt_text("node")?,
        items_total: r.int("items_total")?,
        items_ok: r.int("items_ok")?,
        items_skipped: r.int("items_skipped")?,
        items_failed: r.int("items_failed")?,
        changed: r.int("changed")?,
        error_class: r.opt_text("error_class")?.map(|c| parse_enum("error_class", &c)).transpose()?,
        error_message: r.opt_text("error_message")?,
        summary: r.opt_text("summary")?,
        logs: r.text("logs")?,
        logs_truncated: r.flag("logs_truncated")?,
        args: serde_json::from_str(&r.text("args")?).unwrap_or_default(),
        overrun: r.flag("overrun")?,
        fuel_consumed: r.opt_int("fuel_consumed")?,
    })
}

pub(super) fn host_from_row(r: &impl Cols) -> Result<HostRecord, StoreError> {
    Ok(HostRecord {
        node: r.text("node")?,
        version: r.text("version")?,
        started_at: r.ts("started_at")?,
        heartbeat_at: r.ts("heartbeat_at")?,
        lease_expires_at: r.ts("lease_expires_at")?,
    })
}

//! Built-in native jobs: `backup` and `retention`.
//!
//! `backup` (seed 003's BackupTask): snapshots the SQLite databases the host
//! uses — Sundial's own and the application database, once each if they are
//! the same file — with `VACUUM INTO`, which writes a consistent, compacted
//! copy while other connections keep reading and writing. Copies are named
//! `<file stem>-<UTC instant>.db` in the backup directory; copies older than
//! the retention period (by the instant in their name) are deleted.
//!
//! Enabled by a `[jobs.backup]` section in `sundial.toml`; arguments:
//! `dir` (default `backups`, relative to the configuration file) and
//! `retention_days` (default 7). A dry run reports what it would write and
//! delete and touches nothing.

use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDateTime, TimeDelta, Utc};

use crate::model::{JobInfo, JobKind};
use crate::runtime::{NativeContext, NativeError, NativeJob, NativeOutcome};

/// The timestamp format in backup file names.
const STAMP: &str = "%Y%m%dT%H%M%SZ";

/// The built-in backup job.
#[derive(Debug, Clone)]
pub struct Backup {
    /// The database files to copy (deduplicated).
    pub databases: Vec<PathBuf>,
    /// Where relative `dir` arguments resolve.
    pub base_dir: PathBuf,
}

impl Backup {
    /// A backup job for these database files.
    pub fn new(databases: Vec<PathBuf>, base_dir: PathBuf) -> Self {
        let mut unique: Vec<PathBuf> = Vec::new();
        for d in databases {
            let key = std::fs::canonicalize(&d).unwrap_or_else(|_| d.clone());
            if !unique.iter().any(|u| std::fs::canonicalize(u).unwrap_or_else(|_| u.clone()) == key) {
                unique.push(d);
            }
        }
        Backup { databases: unique, base_dir }
    }
}

fn stem(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "database".into())
}

/// The instant in a backup file name `<stem>-<instant>.db`, if it is one of ours.
fn backup_instant(file_name: &str, stem: &str) -> Option<DateTime<Utc>> {
    let rest = file_name.strip_prefix(stem)?.strip_prefix('-')?.strip_suffix(".db")?;
    NaiveDateTime::parse_from_str(rest, STAMP).ok().map(|n| n.and_utc())
}

impl NativeJob for Backup {
    fn info(&self) -> JobInfo {
        JobInfo {
            name: "backup".into(),
            description: "Snapshots the SQLite databases (VACUUM INTO) and keeps N days of copies".into(),
            kind: JobKind::Single,
            default_schedule: "30 3 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: Vec::new(),
        }
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn run(&self, ctx: &mut NativeContext<'_>) -> Result<NativeOutcome, NativeError> {
        let dir = self.base_dir.join(ctx.arg("dir").unwrap_or("backups"));
        let days = days_arg(ctx, "retention_days", 7)?;
        let at = ctx.run.scheduled_for;
        let cutoff = at - TimeDelta::days(days);
        let dry_run = ctx.dry_run();
        if !dry_run {
            std::fs::create_dir_all(&dir).map_err(|e| {
                NativeError::Fatal(format!("cannot create the backup directory {}: {e}", dir.display()))
            })?;
        }
        let mut written = Vec::new();
        let mut bytes = 0u64;
        for db in &self.databases {
            if ctx.should_stop() {
                return Err(NativeError::Retryable("stopped before every database was copied".into()));
            }
            let target = dir.join(format!("{}-{}.db", stem(db), at.format(STAMP)));
            if dry_run {
                ctx.log(&format!("would copy {} to {}", db.display(), target.display()));
                written.push(target);
                continue;
            }
            if target.exists() {
                // This instant was already backed up (a retry): keep that copy.
                ctx.log(&format!("{} exists already; kept", target.display()));
                continue;
            }
            let partial = target.with_extension("db.partial");
            let _ = std::fs::remove_file(&partial);
            let copy = || -> Result<(), rusqlite::Error> {
                let conn = rusqlite::Connection::open_with_flags(db, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)?;
                conn.busy_timeout(std::time::Duration::from_secs(30))?;
                conn.execute("VACUUM INTO ?1", [partial.to_string_lossy().as_ref()])?;
                Ok(())
            };
            copy().map_err(|e| {
                let _ = std::fs::remove_file(&partial);
                NativeError::Retryable(format!("cannot copy {}: {e}", db.display()))
            })?;
            std::fs::rename(&partial, &target).map_err(|e| {
                NativeError::Retryable(format!("cannot move the copy into place at {}: {e}", target.display()))
            })?;
            let size = std::fs::metadata(&target).map(|m| m.len()).unwrap_or(0);
            bytes += size;
            ctx.log(&format!("copied {} to {} ({size} bytes)", db.display(), target.display()));
            written.push(target);
        }
        let mut removed = 0u64;
        if let Ok(entries) = std::fs::read_dir(&dir) {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let old = self
                    .databases
                    .iter()
                    .filter_map(|db| backup_instant(&name, &stem(db)))
                    .any(|instant| instant < cutoff);
                if !old {
                    continue;
                }
                if dry_run {
                    ctx.log(&format!("would delete {name} (older than {days} days)"));
                    removed += 1;
                } else if std::fs::remove_file(entry.path()).is_ok() {
                    ctx.log(&format!("deleted {name} (older than {days} days)"));
                    removed += 1;
                }
            }
        }
        let verb = if dry_run { "would copy" } else { "copied" };
        Ok(NativeOutcome {
            changed: written.len() as u64 + removed,
            message: Some(format!(
                "{verb} {} database{} to {} ({bytes} bytes), {} {removed} copies older than {days} days",
                written.len(),
                if written.len() == 1 { "" } else { "s" },
                dir.display(),
                if dry_run { "would delete" } else { "deleted" },
            )),
        })
    }
}

/// The built-in retention job: deletes finished executions (with their
/// failed and skipped items) older than `days` (default 90) from Sundial's
/// own database, and empties the captured logs of those older than
/// `log_days` (default: `days`). Enabled by a `[jobs.retention]` section.
/// Deletes in batches of [`RETENTION_BATCH`] rows, each its own short
/// transaction, so the store's writer is never held up for long. A dry run
/// counts and deletes nothing.
#[derive(Debug, Clone)]
pub struct Retention {
    /// Sundial's database.
    pub database: RetentionTarget,
}

/// Where Sundial's tables are, for [`Retention`].
#[derive(Clone)]
pub enum RetentionTarget {
    /// A SQLite file.
    Sqlite(PathBuf),
    /// A Postgres database (its URL; never shown, it may hold a password).
    Postgres(String),
}

impl std::fmt::Debug for RetentionTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RetentionTarget::Sqlite(p) => write!(f, "{}", p.display()),
            RetentionTarget::Postgres(url) => f.write_str(&crate::store::redact_url(url)),
        }
    }
}

/// A Postgres error with the server's message (the client's own says only "db error").
fn pg(e: postgres::Error) -> String {
    match e.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => e.to_string(),
    }
}

/// One connection to Sundial's database for [`Retention`]. Statements are
/// written for SQLite (`?1`, a text instant); on Postgres the parameter is
/// read as `timestamptz` and booleans are booleans.
enum RetentionDb {
    Sqlite(rusqlite::Connection),
    Postgres(Box<postgres::Client>),
}

impl RetentionDb {
    fn open(target: &RetentionTarget) -> Result<RetentionDb, String> {
        match target {
            RetentionTarget::Sqlite(path) => {
                let conn = rusqlite::Connection::open(path).map_err(|e| e.to_string())?;
                conn.busy_timeout(std::time::Duration::from_secs(30)).map_err(|e| e.to_string())?;
                conn.execute_batch("PRAGMA foreign_keys = ON").map_err(|e| e.to_string())?;
                Ok(RetentionDb::Sqlite(conn))
            }
            RetentionTarget::Postgres(url) => {
                postgres::Client::connect(url, postgres::NoTls).map(|c| RetentionDb::Postgres(Box::new(c))).map_err(pg)
            }
        }
    }

    fn pg(sql: &str) -> String {
        sql.replace("?1", "$1::text::timestamptz").replace("logs_truncated = 0", "logs_truncated = FALSE")
    }

    fn count(&mut self, sql: &str, at: &str) -> Result<i64, String> {
        match self {
            RetentionDb::Sqlite(c) => c.query_row(sql, [at], |r| r.get(0)).map_err(|e| e.to_string()),
            RetentionDb::Postgres(c) => {
                c.query_one(&RetentionDb::pg(sql), &[&at]).and_then(|r| r.try_get(0)).map_err(pg)
            }
        }
    }

    fn execute(&mut self, sql: &str, at: &str) -> Result<u64, String> {
        match self {
            RetentionDb::Sqlite(c) => c.execute(sql, [at]).map(|n| n as u64).map_err(|e| e.to_string()),
            RetentionDb::Postgres(c) => c.execute(&RetentionDb::pg(sql), &[&at]).map_err(pg),
        }
    }

    /// Runs the statements in one transaction; returns the last one's count.
    fn batch(&mut self, statements: &[&str], at: &str) -> Result<u64, String> {
        let mut n = 0;
        match self {
            RetentionDb::Sqlite(c) => {
                let tx = c.transaction().map_err(|e| e.to_string())?;
                for sql in statements {
                    n = tx.execute(sql, [at]).map_err(|e| e.to_string())? as u64;
                }
                tx.commit().map_err(|e| e.to_string())?;
            }
            RetentionDb::Postgres(c) => {
                let mut tx = c.transaction().map_err(pg)?;
                for sql in statements {
                    n = tx.execute(&RetentionDb::pg(sql), &[&at]).map_err(pg)?;
                }
                tx.commit().map_err(pg)?;
            }
        }
        Ok(n)
    }
}

/// Rows deleted per transaction.
pub const RETENTION_BATCH: i64 = 1000;

fn days_arg(ctx: &NativeContext<'_>, name: &str, default: i64) -> Result<i64, NativeError> {
    match ctx.arg(name) {
        None => Ok(default),
        Some(v) => {
            v.parse::<i64>().ok().filter(|d| *d >= 1).ok_or_else(|| {
                NativeError::Fatal(format!("{name} must be a whole number of days (1 or more), got {v:?}"))
            })
        }
    }
}

impl NativeJob for Retention {
    fn info(&self) -> JobInfo {
        JobInfo {
            name: "retention".into(),
            description: "Deletes execution history (and logs) older than N days".into(),
            kind: JobKind::Single,
            default_schedule: "45 3 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: Vec::new(),
        }
    }

    fn version(&self) -> String {
        env!("CARGO_PKG_VERSION").to_string()
    }

    fn run(&self, ctx: &mut NativeContext<'_>) -> Result<NativeOutcome, NativeError> {
        let days = days_arg(ctx, "days", 90)?;
        let log_days = days_arg(ctx, "log_days", days)?.min(days);
        let at = ctx.run.scheduled_for;
        let cutoff = crate::store::ts(at - TimeDelta::days(days));
        let log_cutoff = crate::store::ts(at - TimeDelta::days(log_days));
        let target = &self.database;
        let db = |e: String| NativeError::Retryable(format!("retention on {target:?}: {e}"));
        let mut conn = RetentionDb::open(target).map_err(db)?;
        // Finished rows only: a running or queued execution is never touched.
        const OLD: &str = "SELECT id FROM job_executions WHERE completed_at IS NOT NULL AND completed_at < ?1";
        if ctx.dry_run() {
            let mut count = |sql: &str, at: &str| -> Result<i64, NativeError> { conn.count(sql, at).map_err(db) };
            let executions = count(&format!("SELECT count(*) FROM ({OLD}) AS old"), &cutoff)?;
            let logs = count(
                "SELECT count(*) FROM job_executions WHERE completed_at IS NOT NULL AND completed_at < ?1 AND logs != ''",
                &log_cutoff,
            )?;
            return Ok(NativeOutcome {
                changed: 0,
                message: Some(format!(
                    "would delete {executions} executions older than {days} days and empty the logs of {logs} \
                     older than {log_days} days"
                )),
            });
        }
        let mut deleted = 0u64;
        loop {
            if ctx.should_stop() {
                return Err(NativeError::Retryable(format!("stopped after deleting {deleted} executions")));
            }
            let victims = format!("{OLD} ORDER BY id LIMIT {RETENTION_BATCH}");
            // Retries point at their first attempt: let a kept retry outlive it.
            let orphan = format!("UPDATE job_executions SET parent_id = NULL WHERE parent_id IN ({victims})");
            let delete = format!("DELETE FROM job_executions WHERE id IN ({victims})");
            let n = conn.batch(&[&orphan, &delete], &cutoff).map_err(db)?;
            deleted += n;
            if (n as i64) < RETENTION_BATCH {
                break;
            }
        }
        let mut emptied = 0u64;
        loop {
            if ctx.should_stop() {
                return Err(NativeError::Retryable(format!(
                    "stopped after deleting {deleted} executions and emptying {emptied} logs"
                )));
            }
            let n = conn
                .execute(
                    &format!(
                        "UPDATE job_executions SET logs = '', logs_truncated = 0 WHERE id IN (
                           SELECT id FROM job_executions
                           WHERE completed_at IS NOT NULL AND completed_at < ?1 AND logs != ''
                           ORDER BY id LIMIT {RETENTION_BATCH})"
                    ),
                    &log_cutoff,
                )
                .map_err(db)?;
            emptied += n;
            if (n as i64) < RETENTION_BATCH {
                break;
            }
        }
        let message = format!(
            "deleted {deleted} executions older than {days} days, emptied the logs of {emptied} older than {log_days} days"
        );
        ctx.log(&message);
        Ok(NativeOutcome { changed: deleted + emptied, message: Some(message) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_file_names_carry_an_instant() {
        assert_eq!(
            backup_instant("app-20261122T033000Z.db", "app"),
            Some(DateTime::parse_from_rfc3339("2026-11-22T03:30:00Z").unwrap().with_timezone(&Utc))
        );
        assert_eq!(backup_instant("app-20261122T033000Z.db.partial", "app"), None);
        assert_eq!(backup_instant("other-20261122T033000Z.db", "app"), None);
        assert_eq!(backup_instant("app-notes.db", "app"), None);
    }
}

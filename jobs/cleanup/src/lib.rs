//! `cleanup`: retention deletes in the application database (seed 000 §4,
//! seed 003 CleanupSessions).
//!
//! Deletes expired sessions and food entries soft-deleted more than
//! `retention_days` days (operator argument, default 30) before the scheduled
//! instant. Timestamps are ISO 8601 text in UTC (`2026-11-22T10:00:00Z`), which
//! compares correctly as text on every backend.

use sundial_guest::{Context, Job, JobError, JobInfo, Outcome, db, log, time};

struct Cleanup;

const DEFAULT_RETENTION_DAYS: i64 = 30;

impl Job for Cleanup {
    fn info() -> JobInfo {
        JobInfo::new(
            "cleanup",
            "Deletes expired sessions and food entries soft-deleted past the retention period",
            "15 3 * * *",
        )
        .read_write_database()
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let days =
            match ctx.arg("retention_days") {
                None => DEFAULT_RETENTION_DAYS,
                Some(v) => v.parse::<i64>().ok().filter(|d| *d >= 0).ok_or_else(|| {
                    JobError::fatal(format!("retention_days must be a whole number of days, got {v:?}"))
                })?,
            };
        let now = ctx.scheduled_for();
        let cutoff = iso_utc(now - days * 86_400_000)?;

        let sessions = db::execute("DELETE FROM sessions WHERE expires_at < $1", &[iso_utc(now)?.into()])?;
        let entries = db::execute(
            "DELETE FROM food_entries WHERE deleted_at IS NOT NULL AND deleted_at < $1",
            &[cutoff.as_str().into()],
        )?;
        log::info(&format!("deleted {sessions} expired sessions and {entries} food entries deleted before {cutoff}"));
        Ok(Outcome::changed(sessions + entries)
            .with_message(format!("{sessions} sessions, {entries} food entries deleted")))
    }
}

fn iso_utc(ms: i64) -> Result<String, JobError> {
    let t = time::to_local(ms, "UTC").map_err(JobError::fatal)?;
    Ok(format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.year, t.month, t.day, t.hour, t.minute, t.second))
}

sundial_guest::export_job!(Cleanup);

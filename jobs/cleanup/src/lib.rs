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

#[cfg(test)]
mod tests {
    use sundial_guest::testing::TestRun;
    use sundial_guest::{DbAccess, JobError, Value};

    use super::Cleanup;

    /// The application schema the example jobs work on.
    const SCHEMA: &str = include_str!("../../../host/src/demo/schema.sql");

    /// Run at 2026-03-01T03:15Z. Sessions: 1 expired, 2 expires later today.
    /// Food entries: 10 deleted 40 days before, 11 deleted 10 days before,
    /// 12 eaten long ago but never deleted.
    fn fixture() -> TestRun {
        TestRun::new()
            .sql(SCHEMA)
            .and_then(|t| {
                t.sql(
                    "INSERT INTO users (id, name, plan, timezone) VALUES (1, 'alice', 'PAID', 'UTC');
                     INSERT INTO sessions (id, user_id, token, expires_at) VALUES
                        (1, 1, 'old', '2026-03-01T03:14:59Z'),
                        (2, 1, 'new', '2026-03-01T12:00:00Z');
                     INSERT INTO food_entries (id, user_id, name, calories, eaten_at, deleted_at) VALUES
                        (10, 1, 'toast', 200, '2026-01-10T08:00:00Z', '2026-01-20T03:15:00Z'),
                        (11, 1, 'rice', 300, '2026-02-10T08:00:00Z', '2026-02-19T03:15:00Z'),
                        (12, 1, 'soup', 150, '2025-01-10T08:00:00Z', NULL);",
                )
            })
            .and_then(|t| t.scheduled_for("2026-03-01T03:15:00Z"))
            .unwrap()
    }

    fn ids(t: &TestRun, table: &str) -> Value {
        t.value(&format!("SELECT group_concat(id) FROM (SELECT id FROM {table} ORDER BY id)"), &[]).unwrap()
    }

    #[test]
    fn deletes_expired_sessions_and_entries_deleted_before_the_retention_period() {
        let mut t = fixture();
        let outcome = t.run::<Cleanup>().unwrap();
        assert_eq!(outcome.changed, 2);
        assert_eq!(outcome.message.as_deref(), Some("1 sessions, 1 food entries deleted"));
        assert_eq!(ids(&t, "sessions"), Value::from("2"));
        assert_eq!(ids(&t, "food_entries"), Value::from("11,12"), "30 days by default");
        assert_eq!(
            t.log_text(),
            "INFO deleted 1 expired sessions and 1 food entries deleted before 2026-01-30T03:15:00Z\n"
        );

        // Nothing is left to do on a second run.
        assert_eq!(t.run::<Cleanup>().unwrap().changed, 0);
    }

    #[test]
    fn retention_days_is_an_argument() {
        let mut t = fixture().arg("retention_days", "7");
        assert_eq!(t.run::<Cleanup>().unwrap().changed, 3);
        assert_eq!(ids(&t, "food_entries"), Value::from("12"));

        let mut t = fixture().arg("retention_days", "-1");
        let err = t.run::<Cleanup>().unwrap_err();
        assert_eq!(err, JobError::fatal("retention_days must be a whole number of days, got \"-1\""));
        assert_eq!(ids(&t, "sessions"), Value::from("1,2"), "nothing is deleted");
    }

    #[test]
    fn a_dry_run_reports_but_deletes_nothing() {
        let mut t = fixture().dry_run();
        assert_eq!(t.run::<Cleanup>().unwrap().changed, 2);
        assert_eq!(ids(&t, "sessions"), Value::from("1,2"));
        assert_eq!(ids(&t, "food_entries"), Value::from("10,11,12"));
    }

    #[test]
    fn a_read_only_grant_is_not_enough() {
        let mut t = fixture().grant_database(DbAccess::ReadOnly);
        let err = t.run::<Cleanup>().unwrap_err();
        assert_eq!(err, JobError::fatal("database access denied: this job has read-only database access"));
        assert_eq!(ids(&t, "sessions"), Value::from("1,2"));
    }
}

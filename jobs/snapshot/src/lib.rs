//! `snapshot`: fixes yesterday's nutrition target of every active user
//! (seed 000 §1-1, SnapshotActiveTargetForYesterdayJob).
//!
//! Past days must keep the target that applied then, even after the user
//! edits it: once a day this job makes sure every active user has a
//! `daily_target_snapshots` row for *yesterday*, copied from the user's active
//! target. A snapshot, once written, is never changed.
//!
//! - **Yesterday** is the run date minus one day. The run date is the local
//!   date of the scheduled instant in the job's time zone (UTC unless
//!   configured), or the operator's `--date D` — which therefore snapshots
//!   `D − 1`, exactly as a run on `D` would have.
//! - **Items**: every active user (`withdrawn_at IS NULL`), in id order.
//!   - no active target → skipped, reason `no active target`;
//!   - a snapshot for yesterday already exists → succeeds with nothing
//!     changed, so a second run reports 0 changed;
//!   - otherwise one row is inserted from the active target.
//! - **Speed**: the page query carries everything an item needs (the active
//!   target's values and whether the snapshot exists), so an item is at most
//!   one `INSERT` — no per-user `SELECT`. Pages are keyset-paginated on the
//!   user id and served by the primary key, the unique partial index on the
//!   active target and the `(user_id, date)` unique index of the snapshots.

use std::rc::Rc;

use sundial_guest::{Context, Item, ItemJob, JobError, JobInfo, Outcome, Page, db, time};

struct Snapshot;

/// Users per page: large enough that listing costs little per item, small
/// enough that a page is a few hundred kilobytes.
const PAGE: usize = 1000;

/// One page of active users with their active target and whether
/// yesterday's snapshot exists: `$1` after this user id, `$2` the date, `$3` the page size.
const LIST: &str = include_str!("list.sql");

/// One snapshot, unless it exists.
const INSERT: &str = include_str!("insert.sql");

impl ItemJob for Snapshot {
    fn info() -> JobInfo {
        JobInfo::new("snapshot", "Fixes yesterday's nutrition target of every active user", "10 0 * * *")
            .read_write_database()
    }

    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after = Page::after_id(cursor)?;
        let run = RunConsts::get(ctx)?;
        let rows = db::query(LIST, &[after.into(), run.yesterday.as_str().into(), (PAGE as i64).into()])?;
        Ok(Page::from_rows(rows, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let user = item.get(0).as_i64().ok_or_else(|| JobError::fatal(format!("item {} has no user id", item.key)))?;
        if item.get(6).as_i64() == Some(1) {
            return Ok(Outcome::unchanged());
        }
        let target = item.get(1);
        if target.is_null() {
            return Err(JobError::skip("no active target"));
        }
        let run = RunConsts::get(ctx)?;
        let inserted = db::execute(
            INSERT,
            &[
                user.into(),
                run.yesterday.as_str().into(),
                target.clone(),
                item.get(2).clone(),
                item.get(3).clone(),
                item.get(4).clone(),
                item.get(5).clone(),
                run.created_at.as_str().into(),
            ],
        )?;
        Ok(Outcome::changed(inserted))
    }
}

/// What every item of one execution shares, computed once per execution
/// ([`sundial_guest::per_execution`]) rather than with host calls per item.
struct RunConsts {
    yesterday: String,
    created_at: String,
}

impl RunConsts {
    fn get(ctx: &Context) -> Result<Rc<RunConsts>, JobError> {
        sundial_guest::per_execution(ctx, || {
            Ok(RunConsts {
                yesterday: ctx.run_date()?.add_days(-1).to_string(),
                created_at: time::iso_utc(time::now_ms()),
            })
        })
    }
}

sundial_guest::export_item_job!(Snapshot);

#[cfg(test)]
mod tests {
    use sundial_guest::testing::{RunStatus, TestRun};
    use sundial_guest::{DbError, JobError, Value};

    use super::Snapshot;

    /// The application schema the example jobs work on.
    const SCHEMA: &str = include_str!("../../../host/src/demo/schema.sql");

    /// Six users: 1 and 6 have an active target (1 also an older inactive
    /// one), 2 has no target, 3 only an inactive one, 4 withdrew, 5 already
    /// has yesterday's snapshot (from a target since changed). The run is
    /// the one scheduled for 2026-11-22T00:10Z, in UTC.
    fn fixture() -> TestRun {
        TestRun::new()
            .sql(SCHEMA)
            .and_then(|t| {
                t.sql(
                    "INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES
                        (1, 'alice', 'PAID', 'Asia/Tokyo', NULL),
                        (2, 'bob', 'FREE', 'UTC', NULL),
                        (3, 'carol', 'TRIAL', 'Europe/Berlin', NULL),
                        (4, 'dave', 'PAID', 'UTC', '2026-10-01T00:00:00Z'),
                        (5, 'erin', 'FREE', 'America/New_York', NULL),
                        (6, 'frank', 'TRIAL', 'Pacific/Auckland', NULL);
                     INSERT INTO targets (id, user_id, calories, protein_g, fat_g, carbs_g, active, created_at) VALUES
                        (10, 1, 1800, 100, 50, 230, 0, '2026-09-01T00:00:00Z'),
                        (11, 1, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z'),
                        (30, 3, 1600, 90, 45, 200, 0, '2026-08-01T00:00:00Z'),
                        (40, 4, 2100, 130, 60, 260, 1, '2026-09-01T00:00:00Z'),
                        (50, 5, 2200, 140, 60, 280, 1, '2026-11-20T00:00:00Z'),
                        (60, 6, 2500, 150, 70, 320, 1, '2026-11-01T00:00:00Z');
                     INSERT INTO daily_target_snapshots
                        (user_id, date, target_id, calories, protein_g, fat_g, carbs_g, created_at) VALUES
                        (5, '2026-11-21', 50, 1900, 110, 50, 240, '2026-11-21T00:10:00Z');",
                )
            })
            .and_then(|t| t.scheduled_for("2026-11-22T00:10:00Z"))
            .unwrap()
    }

    /// `user_id date target_id calories` of every snapshot, one per line.
    fn snapshots(t: &TestRun) -> Vec<String> {
        t.query(
            "SELECT user_id || ' ' || date || ' ' || target_id || ' ' || calories FROM daily_target_snapshots
             ORDER BY date, user_id",
            &[],
        )
        .unwrap()
        .into_iter()
        .map(|r| r.str(0).unwrap().to_string())
        .collect()
    }

    #[test]
    fn fixes_yesterdays_target_of_every_active_user_once() {
        let mut t = fixture().now("2026-11-22T00:10:02Z").unwrap();
        let report = t.run_items::<Snapshot>().unwrap();
        assert_eq!(report.status(), RunStatus::Succeeded);
        // The withdrawn user is not an item; users without an active target are skipped.
        assert_eq!((report.total(), report.ok, report.skipped, report.failed), (5, 3, 2, 0));
        assert_eq!(report.changed, 2, "users 1 and 6 get a snapshot; user 5 already had one");
        assert_eq!(
            report.problems(),
            [("2", &JobError::skip("no active target")), ("3", &JobError::skip("no active target"))]
        );
        assert_eq!(
            snapshots(&t),
            ["1 2026-11-21 11 2000", "5 2026-11-21 50 1900", "6 2026-11-21 60 2500"],
            "the active target is copied; an existing snapshot keeps its values"
        );
        let created = t.value("SELECT created_at FROM daily_target_snapshots WHERE user_id = 1", &[]).unwrap();
        assert_eq!(created, Value::from("2026-11-22T00:10:02Z"), "stamped with the host's clock");

        // The user edits the target afterwards: yesterday's snapshot does not follow.
        t.execute("UPDATE targets SET calories = 2400 WHERE id = 11", &[]).unwrap();
        let again = t.run_items::<Snapshot>().unwrap();
        assert_eq!((again.total(), again.ok, again.changed), (5, 3, 0));
        assert_eq!(snapshots(&t)[0], "1 2026-11-21 11 2000");
    }

    #[test]
    fn yesterday_is_in_the_jobs_time_zone_or_before_the_date_asked_for() {
        // 00:10 UTC on the 22nd is still the 21st in New York.
        let mut t = fixture().timezone("America/New_York").unwrap();
        assert_eq!(t.run_items::<Snapshot>().unwrap().changed, 3);
        assert!(snapshots(&t).iter().filter(|s| s.contains("2026-11-20")).count() == 3);

        let mut t = fixture().date("2026-11-10").unwrap();
        assert_eq!(t.run_items::<Snapshot>().unwrap().changed, 3);
        let backfilled: Vec<_> = snapshots(&t).into_iter().filter(|s| s.contains("2026-11-09")).collect();
        assert_eq!(backfilled, ["1 2026-11-09 11 2000", "5 2026-11-09 50 2200", "6 2026-11-09 60 2500"]);
    }

    #[test]
    fn a_failing_user_is_rolled_back_and_the_others_go_on() {
        let mut t = fixture()
            .sql(
                "CREATE TRIGGER frozen BEFORE INSERT ON daily_target_snapshots WHEN NEW.user_id = 1
                 BEGIN SELECT RAISE(ABORT, 'snapshots of user 1 are frozen'); END;",
            )
            .unwrap();
        let report = t.run_items::<Snapshot>().unwrap();
        assert_eq!(report.status(), RunStatus::Partial);
        assert_eq!((report.total(), report.ok, report.skipped, report.failed), (5, 2, 2, 1));
        let expected = JobError::from(DbError::Constraint("snapshots of user 1 are frozen".into()));
        assert_eq!(report.result("1"), Some(&Err(expected)));
        assert_eq!(snapshots(&t), ["5 2026-11-21 50 1900", "6 2026-11-21 60 2500"]);

        // Once the cause is gone, a re-run does exactly the missing user.
        t.execute("DROP TRIGGER frozen", &[]).unwrap();
        assert_eq!(t.run_items::<Snapshot>().unwrap().changed, 1);
        assert_eq!(snapshots(&t).len(), 3);
    }

    #[test]
    fn a_dry_run_writes_nothing() {
        let mut t = fixture().dry_run();
        let report = t.run_items::<Snapshot>().unwrap();
        assert_eq!(report.changed, 2);
        assert_eq!(snapshots(&t), ["5 2026-11-21 50 1900"]);
    }
}

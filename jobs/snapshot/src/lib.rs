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

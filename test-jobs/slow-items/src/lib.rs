//! Test fixture: an item job over the `users` table, pages of ten, that waits
//! `delay_ms` (argument, default 0) before recording each user in `visits`
//! (created by the test) with the execution that did it. Used to stop a run
//! part-way (deadline, `kill -9`) and check what the next attempt does, and
//! to watch progress: the first page reports the number of users as the total.

use sundial_guest::{Context, Item, ItemJob, JobError, JobInfo, Outcome, Page, db, progress};

struct SlowItems;

const PAGE: usize = 10;

impl ItemJob for SlowItems {
    fn info() -> JobInfo {
        JobInfo::new("slow-items", "Resume fixture", "0 0 1 1 *").read_write_database()
    }

    fn items(_ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after: i64 = cursor.map(|c| c.parse().unwrap_or(0)).unwrap_or(0);
        if cursor.is_none() {
            let total = db::query_opt("SELECT COUNT(*) FROM users", &[])?;
            let total = total.and_then(|r| r.get(0).as_i64()).unwrap_or(0);
            progress::report(0, Some(u64::try_from(total).unwrap_or(0)));
        }
        let rows = db::query(
            "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2",
            &[after.into(), (PAGE as i64).into()],
        )?;
        Ok(Page::from_rows(rows, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let id = item.get(0).as_i64().ok_or_else(|| JobError::fatal("no id"))?;
        let delay: u64 = ctx.arg("delay_ms").and_then(|d| d.parse().ok()).unwrap_or(0);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        db::execute(
            "INSERT INTO visits (user_id, execution_id) VALUES ($1, $2)",
            &[id.into(), ctx.execution_id.into()],
        )?;
        Ok(Outcome::changed(1))
    }
}

sundial_guest::export_item_job!(SlowItems);

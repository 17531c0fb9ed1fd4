//! Test fixture: an item job over the demo `users` table. Each user is
//! recorded in `processed` (created by the test); users whose id is a multiple of 5 fail after
//! writing (so their write must be rolled back), multiples of 7 are skipped,
//! and id 11 traps. With the operator argument `state`, it also counts the
//! pages it lists and the items it starts (before they fail or trap) in its
//! key-value state, under "pages" and "items".

use sundial_guest::{Context, Item, ItemJob, JobError, JobInfo, Outcome, Page, db, state};

struct FlakyItems;

const PAGE: usize = 7;

impl ItemJob for FlakyItems {
    fn info() -> JobInfo {
        JobInfo::new("flaky-items", "Per-item isolation fixture", "0 0 1 1 *").read_write_database()
    }

    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        if ctx.arg("state").is_some() {
            count("pages")?;
        }
        let after: i64 = cursor.map(|c| c.parse().unwrap_or(0)).unwrap_or(0);
        let rows = db::query(
            "SELECT id FROM users WHERE id > $1 ORDER BY id LIMIT $2",
            &[after.into(), (PAGE as i64).into()],
        )?;
        Ok(Page::from_rows(rows, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let id = item.get(0).as_i64().ok_or_else(|| JobError::fatal("no id"))?;
        if id % 7 == 0 {
            return Err(JobError::skip("multiple of seven"));
        }
        if ctx.arg("state").is_some() {
            count("items")?;
        }
        db::execute("INSERT INTO processed (user_id) VALUES ($1)", &[id.into()])?;
        if id == 11 {
            std::process::abort();
        }
        if id % 5 == 0 {
            return Err(JobError::fatal(format!("user {id} failed after writing")));
        }
        Ok(Outcome::changed(1))
    }
}

/// Adds one to the counter `key` in the job's state.
fn count(key: &str) -> Result<(), JobError> {
    let n: u64 = match state::get(key).map_err(JobError::fatal)? {
        Some(b) => String::from_utf8_lossy(&b).parse().unwrap_or(0),
        None => 0,
    };
    state::set(key, (n + 1).to_string().as_bytes()).map_err(JobError::fatal)
}

sundial_guest::export_item_job!(FlakyItems);

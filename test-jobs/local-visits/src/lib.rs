//! Test fixture: an item job scheduled in its users' local time. It lists the
//! users of the execution's group — `users.timezone` in [`Context::zones`],
//! or `(timezone, delivery_time)` in [`Context::slots`] when users chose
//! their own time; every user when neither is given — and records each in
//! `visits` (created by the test) with the user's local date and time of the
//! scheduled instant and the execution that did it, after `delay_ms`
//! (argument, default 0).

use sundial_guest::{Context, Item, ItemJob, JobError, JobInfo, Outcome, Page, Value, db, time};

struct LocalVisits;

const PAGE: usize = 500;

impl ItemJob for LocalVisits {
    fn info() -> JobInfo {
        JobInfo::new("local-visits", "Item-local scheduling fixture", "0 2 * * *").read_write_database()
    }

    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after = Page::after_id(cursor)?;
        let mut sql = String::from("SELECT id, timezone FROM users WHERE id > $1");
        let mut params: Vec<Value> = vec![after.into(), (PAGE as i64).into()];
        if let Some(slots) = ctx.slots() {
            let mut pairs = Vec::new();
            for (zone, at) in slots {
                params.push(zone.into());
                params.push(at.into());
                pairs.push(format!("(timezone = ${} AND delivery_time = ${})", params.len() - 1, params.len()));
            }
            sql.push_str(&format!(" AND ({})", pairs.join(" OR ")));
        } else if let Some(zones) = ctx.zones() {
            sql.push_str(&format!(" AND timezone IN ({})", db::bind_list(&mut params, zones)));
        }
        sql.push_str(" ORDER BY id LIMIT $2");
        Ok(Page::from_rows(db::query(&sql, &params)?, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let id = item.get(0).as_i64().ok_or_else(|| JobError::fatal("no id"))?;
        let zone = item.get(1).as_str().ok_or_else(|| JobError::fatal("no time zone"))?;
        let delay: u64 = ctx.arg("delay_ms").and_then(|d| d.parse().ok()).unwrap_or(0);
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let local = time::to_local(ctx.scheduled_for(), zone).map_err(JobError::fatal)?;
        db::execute(
            "INSERT INTO visits (user_id, local_date, local_time, execution_id) VALUES ($1, $2, $3, $4)",
            &[
                id.into(),
                format!("{:04}-{:02}-{:02}", local.year, local.month, local.day).into(),
                format!("{:02}:{:02}", local.hour, local.minute).into(),
                ctx.execution_id.into(),
            ],
        )?;
        Ok(Outcome::changed(1))
    }
}

sundial_guest::export_item_job!(LocalVisits);

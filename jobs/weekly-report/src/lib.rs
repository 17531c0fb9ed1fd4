//! `weekly-report`: each TRIAL/PAID user's weekly training report and a naive
//! prediction, early on Monday in the user's own time zone (seed 002, weekly
//! job).
//!
//! The job runs every hour (`0 * * * *`) so that every zone passes through
//! the report window, **Monday 03:00–05:59 local** — three hours, so one
//! missed hourly run (a deploy, an outage) loses nothing.
//!
//! - **Items**: active (`withdrawn_at IS NULL`) TRIAL/PAID users whose local
//!   time at the scheduled instant is in the window, in id order. The zones in
//!   the window are worked out once per run from the distinct zones of
//!   `users`; users elsewhere are *not listed* (rather than skipped), so the
//!   item counts are the users reported on, and the many hourly runs a week
//!   that find nobody report 0 items instead of millions of skips. A zone the host does not know is logged as a warning
//!   and its users are never in the window.
//! - **Week**: Monday..Sunday before the local Monday of the run:
//!   `week_start = Monday − 7 days`, bounded by local midnights in the user's
//!   zone (so a week across a DST change has 167 or 169 hours).
//! - **Report**: finalized workouts (`completed` or `partial`) in the week —
//!   count, completed count, minutes — and a prediction (JSON text): next
//!   week's workouts as `(2 × this week + mean of the 3 weeks before) / 3`,
//!   minutes at this week's mean duration, and a trend (`up`, `down`,
//!   `steady`: this week against the earlier mean, ±0.5).
//! - **Idempotent** on `(user_id, week_start)`: a user whose report exists
//!   (the next hourly run inside the window) succeeds with nothing changed.
//! - **In each user's local time**: with `schedule = "0 3 * * MON"` and
//!   `item_zones_query = "SELECT DISTINCT timezone FROM users"` the host runs
//!   the job once per group of zones reaching Monday 03:00 together, instead
//!   of hourly; each run lists only its group's users (`ctx.zones()`).
//! - **`--date D`** acts as if it were `D` 03:00 local for every user: all
//!   active TRIAL/PAID users are listed, for the week starting `D − 7`. `D`
//!   must be a Monday, else the run fails saying so.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

use sundial_guest::time::LocalDateTime;
use sundial_guest::{Context, Date, Item, ItemJob, JobError, JobInfo, Outcome, Page, Value, db, log, time};

struct WeeklyReport;

const PAGE: usize = 1000;

/// The report window, local hours `[START, END)` on Monday.
const WINDOW_START_HOUR: u8 = 3;
const WINDOW_END_HOUR: u8 = 6;

/// Weeks before the reported one that the prediction averages.
const HISTORY_WEEKS: i64 = 3;

const LIST: &str = "\
    SELECT u.id, u.timezone, \
           CASE WHEN EXISTS (SELECT 1 FROM weekly_reports w WHERE w.user_id = u.id AND w.week_start = $2) \
                THEN 1 ELSE 0 END \
    FROM users u \
    WHERE u.id > $1 AND u.withdrawn_at IS NULL AND u.plan IN ('TRIAL', 'PAID')";

const WEEK: &str = "\
    SELECT COALESCE(SUM(CASE WHEN finalized_at >= $2 THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN finalized_at >= $2 AND status = 'completed' THEN 1 ELSE 0 END), 0), \
           COALESCE(SUM(CASE WHEN finalized_at >= $2 THEN duration_minutes ELSE 0 END), 0), \
           COUNT(*) \
    FROM workouts \
    WHERE user_id = $1 AND status IN ('completed', 'partial') AND finalized_at >= $3 AND finalized_at < $4";

const INSERT: &str = "\
    INSERT INTO weekly_reports (user_id, week_start, workouts, completed_workouts, minutes, prediction, created_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7) \
    ON CONFLICT (user_id, week_start) DO NOTHING";

impl ItemJob for WeeklyReport {
    fn info() -> JobInfo {
        JobInfo::new(
            "weekly-report",
            "Writes each TRIAL and PAID user's weekly training report early on Monday, local time",
            "0 * * * *",
        )
        .read_write_database()
    }

    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after = Page::after_id(cursor)?;
        let run = RunConsts::get(ctx)?;
        let Some(week_start) = run.week_start else {
            return Ok(Page::default());
        };
        let mut sql = String::from(LIST);
        let mut params: Vec<Value> = vec![after.into(), week_start.into(), (PAGE as i64).into()];
        if let Some(zones) = &run.zones {
            sql.push_str(&format!(
                " AND u.timezone IN ({})",
                db::bind_list(&mut params, zones.iter().map(String::as_str))
            ));
        }
        sql.push_str(" ORDER BY u.id LIMIT $3");
        let rows = db::query(&sql, &params)?;
        Ok(Page::from_rows(rows, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let user = item.get(0).as_i64().ok_or_else(|| JobError::fatal(format!("item {} has no user id", item.key)))?;
        if item.get(2).as_i64() == Some(1) {
            return Ok(Outcome::unchanged());
        }
        let zone = item.get(1).as_str().ok_or_else(|| JobError::fatal(format!("user {user} has no time zone")))?;
        let run = RunConsts::get(ctx)?;
        let week_start = run.week_start.ok_or_else(|| JobError::fatal("no week to report on"))?;
        let bounds = run.bounds(zone, week_start).map_err(|e| JobError::fatal(format!("user {user}: {e}")))?;

        let row = db::query_opt(
            WEEK,
            &[
                user.into(),
                bounds.start.as_str().into(),
                bounds.history_start.as_str().into(),
                bounds.end.as_str().into(),
            ],
        )?
        .ok_or_else(|| JobError::fatal("the weekly aggregate returned no row"))?;
        let workouts = row.i64(0).unwrap_or(0);
        let completed = row.i64(1).unwrap_or(0);
        let minutes = row.i64(2).unwrap_or(0);
        let earlier = row.i64(3).unwrap_or(0) - workouts;

        let inserted = db::execute(
            INSERT,
            &[
                user.into(),
                week_start.into(),
                workouts.into(),
                completed.into(),
                minutes.into(),
                prediction(workouts, minutes, earlier).into(),
                run.created_at.as_str().into(),
            ],
        )?;
        Ok(Outcome::changed(inserted))
    }
}

/// Next week's workouts, minutes and the trend, as JSON text.
fn prediction(workouts: i64, minutes: i64, earlier_workouts: i64) -> String {
    let this = workouts as f64;
    let before = earlier_workouts as f64 / HISTORY_WEEKS as f64;
    let next = ((2.0 * this + before) / 3.0 * 10.0).round() / 10.0;
    let per_workout = if workouts > 0 { minutes as f64 / this } else { 0.0 };
    let trend = if this > before + 0.5 {
        "up"
    } else if this < before - 0.5 {
        "down"
    } else {
        "steady"
    };
    format!(
        r#"{{"next_week_workouts":{next:.1},"next_week_minutes":{},"trend":"{trend}"}}"#,
        (next * per_workout).round() as i64
    )
}

/// A user zone's week as UTC text: `[start, end)`, and where the
/// prediction's history begins.
struct Bounds {
    history_start: String,
    start: String,
    end: String,
}

/// What every item of one execution shares, computed once per execution
/// ([`sundial_guest::per_execution`]).
struct RunConsts {
    /// The Monday the reported week starts on; `None` when no zone is in the window.
    week_start: Option<Date>,
    /// The zones in the window; `None` for every zone (`--date`).
    zones: Option<Vec<String>>,
    created_at: String,
    /// Week bounds per zone, computed on first use.
    bounds: RefCell<HashMap<String, Rc<Bounds>>>,
}

impl RunConsts {
    fn get(ctx: &Context) -> Result<Rc<RunConsts>, JobError> {
        sundial_guest::per_execution(ctx, || {
            let (week_start, zones) = match &ctx.date {
                Some(_) => {
                    let monday = ctx.run_date()?;
                    if monday.weekday() != 1 {
                        return Err(JobError::fatal(format!(
                            "--date {monday} is not a Monday: weekly-report runs as of a Monday 03:00 local time \
                         and reports on the week before it"
                        )));
                    }
                    (Some(monday.add_days(-7)), None)
                }
                None => {
                    let (monday, zones) = zones_in_window(ctx.scheduled_for(), ctx.zones())?;
                    (monday.map(|m| m.add_days(-7)), Some(zones))
                }
            };
            Ok(RunConsts {
                week_start,
                zones,
                created_at: time::iso_utc(time::now_ms()),
                bounds: RefCell::new(HashMap::new()),
            })
        })
    }

    fn bounds(&self, zone: &str, week_start: Date) -> Result<Rc<Bounds>, String> {
        if let Some(b) = self.bounds.borrow().get(zone) {
            return Ok(b.clone());
        }
        let b = Rc::new(Bounds {
            history_start: time::iso_utc(midnight(week_start.add_days(-7 * HISTORY_WEEKS), zone)?),
            start: time::iso_utc(midnight(week_start, zone)?),
            end: time::iso_utc(midnight(week_start.add_days(7), zone)?),
        });
        self.bounds.borrow_mut().insert(zone.to_string(), b.clone());
        Ok(b)
    }
}

/// The zones of `users` — or of the execution's group, when the host runs
/// the job in its users' local time (`item_zones_query`) — whose local time
/// at `instant` is Monday 03:00–05:59, and that Monday (the same date in
/// every such zone: their clocks are all within three hours of each other).
fn zones_in_window(instant: i64, group: Option<Vec<&str>>) -> Result<(Option<Date>, Vec<String>), JobError> {
    let mut monday = None;
    let mut zones = Vec::new();
    let candidates: Vec<String> = match group {
        Some(group) => group.into_iter().map(str::to_string).collect(),
        None => db::query("SELECT DISTINCT timezone FROM users", &[])?
            .into_iter()
            .filter_map(|row| row.str(0).map(str::to_string))
            .collect(),
    };
    for zone in &candidates {
        let zone = zone.as_str();
        match time::to_local(instant, zone) {
            Ok(l) if l.weekday == 1 && (WINDOW_START_HOUR..WINDOW_END_HOUR).contains(&l.hour) => {
                monday = Some(Date::new(l.year, l.month, l.day));
                zones.push(zone.to_string());
            }
            Ok(_) => {}
            Err(e) => log::warn(&format!("users with time zone {zone:?} are never in the report window: {e}")),
        }
    }
    Ok((monday, zones))
}

/// The instant local midnight starts `date` in `zone`.
fn midnight(date: Date, zone: &str) -> Result<i64, String> {
    let (year, month, day) = date.ymd();
    let local = LocalDateTime { year, month, day, hour: 0, minute: 0, second: 0, weekday: 0, offset_seconds: 0 };
    time::from_local(local, zone).map_err(|e| format!("midnight of {date} in time zone {zone:?}: {e}"))
}

sundial_guest::export_item_job!(WeeklyReport);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prediction_weighs_this_week_and_names_the_trend() {
        assert_eq!(prediction(4, 160, 3), r#"{"next_week_workouts":3.0,"next_week_minutes":120,"trend":"up"}"#);
        assert_eq!(prediction(0, 0, 9), r#"{"next_week_workouts":1.0,"next_week_minutes":0,"trend":"down"}"#);
        assert_eq!(prediction(3, 90, 9), r#"{"next_week_workouts":3.0,"next_week_minutes":90,"trend":"steady"}"#);
    }
}

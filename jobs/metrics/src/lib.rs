//! `metrics`: nightly behaviour metrics per active user (seed 002, nightly
//! job), so the coach has fresh numbers when users open the app.
//!
//! - **Reference instant** `T`: the scheduled instant; with `--date D`, the
//!   end of `D` (midnight after it) in the job's time zone (UTC unless
//!   configured), so a backfill sees the whole day.
//! - **Items**: active users — not withdrawn, with at least one finalized
//!   workout (status `completed` or `partial`, `finalized_at` in the 30 days
//!   `(T − 30 d, T]`) — in id order. Users who did not train are not listed.
//! - **Metrics date**: the user's local date at `T` in the user's own time
//!   zone (a user in Auckland is a day ahead of one in Los Angeles at the same
//!   instant); with `--date D`, `D` for everyone.
//! - **Metrics** (finalized workouts only): workouts and minutes in the last
//!   7 and 30 days before `T`, the number of distinct local days trained in the
//!   30 days, the streak of consecutive local days trained ending on the
//!   metrics date (or the day before, so a streak is not broken before the
//!   user's day is over), and the last workout's `finalized_at`.
//! - **Write**: an upsert on `(user_id, metrics_date)`; a row whose values
//!   are already right is left untouched and counts as unchanged, so a second
//!   run at the same instant reports 0 changed.
//! - **In each user's local time**: with `item_zones_query` the host runs the
//!   job once per group of zones reaching the scheduled local time (02:00)
//!   together; each run lists only its group's users (`ctx.zones()`), whose
//!   metrics date is their local today.
//! - A user with an unknown time zone or unreadable workout times fails
//!   alone, with the reason; the others go on.

use std::collections::BTreeSet;
use std::rc::Rc;

use sundial_guest::time::LocalDateTime;
use sundial_guest::{Context, Date, Item, ItemJob, JobError, JobInfo, Outcome, Page, Value, db, time};

struct Metrics;

const PAGE: usize = 1000;
const DAY_MS: i64 = 86_400_000;

const LIST: &str = "\
    SELECT u.id, u.timezone FROM users u \
    WHERE u.id > $1 AND u.withdrawn_at IS NULL \
      AND EXISTS (SELECT 1 FROM workouts w WHERE w.user_id = u.id AND w.status IN ('completed', 'partial') \
                  AND w.finalized_at > $2 AND w.finalized_at <= $3)";

const WORKOUTS: &str = "\
    SELECT finalized_at, duration_minutes FROM workouts \
    WHERE user_id = $1 AND status IN ('completed', 'partial') AND finalized_at > $2 AND finalized_at <= $3";

// `IS DISTINCT FROM` compares NULLs as values: a row is rewritten only when a
// metric changed (SQLite and Postgres alike).
const UPSERT: &str = "\
    INSERT INTO user_behavior_metrics (user_id, metrics_date, workouts_7d, workouts_30d, minutes_7d, minutes_30d, \
                                       active_days_30d, streak_days, last_workout_at, computed_at) \
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10) \
    ON CONFLICT (user_id, metrics_date) DO UPDATE SET \
        workouts_7d = excluded.workouts_7d, workouts_30d = excluded.workouts_30d, \
        minutes_7d = excluded.minutes_7d, minutes_30d = excluded.minutes_30d, \
        active_days_30d = excluded.active_days_30d, streak_days = excluded.streak_days, \
        last_workout_at = excluded.last_workout_at, computed_at = excluded.computed_at \
    WHERE user_behavior_metrics.workouts_7d IS DISTINCT FROM excluded.workouts_7d \
       OR user_behavior_metrics.workouts_30d IS DISTINCT FROM excluded.workouts_30d \
       OR user_behavior_metrics.minutes_7d IS DISTINCT FROM excluded.minutes_7d \
       OR user_behavior_metrics.minutes_30d IS DISTINCT FROM excluded.minutes_30d \
       OR user_behavior_metrics.active_days_30d IS DISTINCT FROM excluded.active_days_30d \
       OR user_behavior_metrics.streak_days IS DISTINCT FROM excluded.streak_days \
       OR user_behavior_metrics.last_workout_at IS DISTINCT FROM excluded.last_workout_at";

impl ItemJob for Metrics {
    fn info() -> JobInfo {
        JobInfo::new("metrics", "Computes per-user behaviour metrics for the user's local date", "0 2 * * *")
            .read_write_database()
    }

    fn items(ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after = Page::after_id(cursor)?;
        let run = RunConsts::get(ctx)?;
        let mut sql = String::from(LIST);
        let mut params: Vec<Value> =
            vec![after.into(), run.since_30d.as_str().into(), run.until.as_str().into(), (PAGE as i64).into()];
        if let Some(zones) = ctx.zones() {
            sql.push_str(&format!(" AND u.timezone IN ({})", db::bind_list(&mut params, zones)));
        }
        sql.push_str(" ORDER BY u.id LIMIT $4");
        Ok(Page::from_rows(db::query(&sql, &params)?, PAGE))
    }

    fn run_item(ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        let user = item.get(0).as_i64().ok_or_else(|| JobError::fatal(format!("item {} has no user id", item.key)))?;
        let zone = item.get(1).as_str().ok_or_else(|| JobError::fatal(format!("user {user} has no time zone")))?;
        let run = RunConsts::get(ctx)?;
        let local_date = |ms: i64| {
            time::local_date(ms, zone)
                .map_err(|e| JobError::fatal(format!("user {user} has an unusable time zone {zone:?}: {e}")))
        };
        let metrics_date = match run.fixed_date {
            Some(d) => d,
            None => local_date(run.until_ms)?,
        };

        let rows = db::query(WORKOUTS, &[user.into(), run.since_30d.as_str().into(), run.until.as_str().into()])?;
        let mut m = Summary::default();
        let mut days = BTreeSet::new();
        for row in rows {
            let at = row.str(0).unwrap_or_default();
            let ms = parse_iso_utc(at)
                .ok_or_else(|| JobError::fatal(format!("user {user}: unreadable workout finalized_at {at:?}")))?;
            let minutes = row.i64(1).unwrap_or(0);
            m.workouts_30d += 1;
            m.minutes_30d += minutes;
            if at > run.since_7d.as_str() {
                m.workouts_7d += 1;
                m.minutes_7d += minutes;
            }
            if m.last.as_deref().is_none_or(|l| at > l) {
                m.last = Some(at.to_string());
            }
            days.insert(local_date(ms)?);
        }
        let mut day = if days.contains(&metrics_date) { metrics_date } else { metrics_date.add_days(-1) };
        let mut streak = 0_i64;
        while days.contains(&day) {
            streak += 1;
            day = day.add_days(-1);
        }

        let changed = db::execute(
            UPSERT,
            &[
                user.into(),
                metrics_date.into(),
                m.workouts_7d.into(),
                m.workouts_30d.into(),
                m.minutes_7d.into(),
                m.minutes_30d.into(),
                (days.len() as i64).into(),
                streak.into(),
                m.last.into(),
                run.computed_at.as_str().into(),
            ],
        )?;
        Ok(Outcome::changed(changed))
    }
}

#[derive(Default)]
struct Summary {
    workouts_7d: i64,
    workouts_30d: i64,
    minutes_7d: i64,
    minutes_30d: i64,
    last: Option<String>,
}

/// What every item of one execution shares, computed once per execution
/// ([`sundial_guest::per_execution`]).
struct RunConsts {
    until_ms: i64,
    until: String,
    since_7d: String,
    since_30d: String,
    fixed_date: Option<Date>,
    computed_at: String,
}

impl RunConsts {
    fn get(ctx: &Context) -> Result<Rc<RunConsts>, JobError> {
        sundial_guest::per_execution(ctx, || {
            let (until_ms, fixed_date) = match &ctx.date {
                None => (ctx.scheduled_for(), None),
                Some(_) => {
                    let date = ctx.run_date()?;
                    (midnight(date.add_days(1), &ctx.timezone)?, Some(date))
                }
            };
            Ok(RunConsts {
                until_ms,
                until: time::iso_utc(until_ms),
                since_7d: time::iso_utc(until_ms - 7 * DAY_MS),
                since_30d: time::iso_utc(until_ms - 30 * DAY_MS),
                fixed_date,
                computed_at: time::iso_utc(time::now_ms()),
            })
        })
    }
}

/// The instant local midnight starts `date` in `zone`.
fn midnight(date: Date, zone: &str) -> Result<i64, JobError> {
    let (year, month, day) = date.ymd();
    let local = LocalDateTime { year, month, day, hour: 0, minute: 0, second: 0, weekday: 0, offset_seconds: 0 };
    time::from_local(local, zone).map_err(|e| JobError::fatal(format!("midnight of {date} in {zone:?}: {e}")))
}

/// Milliseconds since the epoch of `YYYY-MM-DDTHH:MM:SS[.fff]Z` (the
/// application's UTC text; a missing `Z` is read as UTC too).
fn parse_iso_utc(s: &str) -> Option<i64> {
    let date = Date::parse(s.get(..10)?)?;
    if s.get(10..11)? != "T" {
        return None;
    }
    let field = |r: std::ops::Range<usize>, max: i64| s.get(r)?.parse::<i64>().ok().filter(|v| (0..=max).contains(v));
    let (h, m, sec) = (field(11..13, 23)?, field(14..16, 59)?, field(17..19, 60)?);
    if s.get(13..14)? != ":" || s.get(16..17)? != ":" {
        return None;
    }
    let rest = s.get(19..)?.trim_end_matches('Z');
    let millis = match rest.strip_prefix('.') {
        None if rest.is_empty() => 0,
        None => return None,
        Some(frac) if !frac.is_empty() && frac.bytes().all(|b| b.is_ascii_digit()) => {
            frac.bytes().chain(std::iter::repeat(b'0')).take(3).fold(0, |acc, b| acc * 10 + i64::from(b - b'0'))
        }
        Some(_) => return None,
    };
    let days = date_days(date);
    Some(days * DAY_MS + (h * 3600 + m * 60 + sec) * 1000 + millis)
}

/// Days since 1970-01-01 of `date` (Howard Hinnant's `days_from_civil`).
fn date_days(date: Date) -> i64 {
    let (y, m, d) = date.ymd();
    let (m, d) = (i64::from(m), i64::from(d));
    let y = i64::from(y) - i64::from(m <= 2);
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let doy = (153 * ((m + 9) % 12) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

sundial_guest::export_item_job!(Metrics);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iso_text_round_trips() {
        for ms in [0, 1_795_341_600_000, 1_795_341_599_000, -86_400_000, 951_782_400_000] {
            assert_eq!(parse_iso_utc(&time::iso_utc(ms)), Some(ms), "{}", time::iso_utc(ms));
        }
        assert_eq!(time::iso_utc(1_795_341_600_000), "2026-11-22T10:00:00Z");
        assert_eq!(parse_iso_utc("2026-11-22T10:00:00.25Z"), Some(1_795_341_600_250));
        assert_eq!(parse_iso_utc("2026-11-22 10:00:00"), None);
        assert_eq!(parse_iso_utc("2026-11-22T10:00:00+09:00"), None);
        assert_eq!(parse_iso_utc("2026-11-22"), None);
    }
}

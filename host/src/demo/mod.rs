//! `sundial demo`: an application database with realistic synthetic data for
//! the example jobs (`cleanup`, `snapshot`, `recommendation`, `metrics`,
//! `weekly-report`). Deterministic (a fixed-seed generator), so a demo run and
//! a test see the same shape of data, and the counts [`seed`] returns say what
//! each job should find when it runs at `now`.
//!
//! Dates relative to `now` are UTC calendar dates (the jobs' default zone):
//! "today" is `now`'s UTC date, "yesterday" the day before.
//!
//! The seeder is synchronous and writes everything in one transaction with
//! prepared statements; a million users (about 19 million rows, 1.4 GB) take
//! under half a minute in a release build on two cores (the benchmarks seed
//! with it).

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Duration, NaiveDate, Utc};
use rusqlite::{Connection, Statement, params};

use crate::store::appdb::AppDbOpenError;

/// The application schema.
pub const SCHEMA: &str = include_str!("schema.sql");

/// The tables [`SCHEMA`] creates, children first (the order they are dropped in).
const TABLES: &[&str] = &[
    "weekly_reports",
    "user_behavior_metrics",
    "workouts",
    "meal_recommendations",
    "daily_nutrition_reports",
    "daily_target_snapshots",
    "targets",
    "food_entries",
    "sessions",
    "users",
];

/// Zones users live in (half-hour and 45-minute offsets included).
pub const ZONES: &[&str] = &[
    "UTC",
    "Asia/Tokyo",
    "America/New_York",
    "Europe/London",
    "Europe/Berlin",
    "Asia/Kolkata",
    "Asia/Kathmandu",
    "Australia/Adelaide",
    "Australia/Lord_Howe",
    "America/St_Johns",
    "America/Los_Angeles",
    "Pacific/Auckland",
    "Pacific/Chatham",
    "America/Sao_Paulo",
];

/// What `seed` created, and what each example job should find when it runs
/// at `now` with its default (UTC) time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DemoCounts {
    /// Users.
    pub users: u64,
    /// Sessions, of which `expired_sessions` are past `expires_at`.
    pub sessions: u64,
    /// Expired sessions.
    pub expired_sessions: u64,
    /// Food entries, of which `old_deleted_entries` were soft-deleted more than 30 days ago.
    pub food_entries: u64,
    /// Entries soft-deleted more than 30 days before `now`.
    pub old_deleted_entries: u64,
    /// Users not withdrawn (`withdrawn_at IS NULL`): the snapshot job's items.
    pub active_users: u64,
    /// Active users on the TRIAL or PAID plan: the recommendation job's items.
    pub premium_active_users: u64,
    /// Targets, active and inactive.
    pub targets: u64,
    /// Active users without an active target (the snapshot job skips them).
    pub active_without_target: u64,
    /// Target snapshots.
    pub snapshots: u64,
    /// Active users who already have a snapshot for yesterday.
    pub yesterday_snapshots: u64,
    /// Daily nutrition reports.
    pub daily_reports: u64,
    /// Meal recommendations.
    pub recommendations: u64,
    /// Active TRIAL/PAID users who already have a recommendation for today.
    pub recommendations_today: u64,
    /// Active TRIAL/PAID users without one for today who have an active target
    /// and a report for each of the 5 days before today: what the
    /// recommendation job creates.
    pub recommendation_ready: u64,
    /// Workouts.
    pub workouts: u64,
    /// Active users with a completed or partial workout finalized in the 30
    /// days up to `now`: the metrics job's items.
    pub workout_active_users: u64,
    /// Behaviour-metrics rows (all for yesterday).
    pub behavior_metrics: u64,
    /// Weekly reports (all for the week before the current one).
    pub weekly_reports: u64,
}

/// A small deterministic generator (splitmix64).
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    /// True with probability `percent` %.
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
}

/// Fast text for instants and dates near `now`: the seeder formats tens of
/// millions of them, and chrono's `format` re-parses its pattern each time.
struct Clock {
    now: DateTime<Utc>,
    first_day: i64,
    /// `YYYY-MM-DD` of `first_day`, `first_day + 1`, ...
    days: Vec<String>,
}

impl Clock {
    /// Dates from 400 days before `now` to 30 days after.
    fn new(now: DateTime<Utc>) -> Clock {
        let today = now.timestamp().div_euclid(86_400);
        let first_day = today - 400;
        let days = (0..431).map(|i| (now.date_naive() + Duration::days(i - 400)).to_string()).collect();
        Clock { now, first_day, days }
    }

    /// `YYYY-MM-DD` of `now`'s UTC date minus `back` days.
    fn date(&self, back: i64) -> String {
        self.day((self.now - Duration::days(back)).date_naive())
    }

    fn day(&self, d: NaiveDate) -> String {
        let n = d.signed_duration_since(DateTime::UNIX_EPOCH.date_naive()).num_days();
        match usize::try_from(n - self.first_day).ok().and_then(|i| self.days.get(i)) {
            Some(s) => s.clone(),
            None => d.to_string(),
        }
    }

    /// ISO 8601 UTC text of `t`.
    fn iso(&self, t: DateTime<Utc>) -> String {
        let secs = t.timestamp();
        let (day, sod) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
        let mut s = String::with_capacity(20);
        match usize::try_from(day - self.first_day).ok().and_then(|i| self.days.get(i)) {
            Some(d) => s.push_str(d),
            None => s.push_str(&t.date_naive().to_string()),
        }
        let _ = write!(s, "T{:02}:{:02}:{:02}Z", sod / 3600, sod / 60 % 60, sod % 60);
        s
    }

    /// `now` minus `minutes`, as ISO text.
    fn minutes_ago(&self, minutes: i64) -> String {
        self.iso(self.now - Duration::minutes(minutes))
    }
}

/// Opens the application database a `sqlite://path` URL (or a plain path)
/// names, created if missing, in WAL mode.
pub fn open(url: &str) -> Result<Connection, AppDbOpenError> {
    crate::store::appdb::connect(&crate::store::appdb::sqlite_path(url)?)
}

/// Creates the application schema (if missing) without touching any data:
/// what a test needs before inserting hand-made rows.
pub fn create_schema(conn: &Connection) -> Result<(), rusqlite::Error> {
    conn.execute_batch(SCHEMA)
}

/// Replaces the demo tables (dropped and recreated from [`SCHEMA`], so an
/// older demo database is upgraded) with `users` synthetic users and their
/// data relative to `now`, in one transaction. Other tables in the same file
/// (Sundial's own) are left alone.
pub fn seed(conn: &mut Connection, users: u64, now: DateTime<Utc>) -> Result<DemoCounts, rusqlite::Error> {
    // Rows are generated consistent; checking each reference would only slow
    // a million-user seed down. Restored below.
    // A large page cache keeps the indexes being filled in memory instead of
    // spilling them to the WAL mid-transaction.
    let fk: i64 = conn.query_row("PRAGMA foreign_keys", [], |r| r.get(0))?;
    let cache: i64 = conn.query_row("PRAGMA cache_size", [], |r| r.get(0))?;
    conn.execute_batch("PRAGMA foreign_keys = OFF; PRAGMA cache_size = -262144;")?;
    let result = seed_tables(conn, users, now);
    conn.execute_batch(&format!("PRAGMA foreign_keys = {fk}; PRAGMA cache_size = {cache};"))?;
    result
}

/// The prepared inserts, reused for every row.
struct Inserts<'c> {
    user: Statement<'c>,
    session: Statement<'c>,
    entry: Statement<'c>,
    target: Statement<'c>,
    snapshot: Statement<'c>,
    report: Statement<'c>,
    recommendation: Statement<'c>,
    workout: Statement<'c>,
    metrics: Statement<'c>,
    weekly: Statement<'c>,
}

impl<'c> Inserts<'c> {
    fn prepare(tx: &'c rusqlite::Transaction<'c>) -> Result<Self, rusqlite::Error> {
        Ok(Inserts {
            user: tx
                .prepare("INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES (?1, ?2, ?3, ?4, ?5)")?,
            session: tx.prepare("INSERT INTO sessions (user_id, token, expires_at) VALUES (?1, ?2, ?3)")?,
            entry: tx.prepare(
                "INSERT INTO food_entries (user_id, name, calories, eaten_at, deleted_at) VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            target: tx.prepare(
                "INSERT INTO targets (id, user_id, calories, protein_g, fat_g, carbs_g, active, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?,
            snapshot: tx.prepare(
                "INSERT INTO daily_target_snapshots \
                 (user_id, date, target_id, calories, protein_g, fat_g, carbs_g, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            )?,
            report: tx.prepare(
                "INSERT INTO daily_nutrition_reports (user_id, date, calories, protein_g, fat_g, carbs_g) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6)",
            )?,
            recommendation: tx.prepare(
                "INSERT INTO meal_recommendations (user_id, generated_for_date, calorie_budget, body, created_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            workout: tx.prepare(
                "INSERT INTO workouts (user_id, status, started_at, finalized_at, duration_minutes) \
                 VALUES (?1, ?2, ?3, ?4, ?5)",
            )?,
            metrics: tx.prepare(
                "INSERT INTO user_behavior_metrics (user_id, metrics_date, workouts_7d, workouts_30d, minutes_7d, \
                 minutes_30d, active_days_30d, streak_days, last_workout_at, computed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10)",
            )?,
            weekly: tx.prepare(
                "INSERT INTO weekly_reports (user_id, week_start, workouts, completed_workouts, minutes, prediction, \
                 created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
            )?,
        })
    }
}

/// Protein, fat and carbohydrate grams for a calorie target (25/25/50 % of energy).
fn macros(calories: i64) -> (i64, i64, i64) {
    (calories / 4 / 4, calories / 4 / 9, calories / 2 / 4)
}

const DAY_MINUTES: u64 = 1440;

fn seed_tables(conn: &mut Connection, users: u64, now: DateTime<Utc>) -> Result<DemoCounts, rusqlite::Error> {
    let drops: String = TABLES.iter().map(|t| format!("DROP TABLE IF EXISTS {t};\n")).collect();
    let tx = conn.transaction()?;
    tx.execute_batch(&drops)?;
    tx.execute_batch(SCHEMA)?;
    let clock = Clock::new(now);
    let mut ins = Inserts::prepare(&tx)?;
    let mut rng = Rng(42);
    let mut c = DemoCounts { users, ..DemoCounts::default() };

    let today = clock.date(0);
    let yesterday = clock.date(1);
    // The last week that has ended: Monday..Sunday before the current week.
    let this_monday = now.date_naive() - Duration::days(i64::from(now.weekday().num_days_from_monday()));
    let last_week = clock.day(this_monday - Duration::days(7));
    let report_days: Vec<String> = (1..=7).map(|d| clock.date(d)).collect();
    let snapshot_days: Vec<String> = (2..=4).map(|d| clock.date(d)).collect();
    let now_iso = clock.iso(now);
    let mut target_id = 0_i64;

    for id in 1..=users as i64 {
        let plan = ["FREE", "TRIAL", "PAID"][rng.below(3) as usize];
        let zone = ZONES[rng.below(ZONES.len() as u64) as usize];
        let withdrawn = (rng.below(20) == 0).then(|| clock.iso(now - Duration::days(rng.below(100) as i64 + 1)));
        let active = withdrawn.is_none();
        let premium = plan != "FREE";
        ins.user.execute(params![id, format!("user{id}"), plan, zone, withdrawn])?;
        c.active_users += u64::from(active);
        c.premium_active_users += u64::from(active && premium);

        for s in 0..2 {
            // Expiry between 10 days ago and 10 days ahead.
            let expires = now + Duration::hours(rng.below(480) as i64 - 240) + Duration::minutes(1);
            if expires < now {
                c.expired_sessions += 1;
            }
            c.sessions += 1;
            ins.session.execute(params![id, format!("tok-{id}-{s}-{:x}", rng.next()), clock.iso(expires)])?;
        }
        for e in 0..3 {
            let eaten = now - Duration::days(rng.below(90) as i64) - Duration::minutes(rng.below(1440) as i64);
            let deleted = if rng.below(4) == 0 {
                let days = rng.below(60) as i64;
                // Keep clear of the 30-day boundary so counts don't depend on the second.
                let days = if days == 30 { 31 } else { days };
                if days > 30 {
                    c.old_deleted_entries += 1;
                }
                Some(clock.iso(now - Duration::days(days) - Duration::hours(1)))
            } else {
                None
            };
            c.food_entries += 1;
            ins.entry.execute(params![
                id,
                ["rice", "miso soup", "salmon", "natto", "salad", "ramen"][(e + id as u64 % 6) as usize % 6],
                100 + rng.below(700) as i64,
                clock.iso(eaten),
                deleted
            ])?;
        }

        // Targets: 8 % none at all, 6 % only an old inactive one, 20 % an old
        // one and an active one, the rest an active one.
        let kind = rng.below(100);
        let calories = 1500 + rng.below(150) as i64 * 10;
        if (8..34).contains(&kind) {
            target_id += 1;
            let old = calories + 200 - rng.below(41) as i64 * 10;
            let (p, f, k) = macros(old);
            let created = clock.iso(now - Duration::days(60 + rng.below(300) as i64));
            ins.target.execute(params![target_id, id, old, p, f, k, 0, created])?;
            c.targets += 1;
        }
        let active_target = if kind >= 14 {
            target_id += 1;
            let (p, f, k) = macros(calories);
            let created = clock.iso(now - Duration::days(1 + rng.below(59) as i64));
            ins.target.execute(params![target_id, id, calories, p, f, k, 1, created])?;
            c.targets += 1;
            Some((target_id, calories, p, f, k))
        } else {
            None
        };
        c.active_without_target += u64::from(active && active_target.is_none());

        // Snapshots of earlier days (60 % of users with a target), and of
        // yesterday for 10 %, as if the snapshot job had already run.
        if let Some((tid, cal, p, f, k)) = active_target {
            if rng.chance(60) {
                for day in &snapshot_days {
                    ins.snapshot.execute(params![id, day, tid, cal, p, f, k, now_iso])?;
                    c.snapshots += 1;
                }
            }
            if rng.chance(10) {
                ins.snapshot.execute(params![id, yesterday, tid, cal, p, f, k, now_iso])?;
                c.snapshots += 1;
                c.yesterday_snapshots += u64::from(active);
            }
        }

        // Daily reports for the 7 days before today: 75 % of TRIAL/PAID
        // users have every day, 15 % have a gap within the last 5 days, 10 %
        // none; 30 % of FREE users have every day (the plan excludes them).
        let r = rng.below(100);
        let mut have = [false; 7];
        if (premium && r < 90) || (!premium && r < 30) {
            have = [true; 7];
            if premium && r >= 75 {
                have[rng.below(5) as usize] = false;
                if rng.chance(50) {
                    have[rng.below(7) as usize] = false;
                }
            }
        }
        let base = active_target.map_or(2000, |t| t.1);
        for (day, _) in report_days.iter().zip(have).filter(|(_, h)| *h) {
            let cal = base - 400 + rng.below(900) as i64;
            let (p, f, k) = macros(cal);
            ins.report.execute(params![id, day, cal, p, f, k])?;
            c.daily_reports += 1;
        }
        let last_five = have[..5].iter().filter(|h| **h).count();

        // Recommendations already made: yesterday's for half of those with
        // reports, today's for 5 %.
        let mut today_done = false;
        if have.iter().any(|h| *h) {
            for (day, p) in [(&yesterday, 50), (&today, 5)] {
                if rng.chance(p) {
                    let body = format!(r#"{{"base_date":"{day}","calorie_budget":{base},"meals":[]}}"#);
                    ins.recommendation.execute(params![id, day, base, body, now_iso])?;
                    c.recommendations += 1;
                    today_done = day == &today;
                }
            }
        }
        c.recommendations_today += u64::from(active && premium && today_done);
        c.recommendation_ready +=
            u64::from(active && premium && !today_done && active_target.is_some() && last_five == 5);

        // Workouts: 12 % never trained, 8 % only more than 30 days ago, the
        // rest 1-10 workouts over the last 45 days; 70 % completed, 15 %
        // partial, 15 % abandoned (never finalized).
        let w = rng.below(100);
        let n = if w < 12 { 0 } else { 1 + rng.below(10) };
        let mut recent = false;
        let (mut count_30, mut minutes_30) = (0_i64, 0_i64);
        let mut last: Option<u64> = None;
        for _ in 0..n {
            let mut ago =
                if w < 20 { 31 * DAY_MINUTES + rng.below(30 * DAY_MINUTES) } else { 1 + rng.below(45 * DAY_MINUTES) };
            // Keep clear of the 30-day boundary so counts don't depend on the second.
            if ago.abs_diff(30 * DAY_MINUTES) < 2 {
                ago += 3;
            }
            let status = match rng.below(20) {
                0..=13 => "completed",
                14..=16 => "partial",
                _ => "abandoned",
            };
            let duration = 10 + rng.below(81);
            let finalized = (status != "abandoned").then(|| clock.minutes_ago(ago as i64));
            if finalized.is_some() && ago < 30 * DAY_MINUTES {
                recent = true;
                count_30 += 1;
                minutes_30 += duration as i64;
                last = Some(last.map_or(ago, |l| l.min(ago)));
            }
            let started = clock.minutes_ago((ago + duration) as i64);
            ins.workout.execute(params![id, status, started, finalized, duration as i64])?;
            c.workouts += 1;
        }
        c.workout_active_users += u64::from(active && recent);

        // Yesterday's metrics for 40 % of the recently active (a plausible
        // summary; the metrics job computes the real thing).
        if let Some(last) = last.filter(|_| rng.chance(40)) {
            let days = (count_30 as u64).min(30) as i64;
            ins.metrics.execute(params![
                id,
                yesterday,
                count_30.min(7),
                count_30,
                minutes_30.min(7 * 90),
                minutes_30,
                days,
                days.min(3),
                clock.minutes_ago(last as i64),
                now_iso
            ])?;
            c.behavior_metrics += 1;
        }

        // Last week's report for half of the TRIAL/PAID users who train.
        if premium && n > 0 && rng.chance(50) {
            let workouts = 1 + rng.below(6) as i64;
            let prediction = format!(r#"{{"next_week_workouts":{workouts}.0,"trend":"steady"}}"#);
            ins.weekly.execute(params![id, last_week, workouts, workouts, workouts * 40, prediction, now_iso])?;
            c.weekly_reports += 1;
        }
    }
    drop(ins);
    tx.commit()?;
    Ok(c)
}

/// Why a Postgres demo database could not be seeded.
#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    /// Generating the rows (in a scratch SQLite file) failed.
    #[error("cannot generate the demo rows")]
    Generate(#[from] rusqlite::Error),
    /// The scratch file could not be made.
    #[error("cannot make a scratch file for the demo rows")]
    Scratch(#[from] std::io::Error),
    /// Postgres refused.
    #[error("cannot write the demo data to Postgres")]
    Postgres(#[from] postgres::Error),
}

/// [`SCHEMA`] in Postgres's words: ids are 64-bit identities (a job
/// inserting a row without an id gets one, as on SQLite), other integers
/// 64-bit.
pub fn postgres_schema() -> String {
    SCHEMA
        .replace("INTEGER PRIMARY KEY", "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY")
        .replace("INTEGER", "BIGINT")
}

/// [`seed`] for a Postgres application database at `url`: the same rows
/// (generated into a scratch SQLite file) copied over with `COPY`, in one
/// transaction that replaces the demo tables. Synchronous: call it from a
/// thread of its own, not from an async task.
pub fn seed_postgres(url: &str, users: u64, now: DateTime<Utc>) -> Result<DemoCounts, DemoError> {
    let scratch = tempfile::tempdir()?;
    let mut lite = crate::store::appdb::connect(&scratch.path().join("demo.db")).map_err(|e| match e {
        AppDbOpenError::Open { source, .. } => DemoError::Generate(source),
        AppDbOpenError::Url(u) => DemoError::Scratch(std::io::Error::other(u)),
    })?;
    let counts = seed(&mut lite, users, now)?;
    let mut pg = postgres::Client::connect(url, postgres::NoTls)?;
    let mut tx = pg.transaction()?;
    let drops: String = TABLES.iter().map(|t| format!("DROP TABLE IF EXISTS {t};\n")).collect();
    tx.batch_execute(&drops)?;
    tx.batch_execute(&postgres_schema())?;
    for table in TABLES.iter().rev() {
        copy_table(&lite, &mut tx, table)?;
        tx.batch_execute(&format!(
            "SELECT setval(pg_get_serial_sequence('{table}', 'id'), COALESCE(max(id), 0) + 1, false) FROM {table}"
        ))?;
    }
    tx.batch_execute("ANALYZE")?;
    tx.commit()?;
    Ok(counts)
}

/// Copies one table's rows from SQLite to Postgres as CSV.
fn copy_table(lite: &Connection, tx: &mut postgres::Transaction<'_>, table: &str) -> Result<(), DemoError> {
    use rusqlite::types::ValueRef;
    use std::io::Write as _;
    let mut stmt = lite.prepare(&format!("SELECT * FROM {table}"))?;
    let columns: Vec<String> = stmt.column_names().iter().map(|c| c.to_string()).collect();
    let n = columns.len();
    let mut writer = tx.copy_in(&format!("COPY {table} ({}) FROM STDIN WITH (FORMAT csv)", columns.join(", ")))?;
    let mut rows = stmt.query([])?;
    let mut line = String::new();
    while let Some(row) = rows.next()? {
        line.clear();
        for i in 0..n {
            if i > 0 {
                line.push(',');
            }
            match row.get_ref(i)? {
                ValueRef::Null => {}
                ValueRef::Integer(v) => {
                    let _ = write!(line, "{v}");
                }
                ValueRef::Real(v) => {
                    let _ = write!(line, "{v}");
                }
                ValueRef::Text(t) | ValueRef::Blob(t) => {
                    line.push('"');
                    line.push_str(&String::from_utf8_lossy(t).replace('"', "\"\""));
                    line.push('"');
                }
            }
        }
        line.push('\n');
        writer.write_all(line.as_bytes())?;
    }
    writer.finish()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn fast_text_matches_chrono() {
        let now = t("2026-11-22T10:00:00Z");
        let clock = Clock::new(now);
        for minutes in [0, 1, 59, 600, 601, 1440 * 45 + 7, 1440 * 500] {
            let at = now - Duration::minutes(minutes);
            assert_eq!(clock.iso(at), at.format("%Y-%m-%dT%H:%M:%SZ").to_string());
        }
        assert_eq!(clock.date(0), "2026-11-22");
        assert_eq!(clock.date(1), "2026-11-21");
        assert_eq!(clock.date(1000), "2024-02-26");
    }

    #[test]
    fn seeding_is_deterministic_and_counts_match_the_rows() {
        let now = t("2026-11-22T10:00:00Z");
        let mut conn = Connection::open_in_memory().unwrap();
        let a = seed(&mut conn, 500, now).unwrap();
        let b = seed(&mut conn, 500, now).unwrap();
        assert_eq!(a, b, "a refresh gives the same data");
        let count = |sql: &str| -> u64 { conn.query_row(sql, [], |r| r.get::<_, i64>(0)).unwrap() as u64 };
        assert_eq!(count("SELECT COUNT(*) FROM users"), 500);
        assert_eq!(count("SELECT COUNT(*) FROM users WHERE withdrawn_at IS NULL"), a.active_users);
        assert_eq!(count("SELECT COUNT(*) FROM targets"), a.targets);
        assert_eq!(count("SELECT COUNT(*) FROM daily_target_snapshots"), a.snapshots);
        assert_eq!(count("SELECT COUNT(*) FROM daily_nutrition_reports"), a.daily_reports);
        assert_eq!(count("SELECT COUNT(*) FROM meal_recommendations"), a.recommendations);
        assert_eq!(count("SELECT COUNT(*) FROM workouts"), a.workouts);
        assert_eq!(count("SELECT COUNT(*) FROM user_behavior_metrics"), a.behavior_metrics);
        assert_eq!(count("SELECT COUNT(*) FROM weekly_reports"), a.weekly_reports);
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM users u WHERE u.withdrawn_at IS NULL AND NOT EXISTS \
                 (SELECT 1 FROM targets t WHERE t.user_id = u.id AND t.active = 1)"
            ),
            a.active_without_target
        );
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM users u WHERE u.withdrawn_at IS NULL AND u.plan <> 'FREE' AND EXISTS \
                 (SELECT 1 FROM targets t WHERE t.user_id = u.id AND t.active = 1) AND NOT EXISTS \
                 (SELECT 1 FROM meal_recommendations m WHERE m.user_id = u.id \
                  AND m.generated_for_date = '2026-11-22') AND (SELECT COUNT(*) FROM daily_nutrition_reports r \
                  WHERE r.user_id = u.id AND r.date BETWEEN '2026-11-17' AND '2026-11-21') = 5"
            ),
            a.recommendation_ready
        );
        assert_eq!(
            count(
                "SELECT COUNT(*) FROM users u WHERE u.withdrawn_at IS NULL AND EXISTS (SELECT 1 FROM workouts w \
                 WHERE w.user_id = u.id AND w.status IN ('completed', 'partial') \
                 AND w.finalized_at > '2026-10-23T10:00:00Z' AND w.finalized_at <= '2026-11-22T10:00:00Z')"
            ),
            a.workout_active_users
        );
        // Every shape the jobs distinguish is present.
        assert!(a.active_users < 500 && a.active_without_target > 0 && a.yesterday_snapshots > 0);
        assert!(a.recommendation_ready > 0 && a.recommendations_today > 0);
        assert!(a.recommendation_ready + a.recommendations_today < a.premium_active_users);
        assert!(a.workout_active_users > 0 && a.workout_active_users < a.active_users);
        assert!(count("SELECT COUNT(*) FROM targets WHERE active = 0") > 0);
        assert!(count("SELECT COUNT(DISTINCT timezone) FROM users") >= 12);
    }
}

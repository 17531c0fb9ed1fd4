//! `sundial demo`: an application database with realistic synthetic data for
//! the example jobs. Deterministic (a fixed-seed generator), so a demo run and
//! a test see the same shape of data.

use chrono::{DateTime, Duration, Utc};
use sqlx::{Executor, SqlitePool};

/// The application schema.
pub const SCHEMA: &str = include_str!("schema.sql");

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

/// What `seed` created.
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
}

fn iso(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// Creates the schema and replaces its data with `users` synthetic users
/// (with sessions and food entries) relative to `now`.
pub async fn seed(pool: &SqlitePool, users: u64, now: DateTime<Utc>) -> Result<DemoCounts, sqlx::Error> {
    pool.execute(SCHEMA).await?;
    let mut tx = pool.begin().await?;
    for table in ["food_entries", "sessions", "users"] {
        tx.execute(format!("DELETE FROM {table}").as_str()).await?;
    }
    let mut rng = Rng(42);
    let mut c = DemoCounts { users, ..DemoCounts::default() };
    for id in 1..=users as i64 {
        let plan = ["FREE", "TRIAL", "PAID"][rng.below(3) as usize];
        let zone = ZONES[rng.below(ZONES.len() as u64) as usize];
        let withdrawn = (rng.below(20) == 0).then(|| iso(now - Duration::days(rng.below(100) as i64 + 1)));
        sqlx::query("INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES ($1, $2, $3, $4, $5)")
            .bind(id)
            .bind(format!("user{id}"))
            .bind(plan)
            .bind(zone)
            .bind(withdrawn)
            .execute(&mut *tx)
            .await?;
        for s in 0..2 {
            // Expiry between 10 days ago and 10 days ahead.
            let expires = now + Duration::hours(rng.below(480) as i64 - 240) + Duration::minutes(1);
            if expires < now {
                c.expired_sessions += 1;
            }
            c.sessions += 1;
            sqlx::query("INSERT INTO sessions (user_id, token, expires_at) VALUES ($1, $2, $3)")
                .bind(id)
                .bind(format!("tok-{id}-{s}-{:x}", rng.next()))
                .bind(iso(expires))
                .execute(&mut *tx)
                .await?;
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
                Some(iso(now - Duration::days(days) - Duration::hours(1)))
            } else {
                None
            };
            c.food_entries += 1;
            sqlx::query(
                "INSERT INTO food_entries (user_id, name, calories, eaten_at, deleted_at) VALUES ($1, $2, $3, $4, $5)",
            )
            .bind(id)
            .bind(["rice", "miso soup", "salmon", "natto", "salad", "ramen"][(e + id as u64 % 6) as usize % 6])
            .bind(100 + rng.below(700) as i64)
            .bind(iso(eaten))
            .bind(deleted)
            .execute(&mut *tx)
            .await?;
        }
    }
    tx.commit().await?;
    Ok(c)
}

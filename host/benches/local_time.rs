//! Item-local schedules at scale: N users (default 1,000,000) spread over 30
//! zones, a job at `0 2 * * *` in each user's own zone (`item_zones_query`),
//! driven by a manual clock through 48 simulated hours that include the US
//! spring-forward (2026-03-08).
//!
//! Prints the number of executions (zone groups), user-days processed, users
//! reached more or less than once per local day (must be 0), the time spent
//! computing fires and the item throughput of the runs.
//!
//! Usage: `cargo bench -p sundial-host --bench local_time -- [N]`. Needs
//! `cargo xtask build-jobs --fixtures`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeDelta, Utc};
use sundial::actors::scheduler::{GetNextFires, Tick};
use sundial::clock::{Clock, ManualClock};
use sundial::config::Config;
use sundial::host::{Host, HostOptions};

#[path = "../tests/all/fixtures.rs"]
mod fixtures;
use fixtures::ZONES;

fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

fn fixture() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/sundial-test-jobs/local_visits.wasm");
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run cargo xtask build-jobs --fixtures", p.display()))
}

fn seed(path: &Path, n: usize) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch(
        "PRAGMA journal_mode = WAL;
         CREATE TABLE users (id INTEGER PRIMARY KEY, timezone TEXT NOT NULL, delivery_time TEXT);
         CREATE INDEX users_timezone ON users (timezone, id);
         CREATE TABLE visits (user_id INTEGER NOT NULL, local_date TEXT NOT NULL, local_time TEXT NOT NULL,
                              execution_id INTEGER NOT NULL);",
    )
    .unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut insert = tx.prepare("INSERT INTO users (id, timezone) VALUES (?1, ?2)").unwrap();
        for id in 1..=n {
            insert.execute(rusqlite::params![id as i64, ZONES[id % ZONES.len()]]).unwrap();
        }
    }
    tx.commit().unwrap();
}

async fn next_fire(host: &Host) -> Option<DateTime<Utc>> {
    let fires = host.scheduler.as_ref().unwrap().send(GetNextFires).await.unwrap();
    fires.into_iter().find(|(n, _, _)| n == "local-visits").and_then(|(_, next, _)| next)
}

fn main() {
    let users: usize = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(1_000_000);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(dir.path().join("jobs/local_visits.wasm"), fixture()).unwrap();
        let db = dir.path().join("sundial.db");
        let seeded = Instant::now();
        seed(&db, users);
        println!("seeded {users} users over {} zones in {:.1} s", ZONES.len(), seeded.elapsed().as_secs_f64());

        let (start, end) = (t("2026-03-07T00:00:00Z"), t("2026-03-09T00:00:00Z"));
        let clock = ManualClock::new(start);
        let mut config = Config::parse(
            "[jobs.local-visits]\ndatabase = \"read-write\"\nschedule = \"0 2 * * *\"\ntimeout_secs = 3600\n\
             item_zones_query = \"SELECT DISTINCT timezone FROM users\"",
        )
        .unwrap();
        config.base_dir = dir.path().to_path_buf();
        let mut options = HostOptions::new(config);
        options.database_url = Some(format!("sqlite://{}", db.display()));
        options.jobs_dir = Some(dir.path().join("jobs"));
        options.schedule = true;
        options.clock = Arc::new(clock.clone()) as Arc<dyn Clock>;
        let host = Host::start(options).await.unwrap();

        let read = Instant::now();
        while next_fire(&host).await.is_none() {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        println!("item_zones_query read and first fire computed in {:.1} ms", read.elapsed().as_secs_f64() * 1e3);

        let mut events = host.subscribe();
        let (mut executions, mut busy, mut planning) = (0usize, Duration::ZERO, Duration::ZERO);
        loop {
            let planned = Instant::now();
            let Some(next) = next_fire(&host).await.filter(|n| *n <= end) else { break };
            clock.set(next + TimeDelta::milliseconds(1));
            host.scheduler.as_ref().unwrap().send(Tick).await.unwrap();
            planning += planned.elapsed();
            executions += 1;
            let ran = Instant::now();
            loop {
                match events.recv().await {
                    Ok(sundial::events::Event::ExecutionFinished { .. }) => break,
                    Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("events: {e}"),
                }
            }
            busy += ran.elapsed();
        }

        let conn = rusqlite::Connection::open(&db).unwrap();
        let (visits, user_days, repeated): (i64, i64, i64) = conn
            .query_row(
                "SELECT (SELECT count(*) FROM visits), \
                        (SELECT count(*) FROM (SELECT DISTINCT user_id, local_date FROM visits)), \
                        (SELECT count(*) FROM (SELECT 1 FROM visits GROUP BY user_id, local_date HAVING count(*) > 1))",
                [],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )
            .unwrap();
        // Each user's 02:00 falls exactly twice in the 48 hours, except where
        // the window's edges cut a local day: count users with fewer than 2.
        let short: i64 = conn
            .query_row(
                "SELECT count(*) FROM users u \
                 LEFT JOIN (SELECT user_id, count(*) AS n FROM visits GROUP BY user_id) v ON v.user_id = u.id \
                 WHERE COALESCE(v.n, 0) < 2",
                [],
                |r| r.get(0),
            )
            .unwrap();
        println!("48 simulated hours, {users} users in {} zones, schedule 0 2 * * * local:", ZONES.len());
        println!("  executions (zone groups)   {executions}");
        println!("  user-days processed        {user_days} ({visits} visits; {repeated} user-days twice)");
        println!("  users reached < 2 times    {short}");
        println!(
            "  item runs                  {:.1} s, {:.0} items/s",
            busy.as_secs_f64(),
            visits as f64 / busy.as_secs_f64()
        );
        println!("  planning (next fire, tick) {:.1} ms in all", planning.as_secs_f64() * 1e3);
        host.stop().await;
    });
}

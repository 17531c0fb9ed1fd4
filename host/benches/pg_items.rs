//! The per-item engine on Postgres: the `snapshot` job (the WebAssembly
//! component) over N users whose data is in a Postgres database, each user
//! in its own savepoint inside batch transactions (of up to 64 items on
//! Postgres). Prints items/s and wall time, then the same over a day already
//! done (listing and savepoints, no writes).
//!
//! Then the same run shared (`item_workers`): by this host's workers alone,
//! and with a second host (a second process of this benchmark) helping, with
//! 1, 2 and 4 workers a host; every user's snapshot is made once whoever
//! makes it.
//!
//! Usage: `cargo bench -p sundial-host --bench pg_items -- [--shared-only] [N...]`
//! (default: 100000 1000000). Needs `cargo xtask build-jobs` and a server at
//! `SUNDIAL_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! it works in a database `sundial_bench_items` of its own, dropped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{snapshot_wasm, wasm_run, wasm_run_shared};
use sqlx::Connection;
use sundial::clock::{Clock, SystemClock};
use sundial::model::ExecutionStatus;
use sundial::runtime::{CancelToken, Helper, Limits, Runtime, SharedItems};
use sundial::store::appdb::AppDb;

const DATABASE: &str = "sundial_bench_items";

fn server() -> String {
    std::env::var("SUNDIAL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

fn database_url() -> String {
    let s = server();
    let (base, _) = s.rsplit_once('/').unwrap();
    format!("{base}/{DATABASE}")
}

async fn admin(sql: &str) {
    let mut c = sqlx::PgConnection::connect(&server()).await.unwrap();
    sqlx::raw_sql(sql).execute(&mut c).await.unwrap();
}

/// The same data as the SQLite benchmark: 5 % of users withdrawn, an active
/// target for 90 %.
async fn seed(n: i64) {
    admin(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")).await;
    admin(&format!("CREATE DATABASE {DATABASE}")).await;
    let mut c = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::raw_sql(&sundial::demo::postgres_schema()).execute(&mut c).await.unwrap();
    sqlx::raw_sql(&format!(
        "INSERT INTO users (id, name, plan, timezone, withdrawn_at)
           SELECT id, 'user' || id, (ARRAY['FREE', 'TRIAL', 'PAID'])[id % 3 + 1], 'UTC',
                  CASE WHEN id % 20 = 0 THEN '2026-06-01T00:00:00Z' END
           FROM generate_series(1, {n}) AS id;
         INSERT INTO targets (id, user_id, calories, protein_g, fat_g, carbs_g, active, created_at)
           SELECT id, id, 1800 + id % 700, 100, 60, 250, 1, '2026-01-01T00:00:00Z'
           FROM generate_series(1, {n}) AS id WHERE id % 10 <> 0;
         ANALYZE;"
    ))
    .execute(&mut c)
    .await
    .unwrap();
}

async fn snapshots() -> i64 {
    let mut c = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::query_scalar("SELECT count(*) FROM daily_target_snapshots").fetch_one(&mut c).await.unwrap()
}

fn shared(workers: u32, node: &str) -> SharedItems {
    SharedItems { workers, node: node.into(), lease: Duration::from_secs(15), state_db: None }
}

/// The second host: helps with every shared run of `snapshot` it finds
/// until it is killed.
fn helper(workers: u32) {
    let rt = Runtime::new(Arc::new(SystemClock)).unwrap();
    let version = rt.load_blocking(&snapshot_wasm()).unwrap();
    let db = AppDb::open(&database_url()).unwrap();
    println!("ready");
    loop {
        let h = Helper {
            job: "snapshot".into(),
            db: db.clone(),
            limits: Limits { timeout: Duration::from_secs(3600), ..Limits::default() },
            items: shared(workers, "bench-b"),
            cancel: CancelToken::new(),
        };
        if rt.block_on(rt.help_items(version.clone(), h)).unwrap() == 0 {
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

async fn clear() {
    let mut c = sqlx::PgConnection::connect(&database_url()).await.unwrap();
    sqlx::raw_sql("TRUNCATE daily_target_snapshots").execute(&mut c).await.unwrap();
    sqlx::raw_sql("VACUUM ANALYZE").execute(&mut c).await.unwrap();
}

fn main() {
    let all: Vec<String> = std::env::args().collect();
    if let Some(i) = all.iter().position(|a| a == "--helper") {
        return helper(all[i + 1].parse().unwrap());
    }
    let args: Vec<i64> =
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![100_000, 1_000_000] } else { args };
    // `--shared-only`: skip the unshared run and its rerun.
    let shared_only = all.iter().any(|a| a == "--shared-only");
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rt = Runtime::new(clock).unwrap();
    let version = rt.load_blocking(&snapshot_wasm()).unwrap();
    println!("snapshot over N users on Postgres, per-item savepoints in batch transactions of up to 64 items");
    for n in sizes {
        let t = Instant::now();
        rt.block_on(seed(n));
        println!("seeded {n} users in {:.1}s", t.elapsed().as_secs_f64());
        let db = AppDb::open(&database_url()).unwrap();
        if !shared_only {
            let start = Instant::now();
            let report = wasm_run(&rt, &db, &version, 1);
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
            let created = rt.block_on(snapshots());
            assert_eq!(created as u64, report.items_ok, "one snapshot per user with a target");
            println!(
                "wasm     users={n:<8} items={:<8} ok={:<8} skipped={:<7} wall={secs:>7.2}s items/s={:>9.0}",
                report.items_total,
                report.items_ok,
                report.items_skipped,
                report.items_total as f64 / secs,
            );
            // Again over the same day: every item finds its snapshot (no writes).
            let start = Instant::now();
            let again = wasm_run(&rt, &db, &version, 2);
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(again.changed, 0);
            println!(
                "rerun    users={n:<8} items={:<8} changed=0 wall={secs:>7.2}s items/s={:>9.0}  (listing and savepoints only)",
                again.items_total,
                again.items_total as f64 / secs,
            );
        }
        let mut exec = 3;
        for hosts in [1, 2] {
            for workers in [1, 2, 4] {
                if hosts == 1 && workers == 1 {
                    continue; // the same as the unshared run above
                }
                rt.block_on(clear());
                let mut second = (hosts == 2).then(|| {
                    let mut child = std::process::Command::new(std::env::current_exe().unwrap())
                        .args(["--helper", &workers.to_string()])
                        .stdout(std::process::Stdio::piped())
                        .spawn()
                        .unwrap();
                    let mut line = String::new();
                    let out = child.stdout.as_mut().unwrap();
                    std::io::BufRead::read_line(&mut std::io::BufReader::new(out), &mut line).unwrap();
                    assert_eq!(line.trim(), "ready");
                    child
                });
                let start = Instant::now();
                let report = wasm_run_shared(&rt, &db, &version, exec, Some(shared(workers, "bench-a")));
                let secs = start.elapsed().as_secs_f64();
                exec += 1;
                if let Some(child) = second.as_mut() {
                    child.kill().unwrap();
                    child.wait().unwrap();
                }
                assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
                let created = rt.block_on(snapshots());
                assert_eq!(created as u64, report.items_ok, "one snapshot per user with a target, whoever made it");
                assert_eq!(report.items_total, n as u64 * 95 / 100, "every active user once");
                let by = report.summary.as_deref().and_then(|s| s.split("worked by ").nth(1)).unwrap_or("?");
                println!(
                    "shared   users={n:<8} hosts={hosts} workers/host={workers} items={:<8} ok={:<8} wall={secs:>7.2}s items/s={:>9.0}  (pages worked by {by})",
                    report.items_total,
                    report.items_ok,
                    report.items_total as f64 / secs,
                );
            }
        }
    }
    rt.block_on(admin(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")));
}

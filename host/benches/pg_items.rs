//! The per-item engine on Postgres: the `snapshot` job (the WebAssembly
//! component) over N users whose data is in a Postgres database, each user
//! in its own savepoint inside batch transactions (of up to 64 items on
//! Postgres). Prints items/s and wall time, then the same over a day already
//! done (listing and savepoints, no writes).
//!
//! Usage: `cargo bench -p sundial-host --bench pg_items -- [N...]`
//! (default: 100000 1000000). Needs `cargo xtask build-jobs` and a server at
//! `SUNDIAL_TEST_POSTGRES_URL` (default `postgres://postgres@127.0.0.1:5432/test`);
//! it works in a database `sundial_bench_items` of its own, dropped at the end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{snapshot_wasm, wasm_run};
use sqlx::Connection;
use sundial::clock::{Clock, SystemClock};
use sundial::model::ExecutionStatus;
use sundial::runtime::Runtime;
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

fn main() {
    let args: Vec<i64> =
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![100_000, 1_000_000] } else { args };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rt = Runtime::new(clock).unwrap();
    let version = rt.load_blocking(&snapshot_wasm()).unwrap();
    println!("snapshot over N users on Postgres, per-item savepoints in batch transactions of up to 64 items");
    for n in sizes {
        let t = Instant::now();
        rt.block_on(seed(n));
        println!("seeded {n} users in {:.1}s", t.elapsed().as_secs_f64());
        let db = AppDb::open(&database_url()).unwrap();
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
    rt.block_on(admin(&format!("DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")));
}

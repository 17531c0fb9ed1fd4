//! What the benchmarks on the `snapshot` job share: the component, a seeded
//! application database, and one run of the component over it.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use rusqlite::params;
use sundial::model::{DbAccess, ExecutionId, RunArgs, RunContext, RunReport, Trigger};
use sundial::runtime::{CancelToken, Invocation, Limits, Progress, Runtime};
use sundial::store::appdb::AppDb;

pub fn snapshot_wasm() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/sundial-jobs/snapshot.wasm");
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run cargo xtask build-jobs", p.display()))
}

/// Users (5 % withdrawn) and an active target for 90 % of them.
pub fn seed(path: &std::path::Path, n: i64) {
    let mut conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL").unwrap();
    sundial::demo::create_schema(&conn).unwrap();
    let tx = conn.transaction().unwrap();
    {
        let mut u = tx
            .prepare("INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES (?1, ?2, ?3, 'UTC', ?4)")
            .unwrap();
        let mut t = tx
            .prepare(
                "INSERT INTO targets (user_id, calories, protein_g, fat_g, carbs_g, active, created_at) \
                 VALUES (?1, ?2, 100, 60, 250, 1, '2026-01-01T00:00:00Z')",
            )
            .unwrap();
        for id in 1..=n {
            let withdrawn = (id % 20 == 0).then_some("2026-06-01T00:00:00Z");
            u.execute(params![id, format!("user{id}"), ["FREE", "TRIAL", "PAID"][(id % 3) as usize], withdrawn])
                .unwrap();
            if id % 10 != 0 {
                t.execute(params![id, 1800 + id % 700]).unwrap();
            }
        }
    }
    tx.commit().unwrap();
}

pub fn clear_snapshots(path: &std::path::Path) {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.execute_batch("DELETE FROM daily_target_snapshots; PRAGMA wal_checkpoint(TRUNCATE);").unwrap();
}

pub fn count(path: &std::path::Path) -> i64 {
    let conn = rusqlite::Connection::open(path).unwrap();
    conn.query_row("SELECT count(*) FROM daily_target_snapshots", [], |r| r.get(0)).unwrap()
}

pub fn scheduled_for() -> DateTime<Utc> {
    DateTime::parse_from_rfc3339("2026-11-23T00:10:00Z").unwrap().with_timezone(&Utc)
}

pub fn wasm_run(rt: &Runtime, db: &AppDb, version: &Arc<sundial::runtime::ComponentVersion>, exec: i64) -> RunReport {
    wasm_run_shared(rt, db, version, exec, None)
}

/// [`wasm_run`], its pages shared by `shared`'s workers (and other hosts').
pub fn wasm_run_shared(
    rt: &Runtime,
    db: &AppDb,
    version: &Arc<sundial::runtime::ComponentVersion>,
    exec: i64,
    shared: Option<sundial::runtime::SharedItems>,
) -> RunReport {
    let invocation = Invocation {
        ctx: RunContext {
            execution_id: ExecutionId(exec),
            job_name: "snapshot".into(),
            scheduled_for: scheduled_for(),
            timezone: "UTC".into(),
            trigger: Trigger::Manual,
            attempt: 1,
            args: RunArgs::default(),
        },
        limits: Limits { timeout: Duration::from_secs(3600), memory_bytes: 256 << 20, ..Limits::default() },
        db: Some(db.session(DbAccess::ReadWrite)),
        state: None,
        cancel: CancelToken::new(),
        progress: Progress::new(),
        shared,
    };
    rt.block_on(rt.execute(version.clone(), invocation))
}

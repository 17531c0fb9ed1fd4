//! The per-item engine at scale: the `snapshot` job over N users on SQLite,
//! each user in its own savepoint inside batch transactions, as a WebAssembly
//! component and — through the same engine, the same batches and the same
//! database layer — as a native Rust closure doing the same queries. Prints
//! items/s, wall time and peak RSS of each, and the WASM/native ratio.
//!
//! Usage: `cargo bench -p sundial-host --bench item_engine -- [N...]`
//! (default: 100000 1000000). Needs `cargo xtask build-jobs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use chrono::Utc;
use common::{clear_snapshots, count, scheduled_for, seed, snapshot_wasm, wasm_run};
use sundial::clock::{Clock, SystemClock};
use sundial::model::{DbAccess, ErrorClass, ExecutionStatus, RunReport};
use sundial::runtime::{ClosureItems, ItemRun, NativeItem, Progress, Runtime};
use sundial::store::appdb::{AppDb, AppSession, SqlValue};

const PAGE: i64 = 1000;
// The job's own statements, so both sides run the same SQL.
const LIST: &str = include_str!("../../jobs/snapshot/src/list.sql");
const INSERT: &str = include_str!("../../jobs/snapshot/src/insert.sql");

/// Resets the kernel's peak-RSS mark, so each run's peak is its own.
fn reset_peak_rss() {
    let _ = std::fs::write("/proc/self/clear_refs", "5");
}

fn peak_rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

fn native_run(db: &AppDb, exec: i64) -> RunReport {
    let yesterday = "2026-11-22".to_string();
    let created_at = Utc::now().format("%Y-%m-%dT%H:%M:%SZ").to_string();
    let y = yesterday.clone();
    let list = move |s: &mut AppSession, cursor: Option<&str>| {
        let after: i64 = cursor.map(|c| c.parse().map_err(|_| format!("bad cursor {c}"))).transpose()?.unwrap_or(0);
        let rows = s
            .query(LIST, &[SqlValue::Integer(after), SqlValue::Text(y.clone()), SqlValue::Integer(PAGE)])
            .map_err(|e| e.to_string())?;
        let full = rows.rows.len() as i64 >= PAGE;
        let items: Vec<NativeItem> = rows
            .rows
            .into_iter()
            .map(|r| NativeItem {
                key: match &r[0] {
                    SqlValue::Integer(i) => i.to_string(),
                    other => format!("{other:?}"),
                },
                data: r,
            })
            .collect();
        let next = if full { items.last().map(|i| i.key.clone()) } else { None };
        Ok((items, next))
    };
    let run = move |s: &mut AppSession, item: &NativeItem| {
        let d = &item.data;
        if d[6] == SqlValue::Integer(1) {
            return Ok(0);
        }
        if d[1] == SqlValue::Null {
            return Err((ErrorClass::Skip, "no active target".to_string()));
        }
        s.execute(
            INSERT,
            &[
                d[0].clone(),
                SqlValue::Text(yesterday.clone()),
                d[1].clone(),
                d[2].clone(),
                d[3].clone(),
                d[4].clone(),
                d[5].clone(),
                SqlValue::Text(created_at.clone()),
            ],
        )
        .map_err(|e| (ErrorClass::Fatal, e.to_string()))
    };
    let mut driver = ClosureItems { session: db.session(DbAccess::ReadWrite), list, run, progress: Progress::new() };
    let item_run = ItemRun {
        job_name: "snapshot-native".into(),
        execution_id: exec,
        scheduled_for_ms: scheduled_for().timestamp_millis(),
        dry_run: false,
        limit: None,
    };
    let report = sundial::runtime::run_with(&mut driver, &item_run, Utc::now());
    driver.session.close();
    report
}

struct Figure {
    secs: f64,
    items: u64,
    rss: f64,
}

fn measure(what: &str, n: i64, f: impl FnOnce() -> RunReport) -> Figure {
    reset_peak_rss();
    let start = Instant::now();
    let report = f();
    let secs = start.elapsed().as_secs_f64();
    let rss = peak_rss_mib();
    assert_eq!(report.status, ExecutionStatus::Succeeded, "{what}: {report:?}");
    let items = report.items_total;
    println!(
        "{what:<8} users={n:<8} items={items:<8} ok={:<8} skipped={:<7} wall={secs:>7.2}s items/s={:>9.0} peak_rss={rss:>7.1}MiB",
        report.items_ok,
        report.items_skipped,
        items as f64 / secs,
    );
    Figure { secs, items, rss }
}

fn main() {
    let args: Vec<i64> =
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).filter_map(|a| a.parse().ok()).collect();
    let sizes = if args.is_empty() { vec![100_000, 1_000_000] } else { args };
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let rt = Runtime::new(clock).unwrap();
    let version = rt.load_blocking(&snapshot_wasm()).unwrap();
    println!("snapshot over N users on SQLite, per-item savepoints in batch transactions of up to 1000 items");
    for n in sizes {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("app.db");
        let t = Instant::now();
        seed(&path, n);
        println!("seeded {n} users in {:.1}s", t.elapsed().as_secs_f64());
        let db = AppDb::open(&format!("sqlite://{}", path.display())).unwrap();

        let wasm = measure("wasm", n, || wasm_run(&rt, &db, &version, 1));
        let created = count(&path);
        clear_snapshots(&path);
        let native = measure("native", n, || native_run(&db, 2));
        assert_eq!(count(&path), created, "both create the same snapshots");
        assert_eq!(wasm.items, native.items);
        println!(
            "ratio    users={n:<8} wasm/native wall = {:.2}x  (rss wasm {:.0} MiB, native {:.0} MiB)",
            wasm.secs / native.secs,
            wasm.rss,
            native.rss
        );
    }
}

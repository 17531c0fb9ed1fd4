//! What the sandbox's limits cost: the `snapshot` job over N users on
//! SQLite (one `run-item` call and one `database.execute` host call per
//! user), with each of them off and on:
//! - `bare`: no epoch interruption, no fuel, no checks in host calls;
//! - `epoch`: epoch interruption (deadlines and cancellation in guest code);
//! - `checks`: the deadline and cancellation check in every host call and
//!   the memory limiter;
//! - `limits`: both, as every host runs (the target: at most 5 % over `bare`);
//! - `+fuel`: and fuel metering, as hosts run when a job has a fuel budget;
//! - `fuel`: fuel metering alone.
//!
//! Each variant runs `REPEATS` times, interleaved, and the fastest run
//! counts (the least disturbed by the rest of the machine). Prints the cost
//! per item and the overhead against `bare`.
//!
//! Usage: `cargo bench -p sundial-host --bench limits_overhead -- [N]`
//! (default 100000). Needs `cargo xtask build-jobs`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::sync::Arc;
use std::time::Instant;

use common::{clear_snapshots, seed, snapshot_wasm, wasm_run};
use sundial::clock::{Clock, SystemClock};
use sundial::model::ExecutionStatus;
use sundial::runtime::{EngineSettings, Runtime};
use sundial::store::appdb::AppDb;

const REPEATS: usize = 7;

fn main() {
    let n: i64 =
        std::env::args().skip(1).filter(|a| !a.starts_with("--")).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let off = EngineSettings { epoch_interruption: false, fuel: false, host_checks: false };
    let variants = [
        ("bare", off),
        ("epoch", EngineSettings { epoch_interruption: true, ..off }),
        ("checks", EngineSettings { host_checks: true, ..off }),
        ("limits", EngineSettings::default()),
        ("+fuel", EngineSettings::with_fuel(true)),
        ("fuel", EngineSettings { fuel: true, ..off }),
    ];
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let bytes = snapshot_wasm();
    let runtimes: Vec<_> = variants
        .iter()
        .map(|(name, settings)| {
            let rt = Runtime::with_settings(clock.clone(), None, *settings).unwrap();
            let version = rt.load_blocking(&bytes).unwrap();
            (*name, rt, version)
        })
        .collect();

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.db");
    seed(&path, n);
    let db = AppDb::open(&format!("sqlite://{}", path.display())).unwrap();
    println!("snapshot over {n} users on SQLite; fastest of {REPEATS} interleaved runs per variant");

    let mut best = vec![f64::INFINITY; runtimes.len()];
    let mut fuel = vec![None; runtimes.len()];
    let mut exec = 0;
    for _ in 0..REPEATS {
        for (i, (name, rt, version)) in runtimes.iter().enumerate() {
            clear_snapshots(&path);
            exec += 1;
            let start = Instant::now();
            let report = wasm_run(rt, &db, version, exec);
            let secs = start.elapsed().as_secs_f64();
            assert_eq!(report.status, ExecutionStatus::Succeeded, "{name}: {report:?}");
            // Withdrawn users (one in twenty) are not items.
            assert_eq!(report.items_total, (n - n / 20) as u64, "{name}");
            best[i] = best[i].min(secs);
            fuel[i] = report.fuel_consumed;
        }
    }
    let items = (n - n / 20) as f64;
    let per_item = |secs: f64| secs / items * 1e6;
    let bare = best[0];
    for (i, (name, _, _)) in runtimes.iter().enumerate() {
        let fuel = fuel[i].map(|f| format!("  fuel/item={:.0}", f as f64 / items)).unwrap_or_default();
        println!(
            "{name:<7} wall={:>6.3}s  per item={:>6.3} µs  items/s={:>8.0}  overhead vs bare={:>+6.1} % ({:>+6.0} ns/item){fuel}",
            best[i],
            per_item(best[i]),
            items / best[i],
            (best[i] / bare - 1.0) * 100.0,
            (per_item(best[i]) - per_item(bare)) * 1e3,
        );
    }
}

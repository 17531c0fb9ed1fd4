//! Hot swap: how long a new component version takes to go live, from the
//! compiled-artifact cache and from raw `.wasm`, and what swaps do to a long
//! per-item run in flight.
//!
//! Prints:
//! - `load`: validating a component (size, header, compile or cache read,
//!   world and exports, `describe`), from the cache and raw;
//! - `deploy`: `Host::deploy` end to end: validate, write the file into the
//!   jobs directory (fsync, rename), record the version, swap the
//!   supervisor's code;
//! - `swap`: the part of a deploy after validation (write, record, swap),
//!   and the durable write of the file alone;
//! - `watch cached`: a file of bytes the host loaded before renamed into the
//!   watched jobs directory, until the bench sees its `job_reloaded` event (a rename is
//!   complete, so it skips the 200 ms debounce; the file event's delivery
//!   through inotify and the watcher thread is included);
//! - `watch disk cache`: the same for bytes compiled before but no longer
//!   held in memory, as after a restart: the compiled artifact is read from
//!   the on-disk cache;
//! - under each watch line, `event to live`: the host's own figure for the
//!   same swaps (its `job_reloaded` event and `sundial_reload_seconds`), from
//!   the watcher seeing the file event to the supervisor holding the new
//!   version: the bench's rename and its own wake-up are not in it;
//! - a run of the `slow-items` fixture over N users while the component is
//!   replaced 10 times: items lost, duplicated or run on another version
//!   (all must be 0), and per-item latency in 10 ms windows with and
//!   without a swap in them;
//! - a storm of 200 deploys at 20 a second: resident memory before, at the
//!   peak and after.
//!
//! Usage: `cargo bench -p sundial-host --bench hot_swap -- [N]` (default
//! 100000). Needs `cargo xtask build-jobs --fixtures`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use sundial::config::Config;
use sundial::events::Event;
use sundial::host::{Host, HostOptions};
use sundial::model::RunArgs;
use sundial::runtime::RECENT_VERSIONS;

#[path = "../tests/all/fixtures.rs"]
mod fixtures;
use fixtures::variant;

const SWAPS: usize = 10;
/// Files renamed into the watched directory (the latency figure).
const WATCHED: usize = 50;

fn fixture() -> Vec<u8> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/sundial-test-jobs/slow_items.wasm");
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run cargo xtask build-jobs --fixtures", p.display()))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn summary(name: &str, mut v: Vec<Duration>) {
    v.sort();
    let p = |q: f64| ms(v[((v.len() - 1) as f64 * q).round() as usize]);
    println!("{name:<16} n={:<3} p50 {:>8.3} ms  p90 {:>8.3} ms  max {:>8.3} ms", v.len(), p(0.5), p(0.9), p(1.0));
}

async fn start_host(dir: &Path) -> Host {
    let mut config = Config::parse(
        "[jobs.slow-items]\ndatabase = \"read-write\"\ntimeout_secs = 3600\noverlap = \"allow\"\n\
         expected_duration_secs = 3600",
    )
    .unwrap();
    config.base_dir = dir.to_path_buf();
    config.cache_dir = Some(dir.join("cache"));
    let mut options = HostOptions::new(config);
    options.database_url = Some(format!("sqlite://{}", dir.join("sundial.db").display()));
    options.jobs_dir = Some(dir.join("jobs"));
    Host::start(options).await.unwrap()
}

/// Renames `from` to `to` on another thread, as a deploying process would:
/// on ext4 a rename over an existing file waits for the new file's data to
/// be allocated (hundreds of microseconds), and that wait must not hold up
/// the host's own thread, which this bench shares.
fn rename_elsewhere(from: PathBuf, to: PathBuf) {
    std::thread::spawn(move || std::fs::rename(from, to).unwrap());
}

/// Renames a file of `bytes` into the watched jobs directory and waits until
/// the job runs them. Returns how long from the start of the rename until
/// this bench saw the supervisor's `job_reloaded` event, and the host's own
/// figure in that event: from the file event to the new version live.
async fn swap_through_watcher(
    events: &mut tokio::sync::broadcast::Receiver<Event>,
    jobs: &Path,
    bytes: &[u8],
) -> (Duration, Duration) {
    let digest = sundial::runtime::digest(bytes);
    let tmp = jobs.join(".slow_items.wasm.tmp");
    std::fs::write(&tmp, bytes).unwrap();
    let t = Instant::now();
    rename_elsewhere(tmp, jobs.join("slow_items.wasm"));
    loop {
        if let Event::JobReloaded { job, digest: live, took_us, .. } = events.recv().await.unwrap()
            && job == "slow-items"
            && live == digest
        {
            return (t.elapsed(), Duration::from_micros(took_us));
        }
    }
}

async fn latencies(host: &Host, jobs: &Path, base: &[u8]) {
    let rt = &host.runtime;
    // Raw: bytes never seen, compiled from scratch.
    let mut load_raw = Vec::new();
    for i in 0..SWAPS {
        let bytes = variant(base, &format!("raw-load-{i}"));
        let t = Instant::now();
        rt.load(bytes).await.unwrap();
        load_raw.push(t.elapsed());
    }
    // Cached: the same bytes again, read from the artifact cache.
    let mut load_cached = Vec::new();
    for i in 0..SWAPS {
        let bytes = variant(base, &format!("raw-load-{i}"));
        let t = Instant::now();
        rt.load(bytes).await.unwrap();
        load_cached.push(t.elapsed());
    }
    let mut deploy_raw = Vec::new();
    let mut swap = Vec::new();
    for i in 0..SWAPS {
        let bytes = variant(base, &format!("raw-deploy-{i}"));
        let t = Instant::now();
        host.deploy(bytes).await.unwrap();
        deploy_raw.push(t.elapsed());
    }
    let mut deploy_cached = Vec::new();
    for i in 0..SWAPS {
        // Warm the cache, then time the deploy of the same bytes, and a
        // cached load of them to subtract.
        let bytes = variant(base, &format!("cached-deploy-{i}"));
        rt.load(bytes.clone()).await.unwrap();
        let t = Instant::now();
        host.deploy(bytes.clone()).await.unwrap();
        let deploy = t.elapsed();
        let t = Instant::now();
        rt.load(bytes).await.unwrap();
        let cached_load = t.elapsed();
        deploy_cached.push(deploy);
        swap.push(deploy.saturating_sub(cached_load));
    }
    // What the deploy's durable file write costs alone (write, fsync, rename).
    let mut write = Vec::new();
    for i in 0..SWAPS {
        use std::io::Write as _;
        let bytes = variant(base, &format!("write-{i}"));
        let tmp = jobs.join(".bench-write.partial");
        let t = Instant::now();
        let mut f = std::fs::File::create(&tmp).unwrap();
        f.write_all(&bytes).unwrap();
        f.sync_all().unwrap();
        std::fs::rename(&tmp, jobs.join(".bench-write")).unwrap();
        write.push(t.elapsed());
    }
    let _ = std::fs::remove_file(jobs.join(".bench-write"));
    // Through the watcher: rename a file in, wait for the job to change.
    let mut watch = Vec::new();
    let mut events = host.subscribe();
    for i in 0..WATCHED {
        let bytes = variant(base, &format!("watch-{i}"));
        rt.load(bytes.clone()).await.unwrap();
        watch.push(swap_through_watcher(&mut events, jobs, &bytes).await);
    }
    // The same from the on-disk artifact cache: each file's bytes were
    // compiled (and cached) before, then pushed out of the runtime's list of
    // recent versions by loading other components, as after a restart.
    let fillers: Vec<Vec<u8>> = (0..RECENT_VERSIONS).map(|i| variant(base, &format!("filler-{i}"))).collect();
    let disk: Vec<Vec<u8>> = (0..WATCHED).map(|i| variant(base, &format!("watch-disk-{i}"))).collect();
    for bytes in disk.iter().chain(&fillers) {
        rt.load(bytes.clone()).await.unwrap();
    }
    let mut watch_disk = Vec::new();
    for bytes in &disk {
        for f in &fillers {
            rt.load(f.clone()).await.unwrap();
        }
        watch_disk.push(swap_through_watcher(&mut events, jobs, bytes).await);
    }
    summary("load raw", load_raw);
    summary("load cached", load_cached);
    summary("deploy raw", deploy_raw);
    summary("deploy cached", deploy_cached);
    summary("swap (no load)", swap);
    summary("  of which fsync", write);
    let (watch, watch_host): (Vec<_>, Vec<_>) = watch.into_iter().unzip();
    let (watch_disk, watch_disk_host): (Vec<_>, Vec<_>) = watch_disk.into_iter().unzip();
    summary("watch cached", watch);
    summary("  event to live", watch_host);
    summary("watch disk cache", watch_disk);
    summary("  event to live", watch_disk_host);
}

async fn run_with_swaps(host: &Host, db: &Path, base: &[u8], users: i64) {
    let variants: Vec<Vec<u8>> = (0..SWAPS).map(|i| variant(base, &format!("run-{i}"))).collect();
    for v in &variants {
        host.runtime.load(v.clone()).await.unwrap();
    }
    let before = host.store.get_job("slow-items").await.unwrap().unwrap().component_version;
    let started = host.start_run("slow-items", RunArgs::default()).await.unwrap();
    let t0 = Instant::now();
    let mut samples: Vec<(Duration, u64)> = Vec::new();
    let mut swaps: Vec<Duration> = Vec::new();
    let mut swap_took: Vec<Duration> = Vec::new();
    let mut next = 0;
    let mut done_rx = started.done;
    let report = loop {
        if let Ok(r) = done_rx.try_recv() {
            break r;
        }
        let done = host.live_progress().await.unwrap().get(&started.id).map_or(0, |p| p.done);
        samples.push((t0.elapsed(), done));
        if next < SWAPS && done as i64 >= users * (next as i64 + 1) / (SWAPS as i64 + 1) {
            swaps.push(t0.elapsed());
            let t = Instant::now();
            host.deploy(variants[next].clone()).await.unwrap();
            swap_took.push(t.elapsed());
            next += 1;
        }
        actix_rt::time::sleep(Duration::from_micros(500)).await;
    };
    let wall = t0.elapsed();
    let conn = rusqlite::Connection::open(db).unwrap();
    let q = |sql: &str| -> i64 { conn.query_row(sql, [], |r| r.get(0)).unwrap() };
    let visits = q("SELECT count(*) FROM visits");
    let distinct = q("SELECT count(DISTINCT user_id) FROM visits");
    let other_runs = q(&format!("SELECT count(*) FROM visits WHERE execution_id != {}", started.id.0));
    let e = host.store.get_execution(started.id).await.unwrap().unwrap();
    let after = host.store.get_job("slow-items").await.unwrap().unwrap().component_version;
    println!(
        "run              users={users} wall {:.2}s ({:.0} items/s), status {}, {} swaps during the run (v{:?} -> v{:?})",
        wall.as_secs_f64(),
        users as f64 / wall.as_secs_f64(),
        report.status,
        swaps.len(),
        before.unwrap_or(0),
        after.unwrap_or(0)
    );
    println!(
        "  lost {}  duplicated {}  other executions {}  execution ran version {:?} (started on {:?}): mixed-version items {}",
        users - distinct,
        visits - distinct,
        other_runs,
        e.component_version,
        before,
        if e.component_version == before { 0 } else { e.items_ok }
    );
    if !swap_took.is_empty() {
        summary("  deploy in run", swap_took);
    }
    println!("  {} progress samples", samples.len());
    // Per-item latency in 10 ms windows: window / items done in it.
    let window = Duration::from_millis(10);
    let mut per_window: Vec<(Duration, u64)> = Vec::new();
    let mut last = (Duration::ZERO, 0u64);
    for &(t, done) in &samples {
        if t - last.0 >= window {
            per_window.push((last.0, done - last.1));
            last = (t, done);
        }
    }
    let near_swap = |t: Duration| swaps.iter().any(|s| t + window >= *s && t <= *s + Duration::from_millis(50));
    let lat = |w: &[(Duration, u64)]| -> Vec<f64> {
        let mut v: Vec<f64> = w.iter().filter(|(_, n)| *n > 0).map(|(_, n)| ms(window) * 1e3 / *n as f64).collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let (swap_w, calm_w): (Vec<_>, Vec<_>) = per_window.iter().partition(|(t, _)| near_swap(*t));
    let stalled = |w: &[(Duration, u64)]| w.iter().filter(|(_, n)| *n == 0).count();
    for (name, w) in [("windows with a swap", &swap_w), ("other windows", &calm_w)] {
        let v = lat(w);
        if v.is_empty() {
            continue;
        }
        let p = |q: f64| v[((v.len() - 1) as f64 * q).round() as usize];
        println!(
            "  {name:<20} n={:<4} per-item latency p50 {:>7.2} µs  p99 {:>7.2} µs  (windows with no item done: {})",
            w.len(),
            p(0.5),
            p(0.99),
            stalled(w)
        );
    }
}

/// Resident set size of this process, MiB.
fn rss_mib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// Twenty deploys a second for ten seconds, cycling through four cached
/// variants (each deploy a full validation and swap), with a run every
/// second; resident memory before and after.
async fn storm(host: &Host, base: &[u8]) {
    let variants: Vec<Vec<u8>> = (0..4).map(|i| variant(base, &format!("storm-{i}"))).collect();
    for v in &variants {
        host.runtime.load(v.clone()).await.unwrap();
    }
    host.deploy(variants[0].clone()).await.unwrap();
    let baseline = rss_mib();
    let tick = Duration::from_millis(50);
    let t0 = Instant::now();
    let mut peak = baseline;
    for i in 1..=200 {
        let t = Instant::now();
        host.deploy(variants[i % variants.len()].clone()).await.unwrap();
        if i % 20 == 0 {
            let args = RunArgs { limit: Some(10), ..RunArgs::default() };
            host.run_now("slow-items", args).await.unwrap();
        }
        peak = peak.max(rss_mib());
        actix_rt::time::sleep(tick.saturating_sub(t.elapsed())).await;
    }
    let took = t0.elapsed();
    actix_rt::time::sleep(Duration::from_secs(1)).await;
    println!(
        "storm            200 deploys in {:.1}s with 10 runs: RSS baseline {baseline:.1} MiB, peak {peak:.1} MiB, after {:.1} MiB",
        took.as_secs_f64(),
        rss_mib()
    );
}

fn main() {
    let users: i64 = std::env::args().skip(1).find_map(|a| a.parse().ok()).unwrap_or(100_000);
    let system = actix_rt::System::new();
    system.block_on(async move {
        let dir = tempfile::tempdir().unwrap();
        let jobs: PathBuf = dir.path().join("jobs");
        std::fs::create_dir(&jobs).unwrap();
        let base = fixture();
        std::fs::write(jobs.join("slow_items.wasm"), &base).unwrap();
        fixtures::users_and_visits(&dir.path().join("sundial.db"), users);
        let host = start_host(dir.path()).await;
        println!("hot swap of the slow-items fixture ({} KiB)", base.len() / 1024);
        latencies(&host, &jobs, &base).await;
        run_with_swaps(&host, &dir.path().join("sundial.db"), &base, users).await;
        storm(&host, &base).await;
        host.stop().await;
    });
}

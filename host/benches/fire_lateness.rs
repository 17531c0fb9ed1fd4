//! Fire lateness: the start of the guest call minus the scheduled instant,
//! with N jobs each firing every second, through the real path — Scheduler →
//! JobSupervisor → execution row in SQLite (group-committed) → worker thread →
//! fresh Store → guest call. The same load then runs through
//! tokio-cron-scheduler (lateness = the closure's start minus the second it
//! fired for) in the same process.
//!
//! Usage: `cargo bench -p sundial-host --bench fire_lateness -- [SECONDS] [N...]`
//! (default: 20 s, N = 1000 and 10000). Needs `cargo xtask build-jobs --fixtures`.
//! With `SUNDIAL_BENCH_POSTGRES_URL` (a server's URL) Sundial's tables are on
//! Postgres instead, in a database `sundial_bench_fire` made anew for each run.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../tests/all/fixtures.rs"]
mod fixtures;

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix::prelude::*;
use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use sundial::actors::repository::Repository;
use sundial::actors::scheduler::{RegisterJob, Scheduler, Shutdown, SwitchScheduler};
use sundial::actors::supervisor::{JobSupervisor, SupervisorSetup};
use sundial::clock::{Clock, SystemClock};
use sundial::config::Config;
use sundial::events::Event;
use sundial::model::{JobKind, MisfirePolicy, Trigger};
use sundial::runtime::Runtime;
use sundial::store::{JobDefinition, Store};

const WARMUP: Duration = Duration::from_secs(3);

struct Figures {
    samples: Vec<f64>, // milliseconds
    expected: u64,
}

impl Figures {
    fn print(&self, who: &str, n: usize, secs: u64) {
        let mut s = self.samples.clone();
        s.sort_by(|a, b| a.partial_cmp(b).unwrap());
        let pct = |p: f64| if s.is_empty() { f64::NAN } else { s[((s.len() - 1) as f64 * p).round() as usize] };
        let missed = self.expected.saturating_sub(s.len() as u64);
        println!(
            "{who:<22} jobs={n:<6} secs={secs:<3} fires={:<7} min={:>7.3}ms p50={:>8.3}ms p99={:>8.3}ms max={:>9.3}ms missed={missed}",
            s.len(),
            s.first().copied().unwrap_or(f64::NAN),
            pct(0.5),
            pct(0.99),
            s.last().copied().unwrap_or(f64::NAN),
        );
    }
}

fn fixture() -> Vec<u8> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let p = root.join("target/sundial-test-jobs/faulty.wasm");
    std::fs::read(&p).unwrap_or_else(|_| panic!("{} missing: run cargo xtask build-jobs --fixtures", p.display()))
}

/// A new, empty database on the server, and its URL.
async fn fresh_postgres(server: &str) -> String {
    use sqlx::Connection as _;
    let mut admin = sqlx::PgConnection::connect(server).await.unwrap();
    sqlx::raw_sql("DROP DATABASE IF EXISTS sundial_bench_fire WITH (FORCE); CREATE DATABASE sundial_bench_fire")
        .execute(&mut admin)
        .await
        .unwrap();
    let (base, _) = server.rsplit_once('/').unwrap();
    format!("{base}/sundial_bench_fire")
}

async fn sundial_run(n: usize, secs: u64) -> Figures {
    let dir = tempfile::tempdir().unwrap();
    let url = match std::env::var("SUNDIAL_BENCH_POSTGRES_URL") {
        Ok(server) => fresh_postgres(&server).await,
        Err(_) => format!("sqlite://{}", dir.path().join("bench.db").display()),
    };
    let store = Store::open(&url).await.unwrap();
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let runtime = Runtime::new(clock.clone()).unwrap();
    let version = runtime.load(fixture()).await.unwrap();
    let config = Config::parse("[defaults]\ntimeout_secs = 10\n").unwrap();
    let job_config = config.job(&version.info).unwrap();
    let repo = Repository::new(store.clone()).start();
    // Register everything first, then switch the scheduler on.
    let scheduler = Scheduler::new(repo.clone(), clock.clone(), false).start();
    let events = sundial::events::channel(1 << 22);
    let mut rx = events.subscribe();

    let mut supervisors = Vec::with_capacity(n);
    for i in 0..n {
        let job = store
            .upsert_job(&JobDefinition {
                name: format!("job{i}"),
                description: String::new(),
                kind: JobKind::Single,
                schedule: "* * * * * *".into(),
                timezone: "UTC".into(),
                enabled: Some(true),
                digest: version.digest.clone(),
                component: None,
            })
            .await
            .unwrap();
        let supervisor = JobSupervisor::new(SupervisorSetup {
            job: job.clone(),
            config: job_config.clone(),
            code: sundial::runtime::JobCode::Component(version.clone()),
            runtime: runtime.clone(),
            repo: repo.clone(),
            app_db: None,
            state_db: None,
            slots: None,
            clock: clock.clone(),
            node: "bench".into(),
            lease: Duration::from_secs(15),
            events: events.clone(),
        })
        .start();
        scheduler
            .send(RegisterJob {
                job,
                misfire: MisfirePolicy::Skip,
                supervisor: supervisor.clone(),
                item_zones: None,
                app_db: None,
            })
            .await
            .unwrap()
            .unwrap();
        supervisors.push(supervisor);
    }

    scheduler.send(SwitchScheduler { enabled: true }).await.unwrap();
    let from = (Utc::now() + TimeDelta::from_std(WARMUP).unwrap()).duration_trunc(TimeDelta::seconds(1)).unwrap();
    let to = from + TimeDelta::seconds(secs as i64);
    let mut samples = Vec::new();
    let mut seen = HashSet::new();
    let deadline = tokio::time::Instant::now() + WARMUP + Duration::from_secs(secs + 5);
    loop {
        let ev = match tokio::time::timeout_at(deadline, rx.recv()).await {
            Ok(Ok(ev)) => ev,
            Ok(Err(tokio::sync::broadcast::error::RecvError::Lagged(k))) => panic!("bench lost {k} events"),
            Ok(Err(_)) | Err(_) => break,
        };
        if let Event::ExecutionFinished {
            job,
            trigger: Trigger::Schedule,
            scheduled_for,
            guest_started_at: Some(g),
            ..
        } = ev
            && scheduled_for >= from
            && scheduled_for < to
            && seen.insert((job, scheduled_for))
        {
            samples.push((g - scheduled_for).num_microseconds().unwrap() as f64 / 1000.0);
        }
    }
    scheduler.send(Shutdown).await.unwrap();
    drop(supervisors);
    store.close().await;
    Figures { samples, expected: n as u64 * secs }
}

fn tokio_cron_run(n: usize, secs: u64) -> Figures {
    use tokio_cron_scheduler::{Job, JobScheduler};
    let rt = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    rt.block_on(async move {
        // (job, the second it fired for, lateness in ms)
        type Fires = Arc<Mutex<Vec<(usize, DateTime<Utc>, f64)>>>;
        let fires: Fires = Arc::new(Mutex::new(Vec::new()));
        let sched = JobScheduler::new().await.unwrap();
        for i in 0..n {
            let fires = fires.clone();
            let job = Job::new("* * * * * *", move |_id, _l| {
                let now = Utc::now();
                let second = now.duration_trunc(TimeDelta::seconds(1)).unwrap();
                let late = (now - second).num_microseconds().unwrap() as f64 / 1000.0;
                fires.lock().unwrap().push((i, second, late));
            })
            .unwrap();
            sched.add(job).await.unwrap();
        }
        sched.start().await.unwrap();
        let from = (Utc::now() + TimeDelta::from_std(WARMUP).unwrap()).duration_trunc(TimeDelta::seconds(1)).unwrap();
        let to = from + TimeDelta::seconds(secs as i64);
        tokio::time::sleep(WARMUP + Duration::from_secs(secs + 2)).await;
        let mut sched = sched;
        let _ = sched.shutdown().await;
        let fires = fires.lock().unwrap();
        let mut seen = HashSet::new();
        let samples = fires
            .iter()
            .filter(|(i, s, _)| *s >= from && *s < to && seen.insert((*i, *s)))
            .map(|(_, _, l)| *l)
            .collect();
        Figures { samples, expected: n as u64 * secs }
    })
}

/// One execution after another on one thread (no scheduler, no database):
/// what a single fire costs the runtime, the floor under the burst figures.
fn sequential_cost(runs: usize) {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    let runtime = Runtime::new(clock).unwrap();
    let version = runtime.block_on(runtime.load(fixture())).unwrap();
    let invocation = |i: usize| fixtures::invocation(i as i64, &format!("job{i}"), Utc::now());
    for i in 0..runs / 10 {
        runtime.block_on(runtime.execute(version.clone(), invocation(i)));
    }
    let started = std::time::Instant::now();
    for i in 0..runs {
        let report = runtime.block_on(runtime.execute(version.clone(), invocation(i)));
        assert_eq!(report.status, sundial::model::ExecutionStatus::Succeeded);
    }
    let each = started.elapsed().as_secs_f64() * 1e6 / runs as f64;
    println!("one execution at a time (instantiate, call, tear down, worker hand-off): {each:.1} µs each");
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let secs: u64 = args.first().and_then(|a| a.parse().ok()).unwrap_or(20);
    let loads: Vec<usize> =
        if args.len() > 1 { args[1..].iter().map(|a| a.parse().unwrap()).collect() } else { vec![1000, 10_000] };
    println!("fire lateness: guest call start minus scheduled instant; every job fires every second");
    sequential_cost(5000);
    for &n in &loads {
        let f = actix_rt::System::new().block_on(sundial_run(n, secs));
        let backend = if std::env::var_os("SUNDIAL_BENCH_POSTGRES_URL").is_some() { "postgres" } else { "sqlite" };
        f.print(&format!("sundial ({backend})"), n, secs);
        // FIRE_LATENESS_SUNDIAL_ONLY=1 leaves the comparison out (for profiling).
        if std::env::var_os("FIRE_LATENESS_SUNDIAL_ONLY").is_none() {
            let f = tokio_cron_run(n, secs);
            f.print("tokio-cron-scheduler", n, secs);
        }
    }
}

//! The `cleanup` job written in Python (`jobs-python/cleanup`, built by
//! componentize-py into `target/sundial-jobs/cleanup_py.wasm`), run by the
//! real host on real SQLite files, next to the Rust `cleanup` job it ports:
//! the same rows go, the same counts, summary and log line are recorded, and
//! bad arguments and missing grants fail the same way.
//!
//! The component is built by `cargo xtask build-jobs` once
//! `scripts/install-python-toolchain.sh` has installed componentize-py. When
//! it is missing these tests say so and pass, except under CI, where they fail.
//!
//! The component embeds a whole Python interpreter (about 18 MB): compiling it
//! takes minutes in this debug build, against milliseconds for a Rust job. It
//! is compiled once into a compiled-component cache under `target/`, shared by
//! these tests and kept between runs, as the host's own cache is kept between
//! restarts.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use sundial::clock::SystemClock;
use sundial::host::Host;
use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, RunReport};
use sundial::runtime::Runtime;

use crate::helpers::*;

const COMPONENT: &str = "cleanup_py.wasm";
const JOB: &str = "cleanup-py";
/// The instant of every run (the manual clock).
const NOW: &str = "2026-11-22T10:00:00Z";

/// How to get the component, for the skip and failure messages.
const HOW_TO_BUILD: &str = "run scripts/install-python-toolchain.sh, then cargo xtask build-jobs";

/// The Python component, or `None` (after saying why) when it has not been
/// built and this is not CI.
fn python_component() -> Option<PathBuf> {
    let path = root().join("target/sundial-jobs").join(COMPONENT);
    if path.is_file() {
        return Some(path);
    }
    if std::env::var_os("CI").is_some() {
        panic!("{} is missing: {HOW_TO_BUILD}", path.display());
    }
    eprintln!("skipping the Python job test: {} is missing ({HOW_TO_BUILD})", path.display());
    None
}

/// The compiled-component cache holding the Python component, compiled
/// there (once per process, and only if it is not there yet) on first use.
fn compiled_cache(component: &Path) -> PathBuf {
    static CACHE: OnceLock<PathBuf> = OnceLock::new();
    CACHE
        .get_or_init(|| {
            let dir = root().join("target/sundial-test-cache");
            let runtime = Runtime::with_cache(Arc::new(SystemClock), Some(&dir)).unwrap();
            let bytes = std::fs::read(component).unwrap();
            let started = Instant::now();
            runtime.load_blocking(&bytes).unwrap();
            eprintln!("{COMPONENT}: compiled (or found in {}) in {:.2?}", dir.display(), started.elapsed());
            dir
        })
        .clone()
}

/// An environment whose jobs directory holds the Python component, with
/// `config` and the shared compiled-component cache.
fn python_env(component: &Path, config: &str) -> Env {
    let cache = compiled_cache(component);
    let env = Env::new(&[]).clock(NOW).config(&format!("cache_dir = '{}'", cache.display())).config(config);
    std::fs::copy(component, env.jobs_dir().join(COMPONENT)).unwrap();
    env
}

/// The Python job's limits. Its interpreter starts with a linear memory of
/// about 13 MiB and a run takes tens of milliseconds, so these
/// tighter-than-default limits hold it with room to spare. Compiling is not
/// part of a run: it happens when the host loads the component.
const PYTHON_LIMITS: &str = "timeout_secs = 60\nmemory_mib = 64";

/// Starts a host and says how long loading the jobs took.
async fn start(env: &Env, what: &str) -> Host {
    let started = Instant::now();
    let host = env.host(false).await;
    eprintln!("{what}: host started (jobs loaded) in {:.2?}", started.elapsed());
    host
}

/// Runs a job now and says how long it took.
async fn run(host: &Host, job: &str, args: &[(&str, &str)]) -> RunReport {
    let args =
        RunArgs { args: args.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..RunArgs::default() };
    let started = Instant::now();
    let report = host.run_now(job, args).await.unwrap();
    eprintln!("{job}: run in {:.2?}", started.elapsed());
    report
}

/// Ids of the rows left in the tables the job deletes from.
async fn remaining(env: &Env) -> (Vec<i64>, Vec<i64>) {
    let db = env.sql().await;
    let sessions = sqlx::query_scalar("SELECT id FROM sessions ORDER BY id").fetch_all(&db).await.unwrap();
    let entries = sqlx::query_scalar("SELECT id FROM food_entries ORDER BY id").fetch_all(&db).await.unwrap();
    (sessions, entries)
}

/// Adds rows on both sides of each boundary: a session that expires exactly
/// now stays, one a second earlier goes; an entry soft-deleted exactly
/// `retention_days` ago stays, one a second earlier goes, and an entry that
/// was never deleted stays however old it is.
fn add_boundary_rows(env: &Env) {
    let app = env.app();
    app.execute_batch(
        "INSERT INTO users (id, name, plan, timezone) VALUES (900001, 'boundary', 'FREE', 'UTC');
         INSERT INTO sessions (id, user_id, token, expires_at) VALUES
             (900001, 900001, 'expires-now', '2026-11-22T10:00:00Z'),
             (900002, 900001, 'expired-a-second-ago', '2026-11-22T09:59:59Z');
         INSERT INTO food_entries (id, user_id, name, calories, eaten_at, deleted_at) VALUES
             (900001, 900001, 'deleted 30 days ago', 100, '2026-10-01T08:00:00Z', '2026-10-23T10:00:00Z'),
             (900002, 900001, 'deleted 30 days and a second ago', 100, '2026-10-01T08:00:00Z', '2026-10-23T09:59:59Z'),
             (900003, 900001, 'never deleted', 100, '2020-01-01T08:00:00Z', NULL);",
    )
    .unwrap();
}

#[actix_rt::test]
async fn the_python_cleanup_job_deletes_exactly_what_the_rust_one_does() {
    // The Rust job first: building it (cargo xtask build-jobs) also builds the Python one.
    let rust_component = wasm("cleanup");
    let Some(component) = python_component() else { return };
    eprintln!("{COMPONENT}: {} bytes", std::fs::metadata(&component).unwrap().len());

    let py = python_env(&component, &format!("[jobs.{JOB}]\ndatabase = \"read-write\"\n{PYTHON_LIMITS}"));
    let rs = Env::read_write_job("cleanup", NOW);
    let seeded = py.seed_demo(300, t(NOW)).await;
    assert_eq!(rs.seed_demo(300, t(NOW)).await, seeded, "both databases hold the same rows");
    assert!(seeded.expired_sessions > 0 && seeded.old_deleted_entries > 0);
    add_boundary_rows(&py);
    add_boundary_rows(&rs);
    let (sessions_before, entries_before) = remaining(&py).await;

    let py_host = start(&py, "Python job").await;
    let rs_host = start(&rs, "Rust job").await;

    // The job is registered under its own name, with the Rust job's schedule and request.
    let job = py_host.store.get_job(JOB).await.unwrap().expect("cleanup-py is loaded");
    assert_eq!(job.load_error, None);
    assert_eq!(job.component_digest.as_deref(), Some(digest(&component).as_str()));
    assert_ne!(digest(&component), digest(&rust_component));

    let report = run(&py_host, JOB, &[]).await;
    assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
    // The seeded rows past the default 30 days, plus one of each pair of boundary rows.
    let expected = seeded.expired_sessions + seeded.old_deleted_entries + 2;
    assert_eq!(report.changed, expected);
    assert_eq!(
        report.summary.as_deref(),
        Some(format!(
            "{} sessions, {} food entries deleted",
            seeded.expired_sessions + 1,
            seeded.old_deleted_entries + 1
        ))
        .as_deref()
    );
    assert!(
        report.logs.contains(&format!(
            "deleted {} expired sessions and {} food entries deleted before 2026-10-23T10:00:00Z",
            seeded.expired_sessions + 1,
            seeded.old_deleted_entries + 1
        )),
        "{}",
        report.logs
    );

    // What is left: nothing expired, nothing soft-deleted past the retention period.
    let (sessions, entries) = remaining(&py).await;
    assert_eq!(sessions.len() as u64, sessions_before.len() as u64 - seeded.expired_sessions - 1);
    assert_eq!(entries.len() as u64, entries_before.len() as u64 - seeded.old_deleted_entries - 1);
    assert!(sessions.contains(&900001) && !sessions.contains(&900002));
    assert!(entries.contains(&900001) && !entries.contains(&900002) && entries.contains(&900003));
    let db = py.sql().await;
    let (expired, old): (i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM sessions WHERE expires_at < '2026-11-22T10:00:00Z'),
                (SELECT COUNT(*) FROM food_entries WHERE deleted_at < '2026-10-23T10:00:00Z')",
    )
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!((expired, old), (0, 0));

    // The Rust job, on the same rows, reports and leaves exactly the same.
    let rs_report = run(&rs_host, "cleanup", &[]).await;
    assert_eq!(
        (rs_report.status, rs_report.changed, &rs_report.summary),
        (report.status, report.changed, &report.summary)
    );
    assert_eq!(remaining(&rs).await, remaining(&py).await);

    // The execution is recorded like any other.
    let execs = py_host.store.list_executions(JOB, 10, None).await.unwrap();
    assert_eq!(execs.len(), 1);
    assert_eq!(execs[0].status, ExecutionStatus::Succeeded);
    assert_eq!(execs[0].component_digest.as_deref(), Some(digest(&component).as_str()));

    // A second run finds nothing left; a shorter retention deletes the rest of the soft-deleted entries.
    let again = run(&py_host, JOB, &[]).await;
    assert_eq!((again.status, again.changed), (ExecutionStatus::Succeeded, 0));
    let soft_deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM food_entries WHERE deleted_at IS NOT NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(soft_deleted > 0, "entries deleted within the retention period are kept");
    let all = run(&py_host, JOB, &[("retention_days", "0")]).await;
    assert_eq!((all.status, all.changed), (ExecutionStatus::Succeeded, soft_deleted as u64));
    assert_eq!(all.summary.as_deref(), Some(format!("0 sessions, {soft_deleted} food entries deleted").as_str()));
    let rs_all = run(&rs_host, "cleanup", &[("retention_days", "0")]).await;
    assert_eq!((rs_all.status, rs_all.changed, rs_all.summary), (all.status, all.changed, all.summary));

    // Bad arguments fail as fatal, with the Rust job's message, and delete nothing.
    for bad in ["-1", "thirty", " 30", "1_0", "1.5", "99999999999999999999"] {
        let before = remaining(&py).await;
        let report = run(&py_host, JOB, &[("retention_days", bad)]).await;
        let rs_report = run(&rs_host, "cleanup", &[("retention_days", bad)]).await;
        assert_eq!(report.status, ExecutionStatus::Failed, "{bad:?}: {report:?}");
        assert_eq!(report.error_class, Some(ErrorClass::Fatal), "{bad:?}");
        assert_eq!(
            report.error_message.as_deref(),
            Some(format!("retention_days must be a whole number of days, got {bad:?}").as_str())
        );
        assert_eq!(
            (rs_report.status, rs_report.error_class, rs_report.error_message),
            (report.status, report.error_class, report.error_message),
            "{bad:?}"
        );
        assert_eq!(remaining(&py).await, before, "{bad:?} deletes nothing");
    }
    // A leading `+` is a number to Rust's parser, and so to the Python job.
    let plus = run(&py_host, JOB, &[("retention_days", "+7")]).await;
    assert_eq!(plus.status, ExecutionStatus::Succeeded, "{plus:?}");
}

#[actix_rt::test]
async fn the_python_cleanup_job_needs_its_database_grant() {
    let Some(component) = python_component() else { return };
    let env = python_env(&component, &format!("[jobs.{JOB}]\n{PYTHON_LIMITS}"));
    let seeded = env.seed_demo(50, t(NOW)).await;
    let host = start(&env, "Python job without a grant").await;

    let report = run(&host, JOB, &[]).await;
    assert_eq!(report.status, ExecutionStatus::Failed, "{report:?}");
    assert_eq!(report.error_class, Some(ErrorClass::Fatal));
    assert!(report.error_message.as_deref().unwrap().starts_with("database access denied: "), "{report:?}");
    let (sessions, entries) = remaining(&env).await;
    assert_eq!((sessions.len() as u64, entries.len() as u64), (seeded.sessions, seeded.food_entries));
}

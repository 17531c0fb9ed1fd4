//! Embedding: the builder, a shared application pool, native jobs, graceful
//! shutdown, and the example application (`host/examples/embedded.rs`) run
//! as a process: its own routes and Sundial's API mounted under a prefix.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use sundial::host::{Host, HostError};
use sundial::model::{Capability, DbAccess, ExecutionStatus, JobInfo, JobKind, RunArgs};
use sundial::runtime::{NativeContext, NativeError, NativeJob, NativeOutcome};
use sundial::store::StoreError;
use sundial::store::appdb::SqlValue;

use crate::fixtures::users_and_visits;
use crate::helpers::{Env, eventually, wasm};

const TOKEN: &str = "embedding-test-token-0123456789";

fn slow_items_env(users: i64, delay_ms: u64) -> Env {
    let env = Env::new(&["slow-items"])
        .config(&format!("[jobs.slow-items]\ndatabase = \"read-write\"\nargs = {{ delay_ms = \"{delay_ms}\" }}"));
    users_and_visits(&env.path().join("sundial.db"), users);
    env
}

fn count(db: &Path, sql: &str) -> i64 {
    rusqlite::Connection::open(db).unwrap().query_row(sql, [], |r| r.get(0)).unwrap()
}

/// A run in flight when the host stops gets the grace period and finishes;
/// meanwhile nothing new starts.
#[actix_rt::test]
async fn shutdown_lets_a_running_execution_finish_within_the_grace_period() {
    let env = slow_items_env(30, 30);
    let host = env.host(true).await;
    let started = host.start_run("slow-items", RunArgs::default()).await.unwrap();
    let stopping = {
        let host = host.clone();
        actix_rt::spawn(async move { host.shutdown(Duration::from_secs(20)).await })
    };
    let refused = eventually("a run refused while the host stops", || async {
        match host.start_run("slow-items", RunArgs::default()).await {
            Err(HostError::Rejected(r)) if r.to_string().contains("stopping") => Some(r),
            _ => None,
        }
    })
    .await;
    assert!(refused.to_string().contains("starts no new runs"), "{refused}");
    let report = stopping.await.unwrap();
    assert_eq!(report.in_flight, 1);
    assert!(report.cancelled.is_empty() && report.abandoned.is_empty(), "{report:?}");
    let done = started.done.await.unwrap();
    assert_eq!((done.status, done.items_ok), (ExecutionStatus::Succeeded, 30));
    let db = env.path().join("sundial.db");
    assert_eq!(count(&db, "SELECT count(*) FROM visits"), 30);
    let store = sundial::store::Store::open(&env.db_url()).await.unwrap();
    let runs = store.list_executions("slow-items", 10, None).await.unwrap();
    assert_eq!(runs.len(), 1, "nothing else started");
    assert_eq!(
        (runs[0].status, runs[0].items_ok),
        (ExecutionStatus::Succeeded, 30),
        "the finished execution is recorded before the store closes"
    );
    store.close().await;
}

/// A run that outlasts the grace period is cancelled, recorded `cancelled`
/// with the reason, and keeps the items it committed.
#[actix_rt::test]
async fn shutdown_cancels_what_outlasts_the_grace_period() {
    let env = slow_items_env(200, 50);
    let host = env.host(true).await;
    let started = host.start_run("slow-items", RunArgs::default()).await.unwrap();
    eventually("some items done", || async {
        let e = host.store.get_execution(started.id).await.unwrap()?;
        (e.items_total > 0).then_some(())
    })
    .await;
    let began = Instant::now();
    let report = host.shutdown(Duration::from_millis(300)).await;
    assert!(began.elapsed() < Duration::from_secs(5), "shutdown took {:?}", began.elapsed());
    assert_eq!(report.cancelled, vec![started.id]);
    assert!(report.abandoned.is_empty());
    let db = env.path().join("sundial.db");
    let store = sundial::store::Store::open(&env.db_url()).await.unwrap();
    let e = store.get_execution(started.id).await.unwrap().unwrap();
    store.close().await;
    let (status, message, ok) = (e.status, e.error_message.unwrap_or_default(), e.items_ok);
    assert_eq!(status, ExecutionStatus::Cancelled);
    assert!(message.contains("host stopped"), "{message}");
    let visits = count(&db, "SELECT count(*) FROM visits");
    assert!(visits > 0 && visits < 200, "part-way: {visits}");
    assert_eq!(ok, visits, "the row counts exactly the committed items");
}

/// A native job implemented by the embedding application.
struct CountUsers;

impl NativeJob for CountUsers {
    fn info(&self) -> JobInfo {
        JobInfo {
            name: "count-users".into(),
            description: "Counts users into user_counts".into(),
            kind: JobKind::Single,
            default_schedule: "0 * * * *".into(),
            default_timezone: "Asia/Tokyo".into(),
            capabilities: vec![Capability::Database(DbAccess::ReadWrite)],
        }
    }

    fn run(&self, ctx: &mut NativeContext<'_>) -> Result<NativeOutcome, NativeError> {
        let id = ctx.run.execution_id.0;
        let db = ctx.db.as_deref_mut().ok_or_else(|| NativeError::Fatal("no database grant".into()))?;
        let n = db
            .execute("INSERT INTO user_counts SELECT $1, count(*) FROM users", &[SqlValue::Integer(id)])
            .map_err(|e| NativeError::Fatal(e.to_string()))?;
        Ok(NativeOutcome { changed: n, message: Some("counted".into()) })
    }
}

/// The builder on an application's own pool: Sundial's tables land in the
/// application's database, a native job runs and is recorded like a
/// component job, and events reach a Rust subscriber.
#[actix_rt::test]
async fn builder_keeps_sundial_in_the_applications_pool_and_runs_native_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("app.db");
    let pool = sqlx::SqlitePool::connect_with(
        sqlx::sqlite::SqliteConnectOptions::new().filename(&file).create_if_missing(true),
    )
    .await
    .unwrap();
    sqlx::raw_sql(
        "CREATE TABLE users (id INTEGER PRIMARY KEY);
         INSERT INTO users (id) VALUES (1), (2), (3);
         CREATE TABLE user_counts (execution_id INTEGER, users INTEGER);",
    )
    .execute(&pool)
    .await
    .unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    std::fs::copy(wasm("cleanup"), dir.path().join("jobs/cleanup.wasm")).unwrap();
    let mut config = sundial::config::Config::parse("[jobs.count-users]\ndatabase = \"read-write\"").unwrap();
    config.base_dir = dir.path().to_path_buf();
    let host = Host::builder()
        .config(config)
        .database_pool(pool.clone())
        .jobs_dir(dir.path().join("jobs"))
        .native_job(CountUsers)
        .start()
        .await
        .unwrap();
    let mut events = host.subscribe();
    let report = host.run_now("count-users", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
    let (execution, users): (i64, i64) =
        sqlx::query_as("SELECT execution_id, users FROM user_counts").fetch_one(&pool).await.unwrap();
    assert_eq!(users, 3);
    // Sundial's own tables are in the application's database file.
    let (job, status, trigger): (String, String, String) = sqlx::query_as(
        "SELECT j.name, e.status, e.trigger FROM job_executions e JOIN jobs j ON j.id = e.job_id WHERE e.id = $1",
    )
    .bind(execution)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!((job.as_str(), status.as_str(), trigger.as_str()), ("count-users", "succeeded", "manual"));
    // Shown beside the component job, with its own schedule and zone.
    let names: Vec<String> = host.snapshots().await.unwrap().into_iter().map(|s| s.job.name).collect();
    assert_eq!(names, ["cleanup", "count-users"]);
    let native = host.job_snapshot("count-users").await.unwrap();
    assert_eq!((native.job.schedule.as_str(), native.job.timezone.as_str()), ("0 * * * *", "Asia/Tokyo"));
    let stored = host.store.get_job("count-users").await.unwrap().unwrap();
    assert!(stored.next_run_at.is_some(), "scheduled: {stored:?}");
    let mut seen = Vec::new();
    while let Ok(e) = events.try_recv() {
        seen.push(e.name());
    }
    assert!(seen.contains(&"execution_started") && seen.contains(&"execution_finished"), "{seen:?}");
    host.shutdown(Duration::from_secs(5)).await;
    // The application's pool outlives Sundial.
    let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM users").fetch_one(&pool).await.unwrap();
    assert_eq!(n, 3);
}

/// An in-memory pool cannot hold Sundial's tables: a clear error, no panic.
#[actix_rt::test]
async fn an_in_memory_pool_is_refused_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let pool = sqlx::SqlitePool::connect("sqlite::memory:").await.unwrap();
    let err = Host::builder().database_pool(pool).jobs_dir(dir.path().join("jobs")).start().await.err().unwrap();
    assert!(matches!(err, HostError::Store(StoreError::InMemory)), "{err:?}");
    assert!(err.to_string().contains("needs a database file"), "{err}");
}

/// The example application, as a process.
struct Example {
    child: Child,
    base: String,
    lines: std::sync::mpsc::Receiver<String>,
}

impl Example {
    fn binary() -> PathBuf {
        let sundial = PathBuf::from(env!("CARGO_BIN_EXE_sundial"));
        let exe = sundial.parent().unwrap().join("examples").join("embedded");
        assert!(
            exe.is_file(),
            "{} is not built: `cargo test` builds the examples (or run cargo build --examples)",
            exe.display()
        );
        exe
    }

    fn start(data: &Path, config: &Path, jobs: &Path) -> Example {
        let mut child = Command::new(Self::binary())
            .args(["--addr", "127.0.0.1:0", "--grace-secs", "20", "--data"])
            .arg(data)
            .arg("--config")
            .arg(config)
            .arg("--jobs-dir")
            .arg(jobs)
            .env("SUNDIAL_API_TOKEN", TOKEN)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                let _ = tx.send(line);
            }
        });
        let first = lines.recv_timeout(Duration::from_secs(60)).expect("the example prints its address");
        let base = first
            .strip_prefix("listening on ")
            .and_then(|r| r.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected first line: {first}"))
            .to_string();
        Example { child, base, lines }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// Starts `job` through the mounted API; its execution id.
async fn run_through_api(client: &reqwest::Client, ex: &Example, job: &str) -> i64 {
    let run: Value = client
        .post(ex.url(&format!("/sundial/api/scheduler/jobs/{job}/run")))
        .bearer_auth(TOKEN)
        .json(&json!({}))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    run["execution_id"].as_i64().unwrap()
}

async fn poll_execution(client: &reqwest::Client, ex: &Example, id: i64, want: &str) -> Value {
    eventually(&format!("execution {id} {want}"), || async {
        let e: Value = client
            .get(ex.url(&format!("/sundial/api/scheduler/executions/{id}")))
            .send()
            .await
            .ok()?
            .json()
            .await
            .ok()?;
        (e["status"] == want).then_some(e)
    })
    .await
}

/// The example application starts, serves its own routes beside Sundial's
/// API and UI under `/sundial/`, runs its native job and a component job
/// through the mounted API, and on SIGTERM lets the run in flight finish
/// before exiting 0.
#[actix_rt::test]
async fn the_embedded_example_serves_runs_jobs_and_stops_cleanly() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir(&data).unwrap();
    let jobs = dir.path().join("jobs");
    std::fs::create_dir(&jobs).unwrap();
    std::fs::copy(wasm("slow-items"), jobs.join("slow_items.wasm")).unwrap();
    users_and_visits(&data.join("notes.db"), 40);
    let config = dir.path().join("sundial.toml");
    std::fs::write(
        &config,
        "[jobs.notes-digest]\ndatabase = \"read-write\"\n[jobs.slow-items]\ndatabase = \"read-write\"\nargs = { delay_ms = \"60\" }\n",
    )
    .unwrap();
    let ex = Example::start(&data, &config, &jobs);
    let client = reqwest::Client::new();

    // The application's own routes.
    for text in ["first", "second"] {
        let r = client.post(ex.url("/notes")).json(&json!({ "text": text })).send().await.unwrap();
        assert_eq!(r.status(), 201);
    }
    let notes: Value = client.get(ex.url("/notes")).send().await.unwrap().json().await.unwrap();
    assert_eq!(notes.as_array().unwrap().len(), 2);

    // Sundial's API under the prefix: both jobs listed; state changes need the token.
    let list: Value = client.get(ex.url("/sundial/api/scheduler/jobs")).send().await.unwrap().json().await.unwrap();
    let mut names: Vec<&str> = list["jobs"].as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    names.sort();
    assert_eq!(names, ["notes-digest", "slow-items"]);
    let denied =
        client.post(ex.url("/sundial/api/scheduler/jobs/notes-digest/run")).json(&json!({})).send().await.unwrap();
    assert_eq!(denied.status(), 401);
    let id = run_through_api(&client, &ex, "notes-digest").await;
    let e = poll_execution(&client, &ex, id, "succeeded").await;
    assert_eq!(e["job"], "notes-digest");
    let digests: Value = client.get(ex.url("/digests")).send().await.unwrap().json().await.unwrap();
    assert_eq!(digests[0]["notes"], 2, "{digests}");

    // The UI under the prefix, with its assets.
    let r = client.get(ex.url("/sundial")).send().await.unwrap();
    assert_eq!(r.url().path(), "/sundial/", "redirected to the trailing slash");
    let html = r.text().await.unwrap();
    assert!(html.contains(r#"src="ui/app.js""#), "relative asset links");
    assert_eq!(client.get(ex.url("/sundial/ui/app.js")).send().await.unwrap().status(), 200);
    assert_eq!(client.get(ex.url("/sundial/nope")).send().await.unwrap().status(), 404);

    // A component run in flight when SIGTERM comes: it finishes, then the process exits 0.
    let slow = run_through_api(&client, &ex, "slow-items").await;
    poll_execution(&client, &ex, slow, "running").await;
    let pid = ex.child.id().to_string();
    assert!(Command::new("kill").args(["-TERM", &pid]).status().unwrap().success());
    let mut ex = ex;
    let began = Instant::now();
    let status = loop {
        if let Some(s) = ex.child.try_wait().unwrap() {
            break s;
        }
        assert!(began.elapsed() < Duration::from_secs(30), "the example did not stop");
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
    let last: Vec<String> = ex.lines.try_iter().collect();
    assert!(last.iter().any(|l| l.starts_with("stopped (1 executions were running, 0 cancelled)")), "{last:?}");
    let db = data.join("notes.db");
    assert_eq!(count(&db, "SELECT count(*) FROM visits"), 40, "the run finished during the grace period");
    let conn = rusqlite::Connection::open(&db).unwrap();
    let status: String =
        conn.query_row("SELECT status FROM job_executions WHERE id = ?1", [slow], |r| r.get(0)).unwrap();
    assert_eq!(status, "succeeded");
}

//! Helpers that make each test read in a few lines: real components built
//! from the repo's guest crates (once per test run), a real SQLite file in a
//! temporary directory, and a host started on it.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Connection as _;
use sundial::clock::{Clock, ManualClock};
use sundial::config::Config;
use sundial::host::{Host, HostOptions};
use sundial::model::ExecutionRecord;
use sundial::store::Store;
use tempfile::TempDir;

/// The server's URL.
pub fn server_url() -> String {
    std::env::var("SUNDIAL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A database of the test's own, dropped when this is dropped.
pub struct PgDatabase {
    pub name: String,
    pub url: String,
}

impl PgDatabase {
    pub async fn new() -> PgDatabase {
        static N: AtomicU32 = AtomicU32::new(0);
        let server = server_url();
        let name = format!("sundial_t{}_{}", std::process::id(), N.fetch_add(1, Ordering::Relaxed));
        let mut admin = sqlx::PgConnection::connect(&server)
            .await
            .unwrap_or_else(|e| panic!("these tests need Postgres at {server} (SUNDIAL_TEST_POSTGRES_URL): {e}"));
        sqlx::query(&format!("DROP DATABASE IF EXISTS {name}")).execute(&mut admin).await.unwrap();
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.unwrap();
        admin.close().await.unwrap();
        let (base, _) = server.rsplit_once('/').unwrap();
        PgDatabase { url: format!("{base}/{name}"), name }
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // Blocking, outside any runtime: connections still open are ended.
        let (server, name) = (server_url(), self.name.clone());
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                if let Ok(mut admin) = sqlx::PgConnection::connect(&server).await {
                    let _ =
                        sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut admin).await;
                }
            });
        })
        .join();
    }
}

/// A database of the test's own, from synchronous code.
pub fn new_database() -> PgDatabase {
    std::thread::spawn(|| {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(PgDatabase::new())
    })
    .join()
    .unwrap()
}

/// Whether Sundial's own tables are on Postgres in this run
/// (`SUNDIAL_TEST_STORE=postgres`; the application data stays in the
/// environment's SQLite file). Tests of SQLite-only behaviour return early.
pub fn store_on_postgres() -> bool {
    std::env::var("SUNDIAL_TEST_STORE").is_ok_and(|v| v == "postgres")
}

/// The workspace root.
pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf()
}

/// Builds every job and fixture component once per test process and returns
/// the path of `name` (crate name, e.g. "cleanup" or "flaky-items").
pub fn wasm(name: &str) -> PathBuf {
    static BUILT: OnceLock<()> = OnceLock::new();
    BUILT.get_or_init(|| {
        let status = Command::new(env!("CARGO"))
            .args(["run", "--quiet", "--package", "xtask", "--", "build-jobs", "--fixtures"])
            .current_dir(root())
            .status()
            .expect("run cargo xtask build-jobs");
        assert!(status.success(), "building the job components failed");
    });
    let file = format!("{}.wasm", name.replace('-', "_"));
    for dir in ["target/sundial-jobs", "target/sundial-test-jobs"] {
        let p = root().join(dir).join(&file);
        if p.is_file() {
            return p;
        }
    }
    panic!("no component {file} was built");
}

/// The `sundial` binary, to run in `dir` as a user would: none of Sundial's
/// variables from the test's own environment.
pub fn sundial_command(dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_sundial"));
    c.current_dir(dir)
        .env_remove("SUNDIAL_DATABASE_URL")
        .env_remove("SUNDIAL_JOBS_DIR")
        .env_remove("SUNDIAL_CONFIG")
        .env_remove("SUNDIAL_GUEST_SDK")
        .env("RUST_LOG", "warn");
    c
}

/// Runs `sundial args…` in `dir` to completion.
pub fn sundial_in(dir: &Path, args: &[&str]) -> Output {
    sundial_command(dir).args(args).output().unwrap()
}

/// A temporary directory with a jobs directory, a database and a config.
pub struct Env {
    pub clock: Option<ManualClock>,
    pub config: String,
    /// Sundial's tables, with `SUNDIAL_TEST_STORE=postgres`.
    pub pg: Option<PgDatabase>,
    pub dir: TempDir,
}

impl Env {
    /// An environment whose jobs directory holds the named components.
    pub fn new(jobs: &[&str]) -> Env {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        for j in jobs {
            let src = wasm(j);
            std::fs::copy(&src, dir.path().join("jobs").join(src.file_name().unwrap())).unwrap();
        }
        let pg = store_on_postgres().then(new_database);
        Env { dir, config: String::new(), clock: None, pg }
    }

    /// An environment with one job component, granted read-write access to
    /// the application database, on a manual clock starting at `start`.
    pub fn read_write_job(job: &str, start: &str) -> Env {
        Env::new(&[job]).clock(start).config(&format!("[jobs.{job}]\ndatabase = \"read-write\""))
    }

    /// Appends configuration text (sundial.toml syntax).
    pub fn config(mut self, text: &str) -> Env {
        self.config.push_str(text);
        self.config.push('\n');
        self
    }

    /// Uses a manual clock starting at `start` (RFC 3339).
    pub fn clock(mut self, start: &str) -> Env {
        self.clock = Some(ManualClock::new(t(start)));
        self
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Sundial's own database: the SQLite file, or the test's Postgres
    /// database with `SUNDIAL_TEST_STORE=postgres`.
    pub fn db_url(&self) -> String {
        match &self.pg {
            Some(pg) => pg.url.clone(),
            None => self.app_url(),
        }
    }

    /// The application database: always the SQLite file.
    pub fn app_url(&self) -> String {
        format!("sqlite://{}", self.path().join("sundial.db").display())
    }

    pub fn jobs_dir(&self) -> PathBuf {
        self.path().join("jobs")
    }

    /// Host options for this environment.
    pub fn options(&self, schedule: bool) -> HostOptions {
        let mut config = Config::parse(&self.config).expect("valid test config");
        config.base_dir = self.path().to_path_buf();
        if self.pg.is_some() && config.app_database.is_none() {
            config.app_database = Some(self.app_url());
        }
        let mut o = HostOptions::new(config);
        o.database_url = Some(self.db_url());
        o.jobs_dir = Some(self.jobs_dir());
        o.schedule = schedule;
        if let Some(c) = &self.clock {
            o.clock = Arc::new(c.clone()) as Arc<dyn Clock>;
        }
        o
    }

    /// Starts a host (scheduling or one-shot).
    pub async fn host(&self, schedule: bool) -> Host {
        Host::start(self.options(schedule)).await.expect("host starts")
    }

    /// Seeds the demo application data (in the same SQLite file) as of `now`.
    pub async fn seed_demo(&self, users: u64, now: DateTime<Utc>) -> sundial::demo::DemoCounts {
        let mut conn = sundial::demo::open(&self.app_url()).unwrap();
        sundial::demo::seed(&mut conn, users, now).unwrap()
    }

    /// A synchronous connection to the application database with the demo
    /// schema created (and no rows added): for hand-made fixtures and checks.
    pub fn app(&self) -> rusqlite::Connection {
        let conn = sundial::demo::open(&self.app_url()).unwrap();
        sundial::demo::create_schema(&conn).unwrap();
        conn
    }

    /// A direct connection to the (application) database.
    pub async fn sql(&self) -> sqlx::SqlitePool {
        sqlx::SqlitePool::connect(&self.app_url()).await.unwrap()
    }
}

pub fn t(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

/// Polls `f` until it returns `Some`, for at most 30 s of real time (work on
/// worker threads finishing, not time passing in the schedule).
pub async fn eventually<T, F, Fut>(what: &str, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(start.elapsed() < Duration::from_secs(30), "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Waits until `job` has `n` finished executions and returns them, oldest first.
pub async fn finished_executions(store: &Store, job: &str, n: usize) -> Vec<ExecutionRecord> {
    eventually(&format!("{n} finished executions of {job}"), || async {
        let mut v = store.list_executions(job, 100, None).await.unwrap();
        v.reverse();
        (v.len() >= n && v.iter().all(|e| e.status.is_final())).then_some(v)
    })
    .await
}

/// The scheduler's next fire of `job`, if it has one.
pub async fn next_fire(host: &Host, job: &str) -> Option<DateTime<Utc>> {
    let fires = host.scheduler.as_ref().unwrap().send(sundial::actors::scheduler::GetNextFires).await.unwrap();
    fires.into_iter().find(|(name, _, _)| name == job).and_then(|(_, next, _)| next)
}

/// Waits (at most 30 s) for the next `ExecutionFinished` event: sent once the
/// supervisor is free for the next fire (the row is final a moment before).
pub async fn finished_event(events: &mut tokio::sync::broadcast::Receiver<sundial::events::Event>) {
    loop {
        let e = tokio::time::timeout(std::time::Duration::from_secs(30), events.recv())
            .await
            .expect("an execution finished within 30 s");
        match e {
            Ok(sundial::events::Event::ExecutionFinished { .. }) => return,
            // Progress events overran the receiver; the finish is the newest.
            Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
            Err(e) => panic!("events: {e}"),
        }
    }
}

/// Plain SQL on Sundial's own tables, on either backend (for checks the
/// store's interface does not offer, and for ageing rows).
pub enum SundialSql {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl SundialSql {
    pub async fn open(env: &Env) -> SundialSql {
        match &env.pg {
            Some(pg) => SundialSql::Postgres(sqlx::PgPool::connect(&pg.url).await.unwrap()),
            None => SundialSql::Sqlite(sqlx::SqlitePool::connect(&env.db_url()).await.unwrap()),
        }
    }

    /// Runs statements separated by `;` (no parameters).
    pub async fn batch(&self, sql: &str) {
        match self {
            SundialSql::Sqlite(p) => drop(sqlx::raw_sql(sql).execute(p).await.unwrap()),
            SundialSql::Postgres(p) => drop(sqlx::raw_sql(sql).execute(p).await.unwrap()),
        }
    }

    /// The first column of every row, as integers.
    pub async fn ints(&self, sql: &str) -> Vec<i64> {
        match self {
            SundialSql::Sqlite(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
            SundialSql::Postgres(p) => sqlx::query_scalar(sql).fetch_all(p).await.unwrap(),
        }
    }

    /// The first column of the first row, an integer (e.g. a count).
    pub async fn int(&self, sql: &str) -> i64 {
        self.ints(sql).await.first().copied().expect("a row")
    }

    /// The first column of the first row, text.
    pub async fn text(&self, sql: &str) -> String {
        match self {
            SundialSql::Sqlite(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
            SundialSql::Postgres(p) => sqlx::query_scalar(sql).fetch_one(p).await.unwrap(),
        }
    }
}

/// sha256 of a file, as the host records it.
pub fn digest(path: &Path) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(std::fs::read(path).unwrap()))
}

/// A child process, resumed (if paused) and stopped if the test fails.
pub struct Process(pub Child);

impl Drop for Process {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-CONT", &self.0.id().to_string()]).status();
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits until `f` holds, polling from a plain (not async) test.
pub fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `sql` on `db` (setup of application tables) from a plain test.
pub fn pg_setup(db: &PgDatabase, sql: &str) {
    let (url, sql) = (db.url.clone(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            sqlx::raw_sql(&sql).execute(&mut c).await.unwrap();
        });
    })
    .join()
    .unwrap();
}

//! Sundial's tables on Postgres, and several hosts sharing them: the store
//! behaves as on SQLite, each scheduled instant fires once across hosts, and
//! a host that dies (`kill -9`) or stalls past its lease (`SIGSTOP`) has its
//! executions marked crashed by another, its late outcome refused.
//!
//! The server is the one `SUNDIAL_TEST_POSTGRES_URL` names (CI sets it;
//! default `postgres://postgres@127.0.0.1:5432/test`); every test works in a
//! database of its own, created here and dropped at the end.

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::Connection;
use sundial::config::Config;
use sundial::host::Host;
use sundial::model::{ExecutionStatus, JobInfo, JobKind, RunArgs, RunReport, ScheduleSource, Trigger};
use sundial::runtime::{NativeContext, NativeError, NativeJob, NativeOutcome};
use sundial::store::{JobDefinition, NewExecution, Store};

use crate::helpers::*;

fn definition(name: &str, digest: &str) -> JobDefinition {
    JobDefinition {
        name: name.into(),
        description: "a job".into(),
        kind: JobKind::Single,
        schedule: "0 * * * *".into(),
        timezone: "UTC".into(),
        enabled: None,
        digest: digest.into(),
        component: Some(digest.as_bytes().to_vec().into()),
    }
}

fn fire(job: sundial::model::JobId, at: DateTime<Utc>, node: &str) -> NewExecution {
    NewExecution {
        job_id: job,
        trigger: Trigger::Schedule,
        scheduled_for: at,
        attempt: 1,
        parent_id: None,
        status: ExecutionStatus::Running,
        digest: Some("d1".into()),
        version: Some(1),
        node: node.into(),
        args: RunArgs::default(),
        skip: None,
    }
}

/// What a user sees of a store after the same operations: everything but
/// ids and wall-clock stamps.
async fn exercise(store: &Store) -> Vec<String> {
    let mut seen = Vec::new();
    let a = store.upsert_job(&definition("alpha", "d1")).await.unwrap();
    let again = store.upsert_job(&definition("alpha", "d1")).await.unwrap();
    let v2 = store.upsert_job(&definition("alpha", "d2")).await.unwrap();
    seen.push(format!("versions {:?} {:?} {:?}", a.component_version, again.component_version, v2.component_version));
    // A pending registration stands only if its verdict is `true`.
    let pending = |digest: &str, verdict: bool| {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let def = definition("alpha", digest);
        async move {
            let (recorded, _) = tokio::join!(store.upsert_job_pending(&def, rx), async move { tx.send(verdict) });
            recorded.map(|j| (j.component_version, j.component_digest)).map_err(|e| e.to_string())
        }
    };
    seen.push(format!("pending refused {:?}", pending("d9", false).await));
    seen.push(format!("after refused {:?}", store.get_job("alpha").await.unwrap().unwrap().component_digest));
    seen.push(format!("pending accepted {:?}", pending("d3", true).await));
    let versions = store.job_versions(a.id, 10).await.unwrap();
    seen.push(format!(
        "history {:?}",
        versions.iter().map(|v| (v.version, v.digest.clone(), v.kept)).collect::<Vec<_>>()
    ));
    assert_eq!(store.version_component(a.id, 1).await.unwrap().as_deref(), Some(&b"d1"[..]));

    let s = store.set_schedule("alpha", "*/5 * * * *", "Asia/Tokyo", ScheduleSource::Api).await.unwrap();
    seen.push(format!("schedule {} {} {:?}", s.schedule, s.timezone, s.schedule_source));
    seen.push(format!("unknown {:?}", store.set_job_enabled("nope", false).await.err().map(|e| e.to_string())));
    store.set_job_enabled("alpha", false).await.unwrap();
    store.set_global_enabled(false).await.unwrap();
    seen.push(format!(
        "switches {} {}",
        store.get_job("alpha").await.unwrap().unwrap().enabled,
        store.global_enabled().await.unwrap()
    ));

    let at = t("2026-03-08T07:00:00Z");
    let ids = store.create_executions(vec![fire(a.id, at, "me"), fire(a.id, at, "other")]).await.unwrap();
    seen.push(format!("one per instant {:?}", ids.iter().map(Option::is_some).collect::<Vec<_>>()));
    let first = ids[0].unwrap();
    store.advance_schedule(a.id, at, Some(t("2026-03-08T08:00:00Z")), 3).await.unwrap();
    // An older instant does not move the series back, nor count twice.
    store.advance_schedule(a.id, t("2026-03-08T06:00:00Z"), Some(t("2026-03-08T08:00:00Z")), 3).await.unwrap();
    let j = store.get_job("alpha").await.unwrap().unwrap();
    seen.push(format!("advanced {:?} {:?} {}", j.last_scheduled_for, j.next_run_at, j.missed_fires));

    store.update_progress(first, [10, 4, 1, 0]).await.unwrap();
    store.flag_overrun(first).await.unwrap();
    let e = store.get_execution(first).await.unwrap().unwrap();
    seen.push(format!("running {} {} {} {}", e.status, e.items_total, e.items_ok, e.overrun));

    let mut report = RunReport::new(ExecutionStatus::Partial);
    report.items_total = 3;
    report.items_ok = 1;
    report.items_failed = 1;
    report.items_skipped = 1;
    report.problems = vec![
        sundial::model::ItemProblem {
            key: "u2".into(),
            class: sundial::model::ErrorClass::Fatal,
            message: "boom".into(),
        },
        sundial::model::ItemProblem {
            key: "u3".into(),
            class: sundial::model::ErrorClass::Skip,
            message: "few".into(),
        },
    ];
    report.logs = "line\n".into();
    store.finish_execution(first, &report).await.unwrap();
    let e = store.get_execution(first).await.unwrap().unwrap();
    seen.push(format!("finished {} {} {:?} {}", e.status, e.items_failed, e.logs, e.finished_at.is_some()));
    seen.push(format!("items {:?}", store.execution_items(first).await.unwrap()));

    // Queued ahead of its instant, then running; a second host's leftovers crash.
    let mut queued = fire(a.id, t("2026-03-08T08:00:00Z"), "me");
    queued.status = ExecutionStatus::Queued;
    let q = store.create_execution(&queued).await.unwrap().unwrap();
    store.mark_running(vec![(q, t("2026-03-08T08:00:00.100Z"))]).await.unwrap();
    let running = store.get_execution(q).await.unwrap().unwrap();
    seen.push(format!("running {} {:?}", running.status, running.started_at));
    // A second mark (a late one from a finished run) changes nothing.
    store.mark_running(vec![(q, t("2026-03-08T08:00:05Z"))]).await.unwrap();
    assert_eq!(store.get_execution(q).await.unwrap().unwrap().started_at, running.started_at);
    let dead = store.create_execution(&fire(a.id, t("2026-03-08T09:00:00Z"), "dead-host")).await.unwrap().unwrap();
    seen.push(format!("active {}", store.active_executions().await.unwrap().len()));
    let crashed = store.mark_crashed("me").await.unwrap();
    seen.push(format!("crashed {:?}", crashed.iter().map(|e| (e.id == dead, e.status)).collect::<Vec<_>>()));
    let listed = store.list_executions("alpha", 2, None).await.unwrap();
    seen.push(format!("newest {:?}", listed.iter().map(|e| e.status).collect::<Vec<_>>()));
    let older = store.list_executions("alpha", 10, Some(q)).await.unwrap();
    seen.push(format!("older {:?}", older.iter().map(|e| e.id == first).collect::<Vec<_>>()));
    seen.push(format!("last {:?}", store.last_executions(None).await.unwrap().iter().map(|l| l.2).collect::<Vec<_>>()));

    store.register_host("me", "0.0.0", Duration::from_secs(30)).await.unwrap();
    assert!(store.heartbeat("me", Duration::from_secs(30)).await.unwrap());
    seen.push(format!(
        "hosts {:?}",
        store.live_hosts().await.unwrap().iter().map(|h| h.node.clone()).collect::<Vec<_>>()
    ));
    store.unregister_host("me").await.unwrap();
    seen.push(format!("lease gone {}", store.heartbeat("me", Duration::from_secs(30)).await.unwrap()));
    seen
}

/// Every store operation gives what a user sees on SQLite, on Postgres too.
#[actix_rt::test]
async fn the_store_behaves_the_same_on_postgres_and_sqlite() {
    let dir = tempfile::tempdir().unwrap();
    let sqlite = Store::open(&format!("sqlite://{}", dir.path().join("s.db").display())).await.unwrap();
    let on_sqlite = exercise(&sqlite).await;
    sqlite.close().await;

    let db = PgDatabase::new().await;
    let pg = Store::open(&db.url).await.unwrap();
    assert!(pg.is_postgres());
    let on_pg = exercise(&pg).await;
    pg.close().await;
    // A second open migrates nothing and keeps the rows.
    let pg = Store::open(&db.url).await.unwrap();
    assert_eq!(pg.list_jobs().await.unwrap().len(), 1);
    pg.close().await;

    for (s, p) in on_sqlite.iter().zip(&on_pg) {
        assert_eq!(s, p, "SQLite and Postgres differ");
    }
    assert_eq!(on_sqlite.len(), on_pg.len());
    // And the figures are the expected ones, not merely equal.
    assert!(on_pg.contains(&"versions Some(1) Some(1) Some(2)".to_string()), "{on_pg:#?}");
    let refused = "pending refused Err(\"not recorded: the load it waited for did not produce that version\")";
    assert!(on_pg.contains(&refused.to_string()), "{on_pg:#?}");
    assert!(on_pg.contains(&"after refused Some(\"d2\")".to_string()), "{on_pg:#?}");
    assert!(on_pg.contains(&"pending accepted Ok((Some(3), Some(\"d3\")))".to_string()), "{on_pg:#?}");
    assert!(on_pg.contains(&"one per instant [true, false]".to_string()), "{on_pg:#?}");
    assert!(
        on_pg.iter().any(|l| l.starts_with("advanced Some(2026-03-08T07:00:00Z) Some(2026-03-08T08:00:00Z) 3")),
        "{on_pg:#?}"
    );
    assert!(on_pg.contains(&"crashed [(true, Crashed)]".to_string()), "{on_pg:#?}");
    assert!(on_pg.contains(&"lease gone false".to_string()), "{on_pg:#?}");
}

/// A bad URL or a server that is not there: a clear error, no password in it.
#[actix_rt::test]
async fn an_unreachable_database_is_a_clear_error_without_its_password() {
    let err = Store::open("postgres://sundial:s3cret@127.0.0.1:1/nowhere").await.unwrap_err().to_string();
    assert!(err.contains("cannot open database"), "{err}");
    assert!(err.contains("127.0.0.1:1/nowhere"), "{err}");
    assert!(!err.contains("s3cret"), "the password leaked: {err}");
}

/// A native job that records nothing and takes a moment.
struct Tick(String);

impl NativeJob for Tick {
    fn info(&self) -> JobInfo {
        JobInfo {
            name: self.0.clone(),
            description: "fires every second".into(),
            kind: JobKind::Single,
            default_schedule: "* * * * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: vec![],
        }
    }

    fn run(&self, _ctx: &mut NativeContext<'_>) -> Result<NativeOutcome, NativeError> {
        std::thread::sleep(Duration::from_millis(20));
        Ok(NativeOutcome { changed: 0, message: None })
    }
}

/// Another scheduling host on the same database, with a lease of 3 s and no jobs.
async fn survivor(url: &str, dir: &std::path::Path) -> Host {
    std::fs::create_dir(dir.join("jobs")).unwrap();
    host_with(url, dir, "survivor", Config { lease_secs: Some(3), ..Config::default() }, 0).await
}

async fn tick_host(url: &str, dir: &std::path::Path, node: &str, jobs: usize) -> Host {
    host_with(url, dir, node, Config::default(), jobs).await
}

/// A scheduling host on `db` with `jobs` [`Tick`] jobs.
async fn host_with(url: &str, dir: &std::path::Path, node: &str, config: Config, jobs: usize) -> Host {
    let mut builder = Host::builder()
        .config(config)
        .database_url(url)
        .jobs_dir(dir.join("jobs"))
        .cache_dir(dir.join("cache"))
        .node_name(node);
    for i in 0..jobs {
        builder = builder.native_job(Tick(format!("tick-{i:02}")));
    }
    builder.start().await.unwrap()
}

/// Two hosts on one Postgres database, 20 jobs firing every second: each
/// instant of each job runs exactly once, with no instant missed, and both
/// hosts take a share.
#[actix_rt::test]
async fn two_hosts_run_each_scheduled_instant_exactly_once() {
    const JOBS: usize = 20;
    let db = PgDatabase::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    let a = tick_host(&db.url, dir.path(), "host-a", JOBS).await;
    let b = tick_host(&db.url, dir.path(), "host-b", JOBS).await;
    let started = Utc::now();
    actix_rt::time::sleep(Duration::from_secs(12)).await;
    let stopped = Utc::now();
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;

    let store = Store::open(&db.url).await.unwrap();
    let mut nodes = BTreeSet::new();
    for i in 0..JOBS {
        let job = format!("tick-{i:02}");
        let runs = store.list_executions(&job, 200, None).await.unwrap();
        let mut per_instant: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
        for e in &runs {
            assert_eq!(e.trigger, Trigger::Schedule, "{job}: {e:?}");
            assert_eq!(e.status, ExecutionStatus::Succeeded, "{job}: {e:?}");
            *per_instant.entry(e.scheduled_for).or_default() += 1;
            nodes.insert(e.node.clone().unwrap());
        }
        let twice: Vec<_> = per_instant.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{job}: instants run more than once: {twice:?}");
        // Every second between the hosts' start and stop, none skipped.
        let first = *per_instant.keys().next().unwrap();
        let last = *per_instant.keys().last().unwrap();
        assert!(first <= started + chrono::TimeDelta::seconds(3), "{job}: first fire {first}, started {started}");
        assert!(last >= stopped - chrono::TimeDelta::seconds(3), "{job}: last fire {last}, stopped {stopped}");
        let expected = (last - first).num_seconds() + 1;
        assert_eq!(per_instant.len() as i64, expected, "{job}: {} runs from {first} to {last}", per_instant.len());
    }
    assert_eq!(nodes, BTreeSet::from(["host-a".to_string(), "host-b".to_string()]), "both hosts take a share");
    assert!(store.live_hosts().await.unwrap().is_empty(), "hosts leave the table when they stop");
    store.close().await;
}

/// An environment whose Sundial tables are on `db` (lease of 3 s) and whose
/// application database is a SQLite file with `users` and `visits`.
fn slow_items_env(db: &PgDatabase, users: i64) -> Env {
    let env = Env::new(&["slow-items"]);
    let config = format!(
        r#"database = "{}"
app_database = "sqlite://app.db"
jobs_dir = "jobs"
lease_secs = 3
[jobs.slow-items]
database = "read-write"
args = {{ delay_ms = "20" }}
"#,
        db.url
    );
    std::fs::write(env.path().join("sundial.toml"), config).unwrap();
    crate::fixtures::users_and_visits(&env.path().join("app.db"), users);
    env
}

async fn wait_until<F, Fut>(what: &str, limit: Duration, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let start = Instant::now();
    while !f().await {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        actix_rt::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn only_execution(store: &Store) -> sundial::model::ExecutionRecord {
    let runs = store.list_executions("slow-items", 10, None).await.unwrap();
    assert_eq!(runs.len(), 1, "{runs:?}");
    runs.into_iter().next().unwrap()
}

/// `kill -9` of a host in the middle of a run: once its lease runs out, a
/// scheduling host on the same database marks the execution crashed, naming
/// the dead host.
#[actix_rt::test]
async fn a_host_killed_mid_run_has_its_execution_marked_crashed_by_another() {
    let db = PgDatabase::new().await;
    let env = slow_items_env(&db, 400);
    let mut run = Process(sundial_command(env.path()).args(["run", "slow-items"]).spawn().unwrap());
    let store = Store::open(&db.url).await.unwrap();
    wait_until("the run to start", Duration::from_secs(60), || async {
        store.list_executions("slow-items", 1, None).await.unwrap().first().is_some_and(|e| e.items_ok > 0)
    })
    .await;
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    let killed_at = Instant::now();
    let e = only_execution(&store).await;
    assert_eq!(e.status, ExecutionStatus::Running);
    let dead = e.node.clone().unwrap();

    let other = tempfile::tempdir().unwrap();
    let host = survivor(&db.url, other.path()).await;
    wait_until("the execution to be marked crashed", Duration::from_secs(20), || async {
        only_execution(&store).await.status == ExecutionStatus::Crashed
    })
    .await;
    // Not before the dead host's lease (3 s from its last heartbeat) ran out.
    assert!(killed_at.elapsed() >= Duration::from_secs(1), "marked crashed {:?} after the kill", killed_at.elapsed());
    let e = only_execution(&store).await;
    assert!(e.error_message.as_deref().unwrap_or("").contains(&dead), "{:?}", e.error_message);
    assert!(e.finished_at.is_some());
    host.stop().await;
    store.close().await;
}

/// A host paused (`SIGSTOP`) past its lease: another host marks its
/// execution crashed; resumed (`SIGCONT`), the paused host learns it lost its
/// lease, stops its guest, and its outcome is refused: the row stays crashed
/// and no second outcome is recorded.
#[actix_rt::test]
async fn a_host_paused_past_its_lease_is_fenced_off() {
    let db = PgDatabase::new().await;
    let env = slow_items_env(&db, 300);
    let run = Process(sundial_command(env.path()).args(["run", "slow-items"]).spawn().unwrap());
    let store = Store::open(&db.url).await.unwrap();
    wait_until("the run to start", Duration::from_secs(60), || async {
        store.list_executions("slow-items", 1, None).await.unwrap().first().is_some_and(|e| e.items_ok > 0)
    })
    .await;
    let pid = run.0.id().to_string();
    assert!(Command::new("kill").args(["-STOP", &pid]).status().unwrap().success());

    let other = tempfile::tempdir().unwrap();
    let host = survivor(&db.url, other.path()).await;
    wait_until("the paused host's execution to be marked crashed", Duration::from_secs(20), || async {
        only_execution(&store).await.status == ExecutionStatus::Crashed
    })
    .await;
    let crashed = only_execution(&store).await;

    assert!(Command::new("kill").args(["-CONT", &pid]).status().unwrap().success());
    let mut run = run;
    let status = run.0.wait().unwrap();
    assert!(!status.success(), "the fenced run must not report success");
    let after = only_execution(&store).await;
    assert_eq!(after.status, ExecutionStatus::Crashed, "the late outcome overwrote the row: {after:?}");
    assert_eq!(after.finished_at, crashed.finished_at);
    assert_eq!(after.error_message, crashed.error_message);
    host.stop().await;
    store.close().await;
}

/// The status over HTTP lists the live hosts sharing the Postgres database
/// (a second host is welcome there, unlike on SQLite); a host that stops
/// leaves the list.
#[actix_rt::test]
async fn the_status_lists_the_live_hosts() {
    let db = PgDatabase::new().await;
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    let a = tick_host(&db.url, dir.path(), "host-a", 0).await;
    let b = tick_host(&db.url, dir.path(), "host-b", 0).await;
    let api = crate::api::Api::serve(a, "127.0.0.1:0").await;
    let status = api.get("/api/scheduler/status").await;
    assert_eq!(status["backend"], "postgres");
    assert_eq!(status["node"], "host-a");
    let hosts = status["hosts"].as_array().unwrap();
    let seen: Vec<(&str, bool)> =
        hosts.iter().map(|h| (h["node"].as_str().unwrap(), h["this"].as_bool().unwrap())).collect();
    assert_eq!(seen, [("host-a", true), ("host-b", false)]);
    for h in hosts {
        let beat: DateTime<Utc> = h["heartbeat_at"].as_str().unwrap().parse().unwrap();
        let until: DateTime<Utc> = h["lease_expires_at"].as_str().unwrap().parse().unwrap();
        assert_eq!((until - beat).num_seconds(), 15, "the default lease: {h}");
        assert_eq!(h["version"], env!("CARGO_PKG_VERSION"));
    }
    b.stop().await;
    let status = api.get("/api/scheduler/status").await;
    let nodes: Vec<&str> = status["hosts"].as_array().unwrap().iter().map(|h| h["node"].as_str().unwrap()).collect();
    assert_eq!(nodes, ["host-a"]);
    api.stop().await;
}

/// The application database on Postgres, as a job's calls reach it: typed
/// values both ways, `$n` placeholders checked, item savepoints, the
/// read-only grant enforced by Postgres, errors in the classes guests match,
/// and a runaway statement stopped by the interrupt check.
#[test]
fn the_application_database_can_be_postgres() {
    use sundial::model::DbAccess;
    use sundial::store::appdb::{AppDb, AppDbError, SqlValue as V};
    let db = new_database();
    pg_setup(
        &db,
        "CREATE TABLE t (id INT PRIMARY KEY, name TEXT UNIQUE, score DOUBLE PRECISION, data BYTEA,
                         day DATE, at TIMESTAMPTZ, amount NUMERIC(12, 2), big NUMERIC, ok BOOLEAN)",
    );
    let app = AppDb::open(&db.url).unwrap();
    assert!(app.path().is_none());
    let mut s = app.session(DbAccess::ReadWrite);
    let n = s
        .execute(
            "INSERT INTO t (name, id, score, data, day, at, amount, big, ok) VALUES ($2, $1, $3, $4, $5, $6, $7, $8, $9)",
            &[
                V::Integer(7),
                V::Text("seven".into()),
                V::Real(0.5),
                V::Blob(vec![0, 1, 255]),
                V::Text("2026-03-08".into()),
                V::Text("2026-03-08T07:00:00Z".into()),
                V::Real(12.25),
                V::Integer(9_000_000_000),
                V::Integer(1),
            ],
        )
        .unwrap();
    assert_eq!(n, 1);
    let rows = s
        .query(
            "SELECT id, name, score, data, day, at, amount, big, ok, NULL AS nothing FROM t WHERE id = $1",
            &[V::Integer(7)],
        )
        .unwrap();
    assert_eq!(rows.columns, ["id", "name", "score", "data", "day", "at", "amount", "big", "ok", "nothing"]);
    assert_eq!(
        rows.rows,
        vec![vec![
            V::Integer(7),
            V::Text("seven".into()),
            V::Real(0.5),
            V::Blob(vec![0, 1, 255]),
            V::Text("2026-03-08".into()),
            V::Text("2026-03-08T07:00:00Z".into()),
            V::Real(12.25),
            V::Integer(9_000_000_000),
            V::Integer(1),
            V::Null,
        ]]
    );
    // Aggregates come back as numbers a guest can use.
    let sum = s.query("SELECT COUNT(*), SUM(big), AVG(score) FROM t", &[]).unwrap();
    assert_eq!(sum.rows, vec![vec![V::Integer(1), V::Integer(9_000_000_000), V::Real(0.5)]]);

    let err = s.query("SELECT $1::int + $2::int", &[V::Integer(1)]).unwrap_err();
    assert!(err.to_string().contains("uses parameter $2 but 1 value was given"), "{err}");
    let err = s.query("SELECT $1::int", &[V::Integer(1), V::Integer(2)]).unwrap_err();
    assert!(err.to_string().contains("2 values given"), "{err}");
    let err = s.execute("INSERT INTO t (id, name) VALUES (8, 'seven')", &[]).unwrap_err();
    assert!(matches!(err, AppDbError::Constraint(_)), "{err:?}");
    let err = s.query("SELECT nope FROM t", &[]).unwrap_err();
    assert!(err.to_string().contains("nope"), "{err}");

    // Item savepoints: the failed item's work is undone, the others commit.
    s.begin().unwrap();
    for (id, ok) in [(1, true), (2, false), (3, true)] {
        s.savepoint().unwrap();
        s.execute("INSERT INTO t (id) VALUES ($1)", &[V::Integer(id)]).unwrap();
        if ok { s.release().unwrap() } else { s.rollback_item().unwrap() }
    }
    s.commit().unwrap();
    let ids = s.query("SELECT id FROM t WHERE id < 7 ORDER BY id", &[]).unwrap();
    assert_eq!(ids.rows, vec![vec![V::Integer(1)], vec![V::Integer(3)]]);
    s.close();

    let mut ro = app.session(DbAccess::ReadOnly);
    assert_eq!(ro.query("SELECT count(*) FROM t", &[]).unwrap().rows, vec![vec![V::Integer(3)]]);
    let err = ro.query("INSERT INTO t (id) VALUES (50) RETURNING id", &[]).unwrap_err();
    assert!(matches!(err, AppDbError::Denied(_)), "{err:?}");
    ro.close();
    // The pooled connection is writable again for the next read-write session.
    let mut s = app.session(DbAccess::ReadWrite);
    s.execute("INSERT INTO t (id) VALUES (51)", &[]).unwrap();
    s.close();

    let mut slow = app.session(DbAccess::ReadOnly);
    let deadline = Instant::now() + Duration::from_millis(300);
    slow.interrupt_when(move || Instant::now() > deadline);
    let started = Instant::now();
    let err = slow.query("SELECT pg_sleep(30)", &[]).unwrap_err();
    assert_eq!(err, AppDbError::Interrupted);
    assert!(started.elapsed() < Duration::from_secs(5), "stopped after {:?}", started.elapsed());
    assert_eq!(slow.query("SELECT 1", &[]).unwrap_err(), AppDbError::Interrupted);
    slow.close();
}

/// An item job whose data is on Postgres: `kill -9` of the host in the
/// middle of the run; once its lease runs out another host marks the run
/// crashed, re-runs it (`retry_on_crash`), and the new attempt resumes after
/// the last committed batch: every item is committed exactly once.
#[test]
fn an_item_run_on_postgres_cut_short_by_kill_9_is_finished_by_another_host() {
    const USERS: i64 = 300;
    let db = new_database();
    pg_setup(
        &db,
        &format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY);
             CREATE TABLE visits (user_id BIGINT NOT NULL, execution_id BIGINT NOT NULL);
             INSERT INTO users SELECT generate_series(1, {USERS});"
        ),
    );
    let env = Env::new(&["slow-items"]);
    let config = format!(
        r#"database = "{}"
jobs_dir = "jobs"
lease_secs = 3
[jobs.slow-items]
database = "read-write"
retry_on_crash = true
args = {{ delay_ms = "15" }}
"#,
        db.url
    );
    std::fs::write(env.path().join("sundial.toml"), &config).unwrap();
    let count = |sql: &str| -> i64 {
        let (url, sql) = (db.url.clone(), sql.to_string());
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            rt.block_on(async {
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, i64>(&sql).fetch_one(&mut c).await.unwrap()
            })
        })
        .join()
        .unwrap()
    };

    let mut first = Process(sundial_command(env.path()).args(["run", "slow-items"]).spawn().unwrap());
    let start = Instant::now();
    while count("SELECT count(*) FROM visits") < 40 {
        assert!(start.elapsed() < Duration::from_secs(60), "the run did not get going");
        std::thread::sleep(Duration::from_millis(50));
    }
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before = count("SELECT count(*) FROM visits");
    assert!(before > 0 && before < USERS, "cut short part-way: {before} of {USERS}");

    // The other host: same jobs, same database, scheduling.
    let mut second = Process(sundial_command(env.path()).args(["serve", "--no-http"]).spawn().unwrap());
    let start = Instant::now();
    while count("SELECT count(*) FROM job_executions WHERE trigger = 'retry' AND status = 'succeeded'") < 1 {
        assert!(start.elapsed() < Duration::from_secs(90), "the run was not finished by the other host");
        std::thread::sleep(Duration::from_millis(100));
    }
    Command::new("kill").args(["-INT", &second.0.id().to_string()]).status().unwrap();
    assert!(second.0.wait().unwrap().success());

    assert_eq!(count("SELECT count(*) FROM visits"), USERS, "every user visited");
    assert_eq!(count("SELECT count(DISTINCT user_id) FROM visits"), USERS, "no user visited twice");
    assert_eq!(count("SELECT count(*) FROM job_executions WHERE status = 'crashed'"), 1);
    assert_eq!(count("SELECT count(DISTINCT node) FROM job_executions"), 2, "the retry ran on the other host");
    assert_eq!(count("SELECT count(*) FROM sundial_item_checkpoints"), 0, "a finished run leaves no checkpoint");
}

/// Key-value state on Postgres: kept between executions, and shared by the
/// hosts on one database (a job's state follows the job, not the host).
#[actix_rt::test]
async fn job_state_is_kept_in_postgres_and_shared_by_hosts() {
    const JOB: &str = "released-0-1-0";
    let db = PgDatabase::new().await;
    let env = Env::new(&[JOB]).config(&format!("[jobs.{JOB}]\nstate = true"));
    let host_on = |node: &'static str| {
        let mut o = env.options(false);
        o.database_url = Some(db.url.clone());
        o.node = node.into();
        Host::start(o)
    };
    let summary = |r: sundial::model::RunReport| {
        assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
        r.summary.unwrap_or_default()
    };
    let a = host_on("host-a").await.unwrap();
    assert_eq!(summary(a.run_now(JOB, RunArgs::default()).await.unwrap()), "run 1");
    assert_eq!(summary(a.run_now(JOB, RunArgs::default()).await.unwrap()), "run 2");
    let b = host_on("host-b").await.unwrap();
    assert_eq!(summary(b.run_now(JOB, RunArgs::default()).await.unwrap()), "run 3", "the other host sees the state");
    // A dry run reads the state and writes nothing.
    let dry = RunArgs { dry_run: true, ..RunArgs::default() };
    assert_eq!(summary(b.run_now(JOB, dry).await.unwrap()), "run 4");
    assert_eq!(summary(a.run_now(JOB, RunArgs::default()).await.unwrap()), "run 4");
    a.stop().await;
    b.stop().await;
}

/// A Postgres server of the test's own (initdb in a temporary directory, on
/// its own port), so that it can be restarted without touching the shared
/// one. Runs as the `postgres` user when the test runs as root.
struct PrivateServer {
    dir: tempfile::TempDir,
    bin: std::path::PathBuf,
    port: u16,
}

impl PrivateServer {
    fn command(&self, tool: &str) -> Command {
        let tool = self.bin.join(tool);
        let root = std::fs::read_to_string("/proc/self/status")
            .unwrap_or_default()
            .lines()
            .any(|l| l.starts_with("Uid:") && l.split_whitespace().nth(1) == Some("0"));
        if root {
            let mut c = Command::new("runuser");
            c.args(["-u", "postgres", "--"]).arg(tool);
            c
        } else {
            Command::new(tool)
        }
    }

    fn start() -> PrivateServer {
        let bin = std::fs::read_dir("/usr/lib/postgresql")
            .expect("a PostgreSQL server installation under /usr/lib/postgresql")
            .filter_map(|e| e.ok())
            .map(|e| e.path().join("bin"))
            .find(|b| b.join("initdb").is_file())
            .expect("initdb");
        let dir = tempfile::tempdir().unwrap();
        let _ = Command::new("chown").args(["-R", "postgres:postgres"]).arg(dir.path()).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let server = PrivateServer { dir, bin, port };
        let data = server.dir.path().join("data");
        let out = server.command("initdb").args(["-A", "trust", "-U", "postgres", "-D"]).arg(&data).output().unwrap();
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        server.ctl("start");
        server
    }

    fn ctl(&self, action: &str) {
        let options = format!("-p {} -k {} -c listen_addresses=127.0.0.1", self.port, self.dir.path().display());
        let out = self
            .command("pg_ctl")
            .args([action, "-w", "-m", "fast", "-o", &options, "-D"])
            .arg(self.dir.path().join("data"))
            .arg("-l")
            .arg(self.dir.path().join("log"))
            .output()
            .unwrap();
        assert!(out.status.success(), "pg_ctl {action}: {}", String::from_utf8_lossy(&out.stderr));
    }

    fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivateServer {
    fn drop(&mut self) {
        let _ =
            self.command("pg_ctl").args(["stop", "-m", "immediate", "-D"]).arg(self.dir.path().join("data")).output();
    }
}

/// Postgres restarted under two hosts firing every second: the hosts
/// reconnect and go on, and no instant runs twice.
#[actix_rt::test]
async fn hosts_reconnect_after_postgres_restarts_and_never_run_an_instant_twice() {
    const JOBS: usize = 5;
    let server = PrivateServer::start();
    let url = server.url();
    let dir = tempfile::tempdir().unwrap();
    std::fs::create_dir(dir.path().join("jobs")).unwrap();
    let a = tick_host(&url, dir.path(), "host-a", JOBS).await;
    let b = tick_host(&url, dir.path(), "host-b", JOBS).await;
    actix_rt::time::sleep(Duration::from_secs(4)).await;
    server.ctl("restart");
    let restarted = Utc::now();
    actix_rt::time::sleep(Duration::from_secs(8)).await;
    let store = Store::open(&url).await.unwrap();
    let live: Vec<String> = store.live_hosts().await.unwrap().into_iter().map(|h| h.node).collect();
    assert_eq!(live, ["host-a", "host-b"], "both hosts renewed their leases after the restart");
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    for i in 0..JOBS {
        let job = format!("tick-{i:02}");
        let runs = store.list_executions(&job, 200, None).await.unwrap();
        let mut per_instant: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
        for e in &runs {
            *per_instant.entry(e.scheduled_for).or_default() += 1;
        }
        let twice: Vec<_> = per_instant.iter().filter(|(_, n)| **n > 1).collect();
        assert!(twice.is_empty(), "{job}: instants run more than once: {twice:?}");
        let after = runs
            .iter()
            .filter(|e| e.scheduled_for > restarted + chrono::TimeDelta::seconds(3))
            .filter(|e| e.status == ExecutionStatus::Succeeded)
            .count();
        assert!(after >= 3, "{job}: only {after} runs succeeded after the restart");
    }
    store.close().await;
}

/// Rows of `sql` on the application database at `url`, through the same
/// layer jobs use (so both backends give typed values alike).
fn app_rows(url: &str, sql: &'static str) -> Vec<Vec<sundial::store::appdb::SqlValue>> {
    let url = url.to_string();
    std::thread::spawn(move || {
        let app = sundial::store::appdb::AppDb::open(&url).unwrap();
        let mut s = app.session(sundial::model::DbAccess::ReadOnly);
        let rows = s.query(sql, &[]).unwrap().rows;
        s.close();
        rows
    })
    .join()
    .unwrap()
}

/// The seed jobs on the demo data, once with everything in a SQLite file and
/// once in Postgres (`sundial demo`'s data copied there): the same runs, item
/// counts and rows written.
#[actix_rt::test]
async fn the_seed_jobs_do_the_same_on_postgres_as_on_sqlite() {
    const JOBS: [&str; 5] = ["cleanup", "snapshot", "recommendation", "metrics", "weekly-report"];
    // A Monday, 03:30 UTC: users in UTC are in their weekly-report window.
    const NOW: &str = "2026-11-23T03:30:00Z";
    let mut config = String::new();
    for job in JOBS {
        config.push_str(&format!("[jobs.{job}]\ndatabase = \"read-write\"\n"));
    }
    let env = Env::new(&JOBS).clock(NOW).config(&config);
    env.seed_demo(400, t(NOW)).await;
    let db = PgDatabase::new().await;
    let url = db.url.clone();
    let seeded = std::thread::spawn(move || sundial::demo::seed_postgres(&url, 400, t(NOW)).unwrap()).join().unwrap();
    assert_eq!(seeded.users, 400);

    let mut on = Vec::new();
    for url in [env.app_url(), db.url.clone()] {
        let mut o = env.options(false);
        o.database_url = Some(url.clone());
        let host = Host::start(o).await.unwrap();
        let mut runs = Vec::new();
        for job in JOBS {
            let r = host.run_now(job, RunArgs::default()).await.unwrap();
            assert!(
                matches!(r.status, ExecutionStatus::Succeeded | ExecutionStatus::Partial),
                "{job} on {}: {r:?}",
                sundial::store::redact_url(&url)
            );
            runs.push((job, r.status, r.items_total, r.items_ok, r.items_skipped, r.items_failed, r.changed));
        }
        host.stop().await;
        let tables = [
            app_rows(
                &url,
                "SELECT user_id, date, target_id, calories FROM daily_target_snapshots ORDER BY user_id, date",
            ),
            app_rows(
                &url,
                "SELECT user_id, generated_for_date FROM meal_recommendations ORDER BY user_id, generated_for_date",
            ),
            app_rows(
                &url,
                "SELECT user_id, metrics_date, workouts_7d, workouts_30d, minutes_30d, active_days_30d, streak_days
                 FROM user_behavior_metrics ORDER BY user_id, metrics_date",
            ),
            app_rows(
                &url,
                "SELECT user_id, week_start, workouts, minutes, prediction FROM weekly_reports ORDER BY user_id, week_start",
            ),
            app_rows(&url, "SELECT count(*) FROM sessions"),
            app_rows(&url, "SELECT count(*) FROM food_entries"),
        ];
        on.push((runs, tables));
    }
    let (sqlite, pg) = (&on[0], &on[1]);
    assert_eq!(sqlite.0, pg.0, "the runs differ between SQLite and Postgres");
    // The jobs did something: snapshots, recommendations, metrics and
    // reports were written, and cleanup deleted rows.
    assert!(sqlite.0.iter().all(|r| r.6 > 0), "{:?}", sqlite.0);
    for (i, (a, b)) in sqlite.1.iter().zip(&pg.1).enumerate() {
        assert_eq!(a.len(), b.len(), "table {i}: row counts differ");
        assert_eq!(a, b, "table {i}: rows differ");
    }
}

/// A rolling replacement: two hosts on one database with different versions
/// of a job firing every second, then the old one upgraded. Every execution
/// records the digest and version of the code that ran it, each digest has
/// one version number, and no instant runs twice.
#[actix_rt::test]
async fn hosts_on_different_versions_record_each_executions_own_version() {
    let db = PgDatabase::new().await;
    let v1 = std::fs::read(wasm("faulty")).unwrap();
    let v2 = crate::fixtures::variant(&v1, "rolling-v2");
    let (d1, d2) = (sundial::runtime::digest(&v1), sundial::runtime::digest(&v2));
    let config = Config::parse("[jobs.faulty]\nschedule = \"* * * * * *\"").unwrap();
    let mut hosts = Vec::new();
    let mut dirs = Vec::new();
    for (node, bytes) in [("host-a", &v1), ("host-b", &v2)] {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("jobs")).unwrap();
        std::fs::write(dir.path().join("jobs/faulty.wasm"), bytes).unwrap();
        let mut o = sundial::host::HostOptions::new(config.clone());
        o.database_url = Some(db.url.clone());
        o.jobs_dir = Some(dir.path().join("jobs"));
        o.node = node.into();
        hosts.push(Host::start(o).await.unwrap());
        dirs.push(dir);
    }
    actix_rt::time::sleep(Duration::from_secs(5)).await;
    let upgraded = hosts[0].deploy(v2.clone()).await.unwrap();
    let upgraded_at = Utc::now();
    actix_rt::time::sleep(Duration::from_secs(4)).await;
    for h in hosts {
        h.shutdown(Duration::from_secs(5)).await;
    }

    let store = Store::open(&db.url).await.unwrap();
    let runs = store.list_executions("faulty", 200, None).await.unwrap();
    let mut per_instant: BTreeMap<DateTime<Utc>, usize> = BTreeMap::new();
    let mut version_of: BTreeMap<String, BTreeSet<i64>> = BTreeMap::new();
    for e in &runs {
        *per_instant.entry(e.scheduled_for).or_default() += 1;
        let digest = e.component_digest.clone().unwrap();
        version_of.entry(digest.clone()).or_default().insert(e.component_version.unwrap());
        match e.node.as_deref() {
            Some("host-b") => assert_eq!(digest, d2, "host-b only ever had v2: {e:?}"),
            Some("host-a") if e.started_at.unwrap() > upgraded_at + chrono::TimeDelta::milliseconds(500) => {
                assert_eq!(digest, d2, "host-a runs v2 once upgraded: {e:?}")
            }
            Some("host-a") => {}
            other => panic!("unexpected node {other:?}"),
        }
    }
    assert!(per_instant.values().all(|n| *n == 1), "an instant ran twice: {per_instant:?}");
    assert!(version_of.get(&d1).is_some_and(|v| v.len() == 1), "v1 ran, under one version number: {version_of:?}");
    assert!(version_of.get(&d2).is_some_and(|v| v.len() == 1), "v2 ran, under one version number: {version_of:?}");
    assert_ne!(version_of[&d1], version_of[&d2]);
    assert_eq!(upgraded.component_digest.as_deref(), Some(d2.as_str()));
    store.close().await;
}

/// A batch the item engine goes on after commits without waiting for the
/// disk: visible to every connection at once, and the relaxed setting is
/// that transaction's alone (the next one commits durably again).
#[test]
fn a_relaxed_commit_is_visible_at_once_and_relaxes_only_its_transaction() {
    use sundial::model::DbAccess;
    use sundial::store::appdb::{AppDb, SqlValue as V};
    let db = new_database();
    pg_setup(&db, "CREATE TABLE t (id INT PRIMARY KEY)");
    let app = AppDb::open(&db.url).unwrap();
    let mut s = app.session(DbAccess::ReadWrite);
    s.begin().unwrap();
    s.execute("INSERT INTO t (id) VALUES ($1)", &[V::Integer(1)]).unwrap();
    s.commit_relaxed().unwrap();
    let mut other = app.session(DbAccess::ReadOnly);
    let seen = other.query("SELECT count(*) FROM t", &[]).unwrap();
    assert_eq!(seen.rows, vec![vec![V::Integer(1)]], "committed, and visible to another connection");
    s.begin().unwrap();
    let setting = s.query("SHOW synchronous_commit", &[]).unwrap();
    assert_eq!(setting.rows, vec![vec![V::Text("on".into())]], "the next transaction commits durably");
    s.commit().unwrap();
    // A transaction that failed is not committed by a relaxed commit either.
    s.begin().unwrap();
    assert!(s.execute("INSERT INTO t (id) VALUES ($1)", &[V::Integer(1)]).is_err());
    assert!(s.commit_relaxed().is_err(), "an aborted transaction does not commit");
    let seen = other.query("SELECT count(*) FROM t", &[]).unwrap();
    assert_eq!(seen.rows, vec![vec![V::Integer(1)]]);
}

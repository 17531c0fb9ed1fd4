//! Shared item runs (`item_workers`, the application database on Postgres):
//! one execution's pages worked by several workers on one host and on every
//! host serving the job; a helper killed (`kill -9`) or stalled past its
//! lease (`SIGSTOP`) mid-run; every item committed exactly once.
//!
//! Real processes on a real Postgres database of each test's own.

use std::process::Command;
use std::time::Duration;

use sqlx::Connection;

use crate::helpers::*;

/// Runs a query on `url` from outside any async runtime.
fn query<T>(url: &str, sql: &str) -> T
where
    T: Send + 'static + for<'r> sqlx::Decode<'r, sqlx::Postgres> + sqlx::Type<sqlx::Postgres> + Unpin,
{
    let (url, sql) = (url.to_string(), sql.to_string());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
            let v: T = sqlx::query_scalar(&sql).fetch_one(&mut c).await.unwrap();
            c.close().await.unwrap();
            v
        })
    })
    .join()
    .unwrap()
}

fn count(url: &str, sql: &str) -> i64 {
    query::<i64>(url, sql)
}

fn has_table(url: &str, table: &str) -> bool {
    count(url, &format!("SELECT count(*) FROM pg_tables WHERE tablename = '{table}'")) == 1
}

/// `sundial run slow-items` on `env`, which must succeed.
fn run_slow_items(env: &Env) {
    let out = sundial_command(env.path()).args(["run", "slow-items"]).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// Starts a serving host on `env` and waits until it has loaded the job.
fn start_helper(db: &PgDatabase, env: &Env) -> Process {
    let helper = Process(sundial_command(env.path()).args(["serve", "--no-http"]).spawn().unwrap());
    wait_for_host(db);
    helper
}

/// Waits until the serving host has loaded the job.
fn wait_for_host(db: &PgDatabase) {
    wait_for("the serving host", Duration::from_secs(60), || {
        has_table(&db.url, "jobs")
            && count(&db.url, "SELECT count(*) FROM jobs WHERE component_digest IS NOT NULL") == 1
    });
}

/// A database with `users` 1..=n and an empty `visits`, Sundial's tables
/// and the application's in it, and an environment whose `slow-items` job
/// waits `delay_ms` per user with `workers` workers per host.
fn shared_env(users: i64, delay_ms: u64, workers: u32) -> (PgDatabase, Env) {
    shared_env_with(users, delay_ms, workers, "")
}

/// [`shared_env`] with more settings for the job.
fn shared_env_with(users: i64, delay_ms: u64, workers: u32, extra: &str) -> (PgDatabase, Env) {
    let db = new_database();
    pg_setup(
        &db,
        &format!(
            "CREATE TABLE users (id BIGINT PRIMARY KEY);
             CREATE TABLE visits (user_id BIGINT NOT NULL, execution_id BIGINT NOT NULL);
             INSERT INTO users SELECT generate_series(1, {users});"
        ),
    );
    let env = Env::new(&["slow-items"]);
    let config = format!(
        r#"database = "{}"
jobs_dir = "jobs"
lease_secs = 6
[jobs.slow-items]
database = "read-write"
item_workers = {workers}
args = {{ delay_ms = "{delay_ms}" }}
{extra}
"#,
        db.url
    );
    std::fs::write(env.path().join("sundial.toml"), config).unwrap();
    (db, env)
}

/// Every user visited once, by the one execution, which succeeded with
/// every item counted; the run left no rows behind.
fn assert_each_user_once(db: &PgDatabase, users: i64) {
    let url = &db.url;
    assert_eq!(count(url, "SELECT count(DISTINCT user_id) FROM visits"), users, "every user visited");
    assert_eq!(count(url, "SELECT count(*) FROM visits"), users, "no user visited twice");
    assert_eq!(count(url, "SELECT count(DISTINCT execution_id) FROM visits"), 1, "all by the one execution");
    assert_eq!(count(url, "SELECT count(*) FROM job_executions WHERE status = 'succeeded'"), 1);
    assert_eq!(count(url, "SELECT max(items_total) FROM job_executions"), users, "the report counts every item");
    assert_eq!(count(url, "SELECT max(items_ok) FROM job_executions"), users);
    assert_eq!(count(url, "SELECT count(*) FROM sundial_item_pages"), 0, "a finished run leaves no pages");
    assert_eq!(count(url, "SELECT count(*) FROM sundial_item_runs"), 0);
}

fn summary(db: &PgDatabase) -> String {
    query::<String>(&db.url, "SELECT coalesce(max(summary), '') FROM job_executions")
}

/// One host, four workers: every user once, and the items really ran side
/// by side (four workers take about a quarter of one worker's time).
#[test]
fn workers_on_one_host_share_a_run_and_do_each_item_once() {
    const USERS: i64 = 400;
    let (db, env) = shared_env(USERS, 10, 4);
    run_slow_items(&env);
    assert_each_user_once(&db, USERS);
    // One worker alone waits 400 × 10 ms = 4 s; four, about a quarter.
    let ms =
        count(&db.url, "SELECT (extract(epoch FROM completed_at - started_at) * 1000)::bigint FROM job_executions");
    assert!(ms < 3000, "four workers took {ms} ms");
    let summary = summary(&db);
    assert!(summary.contains("400 items: 400 ok") && summary.contains(" pages, worked by "), "{summary}");
}

/// Two hosts: the one that runs the execution and a serving host that
/// joins it. Both commit items; each item is committed once.
#[test]
fn a_serving_host_helps_with_another_hosts_item_run() {
    const USERS: i64 = 600;
    let (db, env) = shared_env(USERS, 20, 2);
    let helper = start_helper(&db, &env);
    run_slow_items(&env);
    assert_each_user_once(&db, USERS);
    let summary = summary(&db);
    let helper_node = format!(":{}", helper.0.id());
    assert!(summary.contains(&helper_node), "the serving host worked pages: {summary}");
    assert!(summary.contains(", "), "and so did the host that ran the execution: {summary}");
}

/// A helper killed with `kill -9` in the middle of a page (a page of ten
/// users at 100 ms each commits in several batches): once its lease
/// runs out, the page is claimed again and finished after its last
/// committed batch; nothing is committed twice, nothing is lost.
#[test]
fn a_helper_killed_mid_page_leaves_its_page_to_the_others() {
    const USERS: i64 = 200;
    let (db, env) = shared_env(USERS, 100, 1);
    let mut helper = start_helper(&db, &env);
    let run = Process(sundial_command(env.path()).args(["run", "slow-items"]).spawn().unwrap());
    let helper_owned = format!(
        "SELECT count(*) FROM sundial_item_pages WHERE owner LIKE '%:{}' AND NOT done AND total > 0",
        helper.0.id()
    );
    wait_for("the helper to commit part of a page", Duration::from_secs(60), || {
        has_table(&db.url, "sundial_item_pages") && count(&db.url, &helper_owned) > 0
    });
    helper.0.kill().unwrap();
    helper.0.wait().unwrap();
    let mut run = run;
    let status = run.0.wait().unwrap();
    assert!(status.success(), "the run finished");
    assert_each_user_once(&db, USERS);
}

/// A helper paused (`SIGSTOP`) past its lease while it holds a page: the
/// page is taken over and finished; when the helper wakes up its batch is
/// refused by the fencing token and rolled back.
#[test]
fn a_helper_paused_past_its_lease_is_fenced_off() {
    const USERS: i64 = 200;
    let (db, env) = shared_env(USERS, 100, 1);
    let mut helper = Process(
        sundial_command(env.path()).args(["serve", "--no-http"]).stderr(std::process::Stdio::piped()).spawn().unwrap(),
    );
    wait_for_host(&db);
    let mut run = Process(sundial_command(env.path()).args(["run", "slow-items"]).spawn().unwrap());
    let helper_owned = format!(
        "SELECT count(*) FROM sundial_item_pages WHERE owner LIKE '%:{}' AND NOT done AND total > 0",
        helper.0.id()
    );
    wait_for("the helper to commit part of a page", Duration::from_secs(60), || {
        has_table(&db.url, "sundial_item_pages") && count(&db.url, &helper_owned) > 0
    });
    let pid = helper.0.id().to_string();
    Command::new("kill").args(["-STOP", &pid]).status().unwrap();
    let status = run.0.wait().unwrap();
    assert!(status.success(), "the run finished without the paused helper");
    Command::new("kill").args(["-CONT", &pid]).status().unwrap();
    // Give the woken helper time to try its commit, then stop it.
    std::thread::sleep(Duration::from_secs(3));
    assert_each_user_once(&db, USERS);
    Command::new("kill").args(["-INT", &pid]).status().unwrap();
    helper.0.wait().unwrap();
    let mut log = String::new();
    std::io::Read::read_to_string(&mut helper.0.stderr.take().unwrap(), &mut log).unwrap();
    assert!(log.contains("another worker took this page over"), "the helper's late batch was refused:\n{log}");
}

/// The host running the execution killed with `kill -9` mid-run: a serving
/// host marks it crashed once its lease runs out and re-runs it
/// (`retry_on_crash`); the new attempt reopens the shared run and goes on
/// from the pages done. Every user is visited once, by one of the two.
#[test]
fn a_shared_run_whose_host_died_is_resumed_by_the_retry() {
    const USERS: i64 = 300;
    let (db, env) = shared_env_with(USERS, 50, 1, "retry_on_crash = true");
    let _helper = start_helper(&db, &env);
    let mut run = Process(sundial_command(env.path()).args(["run", "slow-items"]).spawn().unwrap());
    wait_for("part of the run", Duration::from_secs(60), || {
        has_table(&db.url, "visits") && count(&db.url, "SELECT count(*) FROM visits") >= 30
    });
    run.0.kill().unwrap();
    run.0.wait().unwrap();
    let url = &db.url;
    wait_for("the retry to succeed", Duration::from_secs(120), || {
        count(url, "SELECT count(*) FROM job_executions WHERE trigger = 'retry' AND status = 'succeeded'") == 1
    });
    assert_eq!(count(url, "SELECT count(DISTINCT user_id) FROM visits"), USERS, "every user visited");
    assert_eq!(count(url, "SELECT count(*) FROM visits"), USERS, "no user visited twice");
    assert_eq!(count(url, "SELECT count(*) FROM job_executions WHERE status = 'crashed'"), 1);
    assert_eq!(
        count(url, "SELECT items_total FROM job_executions WHERE trigger = 'retry'"),
        USERS,
        "the retry reports the whole run"
    );
    let summary = query::<String>(url, "SELECT summary FROM job_executions WHERE trigger = 'retry'");
    assert!(summary.contains(&format!("{USERS} items: {USERS} ok")), "{summary}");
    assert_eq!(count(url, "SELECT count(*) FROM sundial_item_pages"), 0);
}

/// A run whose starter died while listing (its pages never all listed,
/// never retried) does not hold helpers forever: they give it up after a
/// lease without a new page and go on to help with the next run.
#[test]
fn helpers_leave_a_run_whose_listing_stopped() {
    const USERS: i64 = 600;
    let (db, env) = shared_env(USERS, 20, 1);
    let helper = start_helper(&db, &env);
    // A first run makes Sundial's tables in the application database.
    run_slow_items(&env);
    // A run left half-listed by a starter that died, on the same component.
    pg_setup(
        &db,
        r#"DELETE FROM visits;
           INSERT INTO sundial_item_runs (job, run_key, execution_id, digest, context, open, listed)
           SELECT 'slow-items', '0', 999, component_digest,
             '{"execution_id":999,"job_name":"slow-items","scheduled_for_ms":0,"timezone":"UTC","trigger":"manual","attempt":1,"args":{}}',
             TRUE, FALSE
           FROM jobs WHERE name = 'slow-items';"#,
    );
    run_slow_items(&env);
    let url = &db.url;
    assert_eq!(count(url, "SELECT count(DISTINCT user_id) FROM visits"), USERS);
    assert_eq!(count(url, "SELECT count(*) FROM visits"), USERS);
    let summary = query::<String>(url, "SELECT summary FROM job_executions ORDER BY id DESC LIMIT 1");
    assert!(summary.contains(&format!(":{}", helper.0.id())), "the helper came back for the new run: {summary}");
}

/// `item_workers` with the application database on SQLite is refused at
/// start, naming the job; a count out of range is refused at load.
#[test]
fn item_workers_need_postgres_and_a_sane_count() {
    let env = Env::new(&["slow-items"]);
    let write = |extra: &str| {
        std::fs::write(
            env.path().join("sundial.toml"),
            format!("jobs_dir = \"jobs\"\n[jobs.slow-items]\ndatabase = \"read-write\"\n{extra}\n"),
        )
        .unwrap()
    };
    write("item_workers = 2");
    let out = sundial_command(env.path()).args(["run", "slow-items"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("slow-items") && stderr.contains("item_workers needs the application database on Postgres"),
        "{stderr}"
    );
    write("item_workers = 0");
    let out = sundial_command(env.path()).args(["run", "slow-items"]).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("item_workers must be between 1 and 64, got 0"), "{stderr}");
}

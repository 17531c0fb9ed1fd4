//! Resume: a per-item run cut short by a host that died (`kill -9`) is re-run
//! as its next attempt, which starts after the last committed batch — every
//! item is committed exactly once.

use std::process::{Child, Command};
use std::time::Duration;

use crate::helpers::*;

/// A `sundial serve` process, killed if the test fails.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn serve(env: &Env) -> Serve {
    let child = sundial_command(env.path()).args(["serve", "--no-http"]).spawn().unwrap();
    Serve(child)
}

fn write_config(env: &Env, enabled: bool) {
    // Fires every second (overlap: skip) until the restart, which only
    // re-runs the crashed execution.
    let config = format!(
        r#"database = "sqlite://sundial.db"
jobs_dir = "jobs"
[jobs.slow-items]
schedule = "* * * * * *"
enabled = {enabled}
database = "read-write"
retry_on_crash = true
args = {{ delay_ms = "15" }}
"#
    );
    std::fs::write(env.path().join("sundial.toml"), config).unwrap();
}

fn count(conn: &rusqlite::Connection, sql: &str) -> i64 {
    conn.query_row(sql, [], |r| r.get(0)).unwrap()
}

#[test]
fn a_run_cut_short_by_kill_9_resumes_after_its_last_commit() {
    const USERS: i64 = 150;
    let env = Env::new(&["slow-items"]);
    write_config(&env, true);
    let db = env.path().join("sundial.db");
    crate::fixtures::users_and_visits(&db, USERS);
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.busy_timeout(Duration::from_secs(5)).unwrap();

    let mut first = serve(&env);
    // Past two batch commits (every 250 ms), then the host dies mid-batch.
    wait_for("the first batches", Duration::from_secs(30), || count(&conn, "SELECT count(*) FROM visits") >= 30);
    std::thread::sleep(Duration::from_millis(100));
    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let before = count(&conn, "SELECT count(*) FROM visits");
    assert!(before > 0 && before < USERS, "cut short part-way: {before} of {USERS}");

    write_config(&env, false);
    let mut second = serve(&env);
    wait_for("the resumed attempt to finish", Duration::from_secs(60), || {
        count(&conn, "SELECT count(*) FROM job_executions WHERE trigger = 'retry' AND status = 'succeeded'") == 1
    });
    Command::new("kill").args(["-INT", &second.0.id().to_string()]).status().unwrap();
    assert!(second.0.wait().unwrap().success());

    assert_eq!(count(&conn, "SELECT count(*) FROM visits"), USERS, "every user visited once, none twice");
    assert_eq!(count(&conn, "SELECT count(DISTINCT user_id) FROM visits"), USERS);
    assert_eq!(count(&conn, "SELECT count(DISTINCT execution_id) FROM visits"), 2);
    let crashed = count(&conn, "SELECT count(*) FROM job_executions WHERE status = 'crashed'");
    assert_eq!(crashed, 1, "the killed run is marked crashed");
    let (attempt, total, summary): (i64, i64, String) = conn
        .query_row("SELECT attempt, items_total, summary FROM job_executions WHERE trigger = 'retry'", [], |r| {
            Ok((r.get(0)?, r.get(1)?, r.get(2)?))
        })
        .unwrap();
    assert_eq!(attempt, 2);
    assert_eq!(total, USERS - before, "the retry ran only the items not yet committed");
    assert!(summary.contains(&format!("resumed after {before} items")), "{summary}");
    assert_eq!(count(&conn, "SELECT count(*) FROM sundial_item_checkpoints"), 0, "a finished run drops its checkpoint");
}

/// A running item job's counts reach its execution row while it runs.
#[actix_rt::test]
async fn progress_is_recorded_while_an_item_job_runs() {
    use sundial::model::{ExecutionStatus, RunArgs};
    let env = Env::new(&["slow-items"]).config(
        r#"[jobs.slow-items]
           database = "read-write"
           args = { delay_ms = "20" }"#,
    );
    crate::fixtures::users_and_visits(&env.path().join("sundial.db"), 150);
    let host = env.host(false).await;
    let started = host.start_run("slow-items", RunArgs::default()).await.unwrap();
    let seen = eventually("counts on the running execution", || async {
        let e = host.store.get_execution(started.id).await.unwrap().unwrap();
        (e.status == ExecutionStatus::Running && e.items_total > 0).then_some(e.items_total)
    })
    .await;
    assert!(seen < 150, "seen part-way through: {seen}");
    let report = started.done.await.unwrap();
    assert_eq!(report.items_ok, 150);
    let e = host.store.get_execution(started.id).await.unwrap().unwrap();
    assert_eq!((e.status, e.items_total, e.items_ok), (ExecutionStatus::Succeeded, 150, 150));
}

/// SQLite is single-host: a second `serve` on the same file refuses to start
/// and names the holder; one-shot commands still work alongside; once the
/// holder dies (`kill -9`), a new host starts.
#[test]
fn a_second_host_on_the_same_sqlite_file_refuses_to_start() {
    let env = Env::new(&["slow-items"]);
    write_config(&env, false);
    let lock = env.path().join("sundial.db.host-lock");
    let holder = |pid: u32| {
        let lock = lock.clone();
        move || std::fs::read_to_string(&lock).is_ok_and(|s| s.starts_with(&format!("pid {pid} ")))
    };
    let mut first = serve(&env);
    wait_for("the first host to hold the database", Duration::from_secs(60), holder(first.0.id()));

    let sundial = |args: &[&str]| sundial_in(env.path(), args);
    let second = sundial(&["serve", "--no-http"]);
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(err.contains("another Sundial host is already scheduling jobs on"), "{err}");
    assert!(err.contains(&format!("pid {}", first.0.id())), "the message names the holder: {err}");
    let jobs = sundial(&["jobs"]);
    assert!(jobs.status.success(), "one-shot commands work alongside: {}", String::from_utf8_lossy(&jobs.stderr));
    assert!(first.0.try_wait().unwrap().is_none(), "the first host keeps running");

    first.0.kill().unwrap();
    first.0.wait().unwrap();
    let third = serve(&env);
    wait_for("a new host to take over the database", Duration::from_secs(60), holder(third.0.id()));
}

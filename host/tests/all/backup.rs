//! The built-in native jobs. `backup`: scheduled, recorded and shown like a
//! component job; copies the SQLite database with `VACUUM INTO` and keeps
//! `retention_days` of copies. `retention`: deletes old execution history.

use sundial::model::{ExecutionStatus, RunArgs};

use crate::helpers::*;

fn backup_env() -> Env {
    Env::new(&["cleanup"]).clock("2026-11-22T03:30:00Z").config(
        r#"[jobs.backup]
           args = { dir = "bk", retention_days = "7" }"#,
    )
}

#[actix_rt::test]
async fn backup_copies_the_database_and_prunes_old_copies() {
    let env = backup_env();
    env.seed_demo(40, t("2026-11-22T00:00:00Z")).await;
    let bk = env.path().join("bk");
    std::fs::create_dir(&bk).unwrap();
    for name in ["sundial-20261110T033000Z.db", "sundial-20261120T033000Z.db", "notes.txt"] {
        std::fs::write(bk.join(name), b"old").unwrap();
    }
    let host = env.host(false).await;
    assert!(host.loaded.loaded.contains(&"backup".to_string()), "{:?}", host.loaded);

    let dry = host.run_now("backup", RunArgs { dry_run: true, ..RunArgs::default() }).await.unwrap();
    assert_eq!(dry.status, ExecutionStatus::Succeeded, "{dry:?}");
    let summary = dry.summary.clone().unwrap_or_else(|| panic!("{dry:?}"));
    assert!(summary.contains("would copy 1 database") && summary.contains("would delete 1 copies"), "{summary}");
    assert_eq!(std::fs::read_dir(&bk).unwrap().count(), 3, "a dry run touches nothing");

    let r = host.run_now("backup", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    let copy = bk.join("sundial-20261122T033000Z.db");
    let conn = rusqlite::Connection::open(&copy).unwrap();
    let users: i64 = conn.query_row("SELECT count(*) FROM users", [], |r| r.get(0)).unwrap();
    assert_eq!(users, 40, "the copy is a working database with the data");
    assert!(!bk.join("sundial-20261110T033000Z.db").exists(), "older than 7 days: deleted");
    assert!(bk.join("sundial-20261120T033000Z.db").exists(), "within 7 days: kept");
    assert!(bk.join("notes.txt").exists(), "files that are not backups are left alone");

    // Recorded like any job, with the native code's identity as its digest.
    let e = &host.store.list_executions("backup", 1, None).await.unwrap()[0];
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert!(e.component_digest.as_deref().unwrap().starts_with("native:backup@"), "{e:?}");
}

#[actix_rt::test]
async fn a_bad_retention_is_a_clear_fatal_error() {
    let env = Env::new(&["cleanup"]).config(
        r#"[jobs.backup]
           args = { retention_days = "forever" }"#,
    );
    let host = env.host(false).await;
    let r = host.run_now("backup", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed);
    assert!(r.error_message.unwrap().contains("retention_days must be a whole number"));
}

/// The built-in `retention` job deletes finished executions (and their
/// items) older than `days`, empties logs older than `log_days`, keeps
/// everything recent or still running, and a dry run only counts.
#[actix_rt::test]
async fn retention_deletes_old_history_and_keeps_the_rest() {
    let env = Env::new(&["faulty", "flaky-items"]).clock("2026-11-22T03:45:00Z").config(
        r#"[jobs.retention]
           args = { days = "30", log_days = "7" }
           [jobs.flaky-items]
           database = "read-write""#,
    );
    env.seed_demo(30, t("2026-11-22T00:00:00Z")).await;
    env.app().execute_batch("CREATE TABLE processed (user_id INTEGER PRIMARY KEY)").unwrap();
    let host = env.host(false).await;
    for _ in 0..3 {
        host.run_now("faulty", RunArgs::default()).await.unwrap();
    }
    let partial = host.run_now("flaky-items", RunArgs::default()).await.unwrap();
    assert_eq!(partial.status, ExecutionStatus::Partial);
    // Sundial's own tables, on whichever backend this run uses.
    let db = SundialSql::open(&env).await;
    // Age the history: two faulty runs (one a retry of the other) and the
    // item run 40 days old, the third faulty run 10 days old.
    db.batch(
        "UPDATE job_executions SET completed_at = '2026-10-13T00:00:00.000Z' WHERE id IN (1, 2, 4);
         UPDATE job_executions SET parent_id = 1 WHERE id = 2;
         UPDATE job_executions SET completed_at = '2026-11-12T00:00:00.000Z', logs = 'old log' WHERE id = 3;",
    )
    .await;
    let count = |sql: &'static str| db.int(sql);
    assert!(count("SELECT count(*) FROM execution_items WHERE execution_id = 4").await > 0);

    let dry = host.run_now("retention", RunArgs { dry_run: true, ..RunArgs::default() }).await.unwrap();
    let summary = dry.summary.clone().unwrap_or_else(|| panic!("{dry:?}"));
    assert!(summary.contains("would delete 3 executions older than 30 days"), "{summary}");
    assert_eq!(count("SELECT count(*) FROM job_executions WHERE id <= 4").await, 4, "a dry run deletes nothing");

    let r = host.run_now("retention", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert!(r.summary.as_deref().unwrap().starts_with("deleted 3 executions"), "{r:?}");
    let left = db.ints("SELECT id FROM job_executions WHERE id <= 4 ORDER BY id").await;
    assert_eq!(left, [3]);
    let logs = db.text("SELECT logs FROM job_executions WHERE id = 3").await;
    assert_eq!(logs, "", "logs older than 7 days are emptied, the row kept");
    assert_eq!(count("SELECT count(*) FROM execution_items WHERE execution_id = 4").await, 0, "its items went with it");
    // The retention runs themselves are recorded like any job's.
    assert_eq!(
        count("SELECT count(*) FROM job_executions e JOIN jobs j ON j.id = e.job_id WHERE j.name = 'retention'").await,
        2
    );
}

//! The built-in native `backup` job: scheduled, recorded and shown like a
//! component job; copies the SQLite database with `VACUUM INTO` and keeps
//! `retention_days` of copies.

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
    let summary = dry.summary.unwrap();
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

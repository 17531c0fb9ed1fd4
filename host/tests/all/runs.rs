//! Run-now of real components, and every way a run can end.

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, Trigger};

use crate::helpers::*;

fn mode(m: &str) -> RunArgs {
    RunArgs { args: vec![("mode".into(), m.into())], ..RunArgs::default() }
}

#[actix_rt::test]
async fn cleanup_deletes_exactly_the_expired_rows_and_records_the_execution() {
    let env = Env::new(&["cleanup"]).clock("2026-11-22T10:00:00Z").config(
        r#"[jobs.cleanup]
           database = "read-write""#,
    );
    let seeded = env.seed_demo(300, t("2026-11-22T10:00:00Z")).await;
    assert!(seeded.expired_sessions > 0 && seeded.old_deleted_entries > 0);
    let host = env.host(false).await;

    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
    assert_eq!(report.changed, seeded.expired_sessions + seeded.old_deleted_entries);
    assert!(report.logs.contains("expired sessions"), "{}", report.logs);

    let db = env.sql().await;
    let (sessions, expired): (i64, i64) =
        sqlx::query_as("SELECT COUNT(*), COUNT(*) FILTER (WHERE expires_at < '2026-11-22T10:00:00Z') FROM sessions")
            .fetch_one(&db)
            .await
            .unwrap();
    assert_eq!(expired, 0);
    assert_eq!(sessions as u64, seeded.sessions - seeded.expired_sessions);
    let recent_deleted: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM food_entries WHERE deleted_at IS NOT NULL")
        .fetch_one(&db)
        .await
        .unwrap();
    assert!(recent_deleted > 0, "entries deleted within the retention period are kept");

    let execs = host.store.list_executions("cleanup", 10, None).await.unwrap();
    assert_eq!(execs.len(), 1);
    let e = &execs[0];
    assert_eq!(e.trigger, Trigger::Manual);
    assert_eq!(e.status, ExecutionStatus::Succeeded);
    assert_eq!(e.component_digest.as_deref(), Some(digest(&wasm("cleanup")).as_str()));
    assert_eq!(e.component_version, Some(1));
    assert!(e.started_at.is_some() && e.finished_at.is_some());

    // A second run finds nothing left to delete.
    let again = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!((again.status, again.changed), (ExecutionStatus::Succeeded, 0));
}

#[actix_rt::test]
async fn a_job_without_a_database_grant_is_denied_and_changes_nothing() {
    let env = Env::new(&["cleanup"]).clock("2026-11-22T10:00:00Z");
    let seeded = env.seed_demo(50, t("2026-11-22T10:00:00Z")).await;
    let host = env.host(false).await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Failed);
    assert_eq!(report.error_class, Some(ErrorClass::Fatal));
    assert!(report.error_message.as_deref().unwrap().contains("database access denied"), "{report:?}");
    let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM sessions").fetch_one(&env.sql().await).await.unwrap();
    assert_eq!(n as u64, seeded.sessions);
}

#[actix_rt::test]
async fn read_only_grants_are_enforced() {
    let env = Env::new(&["cleanup"]).clock("2026-11-22T10:00:00Z").config(
        r#"[jobs.cleanup]
           database = "read-only""#,
    );
    env.seed_demo(20, t("2026-11-22T10:00:00Z")).await;
    let host = env.host(false).await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Failed);
    assert!(report.error_message.as_deref().unwrap().contains("read-only"), "{report:?}");
}

#[actix_rt::test]
async fn every_failure_class_ends_in_a_finished_row_and_the_host_keeps_going() {
    let env = Env::new(&["faulty"]).config(
        r#"[jobs.faulty]
           timeout_secs = 1
           memory_mib = 32"#,
    );
    let host = env.host(false).await;
    let cases = [
        ("fatal", ExecutionStatus::Failed, ErrorClass::Fatal, "the fixture failed on purpose"),
        ("retryable", ExecutionStatus::Failed, ErrorClass::Retryable, "try again later"),
        ("skip", ExecutionStatus::Skipped, ErrorClass::Skip, "not enough reports"),
        ("trap", ExecutionStatus::Failed, ErrorClass::Trap, "unreachable"),
        ("panic", ExecutionStatus::Failed, ErrorClass::Trap, "fixture panicked on purpose"),
        ("loop", ExecutionStatus::TimedOut, ErrorClass::Timeout, "deadline of 1s exceeded"),
        ("memory", ExecutionStatus::Failed, ErrorClass::Memory, "memory limit of 32 MiB exceeded"),
    ];
    for (m, status, class, message) in cases {
        let r = host.run_now("faulty", mode(m)).await.unwrap();
        assert_eq!((r.status, r.error_class), (status, Some(class)), "mode {m}: {r:?}");
        let msg = r.error_message.clone().unwrap_or_default();
        assert!(msg.contains(message), "mode {m}: {msg:?} lacks {message:?}");
    }
    let ok = host.run_now("faulty", mode("ok")).await.unwrap();
    assert_eq!(ok.status, ExecutionStatus::Succeeded);

    // Every execution row is finished with the same outcome.
    let execs = host.store.list_executions("faulty", 100, None).await.unwrap();
    assert_eq!(execs.len(), cases.len() + 1);
    assert!(execs.iter().all(|e| e.status.is_final() && e.finished_at.is_some()));
    let statuses: Vec<_> = execs.iter().rev().map(|e| e.status).collect();
    let mut expected: Vec<_> = cases.iter().map(|c| c.1).collect();
    expected.push(ExecutionStatus::Succeeded);
    assert_eq!(statuses, expected);
}

#[actix_rt::test]
async fn guest_output_is_captured_in_the_execution_log() {
    let env = Env::new(&["faulty"]);
    let host = env.host(false).await;
    let r = host.run_now("faulty", mode("print")).await.unwrap();
    assert!(r.logs.contains("STDOUT hello from stdout"), "{}", r.logs);
    assert!(r.logs.contains("STDERR hello from stderr"), "{}", r.logs);
    assert!(r.logs.contains("INFO mode print"), "{}", r.logs);
    let stored = host.store.list_executions("faulty", 1, None).await.unwrap();
    assert_eq!(stored[0].logs, r.logs);
}

#[actix_rt::test]
async fn unknown_jobs_and_broken_files_are_reported_not_fatal() {
    let env = Env::new(&["cleanup"]);
    std::fs::write(env.jobs_dir().join("garbage.wasm"), b"definitely not wasm").unwrap();
    std::fs::write(env.jobs_dir().join("core.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let host = env.host(false).await;
    assert_eq!(host.loaded.loaded, vec!["cleanup".to_string()]);
    let failed: Vec<String> = host.loaded.failed.iter().map(|(p, e)| format!("{}: {e}", p.display())).collect();
    assert_eq!(failed.len(), 2, "{failed:?}");
    assert!(failed.iter().any(|f| f.contains("core.wasm") && f.contains("core WebAssembly module")), "{failed:?}");
    assert!(failed.iter().any(|f| f.contains("garbage.wasm") && f.contains("no WebAssembly header")), "{failed:?}");
    let err = host.run_now("nope", RunArgs::default()).await.unwrap_err().to_string();
    assert!(err.contains("unknown job \"nope\"") && err.contains("cleanup"), "{err}");
}

#[actix_rt::test]
async fn processes_opening_a_new_database_at_once_all_succeed() {
    let env = Env::new(&[]);
    // Separate pools stand for separate processes (serve, history, run...).
    let tasks: Vec<_> = (0..6)
        .map(|_| {
            let url = env.db_url();
            actix_rt::spawn(async move { sundial::store::Store::open(&url).await })
        })
        .collect();
    for task in tasks {
        let store = task.await.unwrap().expect("every open succeeds");
        assert!(store.global_enabled().await.unwrap());
    }
}

#[actix_rt::test]
async fn an_execution_prepared_ahead_is_counted_until_its_guest_call_starts() {
    use std::sync::Arc;
    use std::time::Duration;

    use sundial::clock::{Clock, SystemClock};
    use sundial::runtime::Runtime;

    let runtime = Runtime::new(Arc::new(SystemClock) as Arc<dyn Clock>).unwrap();
    let version = runtime.load(std::fs::read(wasm("faulty")).unwrap()).await.unwrap();
    let at = chrono::Utc::now() + chrono::Duration::milliseconds(1500);
    let invocation = crate::fixtures::invocation(1, "faulty", at);
    let run = {
        let runtime = runtime.clone();
        tokio::spawn(async move {
            runtime.execute_at(sundial::runtime::JobCode::Component(version), invocation, Some(at)).await
        })
    };
    // Prepared well before its instant, and still waiting for it.
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(runtime.prepared_waiting(), 1, "the waiting execution holds its slot");
    let report = run.await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
    let started = report.guest_started_at.unwrap();
    assert!(started >= at, "the guest call started at its instant, not before ({started} < {at})");
    assert_eq!(runtime.prepared_waiting(), 0, "the slot is given back once the call started");
}

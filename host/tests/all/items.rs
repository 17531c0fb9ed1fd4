//! The per-item loop: one transaction per item, failures isolated and rolled
//! back, skips recorded with reasons, limit and dry run.

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs};

use crate::helpers::*;

async fn processed(env: &Env) -> Vec<i64> {
    sqlx::query_scalar("SELECT user_id FROM processed ORDER BY user_id").fetch_all(&env.sql().await).await.unwrap()
}

async fn seed(env: &Env) {
    env.seed_demo(30, t("2026-11-22T10:00:00Z")).await;
    sqlx::query("CREATE TABLE processed (user_id INTEGER PRIMARY KEY)").execute(&env.sql().await).await.unwrap();
}

fn flaky_env() -> Env {
    Env::new(&["flaky-items"]).clock("2026-11-22T10:00:00Z").config(
        r#"[jobs.flaky-items]
           database = "read-write""#,
    )
}

#[actix_rt::test]
async fn failed_items_are_rolled_back_and_do_not_stop_the_others() {
    let env = flaky_env();
    seed(&env).await;
    let host = env.host(false).await;
    let r = host.run_now("flaky-items", RunArgs::default()).await.unwrap();

    let skipped: Vec<i64> = (1..=30).filter(|i| i % 7 == 0).collect();
    let failed: Vec<i64> = (1..=30).filter(|i| i % 7 != 0 && (i % 5 == 0 || *i == 11)).collect();
    let ok: Vec<i64> = (1..=30).filter(|i| !skipped.contains(i) && !failed.contains(i)).collect();
    assert_eq!(r.status, ExecutionStatus::Partial, "{r:?}");
    assert_eq!((r.items_total, r.items_ok), (30, ok.len() as u64));
    assert_eq!((r.items_skipped, r.items_failed), (skipped.len() as u64, failed.len() as u64));
    assert_eq!(processed(&env).await, ok, "only successful items are committed");

    let trap = r.problems.iter().find(|p| p.key == "11").unwrap();
    assert_eq!(trap.class, ErrorClass::Trap);
    let skip = r.problems.iter().find(|p| p.key == "7").unwrap();
    assert_eq!((skip.class, skip.message.as_str()), (ErrorClass::Skip, "multiple of seven"));

    let e = &host.store.list_executions("flaky-items", 1, None).await.unwrap()[0];
    assert_eq!((e.status, e.items_total, e.items_failed), (ExecutionStatus::Partial, 30, failed.len() as i64));
    let stored = host.store.execution_items(e.id).await.unwrap();
    assert_eq!(stored.len(), skipped.len() + failed.len());
    assert!(
        stored
            .iter()
            .any(|(k, outcome, _, msg)| k == "10" && outcome == "failed" && msg.contains("failed after writing"))
    );
}

#[actix_rt::test]
async fn limit_stops_after_n_items_and_dry_run_commits_nothing() {
    let env = flaky_env();
    seed(&env).await;
    let host = env.host(false).await;

    let dry = host.run_now("flaky-items", RunArgs { dry_run: true, ..RunArgs::default() }).await.unwrap();
    assert_eq!(dry.items_total, 30);
    assert!(dry.summary.as_deref().unwrap().contains("dry run"));
    assert!(processed(&env).await.is_empty(), "a dry run commits nothing");
    assert!(dry.changed > 0, "a dry run still reports what would change");

    let limited = host.run_now("flaky-items", RunArgs { limit: Some(4), ..RunArgs::default() }).await.unwrap();
    assert_eq!((limited.items_total, limited.status), (4, ExecutionStatus::Succeeded));
    assert_eq!(processed(&env).await, vec![1, 2, 3, 4]);
}

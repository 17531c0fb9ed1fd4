//! Key-value state (`state = true`): kept between executions, new versions
//! and host restarts; denied without the grant; nothing kept by a dry run;
//! limits with clear messages; jobs apart; item jobs whose batches hold the
//! database's write lock.

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, RunReport};

use crate::helpers::*;

const RELEASED: &str = "released-0-1-0";

/// Both fixtures, granted key-value state.
fn granted_env() -> Env {
    Env::new(&[RELEASED, "faulty"]).config(&format!("[jobs.{RELEASED}]\nstate = true\n[jobs.faulty]\nstate = true"))
}

/// Arguments for the `faulty` fixture's `state` mode.
fn state_args(pairs: &[(&str, &str)]) -> RunArgs {
    let mut args = vec![("mode".to_string(), "state".to_string())];
    args.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RunArgs { args, ..RunArgs::default() }
}

fn dry(mut args: RunArgs) -> RunArgs {
    args.dry_run = true;
    args
}

fn summary(r: &RunReport) -> &str {
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    r.summary.as_deref().unwrap_or_default()
}

fn error(r: &RunReport) -> &str {
    assert_eq!((r.status, r.error_class), (ExecutionStatus::Failed, Some(ErrorClass::Fatal)), "{r:?}");
    r.error_message.as_deref().unwrap_or_default()
}

#[actix_rt::test]
async fn state_survives_executions_new_versions_and_restarts() {
    let env = granted_env();
    let host = env.host(false).await;
    for n in 1..=2 {
        let r = host.run_now(RELEASED, RunArgs::default()).await.unwrap();
        assert_eq!(summary(&r), format!("run {n}"));
    }
    // A new version of the job keeps the job's state.
    let bytes = crate::fixtures::variant(&std::fs::read(wasm(RELEASED)).unwrap(), "state-v2");
    let deployed = host.deploy(bytes).await.unwrap();
    assert_eq!(deployed.component_version, Some(2));
    let r = host.run_now(RELEASED, RunArgs::default()).await.unwrap();
    assert_eq!(summary(&r), "run 3");
    host.stop().await;

    // So does a restart on the same database.
    let host = env.host(false).await;
    let r = host.run_now(RELEASED, RunArgs::default()).await.unwrap();
    assert_eq!(summary(&r), "run 4");
    host.stop().await;
}

#[actix_rt::test]
async fn jobs_do_not_see_each_others_state() {
    let env = granted_env();
    let host = env.host(false).await;
    let r = host.run_now(RELEASED, RunArgs::default()).await.unwrap();
    assert_eq!(summary(&r), "run 1");
    let get_runs = state_args(&[("op", "get"), ("key", "runs")]);
    let r = host.run_now("faulty", get_runs.clone()).await.unwrap();
    assert_eq!(summary(&r), "missing", "another job's key is not visible");
    let r = host.run_now("faulty", state_args(&[("op", "set"), ("key", "runs"), ("value", "faulty's")])).await;
    assert_eq!(summary(&r.unwrap()), "set 8 bytes");
    let r = host.run_now("faulty", get_runs).await.unwrap();
    assert_eq!(summary(&r), r#"value "faulty's""#);
    let r = host.run_now(RELEASED, RunArgs::default()).await.unwrap();
    assert_eq!(summary(&r), "run 2", "the other job's write did not touch this one's key");
    host.stop().await;
}

#[actix_rt::test]
async fn state_is_denied_without_the_grant_and_the_mismatch_is_reported() {
    let env = Env::new(&[RELEASED, "faulty"]);
    let host = env.host(false).await;
    let r = host.run_now(RELEASED, RunArgs::default()).await.unwrap();
    let message = error(&r);
    assert!(message.contains("key-value state is not granted to this job"), "{message}");
    assert!(message.contains("`state = true`"), "the message says how to grant it: {message}");
    let r = host.run_now("faulty", state_args(&[])).await.unwrap();
    assert!(error(&r).contains("not granted"), "{r:?}");

    // The job asks for key-value state in `describe`: operators are told.
    let mismatches = host.job_snapshot(RELEASED).await.unwrap().grant_mismatches();
    assert!(mismatches.iter().any(|m| m.contains("asks for key-value state, which is not granted")), "{mismatches:?}");
    assert!(host.job_snapshot("faulty").await.unwrap().grant_mismatches().is_empty(), "faulty does not ask");
    host.stop().await;

    let granted = granted_env();
    let host = granted.host(false).await;
    let mismatches = host.job_snapshot(RELEASED).await.unwrap().grant_mismatches();
    assert!(mismatches.is_empty(), "{mismatches:?}");
    host.stop().await;
}

#[actix_rt::test]
async fn dry_runs_see_their_own_writes_and_keep_none() {
    let env = granted_env();
    let host = env.host(false).await;
    let r = host.run_now("faulty", dry(state_args(&[("times", "3")]))).await.unwrap();
    assert_eq!(summary(&r), "counter 3", "a dry run reads its own writes");
    let r = host.run_now("faulty", state_args(&[])).await.unwrap();
    assert_eq!(summary(&r), "counter 1", "and keeps none of them");
    let r = host.run_now("faulty", dry(state_args(&[("times", "2")]))).await.unwrap();
    assert_eq!(summary(&r), "counter 3");
    let r = host.run_now("faulty", dry(state_args(&[("op", "delete")]))).await.unwrap();
    assert_eq!(summary(&r), "deleted");
    let r = host.run_now("faulty", state_args(&[])).await.unwrap();
    assert_eq!(summary(&r), "counter 2", "the dry runs' writes and deletion were dropped");
    host.stop().await;
}

#[actix_rt::test]
async fn bad_keys_and_oversize_values_have_clear_errors() {
    let env = granted_env();
    let host = env.host(false).await;
    let run = |pairs: &[(&str, &str)]| host.run_now("faulty", state_args(pairs));

    let r = run(&[("op", "set"), ("key", ""), ("value", "v")]).await.unwrap();
    assert!(error(&r).contains("the key is empty; keys are 1 to 256 bytes"), "{r:?}");
    let long = "k".repeat(257);
    let r = run(&[("op", "get"), ("key", &long)]).await.unwrap();
    assert!(error(&r).contains("is 257 bytes long; keys are at most 256 bytes"), "{r:?}");
    let r = run(&[("op", "set"), ("key", "big"), ("bytes", "1048577")]).await.unwrap();
    assert!(error(&r).contains("the value for \"big\" is 1048577 bytes; values are at most 1 MiB"), "{r:?}");

    // The limits themselves are allowed.
    let r = run(&[("op", "set"), ("key", "big"), ("bytes", "1048576")]).await.unwrap();
    assert_eq!(summary(&r), "set 1048576 bytes");
    let r = run(&[("op", "get"), ("key", "big")]).await.unwrap();
    assert_eq!(summary(&r), "1048576 bytes");
    let key = "k".repeat(256);
    let r = run(&[("op", "set"), ("key", &key), ("value", "v")]).await.unwrap();
    assert_eq!(summary(&r), "set 1 bytes");
    let r = run(&[("op", "delete"), ("key", "big")]).await.unwrap();
    assert_eq!(summary(&r), "deleted");
    let r = run(&[("op", "get"), ("key", "big")]).await.unwrap();
    assert_eq!(summary(&r), "missing");
    let r = run(&[("op", "delete"), ("key", "never-set")]).await.unwrap();
    assert_eq!(summary(&r), "deleted", "deleting a missing key is not an error");
    host.stop().await;
}

/// The item job's batches hold the write lock of the database file its
/// state is kept in (the application database is Sundial's own file by
/// default): its state writes must neither wait for that lock nor be undone
/// with failed items.
#[actix_rt::test]
async fn item_jobs_keep_state_while_their_batches_hold_the_write_lock() {
    if store_on_postgres() {
        return; // About state and items sharing one SQLite file; on Postgres they do not.
    }
    let env = Env::new(&["flaky-items"])
        .clock("2026-11-22T10:00:00Z")
        .config("[jobs.flaky-items]\ndatabase = \"read-write\"\nstate = true");
    env.seed_demo(30, t("2026-11-22T10:00:00Z")).await;
    let pool = env.sql().await;
    sqlx::query("CREATE TABLE processed (user_id INTEGER PRIMARY KEY)").execute(&pool).await.unwrap();
    let counter = |key: &'static str| {
        let pool = pool.clone();
        async move {
            let v: Option<Vec<u8>> =
                sqlx::query_scalar("SELECT value FROM job_state WHERE job_name = 'flaky-items' AND key = $1")
                    .bind(key)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
            v.map(|b| String::from_utf8(b).unwrap())
        }
    };
    let host = env.host(false).await;
    let with_state = RunArgs { args: vec![("state".into(), "1".into())], ..RunArgs::default() };

    let started = std::time::Instant::now();
    let r = host.run_now("flaky-items", with_state.clone()).await.unwrap();
    assert_eq!((r.status, r.items_total), (ExecutionStatus::Partial, 30), "{r:?}");
    assert!(r.problems.iter().all(|p| !p.message.contains("state")), "{:?}", r.problems);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "state writes did not wait for a lock");
    // Every item not skipped counted itself, the failed and trapped ones too.
    let started_items = (1..=30).filter(|i| i % 7 != 0).count();
    assert_eq!(counter("items").await, Some(started_items.to_string()));
    assert_eq!(counter("pages").await, Some("5".to_string()));

    let r = host.run_now("flaky-items", RunArgs { dry_run: true, ..with_state.clone() }).await.unwrap();
    assert_eq!(r.items_total, 30, "{r:?}");
    assert_eq!(counter("items").await, Some(started_items.to_string()), "a dry run keeps nothing");

    let r = host.run_now("flaky-items", with_state).await.unwrap();
    assert_eq!(r.items_total, 30, "{r:?}");
    assert_eq!(counter("items").await, Some((2 * started_items).to_string()));
    host.stop().await;
}

//! Concurrency limits (`max_running`, host-wide and per job) and priorities:
//! runs beyond the limit wait, `queued`, and take freed slots in priority
//! order; none is lost.

use std::time::Duration;

use sundial::events::Event;
use sundial::model::{ExecutionStatus, RunArgs};

use crate::fixtures::users_and_visits;
use crate::helpers::*;

fn args(pairs: &[(&str, &str)]) -> RunArgs {
    RunArgs { args: pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect(), ..RunArgs::default() }
}

#[actix_rt::test]
async fn a_burst_of_200_runs_with_a_limit_of_4_never_runs_more_than_4_and_serves_priority_first() {
    let env = Env::new(&["faulty", "slow-items"]).config(
        r#"max_running = 4
           [jobs.faulty]
           overlap = "allow"
           database = "read-write"
           [jobs.slow-items]
           overlap = "allow"
           database = "read-write"
           priority = 10"#,
    );
    let db = env.path().join("sundial.db");
    users_and_visits(&db, 3);
    let app = rusqlite::Connection::open(&db).unwrap();
    app.execute_batch("CREATE TABLE gauge (now INTEGER, peak INTEGER); INSERT INTO gauge VALUES (0, 0);").unwrap();
    let host = env.host(false).await;
    let mut events = host.subscribe();

    // Four long runs take the four slots (long enough for the 196 others to
    // be recorded meanwhile: a round trip each on Postgres)...
    let block_ms = if store_on_postgres() { "3000" } else { "600" };
    let mut runs = Vec::new();
    for _ in 0..4 {
        runs.push(("blocker", host.start_run("faulty", args(&[("mode", "gauge"), ("ms", block_ms)])).await.unwrap()));
    }
    // ...and 196 more arrive meanwhile, low- and high-priority mixed.
    for i in 0..196 {
        let run = if i % 4 == 0 {
            ("high", host.start_run("slow-items", RunArgs::default()).await.unwrap())
        } else {
            ("low", host.start_run("faulty", args(&[("mode", "gauge"), ("ms", "5")])).await.unwrap())
        };
        runs.push(run);
    }
    let queued = host.store.list_executions("faulty", 500, None).await.unwrap();
    let waiting = queued.iter().filter(|e| e.status == ExecutionStatus::Queued).count();
    assert!(waiting >= 100, "runs beyond the limit wait as queued ({waiting} queued)");
    let slots = host.slots.clone().unwrap();
    assert_eq!((slots.limit(), slots.running()), (4, 4));
    assert!(slots.waiting() >= 100, "{} waiting", slots.waiting());
    // Waiting runs are not counted as running in /metrics.
    tokio::time::sleep(Duration::from_millis(100)).await;
    let text = host.metrics.render(&[], true, "test");
    let running: u64 = text
        .lines()
        .filter(|l| l.starts_with("sundial_running_executions{"))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum();
    assert!(running <= 4, "{running} counted running:\n{text}");

    let mut ids = std::collections::HashMap::new();
    for (kind, run) in runs {
        ids.insert(run.id, kind);
        let report = tokio::time::timeout(Duration::from_secs(120), run.done).await.unwrap().unwrap();
        assert_eq!(report.status, ExecutionStatus::Succeeded, "{kind}: {report:?}");
    }
    let peak: i64 = app.query_row("SELECT peak FROM gauge", [], |r| r.get(0)).unwrap();
    assert_eq!(peak, 4, "never more than 4 guests at once (and the 4 blockers together)");

    // Nothing lost: 200 rows, all finished.
    let mut all = host.store.list_executions("faulty", 500, None).await.unwrap();
    all.extend(host.store.list_executions("slow-items", 500, None).await.unwrap());
    assert_eq!(all.len(), 200);
    assert!(all.iter().all(|e| e.status == ExecutionStatus::Succeeded && e.started_at.is_some()));

    // Priority: when the blockers ended, the high-priority runs took the
    // slots first. A low one may only start its guest before the last high
    // one did if it got a slot after every high one had its own: at most 3.
    let mut starts = Vec::new();
    while let Ok(e) = events.try_recv() {
        if let Event::ExecutionFinished { id, guest_started_at: Some(at), .. } = e {
            starts.push((at, ids[&id]));
        }
    }
    assert_eq!(starts.len(), 200);
    starts.sort();
    let last_high = starts.iter().rposition(|(_, k)| *k == "high").unwrap();
    let low_before = starts[..last_high].iter().filter(|(_, k)| *k == "low").count();
    assert!(low_before <= 3, "{low_before} low-priority runs started before the last high-priority one");
    host.stop().await;
}

#[actix_rt::test]
async fn a_job_limit_queues_its_own_runs_and_a_cancelled_queued_run_ends_cancelled() {
    let env = Env::new(&["faulty"]).config(
        r#"[jobs.faulty]
           overlap = "allow"
           database = "read-write"
           max_running = 2"#,
    );
    env.app()
        .execute_batch("CREATE TABLE gauge (now INTEGER, peak INTEGER); INSERT INTO gauge VALUES (0, 0);")
        .unwrap();
    let host = env.host(false).await;
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(host.start_run("faulty", args(&[("mode", "gauge"), ("ms", "300")])).await.unwrap());
    }
    let last = runs.pop().unwrap();
    let row = host.store.get_execution(last.id).await.unwrap().unwrap();
    assert_eq!(row.status, ExecutionStatus::Queued);
    assert!(host.cancel(last.id).await.unwrap(), "a queued run can be cancelled");
    let report = last.done.await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Cancelled);
    assert!(report.error_message.unwrap().contains("while waiting for a slot"));
    for run in runs {
        assert_eq!(run.done.await.unwrap().status, ExecutionStatus::Succeeded);
    }
    let peak: i64 = env.app().query_row("SELECT peak FROM gauge", [], |r| r.get(0)).unwrap();
    assert_eq!(peak, 2, "the job's own limit");
    let e = eventually("the cancelled row", || async {
        host.store.get_execution(last.id).await.unwrap().filter(|e| e.status == ExecutionStatus::Cancelled)
    })
    .await;
    assert!(e.error_message.unwrap().contains("while waiting for a slot") && e.logs.is_empty(), "it never ran");
    host.stop().await;
}

/// A stopping host lets running executions finish but starts none of the
/// runs still waiting for a slot: they end cancelled, saying why, at once.
#[actix_rt::test]
async fn runs_waiting_for_a_slot_do_not_start_while_the_host_stops() {
    let env = Env::new(&["faulty"]).config(
        r#"max_running = 1
           [jobs.faulty]
           overlap = "allow"
           database = "read-write""#,
    );
    env.app()
        .execute_batch("CREATE TABLE gauge (now INTEGER, peak INTEGER); INSERT INTO gauge VALUES (0, 0);")
        .unwrap();
    let host = env.host(false).await;
    let running = host.start_run("faulty", args(&[("mode", "gauge"), ("ms", "800")])).await.unwrap();
    let mut waiting = Vec::new();
    for _ in 0..3 {
        waiting.push(host.start_run("faulty", args(&[("mode", "gauge"), ("ms", "800")])).await.unwrap());
    }
    let report = host.shutdown(Duration::from_secs(20)).await;
    assert!(report.took < Duration::from_secs(5), "the waiting runs were not run first: {report:?}");
    assert_eq!(running.done.await.unwrap().status, ExecutionStatus::Succeeded);
    for run in waiting {
        let r = run.done.await.unwrap();
        assert_eq!(r.status, ExecutionStatus::Cancelled);
        assert_eq!(r.error_message.as_deref(), Some("not started: the host stopped while waiting for a slot"));
    }
    let peak: i64 = env.app().query_row("SELECT peak FROM gauge", [], |r| r.get(0)).unwrap();
    assert_eq!(peak, 1);
}

/// A run that waited for a slot records when it started on the host's clock,
/// like every other run (so tests and simulations with their own clock see
/// consistent rows).
#[actix_rt::test]
async fn a_run_that_waited_for_a_slot_starts_on_the_hosts_clock() {
    let env = Env::new(&["faulty"])
        .config(
            r#"[jobs.faulty]
               overlap = "allow"
               database = "read-write"
               max_running = 1"#,
        )
        .clock("2026-03-01T09:00:00Z");
    env.app()
        .execute_batch("CREATE TABLE gauge (now INTEGER, peak INTEGER); INSERT INTO gauge VALUES (0, 0);")
        .unwrap();
    let host = env.host(false).await;
    let first = host.start_run("faulty", args(&[("mode", "gauge"), ("ms", "200")])).await.unwrap();
    let second = host.start_run("faulty", args(&[("mode", "gauge"), ("ms", "10")])).await.unwrap();
    let row = host.store.get_execution(second.id).await.unwrap().unwrap();
    assert_eq!(row.status, ExecutionStatus::Queued, "the second run waits for the slot");
    assert_eq!(first.done.await.unwrap().status, ExecutionStatus::Succeeded);
    assert_eq!(second.done.await.unwrap().status, ExecutionStatus::Succeeded);
    let row = host.store.get_execution(second.id).await.unwrap().unwrap();
    assert_eq!(row.started_at, Some(t("2026-03-01T09:00:00Z")), "started on the host's clock");
    host.stop().await;
}

//! Fires driven by a manual clock: exactly one execution per scheduled
//! instant, across restarts; crash recovery; overlap; retries; switches.

use std::time::Duration;

use sundial::actors::scheduler::{GetNextFires, SwitchJob, SwitchScheduler, Tick};
use sundial::host::Host;
use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, Trigger};

use crate::helpers::*;

/// Moves the clock and lets the scheduler act on it.
async fn tick_at(env: &Env, host: &Host, at: &str) {
    env.clock.as_ref().unwrap().set(t(at));
    let scheduler = host.scheduler.as_ref().unwrap();
    scheduler.send(Tick).await.unwrap();
}

/// Writes the row a host that died mid-run leaves behind.
async fn left_running_by_a_dead_host(host: &Host, job: &str, scheduled_for: &str) -> sundial::model::ExecutionId {
    let job = host.store.get_job(job).await.unwrap().unwrap();
    let new = sundial::store::NewExecution {
        job_id: job.id,
        trigger: Trigger::Schedule,
        scheduled_for: t(scheduled_for),
        attempt: 1,
        parent_id: None,
        status: ExecutionStatus::Running,
        digest: None,
        version: Some(1),
        node: "dead-host:1".into(),
        args: Default::default(),
        skip: None,
    };
    host.store.create_execution(&new).await.unwrap().unwrap()
}

/// Waits until the scheduler has processed everything sent to it so far.
async fn settle(host: &Host) -> Vec<(String, Option<chrono::DateTime<chrono::Utc>>, u64)> {
    host.scheduler.as_ref().unwrap().send(GetNextFires).await.unwrap()
}

#[actix_rt::test]
async fn each_scheduled_instant_runs_once_with_its_digest_even_across_a_restart() {
    let env = Env::new(&["cleanup"]).clock("2026-11-22T10:00:30Z").config(
        r#"[jobs.cleanup]
           schedule = "* * * * *"
           database = "read-write""#,
    );
    env.seed_demo(20, t("2026-11-22T10:00:00Z")).await;
    let host = env.host(true).await;
    let next = settle(&host).await;
    assert_eq!(next, vec![("cleanup".to_string(), Some(t("2026-11-22T10:01:00Z")), 0)]);

    tick_at(&env, &host, "2026-11-22T10:01:00.003Z").await;
    let first = finished_executions(&host.store, "cleanup", 1).await;
    tick_at(&env, &host, "2026-11-22T10:02:00.001Z").await;
    // Ticking again at the same time must not fire the same instant again.
    tick_at(&env, &host, "2026-11-22T10:02:00.500Z").await;
    let runs = finished_executions(&host.store, "cleanup", 2).await;
    assert_eq!(runs.len(), 2);
    assert_eq!(runs[0].id, first[0].id);
    let wanted = digest(&wasm("cleanup"));
    for (e, at) in runs.iter().zip(["2026-11-22T10:01:00Z", "2026-11-22T10:02:00Z"]) {
        assert_eq!((e.trigger, e.status, e.scheduled_for), (Trigger::Schedule, ExecutionStatus::Succeeded, t(at)));
        assert_eq!(e.component_digest.as_deref(), Some(wanted.as_str()));
    }
    host.stop().await;

    // Restart a few seconds later (and once with the clock stepped back):
    // the 10:02 instant is not fired again; the series continues at 10:03.
    env.clock.as_ref().unwrap().set(t("2026-11-22T10:01:50Z"));
    let host = env.host(true).await;
    assert_eq!(settle(&host).await[0].1, Some(t("2026-11-22T10:03:00Z")));
    tick_at(&env, &host, "2026-11-22T10:02:10Z").await;
    tick_at(&env, &host, "2026-11-22T10:03:00Z").await;
    let runs = finished_executions(&host.store, "cleanup", 3).await;
    let instants: Vec<_> = runs.iter().map(|e| e.scheduled_for).collect();
    assert_eq!(instants, vec![t("2026-11-22T10:01:00Z"), t("2026-11-22T10:02:00Z"), t("2026-11-22T10:03:00Z")]);
}

#[actix_rt::test]
async fn a_host_down_for_hours_runs_one_catch_up_not_a_burst() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T09:30:00Z").config(
        r#"[jobs.faulty]
           schedule = "0 * * * *""#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    tick_at(&env, &host, "2026-11-22T10:00:00Z").await;
    finished_executions(&host.store, "faulty", 1).await;
    host.stop().await;

    env.clock.as_ref().unwrap().set(t("2026-11-22T13:30:00Z"));
    let host = env.host(true).await;
    settle(&host).await;
    let runs = finished_executions(&host.store, "faulty", 2).await;
    let (name, next, missed) = settle(&host).await.remove(0);
    assert_eq!((name.as_str(), next, missed), ("faulty", Some(t("2026-11-22T14:00:00Z")), 2));
    assert_eq!(runs.len(), 2, "one catch-up for 11:00, 12:00 and 13:00");
    assert_eq!((runs[1].trigger, runs[1].scheduled_for), (Trigger::CatchUp, t("2026-11-22T13:00:00Z")));
}

#[actix_rt::test]
async fn executions_left_running_by_a_dead_host_are_marked_crashed() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00Z");
    let host = env.host(false).await;
    let id = left_running_by_a_dead_host(&host, "faulty", "2026-11-22T09:00:00Z").await;
    host.stop().await;

    let host = env.host(true).await;
    let e = host.store.get_execution(id).await.unwrap().unwrap();
    assert_eq!((e.status, e.error_class), (ExecutionStatus::Crashed, Some(ErrorClass::Crash)));
    assert!(e.finished_at.is_some());
}

#[actix_rt::test]
async fn a_fire_during_a_running_execution_is_recorded_as_skipped() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00.500Z").config(
        r#"[jobs.faulty]
           schedule = "* * * * * *"
           timeout_secs = 2
           args = { mode = "loop" }"#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    tick_at(&env, &host, "2026-11-22T10:00:01Z").await;
    eventually("the first execution to be running", || async {
        let v = host.store.list_executions("faulty", 10, None).await.unwrap();
        v.iter().any(|e| e.status == ExecutionStatus::Running).then_some(())
    })
    .await;
    tick_at(&env, &host, "2026-11-22T10:00:02Z").await;
    host.scheduler.as_ref().unwrap().send(SwitchScheduler { enabled: false }).await.unwrap();
    let runs = finished_executions(&host.store, "faulty", 2).await;
    assert_eq!(runs[0].status, ExecutionStatus::TimedOut);
    assert_eq!((runs[1].status, runs[1].error_class), (ExecutionStatus::Skipped, Some(ErrorClass::Overlap)));
    assert_eq!(runs[1].scheduled_for, t("2026-11-22T10:00:02Z"));
    assert!(runs[1].error_message.as_deref().unwrap().contains("still running"));
}

#[actix_rt::test]
async fn retryable_failures_are_retried_as_linked_attempts() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00Z").config(
        r#"[jobs.faulty]
           schedule = "0 * * * *"
           max_attempts = 3
           retry_backoff_secs = 0
           args = { mode = "retryable" }"#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    tick_at(&env, &host, "2026-11-22T11:00:00Z").await;
    let runs = finished_executions(&host.store, "faulty", 3).await;
    let attempts: Vec<_> = runs.iter().map(|e| (e.trigger, e.attempt, e.status)).collect();
    assert_eq!(
        attempts,
        vec![
            (Trigger::Schedule, 1, ExecutionStatus::Failed),
            (Trigger::Retry, 2, ExecutionStatus::Failed),
            (Trigger::Retry, 3, ExecutionStatus::Failed),
        ]
    );
    assert!(runs.iter().all(|e| e.scheduled_for == t("2026-11-22T11:00:00Z")));
    assert_eq!(runs[1].parent_id, Some(runs[0].id));
    assert_eq!(runs[2].parent_id, Some(runs[0].id));
}

#[actix_rt::test]
async fn fatal_errors_and_skips_are_not_retried() {
    for m in ["fatal", "skip"] {
        let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00Z").config(&format!(
            r#"[jobs.faulty]
               schedule = "0 * * * *"
               max_attempts = 3
               retry_backoff_secs = 0
               args = {{ mode = "{m}" }}"#
        ));
        let host = env.host(true).await;
        settle(&host).await;
        tick_at(&env, &host, "2026-11-22T11:00:00Z").await;
        finished_executions(&host.store, "faulty", 1).await;
        // Give a wrongly scheduled retry every chance to show up.
        let ok = host.run_now("faulty", Default::default()).await;
        assert!(ok.is_ok(), "mode {m}: {:?}", ok.err());
        let runs = host.store.list_executions("faulty", 10, None).await.unwrap();
        assert_eq!(runs.len(), 2, "mode {m}: {runs:?}");
        assert!(runs.iter().all(|e| e.trigger != Trigger::Retry));
    }
}

#[actix_rt::test]
async fn switches_take_effect_without_restart() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:30Z").config(
        r#"[jobs.faulty]
           schedule = "* * * * *""#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    let scheduler = host.scheduler.as_ref().unwrap();
    assert!(scheduler.send(SwitchJob { name: "faulty".into(), enabled: false }).await.unwrap());
    tick_at(&env, &host, "2026-11-22T10:01:00Z").await;
    scheduler.send(SwitchJob { name: "faulty".into(), enabled: true }).await.unwrap();
    scheduler.send(SwitchScheduler { enabled: false }).await.unwrap();
    tick_at(&env, &host, "2026-11-22T10:02:00Z").await;
    scheduler.send(SwitchScheduler { enabled: true }).await.unwrap();
    tick_at(&env, &host, "2026-11-22T10:03:00Z").await;
    let runs = finished_executions(&host.store, "faulty", 1).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(runs[0].scheduled_for, t("2026-11-22T10:03:00Z"));
    assert!(host.store.get_job("faulty").await.unwrap().unwrap().enabled);
    assert!(host.store.global_enabled().await.unwrap());
    assert!(!scheduler.send(SwitchJob { name: "nope".into(), enabled: false }).await.unwrap());
}

#[actix_rt::test]
async fn queue_one_keeps_one_fire_waiting_and_skips_the_rest() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00.500Z").config(
        r#"[jobs.faulty]
           schedule = "* * * * * *"
           overlap = "queue-one"
           timeout_secs = 1
           args = { mode = "loop" }"#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    for at in ["2026-11-22T10:00:01Z", "2026-11-22T10:00:02Z", "2026-11-22T10:00:03Z"] {
        tick_at(&env, &host, at).await;
        // Let each fire reach the supervisor before the next one.
        eventually("a row per fire so far", || async {
            let n = host.store.list_executions("faulty", 10, None).await.unwrap().len();
            (n >= 1).then_some(())
        })
        .await;
    }
    host.scheduler.as_ref().unwrap().send(SwitchScheduler { enabled: false }).await.unwrap();
    let mut runs = finished_executions(&host.store, "faulty", 3).await;
    runs.sort_by_key(|e| e.scheduled_for);
    let outcome: Vec<_> = runs.iter().map(|e| (e.scheduled_for, e.status)).collect();
    assert_eq!(
        outcome,
        vec![
            (t("2026-11-22T10:00:01Z"), ExecutionStatus::TimedOut),
            (t("2026-11-22T10:00:02Z"), ExecutionStatus::TimedOut),
            (t("2026-11-22T10:00:03Z"), ExecutionStatus::Skipped),
        ]
    );
}

#[actix_rt::test]
async fn overlap_allow_runs_fires_concurrently() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00.500Z").config(
        r#"[jobs.faulty]
           schedule = "* * * * * *"
           overlap = "allow"
           timeout_secs = 2
           args = { mode = "loop" }"#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    tick_at(&env, &host, "2026-11-22T10:00:01Z").await;
    tick_at(&env, &host, "2026-11-22T10:00:02Z").await;
    let both_running = eventually("two concurrent executions", || async {
        let v = host.store.list_executions("faulty", 10, None).await.unwrap();
        (v.iter().filter(|e| e.status == ExecutionStatus::Running).count() == 2).then_some(v.len())
    })
    .await;
    assert_eq!(both_running, 2);
    host.scheduler.as_ref().unwrap().send(SwitchScheduler { enabled: false }).await.unwrap();
    let runs = finished_executions(&host.store, "faulty", 2).await;
    assert!(runs.iter().all(|e| e.status == ExecutionStatus::TimedOut));
}

#[actix_rt::test]
async fn a_running_execution_can_be_cancelled() {
    let env = Env::new(&["faulty"]).config(
        r#"[jobs.faulty]
           timeout_secs = 120
           args = { mode = "loop" }"#,
    );
    let host = env.host(false).await;
    let started = host.start_run("faulty", Default::default()).await.unwrap();
    assert!(host.cancel(started.id).await.unwrap());
    let report = started.done.await.unwrap();
    assert_eq!((report.status, report.error_class), (ExecutionStatus::Cancelled, Some(ErrorClass::Cancelled)));
    let e = host.store.get_execution(started.id).await.unwrap().unwrap();
    assert_eq!(e.status, ExecutionStatus::Cancelled);
    assert!(!host.cancel(started.id).await.unwrap(), "a finished execution is not running");
}

#[actix_rt::test]
async fn a_clock_stepped_back_an_hour_never_fires_an_instant_twice() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:04:30Z").config(
        r#"[jobs.faulty]
           schedule = "* * * * *""#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    tick_at(&env, &host, "2026-11-22T10:05:00Z").await;
    finished_executions(&host.store, "faulty", 1).await;
    // The wall clock steps back an hour, then runs forward again.
    for at in ["2026-11-22T09:05:30Z", "2026-11-22T09:30:00Z", "2026-11-22T10:05:30Z", "2026-11-22T10:06:00Z"] {
        tick_at(&env, &host, at).await;
    }
    let runs = finished_executions(&host.store, "faulty", 2).await;
    let instants: Vec<_> = runs.iter().map(|e| e.scheduled_for).collect();
    assert_eq!(instants, vec![t("2026-11-22T10:05:00Z"), t("2026-11-22T10:06:00Z")]);
}

#[actix_rt::test]
async fn a_restart_inside_the_fall_back_hour_does_not_fire_the_repeated_time_again() {
    // 01:30 happens twice in New York on 2026-11-01 (05:30Z EDT, 06:30Z EST).
    let env = Env::new(&["faulty"]).clock("2026-11-01T05:00:00Z").config(
        r#"[jobs.faulty]
           schedule = "30 1 * * *"
           timezone = "America/New_York""#,
    );
    let host = env.host(true).await;
    assert_eq!(settle(&host).await[0].1, Some(t("2026-11-01T05:30:00Z")));
    tick_at(&env, &host, "2026-11-01T05:30:00Z").await;
    finished_executions(&host.store, "faulty", 1).await;
    host.stop().await;

    env.clock.as_ref().unwrap().set(t("2026-11-01T06:10:00Z")); // 01:10 EST, the second 1 am
    let host = env.host(true).await;
    assert_eq!(settle(&host).await[0].1, Some(t("2026-11-02T06:30:00Z")));
    tick_at(&env, &host, "2026-11-01T06:30:00Z").await;
    tick_at(&env, &host, "2026-11-02T06:30:00Z").await;
    let runs = finished_executions(&host.store, "faulty", 2).await;
    let instants: Vec<_> = runs.iter().map(|e| e.scheduled_for).collect();
    assert_eq!(instants, vec![t("2026-11-01T05:30:00Z"), t("2026-11-02T06:30:00Z")]);
}

#[actix_rt::test]
async fn missed_fires_are_counted_and_visible_on_the_job() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T09:59:00Z").config(
        r#"[jobs.faulty]
           schedule = "*/15 * * * *"
           misfire = "skip""#,
    );
    let host = env.host(true).await;
    settle(&host).await;
    tick_at(&env, &host, "2026-11-22T10:00:00Z").await;
    finished_executions(&host.store, "faulty", 1).await;
    // The host stalls (or the clock jumps) for an hour.
    tick_at(&env, &host, "2026-11-22T11:05:00Z").await;
    settle(&host).await;
    let job = eventually("the missed count to be stored", || async {
        let j = host.store.get_job("faulty").await.unwrap().unwrap();
        (j.missed_fires > 0).then_some(j)
    })
    .await;
    assert_eq!(job.missed_fires, 4, "10:15, 10:30, 10:45 and 11:00");
    assert_eq!(job.next_run_at, Some(t("2026-11-22T11:15:00Z")));
    assert_eq!(host.store.list_executions("faulty", 10, None).await.unwrap().len(), 1);
}

#[actix_rt::test]
async fn runs_over_their_expected_duration_are_flagged() {
    let env = Env::new(&["faulty"]).config(
        r#"[jobs.faulty]
           timeout_secs = 3
           expected_duration_secs = 1
           args = { mode = "loop" }"#,
    );
    let host = env.host(false).await;
    let started = host.start_run("faulty", Default::default()).await.unwrap();
    let flagged = eventually("the overrun flag", || async {
        let e = host.store.get_execution(started.id).await.unwrap().unwrap();
        e.overrun.then_some(e.status)
    })
    .await;
    assert_eq!(flagged, ExecutionStatus::Running, "flagged while still running");
    started.done.await.unwrap();
    let quick = host
        .run_now("faulty", sundial::model::RunArgs { args: vec![("mode".into(), "ok".into())], ..Default::default() });
    let quick = quick.await.unwrap();
    assert_eq!(quick.status, ExecutionStatus::Succeeded);
    let latest = &host.store.list_executions("faulty", 1, None).await.unwrap()[0];
    assert!(!latest.overrun);
}

#[actix_rt::test]
async fn retry_on_crash_reruns_an_execution_cut_short() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:00Z").config(
        r#"[jobs.faulty]
           retry_on_crash = true"#,
    );
    let host = env.host(false).await;
    let id = left_running_by_a_dead_host(&host, "faulty", "2026-11-22T09:00:00Z").await;
    host.stop().await;
    let host = env.host(true).await;
    let runs = finished_executions(&host.store, "faulty", 2).await;
    assert_eq!(runs[0].status, ExecutionStatus::Crashed);
    let retry = &runs[1];
    assert_eq!((retry.trigger, retry.attempt, retry.parent_id), (Trigger::Retry, 2, Some(id)));
    assert_eq!((retry.scheduled_for, retry.status), (t("2026-11-22T09:00:00Z"), ExecutionStatus::Succeeded));
}

/// Once the guest has ended, the job's overlap gate is open, even while its
/// end is still being written (here: behind another process's write lock):
/// a run asked for then is not refused as overlapping.
#[actix_rt::test]
async fn a_run_asked_for_once_the_last_one_ended_is_not_refused() {
    let env = Env::new(&["faulty"]);
    let host = env.host(false).await;
    let first = host.start_run("faulty", RunArgs::default()).await.unwrap();
    // Another writer holds the database for a second, from before the guest ends.
    let db = env.path().join("sundial.db");
    let (locked_tx, locked) = std::sync::mpsc::channel();
    let holder = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        locked_tx.send(()).unwrap();
        std::thread::sleep(std::time::Duration::from_secs(1));
        conn.execute_batch("COMMIT").unwrap();
    });
    locked.recv().unwrap();
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await; // the guest ends meanwhile
    let next = host.start_run("faulty", RunArgs::default()).await;
    assert!(next.is_ok(), "refused while the previous run's end was being written: {next:?}");
    holder.join().unwrap();
    assert_eq!(first.done.await.unwrap().status, ExecutionStatus::Succeeded);
    assert_eq!(next.unwrap().done.await.unwrap().status, ExecutionStatus::Succeeded);
}

/// Jitter: a scheduled run waits, queued, for the job's fixed offset after
/// its instant; the row still stands for the instant itself.
#[actix_rt::test]
async fn jitter_starts_a_scheduled_run_at_the_jobs_fixed_offset_after_its_instant() {
    let env = Env::new(&["faulty"]).clock("2026-11-22T10:00:30Z").config(
        r#"[jobs.faulty]
           schedule = "* * * * *"
           jitter_secs = 3"#,
    );
    let offset = sundial::actors::supervisor::jitter_offset("faulty", Duration::from_secs(3));
    assert!(offset >= Duration::from_millis(300), "this test needs a visible offset, got {offset:?}");
    let host = env.host(true).await;
    settle(&host).await;
    let ticked = std::time::Instant::now();
    tick_at(&env, &host, "2026-11-22T10:01:00Z").await;
    let queued = eventually("the queued row", || async {
        host.store.list_executions("faulty", 1, None).await.unwrap().into_iter().next()
    })
    .await;
    assert_eq!((queued.status, queued.scheduled_for), (ExecutionStatus::Queued, t("2026-11-22T10:01:00Z")));
    let run = finished_executions(&host.store, "faulty", 1).await;
    let waited = ticked.elapsed();
    assert_eq!(run[0].status, ExecutionStatus::Succeeded);
    assert!(waited + Duration::from_millis(50) >= offset, "started after {waited:?}, offset {offset:?}");
    assert!(waited < offset + Duration::from_secs(5), "started after {waited:?}, offset {offset:?}");
    host.stop().await;
}

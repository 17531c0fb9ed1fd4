//! Hostile guests, from the `faulty` fixture: each is contained, recorded
//! with a clear reason, and the host keeps going.

use std::time::Instant;

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs};

use crate::helpers::*;

fn mode(m: &str, extra: &[(&str, &str)]) -> RunArgs {
    let mut args = vec![("mode".to_string(), m.to_string())];
    args.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    RunArgs { args, ..RunArgs::default() }
}

/// No files, no sockets, no name lookup, no environment, no arguments.
#[actix_rt::test]
async fn a_guest_sees_no_files_network_or_environment() {
    let env = Env::new(&["faulty"]);
    let host = env.host(false).await;
    let r = host.run_now("faulty", mode("probe", &[])).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    let seen = r.summary.unwrap();
    for path in ["/etc/passwd", "../", ".", "/"] {
        let line = seen.lines().find(|l| l.starts_with(&format!("fs {path}:"))).unwrap();
        assert!(line.contains("error"), "{line}");
    }
    let line = |prefix: &str| seen.lines().find(|l| l.starts_with(prefix)).unwrap().to_string();
    assert!(line("tcp 127.0.0.1:5432:").contains("access-denied"), "{seen}");
    assert!(line("dns localhost:").contains("error"), "{seen}");
    assert_eq!(line("env:"), "env: 0 variables");
    assert_eq!(line("args:"), "args: 0");
}

/// Unbounded recursion traps with a stack overflow, a thousand times over,
/// without taking the host down.
#[actix_rt::test]
async fn unbounded_recursion_traps_every_time() {
    let env = Env::new(&["faulty"]);
    let host = env.host(false).await;
    let started = Instant::now();
    for i in 0..1000 {
        let r = host.run_now("faulty", mode("recurse", &[])).await.unwrap();
        assert_eq!((r.status, r.error_class), (ExecutionStatus::Failed, Some(ErrorClass::Trap)), "run {i}: {r:?}");
        assert!(r.error_message.as_deref().unwrap().contains("call stack exhausted"), "{r:?}");
    }
    let ok = host.run_now("faulty", mode("ok", &[])).await.unwrap();
    assert_eq!(ok.status, ExecutionStatus::Succeeded, "still healthy after {:?}", started.elapsed());
}

/// A gigabyte to stdout: the run is not stopped, the log keeps its first
/// 64 KiB, says how much was dropped, and is marked truncated.
#[actix_rt::test]
async fn a_stdout_flood_is_capped_and_flagged() {
    let env = Env::new(&["faulty"]).config("[jobs.faulty]\ntimeout_secs = 120");
    let host = env.host(false).await;
    let r = host.run_now("faulty", mode("flood", &[("mib", "1024")])).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert!(r.logs_truncated);
    assert!(r.logs.len() < 80 * 1024, "{} bytes kept", r.logs.len());
    let dropped = r.logs.lines().find(|l| l.starts_with("STDOUT truncated:")).unwrap();
    let n: u64 = dropped.split_whitespace().nth(2).unwrap().parse().unwrap();
    assert!(n > 1_000_000_000, "{dropped}");
    let stored = &host.store.list_executions("faulty", 1, None).await.unwrap()[0];
    assert!(stored.logs_truncated);
}

/// A 200 MiB result is refused before it reaches the host's memory
/// (wasmtime bounds what one call may copy out of a guest), and a result
/// message over 64 KiB is refused before it reaches the database.
#[actix_rt::test]
async fn a_huge_result_is_refused() {
    let env = Env::new(&["faulty"]).config("[jobs.faulty]\nmemory_mib = 1024\ntimeout_secs = 60");
    let host = env.host(false).await;
    let r = host.run_now("faulty", mode("big-return", &[("mib", "200")])).await.unwrap();
    assert_eq!((r.status, r.error_class), (ExecutionStatus::Failed, Some(ErrorClass::Trap)), "{r:?}");
    let message = r.error_message.unwrap();
    assert!(message.contains("too much data is being copied between the host and the guest"), "{message}");
    let r = host.run_now("faulty", mode("big-return", &[("mib", "1")])).await.unwrap();
    assert_eq!((r.status, r.error_class), (ExecutionStatus::Failed, Some(ErrorClass::Fatal)), "{r:?}");
    let message = r.error_message.unwrap();
    assert!(message.contains("1048576 bytes") && message.contains("limited to 65536 bytes"), "{message}");
    let stored = &host.store.list_executions("faulty", 1, None).await.unwrap()[0];
    assert!(stored.summary.is_none());
    assert_eq!(host.run_now("faulty", mode("ok", &[])).await.unwrap().status, ExecutionStatus::Succeeded);
    // Beyond the default memory limit (256 MiB) it cannot even build it.
    let env = Env::new(&["faulty"]);
    let host = env.host(false).await;
    let r = host.run_now("faulty", mode("big-return", &[("mib", "300")])).await.unwrap();
    assert_eq!(r.error_class, Some(ErrorClass::Memory), "{r:?}");
}

/// A guest blocked inside a host call (an hour's sleep) still ends at its
/// deadline: sleeps are bounded by it.
#[actix_rt::test]
async fn a_guest_blocked_in_a_host_call_times_out() {
    let env = Env::new(&["faulty"]).config("[jobs.faulty]\ntimeout_secs = 1");
    let host = env.host(false).await;
    let started = Instant::now();
    let r = host.run_now("faulty", mode("sleep", &[])).await.unwrap();
    assert_eq!((r.status, r.error_class), (ExecutionStatus::TimedOut, Some(ErrorClass::Timeout)), "{r:?}");
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// Eight runaway guests at once (each stopped at its deadline) while a
/// well-behaved job fires every second: every one of its fires runs, on time.
#[actix_rt::test]
async fn runaway_guests_do_not_hold_up_a_well_behaved_job() {
    use sundial::events::Event;
    use sundial::model::Trigger;
    let env = Env::new(&["faulty", "cleanup"]).config(
        r#"[jobs.faulty]
           overlap = "allow"
           timeout_secs = 4
           [jobs.cleanup]
           schedule = "* * * * * *"
           database = "read-write""#,
    );
    env.app();
    let host = env.host(true).await;
    let mut events = host.subscribe();
    let mut runaways = Vec::new();
    for _ in 0..8 {
        runaways.push(host.start_run("faulty", mode("loop", &[])).await.unwrap());
    }
    let window = Instant::now() + std::time::Duration::from_millis(3500);
    let mut late = Vec::new();
    while Instant::now() < window {
        let got = actix_rt::time::timeout(std::time::Duration::from_secs(2), events.recv()).await;
        let Ok(Ok(event)) = got else {
            panic!("no events for 2 s: the well-behaved job stopped firing");
        };
        if let Event::ExecutionFinished {
            job, trigger: Trigger::Schedule, status, scheduled_for, guest_started_at, ..
        } = event
            && job == "cleanup"
        {
            assert_eq!(status, ExecutionStatus::Succeeded);
            late.push((guest_started_at.unwrap() - scheduled_for).num_milliseconds());
        }
    }
    assert!(late.len() >= 3, "fires during the runaways: {late:?}");
    assert!(late.iter().all(|ms| *ms < 250), "lateness (ms) of each fire: {late:?}");
    for r in runaways {
        let report = r.done.await.unwrap();
        assert_eq!(report.status, ExecutionStatus::TimedOut, "{report:?}");
    }
}

/// Cancelling a guest asleep in a host call ends it promptly, not at its
/// deadline; so does a host shutdown.
#[actix_rt::test]
async fn a_sleeping_guest_is_cancelled_promptly() {
    let env = Env::new(&["faulty"]).config("[jobs.faulty]\ntimeout_secs = 600\noverlap = \"allow\"");
    let host = env.host(false).await;
    let started = host.start_run("faulty", mode("sleep", &[])).await.unwrap();
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let t = Instant::now();
    assert!(host.cancel(started.id).await.unwrap());
    let r = started.done.await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Cancelled, "{r:?}");
    assert!(t.elapsed() < std::time::Duration::from_secs(2), "took {:?}", t.elapsed());

    let asleep = host.start_run("faulty", mode("sleep", &[])).await.unwrap();
    actix_rt::time::sleep(std::time::Duration::from_millis(300)).await;
    let report = host.shutdown(std::time::Duration::ZERO).await;
    assert_eq!(report.cancelled, vec![asleep.id]);
    assert!(report.abandoned.is_empty() && report.took < std::time::Duration::from_secs(3), "{report:?}");
    let r = asleep.done.await.unwrap();
    assert!(r.error_message.unwrap().contains("host stopped"));
}

/// A fuel budget ends a runaway guest deterministically: the same failure,
/// at the same count, every time, with the fuel used recorded. On a metering
/// host the fuel used is the same for the same work; a host without budgets
/// does not meter (it costs guest speed).
#[actix_rt::test]
async fn a_fuel_budget_stops_a_guest_at_the_same_count_every_time() {
    let env = Env::new(&["faulty"]).config("[jobs.faulty]\nfuel = 5000000\ntimeout_secs = 60");
    let host = env.host(false).await;
    for _ in 0..2 {
        let r = host.run_now("faulty", mode("loop", &[])).await.unwrap();
        assert_eq!((r.status, r.error_class), (ExecutionStatus::Failed, Some(ErrorClass::Fuel)), "{r:?}");
        assert_eq!(r.error_message.as_deref(), Some("fuel budget of 5000000 exhausted"));
        assert_eq!(r.fuel_consumed, Some(5_000_000));
    }
    // Fuel is not retried: the same run would fail the same way.
    let stored = host.store.list_executions("faulty", 10, None).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(stored.iter().all(|e| e.fuel_consumed == Some(5_000_000) && e.error_class == Some(ErrorClass::Fuel)));
    // A well-behaved run under the same budget succeeds and says what it used.
    let ok = host.run_now("faulty", mode("ok", &[])).await.unwrap();
    assert_eq!(ok.status, ExecutionStatus::Succeeded, "{ok:?}");
    let used = ok.fuel_consumed.unwrap();
    assert!(used > 0 && used < 5_000_000, "{used}");

    let again = host.run_now("faulty", mode("ok", &[])).await.unwrap();
    assert_eq!(again.fuel_consumed, Some(used), "same work, same fuel");

    let env = Env::new(&["faulty"]);
    let host = env.host(false).await;
    let r = host.run_now("faulty", mode("ok", &[])).await.unwrap();
    assert_eq!((r.status, r.fuel_consumed), (ExecutionStatus::Succeeded, None));
}

/// An item job's budget is the execution's, across items and across the
/// fresh instances a trapping item leaves behind: when it is used up the run
/// stops (it does not fail item after item) and keeps what it committed.
#[actix_rt::test]
async fn an_item_job_out_of_fuel_stops_and_keeps_its_committed_items() {
    const USERS: i64 = 500;
    let env = Env::new(&["slow-items"]);
    let db = env.path().join("sundial.db");
    crate::fixtures::users_and_visits(&db, USERS);
    // A budget far beyond the run meters it.
    let metered = env.config("[jobs.slow-items]\ndatabase = \"read-write\"\ntimeout_secs = 60\nfuel = 1000000000000");
    let host = metered.host(false).await;
    let full = host.run_now("slow-items", RunArgs::default()).await.unwrap();
    assert_eq!(full.status, ExecutionStatus::Succeeded, "{full:?}");
    let whole = full.fuel_consumed.unwrap();
    host.stop().await;

    // A budget of about a third of the whole run.
    let env = Env::new(&["slow-items"])
        .config(&format!("[jobs.slow-items]\ndatabase = \"read-write\"\ntimeout_secs = 60\nfuel = {}", whole / 3));
    crate::fixtures::users_and_visits(&env.path().join("sundial.db"), USERS);
    let host = env.host(false).await;
    let r = host.run_now("slow-items", RunArgs::default()).await.unwrap();
    assert_eq!((r.status, r.error_class), (ExecutionStatus::Failed, Some(ErrorClass::Fuel)), "{r:?}");
    assert_eq!(r.fuel_consumed, Some(whole / 3));
    assert_eq!(r.items_failed, 1, "one item interrupted, no item failed after it: {r:?}");
    assert!(r.items_ok > 50 && r.items_ok < 400, "{r:?}");
    let conn = rusqlite::Connection::open(env.path().join("sundial.db")).unwrap();
    let visits: i64 = conn.query_row("SELECT count(*) FROM visits", [], |r| r.get(0)).unwrap();
    assert_eq!(visits as u64, r.items_ok, "what succeeded is committed, nothing more");
}

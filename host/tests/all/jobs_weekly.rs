//! The `weekly-report` job (seed 002, weekly): run hourly, reports on the
//! previous week for TRIAL/PAID users whose local time is Monday 03:00–05:59,
//! once per (user, week); `--date`; per-user isolation.

use sundial::actors::scheduler::Tick;
use sundial::host::Host;
use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, RunReport};

use crate::helpers::*;

fn env(start: &str) -> Env {
    Env::read_write_job("weekly-report", start)
}

/// Users 1 (Tokyo, UTC+9), 2 (Los Angeles, UTC−8), 5 (London, UTC+0) and 7
/// (Kathmandu, UTC+5:45) are TRIAL/PAID; 3 and 6 (Tokyo) are FREE; 4
/// (Tokyo) withdrew. Monday is 2026-11-23; the reported week is 11-16..11-22.
///
/// User 1's workouts, in Tokyo time: Mon 16th 00:30 (completed, 30 min) and
/// Sun 22nd 23:30 (partial, 20 min) are in the week; an abandoned one in the
/// week, Mon 23rd 01:00 and Sun 15th 23:30 are not; Sun 15th and Mon 2nd are
/// the three weeks before (for the prediction), Oct 20th is older.
fn fixture(env: &Env) {
    env.app()
        .execute_batch(
            "INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES
                (1, 'aiko', 'PAID', 'Asia/Tokyo', NULL),
                (2, 'bob', 'TRIAL', 'America/Los_Angeles', NULL),
                (3, 'chie', 'FREE', 'Asia/Tokyo', NULL),
                (4, 'daiki', 'PAID', 'Asia/Tokyo', '2026-11-01T00:00:00Z'),
                (5, 'emma', 'PAID', 'Europe/London', NULL),
                (6, 'fumi', 'FREE', 'Asia/Tokyo', NULL),
                (7, 'gita', 'TRIAL', 'Asia/Kathmandu', NULL);
             INSERT INTO workouts (user_id, status, started_at, finalized_at, duration_minutes) VALUES
                (1, 'completed', '2026-11-15T15:00:00Z', '2026-11-15T15:30:00Z', 30),
                (1, 'partial',   '2026-11-22T14:10:00Z', '2026-11-22T14:30:00Z', 20),
                (1, 'abandoned', '2026-11-18T09:20:00Z', '2026-11-18T10:00:00Z', 40),
                (1, 'completed', '2026-11-22T15:15:00Z', '2026-11-22T16:00:00Z', 45),
                (1, 'completed', '2026-11-15T13:40:00Z', '2026-11-15T14:30:00Z', 50),
                (1, 'completed', '2026-11-02T02:00:00Z', '2026-11-02T03:00:00Z', 60),
                (1, 'completed', '2026-10-20T02:00:00Z', '2026-10-20T03:00:00Z', 60),
                (4, 'completed', '2026-11-18T02:00:00Z', '2026-11-18T03:00:00Z', 60),
                (5, 'completed', '2026-11-20T17:20:00Z', '2026-11-20T18:00:00Z', 40);",
        )
        .unwrap();
}

/// `(user, week_start, workouts, completed, minutes, prediction)` of every report.
type Report = (i64, String, i64, i64, i64, String);

fn reports(env: &Env) -> Vec<Report> {
    let conn = env.app();
    let mut stmt = conn
        .prepare(
            "SELECT user_id, week_start, workouts, completed_workouts, minutes, prediction FROM weekly_reports \
             ORDER BY week_start, user_id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn users_reported(env: &Env) -> Vec<i64> {
    reports(env).iter().map(|r| r.0).collect()
}

fn aiko() -> Report {
    // 2 this week against 2 in the three weeks before: (2·2 + 2/3) / 3 ≈ 1.6
    // workouts of 25 minutes.
    (1, "2026-11-16".into(), 2, 1, 50, r#"{"next_week_workouts":1.6,"next_week_minutes":40,"trend":"up"}"#.into())
}

async fn run_at(env: &Env, host: &Host, at: &str) -> RunReport {
    env.clock.as_ref().unwrap().set(t(at));
    let r = host.run_now("weekly-report", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "at {at}: {r:?}");
    r
}

#[actix_rt::test]
async fn the_window_is_monday_03_00_to_05_59_local() {
    let env = env("2026-11-22T17:00:00Z");
    fixture(&env);
    let host = env.host(false).await;

    // Tokyo, Monday 02:59: too early, and nobody else is in the window.
    let r = run_at(&env, &host, "2026-11-22T17:59:00Z").await;
    assert_eq!((r.items_total, r.changed), (0, 0));
    assert!(reports(&env).is_empty());

    // Tokyo 03:00: aiko's report; FREE and withdrawn users are not listed.
    let r = run_at(&env, &host, "2026-11-22T18:00:00Z").await;
    assert_eq!((r.items_total, r.items_ok, r.changed), (1, 1, 1));
    assert_eq!(reports(&env), vec![aiko()]);

    // The next hour (04:00): listed again, nothing duplicated or rewritten.
    let r = run_at(&env, &host, "2026-11-22T19:00:00Z").await;
    assert_eq!((r.items_total, r.items_ok, r.changed), (1, 1, 0));
    assert_eq!(reports(&env), vec![aiko()]);

    // fumi upgrades at 05:30; at 05:59 she is still in the window.
    env.app().execute_batch("UPDATE users SET plan = 'PAID' WHERE id = 6").unwrap();
    let r = run_at(&env, &host, "2026-11-22T20:59:00Z").await;
    assert_eq!((r.items_total, r.changed), (2, 1));
    let fumi = (
        6,
        "2026-11-16".to_string(),
        0,
        0,
        0,
        r#"{"next_week_workouts":0.0,"next_week_minutes":0,"trend":"steady"}"#.to_string(),
    );
    assert_eq!(reports(&env), vec![aiko(), fumi.clone()]);

    // Tokyo 06:00: the window has closed.
    let r = run_at(&env, &host, "2026-11-22T21:00:00Z").await;
    assert_eq!((r.items_total, r.changed), (0, 0));

    // London's Monday 02:59 and 03:00, then Los Angeles' 03:00.
    assert_eq!(run_at(&env, &host, "2026-11-23T02:59:00Z").await.items_total, 0);
    let r = run_at(&env, &host, "2026-11-23T03:00:00Z").await;
    assert_eq!((r.items_total, r.changed), (1, 1));
    let r = run_at(&env, &host, "2026-11-23T11:00:00Z").await;
    assert_eq!((r.items_total, r.changed), (1, 1));
    let emma = (
        5,
        "2026-11-16".to_string(),
        1,
        1,
        40,
        r#"{"next_week_workouts":0.7,"next_week_minutes":28,"trend":"up"}"#.to_string(),
    );
    let rows = reports(&env);
    assert_eq!(rows.iter().map(|r| r.0).collect::<Vec<_>>(), vec![1, 2, 5, 6]);
    assert_eq!((&rows[0], &rows[2], &rows[3]), (&aiko(), &emma, &fumi));
}

#[actix_rt::test]
async fn hourly_fires_report_every_zone_once() {
    let env = env("2026-11-22T11:30:00Z");
    fixture(&env);
    let host = env.host(true).await;
    let scheduler = host.scheduler.as_ref().unwrap();
    // Every hour from Sunday 12:00 to Monday 14:00 UTC: Monday 03:00-05:59
    // passes in every zone (Kathmandu's at :45 past the local hour).
    let mut fired = 0;
    let mut at = t("2026-11-22T12:00:00Z");
    let mut events = host.subscribe();
    while at <= t("2026-11-23T14:00:00Z") {
        env.clock.as_ref().unwrap().set(at);
        scheduler.send(Tick).await.unwrap();
        fired += 1;
        // The finish event comes once the supervisor is free for the next
        // fire (the row is final a moment before).
        loop {
            let e = tokio::time::timeout(std::time::Duration::from_secs(30), events.recv()).await.unwrap().unwrap();
            if matches!(e, sundial::events::Event::ExecutionFinished { .. }) {
                break;
            }
        }
        at += chrono::Duration::hours(1);
    }
    let runs = finished_executions(&host.store, "weekly-report", fired).await;
    assert_eq!(runs.len(), 27);
    assert!(runs.iter().all(|e| e.status == ExecutionStatus::Succeeded), "{runs:?}");
    // Three runs see each zone in its window; one report per user in all.
    assert_eq!(runs.iter().map(|e| e.items_total).sum::<i64>(), 4 * 3);
    assert_eq!(runs.iter().map(|e| e.changed).sum::<i64>(), 4);
    let first_report: Vec<(String, i64)> =
        runs.iter().filter(|e| e.changed > 0).map(|e| (e.scheduled_for.to_rfc3339(), e.changed)).collect();
    assert_eq!(
        first_report,
        vec![
            ("2026-11-22T18:00:00+00:00".to_string(), 1), // Tokyo 03:00
            ("2026-11-22T22:00:00+00:00".to_string(), 1), // Kathmandu 03:45
            ("2026-11-23T03:00:00+00:00".to_string(), 1), // London 03:00
            ("2026-11-23T11:00:00+00:00".to_string(), 1), // Los Angeles 03:00
        ]
    );
    assert_eq!(users_reported(&env), vec![1, 2, 5, 7]);
    assert_eq!(reports(&env)[0], aiko());
}

#[actix_rt::test]
async fn in_each_users_local_time_it_runs_once_per_zone_group_instead_of_hourly() {
    let env = Env::new(&["weekly-report"]).clock("2026-11-22T11:30:00Z").config(
        r#"[jobs.weekly-report]
           database = "read-write"
           schedule = "0 3 * * MON"
           item_zones_query = "SELECT DISTINCT timezone FROM users WHERE withdrawn_at IS NULL""#,
    );
    fixture(&env);
    let host = env.host(true).await;
    let scheduler = host.scheduler.as_ref().unwrap();
    eventually("the zones to be read", || async { next_fire(&host, "weekly-report").await }).await;
    let mut events = host.subscribe();
    let mut fired = 0;
    while let Some(at) = next_fire(&host, "weekly-report").await.filter(|at| *at <= t("2026-11-23T14:00:00Z")) {
        env.clock.as_ref().unwrap().set(at);
        scheduler.send(Tick).await.unwrap();
        fired += 1;
        finished_event(&mut events).await;
    }
    let runs = finished_executions(&host.store, "weekly-report", fired).await;
    let mut by_instant: Vec<(String, String, i64)> = runs
        .iter()
        .map(|e| {
            let zones = e.args.args.iter().find(|(k, _)| k == "sundial.zones").map(|(_, v)| v.clone()).unwrap();
            (e.scheduled_for.to_rfc3339(), zones, e.changed)
        })
        .collect();
    by_instant.sort();
    // Four zones, four executions at their own Monday 03:00 (FREE users'
    // Tokyo run lists only the PAID one); no hourly polling.
    assert_eq!(
        by_instant,
        vec![
            ("2026-11-22T18:00:00+00:00".to_string(), "Asia/Tokyo".to_string(), 1),
            ("2026-11-22T21:15:00+00:00".to_string(), "Asia/Kathmandu".to_string(), 1),
            ("2026-11-23T03:00:00+00:00".to_string(), "Europe/London".to_string(), 1),
            ("2026-11-23T11:00:00+00:00".to_string(), "America/Los_Angeles".to_string(), 1),
        ]
    );
    assert!(runs.iter().all(|e| e.status == ExecutionStatus::Succeeded && e.items_total == 1), "{runs:?}");
    assert_eq!(users_reported(&env), vec![1, 2, 5, 7]);
    assert_eq!(reports(&env)[0], aiko());
    host.stop().await;
}

#[actix_rt::test]
async fn date_reports_every_zone_as_of_that_monday() {
    let env = env("2026-11-25T09:00:00Z");
    fixture(&env);
    let host = env.host(false).await;
    let r =
        host.run_now("weekly-report", RunArgs { date: Some("2026-11-23".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!((r.items_total, r.changed), (4, 4));
    assert_eq!(users_reported(&env), vec![1, 2, 5, 7]);
    assert_eq!(reports(&env)[0], aiko());

    // An earlier week: only the workouts of that week count.
    let r =
        host.run_now("weekly-report", RunArgs { date: Some("2026-11-16".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!((r.items_total, r.changed), (4, 4));
    let aiko_before = &reports(&env)[0];
    assert_eq!((aiko_before.0, aiko_before.1.as_str(), aiko_before.2, aiko_before.4), (1, "2026-11-09", 1, 50));

    // Not a Monday: the run fails and says why.
    let r =
        host.run_now("weekly-report", RunArgs { date: Some("2026-11-24".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Failed, "{r:?}");
    assert!(r.error_message.as_deref().unwrap().contains("--date 2026-11-24 is not a Monday"), "{r:?}");
    assert_eq!(reports(&env).len(), 8);
}

#[actix_rt::test]
async fn one_users_failure_does_not_stop_the_others() {
    let env = env("2026-11-25T09:00:00Z");
    fixture(&env);
    env.app()
        .execute_batch(
            "CREATE TRIGGER no_report_for_bob BEFORE INSERT ON weekly_reports WHEN NEW.user_id = 2
             BEGIN SELECT RAISE(ABORT, 'bob''s reports are paused'); END;",
        )
        .unwrap();
    let host = env.host(false).await;
    let r =
        host.run_now("weekly-report", RunArgs { date: Some("2026-11-23".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Partial, "{r:?}");
    assert_eq!((r.items_total, r.items_ok, r.items_failed), (4, 3, 1));
    let failed = r.problems.iter().find(|p| p.key == "2").unwrap();
    assert_eq!(failed.class, ErrorClass::Fatal);
    assert!(failed.message.contains("bob's reports are paused"), "{failed:?}");
    assert_eq!(users_reported(&env), vec![1, 5, 7]);
}

#[actix_rt::test]
async fn demo_data_smoke() {
    let env = env("2026-11-22T10:00:00Z");
    let seeded = env.seed_demo(400, t("2026-11-22T10:00:00Z")).await;
    let host = env.host(false).await;
    // Sunday 10:00 UTC: no zone is at Monday 03:00-05:59.
    let r = host.run_now("weekly-report", RunArgs::default()).await.unwrap();
    assert_eq!((r.status, r.items_total), (ExecutionStatus::Succeeded, 0));

    let r =
        host.run_now("weekly-report", RunArgs { date: Some("2026-11-23".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!((r.items_total, r.items_ok, r.changed), (seeded.premium_active_users, r.items_total, r.items_total));
    let reported: i64 = env
        .app()
        .query_row("SELECT COUNT(DISTINCT user_id) FROM weekly_reports WHERE week_start = '2026-11-16'", [], |r| {
            r.get(0)
        })
        .unwrap();
    assert_eq!(reported as u64, seeded.premium_active_users);
}

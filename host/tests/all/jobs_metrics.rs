//! The `metrics` job (seed 002, nightly): users who trained in the last 30
//! days, metrics for each user's own local date, upserts that change nothing
//! the second time, `--date`, per-user isolation.

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs};

use crate::helpers::*;

/// At 12:00 UTC it is already Monday 01:00 on the 23rd in Auckland and still
/// Sunday 04:00 on the 22nd in Los Angeles.
const AT: &str = "2026-11-22T12:00:00Z";

fn env() -> Env {
    Env::read_write_job("metrics", AT)
}

/// 1 in Auckland, 2 and 3 in Los Angeles, 4 in UTC train recently; 5 only
/// abandoned or trained 40 days ago; 6 withdrew.
fn fixture(env: &Env) {
    env.app()
        .execute_batch(
            "INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES
                (1, 'aroha', 'PAID', 'Pacific/Auckland', NULL),
                (2, 'bob', 'FREE', 'America/Los_Angeles', NULL),
                (3, 'carol', 'TRIAL', 'America/Los_Angeles', NULL),
                (4, 'dave', 'FREE', 'UTC', NULL),
                (5, 'emi', 'PAID', 'Asia/Tokyo', NULL),
                (6, 'frank', 'FREE', 'UTC', '2026-11-01T00:00:00Z');
             INSERT INTO workouts (user_id, status, started_at, finalized_at, duration_minutes) VALUES
                (1, 'completed', '2026-11-22T11:00:00Z', '2026-11-22T11:30:00Z', 30),
                (1, 'completed', '2026-11-21T19:15:00Z', '2026-11-21T20:00:00Z', 45),
                (1, 'partial',   '2026-11-20T19:40:00Z', '2026-11-20T20:00:00Z', 20),
                (1, 'abandoned', '2026-11-22T08:10:00Z', '2026-11-22T09:00:00Z', 50),
                (1, 'completed', '2026-11-09T23:00:00Z', '2026-11-10T00:00:00Z', 60),
                (1, 'completed', '2026-09-30T23:20:00Z', '2026-10-01T00:00:00Z', 40),
                (2, 'completed', '2026-11-22T11:00:00Z', '2026-11-22T11:30:00Z', 30),
                (2, 'completed', '2026-11-21T05:20:00Z', '2026-11-21T06:00:00Z', 40),
                (3, 'completed', '2026-11-21T04:35:00Z', '2026-11-21T05:00:00Z', 25),
                (4, 'completed', '2026-11-21T17:10:00Z', '2026-11-21T18:00:00Z', 50),
                (4, 'partial',   '2026-11-20T06:45:00Z', '2026-11-20T07:00:00Z', 15),
                (4, 'completed', '2026-11-14T06:25:00Z', '2026-11-14T07:00:00Z', 35),
                (5, 'abandoned', '2026-11-22T01:00:00Z', NULL, 10),
                (5, 'completed', '2026-10-12T01:00:00Z', '2026-10-12T02:00:00Z', 60),
                (6, 'completed', '2026-11-21T01:00:00Z', '2026-11-21T02:00:00Z', 60);",
        )
        .unwrap();
}

/// `(user, metrics_date, workouts_7d, workouts_30d, minutes_7d, minutes_30d,
/// active_days_30d, streak_days, last_workout_at)`.
type Metrics = (i64, String, i64, i64, i64, i64, i64, i64, String);

fn metrics(env: &Env) -> Vec<Metrics> {
    let conn = env.app();
    let mut stmt = conn
        .prepare(
            "SELECT user_id, metrics_date, workouts_7d, workouts_30d, minutes_7d, minutes_30d, active_days_30d, \
             streak_days, last_workout_at FROM user_behavior_metrics ORDER BY metrics_date, user_id",
        )
        .unwrap();
    stmt.query_map([], |r| {
        Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?, r.get(8)?))
    })
    .unwrap()
    .collect::<Result<_, _>>()
    .unwrap()
}

fn computed_at(env: &Env) -> Vec<String> {
    let conn = env.app();
    let mut stmt = conn.prepare("SELECT computed_at FROM user_behavior_metrics ORDER BY id").unwrap();
    stmt.query_map([], |r| r.get(0)).unwrap().collect::<Result<_, _>>().unwrap()
}

/// A metrics row; `n` is `[workouts_7d, workouts_30d, minutes_7d, minutes_30d, active_days_30d, streak_days]`.
fn m(user: i64, date: &str, n: [i64; 6], last: &str) -> Metrics {
    (user, date.into(), n[0], n[1], n[2], n[3], n[4], n[5], last.into())
}

#[actix_rt::test]
async fn metrics_are_for_each_users_local_date() {
    let env = env();
    fixture(&env);
    let host = env.host(false).await;

    let r = host.run_now("metrics", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!((r.items_total, r.items_ok, r.items_skipped, r.changed), (4, 4, 0, 4));
    assert_eq!(
        metrics(&env),
        vec![
            // Los Angeles, Sunday the 22nd: trained today and on the 20th (local).
            m(2, "2026-11-22", [2, 2, 70, 70, 2, 1], "2026-11-22T11:30:00Z"),
            // Los Angeles: last trained on the 20th (local), so no streak today.
            m(3, "2026-11-22", [1, 1, 25, 25, 1, 0], "2026-11-21T05:00:00Z"),
            // UTC: trained on the 21st and 20th; the day is not over, so the streak holds.
            m(4, "2026-11-22", [2, 3, 65, 100, 3, 2], "2026-11-21T18:00:00Z"),
            // Auckland, already Monday the 23rd: the same 11:30Z workout is on the 23rd,
            // three local days in a row; abandoned and 52-day-old workouts do not count.
            m(1, "2026-11-23", [3, 4, 95, 155, 4, 3], "2026-11-22T11:30:00Z"),
        ]
    );

    // Same instant again: every row is already right and is left alone.
    let stamps = computed_at(&env);
    let again = host.run_now("metrics", RunArgs::default()).await.unwrap();
    assert_eq!((again.status, again.items_total, again.items_ok, again.changed), (ExecutionStatus::Succeeded, 4, 4, 0));
    assert_eq!(computed_at(&env), stamps);
    assert_eq!(metrics(&env).len(), 4);

    // Carol trains at 02:00 local: only her row changes.
    env.app()
        .execute_batch(
            "INSERT INTO workouts (user_id, status, started_at, finalized_at, duration_minutes)
             VALUES (3, 'completed', '2026-11-22T09:40:00Z', '2026-11-22T10:00:00Z', 20)",
        )
        .unwrap();
    let third = host.run_now("metrics", RunArgs::default()).await.unwrap();
    assert_eq!((third.items_total, third.changed), (4, 1));
    assert_eq!(metrics(&env)[1], m(3, "2026-11-22", [2, 2, 45, 45, 2, 1], "2026-11-22T10:00:00Z"));
}

#[actix_rt::test]
async fn date_computes_metrics_for_that_date_as_of_its_end() {
    let env = env();
    fixture(&env);
    let host = env.host(false).await;
    let r = host.run_now("metrics", RunArgs { date: Some("2026-11-21".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!((r.items_total, r.changed), (4, 4));
    // As of 2026-11-22T00:00Z: today's 11:30Z workouts are not counted yet.
    let rows: Vec<_> = metrics(&env).into_iter().map(|r| (r.0, r.1, r.2, r.3, r.8)).collect();
    assert_eq!(
        rows,
        vec![
            (1, "2026-11-21".into(), 2, 3, "2026-11-21T20:00:00Z".into()),
            (2, "2026-11-21".into(), 1, 1, "2026-11-21T06:00:00Z".into()),
            (3, "2026-11-21".into(), 1, 1, "2026-11-21T05:00:00Z".into()),
            (4, "2026-11-21".into(), 2, 3, "2026-11-21T18:00:00Z".into()),
        ]
    );
}

#[actix_rt::test]
async fn one_users_failure_does_not_stop_the_others() {
    let env = env();
    fixture(&env);
    env.app()
        .execute_batch(
            "INSERT INTO users (id, name, plan, timezone) VALUES (7, 'gus', 'PAID', 'Mars/Olympus_Mons');
             INSERT INTO workouts (user_id, status, started_at, finalized_at, duration_minutes)
             VALUES (7, 'completed', '2026-11-22T08:00:00Z', '2026-11-22T09:00:00Z', 60);",
        )
        .unwrap();
    let host = env.host(false).await;
    let r = host.run_now("metrics", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Partial, "{r:?}");
    assert_eq!((r.items_total, r.items_ok, r.items_failed), (5, 4, 1));
    let failed = r.problems.iter().find(|p| p.key == "7").unwrap();
    assert_eq!(failed.class, ErrorClass::Fatal);
    assert!(failed.message.contains("user 7 has an unusable time zone \"Mars/Olympus_Mons\""), "{failed:?}");
    assert_eq!(metrics(&env).iter().map(|r| r.0).collect::<Vec<_>>(), vec![2, 3, 4, 1]);
}

#[actix_rt::test]
async fn demo_data_smoke() {
    let env = env();
    let seeded = env.seed_demo(400, t(AT)).await;
    let host = env.host(false).await;
    let r = host.run_now("metrics", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!(r.items_total, seeded.workout_active_users);
    assert_eq!((r.items_ok, r.changed, r.items_failed), (r.items_total, r.items_total, 0));
    let (rows, bad): (i64, i64) = env
        .app()
        .query_row(
            "SELECT COUNT(*), COUNT(*) FILTER (WHERE workouts_30d < 1 OR workouts_7d > workouts_30d \
             OR active_days_30d > workouts_30d OR streak_days > active_days_30d) \
             FROM user_behavior_metrics WHERE metrics_date IN ('2026-11-22', '2026-11-23')",
            [],
            |r| Ok((r.get(0)?, r.get(1)?)),
        )
        .unwrap();
    assert_eq!((rows as u64, bad), (seeded.workout_active_users, 0));
}

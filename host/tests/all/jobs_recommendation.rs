//! The `recommendation` job (seed 000 §1-2): one recommendation per TRIAL/PAID
//! user with five days of reports, skips with reasons, idempotency, `--date`,
//! per-user isolation.

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, RunReport};

use crate::helpers::*;

fn env() -> Env {
    Env::read_write_job("recommendation", "2026-11-22T07:00:00Z")
}

/// Base date 2026-11-22, so the five days are 11-17..11-21.
///
/// - 1 PAID, target 2000 kcal / 125 g protein, ate 2400 kcal / 80 g on each of 11-17..11-21;
/// - 2 TRIAL, reports on 11-16..11-20 and 11-22 (four in the window);
/// - 3 FREE with every report; 4 PAID but withdrawn;
/// - 5 PAID, today's recommendation already made;
/// - 6 TRIAL without an active target;
/// - 7 PAID, target 2000, ate exactly 2000 / 125 g on each day.
fn fixture(env: &Env) {
    let conn = env.app();
    conn.execute_batch(
        "INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES
            (1, 'alice', 'PAID', 'Asia/Tokyo', NULL),
            (2, 'bob', 'TRIAL', 'UTC', NULL),
            (3, 'carol', 'FREE', 'UTC', NULL),
            (4, 'dave', 'PAID', 'UTC', '2026-11-01T00:00:00Z'),
            (5, 'erin', 'PAID', 'UTC', NULL),
            (6, 'frank', 'TRIAL', 'UTC', NULL),
            (7, 'grace', 'PAID', 'Europe/Berlin', NULL);
         INSERT INTO targets (user_id, calories, protein_g, fat_g, carbs_g, active, created_at) VALUES
            (1, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z'),
            (2, 1800, 110, 50, 220, 1, '2026-11-01T00:00:00Z'),
            (3, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z'),
            (4, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z'),
            (5, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z'),
            (6, 2000, 125, 55, 250, 0, '2026-10-01T00:00:00Z'),
            (7, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z');
         INSERT INTO meal_recommendations (user_id, generated_for_date, calorie_budget, body, created_at) VALUES
            (5, '2026-11-22', 2100, '{}', '2026-11-22T06:00:00Z');",
    )
    .unwrap();
    let mut report = conn
        .prepare(
            "INSERT INTO daily_nutrition_reports (user_id, date, calories, protein_g, fat_g, carbs_g) \
             VALUES (?1, ?2, ?3, ?4, 60, 250)",
        )
        .unwrap();
    for day in 17..=21 {
        let date = format!("2026-11-{day}");
        for (user, kcal, protein) in [(1, 2400, 80), (3, 2000, 125), (4, 2000, 125), (5, 2000, 125), (6, 2000, 125)] {
            report.execute(rusqlite::params![user, date, kcal, protein]).unwrap();
        }
        report.execute(rusqlite::params![7, date, 2000, 125]).unwrap();
    }
    for date in ["2026-11-16", "2026-11-17", "2026-11-18", "2026-11-19", "2026-11-20", "2026-11-22"] {
        report.execute(rusqlite::params![2, date, 1700, 100]).unwrap();
    }
}

/// `(user_id, generated_for_date, calorie_budget)` of every recommendation.
fn recommendations(env: &Env) -> Vec<(i64, String, i64)> {
    let conn = env.app();
    let mut stmt = conn
        .prepare(
            "SELECT user_id, generated_for_date, calorie_budget FROM meal_recommendations \
             ORDER BY generated_for_date, user_id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap().collect::<Result<_, _>>().unwrap()
}

fn body(env: &Env, user: i64, date: &str) -> String {
    env.app()
        .query_row(
            "SELECT body FROM meal_recommendations WHERE user_id = ?1 AND generated_for_date = ?2",
            rusqlite::params![user, date],
            |r| r.get(0),
        )
        .unwrap()
}

fn skips(r: &RunReport) -> Vec<(String, String)> {
    let mut v: Vec<_> =
        r.problems.iter().filter(|p| p.class == ErrorClass::Skip).map(|p| (p.key.clone(), p.message.clone())).collect();
    v.sort();
    v
}

fn skip(key: &str, reason: &str) -> (String, String) {
    (key.to_string(), reason.to_string())
}

#[actix_rt::test]
async fn paying_users_with_five_days_of_reports_get_one_recommendation() {
    let env = env();
    fixture(&env);
    let host = env.host(false).await;

    let r = host.run_now("recommendation", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    // FREE and withdrawn users are not items at all.
    assert_eq!((r.items_total, r.items_ok, r.items_skipped, r.items_failed, r.changed), (5, 2, 3, 0, 2));
    assert_eq!(
        skips(&r),
        vec![
            skip("2", "not enough daily reports (4 of 5)"),
            skip("5", "already exists"),
            skip("6", "no active target"),
        ]
    );
    assert_eq!(
        recommendations(&env),
        vec![(1, "2026-11-22".into(), 1800), (5, "2026-11-22".into(), 2100), (7, "2026-11-22".into(), 2000)]
    );
    // Over-eating by 400 kcal lowers today's budget by half of it; short on
    // protein, the protein-rich dishes near each meal's share are chosen.
    let alice = body(&env, 1, "2026-11-22");
    for part in [
        r#""base_date":"2026-11-22""#,
        r#""target_calories":2000"#,
        r#""average_calories_5d":2400"#,
        r#""calorie_budget":1800"#,
        r#""dish":"salmon onigiri and boiled egg""#,
        r#""dish":"chicken salad bowl""#,
        r#""dish":"chicken teriyaki with rice""#,
    ] {
        assert!(alice.contains(part), "{alice} lacks {part}");
    }
    let grace = body(&env, 7, "2026-11-22");
    assert!(grace.contains(r#""calorie_budget":2000"#) && grace.contains(r#""meal":"dinner""#), "{grace}");

    // A second run finds every recommendation made.
    let again = host.run_now("recommendation", RunArgs::default()).await.unwrap();
    assert_eq!(again.status, ExecutionStatus::Succeeded, "{again:?}");
    assert_eq!((again.items_total, again.items_ok, again.items_skipped, again.changed), (5, 0, 5, 0));
    assert_eq!(
        skips(&again),
        vec![
            skip("1", "already exists"),
            skip("2", "not enough daily reports (4 of 5)"),
            skip("5", "already exists"),
            skip("6", "no active target"),
            skip("7", "already exists"),
        ]
    );
    assert_eq!(recommendations(&env).len(), 3);
    assert_eq!(body(&env, 1, "2026-11-22"), alice, "an existing recommendation is never rewritten");
}

#[actix_rt::test]
async fn date_sets_the_base_date_and_its_five_days() {
    let env = env();
    fixture(&env);
    let host = env.host(false).await;
    let r = host
        .run_now("recommendation", RunArgs { date: Some("2026-11-21".into()), ..RunArgs::default() })
        .await
        .unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    // The days are 11-16..11-20: only bob logged each of them.
    assert_eq!((r.items_total, r.changed), (5, 1));
    assert_eq!(
        skips(&r),
        vec![
            skip("1", "not enough daily reports (4 of 5)"),
            skip("5", "not enough daily reports (4 of 5)"),
            skip("6", "no active target"),
            skip("7", "not enough daily reports (4 of 5)"),
        ]
    );
    let bob: Vec<_> = recommendations(&env).into_iter().filter(|r| r.0 == 2).collect();
    assert_eq!(bob, vec![(2, "2026-11-21".into(), 1850)], "1800 + (1800 - 1700) / 2, rounded to 10");
}

#[actix_rt::test]
async fn one_users_failure_does_not_stop_the_others() {
    let env = env();
    fixture(&env);
    env.app()
        .execute_batch(
            "CREATE TRIGGER no_recommendations_for_alice BEFORE INSERT ON meal_recommendations
             WHEN NEW.user_id = 1 BEGIN SELECT RAISE(ABORT, 'alice opted out'); END;",
        )
        .unwrap();
    let host = env.host(false).await;
    let r = host.run_now("recommendation", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Partial, "{r:?}");
    assert_eq!((r.items_total, r.items_ok, r.items_skipped, r.items_failed), (5, 1, 3, 1));
    let failed = r.problems.iter().find(|p| p.key == "1").unwrap();
    assert_eq!(failed.class, ErrorClass::Fatal);
    assert!(failed.message.contains("alice opted out"), "{failed:?}");
    let made: Vec<i64> = recommendations(&env).iter().map(|r| r.0).collect();
    assert_eq!(made, vec![5, 7], "grace, after the failed alice, still gets hers");
}

fn made_for(env: &Env, date: &str) -> u64 {
    env.app()
        .query_row("SELECT COUNT(*) FROM meal_recommendations WHERE generated_for_date = ?1", [date], |r| {
            r.get::<_, i64>(0)
        })
        .unwrap() as u64
}

#[actix_rt::test]
async fn demo_data_smoke() {
    let env = env();
    let seeded = env.seed_demo(400, t("2026-11-22T07:00:00Z")).await;
    let before = made_for(&env, "2026-11-22");
    let host = env.host(false).await;
    let r = host.run_now("recommendation", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!(r.items_total, seeded.premium_active_users);
    assert_eq!((r.items_ok, r.changed, r.items_failed), (seeded.recommendation_ready, seeded.recommendation_ready, 0));
    assert_eq!(r.items_skipped, seeded.premium_active_users - seeded.recommendation_ready);
    let count = |reason: &str| r.problems.iter().filter(|p| p.message == reason).count() as u64;
    assert_eq!(count("already exists"), seeded.recommendations_today);
    assert!(count("no active target") > 0);
    assert!(r.problems.iter().any(|p| p.message.starts_with("not enough daily reports (")), "{:?}", r.problems);
    assert_eq!(made_for(&env, "2026-11-22"), before + seeded.recommendation_ready);
}

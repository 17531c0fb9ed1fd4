//! The `snapshot` job (seed 000 §1-1): yesterday's target fixed for every
//! active user, skips with reasons, idempotency, `--date`, per-user isolation.

use sundial::model::{ErrorClass, ExecutionStatus, RunArgs, RunReport};

use crate::helpers::*;

fn env() -> Env {
    Env::read_write_job("snapshot", "2026-11-22T00:10:00Z")
}

/// Six users: 1 and 6 have an active target (1 also an older inactive one),
/// 2 has no target, 3 only an inactive one, 4 withdrew, 5 already has
/// yesterday's snapshot (from a target since changed).
fn fixture(env: &Env) {
    env.app()
        .execute_batch(
            "INSERT INTO users (id, name, plan, timezone, withdrawn_at) VALUES
                (1, 'alice', 'PAID', 'Asia/Tokyo', NULL),
                (2, 'bob', 'FREE', 'UTC', NULL),
                (3, 'carol', 'TRIAL', 'Europe/Berlin', NULL),
                (4, 'dave', 'PAID', 'UTC', '2026-10-01T00:00:00Z'),
                (5, 'erin', 'FREE', 'America/New_York', NULL),
                (6, 'frank', 'TRIAL', 'Pacific/Auckland', NULL);
             INSERT INTO targets (id, user_id, calories, protein_g, fat_g, carbs_g, active, created_at) VALUES
                (10, 1, 1800, 100, 50, 230, 0, '2026-09-01T00:00:00Z'),
                (11, 1, 2000, 125, 55, 250, 1, '2026-11-01T00:00:00Z'),
                (30, 3, 1600, 90, 45, 200, 0, '2026-08-01T00:00:00Z'),
                (40, 4, 2100, 130, 60, 260, 1, '2026-09-01T00:00:00Z'),
                (50, 5, 2200, 140, 60, 280, 1, '2026-11-20T00:00:00Z'),
                (60, 6, 2500, 150, 70, 320, 1, '2026-11-01T00:00:00Z');
             INSERT INTO daily_target_snapshots
                (user_id, date, target_id, calories, protein_g, fat_g, carbs_g, created_at) VALUES
                (5, '2026-11-21', 50, 1900, 110, 50, 240, '2026-11-21T00:10:00Z');",
        )
        .unwrap();
}

/// `(user_id, date, target_id, calories, protein_g, fat_g, carbs_g)` of every snapshot.
fn snapshots(env: &Env) -> Vec<(i64, String, i64, i64, i64, i64, i64)> {
    let conn = env.app();
    let mut stmt = conn
        .prepare(
            "SELECT user_id, date, target_id, calories, protein_g, fat_g, carbs_g FROM daily_target_snapshots \
             ORDER BY date, user_id",
        )
        .unwrap();
    stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap()
}

fn skips(r: &RunReport) -> Vec<(String, String)> {
    let mut v: Vec<_> =
        r.problems.iter().filter(|p| p.class == ErrorClass::Skip).map(|p| (p.key.clone(), p.message.clone())).collect();
    v.sort();
    v
}

fn no_target() -> Vec<(String, String)> {
    vec![("2".into(), "no active target".into()), ("3".into(), "no active target".into())]
}

#[actix_rt::test]
async fn yesterday_is_fixed_from_the_active_target_once() {
    let env = env();
    fixture(&env);
    let host = env.host(false).await;

    let r = host.run_now("snapshot", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    // The withdrawn user is not an item; users without an active target are skipped.
    assert_eq!((r.items_total, r.items_ok, r.items_skipped, r.items_failed), (5, 3, 2, 0));
    assert_eq!(r.changed, 2, "users 1 and 6 get a snapshot; user 5 already had one");
    assert_eq!(skips(&r), no_target());
    assert_eq!(
        snapshots(&env),
        vec![
            (1, "2026-11-21".into(), 11, 2000, 125, 55, 250),
            (5, "2026-11-21".into(), 50, 1900, 110, 50, 240),
            (6, "2026-11-21".into(), 60, 2500, 150, 70, 320),
        ],
        "the active target is copied; an existing snapshot keeps the values it was fixed with"
    );

    // The user edits the target afterwards: yesterday's snapshot does not follow.
    env.app().execute_batch("UPDATE targets SET calories = 2400 WHERE id = 11").unwrap();
    let again = host.run_now("snapshot", RunArgs::default()).await.unwrap();
    assert_eq!(again.status, ExecutionStatus::Succeeded, "{again:?}");
    assert_eq!((again.items_total, again.items_ok, again.items_skipped, again.changed), (5, 3, 2, 0));
    assert_eq!(skips(&again), no_target());
    assert_eq!(snapshots(&env)[0], (1, "2026-11-21".into(), 11, 2000, 125, 55, 250));
    assert_eq!(snapshots(&env).len(), 3);

    let execs = host.store.list_executions("snapshot", 10, None).await.unwrap();
    assert_eq!(execs.len(), 2);
    assert!(execs.iter().all(|e| e.status == ExecutionStatus::Succeeded && e.items_total == 5));
}

#[actix_rt::test]
async fn date_backfills_the_day_before_it() {
    let env = env();
    fixture(&env);
    let host = env.host(false).await;
    let r = host.run_now("snapshot", RunArgs { date: Some("2026-11-10".into()), ..RunArgs::default() }).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!((r.items_total, r.changed), (5, 3));
    let on_the_9th: Vec<_> = snapshots(&env).into_iter().filter(|s| s.1 == "2026-11-09").map(|s| (s.0, s.2)).collect();
    assert_eq!(on_the_9th, vec![(1, 11), (5, 50), (6, 60)]);
    assert_eq!(snapshots(&env).len(), 4, "yesterday's snapshot is untouched by the backfill");
}

#[actix_rt::test]
async fn one_users_failure_does_not_stop_the_others() {
    let env = env();
    fixture(&env);
    env.app()
        .execute_batch(
            "CREATE TRIGGER frozen BEFORE INSERT ON daily_target_snapshots WHEN NEW.user_id = 1
             BEGIN SELECT RAISE(ABORT, 'snapshots of user 1 are frozen'); END;",
        )
        .unwrap();
    let host = env.host(false).await;
    let r = host.run_now("snapshot", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Partial, "{r:?}");
    assert_eq!((r.items_total, r.items_ok, r.items_skipped, r.items_failed), (5, 2, 2, 1));
    let failed = r.problems.iter().find(|p| p.key == "1").unwrap();
    assert_eq!(failed.class, ErrorClass::Fatal);
    assert!(failed.message.contains("snapshots of user 1 are frozen"), "{failed:?}");
    let users: Vec<i64> = snapshots(&env).iter().map(|s| s.0).collect();
    assert_eq!(users, vec![5, 6], "user 6 after the failed user 1 is still snapshotted");

    // Once the cause is gone, a re-run does exactly the missing user.
    env.app().execute_batch("DROP TRIGGER frozen").unwrap();
    let r = host.run_now("snapshot", RunArgs::default()).await.unwrap();
    assert_eq!((r.status, r.changed), (ExecutionStatus::Succeeded, 1));
    assert_eq!(snapshots(&env).iter().map(|s| s.0).collect::<Vec<_>>(), vec![1, 5, 6]);
}

/// `(snapshots of active users, distinct active users, snapshots of withdrawn users)` for a date.
fn yesterday_counts(env: &Env) -> (u64, u64, u64) {
    env.app()
        .query_row(
            "SELECT COUNT(*) FILTER (WHERE u.withdrawn_at IS NULL), \
                    COUNT(DISTINCT u.id) FILTER (WHERE u.withdrawn_at IS NULL), \
                    COUNT(*) FILTER (WHERE u.withdrawn_at IS NOT NULL) \
             FROM daily_target_snapshots s JOIN users u ON u.id = s.user_id WHERE s.date = '2026-11-21'",
            [],
            |r| Ok((r.get::<_, i64>(0)? as u64, r.get::<_, i64>(1)? as u64, r.get::<_, i64>(2)? as u64)),
        )
        .unwrap()
}

#[actix_rt::test]
async fn demo_data_over_several_pages() {
    let env = env();
    let seeded = env.seed_demo(2_500, t("2026-11-22T00:00:00Z")).await;
    let (_, _, withdrawn_before) = yesterday_counts(&env);
    let host = env.host(false).await;
    let r = host.run_now("snapshot", RunArgs::default()).await.unwrap();
    assert_eq!(r.status, ExecutionStatus::Succeeded, "{r:?}");
    assert_eq!(r.items_total, seeded.active_users, "every active user, across pages of 1000");
    assert_eq!(r.items_skipped, seeded.active_without_target);
    assert_eq!(r.items_failed, 0);
    assert_eq!(r.changed, seeded.active_users - seeded.active_without_target - seeded.yesterday_snapshots);
    assert!(r.problems.iter().all(|p| p.message == "no active target"));

    let with_target = seeded.active_users - seeded.active_without_target;
    assert_eq!(
        yesterday_counts(&env),
        (with_target, with_target, withdrawn_before),
        "one snapshot per active user with a target; withdrawn users get none"
    );

    let again = host.run_now("snapshot", RunArgs::default()).await.unwrap();
    assert_eq!((again.items_total, again.changed), (seeded.active_users, 0));
}

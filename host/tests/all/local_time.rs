//! Item-local schedules (`item_zones`, `item_zones_query`): a job whose
//! schedule is read in each user's own time zone fires once per group of
//! zones at the right instant, with the same DST policy as job schedules,
//! and reaches each user once per local day.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, LocalResult, NaiveDate, TimeDelta, TimeZone, Utc};
use chrono_tz::Tz;
use sundial::actors::scheduler::{RefreshZones, Tick};
use sundial::host::Host;
use sundial::model::ExecutionStatus;

use crate::fixtures::ZONES;
use crate::helpers::*;

/// The application tables of the fixture, in the environment's SQLite file.
fn app_tables(env: &Env, users: &[(&str, Option<&str>)]) -> rusqlite::Connection {
    let conn = rusqlite::Connection::open(env.path().join("sundial.db")).unwrap();
    conn.execute_batch(
        "CREATE TABLE users (id INTEGER PRIMARY KEY, timezone TEXT NOT NULL, delivery_time TEXT);
         CREATE TABLE visits (user_id INTEGER NOT NULL, local_date TEXT NOT NULL, local_time TEXT NOT NULL,
                              execution_id INTEGER NOT NULL);",
    )
    .unwrap();
    let mut insert = conn.prepare("INSERT INTO users (timezone, delivery_time) VALUES (?1, ?2)").unwrap();
    for (zone, at) in users {
        insert.execute(rusqlite::params![zone, at]).unwrap();
    }
    drop(insert);
    conn
}

/// Steps the manual clock from fire to fire until `end`, waiting for each
/// execution to finish; returns how many ran.
async fn run_until(env: &Env, host: &Host, end: DateTime<Utc>) -> usize {
    let mut events = host.subscribe();
    let mut ran = 0;
    while let Some(next) = next_fire(host, "local-visits").await.filter(|n| *n <= end) {
        env.clock.as_ref().unwrap().set(next + TimeDelta::milliseconds(1));
        host.scheduler.as_ref().unwrap().send(Tick).await.unwrap();
        ran += 1;
        finished_event(&mut events).await;
    }
    ran
}

/// An independent oracle: the instant of `hh:mm` local on `date` in `zone`,
/// the first occurrence if it occurs twice, the first instant after the gap
/// if it does not exist.
fn local_instant(zone: Tz, date: NaiveDate, hour: u32, minute: u32) -> DateTime<Utc> {
    let mut local = date.and_hms_opt(hour, minute, 0).unwrap();
    loop {
        match zone.from_local_datetime(&local) {
            LocalResult::Single(t) => return t.with_timezone(&Utc),
            LocalResult::Ambiguous(a, b) => return a.min(b).with_timezone(&Utc),
            LocalResult::None => local += TimeDelta::minutes(1),
        }
    }
}

/// `(user, local date) -> local times visited` from the fixture's table.
fn visits(env: &Env) -> BTreeMap<(i64, String), Vec<String>> {
    let conn = rusqlite::Connection::open(env.path().join("sundial.db")).unwrap();
    let mut stmt = conn.prepare("SELECT user_id, local_date, local_time FROM visits").unwrap();
    let mut out: BTreeMap<(i64, String), Vec<String>> = BTreeMap::new();
    for row in stmt.query_map([], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).unwrap() {
        let (user, date, time): (i64, String, String) = row.unwrap();
        out.entry((user, date)).or_default().push(time);
    }
    out
}

#[actix_rt::test]
async fn users_in_thirty_zones_are_each_reached_once_per_local_day_across_a_dst_change() {
    // 48 hours across the US spring-forward (2026-03-08): 02:00 does not
    // exist in the US zones that day, so their users run at 03:00 local.
    let (start, end) = (t("2026-03-07T00:00:00Z"), t("2026-03-09T00:00:00Z"));
    let env = Env::new(&["local-visits"]).clock("2026-03-07T00:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           schedule = "0 2 * * *"
           item_zones_query = "SELECT DISTINCT timezone FROM users""#,
    );
    let users: Vec<(&str, Option<&str>)> = (0..600).map(|i| (ZONES[i % ZONES.len()], None)).collect();
    app_tables(&env, &users);
    let host = env.host(true).await;
    let first = eventually("the zones to be read", || async { next_fire(&host, "local-visits").await }).await;
    // Cairo (+2) reaches 02:00 at the start itself; Berlin and Lagos next.
    assert_eq!(first, t("2026-03-07T01:00:00Z"), "02:00 in Berlin and Lagos (+1)");

    let executions = run_until(&env, &host, end).await;

    // Expected: every (user, local date) whose 02:00 falls in (start, end].
    let mut expected: BTreeMap<(i64, String), String> = BTreeMap::new();
    let mut instants = BTreeSet::new();
    for (i, (zone, _)) in users.iter().enumerate() {
        let tz: Tz = zone.parse().unwrap();
        for day in 5..=10 {
            let date = NaiveDate::from_ymd_opt(2026, 3, day).unwrap();
            let at = local_instant(tz, date, 2, 0);
            if at > start && at <= end {
                let local = at.with_timezone(&tz).format("%H:%M").to_string();
                expected.insert((i as i64 + 1, date.to_string()), local);
                instants.insert(at);
            }
        }
    }
    let seen = visits(&env);
    let mut wrong = Vec::new();
    for (key, times) in &seen {
        match expected.get(key) {
            Some(time) if times == std::slice::from_ref(time) => {}
            _ => wrong.push((key.clone(), times.clone(), expected.get(key).cloned())),
        }
    }
    assert!(wrong.is_empty(), "visits not once at the local time: {:?}", &wrong[..wrong.len().min(10)]);
    assert_eq!(seen.len(), expected.len(), "every user reached on every local day in the window");
    let new_york = ZONES.iter().position(|z| *z == "America/New_York").unwrap() as i64 + 1;
    assert_eq!(seen[&(new_york, "2026-03-08".to_string())], vec!["03:00".to_string()], "the end of the gap");
    assert_eq!(seen[&(new_york, "2026-03-07".to_string())], vec!["02:00".to_string()]);

    // One execution per group of zones sharing the instant, each succeeded
    // with exactly its group's users, named in its arguments.
    assert_eq!(executions, instants.len());
    let runs = host.store.list_executions("local-visits", 1000, None).await.unwrap();
    assert_eq!(runs.len(), instants.len());
    for run in &runs {
        assert_eq!(run.status, ExecutionStatus::Succeeded, "{run:?}");
        let zones = run.args.args.iter().find(|(k, _)| k == "sundial.zones").map(|(_, v)| v.clone()).unwrap();
        let in_group = users.iter().filter(|(z, _)| zones.split(',').any(|g| g == *z)).count() as u64;
        assert_eq!(run.items_total, in_group as i64, "{zones}");
    }
    let tokyo = runs.iter().find(|r| r.scheduled_for == t("2026-03-07T17:00:00Z")).unwrap();
    assert_eq!(tokyo.args.args, vec![("sundial.zones".to_string(), "Asia/Seoul,Asia/Tokyo".to_string())]);
    println!(
        "{} users in {} zones over 48 h: {} executions (zone groups), {} user-days",
        users.len(),
        ZONES.len(),
        executions,
        seen.len()
    );
    host.stop().await;
}

#[actix_rt::test]
async fn users_who_chose_their_delivery_time_are_reached_at_it() {
    // Sunday 2026-05-31 21:00 in Tokyo.
    let env = Env::new(&["local-visits"]).clock("2026-05-31T12:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           schedule = "0 7 * * MON-FRI"
           item_zones_query = "SELECT DISTINCT timezone, delivery_time FROM users""#,
    );
    let users = [
        ("Asia/Tokyo", Some("07:00")),
        ("Asia/Tokyo", Some("06:30")),
        ("Asia/Tokyo", Some("06:30")),
        ("Asia/Shanghai", Some("05:30")),
        ("Europe/London", Some("21:15")),
    ];
    app_tables(&env, &users);
    let host = env.host(true).await;
    eventually("the slots to be read", || async { next_fire(&host, "local-visits").await }).await;
    // Monday 2026-06-01 .. the end of Tuesday in Tokyo.
    run_until(&env, &host, t("2026-06-02T15:00:00Z")).await;

    let seen = visits(&env);
    let expect = |user: i64, date: &str, time: &str| {
        assert_eq!(seen.get(&(user, date.to_string())), Some(&vec![time.to_string()]), "user {user} on {date}");
    };
    for date in ["2026-06-01", "2026-06-02"] {
        expect(1, date, "07:00");
        expect(2, date, "06:30");
        expect(3, date, "06:30");
        expect(4, date, "05:30");
    }
    expect(5, "2026-06-01", "21:15");
    assert_eq!(seen.len(), 9, "{seen:?}");
    // Tokyo 06:30 and Shanghai 05:30 are the same instant: one execution.
    let runs = host.store.list_executions("local-visits", 100, None).await.unwrap();
    let shared = runs.iter().find(|r| r.scheduled_for == t("2026-05-31T21:30:00Z")).unwrap();
    assert_eq!(
        shared.args.args,
        vec![
            ("sundial.zones".to_string(), "Asia/Shanghai,Asia/Tokyo".to_string()),
            ("sundial.slots".to_string(), "Asia/Shanghai@05:30,Asia/Tokyo@06:30".to_string()),
        ]
    );
    assert_eq!(shared.items_total, 3);
    assert_eq!(runs.len(), 5, "two instants a weekday in Asia, one in London on Monday");
    host.stop().await;
}

#[actix_rt::test]
async fn a_new_zone_is_scheduled_once_the_query_is_read_again() {
    let env = Env::new(&["local-visits"]).clock("2026-01-10T00:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           item_zones_query = "SELECT DISTINCT timezone FROM users""#,
    );
    let conn = app_tables(&env, &[("America/New_York", None)]);
    let host = env.host(true).await;
    let new_york = t("2026-01-10T07:00:00Z");
    assert_eq!(eventually("the zones to be read", || async { next_fire(&host, "local-visits").await }).await, new_york);
    conn.execute("INSERT INTO users (timezone) VALUES ('Europe/London')", []).unwrap();
    host.scheduler.as_ref().unwrap().send(RefreshZones).await.unwrap();
    let london = t("2026-01-10T02:00:00Z");
    eventually("London to be scheduled", || async { next_fire(&host, "local-visits").await.filter(|n| *n == london) })
        .await;
    host.stop().await;
}

#[actix_rt::test]
async fn a_query_that_fails_schedules_the_job_in_every_zone_and_says_so() {
    let env = Env::new(&["local-visits"]).clock("2026-01-10T00:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           item_zones_query = "SELECT zone FROM no_such_table""#,
    );
    app_tables(&env, &[("Europe/London", None)]);
    let host = env.host(true).await;
    // Every zone: after 00:00Z (02:00 at +2), the next 02:00 is at +1.
    let next = eventually("a fallback schedule", || async { next_fire(&host, "local-visits").await }).await;
    assert_eq!(next, t("2026-01-10T01:00:00Z"));
    let groups = host
        .scheduler
        .as_ref()
        .unwrap()
        .send(sundial::actors::scheduler::UpcomingGroups { name: "local-visits".into(), after: next, count: 1 })
        .await
        .unwrap()
        .unwrap();
    assert_eq!(groups[0].0, t("2026-01-10T02:00:00Z"));
    assert!(groups[0].1.contains(&"Europe/London".to_string()) && groups[0].1.contains(&"UTC".to_string()));
    host.stop().await;
}

#[test]
fn bad_item_zones_are_refused_at_config_load_naming_the_job() {
    let err = |text: &str| sundial::config::Config::parse(text).unwrap_err();
    let e = err("[jobs.local-visits]\nitem_zones = [\"Asia/Tokyo\", \"Mars/Olympus\"]");
    assert!(e.contains("local-visits") && e.contains("Mars/Olympus"), "{e}");
    let e = err("[jobs.local-visits]\nitem_zones = [\"Asia/Tokyo@7:30\"]");
    assert!(e.contains("invalid local time \"7:30\""), "{e}");
    let e = err("[jobs.local-visits]\nitem_zones = \"everywhere\"");
    assert!(e.contains("item_zones must be \"all\""), "{e}");
    let e = err("[jobs.local-visits]\nitem_zones = []");
    assert!(e.contains("empty"), "{e}");
    let e = err("[jobs.local-visits]\nitem_zones = \"all\"\nitem_zones_query = \"SELECT 'UTC'\"");
    assert!(e.contains("not both"), "{e}");
}

#[actix_rt::test]
async fn item_zones_on_a_single_shot_job_is_a_load_error() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\nitem_zones = [\"Asia/Tokyo\"]");
    let host = env.host(false).await;
    let failed = host.loaded.failed.iter().map(|f| format!("{f:?}")).collect::<Vec<_>>().join("\n");
    assert!(failed.contains("item_zones") && failed.contains("no items"), "{failed}");
    host.stop().await;
}

#[actix_rt::test]
async fn one_catch_up_after_an_outage_runs_every_missed_group() {
    let env = Env::new(&["local-visits"]).clock("2026-01-10T00:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           item_zones = ["Asia/Tokyo", "Europe/London", "America/New_York"]"#,
    );
    app_tables(&env, &[("Europe/London", None), ("America/New_York", None), ("Asia/Tokyo", None)]);
    let host = env.host(true).await;
    assert_eq!(next_fire(&host, "local-visits").await, Some(t("2026-01-10T02:00:00Z")));
    // The host slept through London's 02:00 and New York's 02:00 (07:00Z).
    let mut events = host.subscribe();
    env.clock.as_ref().unwrap().set(t("2026-01-10T08:00:00Z"));
    host.scheduler.as_ref().unwrap().send(Tick).await.unwrap();
    finished_event(&mut events).await;
    let runs = host.store.list_executions("local-visits", 10, None).await.unwrap();
    assert_eq!(runs.len(), 1, "one catch-up, not one per group: {runs:?}");
    assert_eq!(runs[0].trigger, sundial::model::Trigger::CatchUp);
    assert_eq!(runs[0].scheduled_for, t("2026-01-10T07:00:00Z"));
    assert_eq!(runs[0].args.args, vec![("sundial.zones".to_string(), "America/New_York,Europe/London".to_string())]);
    assert_eq!(runs[0].items_total, 2, "the users of both missed groups");
    assert_eq!(next_fire(&host, "local-visits").await, Some(t("2026-01-10T17:00:00Z")), "Tokyo next");
    host.stop().await;
}

#[actix_rt::test]
async fn the_job_detail_shows_the_zones_and_the_upcoming_groups() {
    let env = Env::new(&["local-visits"]).clock("2026-01-10T00:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           item_zones = ["Asia/Tokyo", "Asia/Seoul", "Europe/London@07:30"]"#,
    );
    app_tables(&env, &[]);
    let api = crate::api::Api::start(&env, true).await;
    let job = api.get("/api/scheduler/jobs/local-visits").await;
    assert_eq!(
        job["item_zones"],
        serde_json::json!({"source": "list", "slots": ["Asia/Tokyo", "Asia/Seoul", "Europe/London@07:30"]})
    );
    assert_eq!(
        job["upcoming_groups"][0],
        serde_json::json!({"at": "2026-01-10T07:30:00Z", "zones": ["Europe/London@07:30"]})
    );
    assert_eq!(
        job["upcoming_groups"][1],
        serde_json::json!({"at": "2026-01-10T17:00:00Z", "zones": ["Asia/Seoul", "Asia/Tokyo"]})
    );
    assert_eq!(job["upcoming"][0], "2026-01-10T07:30:00Z");
    api.stop().await;
}

#[actix_rt::test]
async fn a_group_that_fires_while_another_runs_waits_instead_of_being_skipped() {
    let env = Env::new(&["local-visits"]).clock("2026-01-10T00:00:00Z").config(
        r#"[jobs.local-visits]
           database = "read-write"
           item_zones = ["Asia/Tokyo", "Australia/Adelaide"]
           args = { delay_ms = "400" }"#,
    );
    app_tables(&env, &[("Australia/Adelaide", None), ("Australia/Adelaide", None), ("Asia/Tokyo", None)]);
    let host = env.host(true).await;
    let scheduler = host.scheduler.as_ref().unwrap();
    // Adelaide's 02:00 (+10:30) and, while its run is still going, Tokyo's.
    env.clock.as_ref().unwrap().set(t("2026-01-10T15:30:00.001Z"));
    scheduler.send(Tick).await.unwrap();
    eventually("Adelaide's run to start", || async {
        let runs = host.store.list_executions("local-visits", 10, None).await.unwrap();
        runs.iter().any(|r| r.status == ExecutionStatus::Running).then_some(())
    })
    .await;
    env.clock.as_ref().unwrap().set(t("2026-01-10T17:00:00.001Z"));
    scheduler.send(Tick).await.unwrap();
    let runs = finished_executions(&host.store, "local-visits", 2).await;
    assert!(runs.iter().all(|r| r.status == ExecutionStatus::Succeeded), "{runs:?}");
    let zones: Vec<String> = runs.iter().map(|r| r.args.args[0].1.clone()).collect();
    assert_eq!(zones, ["Australia/Adelaide", "Asia/Tokyo"]);
    assert_eq!(visits(&env).len(), 3, "every user reached");
    host.stop().await;
}

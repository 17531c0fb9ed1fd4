use super::*;
use crate::{Item, Page, db, log, progress, state, time};

type TestResult = Result<(), Box<dyn std::error::Error>>;

const SCHEMA: &str = "CREATE TABLE t (id INTEGER PRIMARY KEY, name TEXT UNIQUE, score REAL, data BLOB);
                      CREATE TABLE audit (item TEXT NOT NULL);";

/// Writes a row, then fails if `fail` is set: the write must not survive.
struct Writer;

impl Job for Writer {
    fn info() -> JobInfo {
        JobInfo::new("writer", "writes", "@daily").read_write_database()
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let n = db::execute("INSERT INTO t (id, name) VALUES ($1, $2)", &[Value::from(1), Value::from("one")])?;
        log::info(&format!("dry run: {}", ctx.dry_run));
        progress::report(1, Some(2));
        if ctx.arg("fail").is_some() {
            return Err(JobError::retryable("failed after writing"));
        }
        Ok(Outcome::changed(n).with_message("wrote one"))
    }
}

/// Reads and writes as the test asks, with a read-only request.
struct Reader;

impl Job for Reader {
    fn info() -> JobInfo {
        JobInfo::new("reader", "reads", "@daily").read_only_database()
    }

    fn run(_ctx: &Context) -> Result<Outcome, JobError> {
        let read = db::query("SELECT count(*) FROM t", &[])?;
        let execute = db::execute("INSERT INTO t (id) VALUES (9)", &[]);
        let sneaky = db::query("INSERT INTO t (id) VALUES (10) RETURNING id", &[]);
        log::info(&format!("{:?} | {execute:?} | {sneaky:?}", read.rows[0].i64(0)));
        Ok(Outcome::unchanged())
    }
}

/// Asks for nothing.
struct Nothing;

impl Job for Nothing {
    fn info() -> JobInfo {
        JobInfo::new("nothing", "asks for nothing", "@daily")
    }

    fn run(_ctx: &Context) -> Result<Outcome, JobError> {
        let e = db::query("SELECT 1", &[]).err().map(|e| e.to_string()).unwrap_or_default();
        let s = state::get("k").err().unwrap_or_default();
        Err(JobError::fatal(format!("{e} | {s}")))
    }
}

#[test]
fn a_single_job_commits_as_it_goes_and_logs() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?;
    assert_eq!(t.run::<Writer>()?, Outcome::changed(1).with_message("wrote one"));
    assert_eq!(t.log_text(), "INFO dry run: false\n");
    assert_eq!(t.logs(), vec![LogRecord { level: Level::Info, message: "dry run: false".into() }]);
    assert_eq!(t.progress(), Some((1, Some(2))));
    assert_eq!(t.value("SELECT name FROM t WHERE id = $1", &[1.into()])?, Value::from("one"));

    // The host does not undo a single-shot job's writes when it then fails.
    t.execute("DELETE FROM t", &[])?;
    let mut t = t.arg("fail", "yes");
    assert_eq!(t.run::<Writer>(), Err(JobError::retryable("failed after writing")));
    assert_eq!(t.value("SELECT count(*) FROM t", &[])?, Value::Integer(1));

    // Running again: the unique id is a constraint error, fatal for the job.
    let err = t.run::<Writer>().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("fatal: constraint violated: UNIQUE constraint failed"), "{err}");
    Ok(())
}

#[test]
fn a_dry_run_keeps_nothing() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?.dry_run();
    assert_eq!(t.run::<Writer>()?.changed, 1);
    assert_eq!(t.log_text(), "INFO dry run: true\n");
    assert_eq!(t.value("SELECT count(*) FROM t", &[])?, Value::Integer(0));
    Ok(())
}

#[test]
fn parameters_values_and_errors_follow_the_host() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?;
    t.within(|_| -> TestResult {
        let n = db::execute(
            "INSERT INTO t (name, id, score, data) VALUES ($2, $1, $3, $4)",
            &[Value::from(7), Value::from("seven"), Value::from(1.5), Value::from(vec![0u8, 1])],
        )?;
        assert_eq!(n, 1);
        let rows = db::query("SELECT id, name, score, data, NULL AS absent FROM t WHERE id = ?1", &[7.into()])?;
        assert_eq!(rows.columns, ["id", "name", "score", "data", "absent"]);
        assert_eq!(
            rows.rows[0].values(),
            [Value::Integer(7), "seven".into(), Value::Real(1.5), Value::Blob(vec![0, 1]), Value::Null]
        );
        let err = db::query("SELECT $2", &[1.into()]).err();
        assert_eq!(err, Some(DbError::Other("the statement uses parameter $2 but 1 value was given".into())));
        let err = db::query("SELECT $1", &[1.into(), 2.into()]).err();
        assert_eq!(err, Some(DbError::Other("2 values given but the statement uses 1 parameter".into())));
        let err = db::query("SELECT :name", &[1.into()]).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err.contains(":name is not supported"), "{err}");
        let err = db::execute("INSERT INTO t (id, name) VALUES (8, 'seven')", &[]).err();
        assert!(matches!(err, Some(DbError::Constraint(_))), "{err:?}");
        let err = db::query("SELEKT 1", &[]).err();
        assert!(matches!(err, Some(DbError::Other(_))), "{err:?}");
        Ok(())
    })?;
    Ok(())
}

#[test]
fn grants_come_from_the_jobs_request_and_can_be_changed() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?;
    t.run::<Reader>()?;
    let log = t.log_text();
    assert!(log.starts_with("INFO Some(0) | Err(Denied(\"this job has read-only database access\"))"), "{log}");
    assert!(log.contains("Err(Denied(\"read-only access: attempt to write a readonly database\"))"), "{log}");
    // The test itself may still write, and the read-only grant did not stick.
    t.execute("INSERT INTO t (id) VALUES (1)", &[])?;
    assert_eq!(t.value("SELECT count(*) FROM t", &[])?, Value::Integer(1));

    let mut t = t.grant_database(DbAccess::ReadWrite);
    t.run::<Reader>()?;
    assert_eq!(t.value("SELECT group_concat(id) FROM t", &[])?, Value::from("1,9,10"));

    let mut t = t.deny_database();
    assert!(matches!(t.run::<Reader>(), Err(JobError::Fatal(m)) if m.contains("this job has no database grant")));

    let err = TestRun::new().run::<Nothing>().err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(
        err,
        "fatal: database access denied: this job has no database grant (set `database = \"read-only\"` or \
         \"read-write\" for it in sundial.toml) | key-value state is not granted to this job (set `state = true` \
         under [jobs.nothing] in sundial.toml)"
    );
    Ok(())
}

/// Users in pages of two; user 3's item writes twice and then fails, user 4
/// is skipped after writing, the rest write one row each. Listing writes too.
struct PerUser;

impl ItemJob for PerUser {
    fn info() -> JobInfo {
        JobInfo::new("per-user", "one row per user", "@daily").read_write_database()
    }

    fn items(_ctx: &Context, cursor: Option<&str>) -> Result<Page, JobError> {
        let after = Page::after_id(cursor)?;
        if after >= 100 {
            return Err(JobError::retryable("the page source is down"));
        }
        db::execute("INSERT INTO audit (item) VALUES ('listing')", &[])?;
        let rows = db::query("SELECT id, name FROM t WHERE id > $1 ORDER BY id LIMIT 2", &[after.into()])?;
        Ok(Page::from_rows(rows, 2))
    }

    fn run_item(_ctx: &Context, item: &Item) -> Result<Outcome, JobError> {
        db::execute("INSERT INTO audit (item) VALUES ($1)", &[item.key.as_str().into()])?;
        match item.get(1).as_str() {
            Some("fails") => {
                db::execute("INSERT INTO audit (item) VALUES ('second write')", &[])?;
                Err(JobError::fatal("item 3 broke"))
            }
            Some("skips") => Err(JobError::skip("nothing to do")),
            _ => Ok(Outcome::changed(1)),
        }
    }
}

const USERS: &str = "INSERT INTO t (id, name) VALUES (1, 'a'), (2, 'b'), (3, 'fails'), (4, 'skips'), (5, 'e');";

fn audit(t: &TestRun) -> Result<Value, DbError> {
    t.value("SELECT group_concat(item, ' ') FROM (SELECT item FROM audit ORDER BY rowid)", &[])
}

#[test]
fn items_run_in_their_own_savepoints() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?.sql(USERS)?;
    let report = t.run_items::<PerUser>()?;
    assert_eq!(report.items.iter().map(|i| i.key.as_str()).collect::<Vec<_>>(), ["1", "2", "3", "4", "5"]);
    assert_eq!((report.total(), report.ok, report.skipped, report.failed, report.changed), (5, 3, 1, 1, 3));
    assert_eq!(report.status(), RunStatus::Partial);
    assert_eq!(report.result("3"), Some(&Err(JobError::fatal("item 3 broke"))));
    assert_eq!(report.result("4"), Some(&Err(JobError::skip("nothing to do"))));
    assert_eq!(report.problems().len(), 2);
    assert_eq!(report.summary(), "5 items: 3 ok, 1 skipped, 1 failed");
    // Listing and the failed and skipped items left nothing behind.
    assert_eq!(audit(&t)?, Value::from("1 2 5"));
    // The host's checkpoint table exists, and a finished run leaves no checkpoint.
    assert_eq!(t.value("SELECT count(*) FROM sundial_item_checkpoints", &[])?, Value::Integer(0));
    Ok(())
}

#[test]
fn item_runs_honour_limit_and_dry_run() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?.sql(USERS)?.limit(3);
    let report = t.run_items::<PerUser>()?;
    assert_eq!((report.total(), report.ok, report.failed), (3, 2, 1));
    assert_eq!(t.last_context().map(|c| c.limit), Some(Some(3)));
    assert_eq!(audit(&t)?, Value::from("1 2"));

    let mut t = TestRun::new().sql(SCHEMA)?.sql(USERS)?.dry_run();
    let report = t.run_items::<PerUser>()?;
    assert_eq!(
        report.summary(),
        "5 items: 3 ok, 1 skipped, 1 failed; dry run: 3 changes would have been made, nothing committed"
    );
    assert_eq!(audit(&t)?, Value::Null);
    assert_eq!(t.value("SELECT count(*) FROM sqlite_master WHERE name = 'sundial_item_checkpoints'", &[])?, 0.into());
    Ok(())
}

#[test]
fn a_failed_listing_stops_the_run_and_keeps_earlier_pages() -> TestResult {
    let mut t =
        TestRun::new().sql(SCHEMA)?.sql(USERS)?.sql("INSERT INTO t (id, name) VALUES (100, 'x'), (101, 'y')")?;
    let err = t.run_items::<PerUser>().err();
    assert_eq!(err, Some(JobError::retryable("listing items: the page source is down")));
    // Pages [1, 2], [3, 4], [5, 100] ran; listing after 100 failed.
    assert_eq!(audit(&t)?, Value::from("1 2 5 100"));
    Ok(())
}

#[test]
fn a_read_only_item_run_reads_in_a_transaction_but_cannot_write() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?.sql(USERS)?.grant_database(DbAccess::ReadOnly);
    let err = t.run_items::<PerUser>().err().map(|e| e.to_string()).unwrap_or_default();
    assert_eq!(err, "fatal: listing items: database access denied: this job has read-only database access");
    assert_eq!(t.value("SELECT count(*) FROM sqlite_master WHERE name = 'sundial_item_checkpoints'", &[])?, 0.into());
    Ok(())
}

#[test]
fn every_item_failing_fails_the_run() -> TestResult {
    let mut t = TestRun::new().sql(SCHEMA)?.sql("INSERT INTO t (id, name) VALUES (3, 'fails')")?;
    assert_eq!(t.run_items::<PerUser>()?.status(), RunStatus::Failed);
    let mut t = TestRun::new().sql(SCHEMA)?;
    assert_eq!(t.run_items::<PerUser>()?.status(), RunStatus::Succeeded);
    Ok(())
}

/// Reports what it sees of time.
struct Clock;

impl Job for Clock {
    fn info() -> JobInfo {
        JobInfo::new("clock", "time", "@daily").timezone("Europe/Berlin")
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let local = time::to_local(ctx.scheduled_for(), &ctx.timezone).map_err(JobError::fatal)?;
        let message = format!(
            "{} {} {:02}:{:02} {} now={}",
            ctx.timezone,
            ctx.run_date()?,
            local.hour,
            local.minute,
            local.offset_seconds,
            time::iso_utc(time::now_ms())
        );
        Ok(Outcome::unchanged().with_message(message))
    }
}

#[test]
fn time_zones_and_the_clock() -> TestResult {
    let message = |t: &mut TestRun| t.run::<Clock>().map(|o| o.message.unwrap_or_default());
    let mut t = TestRun::new().scheduled_for("2026-03-01T23:30:00Z")?;
    assert_eq!(message(&mut t)?, "Europe/Berlin 2026-03-02 00:30 3600 now=2026-03-01T23:30:00Z");
    let mut t = t.timezone("Asia/Tokyo")?.now("2026-03-02T00:00:05Z")?;
    assert_eq!(message(&mut t)?, "Asia/Tokyo 2026-03-02 08:30 32400 now=2026-03-02T00:00:05Z");
    let mut t = t.date("2026-02-01")?;
    assert!(message(&mut t)?.starts_with("Asia/Tokyo 2026-02-01 "));

    assert!(TestRun::new().timezone("Mars/Olympus").is_err());
    assert!(TestRun::new().scheduled_for("yesterday").is_err());
    assert!(TestRun::new().date("2026-02-30").is_err());

    // The host's DST policy: a time in the gap moves to its end.
    let gap = time::LocalDateTime {
        year: 2026,
        month: 3,
        day: 8,
        hour: 2,
        minute: 30,
        second: 0,
        weekday: 0,
        offset_seconds: 0,
    };
    let instant = time::from_local(gap, "America/New_York")?;
    assert_eq!(time::iso_utc(instant), "2026-03-08T07:00:00Z");
    Ok(())
}

/// Counts its runs in the key-value state.
struct Counter;

impl Job for Counter {
    fn info() -> JobInfo {
        JobInfo::new("counter", "counts", "@daily").key_value()
    }

    fn run(_ctx: &Context) -> Result<Outcome, JobError> {
        let n = match state::get("runs").map_err(JobError::fatal)? {
            Some(v) => String::from_utf8_lossy(&v).parse::<u64>().unwrap_or(0),
            None => 0,
        };
        state::set("runs", (n + 1).to_string().as_bytes()).map_err(JobError::fatal)?;
        state::delete("never-set").map_err(JobError::fatal)?;
        let big = state::set("big", &vec![0; MAX_STATE_VALUE + 1]).err().unwrap_or_default();
        Ok(Outcome::changed(n + 1).with_message(big))
    }
}

use backend::MAX_STATE_VALUE;

#[test]
fn key_value_state_persists_between_runs_but_not_dry_runs() -> TestResult {
    let mut t = TestRun::new().state_value("runs", "41");
    let outcome = t.run::<Counter>()?;
    assert_eq!(outcome.changed, 42);
    assert!(outcome.message.unwrap_or_default().contains("values are at most 1 MiB"));
    assert_eq!(t.state("runs"), Some(b"42".to_vec()));
    assert_eq!(t.state("big"), None);
    let mut t = t.dry_run();
    assert_eq!(t.run::<Counter>()?.changed, 43);
    assert_eq!(t.state("runs"), Some(b"42".to_vec()));
    let long = "k".repeat(257);
    let errors = t.within(|_| [state::set("", b"x").err(), state::get(&long).err()]);
    assert_eq!(errors[0].as_deref(), Some("key-value state: the key is empty; keys are 1 to 256 bytes"));
    assert!(errors[1].as_deref().unwrap_or_default().contains("is 257 bytes long; keys are at most 256 bytes"));
    let mut t = TestRun::new().grant_key_value(false);
    assert_eq!(
        t.run::<Counter>(),
        Err(JobError::fatal(
            "key-value state is not granted to this job (set `state = true` under [jobs.counter] in sundial.toml)"
        ))
    );
    Ok(())
}

/// Keeps a per-execution value.
struct Memo;

impl Job for Memo {
    fn info() -> JobInfo {
        JobInfo::new("memo", "memo", "@daily")
    }

    fn run(ctx: &Context) -> Result<Outcome, JobError> {
        let first = crate::per_execution(ctx, || Ok(ctx.scheduled_for()))?;
        let again = crate::per_execution(ctx, || Ok(0i64))?;
        assert_eq!(first, again);
        Ok(Outcome::changed(u64::try_from(*first).unwrap_or(0)))
    }
}

#[test]
fn each_run_is_a_new_execution() -> TestResult {
    let mut t = TestRun::new().scheduled_for_ms(1);
    assert_eq!(t.run::<Memo>()?.changed, 1);
    let first = t.last_context().map(|c| c.execution_id);
    let mut t = t.scheduled_for_ms(2);
    assert_eq!(t.run::<Memo>()?.changed, 2);
    assert_ne!(t.last_context().map(|c| c.execution_id), first);
    let ctx = t.last_context().cloned().ok_or("no context")?;
    assert_eq!((ctx.job_name.as_str(), ctx.timezone.as_str(), ctx.attempt), ("memo", "UTC", 1));
    assert_eq!(ctx.trigger, Trigger::Schedule);
    Ok(())
}

#[test]
fn http_answers_come_from_stubs() -> TestResult {
    let mut t = TestRun::new()
        .http_response("https://api.example.com/", 200, "short")
        .http_response("https://api.example.com/v2/", 200, "long")
        .http_answer(
            Some(Method::Post),
            "https://api.example.com/v2/",
            Err(HttpError::Timeout("api.example.com did not answer in time".into())),
        );
    t.within(|_| -> TestResult {
        assert_eq!(crate::http::get("https://api.example.com/v1/x")?.body, b"short");
        let r = crate::http::get("https://api.example.com/v2/x?y=1")?;
        assert_eq!(
            (r.status, r.body.as_slice(), r.url.as_str()),
            (200, &b"long"[..], "https://api.example.com/v2/x?y=1")
        );
        let post = crate::http::Request::post("https://api.example.com/v2/x", "{}").send();
        assert!(matches!(post, Err(HttpError::Timeout(_))));
        let other = crate::http::get("http://elsewhere.example/");
        assert!(matches!(other, Err(HttpError::Denied(m)) if m.contains("no canned response")));
        Ok(())
    })?;
    assert_eq!(t.http_requests().len(), 4);
    Ok(())
}

#[test]
fn outside_a_run_the_sdk_has_no_host() {
    assert!(
        matches!(db::query("SELECT 1", &[]), Err(DbError::Denied(m)) if m.contains("no sundial_guest::testing::TestRun"))
    );
    assert!(state::get("k").is_err());
    assert!(time::now_ms() > DEFAULT_SCHEDULED_FOR_MS);
    log::info("logged outside a run");
}

/// Names itself in a way the host refuses.
struct BadName;

impl Job for BadName {
    fn info() -> JobInfo {
        JobInfo::new("Bad Name", "", "@daily")
    }

    fn run(_ctx: &Context) -> Result<Outcome, JobError> {
        Ok(Outcome::unchanged())
    }
}

#[test]
fn jobs_the_host_would_not_load_do_not_run() {
    let err = TestRun::new().run::<BadName>().err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.contains("job name \"Bad Name\" is invalid"), "{err}");
}

#[test]
fn fixture_errors_say_so() {
    let err = TestRun::new().sql("CREATE TABLE x (").err().map(|e| e.to_string()).unwrap_or_default();
    assert!(err.starts_with("fixture SQL failed: database error: "), "{err}");
}

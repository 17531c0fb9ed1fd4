//! The `sundial` binary as an operator (or OS cron) uses it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn sundial(env: &Env, args: &[&str]) -> Output {
    sundial_in(env.path(), args)
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// An environment with a sundial.toml in its directory, as a user would have.
fn cli_env(extra: &str) -> Env {
    let env = Env::new(&["cleanup", "faulty"]);
    let config = format!(
        "database = \"sqlite://sundial.db\"\njobs_dir = \"jobs\"\n[jobs.cleanup]\ndatabase = \"read-write\"\n{extra}"
    );
    std::fs::write(env.path().join("sundial.toml"), config).unwrap();
    env
}

#[test]
fn run_exits_zero_on_success_and_one_on_failure() {
    let env = cli_env("");
    let demo = sundial(&env, &["demo", "--users", "50"]);
    assert!(demo.status.success(), "{}", stderr(&demo));
    let out = sundial(&env, &["run", "cleanup"]);
    assert_eq!(out.status.code(), Some(0), "{}{}", stdout(&out), stderr(&out));
    assert!(stdout(&out).starts_with("cleanup: succeeded"), "{}", stdout(&out));

    let out = sundial(&env, &["run", "faulty", "--arg", "mode=fatal"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("the fixture failed on purpose"), "{}", stderr(&out));
    let out = sundial(&env, &["run", "faulty", "--arg", "mode=skip"]);
    assert_eq!(out.status.code(), Some(0), "a precondition skip is not a failure");
}

#[test]
fn operator_mistakes_get_clear_messages_and_non_zero_exits() {
    let env = cli_env("");
    let out = sundial(&env, &["run", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown job \"nope\""), "{}", stderr(&out));

    let out = sundial(&env, &["--jobs-dir", "missing", "run", "cleanup"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("jobs directory missing does not exist"), "{}", stderr(&out));

    let out = sundial(&env, &["--db", "sqlite:///nonexistent-dir/x/sundial.db", "jobs"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("cannot open database"), "{}", stderr(&out));

    let out = sundial(&env, &["history", "nope"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("unknown job"), "{}", stderr(&out));

    std::fs::write(env.path().join("bad.toml"), "[jobs.cleanup]\nschedule = \"0 25 * * *\"\n").unwrap();
    let out = sundial(&env, &["--config", "bad.toml", "jobs"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("hour: 25 is out of range 0-23"), "{}", stderr(&out));
}

#[test]
fn schedule_next_prints_utc_instants_only() {
    let env = cli_env("");
    let out = sundial(
        &env,
        &[
            "schedule",
            "next",
            "30 2 * * *",
            "--tz",
            "America/New_York",
            "--after",
            "2026-03-07T00:00:00Z",
            "--count",
            "3",
        ],
    );
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(stdout(&out), "2026-03-07T07:30:00Z\n2026-03-08T07:00:00Z\n2026-03-09T06:30:00Z\n");

    let out = sundial(&env, &["schedule", "next", "*/0 * * * *"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("minute: step must be at least 1"), "{}", stderr(&out));
    let out = sundial(&env, &["schedule", "next", "* * * * *", "--tz", "Mars/Olympus"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("Mars/Olympus"), "{}", stderr(&out));
}

/// `serve` fires on real time: a every-second schedule gives a scheduled
/// execution within a couple of seconds; `run` adds a manual one; `history`
/// shows both and `jobs` lists the job.
#[test]
fn serve_fires_on_schedule_and_history_shows_both_triggers() {
    let env = cli_env("schedule = \"* * * * * *\"");
    assert!(sundial(&env, &["demo", "--users", "20"]).status.success());
    let mut serve = sundial_command(env.path()).args(["serve", "--no-http"]).spawn().unwrap();
    let start = Instant::now();
    let history = loop {
        let h = sundial(&env, &["history", "cleanup"]);
        if h.status.success() && stdout(&h).contains("schedule") && stdout(&h).contains("succeeded") {
            break stdout(&h);
        }
        assert!(start.elapsed() < Duration::from_secs(30), "no scheduled execution: {}", stderr(&h));
        std::thread::sleep(Duration::from_millis(200));
    };
    unsafe_kill(serve.id());
    let status = serve.wait().unwrap();
    assert!(status.success(), "serve stops cleanly on SIGINT: {status:?}");
    assert!(history.lines().next().unwrap().starts_with("ID"));

    let out = sundial(&env, &["run", "cleanup"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let history = stdout(&sundial(&env, &["history", "cleanup"]));
    assert!(history.contains(" manual ") && history.contains(" schedule "), "{history}");

    let jobs = stdout(&sundial(&env, &["jobs"]));
    assert!(jobs.lines().any(|l| l.starts_with("cleanup") && l.contains("* * * * * *") && l.contains("yes")), "{jobs}");
}

fn unsafe_kill(pid: u32) {
    let status = Command::new("kill").args(["-INT", &pid.to_string()]).status().unwrap();
    assert!(status.success());
}

#[test]
fn deploy_validates_and_installs_into_the_jobs_directory() {
    let env = cli_env("");
    let out = sundial(&env, &["deploy", wasm("slow-items").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = stdout(&out);
    assert!(line.starts_with("deployed slow-items v1 ("), "{line}");
    assert!(line.contains(&digest(&wasm("slow-items"))), "{line}");
    let installed = env.path().join("jobs/slow-items.wasm");
    assert_eq!(std::fs::read(installed).unwrap(), std::fs::read(wasm("slow-items")).unwrap());
    let jobs = sundial(&env, &["jobs"]);
    assert!(stdout(&jobs).contains("slow-items"), "{}", stdout(&jobs));

    std::fs::write(env.path().join("bad.wasm"), b"\0asm\x01\0\0\0").unwrap();
    let out = sundial(&env, &["deploy", "bad.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("bad.wasm was not deployed: not a WebAssembly component"), "{}", stderr(&out));
    assert!(!env.path().join("jobs/bad.wasm").exists());
    let out = sundial(&env, &["deploy", "missing.wasm"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot read missing.wasm"), "{}", stderr(&out));
}

/// `sundial rollback`: 0 and the versions on success, 2 with the reason when
/// there is nothing to roll back to.
#[test]
fn rollback_reports_the_version_or_why_not() {
    let env = cli_env("");
    let jobs = env.jobs_dir();
    let run = |args: &[&str]| sundial(&env, args);
    let out = run(&["rollback", "cleanup"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("no earlier version"), "{out:?}");
    // A second version through deploy, then back to the first.
    let v2 = crate::fixtures::variant(&std::fs::read(wasm("cleanup")).unwrap(), "v2");
    let v2_file = env.path().join("cleanup-v2.wasm");
    std::fs::write(&v2_file, &v2).unwrap();
    let out = run(&["deploy", v2_file.to_str().unwrap()]);
    assert!(out.status.success(), "{out:?}");
    let out = run(&["rollback", "cleanup"]);
    assert!(out.status.success(), "{out:?}");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.starts_with("rolled back cleanup from v2 to the code of v1"), "{stdout}");
    assert!(stdout.trim_end().ends_with("live as v3"), "{stdout}");
    assert_eq!(std::fs::read(jobs.join("cleanup.wasm")).unwrap(), std::fs::read(wasm("cleanup")).unwrap());
    let out = run(&["rollback", "cleanup", "--to", "zzz"]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
}

/// `--log-format json`: one JSON object per log line, and the guest's own log
/// calls carry the execution span (job, execution, trigger, attempt, code).
#[test]
fn json_logs_carry_the_execution_span() {
    let env = cli_env("");
    let out = sundial_command(env.path())
        .args(["--log-format", "json", "run", "faulty", "--arg", "mode=fatal"])
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&out.stderr)
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
        .collect();
    let guest = lines
        .iter()
        .find(|l| {
            l["target"] == "sundial::guest" && l["fields"]["message"].as_str().is_some_and(|m| m.contains("mode fatal"))
        })
        .unwrap_or_else(|| panic!("no guest log line in {lines:?}"));
    let span = &guest["span"];
    assert_eq!(span["name"], "execution", "{guest}");
    assert_eq!(span["job"], "faulty");
    assert_eq!(span["trigger"], "manual");
    assert_eq!(span["attempt"], 1);
    assert!(span["execution"].as_i64().unwrap() > 0);
    assert_eq!(span["code"].as_str().unwrap().len(), 12);
}

/// `--json` on `jobs` and `history`: one JSON document on stdout for scripts.
#[test]
fn jobs_and_history_speak_json_for_scripts() {
    let env = cli_env("");
    assert!(sundial(&env, &["demo", "--users", "10"]).status.success());
    assert!(sundial(&env, &["run", "cleanup"]).status.success());
    let out = sundial(&env, &["jobs", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let jobs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let names: Vec<&str> = jobs.as_array().unwrap().iter().map(|j| j["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["cleanup", "faulty"]);
    assert_eq!(jobs[0]["component_version"], 1);
    let out = sundial(&env, &["history", "cleanup", "--json"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let runs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(runs.as_array().unwrap().len(), 1);
    assert_eq!(runs[0]["status"], "succeeded");
    assert_eq!(runs[0]["trigger"], "manual");
}

/// `jobs --verbose` shows each job's grants and limits next to what it asks for.
#[test]
fn jobs_verbose_shows_grants_and_limits() {
    let env = cli_env("[jobs.faulty]\ntimeout_secs = 9\nmemory_mib = 48\nfuel = 7000000\nhttp = [\"api.example.com\"]");
    let out = sundial(&env, &["jobs", "--verbose"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let row = |job: &str| text.lines().filter(|l| l.starts_with(job)).nth(1).unwrap_or_default().to_string();
    let cleanup = row("cleanup");
    assert!(cleanup.contains("read-write") && cleanup.contains("database:read-write"), "{text}");
    let faulty = row("faulty");
    for want in ["none", "api.example.com", "9s", "48 MiB", "7000000"] {
        assert!(faulty.contains(want), "{want:?} missing from {faulty:?}\n{text}");
    }
    assert!(
        faulty.contains("granted http") || faulty.contains("not requested") || faulty.contains("api.example.com"),
        "{faulty}"
    );
}

/// `sundial run` reports progress on stderr (plain lines when stderr is not
/// a terminal, as under cron) and, with `--json`, prints one JSON outcome.
#[test]
fn run_reports_progress_and_speaks_json() {
    let env = Env::new(&["slow-items"]);
    let config = "database = \"sqlite://sundial.db\"\njobs_dir = \"jobs\"\n\
                  [jobs.slow-items]\ndatabase = \"read-write\"\nargs = { delay_ms = \"40\" }\n";
    std::fs::write(env.path().join("sundial.toml"), config).unwrap();
    crate::fixtures::users_and_visits(&env.path().join("sundial.db"), 60);
    let out = sundial(&env, &["run", "slow-items", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let line = stderr(&out).lines().find(|l| l.starts_with("slow-items: progress: ")).map(str::to_string);
    let line = line.unwrap_or_else(|| panic!("no progress line in {:?}", stderr(&out)));
    assert!(line.contains("/60 (") && line.contains("items/s"), "{line}");
    let v: serde_json::Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    assert_eq!(v["status"], "succeeded");
    assert_eq!(v["items"]["ok"], 60);
    assert!(v["execution_id"].as_i64().unwrap() > 0);
}

/// `sundial jobs` shows an item-local job's zone as its items' own and its
/// next fire in those zones, not in the job's `timezone`.
#[test]
fn jobs_shows_an_item_local_job_firing_in_its_items_zones() {
    use sundial::schedule::{ItemSchedule, Schedule};
    let env = Env::new(&["local-visits"]);
    let config = "database = \"sqlite://sundial.db\"\njobs_dir = \"jobs\"\n[jobs.local-visits]\n\
                  database = \"read-write\"\nitem_zones = [\"Asia/Tokyo\", \"America/New_York\"]\n";
    std::fs::write(env.path().join("sundial.toml"), config).unwrap();
    let zones = ItemSchedule::new(
        &Schedule::parse("0 2 * * *", "UTC").unwrap(),
        ["Asia/Tokyo".parse().unwrap(), "America/New_York".parse().unwrap()],
    );
    let expect = |at| zones.next_after(at).unwrap().format("%Y-%m-%d %H:%M:%S").to_string();
    let before = expect(chrono::Utc::now());
    let out = sundial(&env, &["jobs"]);
    let after = expect(chrono::Utc::now());
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    let line = text.lines().find(|l| l.starts_with("local-visits")).unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("items' own"), "{line}");
    assert!(line.contains(&before) || line.contains(&after), "next fire in Tokyo or New York: {line}");
}

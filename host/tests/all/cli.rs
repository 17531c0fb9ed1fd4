//! The `sundial` binary as an operator (or OS cron) uses it.

use std::process::{Command, Output};
use std::time::{Duration, Instant};

use crate::helpers::*;

fn sundial(env: &Env, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sundial"))
        .args(args)
        .current_dir(env.path())
        .env_remove("SUNDIAL_DATABASE_URL")
        .env_remove("SUNDIAL_JOBS_DIR")
        .env_remove("SUNDIAL_CONFIG")
        .env("RUST_LOG", "warn")
        .output()
        .unwrap()
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
    let mut serve = Command::new(env!("CARGO_BIN_EXE_sundial"))
        .args(["serve", "--no-http"])
        .current_dir(env.path())
        .env("RUST_LOG", "warn")
        .spawn()
        .unwrap();
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

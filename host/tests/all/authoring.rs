//! A job author's loop, as the README and docs/writing-jobs.md tell it:
//! `sundial new`, `sundial build`, `sundial run --component --dry-run`, then
//! the file dropped into a running host's jobs directory.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Instant;

use sundial::model::{ExecutionStatus, RunArgs};

use crate::helpers::*;

fn sundial(cwd: &Path, args: &[&str]) -> Output {
    sundial_in(cwd, args)
}

fn ok(what: &str, o: &Output) -> String {
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "{what} failed ({:?}):\n{out}\n{}", o.status, String::from_utf8_lossy(&o.stderr));
    out
}

/// `cargo test` in a scaffolded crate, sharing one target directory between runs.
fn cargo_test(dir: &Path) -> String {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let o = Command::new(cargo)
        .args(["test", "--quiet"])
        .current_dir(dir)
        .env("CARGO_TARGET_DIR", root().join("target/scaffold-tests"))
        .output()
        .unwrap();
    let out = String::from_utf8_lossy(&o.stdout).into_owned();
    assert!(o.status.success(), "cargo test in {}:\n{out}\n{}", dir.display(), String::from_utf8_lossy(&o.stderr));
    out
}

#[actix_rt::test]
async fn a_new_job_is_scaffolded_built_tried_and_deployed_to_a_running_host() {
    let env = Env::new(&[]).config("[jobs.tally]\ndatabase = \"read-write\"");
    let work = env.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let mut times = Vec::new();
    let mut step = |name: &'static str, started: Instant| times.push((name, started.elapsed()));

    let t = Instant::now();
    let out = ok("new", &sundial(&work, &["new", "tally"]));
    step("new", t);
    assert!(out.contains("created tally/") && out.contains("sundial build tally"), "{out}");
    assert!(work.join("tally/src/lib.rs").is_file() && work.join("tally/README.md").is_file());

    // The scaffold's own tests pass with a plain `cargo test` (host target,
    // in-memory database), before any wasm is built.
    let t = Instant::now();
    let out = cargo_test(&work.join("tally"));
    step("cargo test", t);
    assert!(out.contains("test result: ok. 2 passed"), "{out}");

    // The build shares the workspace's wasm target directory, where the
    // standard library for wasm32-wasip2 is already built.
    let t = Instant::now();
    let target = root().join("target/wasm");
    let out = ok("build", &sundial(&work, &["build", "tally", "--target-dir", target.to_str().unwrap()]));
    step("build", t);
    let file = out.lines().next().unwrap().trim().to_string();
    assert!(file.ends_with("tally.wasm") && Path::new(&file).is_file(), "{out}");
    assert!(out.contains("bytes, sha256 ") && out.contains("job \"tally\" (single-shot)"), "{out}");
    assert!(out.contains("asks for: database:read-write"), "{out}");

    // Tried against a demo database: the dry run commits nothing, the real run a row.
    ok("demo", &sundial(&work, &["demo", "--db", "sqlite://app.db", "--users", "10"]));
    let t = Instant::now();
    let o = sundial(&work, &["run", "--component", &file, "--db", "sqlite://app.db", "--dry-run"]);
    step("run --dry-run", t);
    let out = ok("dry run", &o);
    assert!(out.starts_with("tally: succeeded"), "{out}");
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("INFO wrote \"hello\"") && err.contains("nothing was committed"), "{err}");
    let app = rusqlite::Connection::open(work.join("app.db")).unwrap();
    let tables: i64 =
        app.query_row("SELECT count(*) FROM sqlite_master WHERE name = 'tally'", [], |r| r.get(0)).unwrap();
    assert_eq!(tables, 0, "a dry run leaves the database as it was");
    let out =
        ok("run", &sundial(&work, &["run", "--component", &file, "--db", "sqlite://app.db", "--arg", "greeting=hi"]));
    assert!(out.contains("1 row written"), "{out}");
    let greeting: String = app.query_row("SELECT greeting FROM tally", [], |r| r.get(0)).unwrap();
    assert_eq!(greeting, "hi");
    assert!(!work.join("sundial.db").exists(), "a component run keeps no records next to the author's files");

    // The per-item scaffold works too: items from the demo users, one row each.
    ok("new --kind items", &sundial(&work, &["new", "seen-users", "--kind", "items"]));
    let out = cargo_test(&work.join("seen-users"));
    assert!(out.contains("test result: ok. 1 passed"), "{out}");
    let out = ok("build items", &sundial(&work, &["build", "seen-users", "--target-dir", target.to_str().unwrap()]));
    assert!(out.contains("job \"seen-users\" (per-item)"), "{out}");
    let items_file = out.lines().next().unwrap().trim().to_string();
    let out = ok(
        "run items",
        &sundial(&work, &["run", "--component", &items_file, "--db", "sqlite://app.db", "--limit", "4"]),
    );
    assert!(out.contains("items: 4 total, 4 ok, 0 skipped, 0 failed"), "{out}");
    let seen: i64 = app.query_row("SELECT count(*) FROM seen_users", [], |r| r.get(0)).unwrap();
    assert_eq!(seen, 4);

    // Deployed: dropped into a running host's jobs directory, listed, run.
    let host = env.host(true).await;
    let t = Instant::now();
    std::fs::copy(&file, env.jobs_dir().join("tally.wasm")).unwrap();
    let job = eventually("the new job is listed", || async {
        host.store.list_jobs().await.unwrap().into_iter().find(|j| j.name == "tally" && j.next_run_at.is_some())
    })
    .await;
    step("deploy until listed", t);
    assert_eq!(job.component_version, Some(1));
    let report = host.run_now("tally", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded, "{report:?}");
    host.stop().await;
    let rows: i64 = env.app().query_row("SELECT count(*) FROM tally", [], |r| r.get(0)).unwrap();
    assert_eq!(rows, 1);
    for (name, took) in times {
        println!("{name}: {took:.1?}");
    }
}

#[test]
fn authors_mistakes_get_clear_messages() {
    let dir = tempfile::tempdir().unwrap();
    let o = sundial(dir.path(), &["new", "Bad_Name"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not a usable job name"));

    let o = sundial(dir.path(), &["build", "."]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("takes a job crate's directory"));

    // A crate that does not compile: cargo's own messages, then what failed.
    ok("new broken", &sundial(dir.path(), &["new", "broken"]));
    std::fs::write(dir.path().join("broken/src/lib.rs"), "this is not Rust").unwrap();
    let target = root().join("target/wasm");
    let o = sundial(dir.path(), &["build", "broken", "--target-dir", target.to_str().unwrap()]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(1), "{err}");
    assert!(err.contains("error: expected") && err.contains("cargo could not build broken"), "{err}");

    let o = sundial(dir.path(), &["run"]);
    assert_eq!(o.status.code(), Some(2), "a job name or --component is required");

    std::fs::write(dir.path().join("junk.wasm"), b"not wasm").unwrap();
    let o = sundial(dir.path(), &["run", "--component", "junk.wasm"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("junk.wasm cannot run"), "{o:?}");

    // A job that asks for the database, run with none named.
    let o = sundial(dir.path(), &["run", "--component", wasm("cleanup").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("pass --db sqlite://FILE"), "{o:?}");
}

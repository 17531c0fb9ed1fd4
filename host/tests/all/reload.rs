//! Hot reload: the running host watches its jobs directory. New and changed
//! components go live without a restart; a bad file never takes a working job
//! down; an execution in flight finishes on the version it started with.

use std::path::Path;
use std::time::Duration;

use tokio::sync::broadcast::Receiver;

use sundial::actors::loader::GetSupervisor;
use sundial::events::Event;
use sundial::host::Host;
use sundial::model::{ExecutionStatus, JobRecord, RunArgs};

use crate::fixtures::variant;
use crate::helpers::*;

/// Writes through a temporary name and a rename, as deploy tools do.
fn install(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(tmp, dir.join(name)).unwrap();
}

async fn job(host: &Host, name: &str) -> Option<JobRecord> {
    host.store.get_job(name).await.unwrap()
}

/// Waits (up to 30 s) for the `job_reloaded` event of `digest`'s version of
/// `job`: its version number and how long the host says the reload took.
async fn reloaded(events: &mut Receiver<Event>, name: &str, digest: &str) -> (i64, Duration) {
    let wait = async {
        loop {
            match events.recv().await {
                Ok(Event::JobReloaded { job, version, digest: live, took_us }) if job == name && live == digest => {
                    return (version, Duration::from_micros(took_us));
                }
                Ok(_) => {}
                Err(e) => panic!("events: {e}"),
            }
        }
    };
    actix_rt::time::timeout(Duration::from_secs(30), wait).await.expect("no job_reloaded event")
}

/// Waits until the stored job satisfies `f`.
async fn job_until(host: &Host, name: &str, what: &str, f: impl Fn(&JobRecord) -> bool) -> JobRecord {
    eventually(what, || async { job(host, name).await.filter(|j| f(j)) }).await
}

#[actix_rt::test]
async fn bad_files_leave_the_running_version_and_say_why() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(true).await;
    let v1 = job(&host, "cleanup").await.unwrap();
    let good = std::fs::read(wasm("cleanup")).unwrap();
    let file = env.jobs_dir().join("cleanup.wasm");

    // Fixtures built from test-jobs/: real components the loader must refuse.
    let fixture = |name: &str| std::fs::read(wasm(name)).unwrap();
    let cases: [(&str, Vec<u8>, &str); 8] = [
        ("garbage", b"this is not wasm at all".to_vec(), "no WebAssembly header"),
        ("empty", Vec::new(), "the file is empty"),
        ("truncated", good[..good.len() / 2].to_vec(), "component does not compile"),
        ("core module", b"\0asm\x01\0\0\0".to_vec(), "this is a core WebAssembly module"),
        ("another world", fixture("foreign-world"), "do not match the sundial:job@0.1.0 world: no export `describe`"),
        ("missing export", fixture("missing-export"), "do not match the sundial:job@0.1.0 world: no export `items`"),
        ("wrong signature", fixture("wrong-signature"), "type-checking export func `describe`"),
        (
            "extra import",
            fixture("extra-import"),
            "does not target the sundial:job@0.1.0 world: component imports instance `acme:evil/rootkit@1.0.0`",
        ),
    ];
    for (what, bytes, message) in cases {
        std::fs::write(&file, &bytes).unwrap();
        let j =
            job_until(&host, "cleanup", what, |j| j.load_error.as_deref().is_some_and(|e| e.contains(message))).await;
        assert_eq!(j.component_digest, v1.component_digest, "{what}: still v1");
        assert_eq!(j.component_version, Some(1));
        let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
        assert_eq!(report.status, ExecutionStatus::Succeeded, "{what}: v1 keeps working");
    }
    let runs = host.store.list_executions("cleanup", 10, None).await.unwrap();
    assert!(runs.iter().all(|e| e.component_digest == v1.component_digest));

    // The good file again: the error clears, same version (same bytes).
    install(&env.jobs_dir(), "cleanup.wasm", &good);
    let j = job_until(&host, "cleanup", "the error to clear", |j| j.load_error.is_none()).await;
    assert_eq!(j.component_version, Some(1));

    // An oversized file is refused before it is read.
    let big = std::fs::File::create(&file).unwrap();
    big.set_len(65 * 1024 * 1024).unwrap();
    drop(big);
    job_until(&host, "cleanup", "the size error", |j| {
        j.load_error.as_deref().is_some_and(|e| e.contains("larger than the limit"))
    })
    .await;
    host.stop().await;
}

#[actix_rt::test]
async fn a_changed_file_goes_live_and_a_new_file_is_scheduled() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(true).await;
    let mut events = host.subscribe();
    let v2 = variant(&std::fs::read(wasm("cleanup")).unwrap(), "v2");
    let renamed = std::time::Instant::now();
    install(&env.jobs_dir(), "cleanup.wasm", &v2);
    let j = job_until(&host, "cleanup", "v2", |j| j.component_version == Some(2)).await;
    assert_eq!(j.component_digest.as_deref(), Some(sundial::runtime::digest(&v2).as_str()));
    // Announced with the version, and measured from the rename's event (the
    // compile is in it; a rename is complete, so no quiet period is).
    let (version, took) = reloaded(&mut events, "cleanup", &sundial::runtime::digest(&v2)).await;
    let seen = renamed.elapsed();
    assert_eq!(version, 2);
    assert!(!took.is_zero() && took <= seen, "the reload took {took:?}, {seen:?} after the rename began");
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    let e = &host.store.list_executions("cleanup", 1, None).await.unwrap()[0];
    assert_eq!((e.component_version, e.component_digest.as_deref()), (Some(2), j.component_digest.as_deref()));

    // A job that was not there: registered, scheduled, runnable.
    std::fs::copy(wasm("faulty"), env.jobs_dir().join("faulty.wasm")).unwrap();
    let f = job_until(&host, "faulty", "the new job", |j| j.next_run_at.is_some()).await;
    assert_eq!(f.component_version, Some(1));
    assert!(host.loader.send(GetSupervisor { name: "faulty".into() }).await.unwrap().is_some());
    let report = host.run_now("faulty", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);

    // Written slowly in pieces: whatever the host sees meanwhile, the end
    // state is the complete file.
    let v3 = variant(&v2, "v3");
    let file = env.jobs_dir().join("cleanup.wasm");
    std::fs::write(&file, &v3[..v3.len() / 3]).unwrap();
    for piece in [&v3[v3.len() / 3..2 * v3.len() / 3], &v3[2 * v3.len() / 3..]] {
        actix_rt::time::sleep(Duration::from_millis(120)).await;
        use std::io::Write as _;
        std::fs::OpenOptions::new().append(true).open(&file).unwrap().write_all(piece).unwrap();
    }
    let j = job_until(&host, "cleanup", "v3", |j| {
        j.component_digest.as_deref() == Some(sundial::runtime::digest(&v3).as_str()) && j.load_error.is_none()
    })
    .await;
    assert_eq!(j.component_version, Some(3));
    // Measured from the last write, so the quiet period after it is in the figure.
    let (version, took) = reloaded(&mut events, "cleanup", &sundial::runtime::digest(&v3)).await;
    assert_eq!(version, 3);
    assert!(
        took >= sundial::actors::loader::DEBOUNCE,
        "a file written in place reloaded {took:?} after its last write"
    );
    let text = host.metrics.render(&[], true, "test");
    assert!(
        text.lines().any(|l| l.starts_with("sundial_reload_seconds_count ") && l != "sundial_reload_seconds_count 0"),
        "{text}"
    );
    host.stop().await;
}

#[actix_rt::test]
async fn removed_files_and_symlinks_never_take_a_job_down() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let outside = env.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    std::fs::copy(wasm("faulty"), outside.join("faulty.wasm")).unwrap();
    let host = env.host(true).await;

    std::fs::remove_file(env.jobs_dir().join("cleanup.wasm")).unwrap();
    let j = job_until(&host, "cleanup", "the removal to be noted", |j| j.load_error.is_some()).await;
    assert!(j.load_error.unwrap().contains("was removed; the last loaded version"));
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded, "the last loaded version keeps running");

    // A symlink to a component outside the directory is not followed.
    std::os::unix::fs::symlink(outside.join("faulty.wasm"), env.jobs_dir().join("faulty.wasm")).unwrap();
    actix_rt::time::sleep(Duration::from_millis(800)).await;
    assert!(job(&host, "faulty").await.is_none(), "nothing outside the jobs directory is loaded");

    // The file comes back (under another name): the job lives there now.
    std::fs::copy(wasm("cleanup"), env.jobs_dir().join("cleanup-renamed.wasm")).unwrap();
    let j = job_until(&host, "cleanup", "the file to return", |j| j.load_error.is_none()).await;
    assert_eq!(j.component_version, Some(1));
    host.stop().await;
}

/// A long item run started on v1 finishes on v1 while v2 arrives; the next
/// run uses v2; no item is lost or done twice.
#[actix_rt::test]
async fn an_execution_in_flight_finishes_on_its_version() {
    let env =
        Env::new(&["slow-items"]).config("[jobs.slow-items]\ndatabase = \"read-write\"\nargs = { delay_ms = \"15\" }");
    env.seed_demo(60, chrono::Utc::now()).await;
    env.app().execute_batch("CREATE TABLE visits (user_id INTEGER, execution_id INTEGER);").unwrap();
    let host = env.host(true).await;
    let started = host.start_run("slow-items", RunArgs::default()).await.unwrap();
    actix_rt::time::sleep(Duration::from_millis(200)).await;
    let v2 = variant(&std::fs::read(wasm("slow-items")).unwrap(), "v2");
    install(&env.jobs_dir(), "slow_items.wasm", &v2);
    // Live once the supervisor has it.
    eventually("v2 live", || async {
        let s = host.job_snapshot("slow-items").await.unwrap();
        (s.job.component_version == Some(2)).then_some(())
    })
    .await;
    let first = started.done.await.unwrap();
    assert_eq!(first.status, ExecutionStatus::Succeeded);
    assert_eq!(first.items_ok, 60);
    let second = host.run_now("slow-items", RunArgs { limit: Some(5), ..RunArgs::default() }).await.unwrap();
    assert_eq!(second.status, ExecutionStatus::Succeeded);

    let runs = host.store.list_executions("slow-items", 10, None).await.unwrap();
    assert_eq!(runs.len(), 2);
    assert_eq!((runs[1].id, runs[1].component_version), (started.id, Some(1)), "the run in flight stayed on v1");
    assert_eq!(runs[0].component_version, Some(2), "the next run is on v2");
    let conn = env.app();
    let per_user: Vec<i64> = {
        let mut st = conn.prepare("SELECT COUNT(*) FROM visits WHERE execution_id = ?1 GROUP BY user_id").unwrap();
        st.query_map([started.id.0], |r| r.get(0)).unwrap().map(Result::unwrap).collect()
    };
    assert_eq!(per_user.len(), 60);
    assert!(per_user.iter().all(|n| *n == 1), "each user exactly once in the first run");
    host.stop().await;
}

/// Compiled components are cached on disk under the host's key; an entry the
/// host did not write is never loaded (it is compiled again and replaced).
#[actix_rt::test]
async fn compiled_components_are_cached_and_foreign_entries_ignored() {
    use std::os::unix::fs::PermissionsExt as _;
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(false).await;
    host.stop().await;
    let cache = env.path().join(".sundial-cache");
    let key = cache.join("key");
    assert_eq!(std::fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600, "the key is private");
    // Entries are named by the BLAKE3 of the bytes; they keep the sha256.
    let digest = digest(&wasm("cleanup"));
    let content_key = blake3::hash(&std::fs::read(wasm("cleanup")).unwrap()).to_hex().to_string();
    let entry = |ext: &str| {
        let found: Vec<_> = std::fs::read_dir(&cache)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(&content_key))
            .filter(|p| p.extension().is_some_and(|e| e == ext))
            .collect();
        assert_eq!(found.len(), 1, "one {ext} file for the component: {found:?}");
        found[0].clone()
    };
    let (code, meta) = (entry("cwasm"), entry("meta"));
    let written = (std::fs::read(&code).unwrap(), std::fs::read(&meta).unwrap());
    let entry_now = || (std::fs::read(&code).unwrap(), std::fs::read(&meta).unwrap());

    // Someone else's code under the right name: ignored, rewritten.
    let mut forged = written.0.clone();
    let last = forged.len() - 1;
    forged[last] ^= 0xff;
    std::fs::write(&code, &forged).unwrap();
    // Entries of an earlier format are removed, never read.
    let old = [cache.join(format!("{digest}-0.v3.cwasm")), cache.join(format!("{digest}-0.v3.meta"))];
    for f in &old {
        std::fs::write(f, b"old").unwrap();
    }
    let host = env.host(false).await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    host.stop().await;
    assert!(entry_now() == written, "the forged code was replaced by the host's own");
    assert!(old.iter().all(|f| !f.exists()), "entries of the earlier format were removed");

    // The entry keeps what `describe` returned, so a cached load does not
    // call it again; a forged record is refused like forged code.
    let described = std::str::from_utf8(&written.1[32..]).unwrap();
    assert!(described.contains("\"name\":\"cleanup\""), "{described}");
    assert!(described.contains(&format!("\"digest\":\"{digest}\"")), "{described}");
    let mut forged = written.1.clone();
    let at = 32 + described.find("cleanup").unwrap();
    forged[at] = b'X';
    std::fs::write(&meta, &forged).unwrap();
    let host = env.host(false).await;
    assert!(host.job_snapshot("cleanup").await.is_ok(), "the job is known by its real name");
    host.stop().await;
    assert!(entry_now() == written, "the forged record was replaced by the host's own");

    // A code file replaced after its entry was written (another, valid
    // host's entry for other code, say) is refused too: the MAC covers the code.
    std::fs::write(&code, std::fs::read(wasm("cleanup")).unwrap()).unwrap();
    let host = env.host(false).await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    host.stop().await;
    assert!(entry_now() == written, "the replaced code was rewritten");

    // A sound entry is used as it is (mapped from the file, not compiled
    // and written again), and the job runs from it.
    let modified = |p: &std::path::Path| std::fs::metadata(p).unwrap().modified().unwrap();
    let before = (modified(&code), modified(&meta));
    let host = env.host(false).await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    let job = host.store.get_job("cleanup").await.unwrap().unwrap();
    assert_eq!(job.component_digest.as_deref(), Some(digest.as_str()), "a cached load reports the file's sha256");
    host.stop().await;
    assert_eq!((modified(&code), modified(&meta)), before, "the cached entry was loaded, not rewritten");

    // A cache that cannot be used (a file where the directory should be) is
    // not an error: jobs are compiled as without one.
    std::fs::remove_dir_all(&cache).unwrap();
    std::fs::write(&cache, b"not a directory").unwrap();
    let host = env.host(false).await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    host.stop().await;
}

/// Rollback pins an earlier version from the bytes the store keeps, without
/// its file: live for the next execution, written back into the jobs
/// directory, recorded as a new version with the old digest. Bad targets are
/// refused with the reason; only the last versions' code is kept.
#[actix_rt::test]
async fn rollback_puts_an_earlier_version_live_without_its_file() {
    use sundial::host::{HostError, RollbackError};
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(true).await;
    let v1 = std::fs::read(wasm("cleanup")).unwrap();
    let d1 = sundial::runtime::digest(&v1);
    let file = env.jobs_dir().join("cleanup.wasm");
    let v2 = variant(&v1, "v2");
    install(&env.jobs_dir(), "cleanup.wasm", &v2);
    job_until(&host, "cleanup", "v2", |j| j.component_version == Some(2)).await;

    // No target: the newest earlier version with other code (v1, whose file is gone).
    let done = host.rollback("cleanup", None).await.unwrap();
    assert_eq!((done.from, done.to.version), (2, 1));
    assert_eq!(done.job.component_version, Some(3));
    assert_eq!(done.job.component_digest.as_deref(), Some(d1.as_str()));
    assert_eq!(std::fs::read(&file).unwrap(), v1, "the jobs directory holds the live code");
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    let e = &host.store.list_executions("cleanup", 1, None).await.unwrap()[0];
    assert_eq!((e.component_version, e.component_digest.as_deref()), (Some(3), Some(d1.as_str())));
    // The watcher sees the rewritten file and changes nothing.
    actix_rt::time::sleep(Duration::from_millis(400)).await;
    let j = job(&host, "cleanup").await.unwrap();
    assert_eq!((j.component_version, j.load_error.as_deref()), (Some(3), None));

    // By version and by digest prefix.
    let done = host.rollback("cleanup", Some("v2")).await.unwrap();
    assert_eq!(done.job.component_version, Some(4));
    assert_eq!(std::fs::read(&file).unwrap(), v2);
    let done = host.rollback("cleanup", Some(&d1[..10])).await.unwrap();
    assert_eq!((done.to.version, done.job.component_version), (3, Some(5)), "the newest version with that code");

    // Refusals, each with its reason; the live version stays.
    let refused = |r: Result<_, HostError>| match r {
        Err(HostError::Rollback(e)) => e,
        other => panic!("expected a refused rollback, got {other:?}"),
    };
    assert!(matches!(refused(host.rollback("cleanup", Some("9")).await), RollbackError::UnknownVersion { .. }));
    assert!(matches!(refused(host.rollback("cleanup", Some("1")).await), RollbackError::AlreadyLive { .. }));
    let bad = refused(host.rollback("cleanup", Some("latest")).await);
    assert!(bad.to_string().contains("neither a version number"), "{bad}");
    assert!(matches!(host.rollback("nope", None).await, Err(HostError::UnknownJob { .. })));

    // Only the last versions keep their code.
    for i in 0..5 {
        let v = variant(&v1, &format!("many{i}"));
        install(&env.jobs_dir(), "cleanup.wasm", &v);
        job_until(&host, "cleanup", "a new version", |j| j.component_version == Some(6 + i)).await;
    }
    // A reloaded version's code is written just after it goes live.
    let id = job(&host, "cleanup").await.unwrap().id;
    let mut kept: Vec<i64> = Vec::new();
    for _ in 0..100 {
        let versions = host.store.job_versions(id, 100).await.unwrap();
        kept = versions.iter().filter(|v| v.kept).map(|v| v.version).collect();
        if kept == [10, 9, 8, 7, 6] {
            break;
        }
        actix_rt::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(kept, [10, 9, 8, 7, 6]);
    let gone = refused(host.rollback("cleanup", Some("2")).await);
    assert!(gone.to_string().contains("only the last 5"), "{gone}");
    host.stop().await;
}

/// Twenty replacements a second for ten seconds: five seconds of deploys
/// (each a full validation and swap) and five of files rewritten in the
/// watched directory, valid and invalid mixed. The job keeps running
/// throughout and ends on the last valid file; only the last versions' code
/// is kept. (Memory across such a storm is measured by the `hot_swap`
/// benchmark, in a process of its own.)
#[actix_rt::test]
async fn a_storm_of_replacements_ends_on_the_last_valid_file() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(true).await;
    let good = std::fs::read(wasm("cleanup")).unwrap();
    let variants: Vec<Vec<u8>> = (0..4).map(|i| variant(&good, &format!("storm-{i}"))).collect();
    for v in &variants {
        host.runtime.load(v.clone()).await.unwrap(); // compiled once, then from the cache
    }
    let tick = Duration::from_millis(50);
    let mut runs = 0;
    for i in 0..100 {
        let t = std::time::Instant::now();
        let job = host.deploy(variants[i % variants.len()].clone()).await.unwrap();
        assert_eq!(job.component_version, Some(i as i64 + 2));
        if i % 10 == 0 {
            let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
            assert_eq!(report.status, ExecutionStatus::Succeeded, "run during the storm");
            runs += 1;
        }
        actix_rt::time::sleep(tick.saturating_sub(t.elapsed())).await;
    }
    let file = env.jobs_dir().join("cleanup.wasm");
    let mut last = Vec::new();
    for i in 0..100 {
        let t = std::time::Instant::now();
        let bytes = match i % 4 {
            0 => b"garbage".to_vec(),
            1 => good[..good.len() / 3].to_vec(),
            _ => variants[i % variants.len()].clone(),
        };
        if i % 2 == 0 {
            std::fs::write(&file, &bytes).unwrap();
        } else {
            install(&env.jobs_dir(), "cleanup.wasm", &bytes);
        }
        last = bytes;
        actix_rt::time::sleep(tick.saturating_sub(t.elapsed())).await;
    }
    let want = sundial::runtime::digest(&last);
    let j = job_until(&host, "cleanup", "the last valid file live", |j| {
        j.component_digest.as_deref() == Some(want.as_str()) && j.load_error.is_none()
    })
    .await;
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    let e = &host.store.list_executions("cleanup", 1, None).await.unwrap()[0];
    assert_eq!(e.component_digest.as_deref(), Some(want.as_str()));
    let versions = host.store.job_versions(j.id, 1000).await.unwrap();
    assert_eq!(versions.iter().filter(|v| v.kept).count(), 5, "only the last versions' code is kept");
    assert_eq!(host.store.list_executions("cleanup", 100, None).await.unwrap().len(), runs + 1);
    host.stop().await;
}

/// A file renamed into place (as deploy tools and `sundial deploy` do) is
/// whole: it goes live without waiting for the writes to go quiet.
#[actix_rt::test]
async fn a_file_renamed_into_place_goes_live_without_the_debounce() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(true).await;
    let good = std::fs::read(wasm("cleanup")).unwrap();
    let mut took = Vec::new();
    for i in 0..3 {
        let v = variant(&good, &format!("renamed-{i}"));
        host.runtime.load(v.clone()).await.unwrap(); // compiled: what is left is the swap
        let want = sundial::runtime::digest(&v);
        let started = std::time::Instant::now();
        install(&env.jobs_dir(), "cleanup.wasm", &v);
        job_until(&host, "cleanup", "the renamed file live", |j| j.component_digest.as_deref() == Some(want.as_str()))
            .await;
        took.push(started.elapsed());
    }
    took.sort();
    // The debounce alone would be 200 ms for every one of them.
    assert!(took[0] < sundial::actors::loader::DEBOUNCE, "fastest swap took {:?} (all: {took:?})", took[0]);
    host.stop().await;
}

/// While the loader records a new version it holds the job's supervisor: a
/// run asked for meanwhile waits, and then runs the new code, never the old.
#[actix_rt::test]
async fn a_run_asked_for_while_a_version_is_recorded_runs_the_new_code() {
    use sundial::actors::loader::GetSupervisor;
    use sundial::actors::supervisor::{Deploy, Hold};
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(false).await;
    let supervisor = host.loader.send(GetSupervisor { name: "cleanup".into() }).await.unwrap().unwrap();
    let v2 = variant(&std::fs::read(wasm("cleanup")).unwrap(), "held");
    let version = host.runtime.load(v2.clone()).await.unwrap();

    let (tx, rx) = tokio::sync::oneshot::channel();
    supervisor.send(Hold { code: rx }).await.unwrap();
    let run = actix_rt::spawn({
        let host = host.clone();
        async move { host.run_now("cleanup", RunArgs::default()).await.unwrap() }
    });
    actix_rt::time::sleep(Duration::from_millis(300)).await;
    assert!(!run.is_finished(), "the run waits while the version is being recorded");
    assert!(host.store.list_executions("cleanup", 1, None).await.unwrap().is_empty());

    let job = host.store.get_job("cleanup").await.unwrap().unwrap();
    let config = host.config.job(&version.info).unwrap();
    let digest = version.digest.clone();
    let sent = tx.send(Deploy {
        code: sundial::runtime::JobCode::Component(version),
        version_no: 7,
        config,
        job,
        noticed: None,
    });
    assert!(sent.is_ok(), "the supervisor waits for the new version");
    let report = run.await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    let e = &host.store.list_executions("cleanup", 1, None).await.unwrap()[0];
    assert_eq!((e.component_version, e.component_digest.as_deref()), (Some(7), Some(digest.as_str())));
    host.stop().await;
}

/// A reload from the artifact cache records its version while the code is
/// still loading, in a transaction that only commits if the load produces
/// that very version. Here the cache holds an entry this host's key signs
/// but whose record is wrong (another digest) and whose code wasmtime
/// refuses: the early record is rolled back, the file is compiled, and only
/// the real version is recorded, under the next version number.
#[actix_rt::test]
async fn a_reload_whose_cached_code_fails_records_only_what_went_live() {
    let env = Env::new(&["cleanup"]).config("[jobs.cleanup]\ndatabase = \"read-write\"");
    env.app();
    let host = env.host(true).await;
    let mut events = host.subscribe();
    let v1 = job(&host, "cleanup").await.unwrap();
    let good = std::fs::read(wasm("cleanup")).unwrap();
    let cache = env.path().join(".sundial-cache");
    // The host's own entry for v1, to take the engine's compatibility suffix
    // and the `describe` record from.
    let own = blake3::hash(&good).to_hex().to_string();
    let meta_of_v1 = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.file_name().unwrap().to_string_lossy().starts_with(&own) && p.extension().unwrap() == "meta")
        .expect("v1 is cached");
    let suffix = meta_of_v1.file_name().unwrap().to_string_lossy().trim_start_matches(&own).to_string();
    let mut record: serde_json::Value = serde_json::from_slice(&std::fs::read(&meta_of_v1).unwrap()[32..]).unwrap();
    let claimed = "0".repeat(64);
    record["digest"] = claimed.clone().into();
    let record = serde_json::to_vec(&record).unwrap();

    let v2 = variant(&good, "cached-but-broken");
    let key = blake3::hash(&v2);
    let code = b"not code wasmtime wrote".to_vec();
    let secret: [u8; 32] = std::fs::read(cache.join("key")).unwrap().try_into().unwrap();
    let mut mac = blake3::Hasher::new_keyed(&secret);
    mac.update(key.as_bytes()).update(&(record.len() as u64).to_le_bytes()).update(&record).update(&code);
    let stem = format!("{}{}", key.to_hex(), suffix.trim_end_matches(".meta"));
    std::fs::write(cache.join(format!("{stem}.cwasm")), &code).unwrap();
    std::fs::write(cache.join(format!("{stem}.meta")), [mac.finalize().as_bytes().as_slice(), &record].concat())
        .unwrap();

    let real = sundial::runtime::digest(&v2);
    install(&env.jobs_dir(), "cleanup.wasm", &v2);
    let (version, _) = reloaded(&mut events, "cleanup", &real).await;
    assert_eq!(version, v1.component_version.unwrap() + 1, "the rolled-back record took no version number");
    let j = job(&host, "cleanup").await.unwrap();
    assert_eq!((j.component_version, j.component_digest.as_deref()), (Some(version), Some(real.as_str())));
    let versions = host.store.job_versions(j.id, 10).await.unwrap();
    assert!(versions.iter().all(|v| v.digest != claimed), "the wrong record was never committed: {versions:?}");
    let report = host.run_now("cleanup", RunArgs::default()).await.unwrap();
    assert_eq!(report.status, ExecutionStatus::Succeeded);
    let e = &host.store.list_executions("cleanup", 1, None).await.unwrap()[0];
    assert_eq!((e.component_version, e.component_digest.as_deref()), (Some(version), Some(real.as_str())));
    host.stop().await;
    let rewritten = std::fs::read(cache.join(format!("{stem}.meta"))).unwrap();
    assert!(String::from_utf8_lossy(&rewritten[32..]).contains(&real), "the entry was rewritten from the compile");
}

//! The WIT versioning policy (docs/writing-jobs.md, "Versions of the
//! contract"): released versions of `sundial:job` never change, and the host
//! keeps running components built against every one of them.

use sundial::model::{ExecutionStatus, RunArgs};

use crate::helpers::*;

/// `(version, text)` of every frozen contract in `wit/released/`.
fn released() -> Vec<(String, String)> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(root().join("wit/released")).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap();
        let version = package_version(&text).unwrap_or_else(|| panic!("{} has no package line", path.display()));
        let name = path.file_name().unwrap().to_str().unwrap();
        assert_eq!(name, format!("sundial-job-{version}.wit"), "a frozen contract is named after its version");
        out.push((version, text));
    }
    out.sort();
    out
}

fn package_version(wit: &str) -> Option<String> {
    wit.lines().find_map(|l| l.trim().strip_prefix("package sundial:job@")?.strip_suffix(';').map(str::to_string))
}

/// The contract without comments and layout: what a component is built against.
fn contract(wit: &str) -> String {
    wit.lines()
        .map(|l| l.split("//").next().unwrap_or("").trim())
        .filter(|l| !l.is_empty())
        .collect::<Vec<_>>()
        .join("\n")
}

#[test]
fn released_contracts_never_change() {
    let released = released();
    assert!(!released.is_empty(), "wit/released/ holds every released version");
    let current = std::fs::read_to_string(root().join("wit/job.wit")).unwrap();
    let version = package_version(&current).unwrap();
    if let Some((_, frozen)) = released.iter().find(|(v, _)| *v == version) {
        assert!(
            contract(&current) == contract(frozen),
            "wit/job.wit changed sundial:job@{version}, which is released: a change to the contract \
             needs a new package version (see docs/writing-jobs.md, \"Versions of the contract\")"
        );
    }
}

#[actix_rt::test]
async fn components_built_against_every_released_version_still_run() {
    for (version, _) in released() {
        let fixture = format!("released-{}", version.replace('.', "-"));
        // The fixture keeps a run counter in its key-value state.
        let env = Env::new(&[fixture.as_str()]).config(&format!("[jobs.{fixture}]\nstate = true"));
        let host = env.host(false).await;
        assert!(
            host.loaded.loaded.contains(&fixture),
            "the component built against sundial:job@{version} loads: {:?}",
            host.loaded.failed
        );
        for run in 1..=2 {
            let r = host.run_now(&fixture, RunArgs::default()).await.unwrap();
            assert_eq!(r.status, ExecutionStatus::Succeeded, "{version}: {r:?}");
            assert!(r.logs.contains(&format!("0.1.0 job ran: run {run}, Tokyo ")), "{version}: {}", r.logs);
            assert!(r.logs.contains("database denied: true"), "{version}: {}", r.logs);
        }
        host.stop().await;
    }
}

//! `cargo xtask`: Sundial's build helper.
//!
//! `cargo xtask build-jobs [--fixtures] [crate...]` compiles job crates to
//! `wasm32-wasip2` components and copies them to `target/sundial-jobs/` (and
//! the test fixtures from `test-jobs/` to `target/sundial-test-jobs/`), with
//! the first toolchain [`sundial_toolchain::detect`] finds (rustup's target,
//! or Debian's `rustc-web` with `-Zbuild-std`); without one it says exactly
//! what to install. The Python jobs in `jobs-python/` are built too when
//! componentize-py is installed. `cargo xtask toolchain` names the toolchain.

mod python;

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build-jobs") => build_jobs(&args[1..]),
        Some("toolchain") => {
            let t = sundial_toolchain::detect()?;
            println!("{}", t.describe());
            Ok(())
        }
        _ => {
            eprintln!("usage: cargo xtask build-jobs [--fixtures] [crate...]\n       cargo xtask toolchain");
            std::process::exit(2);
        }
    }
}

fn workspace_root() -> anyhow::Result<PathBuf> {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(Path::to_path_buf).context("xtask has no parent directory")
}

/// Crate directories under `dir` that have a Cargo.toml, with their package names.
fn crates_in(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) => return Ok(out),
    };
    for entry in entries {
        let path = entry?.path();
        let manifest = path.join("Cargo.toml");
        if !manifest.is_file() {
            continue;
        }
        let text = std::fs::read_to_string(&manifest)?;
        let name = sundial_toolchain::package_name(&text)
            .with_context(|| format!("no package name in {}", manifest.display()))?;
        out.push((name, path));
    }
    out.sort();
    Ok(out)
}

fn build_jobs(args: &[String]) -> anyhow::Result<()> {
    let root = workspace_root()?;
    let fixtures = args.iter().any(|a| a == "--fixtures");
    let only: Vec<&String> = args.iter().filter(|a| !a.starts_with("--")).collect();

    let mut sets = vec![(crates_in(&root.join("jobs"))?, root.join("target/sundial-jobs"))];
    if fixtures {
        sets.push((crates_in(&root.join("test-jobs"))?, root.join("target/sundial-test-jobs")));
    }
    for (crates, _) in &mut sets {
        if !only.is_empty() {
            crates.retain(|(n, _)| only.contains(&n));
        }
    }
    let packages: Vec<&str> = sets.iter().flat_map(|(c, _)| c.iter().map(|(n, _)| n.as_str())).collect();
    if packages.is_empty() {
        bail!("no job crates to build");
    }

    let toolchain = sundial_toolchain::detect()?;
    eprintln!("building {} job crate(s) with {}", packages.len(), toolchain.describe());
    let target_dir = root.join("target/wasm");
    let mut cmd = toolchain.cargo_build(&target_dir);
    cmd.current_dir(&root);
    for p in &packages {
        cmd.args(["-p", p]);
    }
    let status = cmd.status().context("cannot run cargo for the wasm build")?;
    if !status.success() {
        bail!("building the job components failed");
    }
    for (crates, out_dir) in &sets {
        std::fs::create_dir_all(out_dir)?;
        for (name, _) in crates {
            let file = sundial_toolchain::component_file_name(name);
            let built = sundial_toolchain::built_component(&target_dir, name);
            let dest = out_dir.join(&file);
            // Write then rename, so a running host never sees half a file.
            let tmp = out_dir.join(format!(".{file}.tmp"));
            std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
            std::fs::rename(&tmp, &dest)?;
            let size = std::fs::metadata(&dest)?.len();
            println!("{}  {} bytes", dest.display(), size);
        }
    }
    if only.is_empty() {
        python::build_python_jobs(&root, &root.join("target/sundial-jobs"))?;
    }
    Ok(())
}

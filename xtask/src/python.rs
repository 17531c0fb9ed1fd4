//! Python jobs: every `jobs-python/<name>/app.py` is built by componentize-py
//! against `wit/` (world `job`) into `<out_dir>/<name>_py.wasm`.
//!
//! componentize-py comes from `scripts/install-python-toolchain.sh`, which
//! puts it in a virtual environment at `target/python-toolchain`; one on
//! `PATH` is used otherwise. Without it the Python jobs are skipped with a
//! message saying how to install it, and the Rust jobs build as usual.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Instant, SystemTime};

use anyhow::{Context, bail};

/// Where the install script puts componentize-py, relative to the workspace root.
const VENV_BIN: &str = "target/python-toolchain/bin/componentize-py";
/// What to run when componentize-py is missing.
const INSTALL: &str = "scripts/install-python-toolchain.sh";
/// The WIT world every job targets.
const WORLD: &str = "job";
/// The module (file `app.py`) that defines the job's `WitWorld` class.
const APP: &str = "app";

/// Builds every Python job into `out_dir` and returns the components' paths,
/// or `Ok(None)` when componentize-py is not installed (after saying on
/// stderr what to run). A component newer than its sources, the WIT and
/// componentize-py is kept as it is.
pub fn build_python_jobs(root: &Path, out_dir: &Path) -> anyhow::Result<Option<Vec<PathBuf>>> {
    let jobs = python_jobs(&root.join("jobs-python"))?;
    if jobs.is_empty() {
        return Ok(Some(Vec::new()));
    }
    let Some(componentize_py) = find_componentize_py(root) else {
        eprintln!(
            "skipping {} Python job(s) ({}): componentize-py is not installed; run {INSTALL}, then build again",
            jobs.len(),
            jobs.iter().map(|(n, _)| n.as_str()).collect::<Vec<_>>().join(", "),
        );
        return Ok(None);
    };
    let wit = root.join("wit");
    std::fs::create_dir_all(out_dir)?;
    let mut built = Vec::new();
    for (name, dir) in &jobs {
        let file = format!("{}_py.wasm", name.replace('-', "_"));
        let dest = out_dir.join(&file);
        let inputs = newest_mtime(&[dir.as_path(), wit.as_path(), componentize_py.as_path()])?;
        let fresh = std::fs::metadata(&dest).and_then(|m| m.modified()).is_ok_and(|built| built >= inputs);
        if !fresh {
            let started = Instant::now();
            eprintln!("building Python job {name} with {}", componentize_py.display());
            // componentize-py writes bytecode caches next to the sources: build from a copy.
            let staging = root.join("target/python-jobs").join(name);
            if staging.exists() {
                std::fs::remove_dir_all(&staging)?;
            }
            copy_sources(dir, &staging)?;
            // Write then rename, so a running host never sees half a file.
            let tmp = out_dir.join(format!(".{file}.tmp"));
            let output = Command::new(&componentize_py)
                .arg("--wit-path")
                .arg(&wit)
                .args(["--world", WORLD, "componentize", "--python-path"])
                .arg(&staging)
                .arg(APP)
                .arg("--output")
                .arg(&tmp)
                .current_dir(&staging)
                .output()
                .with_context(|| format!("cannot run {}", componentize_py.display()))?;
            if !output.status.success() {
                let _ = std::fs::remove_file(&tmp);
                bail!(
                    "componentize-py failed on {}:\n{}{}",
                    dir.join("app.py").display(),
                    String::from_utf8_lossy(&output.stdout),
                    String::from_utf8_lossy(&output.stderr)
                );
            }
            std::fs::rename(&tmp, &dest)?;
            eprintln!("built Python job {name} in {:.1?}", started.elapsed());
        }
        let size = std::fs::metadata(&dest)?.len();
        println!("{}  {} bytes", dest.display(), size);
        built.push(dest);
    }
    Ok(Some(built))
}

/// Directories under `dir` that hold an `app.py`, with their names, sorted.
fn python_jobs(dir: &Path) -> anyhow::Result<Vec<(String, PathBuf)>> {
    let mut out = Vec::new();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(_) => return Ok(out),
    };
    for entry in entries {
        let path = entry?.path();
        if !path.join("app.py").is_file() {
            continue;
        }
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .with_context(|| format!("{} is not a UTF-8 name", path.display()))?;
        out.push((name.to_string(), path.clone()));
    }
    out.sort();
    Ok(out)
}

/// The install script's componentize-py if it runs, else one on `PATH`.
fn find_componentize_py(root: &Path) -> Option<PathBuf> {
    let runs = |p: &Path| Command::new(p).arg("--version").output().is_ok_and(|o| o.status.success());
    let venv = root.join(VENV_BIN);
    if venv.is_file() && runs(&venv) {
        return Some(venv);
    }
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path).map(|d| d.join("componentize-py")).find(|p| p.is_file() && runs(p))
}

/// The latest modification time of the files at or under `paths`.
fn newest_mtime(paths: &[&Path]) -> anyhow::Result<SystemTime> {
    let mut newest = SystemTime::UNIX_EPOCH;
    let mut stack: Vec<PathBuf> = paths.iter().map(|p| p.to_path_buf()).collect();
    while let Some(p) = stack.pop() {
        let meta = std::fs::metadata(&p).with_context(|| format!("reading {}", p.display()))?;
        if meta.is_dir() {
            for entry in std::fs::read_dir(&p)? {
                let entry = entry?;
                if entry.file_name() != "__pycache__" {
                    stack.push(entry.path());
                }
            }
        } else {
            newest = newest.max(meta.modified()?);
        }
    }
    Ok(newest)
}

/// Copies a job's sources (without bytecode caches) from `from` into a new `to`.
fn copy_sources(from: &Path, to: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let (src, dest) = (entry.path(), to.join(entry.file_name()));
        if entry.file_name() == "__pycache__" {
            continue;
        }
        if entry.file_type()?.is_dir() {
            copy_sources(&src, &dest)?;
        } else {
            std::fs::copy(&src, &dest).with_context(|| format!("copying {}", src.display()))?;
        }
    }
    Ok(())
}

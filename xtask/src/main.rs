//! `cargo xtask`: Sundial's build helper.
//!
//! `cargo xtask build-jobs [--fixtures] [crate...]` compiles job crates to
//! `wasm32-wasip2` components and copies them to `target/sundial-jobs/` (and
//! the test fixtures from `test-jobs/` to `target/sundial-test-jobs/`). It
//! uses the first toolchain that can do it:
//!
//! 1. rustup with the `wasm32-wasip2` target installed: plain `cargo build`;
//! 2. Debian's `rustc-web`/`cargo-web` with the standard library sources
//!    (`rust-web-src`), `wasm-component-ld` (`rust-web-llvm`), `wasi-libc` and
//!    LLVM's `wasm-ld` (`lld-22`): `-Zbuild-std`;
//! 3. otherwise it fails and says exactly what to install.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

const TARGET: &str = "wasm32-wasip2";

fn main() -> anyhow::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("build-jobs") => build_jobs(&args[1..]),
        Some("toolchain") => {
            let t = detect()?;
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

/// A way to build wasm32-wasip2 components.
enum Toolchain {
    Rustup,
    Debian { wasm_ld: PathBuf },
}

impl Toolchain {
    fn describe(&self) -> String {
        match self {
            Toolchain::Rustup => "rustup with the wasm32-wasip2 target".into(),
            Toolchain::Debian { wasm_ld } => {
                format!("Debian rustc-web with -Zbuild-std (wasm-ld: {})", wasm_ld.display())
            }
        }
    }
}

fn rustup_has_target() -> bool {
    Command::new("rustup")
        .args(["target", "list", "--installed"])
        .output()
        .map(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).lines().any(|l| l.trim() == TARGET))
        .unwrap_or(false)
}

fn find_wasm_ld() -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path) {
        let p = dir.join("wasm-ld");
        if p.is_file() {
            return Some(p);
        }
    }
    let mut versioned: Vec<PathBuf> = std::fs::read_dir("/usr/bin")
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(|n| n.starts_with("wasm-ld-")))
        .collect();
    versioned.sort();
    versioned.pop()
}

fn detect() -> anyhow::Result<Toolchain> {
    if rustup_has_target() {
        return Ok(Toolchain::Rustup);
    }
    let mut missing = Vec::new();
    if !Path::new("/usr/bin/rustc").is_file() {
        missing.push("rustc-web");
    }
    if !Path::new("/usr/bin/cargo").is_file() {
        missing.push("cargo-web");
    }
    if !Path::new("/usr/lib/rustlib/src/rust/library").is_dir() {
        missing.push("rust-web-src");
    }
    if !Path::new("/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld").is_file() {
        missing.push("rust-web-llvm");
    }
    if !Path::new("/usr/lib/wasm32-wasi/libc.a").is_file() {
        missing.push("wasi-libc");
    }
    let wasm_ld = find_wasm_ld();
    if wasm_ld.is_none() {
        missing.push("lld-22");
    }
    match wasm_ld {
        Some(wasm_ld) if missing.is_empty() => Ok(Toolchain::Debian { wasm_ld }),
        _ => bail!(
            "no toolchain can build {TARGET} components.\n\
             Install one of:\n  \
             - rustup's target:  rustup target add {TARGET}\n  \
             - Debian packages:  sudo apt-get install {}\n\
             (missing here: {})",
            "rustc-web cargo-web rust-web-src rust-web-llvm wasi-libc lld-22",
            missing.join(", ")
        ),
    }
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
        let name = text
            .lines()
            .skip_while(|l| l.trim() != "[package]")
            .find_map(|l| {
                let (k, v) = l.split_once('=')?;
                (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
            })
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

    let toolchain = detect()?;
    eprintln!("building {} job crate(s) with {}", packages.len(), toolchain.describe());
    let target_dir = root.join("target/wasm");
    let mut cmd = match &toolchain {
        Toolchain::Rustup => {
            let mut c = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()));
            c.args(["build", "--release", "--target", TARGET]);
            c
        }
        Toolchain::Debian { wasm_ld } => {
            let mut c = Command::new("/usr/bin/cargo");
            c.env("RUSTC", "/usr/bin/rustc")
                .env("RUSTC_BOOTSTRAP", "1")
                .env(
                    "RUSTFLAGS",
                    format!("-L native=/usr/lib/wasm32-wasi -C link-arg=--wasm-ld-path={}", wasm_ld.display()),
                )
                .args(["build", "--release", "--target", TARGET, "-Zbuild-std=std,panic_abort"]);
            c
        }
    };
    // Components are shipped: no debug info, symbols kept for backtraces.
    cmd.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
        .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
        .env_remove("RUSTC_WRAPPER")
        .arg("--target-dir")
        .arg(&target_dir)
        .current_dir(&root);
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
            let file = format!("{}.wasm", name.replace('-', "_"));
            let built = target_dir.join(TARGET).join("release").join(&file);
            let dest = out_dir.join(&file);
            // Write then rename, so a running host never sees half a file.
            let tmp = out_dir.join(format!(".{file}.tmp"));
            std::fs::copy(&built, &tmp).with_context(|| format!("copying {}", built.display()))?;
            std::fs::rename(&tmp, &dest)?;
            let size = std::fs::metadata(&dest)?.len();
            println!("{}  {} bytes", dest.display(), size);
        }
    }
    Ok(())
}

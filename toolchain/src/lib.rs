//! Finding a toolchain that builds `wasm32-wasip2` job components.
//!
//! Shared by `sundial build` (one job crate, anywhere on disk) and
//! `cargo xtask build-jobs` (every job crate of this repository). The first
//! toolchain that can do it wins:
//!
//! 1. rustup with the `wasm32-wasip2` target installed: plain `cargo build`;
//! 2. Debian's `rustc-web`/`cargo-web` with the standard library sources
//!    (`rust-web-src`), `wasm-component-ld` (`rust-web-llvm`), `wasi-libc` and
//!    LLVM's `wasm-ld` (`lld-22`): `-Zbuild-std`;
//! 3. otherwise [`detect`] fails and says exactly what to install.

#![warn(missing_docs)]

use std::path::{Path, PathBuf};
use std::process::Command;

/// The target job components are built for.
pub const TARGET: &str = "wasm32-wasip2";

/// The Debian packages of the `-Zbuild-std` toolchain.
pub const DEBIAN_PACKAGES: &str = "rustc-web cargo-web rust-web-src rust-web-llvm wasi-libc lld-22";

/// A way to build `wasm32-wasip2` components.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Toolchain {
    /// rustup's toolchain with the target installed.
    Rustup,
    /// Debian's `rustc-web` with `-Zbuild-std`.
    Debian {
        /// LLVM's `wasm-ld`, which `wasm-component-ld` drives.
        wasm_ld: PathBuf,
    },
}

/// No toolchain can build components here; the message says what to install.
#[derive(Debug, Clone, thiserror::Error)]
#[error(
    "no toolchain can build {TARGET} components.\n\
     Install one of:\n  \
     - rustup's target:  rustup target add {TARGET}\n  \
     - Debian packages:  sudo apt-get install {DEBIAN_PACKAGES}\n\
     (missing here: {missing})"
)]
pub struct NoToolchain {
    /// What is missing, comma-separated.
    pub missing: String,
}

impl Toolchain {
    /// One line for people.
    pub fn describe(&self) -> String {
        match self {
            Toolchain::Rustup => format!("rustup with the {TARGET} target"),
            Toolchain::Debian { wasm_ld } => {
                format!("Debian rustc-web with -Zbuild-std (wasm-ld: {})", wasm_ld.display())
            }
        }
    }

    /// `cargo build --release --target wasm32-wasip2` set up for this
    /// toolchain, building into `target_dir`. Components are shipped: no debug
    /// info, symbols kept for backtraces. Add `-p`/`--manifest-path` and run it.
    pub fn cargo_build(&self, target_dir: &Path) -> Command {
        let mut c = match self {
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
        c.env("CARGO_PROFILE_RELEASE_DEBUG", "false")
            .env("CARGO_PROFILE_RELEASE_STRIP", "debuginfo")
            .env_remove("RUSTC_WRAPPER")
            .arg("--target-dir")
            .arg(target_dir);
        c
    }
}

/// Where `cargo_build(target_dir)` leaves the component of `package`.
pub fn built_component(target_dir: &Path, package: &str) -> PathBuf {
    target_dir.join(TARGET).join("release").join(component_file_name(package))
}

/// A package's component file name: `my-job` builds `my_job.wasm`.
pub fn component_file_name(package: &str) -> String {
    format!("{}.wasm", package.replace('-', "_"))
}

/// The first toolchain that can build components here.
pub fn detect() -> Result<Toolchain, NoToolchain> {
    if rustup_has_target() {
        return Ok(Toolchain::Rustup);
    }
    let mut missing = Vec::new();
    let checks = [
        ("/usr/bin/rustc", "rustc-web"),
        ("/usr/bin/cargo", "cargo-web"),
        ("/usr/lib/rustlib/src/rust/library", "rust-web-src"),
        ("/usr/lib/rustlib/x86_64-unknown-linux-gnu/bin/wasm-component-ld", "rust-web-llvm"),
        ("/usr/lib/wasm32-wasi/libc.a", "wasi-libc"),
    ];
    for (path, package) in checks {
        if !Path::new(path).exists() {
            missing.push(package);
        }
    }
    let wasm_ld = find_wasm_ld();
    if wasm_ld.is_none() {
        missing.push("lld-22");
    }
    match wasm_ld {
        Some(wasm_ld) if missing.is_empty() => Ok(Toolchain::Debian { wasm_ld }),
        _ => Err(NoToolchain { missing: missing.join(", ") }),
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

/// The `[package] name` of a `Cargo.toml`'s text, if it has one.
pub fn package_name(manifest: &str) -> Option<String> {
    manifest
        .lines()
        .skip_while(|l| l.trim() != "[package]")
        .skip(1)
        .take_while(|l| !l.trim().starts_with('['))
        .find_map(|l| {
            let (k, v) = l.split_once('=')?;
            (k.trim() == "name").then(|| v.trim().trim_matches('"').to_string())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_come_from_the_package_table_only() {
        let m = "[workspace]\nname = \"no\"\n\n[package]\nname = \"my-job\"\nversion = \"0.1.0\"\n[dependencies]\nname = \"x\"\n";
        assert_eq!(package_name(m).as_deref(), Some("my-job"));
        assert_eq!(package_name("[workspace]\nmembers = []\n"), None);
        assert_eq!(component_file_name("my-job"), "my_job.wasm");
    }

    #[test]
    fn the_missing_toolchain_message_says_what_to_install() {
        let e = NoToolchain { missing: "wasi-libc, lld-22".into() };
        let text = e.to_string();
        assert!(text.contains("rustup target add wasm32-wasip2"), "{text}");
        assert!(text.contains("apt-get install rustc-web"), "{text}");
        assert!(text.contains("missing here: wasi-libc, lld-22"), "{text}");
    }
}

//! The job author's loop: `sundial new` scaffolds a job crate, `sundial build`
//! compiles one to a component (`sundial run --component` then runs it).

use std::path::{Path, PathBuf};
use std::process::Command;

use sundial_toolchain::Toolchain;

/// What a job author got wrong, or what stops the build; the message says
/// what to do.
#[derive(Debug, thiserror::Error)]
pub enum AuthoringError {
    /// The job name cannot name a crate, a table and a job at once.
    #[error(
        "{0:?} is not a usable job name: use lowercase letters, digits and dashes, \
         starting with a letter (at most 64 characters), e.g. \"nightly-report\""
    )]
    Name(String),
    /// The crate's directory exists and is not empty.
    #[error("{} already exists and is not empty; choose another name or --path", .0.display())]
    Exists(PathBuf),
    /// Inside Sundial's own workspace, job crates live in `jobs/`.
    #[error(
        "{} is inside Sundial's workspace ({}) but not in its jobs/ directory, so cargo would not \
         build it; create it as {}/jobs/<name> (the default when you run `sundial new` at the \
         workspace root)",
        path.display(), root.display(), root.display()
    )]
    OutsideJobsDir {
        /// Where the crate was asked for.
        path: PathBuf,
        /// The workspace root.
        root: PathBuf,
    },
    /// No `Cargo.toml` with a `[package]`.
    #[error("{0}")]
    NotACrate(String),
    /// No toolchain can build components.
    #[error(transparent)]
    Toolchain(#[from] sundial_toolchain::NoToolchain),
    /// cargo failed (its output is above).
    #[error("{0}")]
    Build(String),
    /// Reading or writing files.
    #[error("{what}: {source}")]
    Io {
        /// What was being done.
        what: String,
        /// The cause.
        source: std::io::Error,
    },
}

impl AuthoringError {
    /// Whether the author's input is at fault (exit code 2) rather than the
    /// machine (exit code 1).
    pub fn is_input(&self) -> bool {
        matches!(
            self,
            AuthoringError::Name(_)
                | AuthoringError::Exists(_)
                | AuthoringError::OutsideJobsDir { .. }
                | AuthoringError::NotACrate(_)
        )
    }
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> AuthoringError {
    let what = what.into();
    move |source| AuthoringError::Io { what, source }
}

/// A single-shot or a per-item job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Kind {
    /// `Job`: one `run` per execution.
    #[default]
    Single,
    /// `ItemJob`: the host pages through items and runs each in its own transaction.
    Items,
}

/// Where the SDK comes from in a new crate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SdkSource {
    /// A member of Sundial's workspace: `sundial-guest.workspace = true`.
    Workspace,
    /// A crate elsewhere: the SDK by path.
    Path(PathBuf),
    /// A crate elsewhere with no SDK sources at hand: the SDK by version.
    Version(String),
}

/// A scaffolded crate.
#[derive(Debug, Clone)]
pub struct NewCrate {
    /// Its directory.
    pub dir: PathBuf,
    /// How it depends on the SDK.
    pub sdk: SdkSource,
}

/// Whether `name` can be a job, crate and table name.
pub fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars.next().is_some_and(|c| c.is_ascii_lowercase())
        && name.len() <= 64
        && name.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        && !name.ends_with('-')
        && !name.contains("--")
}

/// The root of Sundial's own workspace at or above `dir`, if any: a directory
/// with a workspace `Cargo.toml` and the SDK in `guest-sdk/`.
pub fn sundial_workspace(dir: &Path) -> Option<PathBuf> {
    dir.ancestors()
        .find(|d| {
            d.join("guest-sdk/Cargo.toml").is_file()
                && std::fs::read_to_string(d.join("Cargo.toml")).is_ok_and(|t| t.contains("[workspace]"))
        })
        .map(Path::to_path_buf)
}

/// The SDK's sources: `SUNDIAL_GUEST_SDK`, the workspace this binary was built
/// from (if it is still there), or none.
fn sdk_sources() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("SUNDIAL_GUEST_SDK").map(PathBuf::from) {
        return Some(p);
    }
    let built_from = Path::new(env!("CARGO_MANIFEST_DIR")).parent()?.join("guest-sdk");
    built_from.join("Cargo.toml").is_file().then_some(built_from)
}

/// Makes `path` absolute against the current directory, without touching the
/// file system.
fn absolute(path: &Path) -> Result<PathBuf, AuthoringError> {
    std::path::absolute(path).map_err(io(format!("cannot resolve {}", path.display())))
}

/// Where `sundial new <name>` puts the crate when no path is given: `jobs/<name>`
/// at the root of Sundial's workspace, else `./<name>`.
pub fn default_dir(cwd: &Path, name: &str) -> PathBuf {
    match sundial_workspace(cwd) {
        Some(root) if root == cwd => cwd.join("jobs").join(name),
        _ => cwd.join(name),
    }
}

/// Scaffolds a job crate named `name` in `dir`: `Cargo.toml`, `src/lib.rs`
/// with a working job, and a README with the commands to build, run and deploy it.
pub fn new_crate(name: &str, kind: Kind, dir: &Path) -> Result<NewCrate, AuthoringError> {
    if !valid_name(name) {
        return Err(AuthoringError::Name(name.to_string()));
    }
    let dir = absolute(dir)?;
    if std::fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
        return Err(AuthoringError::Exists(dir));
    }
    let parent = dir.parent().unwrap_or(&dir);
    let sdk = match sundial_workspace(parent) {
        Some(root) if dir.parent() == Some(&root.join("jobs")) => SdkSource::Workspace,
        Some(root) => return Err(AuthoringError::OutsideJobsDir { path: dir, root }),
        None => match sdk_sources() {
            Some(p) => SdkSource::Path(absolute(&p)?),
            None => SdkSource::Version(env!("CARGO_PKG_VERSION").to_string()),
        },
    };
    let ty: String = name
        .split('-')
        .map(|part| {
            let mut c = part.chars();
            c.next().map(|f| f.to_ascii_uppercase().to_string() + c.as_str()).unwrap_or_default()
        })
        .collect();
    let table = name.replace('-', "_");
    let fill = |t: &str| t.replace("{{name}}", name).replace("{{type}}", &ty).replace("{{table}}", &table);
    let lib = match kind {
        Kind::Single => fill(include_str!("single.rs.tmpl")),
        Kind::Items => fill(include_str!("items.rs.tmpl")),
    };
    std::fs::create_dir_all(dir.join("src")).map_err(io(format!("cannot create {}", dir.display())))?;
    let write = |file: &str, text: String| {
        let path = dir.join(file);
        std::fs::write(&path, text).map_err(io(format!("cannot write {}", path.display())))
    };
    write("Cargo.toml", manifest(name, kind, &sdk))?;
    write("src/lib.rs", lib)?;
    write("README.md", readme(name, kind, &sdk))?;
    if sdk != SdkSource::Workspace {
        write(".gitignore", "/target\n".into())?;
    }
    // Start from the versions the SDK is built and tested with.
    if let SdkSource::Path(p) = &sdk
        && let Some(lock) = p.parent().map(|w| w.join("Cargo.lock")).filter(|l| l.is_file())
    {
        std::fs::copy(&lock, dir.join("Cargo.lock")).map_err(io(format!("cannot copy {}", lock.display())))?;
    }
    Ok(NewCrate { dir, sdk })
}

fn manifest(name: &str, kind: Kind, sdk: &SdkSource) -> String {
    let what = match kind {
        Kind::Single => "A single-shot Sundial job.",
        Kind::Items => "A per-item Sundial job.",
    };
    let head = format!("[package]\nname = \"{name}\"\ndescription = \"{what}\"\n");
    let lib = "\n# A job is a library compiled to a WebAssembly component.\n[lib]\ncrate-type = [\"cdylib\"]\n";
    let dev = "\n# `cargo test` runs the job on the host against an in-memory database\n\
               # (sundial_guest::testing); the component build does not see this.\n[dev-dependencies]\n";
    match sdk {
        SdkSource::Workspace => format!(
            "{head}version.workspace = true\nedition.workspace = true\nrust-version.workspace = true\n\
             license.workspace = true\npublish = false\n{lib}\n[dependencies]\nsundial-guest.workspace = true\n\
             {dev}sundial-guest = {{ workspace = true, features = [\"testing\"] }}\n"
        ),
        SdkSource::Path(_) | SdkSource::Version(_) => {
            let source = match sdk {
                SdkSource::Path(p) => format!("path = {:?}", p.display().to_string()),
                _ => format!("version = \"{}\"", env!("CARGO_PKG_VERSION")),
            };
            format!(
                "{head}version = \"0.1.0\"\nedition = \"2024\"\npublish = false\n{lib}\n[dependencies]\n\
                 sundial-guest = {{ {source} }}\n{dev}sundial-guest = {{ {source}, features = [\"testing\"] }}\n\n\
                 # The crate is a workspace of its own, whatever directory it sits in.\n[workspace]\n"
            )
        }
    }
}

fn readme(name: &str, kind: Kind, sdk: &SdkSource) -> String {
    let file = sundial_toolchain::component_file_name(name);
    let kind = match kind {
        Kind::Single => "a single-shot job (`Job`: one `run` per execution)",
        Kind::Items => "a per-item job (`ItemJob`: the host runs each item in its own transaction)",
    };
    let dir = match sdk {
        SdkSource::Workspace => format!("jobs/{name}"),
        _ => ".".to_string(),
    };
    let demo = match sdk {
        SdkSource::Workspace => String::new(),
        _ => "sundial demo --db sqlite://app.db          # a demo application database to try it on\n".into(),
    };
    format!(
        "# {name}\n\n\
         A Sundial job: {kind}. The logic is in `src/lib.rs`; Sundial's guide to\n\
         writing jobs is `docs/writing-jobs.md` in Sundial's repository.\n\n\
         ## Test\n\n\
         ```sh\ncargo test\n```\n\n\
         runs the job's logic on this machine against an in-memory SQLite database\n\
         (`sundial_guest::testing`; see the tests at the end of `src/lib.rs`).\n\n\
         ## Build\n\n\
         ```sh\nsundial build {dir}\n```\n\n\
         prints the component's path (`…/wasm32-wasip2/release/{file}`), size and digest.\n\n\
         ## Try it\n\n\
         ```sh\n{demo}sundial run --component <path to {file}> --db sqlite://app.db --dry-run   # commits nothing\n\
         sundial run --component <path to {file}> --db sqlite://app.db\n```\n\n\
         ## Deploy\n\n\
         Copy the file into a running host's jobs directory (or `sundial deploy <file>`);\n\
         the host loads it for the next execution. Grant what the job asks for in the host's\n\
         `sundial.toml`:\n\n\
         ```toml\n[jobs.{name}]\ndatabase = \"read-write\"\n```\n"
    )
}

/// A built component.
#[derive(Debug, Clone)]
pub struct Built {
    /// The package.
    pub package: String,
    /// The component file.
    pub path: PathBuf,
    /// Its bytes.
    pub bytes: Vec<u8>,
    /// The toolchain that built it.
    pub toolchain: Toolchain,
}

/// Compiles the job crate in `dir` to a component with whichever toolchain is
/// available, into `target_dir` (default: `wasm/` under the crate's cargo
/// target directory, shared with `cargo xtask build-jobs` in Sundial's
/// workspace). cargo's output goes to stderr.
pub fn build(dir: &Path, target_dir: Option<&Path>) -> Result<Built, AuthoringError> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest).map_err(|e| {
        AuthoringError::NotACrate(format!(
            "cannot read {}: {e} (sundial build takes a job crate's directory)",
            manifest.display()
        ))
    })?;
    let package = sundial_toolchain::package_name(&text).ok_or_else(|| {
        AuthoringError::NotACrate(format!(
            "{} has no [package]: pass the directory of a job crate (`sundial new` makes one), not a workspace",
            manifest.display()
        ))
    })?;
    if !text.contains("cdylib") {
        return Err(AuthoringError::NotACrate(format!(
            "{} does not build a component: add\n\n[lib]\ncrate-type = [\"cdylib\"]\n",
            manifest.display()
        )));
    }
    let toolchain = sundial_toolchain::detect()?;
    let target_dir = match target_dir {
        Some(t) => absolute(t)?,
        None => cargo_target_dir(&toolchain, &manifest)?.join("wasm"),
    };
    eprintln!("building {package} with {}", toolchain.describe());
    let status = toolchain
        .cargo_build(&target_dir)
        .arg("--manifest-path")
        .arg(&manifest)
        .args(["-p", &package])
        .status()
        .map_err(io("cannot run cargo"))?;
    if !status.success() {
        return Err(AuthoringError::Build(format!("cargo could not build {package} (its messages are above)")));
    }
    let path = sundial_toolchain::built_component(&target_dir, &package);
    let bytes = std::fs::read(&path).map_err(io(format!("cannot read the built component {}", path.display())))?;
    Ok(Built { package, path, bytes, toolchain })
}

/// The cargo target directory of the crate (its workspace's, if it has one).
fn cargo_target_dir(toolchain: &Toolchain, manifest: &Path) -> Result<PathBuf, AuthoringError> {
    let cargo = match toolchain {
        Toolchain::Rustup => std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()),
        Toolchain::Debian { .. } => "/usr/bin/cargo".into(),
    };
    let out = Command::new(cargo)
        .args(["metadata", "--no-deps", "--format-version", "1", "--manifest-path"])
        .arg(manifest)
        .output()
        .map_err(io("cannot run cargo metadata"))?;
    if !out.status.success() {
        return Err(AuthoringError::Build(format!(
            "cargo cannot read {}:\n{}",
            manifest.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| AuthoringError::Build(format!("cargo metadata printed something unexpected: {e}")))?;
    meta.get("target_directory")
        .and_then(|t| t.as_str())
        .map(PathBuf::from)
        .ok_or_else(|| AuthoringError::Build("cargo metadata did not name a target directory".into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn job_names_must_work_as_crate_and_table_names() {
        for ok in ["a", "nightly-report", "job2", "x-1-y"] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Nightly", "1job", "-job", "job-", "a--b", "a_b", "a b", "jöb", &"a".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }

    #[test]
    fn a_crate_outside_any_workspace_depends_on_the_sdk_by_path_and_is_its_own_workspace() {
        let tmp = tempfile::tempdir().unwrap();
        let made = new_crate("tidy-up", Kind::Single, &tmp.path().join("tidy-up")).unwrap();
        let SdkSource::Path(sdk) = &made.sdk else { panic!("{:?}", made.sdk) };
        assert!(sdk.join("Cargo.toml").is_file());
        let manifest = std::fs::read_to_string(made.dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("name = \"tidy-up\"") && manifest.contains("\n[workspace]\n"), "{manifest}");
        let lib = std::fs::read_to_string(made.dir.join("src/lib.rs")).unwrap();
        assert!(lib.contains("struct TidyUp;") && lib.contains("INSERT INTO tidy_up"), "{lib}");
        let readme = std::fs::read_to_string(made.dir.join("README.md")).unwrap();
        assert!(readme.contains("sundial build .") && readme.contains("tidy_up.wasm"), "{readme}");

        let again = new_crate("tidy-up", Kind::Single, &made.dir).unwrap_err();
        assert!(matches!(again, AuthoringError::Exists(_)), "{again}");
    }

    #[test]
    fn inside_the_workspace_crates_go_to_jobs() {
        let root = sundial_workspace(Path::new(env!("CARGO_MANIFEST_DIR"))).unwrap();
        assert_eq!(default_dir(&root, "x"), root.join("jobs/x"));
        let err = new_crate("x", Kind::Items, &root.join("docs/x")).unwrap_err();
        assert!(err.to_string().contains("jobs/<name>"), "{err}");
        assert!(!root.join("docs/x").exists());
    }
}

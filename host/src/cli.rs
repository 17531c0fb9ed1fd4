//! The `sundial` command line. `main.rs` only calls [`main`].
//!
//! Exit codes: 0 success; 1 a job run did not succeed (failed, partial, timed
//! out, cancelled) or the host failed; 2 invalid input (bad arguments, bad
//! configuration, an invalid cron expression or zone).

use std::io::{IsTerminal as _, Write};
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context as _;
use chrono::{DateTime, Utc};
use clap::{Args, Parser, Subcommand};

use crate::api;
use crate::config::Config;
use crate::host::{Host, HostOptions};
use crate::model::{ExecutionStatus, RunArgs, RunReport};
use crate::schedule::Schedule;
use crate::store::Store;
use crate::telemetry::LogFormat;

/// Sundial: scheduled jobs as sandboxed WebAssembly components.
#[derive(Debug, Parser)]
#[command(name = "sundial", version, about)]
pub struct Cli {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Args)]
struct Global {
    /// Sundial's database (default: sqlite://sundial.db next to the configuration).
    #[arg(long, global = true, env = "SUNDIAL_DATABASE_URL", value_name = "URL")]
    db: Option<String>,
    /// Directory of *.wasm job components (default: ./sundial-jobs).
    #[arg(long, global = true, env = "SUNDIAL_JOBS_DIR", value_name = "DIR")]
    jobs_dir: Option<PathBuf>,
    /// Configuration file (default: ./sundial.toml if present).
    #[arg(long, global = true, env = "SUNDIAL_CONFIG", value_name = "FILE")]
    config: Option<PathBuf>,
    /// Log lines on stderr: `text` for people, `json` (one object per line,
    /// with the execution span's fields) for log collectors.
    #[arg(long, global = true, env = "SUNDIAL_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text)]
    log_format: LogFormat,
    /// Send the execution and batch spans to an OpenTelemetry collector over
    /// OTLP/HTTP: its base URL, e.g. http://127.0.0.1:4318 (`/v1/traces` is
    /// added). Needs a sundial built with `--features otlp`.
    #[arg(long, global = true, env = "SUNDIAL_OTLP_ENDPOINT", value_name = "URL")]
    otlp_endpoint: Option<String>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the scheduler, the jobs, the HTTP API and the UI in the foreground until Ctrl-C.
    Serve(ServeCmd),
    /// Run one job now and exit: 0 if it succeeded, 1 otherwise (for OS cron).
    /// With --component, run a job file directly: no jobs directory, no
    /// running host, the job granted what it asks for (a job author's loop).
    Run(RunCmd),
    /// Scaffold a job crate: Cargo.toml, src/lib.rs with a working job, README.
    New {
        /// The job's name (lowercase letters, digits, dashes).
        name: String,
        /// A single-shot job (`Job`) or a per-item job (`ItemJob`).
        #[arg(long, value_enum, default_value_t = crate::authoring::Kind::Single)]
        kind: crate::authoring::Kind,
        /// Where to create the crate (default: jobs/<name> at the root of
        /// Sundial's workspace, ./<name> anywhere else).
        #[arg(long, value_name = "DIR")]
        path: Option<PathBuf>,
    },
    /// Compile a job crate to a wasm32-wasip2 component with whichever
    /// toolchain is available; print the file, its size, digest and what it asks for.
    Build {
        /// The job crate's directory.
        #[arg(default_value = ".")]
        path: PathBuf,
        /// cargo's target directory for the build (default: wasm/ under the
        /// crate's own target directory).
        #[arg(long, value_name = "DIR")]
        target_dir: Option<PathBuf>,
    },
    /// List the jobs: schedule, time zone, switch, next run.
    Jobs {
        /// One JSON array of the stored jobs instead of a table (for scripts).
        #[arg(long)]
        json: bool,
        /// Also each job's grants (database, HTTP hosts), limits, what it
        /// requests, and any mismatch between the two.
        #[arg(long, short)]
        verbose: bool,
    },
    /// Show a job's recent executions.
    History {
        /// The job's name.
        job: String,
        /// How many executions.
        #[arg(long, default_value_t = 20)]
        limit: u32,
        /// One JSON array of the executions, newest first, instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Preview schedules.
    Schedule {
        #[command(subcommand)]
        command: ScheduleCmd,
    },
    /// Validate a component and install it into the jobs directory (atomically);
    /// a running `serve` picks it up for the job's next execution.
    Deploy {
        /// The component (`.wasm`).
        file: PathBuf,
    },
    /// Put an earlier version of a job's component live again (the last 5
    /// versions are kept; the file need not exist). A running `serve` picks
    /// it up for the job's next execution.
    Rollback {
        /// The job's name.
        job: String,
        /// The version (3 or v3) or a digest prefix (at least 8 hex digits);
        /// default: the newest earlier version with different code.
        #[arg(long, value_name = "VERSION|DIGEST")]
        to: Option<String>,
    },
    /// Create (or refresh) a demo application database for the example jobs.
    Demo {
        /// Number of synthetic users.
        #[arg(long, default_value_t = 1000)]
        users: u64,
    },
    /// Create or upgrade Sundial's tables and exit.
    Migrate,
}

#[derive(Debug, Args)]
struct ServeCmd {
    /// Address of the HTTP API and UI (default: [http] addr, or 127.0.0.1:8080).
    /// A non-loopback address needs a token (SUNDIAL_API_TOKEN).
    #[arg(long, env = "SUNDIAL_HTTP", value_name = "ADDR")]
    http: Option<String>,
    /// Serve no HTTP API or UI.
    #[arg(long, conflicts_with = "http")]
    no_http: bool,
}

#[derive(Debug, Args)]
struct RunCmd {
    /// The job's name.
    #[arg(required_unless_present = "component")]
    job: Option<String>,
    /// Run this component file instead of a job of the jobs directory. Its
    /// execution record is kept in a temporary database; --db names the
    /// application database the job reads and writes.
    #[arg(long, value_name = "FILE.wasm", conflicts_with = "job")]
    component: Option<PathBuf>,
    /// Run as if scheduled for this local date (YYYY-MM-DD), e.g. a backfill.
    #[arg(long, value_name = "YYYY-MM-DD")]
    date: Option<String>,
    /// Process at most N items.
    #[arg(long, value_name = "N")]
    limit: Option<u64>,
    /// Run everything, commit nothing.
    #[arg(long)]
    dry_run: bool,
    /// An argument for the job (repeatable).
    #[arg(long = "arg", value_name = "KEY=VALUE", value_parser = parse_kv)]
    args: Vec<(String, String)>,
    /// Print the outcome as one JSON object on stdout (for scripts).
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum ScheduleCmd {
    /// Print the next fire instants of an expression, one per line, in UTC.
    Next {
        /// A cron expression, e.g. "30 2 * * *".
        expression: String,
        /// IANA time zone of the expression.
        #[arg(long, default_value = "UTC")]
        tz: String,
        /// Print instants strictly after this RFC 3339 instant (default: now).
        #[arg(long)]
        after: Option<String>,
        /// How many instants.
        #[arg(long, default_value_t = 5)]
        count: usize,
    },
}

fn parse_kv(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

/// An error that maps to exit code 2 (the user's input is invalid).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Invalid(String);

/// Parses the command line, runs the command, and maps the outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let default_level = if matches!(cli.command, Command::Serve(_)) { "info" } else { "warn" };
    let telemetry =
        match crate::telemetry::init(cli.global.log_format, default_level, cli.global.otlp_endpoint.as_deref()) {
            Ok(t) => t,
            Err(message) => {
                eprintln!("error: {message}");
                return ExitCode::from(2);
            }
        };

    let result = run(cli);
    telemetry.shutdown();
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            if e.downcast_ref::<Invalid>().is_some() || e.downcast_ref::<crate::config::ConfigError>().is_some() {
                ExitCode::from(2)
            } else {
                ExitCode::from(1)
            }
        }
    }
}

fn run(cli: Cli) -> anyhow::Result<ExitCode> {
    match &cli.command {
        Command::Schedule { command: ScheduleCmd::Next { expression, tz, after, count } } => {
            return schedule_next(expression, tz, after.as_deref(), *count);
        }
        Command::New { name, kind, path } => return new_crate(name, *kind, path.as_deref()),
        Command::Build { path, target_dir } => return build_crate(path, target_dir.as_deref()),
        _ => {}
    }
    let config = Config::load(cli.global.config.as_deref())?;
    let mut options = HostOptions::new(config);
    options.database_url = cli.global.db.clone();
    options.jobs_dir = cli.global.jobs_dir.clone();
    let system = actix_rt::System::new();
    system.block_on(async move {
        match cli.command {
            Command::Serve(cmd) => serve(options, cmd).await,
            Command::Run(cmd) => run_job(options, cmd).await,
            Command::Jobs { json, verbose } => jobs(options, json, verbose).await,
            Command::History { job, limit, json } => history(options, &job, limit, json).await,
            Command::Demo { users } => demo(options, users).await,
            Command::Deploy { file } => deploy(options, &file).await,
            Command::Rollback { job, to } => rollback(options, &job, to.as_deref()).await,
            Command::Migrate => {
                let url = options.database_url();
                Store::open(&url).await?.close().await;
                println!("database {url} is up to date");
                Ok(ExitCode::SUCCESS)
            }
            Command::Schedule { .. } | Command::New { .. } | Command::Build { .. } => Ok(ExitCode::SUCCESS),
        }
    })
}

fn authoring(e: crate::authoring::AuthoringError) -> anyhow::Error {
    if e.is_input() { Invalid(e.to_string()).into() } else { e.into() }
}

fn new_crate(name: &str, kind: crate::authoring::Kind, path: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use crate::authoring::SdkSource;
    let cwd = std::env::current_dir().context("cannot read the current directory")?;
    let dir = path.map_or_else(|| crate::authoring::default_dir(&cwd, name), std::path::Path::to_path_buf);
    let made = crate::authoring::new_crate(name, kind, &dir).map_err(authoring)?;
    let shown = made.dir.strip_prefix(&cwd).unwrap_or(&made.dir).display().to_string();
    let shown = if shown.is_empty() { ".".to_string() } else { shown };
    println!("created {shown}/ (Cargo.toml, src/lib.rs, README.md)");
    match &made.sdk {
        SdkSource::Workspace => println!("  a member of Sundial's workspace (jobs/*)"),
        SdkSource::Path(p) => println!("  depends on the SDK at {}", p.display()),
        SdkSource::Version(v) => {
            println!(
                "  depends on sundial-guest {v} by version (set SUNDIAL_GUEST_SDK to a checkout's guest-sdk/ to use it by path)"
            )
        }
    }
    println!(
        "next:
  sundial build {shown}
  sundial run --component <the printed .wasm> --db sqlite://app.db --dry-run"
    );
    Ok(ExitCode::SUCCESS)
}

fn build_crate(path: &std::path::Path, target_dir: Option<&std::path::Path>) -> anyhow::Result<ExitCode> {
    use sha2::Digest;
    let built = crate::authoring::build(path, target_dir).map_err(authoring)?;
    let digest = hex::encode(sha2::Sha256::digest(&built.bytes));
    // Loading it is the check a host makes: a component of the right world
    // that describes itself.
    let runtime = crate::runtime::Runtime::new(std::sync::Arc::new(crate::clock::SystemClock))?;
    let version = runtime
        .load_blocking(&built.bytes)
        .map_err(|e| anyhow::anyhow!("{} was built but a host would refuse it: {e}", built.path.display()))?;
    let info = &version.info;
    println!("{}", built.path.display());
    println!("  {} bytes, sha256 {digest}", built.bytes.len());
    println!(
        "  job {:?} ({}), schedule {:?} {}",
        info.name,
        match info.kind {
            crate::model::JobKind::Single => "single-shot",
            crate::model::JobKind::Items => "per-item",
        },
        info.default_schedule,
        info.default_timezone
    );
    let asks: Vec<String> = info.capabilities.iter().map(ToString::to_string).collect();
    println!("  asks for: {}", if asks.is_empty() { "nothing".to_string() } else { asks.join(", ") });
    Ok(ExitCode::SUCCESS)
}

fn check_jobs_dir(options: &HostOptions) -> anyhow::Result<()> {
    let dir = options.jobs_dir();
    if !dir.is_dir() {
        return Err(Invalid(format!(
            "jobs directory {} does not exist (build the jobs with `cargo xtask build-jobs`, or pass --jobs-dir)",
            dir.display()
        ))
        .into());
    }
    Ok(())
}

async fn serve(options: HostOptions, cmd: ServeCmd) -> anyhow::Result<ExitCode> {
    check_jobs_dir(&options)?;
    let http = &options.config.http;
    let addr =
        (!cmd.no_http).then(|| cmd.http.clone().or_else(|| http.addr.clone()).unwrap_or(api::DEFAULT_ADDR.into()));
    let token = std::env::var("SUNDIAL_API_TOKEN").ok().filter(|t| !t.is_empty()).or_else(|| http.token.clone());
    let host = Host::start(options).await.context("cannot start the host")?;
    for (file, error) in &host.loaded.failed {
        tracing::error!(file = %file.display(), %error, "not loaded");
    }
    let server = match addr {
        Some(addr) => {
            let serving = match api::serve(host.clone(), &addr, token) {
                Ok(s) => s,
                Err(e) => {
                    host.stop().await;
                    return Err(match e {
                        api::SecurityError::Address { .. } => anyhow::Error::new(e),
                        e => Invalid(e.to_string()).into(),
                    });
                }
            };
            let url = format!("http://{}", serving.addr);
            if serving.generated_token {
                tracing::info!(
                    "UI and API at {url}/#token={} (token made up at start; set SUNDIAL_API_TOKEN to choose one)",
                    serving.token
                );
            } else {
                tracing::info!("UI and API at {url}/ (state changes need the configured token)");
            }
            let handle = serving.server.handle();
            actix_rt::spawn(serving.server);
            Some(handle)
        }
        None => None,
    };
    tracing::info!(jobs = host.loaded.loaded.len(), "sundial is running; Ctrl-C (or SIGTERM) stops it");
    let signal = stop_signal().await.context("cannot wait for a stop signal")?;
    let grace = host.config.shutdown_grace();
    tracing::info!(signal, grace_secs = grace.as_secs(), "stopping: running executions get the grace period to finish");
    if let Some(h) = server {
        h.stop(true).await;
    }
    host.shutdown(grace).await;
    Ok(ExitCode::SUCCESS)
}

/// Waits for SIGINT (Ctrl-C) or SIGTERM (service managers); names it.
async fn stop_signal() -> std::io::Result<&'static str> {
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        tokio::select! {
            r = tokio::signal::ctrl_c() => r.map(|()| "SIGINT"),
            _ = term.recv() => Ok("SIGTERM"),
        }
    }
    #[cfg(not(unix))]
    {
        tokio::signal::ctrl_c().await.map(|()| "Ctrl-C")
    }
}

async fn deploy(mut options: HostOptions, file: &std::path::Path) -> anyhow::Result<ExitCode> {
    check_jobs_dir(&options)?;
    let bytes = read_component(file)?;
    options.schedule = false;
    let host = Host::start(options).await.context("cannot start the host")?;
    let result = host.deploy(bytes).await;
    host.stop().await;
    match result {
        Ok(job) => {
            let version = job.component_version.map_or("-".into(), |v| format!("v{v}"));
            let digest = job.component_digest.unwrap_or_default();
            println!("deployed {} {version} ({digest})", job.name);
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (crate::host::HostError::InvalidComponent(_) | crate::host::HostError::Deploy(_))) => {
            Err(Invalid(format!("{} was not deployed: {e}", file.display())).into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn rollback(mut options: HostOptions, job: &str, to: Option<&str>) -> anyhow::Result<ExitCode> {
    use crate::host::HostError;
    check_jobs_dir(&options)?;
    options.schedule = false;
    let host = Host::start(options).await.context("cannot start the host")?;
    let result = host.rollback(job, to).await;
    host.stop().await;
    match result {
        Ok(done) => {
            let short = done.to.digest.get(..12).unwrap_or(&done.to.digest);
            let live = done.job.component_version.map_or("-".into(), |v| format!("v{v}"));
            println!(
                "rolled back {job} from v{} to the code of v{} ({short}…), live as {live}",
                done.from, done.to.version
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e @ (HostError::Rollback(_) | HostError::UnknownJob { .. } | HostError::InvalidComponent(_))) => {
            Err(Invalid(format!("{job} was not rolled back: {e}")).into())
        }
        Err(e) => Err(e.into()),
    }
}

/// Prepares a run of a component file: a temporary jobs directory holding
/// it, a temporary database for Sundial's records (and the compile cache),
/// the application database from --db or the configuration, and the job
/// granted what it asks for unless the configuration says otherwise. Returns
/// the job's name and the directory to keep until the run is over.
async fn prepare_component_run(
    options: &mut HostOptions,
    file: &std::path::Path,
) -> anyhow::Result<(String, tempfile::TempDir)> {
    use crate::model::Capability;
    let bytes = read_component(file)?;
    let scratch =
        tempfile::Builder::new().prefix("sundial-run-").tempdir().context("cannot make a temporary directory")?;
    options.config.cache_dir = Some(scratch.path().join("cache"));
    let settings = crate::runtime::EngineSettings::with_fuel(options.config.meters_fuel());
    let runtime = crate::runtime::Runtime::with_settings(options.clock.clone(), Some(&options.cache_dir()), settings)?;
    let version =
        runtime.load(bytes.clone()).await.map_err(|e| Invalid(format!("{} cannot run: {e}", file.display())))?;
    let info = &version.info;
    let requested_db = info.capabilities.iter().find_map(|c| match c {
        Capability::Database(a) => Some(*a),
        _ => None,
    });
    let app_url = options
        .database_url
        .clone()
        .or_else(|| options.config.app_database.clone().or_else(|| options.config.database.clone()))
        .map(|u| options.config.resolve_url(&u));
    let app_url = match (app_url, requested_db) {
        (Some(url), _) => url,
        (None, Some(access)) if access != crate::model::DbAccess::None => {
            return Err(Invalid(format!(
                "{} asks for {access} access to the application database: pass --db sqlite://FILE \
                 (`sundial demo --db sqlite://app.db` makes a demo database)",
                info.name
            ))
            .into());
        }
        (None, _) => format!("sqlite://{}", scratch.path().join("app.db").display()),
    };
    let settings = options.config.jobs.entry(info.name.clone()).or_default();
    if settings.database.is_none() {
        settings.database = requested_db;
    }
    if settings.http.is_none() {
        let hosts: Vec<String> = info
            .capabilities
            .iter()
            .filter_map(|c| match c {
                Capability::Http(h) if h != "*" => Some(h.clone()),
                _ => None,
            })
            .collect();
        settings.http = Some(hosts);
    }
    let grants: Vec<String> = settings
        .database
        .map(|a| format!("database {a}"))
        .into_iter()
        .chain(settings.http.iter().flatten().map(|h| format!("http {h}")))
        .collect();
    eprintln!(
        "running {} (sha256 {}…) from {} against {app_url}; granted: {}",
        info.name,
        version.digest.get(..12).unwrap_or(&version.digest),
        file.display(),
        if grants.is_empty() { "nothing".to_string() } else { grants.join(", ") }
    );
    let name = info.name.clone();
    let jobs = scratch.path().join("jobs");
    std::fs::create_dir_all(&jobs)?;
    std::fs::write(jobs.join(sundial_toolchain::component_file_name(&name)), &bytes[..])?;
    options.jobs_dir = Some(jobs);
    options.database_url = Some(format!("sqlite://{}", scratch.path().join("sundial.db").display()));
    options.config.app_database = Some(app_url);
    Ok((name, scratch))
}

/// Reads a component file, refusing one over the size limit.
fn read_component(file: &std::path::Path) -> anyhow::Result<Vec<u8>> {
    let meta = std::fs::metadata(file).map_err(|e| Invalid(format!("cannot read {}: {e}", file.display())))?;
    if meta.len() > crate::runtime::MAX_COMPONENT_BYTES as u64 {
        let max = crate::runtime::MAX_COMPONENT_BYTES;
        return Err(Invalid(format!(
            "{} is {} bytes, larger than the limit of {max} bytes",
            file.display(),
            meta.len()
        ))
        .into());
    }
    Ok(std::fs::read(file).map_err(|e| Invalid(format!("cannot read {}: {e}", file.display())))?)
}

async fn run_job(mut options: HostOptions, cmd: RunCmd) -> anyhow::Result<ExitCode> {
    if let Some(d) = &cmd.date {
        chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d")
            .map_err(|_| Invalid(format!("--date {d:?} is not a date in the form YYYY-MM-DD")))?;
    }
    let (job, scratch) = match (&cmd.component, &cmd.job) {
        (Some(file), _) => {
            let (job, scratch) = prepare_component_run(&mut options, file).await?;
            (job, Some(scratch))
        }
        (None, Some(job)) => {
            check_jobs_dir(&options)?;
            (job.clone(), None)
        }
        (None, None) => return Err(Invalid("name a job, or pass --component FILE.wasm".into()).into()),
    };
    options.schedule = false;
    let host = Host::start(options).await.context("cannot start the host")?;
    if scratch.is_some()
        && let Some((file, error)) = host.loaded.failed.first()
    {
        let message = format!("{} cannot run: {error}", file.display());
        host.stop().await;
        return Err(Invalid(message).into());
    }
    let args = RunArgs { date: cmd.date, limit: cmd.limit, dry_run: cmd.dry_run, args: cmd.args };
    let mut events = host.subscribe();
    let started = match host.start_run(&job, args).await {
        Ok(s) => s,
        Err(e @ crate::host::HostError::UnknownJob { .. }) => return Err(Invalid(e.to_string()).into()),
        Err(e) => return Err(e.into()),
    };
    let id = started.id;
    let mut done = started.done;
    let mut progress = ProgressLine::new(&job, std::io::stderr().is_terminal());
    let report = loop {
        tokio::select! {
            r = &mut done => break r.map_err(|_| crate::host::HostError::Abandoned)?,
            e = events.recv() => {
                if let Ok(crate::events::Event::ExecutionProgress { id: of, done, total, .. }) = e
                    && of == id
                {
                    progress.update(done, total);
                }
            }
        }
    };
    progress.finish();
    let report = settled(&host, id, report).await;
    host.stop().await;
    drop(scratch);
    if cmd.component.is_some() && !cmd.json {
        // The author's loop: the job's own log lines first.
        for line in report.logs.lines() {
            eprintln!("  | {line}");
        }
        if cmd.dry_run {
            eprintln!("  dry run: nothing was committed");
        }
    }
    if cmd.json {
        let ok =
            matches!(report.status, ExecutionStatus::Succeeded | ExecutionStatus::Skipped) && report.items_failed == 0;
        let problems: Vec<_> = report
            .problems
            .iter()
            .map(|p| serde_json::json!({"item": p.key, "class": p.class, "message": p.message}))
            .collect();
        let v = serde_json::json!({
            "job": job,
            "execution_id": id,
            "status": report.status,
            "summary": report.summary,
            "changed": report.changed,
            "items": {"total": report.items_total, "ok": report.items_ok,
                      "skipped": report.items_skipped, "failed": report.items_failed},
            "error_class": report.error_class,
            "error": report.error_message,
            "problems": problems,
        });
        println!("{v}");
        return Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) });
    }
    let mut out = std::io::stdout().lock();
    writeln!(out, "{job}: {}", report.status)?;
    if let Some(s) = &report.summary {
        writeln!(out, "  {s}")?;
    }
    if report.items_total > 0 {
        writeln!(
            out,
            "  items: {} total, {} ok, {} skipped, {} failed",
            report.items_total, report.items_ok, report.items_skipped, report.items_failed
        )?;
    }
    writeln!(out, "  changed: {}", report.changed)?;
    if let (Some(class), Some(msg)) = (report.error_class, &report.error_message) {
        eprintln!("  {class}: {msg}");
    }
    for p in report.problems.iter().take(20) {
        eprintln!("  item {}: {} ({})", p.key, p.message, p.class);
    }
    let ok = matches!(report.status, ExecutionStatus::Succeeded | ExecutionStatus::Skipped) && report.items_failed == 0;
    Ok(if ok { ExitCode::SUCCESS } else { ExitCode::from(1) })
}

/// The run's outcome as recorded: on a database shared by several hosts, a
/// run whose host lost its lease (paused, or cut off from the database, for
/// longer than the lease) was taken for crashed by another host, and its own
/// outcome was refused.
async fn settled(host: &Host, id: crate::model::ExecutionId, mut report: RunReport) -> RunReport {
    if let Ok(Some(e)) = host.store.get_execution(id).await
        && e.status == ExecutionStatus::Crashed
        && report.status != ExecutionStatus::Crashed
    {
        eprintln!(
            "execution {id} ended {} here, but this host had lost its lease and another host recorded it as crashed",
            report.status
        );
        report.status = e.status;
        report.error_class = e.error_class;
        report.error_message = e.error_message;
    }
    report
}

/// `sundial run`'s progress on stderr: a bar redrawn in place on a
/// terminal, a plain line every few seconds otherwise (logs, cron mail).
struct ProgressLine {
    job: String,
    tty: bool,
    started: std::time::Instant,
    last_line: Option<std::time::Instant>,
    drawn: bool,
}

/// How often a plain progress line is written when stderr is not a terminal.
const PLAIN_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

impl ProgressLine {
    fn new(job: &str, tty: bool) -> Self {
        ProgressLine { job: job.to_string(), tty, started: std::time::Instant::now(), last_line: None, drawn: false }
    }

    fn update(&mut self, done: u64, total: Option<u64>) {
        if done == 0 && total.is_none() {
            return; // a single-shot job, or nothing known yet
        }
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        let rate = done as f64 / secs;
        let eta = match total {
            Some(t) if t > done && rate > 0.0 => format!(", ETA {}", humanize((t - done) as f64 / rate)),
            _ => String::new(),
        };
        let count = match total {
            Some(t) if t > 0 => format!("{done}/{t} ({}%)", done.saturating_mul(100) / t),
            _ => done.to_string(),
        };
        if self.tty {
            let bar = match total {
                Some(t) if t > 0 => {
                    let filled = ((done.min(t) as f64 / t as f64) * 30.0).round() as usize;
                    format!("[{}{}] ", "#".repeat(filled), "-".repeat(30 - filled))
                }
                _ => String::new(),
            };
            eprint!("\r\x1b[2K{} {bar}{count} items, {rate:.0}/s{eta}", self.job);
            self.drawn = true;
        } else if self.last_line.is_none_or(|l| l.elapsed() >= PLAIN_EVERY) {
            eprintln!("{}: progress: {count} items, {rate:.0} items/s{eta}", self.job);
            self.last_line = Some(std::time::Instant::now());
        }
    }

    fn finish(&mut self) {
        if self.drawn {
            eprintln!();
        }
    }
}

fn humanize(secs: f64) -> String {
    let s = secs.round() as u64;
    match s {
        0..=59 => format!("{s}s"),
        60..=3599 => format!("{}m{:02}s", s / 60, s % 60),
        _ => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
    }
}

async fn jobs(mut options: HostOptions, json: bool, verbose: bool) -> anyhow::Result<ExitCode> {
    check_jobs_dir(&options)?;
    options.schedule = false;
    let host = Host::start(options).await.context("cannot start the host")?;
    let jobs = host.store.list_jobs().await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&jobs)?);
        host.stop().await;
        return Ok(ExitCode::SUCCESS);
    }
    let now = Utc::now();
    // Item-local jobs fire in their items' zones, not in `timezone`.
    let item_zones: std::collections::HashMap<String, crate::config::ItemZones> = host
        .snapshots()
        .await?
        .into_iter()
        .filter_map(|s| Some((s.job.name.clone(), s.config.item_zones.clone()?)))
        .collect();
    let mut rows =
        vec![["NAME", "SCHEDULE", "ZONE", "ENABLED", "NEXT RUN (UTC)", "VERSION"].map(String::from).to_vec()];
    for j in &jobs {
        let from = j.last_scheduled_for.map_or(now, |l| l.max(now));
        let schedule = Schedule::parse(&j.schedule, &j.timezone).ok();
        let next = match (item_zones.get(&j.name), &schedule) {
            (_, None) => None,
            (None, Some(s)) => s.next_after(from),
            (Some(zones), Some(s)) => match zones.fixed_schedule(s) {
                Some(items) => items.next_after(from),
                // The zones are in the application's data: as the serving host last computed it.
                None => j.next_run_at.filter(|n| *n > now),
            },
        };
        let next = next.map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string()).unwrap_or_else(|| "-".into());
        let zone = if item_zones.contains_key(&j.name) { "items' own".to_string() } else { j.timezone.clone() };
        rows.push(vec![
            j.name.clone(),
            j.schedule.clone(),
            zone,
            if j.enabled { "yes" } else { "no" }.into(),
            next,
            j.component_version.map_or("-".into(), |v| format!("v{v}")),
        ]);
    }
    print_table(&rows)?;
    if verbose {
        println!();
        let mut rows = vec![
            ["NAME", "DATABASE", "HTTP HOSTS", "STATE", "TIMEOUT", "MEMORY", "FUEL", "REQUESTS", "MISMATCHES"]
                .map(String::from)
                .to_vec(),
        ];
        for s in host.snapshots().await? {
            let c = &s.config;
            let hosts: Vec<String> = c.limits.http.hosts().iter().map(ToString::to_string).collect();
            let requested: Vec<String> = s.info.capabilities.iter().map(ToString::to_string).collect();
            let mismatches = s.grant_mismatches();
            let or_dash = |v: Vec<String>| if v.is_empty() { "-".to_string() } else { v.join(", ") };
            rows.push(vec![
                s.job.name.clone(),
                c.database.as_str().to_string(),
                or_dash(hosts),
                if c.state { "yes" } else { "no" }.to_string(),
                format!("{}s", c.limits.timeout.as_secs()),
                format!("{} MiB", c.limits.memory_bytes >> 20),
                c.limits.fuel.map_or_else(|| "-".to_string(), |f| f.to_string()),
                or_dash(requested),
                or_dash(mismatches),
            ]);
        }
        print_table(&rows)?;
    }
    for (file, error) in &host.loaded.failed {
        eprintln!("not loaded: {}: {error}", file.display());
    }
    host.stop().await;
    Ok(ExitCode::SUCCESS)
}

async fn history(options: HostOptions, job: &str, limit: u32, json: bool) -> anyhow::Result<ExitCode> {
    let store = Store::open(&options.database_url()).await?;
    if store.get_job(job).await?.is_none() {
        let known: Vec<String> = store.list_jobs().await?.into_iter().map(|j| j.name).collect();
        return Err(Invalid(format!("unknown job {job:?} (known jobs: {})", known.join(", "))).into());
    }
    let execs = store.list_executions(job, limit, None).await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&execs)?);
        store.close().await;
        return Ok(ExitCode::SUCCESS);
    }
    let mut rows = vec![
        ["ID", "TRIGGER", "SCHEDULED FOR (UTC)", "STATUS", "ATTEMPT", "DURATION", "VERSION", "DETAIL"]
            .map(String::from)
            .to_vec(),
    ];
    for e in &execs {
        let duration = match (e.started_at, e.finished_at) {
            (Some(s), Some(f)) => format!("{:.3}s", (f - s).num_milliseconds() as f64 / 1000.0),
            _ => "-".into(),
        };
        let detail = e.error_message.clone().or_else(|| e.summary.clone()).unwrap_or_default();
        rows.push(vec![
            e.id.to_string(),
            e.trigger.to_string(),
            e.scheduled_for.format("%Y-%m-%d %H:%M:%S").to_string(),
            e.status.to_string(),
            e.attempt.to_string(),
            duration,
            e.component_version.map_or("-".into(), |v| format!("v{v}")),
            detail.chars().take(80).collect(),
        ]);
    }
    print_table(&rows)?;
    store.close().await;
    Ok(ExitCode::SUCCESS)
}

async fn demo(options: HostOptions, users: u64) -> anyhow::Result<ExitCode> {
    let url = options.app_database_url();
    let (done, seeded) = tokio::sync::oneshot::channel();
    {
        // A thread of its own: the Postgres client blocks on a runtime of its own.
        let url = url.clone();
        std::thread::spawn(move || {
            let seeded = (|| -> anyhow::Result<crate::demo::DemoCounts> {
                if crate::store::is_postgres_url(&url) {
                    return Ok(crate::demo::seed_postgres(&url, users, Utc::now())?);
                }
                let mut conn = crate::demo::open(&url)?;
                Ok(crate::demo::seed(&mut conn, users, Utc::now())?)
            })();
            let _ = done.send(seeded);
        });
    }
    let url = crate::store::redact_url(&url);
    let c = seeded.await?.with_context(|| format!("seeding {url}"))?;
    println!(
        "demo data in {url}: {} users ({} active, {} on TRIAL/PAID), {} sessions ({} expired), \
         {} food entries ({} deleted over 30 days ago), {} targets, {} snapshots, {} daily reports, \
         {} recommendations, {} workouts ({} users trained in the last 30 days), {} metrics rows, {} weekly reports",
        c.users,
        c.active_users,
        c.premium_active_users,
        c.sessions,
        c.expired_sessions,
        c.food_entries,
        c.old_deleted_entries,
        c.targets,
        c.snapshots,
        c.daily_reports,
        c.recommendations,
        c.workouts,
        c.workout_active_users,
        c.behavior_metrics,
        c.weekly_reports
    );
    Ok(ExitCode::SUCCESS)
}

fn schedule_next(expression: &str, tz: &str, after: Option<&str>, count: usize) -> anyhow::Result<ExitCode> {
    let schedule = Schedule::parse(expression, tz).map_err(|e| Invalid(e.to_string()))?;
    let after = match after {
        Some(a) => DateTime::parse_from_rfc3339(a)
            .map_err(|e| Invalid(format!("--after {a:?} is not an RFC 3339 instant: {e}")))?
            .with_timezone(&Utc),
        None => Utc::now(),
    };
    let mut out = std::io::stdout().lock();
    for t in schedule.iter_after(after).take(count) {
        writeln!(out, "{}", t.format("%Y-%m-%dT%H:%M:%SZ"))?;
    }
    Ok(ExitCode::SUCCESS)
}

fn print_table(rows: &[Vec<String>]) -> std::io::Result<()> {
    let cols = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> =
        (0..cols).map(|c| rows.iter().map(|r| r.get(c).map_or(0, |s| s.chars().count())).max().unwrap_or(0)).collect();
    let mut out = std::io::stdout().lock();
    for r in rows {
        let line: Vec<String> = r.iter().enumerate().map(|(i, s)| format!("{s:<w$}", w = widths[i])).collect();
        writeln!(out, "{}", line.join("  ").trim_end())?;
    }
    Ok(())
}

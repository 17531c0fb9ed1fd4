//! `sundial.toml`: database URLs, the jobs directory, and per-job overrides
//! and grants.
//!
//! Precedence for every job setting: `[jobs.<name>]`, then `[defaults]`, then
//! what the component's `describe` says, then the built-in default. Grants are
//! never taken from `describe`: a job gets only what the operator writes here
//! (deny by default).
//!
//! ```toml
//! database = "sqlite://sundial.db"     # Sundial's own tables
//! app_database = "sqlite://app.db"     # what jobs read and write (default: same file)
//! jobs_dir = "target/sundial-jobs"     # *.wasm loaded at start
//!
//! [defaults]
//! timeout_secs = 300
//!
//! [jobs.cleanup]
//! schedule = "* * * * *"
//! timezone = "UTC"
//! database = "read-write"
//! args = { retention_days = "30" }
//!
//! [jobs.listed-companies]
//! http = ["api.example.com", "127.0.0.1:8123"]   # hosts it may reach; none by default
//!
//! [jobs.weekly-digest]
//! state = true                         # private key-value state; none by default
//! ```
//!
//! `state = true` grants the job its private key-value state (the `state`
//! interface), kept in Sundial's own database between executions and across
//! new versions of the job: keys of 1 to 256 bytes, values of at most 1 MiB,
//! at most 10,000 keys per job.
//!
//! Relative paths (the jobs directory, SQLite files) are relative to the
//! directory of the configuration file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::model::{Capability, DbAccess, HttpAllowlist, HttpHost, JobInfo, MisfirePolicy, OverlapPolicy};
use crate::runtime::Limits;
use crate::schedule::{LocalSlot, Schedule};

/// The default configuration file, looked up in the working directory.
pub const DEFAULT_CONFIG_FILE: &str = "sundial.toml";
/// The default database: a SQLite file in the working directory.
pub const DEFAULT_DATABASE: &str = "sqlite://sundial.db";
/// The default jobs directory.
pub const DEFAULT_JOBS_DIR: &str = "sundial-jobs";

/// Errors reading or validating configuration.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read configuration file {path}")]
    Read {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The file is not valid TOML or has unknown keys.
    #[error("invalid configuration file {path}: {message}")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What is wrong, with line and column.
        message: String,
    },
    /// A section other than a job's is invalid.
    #[error("invalid configuration in {section}: {message}")]
    Section {
        /// The section, e.g. `[[webhooks]]`.
        section: &'static str,
        /// What is wrong.
        message: String,
    },
    /// A value is invalid.
    #[error("invalid configuration for job {job:?}: {message}")]
    Job {
        /// The job.
        job: String,
        /// What is wrong.
        message: String,
    },
}

/// Per-job settings; every field optional so `[defaults]` and `[jobs.x]` merge.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct JobSettings {
    /// Cron expression overriding the job's default.
    pub schedule: Option<String>,
    /// IANA zone overriding the job's default.
    pub timezone: Option<String>,
    /// Whether the scheduler fires the job.
    pub enabled: Option<bool>,
    /// Database grant: "none", "read-only" or "read-write".
    pub database: Option<DbAccess>,
    /// HTTP grant: the hosts (`host` or `host:port`) the job may reach.
    pub http: Option<Vec<String>>,
    /// Key-value state grant: whether the job may keep private state.
    pub state: Option<bool>,
    /// Outbound HTTP requests a second, across all the job's executions.
    pub http_rate_per_sec: Option<u32>,
    /// Deadline of one execution, in seconds.
    pub timeout_secs: Option<u64>,
    /// Memory limit of one execution, in MiB.
    pub memory_mib: Option<u64>,
    /// Fuel budget of one execution (about one unit per guest instruction);
    /// none: unlimited.
    pub fuel: Option<u64>,
    /// Overlap policy: "skip", "queue-one" or "allow".
    pub overlap: Option<OverlapPolicy>,
    /// Misfire policy: "skip", "once" or "all".
    pub misfire: Option<MisfirePolicy>,
    /// Attempts per scheduled instant (1 = no retries).
    pub max_attempts: Option<u32>,
    /// Base delay before the first retry, in seconds (doubles each time).
    pub retry_backoff_secs: Option<u64>,
    /// Runs longer than this many seconds are flagged and logged (default 3600).
    pub expected_duration_secs: Option<u64>,
    /// Re-run an execution that was cut short by a host crash (default false).
    pub retry_on_crash: Option<bool>,
    /// Order among executions waiting for a slot (`max_running`): higher
    /// first (default 0).
    pub priority: Option<i32>,
    /// At most this many executions of the job at once (with `overlap =
    /// "allow"`); more wait, queued.
    pub max_running: Option<u32>,
    /// Scheduled runs start this many seconds (at most) after their instant,
    /// at an offset fixed per job, so a fleet's jobs do not all start at :00.
    pub jitter_secs: Option<u32>,
    /// Item-local scheduling: the schedule is read in each item's own zone.
    /// `"all"` (every zone of the time zone database) or a list of slots,
    /// `"Asia/Tokyo"` or `"Asia/Tokyo@07:30"` (a local time of day replacing
    /// the schedule's hour and minute).
    pub item_zones: Option<ItemZonesSetting>,
    /// Item-local scheduling with the slots read from the application
    /// database: a query returning a zone and optionally an `HH:MM` local
    /// time per row (e.g. `SELECT DISTINCT timezone FROM users`).
    pub item_zones_query: Option<String>,
    /// Workers on each host for an item job's items, with the application
    /// database on Postgres: the run's pages are claimed by this many workers
    /// on the host that runs it and on every other host serving the job.
    pub item_workers: Option<u32>,
    /// Operator arguments passed to every run.
    #[serde(default)]
    pub args: BTreeMap<String, String>,
}

/// `item_zones`: `"all"` or a list of slots.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(untagged)]
pub enum ItemZonesSetting {
    /// `"all"`.
    Word(String),
    /// `["Asia/Tokyo", "Europe/London@07:30"]`.
    List(Vec<String>),
}

/// Where an item-local job's slots come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ItemZones {
    /// Every zone of the time zone database.
    All,
    /// A fixed list.
    List(Vec<LocalSlot>),
    /// A read-only query on the application database, refreshed while the
    /// host runs.
    Query(String),
}

impl ItemZones {
    /// The item schedule of `base` over these slots, when they are known from
    /// configuration alone (`None` for a query, read at run time).
    pub fn fixed_schedule(&self, base: &Schedule) -> Option<crate::schedule::ItemSchedule> {
        match self {
            ItemZones::All => Some(crate::schedule::ItemSchedule::every_zone(base)),
            ItemZones::List(slots) => Some(crate::schedule::ItemSchedule::new(base, slots.iter().copied())),
            ItemZones::Query(_) => None,
        }
    }
}

impl JobSettings {
    /// The item-local slots, validated (`None`: the job is not item-local).
    fn item_zones(&self) -> Result<Option<ItemZones>, String> {
        match (&self.item_zones, &self.item_zones_query) {
            (Some(_), Some(_)) => Err("set either item_zones or item_zones_query, not both".into()),
            (None, None) => Ok(None),
            (None, Some(q)) if q.trim().is_empty() => Err("item_zones_query is empty".into()),
            (None, Some(q)) => Ok(Some(ItemZones::Query(q.clone()))),
            (Some(ItemZonesSetting::Word(w)), None) if w == "all" => Ok(Some(ItemZones::All)),
            (Some(ItemZonesSetting::Word(w)), None) => Err(format!(
                "item_zones must be \"all\" or a list of zones such as [\"Asia/Tokyo\", \"Europe/London@07:30\"], got {w:?}"
            )),
            (Some(ItemZonesSetting::List(l)), None) => {
                if l.is_empty() {
                    return Err("item_zones is an empty list: the job would never run".into());
                }
                let slots = l
                    .iter()
                    .map(|s| s.parse::<LocalSlot>().map_err(|e| format!("item_zones: {e}")))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(Some(ItemZones::List(slots)))
            }
        }
    }

    fn over(&self, base: &JobSettings) -> JobSettings {
        let mut args = base.args.clone();
        args.extend(self.args.clone());
        JobSettings {
            schedule: self.schedule.clone().or_else(|| base.schedule.clone()),
            timezone: self.timezone.clone().or_else(|| base.timezone.clone()),
            enabled: self.enabled.or(base.enabled),
            database: self.database.or(base.database),
            http: self.http.clone().or_else(|| base.http.clone()),
            state: self.state.or(base.state),
            http_rate_per_sec: self.http_rate_per_sec.or(base.http_rate_per_sec),
            timeout_secs: self.timeout_secs.or(base.timeout_secs),
            memory_mib: self.memory_mib.or(base.memory_mib),
            fuel: self.fuel.or(base.fuel),
            overlap: self.overlap.or(base.overlap),
            misfire: self.misfire.or(base.misfire),
            max_attempts: self.max_attempts.or(base.max_attempts),
            retry_backoff_secs: self.retry_backoff_secs.or(base.retry_backoff_secs),
            expected_duration_secs: self.expected_duration_secs.or(base.expected_duration_secs),
            retry_on_crash: self.retry_on_crash.or(base.retry_on_crash),
            priority: self.priority.or(base.priority),
            max_running: self.max_running.or(base.max_running),
            jitter_secs: self.jitter_secs.or(base.jitter_secs),
            item_zones: self.item_zones.clone().or_else(|| base.item_zones.clone()),
            item_zones_query: self.item_zones_query.clone().or_else(|| base.item_zones_query.clone()),
            item_workers: self.item_workers.or(base.item_workers),
            args,
        }
    }
}

/// `[http]`: the API and UI of `sundial serve`.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Address to listen on (default `127.0.0.1:8080`; `--http` overrides it).
    pub addr: Option<String>,
    /// Bearer token for state-changing requests (`SUNDIAL_API_TOKEN` overrides it).
    pub token: Option<String>,
    /// Host names (or `host:port`) the API answers to besides the loopback names.
    #[serde(default)]
    pub allowed_hosts: Vec<String>,
    /// Origins (`https://ops.example.com`) allowed to call the API besides its own.
    #[serde(default)]
    pub allowed_origins: Vec<String>,
}

/// Running executions get this long to finish when the host stops.
pub const DEFAULT_SHUTDOWN_GRACE_SECS: u64 = 30;
/// At most this many `item_workers` per job and host.
pub const MAX_ITEM_WORKERS: u32 = 64;

/// The configuration file as written.
#[derive(Debug, Clone, Default, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// URL of Sundial's own database.
    pub database: Option<String>,
    /// URL of the application database jobs use; defaults to `database`.
    pub app_database: Option<String>,
    /// Directory of `*.wasm` job components.
    pub jobs_dir: Option<PathBuf>,
    /// Where compiled components are cached (default `.sundial-cache` next to
    /// the configuration).
    pub cache_dir: Option<PathBuf>,
    /// Settings for every job.
    #[serde(default)]
    pub defaults: JobSettings,
    /// Settings per job name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobSettings>,
    /// The HTTP API and UI (`sundial serve`).
    #[serde(default)]
    pub http: HttpSettings,
    /// How long running executions get to finish when the host stops
    /// (default 30 s); then they are cancelled.
    pub shutdown_grace_secs: Option<u64>,
    /// Webhooks notified of failures, partial runs, recoveries and overruns.
    #[serde(default)]
    pub webhooks: Vec<crate::notify::Webhook>,
    /// At most this many executions running at once on this host, all jobs
    /// together; more wait, queued, in priority order (default: no limit).
    pub max_running: Option<u32>,
    /// This host's lease on the database, renewed every third of it (default
    /// 15 s). On Postgres, the executions of a host that has not renewed its
    /// lease in this long are taken for crashed by the others.
    pub lease_secs: Option<u64>,
    /// Where relative paths are resolved (the file's directory).
    #[serde(skip)]
    pub base_dir: PathBuf,
}

/// A job's effective settings after merging configuration and `describe`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobConfig {
    /// Cron expression.
    pub schedule: String,
    /// IANA zone.
    pub timezone: String,
    /// `Some` if configuration sets the switch; `None` leaves the stored one.
    pub enabled: Option<bool>,
    /// Database grant.
    pub database: DbAccess,
    /// Key-value state grant.
    pub state: bool,
    /// Deadline and memory.
    pub limits: Limits,
    /// Overlap policy.
    pub overlap: OverlapPolicy,
    /// Misfire policy.
    pub misfire: MisfirePolicy,
    /// Attempts per scheduled instant.
    pub max_attempts: u32,
    /// Base retry delay.
    pub retry_backoff: Duration,
    /// Runs longer than this are flagged.
    pub expected_duration: Duration,
    /// Re-run executions cut short by a crash.
    pub retry_on_crash: bool,
    /// Order among executions waiting for a slot (higher first).
    pub priority: i32,
    /// At most this many executions of the job at once.
    pub max_running: Option<u32>,
    /// The spread window of scheduled starts (zero: none).
    pub jitter: Duration,
    /// Item-local scheduling: where the items' zones come from (`None`: the
    /// schedule is in `timezone`).
    pub item_zones: Option<ItemZones>,
    /// Workers per host for a shared item run (`item_workers`).
    pub item_workers: Option<u32>,
    /// Operator arguments for every run.
    pub args: Vec<(String, String)>,
}

impl Config {
    /// Whether guests' fuel is metered: when any job (or `[defaults]`) has
    /// a `fuel` budget. Metering costs about 10 % of guest speed, so hosts
    /// without budgets do not pay for it.
    pub fn meters_fuel(&self) -> bool {
        self.defaults.fuel.is_some() || self.jobs.values().any(|j| j.fuel.is_some())
    }

    /// Reads `path`; with `None`, reads `./sundial.toml` if it exists and
    /// otherwise uses the defaults.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let (path, required) = match path {
            Some(p) => (p.to_path_buf(), true),
            None => (PathBuf::from(DEFAULT_CONFIG_FILE), false),
        };
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if !required && e.kind() == std::io::ErrorKind::NotFound => {
                return Ok(Config { base_dir: PathBuf::from("."), ..Config::default() });
            }
            Err(source) => return Err(ConfigError::Read { path, source }),
        };
        let mut config = Config::parse(&text).map_err(|message| ConfigError::Parse { path: path.clone(), message })?;
        config.base_dir = match path.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        Ok(config)
    }

    /// Parses configuration text and validates every schedule, zone and limit
    /// in it.
    pub fn parse(text: &str) -> Result<Config, String> {
        let config: Config = toml::from_str(text).map_err(|e| e.to_string())?;
        config.validate().map_err(|e| e.to_string())?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_running == Some(0) {
            return Err(ConfigError::Section {
                section: "max_running",
                message: "must be at least 1 (leave it out for no limit)".into(),
            });
        }
        if let Some(l) = self.lease_secs
            && !(3..=3600).contains(&l)
        {
            return Err(ConfigError::Section {
                section: "lease_secs",
                message: format!("must be between 3 and 3600 seconds, got {l}"),
            });
        }
        for hook in &self.webhooks {
            hook.validate().map_err(|message| ConfigError::Section { section: "[[webhooks]]", message })?;
        }
        for (name, s) in
            std::iter::once(("[defaults]", &self.defaults)).chain(self.jobs.iter().map(|(k, v)| (k.as_str(), v)))
        {
            let err = |message: String| ConfigError::Job { job: name.to_string(), message };
            if let Some(expr) = &s.schedule {
                let zone = s.timezone.as_deref().or(self.defaults.timezone.as_deref()).unwrap_or("UTC");
                Schedule::parse(expr, zone).map_err(|e| err(e.to_string()))?;
            } else if let Some(zone) = &s.timezone {
                crate::schedule::parse_timezone(zone).map_err(|e| err(e.to_string()))?;
            }
            if s.timeout_secs == Some(0) {
                return Err(err("timeout_secs must be at least 1".into()));
            }
            if let Some(m) = s.memory_mib
                && !(1..=65_536).contains(&m)
            {
                return Err(err(format!("memory_mib must be between 1 and 65536, got {m}")));
            }
            if s.fuel == Some(0) {
                return Err(err("fuel must be at least 1 (leave it out for no budget)".into()));
            }
            if s.expected_duration_secs == Some(0) {
                return Err(err("expected_duration_secs must be at least 1".into()));
            }
            if s.max_attempts == Some(0) {
                return Err(err("max_attempts must be at least 1".into()));
            }
            if s.max_running == Some(0) {
                return Err(err("max_running must be at least 1".into()));
            }
            if let Some(j) = s.jitter_secs
                && j > 86_400
            {
                return Err(err(format!("jitter_secs must be at most 86400 (a day), got {j}")));
            }
            parse_http_grant(s.http.as_deref()).map_err(|e| err(format!("http: {e}")))?;
            s.item_zones().map_err(err)?;
            if name == "[defaults]" && (s.item_zones.is_some() || s.item_zones_query.is_some()) {
                return Err(err("item_zones and item_zones_query belong in a [jobs.<name>] section".into()));
            }
            if let Some(w) = s.item_workers
                && !(1..=MAX_ITEM_WORKERS).contains(&w)
            {
                return Err(err(format!("item_workers must be between 1 and {MAX_ITEM_WORKERS}, got {w}")));
            }
            if let Some(r) = s.http_rate_per_sec
                && !(1..=10_000).contains(&r)
            {
                return Err(err(format!("http_rate_per_sec must be between 1 and 10000, got {r}")));
            }
        }
        Ok(())
    }

    /// How long running executions get to finish when the host stops.
    pub fn shutdown_grace(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.shutdown_grace_secs.unwrap_or(DEFAULT_SHUTDOWN_GRACE_SECS))
    }

    /// This host's lease on the database (see `lease_secs`).
    pub fn lease(&self) -> std::time::Duration {
        std::time::Duration::from_secs(self.lease_secs.unwrap_or(crate::lease::DEFAULT_LEASE_SECS))
    }

    /// The jobs that ask for `item_workers`, which need the application
    /// database on Postgres: an error naming them if it is not.
    pub fn check_item_workers(&self, app_database_url: &str) -> Result<(), ConfigError> {
        if crate::store::is_postgres_url(app_database_url) {
            return Ok(());
        }
        match self.jobs.iter().find(|(_, s)| s.item_workers.is_some()) {
            Some((job, _)) => Err(ConfigError::Job {
                job: job.clone(),
                message: "item_workers needs the application database on Postgres (app_database = \"postgres://…\"): \
                          on SQLite, with its one writer, an item run is one worker"
                    .into(),
            }),
            None => Ok(()),
        }
    }

    /// Resolves a path from the file relative to its directory.
    pub fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() { p.to_path_buf() } else { self.base_dir.join(p) }
    }

    /// Resolves a SQLite URL's relative file path against the file's directory.
    pub fn resolve_url(&self, url: &str) -> String {
        for prefix in ["sqlite://", "sqlite:"] {
            if let Some(rest) = url.strip_prefix(prefix) {
                if rest.starts_with('/') || rest.starts_with(':') || self.base_dir == Path::new(".") {
                    return url.to_string();
                }
                return format!("sqlite://{}", self.base_dir.join(rest).display());
            }
        }
        url.to_string()
    }

    /// The effective settings of a job.
    pub fn job(&self, info: &JobInfo) -> Result<JobConfig, ConfigError> {
        let s = match self.jobs.get(&info.name) {
            Some(j) => j.over(&self.defaults),
            None => self.defaults.clone(),
        };
        let item_zones = s.item_zones().map_err(|message| ConfigError::Job { job: info.name.clone(), message })?;
        let schedule = s.schedule.unwrap_or_else(|| info.default_schedule.clone());
        let timezone = s.timezone.unwrap_or_else(|| info.default_timezone.clone());
        // A job's own default schedule is validated here, when it is loaded.
        Schedule::parse(&schedule, &timezone)
            .map_err(|e| ConfigError::Job { job: info.name.clone(), message: e.to_string() })?;
        let defaults = Limits::default();
        let http = parse_http_grant(s.http.as_deref())
            .map_err(|e| ConfigError::Job { job: info.name.clone(), message: format!("http: {e}") })?;
        let state = s.state.unwrap_or(false);
        if s.item_workers.is_some() && info.kind != crate::model::JobKind::Items {
            return Err(ConfigError::Job {
                job: info.name.clone(),
                message: "item_workers needs an item job: this job has no items".into(),
            });
        }
        if s.item_workers.is_some() && s.database != Some(DbAccess::ReadWrite) {
            return Err(ConfigError::Job {
                job: info.name.clone(),
                message: "item_workers needs database = \"read-write\": workers record their progress in the \
                          application database"
                    .into(),
            });
        }
        if item_zones.is_some() && info.kind != crate::model::JobKind::Items {
            return Err(ConfigError::Job {
                job: info.name.clone(),
                message: "item_zones and item_zones_query need an item job: this job has no items".into(),
            });
        }
        for problem in http_grant_mismatches(info, &http).into_iter().chain(state_grant_mismatch(info, state)) {
            tracing::warn!(job = %info.name, "{problem}");
        }
        Ok(JobConfig {
            schedule,
            timezone,
            enabled: s.enabled,
            database: s.database.unwrap_or(DbAccess::None),
            state,
            limits: Limits {
                timeout: s.timeout_secs.map(Duration::from_secs).unwrap_or(defaults.timeout),
                memory_bytes: s.memory_mib.map(|m| (m as usize) << 20).unwrap_or(defaults.memory_bytes),
                http,
                http_rate: s.http_rate_per_sec.map(crate::runtime::HttpRateLimit::new),
                fuel: s.fuel,
            },
            overlap: s.overlap.unwrap_or_default(),
            misfire: s.misfire.unwrap_or_default(),
            max_attempts: s.max_attempts.unwrap_or(1),
            retry_backoff: Duration::from_secs(s.retry_backoff_secs.unwrap_or(30)),
            expected_duration: Duration::from_secs(s.expected_duration_secs.unwrap_or(3600)),
            retry_on_crash: s.retry_on_crash.unwrap_or(false),
            priority: s.priority.unwrap_or(0),
            max_running: s.max_running,
            jitter: Duration::from_secs(u64::from(s.jitter_secs.unwrap_or(0))),
            item_zones,
            item_workers: s.item_workers,
            args: s.args.into_iter().collect(),
        })
    }
}

/// Parses an `http` grant; a missing grant allows nothing.
fn parse_http_grant(entries: Option<&[String]>) -> Result<HttpAllowlist, String> {
    let hosts = entries.unwrap_or_default().iter().map(|e| e.parse::<HttpHost>()).collect::<Result<Vec<_>, _>>()?;
    Ok(HttpAllowlist::new(hosts))
}

/// Where the hosts a job asks for in `describe` and the operator's `http`
/// grant differ, one sentence each. Only the grant counts when the job runs;
/// these are warnings for the operator. A job that asks for `*` reaches hosts
/// the operator chooses (its URL is an argument), so any grant satisfies it.
pub fn http_grant_mismatches(info: &JobInfo, grant: &HttpAllowlist) -> Vec<String> {
    let requested: Vec<&str> = info
        .capabilities
        .iter()
        .filter_map(|c| match c {
            Capability::Http(h) => Some(h.as_str()),
            _ => None,
        })
        .collect();
    let mut problems = Vec::new();
    let any = requested.contains(&"*");
    if any && grant.is_empty() {
        problems.push(format!(
            "the job makes HTTP requests to hosts set by its operator, but none is granted: \
             list them in `http = [...]` under [jobs.{}] in sundial.toml",
            info.name
        ));
    }
    for r in requested.iter().filter(|r| **r != "*") {
        let covered = match r.parse::<HttpHost>() {
            Ok(want) => {
                grant.hosts().iter().any(|g| g.host == want.host && (want.port.is_none() || g.port == want.port))
            }
            Err(_) => false,
        };
        if !covered {
            problems.push(format!(
                "the job asks for HTTP access to {r:?}, which is not granted: its requests there will be \
                 denied until {r:?} is added to `http = [...]` under [jobs.{}] in sundial.toml",
                info.name
            ));
        }
    }
    if !any {
        for g in grant.hosts() {
            let asked = requested.iter().filter_map(|r| r.parse::<HttpHost>().ok()).any(|r| r.host == g.host);
            if !asked {
                problems.push(format!("HTTP access to \"{g}\" is granted but the job does not ask for it"));
            }
        }
    }
    problems
}

/// A sentence when the job asks for key-value state (`describe`) and the
/// operator did not grant it; its state calls then fail.
pub fn state_grant_mismatch(info: &JobInfo, granted: bool) -> Option<String> {
    let asked = info.capabilities.iter().any(|c| matches!(c, Capability::KeyValue));
    (asked && !granted).then(|| {
        format!(
            "the job asks for key-value state, which is not granted: its state calls will fail until \
             `state = true` is set under [jobs.{}] in sundial.toml",
            info.name
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::JobKind;

    fn info() -> JobInfo {
        JobInfo {
            name: "cleanup".into(),
            description: String::new(),
            kind: JobKind::Single,
            default_schedule: "15 3 * * *".into(),
            default_timezone: "UTC".into(),
            capabilities: vec![],
        }
    }

    #[test]
    fn job_settings_override_defaults_and_describe() {
        let c = Config::parse(
            r#"
            [defaults]
            timeout_secs = 60
            [jobs.cleanup]
            schedule = "* * * * *"
            database = "read-write"
            args = { retention_days = "7" }
            "#,
        )
        .unwrap();
        let j = c.job(&info()).unwrap();
        assert_eq!(j.schedule, "* * * * *");
        assert_eq!(j.timezone, "UTC");
        assert_eq!(j.database, DbAccess::ReadWrite);
        assert_eq!(j.limits.timeout, Duration::from_secs(60));
        assert_eq!(j.args, vec![("retention_days".to_string(), "7".to_string())]);
        assert!(!j.state);
        // Grants are never implied.
        let j = Config::default().job(&info()).unwrap();
        assert_eq!(j.database, DbAccess::None);
        assert!(!j.state);
        assert_eq!(j.schedule, "15 3 * * *");
    }

    #[test]
    fn bad_values_are_rejected_with_the_job_named() {
        let e = Config::parse("[jobs.cleanup]\nschedule = \"61 * * * *\"\n").unwrap_err();
        assert!(e.contains("cleanup") && e.contains("minute"), "{e}");
        let e = Config::parse("[jobs.cleanup]\ntimezone = \"Mars/Olympus\"\n").unwrap_err();
        assert!(e.contains("Mars/Olympus"), "{e}");
        let e = Config::parse("[jobs.cleanup]\nschedul = \"* * * * *\"\n").unwrap_err();
        assert!(e.contains("unknown field"), "{e}");
        let e = Config::parse("[jobs.cleanup]\noverlap = \"sometimes\"\n").unwrap_err();
        assert!(e.contains("overlap policy"), "{e}");
        let e = Config::parse("[jobs.cleanup]\nfuel = 0\n").unwrap_err();
        assert!(e.contains("cleanup") && e.contains("fuel must be at least 1"), "{e}");
        let e = Config::parse("[jobs.cleanup]\nfuel = -5\n").unwrap_err();
        assert!(e.contains("cleanup") || e.contains("fuel"), "{e}");
    }

    #[test]
    fn http_grants_are_validated_and_compared_with_what_the_job_asks_for() {
        let e = Config::parse("[jobs.cleanup]\nhttp = [\"https://api.example.com\"]\n").unwrap_err();
        assert!(e.contains("cleanup") && e.contains("http: write the host without a scheme"), "{e}");
        let c = Config::parse("[jobs.cleanup]\nhttp = [\"api.example.com\", \"127.0.0.1:8123\"]\n").unwrap();
        let j = c.job(&info()).unwrap();
        assert!(j.limits.http.allows("127.0.0.1", 8123, 80));
        assert!(Config::default().job(&info()).unwrap().limits.http.is_empty(), "no grant, no HTTP");

        let mut asks = info();
        asks.capabilities = vec![Capability::Http("api.example.com".into()), Capability::Http("other.example".into())];
        let problems = http_grant_mismatches(&asks, &j.limits.http);
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].contains(r#""other.example", which is not granted"#), "{problems:?}");
        assert!(problems[1].contains(r#""127.0.0.1:8123" is granted but the job does not ask for it"#), "{problems:?}");
        asks.capabilities = vec![Capability::Http("*".into())];
        assert!(http_grant_mismatches(&asks, &j.limits.http).is_empty());
        let none = http_grant_mismatches(&asks, &HttpAllowlist::default());
        assert!(none[0].contains("none is granted"), "{none:?}");
    }

    #[test]
    fn state_grants_merge_with_defaults_and_are_compared_with_what_the_job_asks_for() {
        let c = Config::parse("[defaults]\nstate = true\n[jobs.other]\nstate = false\n").unwrap();
        assert!(c.job(&info()).unwrap().state, "[defaults] grants it");
        let mut other = info();
        other.name = "other".into();
        assert!(!c.job(&other).unwrap().state, "the job's own setting wins");
        let e = Config::parse("[jobs.cleanup]\nstate = \"yes\"\n").unwrap_err();
        assert!(e.contains("cleanup") || e.contains("state"), "{e}");

        let mut asks = info();
        asks.capabilities = vec![Capability::KeyValue];
        let problem = state_grant_mismatch(&asks, false).unwrap();
        assert!(problem.contains("`state = true` is set under [jobs.cleanup]"), "{problem}");
        assert_eq!(state_grant_mismatch(&asks, true), None);
        assert_eq!(state_grant_mismatch(&info(), false), None, "not asked, nothing to say");
    }

    #[test]
    fn relative_paths_follow_the_config_file() {
        let c = Config { base_dir: PathBuf::from("/etc/sundial"), ..Config::default() };
        assert_eq!(c.resolve_url("sqlite://data.db"), "sqlite:///etc/sundial/data.db");
        assert_eq!(c.resolve_url("sqlite:///var/data.db"), "sqlite:///var/data.db");
        assert_eq!(c.resolve(Path::new("jobs")), PathBuf::from("/etc/sundial/jobs"));
    }
}

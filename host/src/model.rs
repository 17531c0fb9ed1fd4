//! Domain types shared by the store, the runtime and the actors.
//!
//! Every closed set (statuses, triggers, error classes, policies) is an enum
//! with `Display`/`FromStr` matching its database text, so no bare strings
//! cross a boundary.

use std::fmt;
use std::str::FromStr;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

/// An error parsing one of the closed sets below from text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {kind} {value:?} (expected one of: {expected})")]
pub struct ParseEnumError {
    kind: &'static str,
    value: String,
    expected: &'static str,
}

/// Implements `as_str`, `Display`, `FromStr` and serde as the given texts.
macro_rules! text_enum {
    ($name:ident, $kind:literal, { $($variant:ident => $text:literal),+ $(,)? }) => {
        impl $name {
            /// The text used in the database, the API and configuration.
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
        }
        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }
        impl FromStr for $name {
            type Err = ParseEnumError;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                match s {
                    $($text => Ok($name::$variant),)+
                    _ => Err(ParseEnumError {
                        kind: $kind,
                        value: s.to_string(),
                        expected: concat!($($text, " "),+),
                    }),
                }
            }
        }
        impl Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }
        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                let s = String::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

/// The database id of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(pub i64);

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// The database id of an execution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct ExecutionId(pub i64);

impl fmt::Display for ExecutionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Where an execution is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ExecutionStatus {
    /// Due, waiting for a slot.
    Queued,
    /// The guest is running.
    Running,
    /// Finished without error (every item ok or skipped).
    Succeeded,
    /// Finished, but some items failed.
    Partial,
    /// The guest returned an error, trapped, or the host failed.
    Failed,
    /// Not run: overlap, precondition (guest `skip`), or disabled.
    Skipped,
    /// The deadline passed.
    TimedOut,
    /// An operator cancelled it.
    Cancelled,
    /// The host died while it ran.
    Crashed,
}

text_enum!(ExecutionStatus, "execution status", {
    Queued => "queued",
    Running => "running",
    Succeeded => "succeeded",
    Partial => "partial",
    Failed => "failed",
    Skipped => "skipped",
    TimedOut => "timed_out",
    Cancelled => "cancelled",
    Crashed => "crashed",
});

impl ExecutionStatus {
    /// Whether the execution has ended.
    pub fn is_final(self) -> bool {
        !matches!(self, ExecutionStatus::Queued | ExecutionStatus::Running)
    }
}

/// Why an execution was started.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Trigger {
    /// The cron schedule fired.
    Schedule,
    /// An operator asked (CLI, API, UI).
    Manual,
    /// A retry of a failed attempt.
    Retry,
    /// A fire missed while the host was down.
    CatchUp,
}

text_enum!(Trigger, "trigger", {
    Schedule => "schedule",
    Manual => "manual",
    Retry => "retry",
    CatchUp => "catch-up",
});

/// The class of a failure, kept apart so the host can decide by matching.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The guest said a precondition is not met.
    Skip,
    /// The guest returned a retryable error.
    Retryable,
    /// The guest returned a fatal error.
    Fatal,
    /// The guest trapped (panic, unreachable, out of bounds, stack overflow).
    Trap,
    /// The guest hit its memory limit.
    Memory,
    /// The deadline passed.
    Timeout,
    /// Cancelled by an operator.
    Cancelled,
    /// The host failed (database, IO, component load).
    Host,
    /// The run was skipped because another execution of the job was running.
    Overlap,
    /// The host died while the execution ran.
    Crash,
    /// The guest used up its fuel budget.
    Fuel,
}

text_enum!(ErrorClass, "error class", {
    Skip => "skip",
    Retryable => "retryable",
    Fatal => "fatal",
    Trap => "trap",
    Memory => "memory",
    Timeout => "timeout",
    Cancelled => "cancelled",
    Host => "host",
    Overlap => "overlap",
    Crash => "crash",
    Fuel => "fuel",
});

/// Single-shot or item job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum JobKind {
    /// One `run` per execution.
    Single,
    /// The host pages items and runs each one.
    Items,
}

text_enum!(JobKind, "job kind", {
    Single => "single",
    Items => "items",
});

/// Database access granted to (or requested by) a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DbAccess {
    /// No access.
    None,
    /// Reads only, enforced by the database.
    ReadOnly,
    /// Reads and writes.
    ReadWrite,
}

text_enum!(DbAccess, "database access", {
    None => "none",
    ReadOnly => "read-only",
    ReadWrite => "read-write",
});

/// A capability a job requests in `describe`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case", tag = "kind", content = "value")]
pub enum Capability {
    /// The application database.
    Database(DbAccess),
    /// Outbound HTTP to a host.
    Http(String),
    /// Private key-value state.
    KeyValue,
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Capability::Database(a) => write!(f, "database:{a}"),
            Capability::Http(h) => write!(f, "http:{h}"),
            Capability::KeyValue => f.write_str("key-value"),
        }
    }
}

/// What a job says about itself (from `describe`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobInfo {
    /// Unique name.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Single-shot or item job.
    pub kind: JobKind,
    /// Default cron expression.
    pub default_schedule: String,
    /// Default IANA zone.
    pub default_timezone: String,
    /// Requested capabilities.
    pub capabilities: Vec<Capability>,
}

/// One entry of a job's HTTP grant (`http = ["api.example.com", "127.0.0.1:8123"]`):
/// a host name or IP address, with or without a port.
///
/// Without a port only the scheme's default port is allowed (443 for https, 80
/// for http): granting `127.0.0.1` must not open every local service to a job.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HttpHost {
    /// Lowercase host name or IP address (IPv6 without brackets).
    pub host: String,
    /// The one port allowed; `None` allows the scheme's default port only.
    pub port: Option<u16>,
}

impl HttpHost {
    /// Whether a request to `host:port` is covered by this entry; `default_port`
    /// is the port of the request's scheme. `host` is compared like
    /// [`HttpHost::normalize_host`] leaves it.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.host == host && self.port.unwrap_or(default_port) == port
    }

    /// The host of a URL or grant as it is compared: lowercase, without IPv6
    /// brackets and without a trailing dot.
    pub fn normalize_host(host: &str) -> String {
        let host = host.strip_prefix('[').and_then(|h| h.strip_suffix(']')).unwrap_or(host);
        host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase()
    }
}

impl fmt::Display for HttpHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let v6 = self.host.contains(':');
        match (v6, self.port) {
            (false, None) => f.write_str(&self.host),
            (false, Some(p)) => write!(f, "{}:{p}", self.host),
            (true, None) => write!(f, "[{}]", self.host),
            (true, Some(p)) => write!(f, "[{}]:{p}", self.host),
        }
    }
}

impl FromStr for HttpHost {
    type Err = String;

    /// Parses `host`, `host:port`, `[v6]` or `[v6]:port`, and says how to fix
    /// anything else (a URL, a path, a wildcard).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        if s.is_empty() {
            return Err("an HTTP grant entry is empty; write a host such as \"api.example.com\"".into());
        }
        if let Some((_, rest)) = s.split_once("://") {
            let host = rest.split(['/', '?', '#']).next().unwrap_or(rest);
            return Err(format!("write the host without a scheme: {host:?}, not {s:?}"));
        }
        if s.contains('*') {
            return Err(format!("{s:?}: wildcards are not supported; list each host the job may reach"));
        }
        if s.contains(['/', '?', '#', '@']) || s.contains(char::is_whitespace) {
            return Err(format!("{s:?} is not a host: write only a host or host:port, e.g. \"api.example.com\""));
        }
        let (host, port) = if let Some(rest) = s.strip_prefix('[') {
            let (host, after) =
                rest.split_once(']').ok_or_else(|| format!("{s:?}: an IPv6 address needs its closing ']'"))?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':').ok_or_else(|| format!("{s:?}: expected ':port' after ']'"))?),
            };
            if host.parse::<std::net::Ipv6Addr>().is_err() {
                return Err(format!("{s:?}: {host:?} is not an IPv6 address"));
            }
            (host, port)
        } else if s.matches(':').count() > 1 {
            return Err(format!("{s:?}: write an IPv6 address in brackets, e.g. \"[::1]:8080\""));
        } else {
            match s.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (s, None),
            }
        };
        let port = match port {
            None => None,
            Some(p) => match p.parse::<u16>() {
                Ok(n) if n > 0 => Some(n),
                _ => return Err(format!("{s:?}: the port must be a number from 1 to 65535, got {p:?}")),
            },
        };
        let host = HttpHost::normalize_host(host);
        let valid = !host.is_empty()
            && (host.contains(':')
                || host.split('.').all(|label| {
                    !label.is_empty()
                        && label.len() <= 63
                        && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                }));
        if !valid {
            return Err(format!("{s:?} is not a valid host name or IP address"));
        }
        Ok(HttpHost { host, port })
    }
}

/// The hosts a job may reach over HTTP: the operator's `http` grant. Deny by
/// default: the empty list allows nothing. Cheap to clone (shared).
#[derive(Clone, PartialEq, Eq, Hash, Default)]
pub struct HttpAllowlist(std::sync::Arc<[HttpHost]>);

impl HttpAllowlist {
    /// The allowlist of these hosts (duplicates removed).
    pub fn new(mut hosts: Vec<HttpHost>) -> HttpAllowlist {
        hosts.sort();
        hosts.dedup();
        HttpAllowlist(hosts.into())
    }

    /// The granted hosts, sorted.
    pub fn hosts(&self) -> &[HttpHost] {
        &self.0
    }

    /// Whether nothing is granted.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Whether a request to `host:port` (host as [`HttpHost::normalize_host`]
    /// leaves it) is allowed; `default_port` is the port of its scheme.
    pub fn allows(&self, host: &str, port: u16, default_port: u16) -> bool {
        self.0.iter().any(|h| h.allows(host, port, default_port))
    }
}

impl fmt::Debug for HttpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.0.iter().map(|h| h.to_string())).finish()
    }
}

impl fmt::Display for HttpAllowlist {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let hosts: Vec<String> = self.0.iter().map(|h| format!("{:?}", h.to_string())).collect();
        write!(f, "[{}]", hosts.join(", "))
    }
}

/// What to do with a fire while the previous execution still runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum OverlapPolicy {
    /// Record the fire as skipped (like APScheduler's `max_instances=1`).
    #[default]
    Skip,
    /// Keep one fire waiting and run it when the current one ends.
    QueueOne,
    /// Run concurrently.
    Allow,
}

text_enum!(OverlapPolicy, "overlap policy", {
    Skip => "skip",
    QueueOne => "queue-one",
    Allow => "allow",
});

/// What to do with fires missed while the host was down.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum MisfirePolicy {
    /// Drop them; count them as missed.
    Skip,
    /// Run once, for the latest missed instant, as a catch-up.
    #[default]
    Once,
    /// Run each of them (at most a bounded number).
    All,
}

text_enum!(MisfirePolicy, "misfire policy", {
    Skip => "skip",
    Once => "once",
    All => "all",
});

/// Operator arguments of a run.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunArgs {
    /// The local date to run for (`YYYY-MM-DD`), for backfills.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub date: Option<String>,
    /// Process at most this many items.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub limit: Option<u64>,
    /// Commit nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// Free-form `key=value` arguments.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub args: Vec<(String, String)>,
}

/// What an execution tells the guest about itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunContext {
    /// The execution's id.
    pub execution_id: ExecutionId,
    /// The job's name.
    pub job_name: String,
    /// The instant the execution stands for.
    pub scheduled_for: DateTime<Utc>,
    /// The job's IANA zone.
    pub timezone: String,
    /// Why it started.
    pub trigger: Trigger,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// Operator arguments.
    pub args: RunArgs,
}

/// A job as the store knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct JobRecord {
    /// Database id.
    pub id: JobId,
    /// Unique name.
    pub name: String,
    /// One line for operators.
    pub description: String,
    /// Single-shot or item job.
    pub kind: JobKind,
    /// Effective cron expression.
    pub schedule: String,
    /// Effective IANA zone.
    pub timezone: String,
    /// Whether the scheduler fires it.
    pub enabled: bool,
    /// When an execution last started.
    pub last_run_at: Option<DateTime<Utc>>,
    /// The next scheduled fire.
    pub next_run_at: Option<DateTime<Utc>>,
    /// The last scheduled instant handled (fired, skipped or missed): the next
    /// fire is computed from it, never from "now".
    pub last_scheduled_for: Option<DateTime<Utc>>,
    /// sha256 of the current component.
    pub component_digest: Option<String>,
    /// Version number of the current component (1, 2, ...).
    pub component_version: Option<i64>,
    /// Why the latest file for this job was rejected, if it was.
    pub load_error: Option<String>,
    /// Scheduled instants not run because of the misfire policy.
    pub missed_fires: i64,
    /// Whether the schedule is the configured one or an operator's override.
    pub schedule_source: ScheduleSource,
}

/// One of a job's component versions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VersionRecord {
    /// 1, 2, ...
    pub version: i64,
    /// sha256 of the component (or `native:<name>@<version>`).
    pub digest: String,
    /// When the host first loaded it.
    pub first_seen: DateTime<Utc>,
    /// Executions that ran it.
    pub executions: i64,
    /// Whether its component is kept, so the job can be rolled back to it.
    pub kept: bool,
}

/// Where a job's effective schedule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ScheduleSource {
    /// `sundial.toml`, or the component's default.
    Configuration,
    /// Set by an operator through the API; kept until reset.
    Api,
}

text_enum!(ScheduleSource, "schedule source", {
    Configuration => "configuration",
    Api => "api",
});

/// An execution as the store knows it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ExecutionRecord {
    /// Database id.
    pub id: ExecutionId,
    /// The job's id.
    pub job_id: JobId,
    /// The job's name.
    pub job_name: String,
    /// Why it started.
    pub trigger: Trigger,
    /// The instant it stands for.
    pub scheduled_for: DateTime<Utc>,
    /// 1 for the first attempt.
    pub attempt: i64,
    /// The first attempt, for retries.
    pub parent_id: Option<ExecutionId>,
    /// Where it is.
    pub status: ExecutionStatus,
    /// When the guest was called.
    pub started_at: Option<DateTime<Utc>>,
    /// When it ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// sha256 of the component it ran.
    pub component_digest: Option<String>,
    /// Version number of the component it ran.
    pub component_version: Option<i64>,
    /// The host that ran it.
    pub node: Option<String>,
    /// Items seen (item jobs).
    pub items_total: i64,
    /// Items that succeeded.
    pub items_ok: i64,
    /// Items skipped.
    pub items_skipped: i64,
    /// Items failed.
    pub items_failed: i64,
    /// Rows the job reported changed.
    pub changed: i64,
    /// Class of the failure, if any.
    pub error_class: Option<ErrorClass>,
    /// Message of the failure or skip reason, if any.
    pub error_message: Option<String>,
    /// The job's own summary.
    pub summary: Option<String>,
    /// Captured logs (bounded).
    pub logs: String,
    /// Whether logs were cut at the cap.
    pub logs_truncated: bool,
    /// Operator arguments.
    pub args: RunArgs,
    /// Whether it ran longer than the job's expected duration.
    pub overrun: bool,
    /// Fuel the guest used (components only).
    pub fuel_consumed: Option<i64>,
}

/// A failed or skipped item, with its reason.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ItemProblem {
    /// The item's key.
    pub key: String,
    /// Failure class (skip for skipped items).
    pub class: ErrorClass,
    /// Reason or error message.
    pub message: String,
}

/// How an execution ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RunReport {
    /// Final status.
    pub status: ExecutionStatus,
    /// Class of the failure or skip.
    pub error_class: Option<ErrorClass>,
    /// Message of the failure or skip.
    pub error_message: Option<String>,
    /// The job's own summary.
    pub summary: Option<String>,
    /// Rows changed (or that would have been, in a dry run).
    pub changed: u64,
    /// Items seen.
    pub items_total: u64,
    /// Items that succeeded.
    pub items_ok: u64,
    /// Items skipped.
    pub items_skipped: u64,
    /// Items failed.
    pub items_failed: u64,
    /// Failed and skipped items (bounded).
    pub problems: Vec<ItemProblem>,
    /// Problems beyond the bound.
    pub problems_dropped: u64,
    /// Captured logs and output.
    pub logs: String,
    /// Whether the logs were cut.
    pub logs_truncated: bool,
    /// When the first guest call began (the end of fire lateness).
    pub guest_started_at: Option<DateTime<Utc>>,
    /// Fuel the guest used (components only).
    pub fuel_consumed: Option<u64>,
}

/// Failed/skipped items kept per execution; the rest are counted.
pub const MAX_ITEM_PROBLEMS: usize = 1000;

impl RunReport {
    /// A report with `status` and nothing else (no items, no logs).
    pub fn new(status: ExecutionStatus) -> Self {
        RunReport {
            status,
            error_class: None,
            error_message: None,
            summary: None,
            changed: 0,
            items_total: 0,
            items_ok: 0,
            items_skipped: 0,
            items_failed: 0,
            problems: Vec::new(),
            problems_dropped: 0,
            logs: String::new(),
            logs_truncated: false,
            guest_started_at: None,
            fuel_consumed: None,
        }
    }

    /// A report for an execution the host could not run.
    pub fn host_failure(message: String) -> Self {
        let mut r = RunReport::new(ExecutionStatus::Failed);
        r.error_class = Some(ErrorClass::Host);
        r.error_message = Some(message);
        r
    }

    pub(crate) fn fail(&mut self, status: ExecutionStatus, class: ErrorClass, message: String) {
        self.status = status;
        self.error_class = Some(class);
        self.error_message = Some(message);
    }

    pub(crate) fn problem(&mut self, key: String, class: ErrorClass, message: String) {
        if self.problems.len() < MAX_ITEM_PROBLEMS {
            self.problems.push(ItemProblem { key, class, message });
        } else {
            self.problems_dropped += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enums_round_trip_through_text() {
        for s in [
            ExecutionStatus::Queued,
            ExecutionStatus::Running,
            ExecutionStatus::Succeeded,
            ExecutionStatus::Partial,
            ExecutionStatus::Failed,
            ExecutionStatus::Skipped,
            ExecutionStatus::TimedOut,
            ExecutionStatus::Cancelled,
            ExecutionStatus::Crashed,
        ] {
            assert_eq!(s.as_str().parse::<ExecutionStatus>().unwrap(), s);
        }
        assert_eq!("catch-up".parse::<Trigger>().unwrap(), Trigger::CatchUp);
        let err = "sometimes".parse::<OverlapPolicy>().unwrap_err().to_string();
        assert!(err.contains("unknown overlap policy \"sometimes\""), "{err}");
        assert!(err.contains("queue-one"), "{err}");
    }

    #[test]
    fn http_grants_parse_hosts_and_say_how_to_fix_the_rest() {
        let h = |s: &str| s.parse::<HttpHost>();
        assert_eq!(h("API.Example.com").unwrap(), HttpHost { host: "api.example.com".into(), port: None });
        assert_eq!(h("127.0.0.1:8123").unwrap(), HttpHost { host: "127.0.0.1".into(), port: Some(8123) });
        assert_eq!(h("[::1]:8080").unwrap().to_string(), "[::1]:8080");
        assert!(h("https://api.example.com/v1").unwrap_err().contains(r#"without a scheme: "api.example.com""#));
        assert!(h("*.example.com").unwrap_err().contains("wildcards are not supported"));
        assert!(h("api.example.com/v1").unwrap_err().contains("write only a host or host:port"));
        assert!(h("api.example.com:0").unwrap_err().contains("port must be a number from 1 to 65535"));
        assert!(h("::1").unwrap_err().contains("in brackets"));
        assert!(h("").is_err() && h("bad..host").is_err());
    }

    #[test]
    fn an_allowlist_allows_its_hosts_on_their_ports_only() {
        let list = |hosts: &[&str]| HttpAllowlist::new(hosts.iter().map(|h| h.parse().unwrap()).collect());
        let a = list(&["api.example.com", "127.0.0.1:8123"]);
        assert!(a.allows("api.example.com", 443, 443) && a.allows("api.example.com", 80, 80));
        assert!(!a.allows("api.example.com", 8443, 443), "a bare host is its scheme's default port only");
        assert!(a.allows("127.0.0.1", 8123, 80) && !a.allows("127.0.0.1", 80, 80));
        assert!(!HttpAllowlist::default().allows("api.example.com", 443, 443), "deny by default");
        // Equal lists are equal whatever the order.
        assert_eq!(a, list(&["127.0.0.1:8123", "api.example.com"]));
        assert_eq!(a.to_string(), r#"["127.0.0.1:8123", "api.example.com"]"#);
    }
}

/// A host sharing the database, as its lease row shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostRecord {
    /// `hostname:pid`, the name in its execution rows.
    pub node: String,
    /// Sundial's version on that host.
    pub version: String,
    /// When it started.
    pub started_at: DateTime<Utc>,
    /// Its last heartbeat.
    pub heartbeat_at: DateTime<Utc>,
    /// Until when its lease holds without another heartbeat; after that its
    /// executions are taken for crashed and its writes refused.
    pub lease_expires_at: DateTime<Utc>,
}

//! The endpoints (see `docs/http-api.md`).

use std::collections::HashMap;
use std::time::Duration;

use actix_web::http::StatusCode;
use actix_web::http::header;
use actix_web::middleware::from_fn;
use actix_web::{HttpRequest, HttpResponse, web};
use chrono::{DateTime, Utc};
use futures_util::StreamExt as _;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::broadcast::error::RecvError;

use super::{ApiError, ApiState, MAX_JSON_BYTES, MAX_PAGE, security};
use crate::actors::scheduler::UpcomingGroups;
use crate::actors::supervisor::{JobSnapshot, LiveProgress};
use crate::config::ItemZones;
use crate::model::{ExecutionId, ExecutionRecord, ExecutionStatus, JobRecord, RunArgs};
use crate::runtime::MAX_COMPONENT_BYTES;
use crate::schedule::Schedule;

type Data = web::Data<ApiState>;
type Reply = Result<HttpResponse, ApiError>;

const VERSION: &str = env!("CARGO_PKG_VERSION");
const INDEX_HTML: &str = include_str!("ui/index.html");
const APP_JS: &str = include_str!("ui/app.js");
const STYLE_CSS: &str = include_str!("ui/style.css");
const ICON_SVG: &str = include_str!("ui/icon.svg");
const OPENAPI: &str = include_str!("openapi.json");

/// Next fires listed in the status.
const NEXT_FIRES: usize = 20;
/// Upcoming fires listed in a job's detail.
const UPCOMING: usize = 5;
/// Versions listed in a job's detail.
const VERSIONS: u32 = 20;
/// How often an idle event stream gets a keep-alive comment.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

pub(super) fn routes(cfg: &mut web::ServiceConfig, state: Data) {
    let json = web::JsonConfig::default().limit(MAX_JSON_BYTES).error_handler(|e, _| {
        use actix_web::error::JsonPayloadError as J;
        let err = match &e {
            J::Overflow { .. } | J::OverflowKnownLength { .. } => ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than {MAX_JSON_BYTES} bytes"),
            ),
            J::ContentType => {
                ApiError::new(StatusCode::UNSUPPORTED_MEDIA_TYPE, "send JSON (Content-Type: application/json)")
            }
            J::Deserialize(d) => ApiError::bad_request(format!("invalid JSON body: {d}")),
            _ => ApiError::bad_request(format!("invalid request body: {e}")),
        };
        err.into()
    });
    let query = web::QueryConfig::default()
        .error_handler(|e, _| ApiError::bad_request(format!("invalid query string: {e}")).into());
    let path =
        web::PathConfig::default().error_handler(|e, _| ApiError::bad_request(format!("invalid path: {e}")).into());
    cfg.app_data(state).app_data(json).app_data(query).app_data(path).service(
        web::scope("")
            .wrap(from_fn(security::guard))
            .route("", web::get().to(to_index))
            .route("/", web::get().to(index))
            .route("/ui/app.js", web::get().to(app_js))
            .route("/ui/style.css", web::get().to(style_css))
            .route("/ui/icon.svg", web::get().to(icon))
            .route("/healthz", web::get().to(healthz))
            .route("/metrics", web::get().to(metrics))
            .route("/api/openapi.json", web::get().to(openapi))
            .route("/api/scheduler/status", web::get().to(status))
            .route("/api/scheduler/enabled", web::put().to(set_enabled))
            .route("/api/scheduler/jobs", web::get().to(jobs))
            .route("/api/scheduler/jobs/{id}", web::get().to(job))
            .route("/api/scheduler/jobs/{id}/enabled", web::put().to(set_job_enabled))
            .route("/api/scheduler/jobs/{id}/schedule", web::put().to(set_schedule))
            .route("/api/scheduler/jobs/{id}/schedule", web::delete().to(reset_schedule))
            .route("/api/scheduler/jobs/{id}/run", web::post().to(run))
            .route("/api/scheduler/jobs/{id}/rollback", web::post().to(rollback))
            .route("/api/scheduler/jobs/{id}/executions", web::get().to(executions))
            .route("/api/scheduler/executions/{id}", web::get().to(execution))
            .route("/api/scheduler/executions/{id}/cancel", web::post().to(cancel))
            .route("/api/scheduler/deploy", web::post().to(deploy))
            .route("/api/scheduler/events", web::get().to(events))
            .default_service(web::to(not_found)),
    );
}

async fn not_found(req: HttpRequest) -> Reply {
    Err(ApiError::not_found(format!("no such endpoint: {} {}", req.method(), req.path())))
}

fn asset(content_type: &'static str, body: &'static str) -> HttpResponse {
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, content_type))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .body(body)
}

/// `/prefix` → `/prefix/`, so the UI's relative links resolve under the
/// prefix an application mounted it at.
async fn to_index(req: HttpRequest) -> HttpResponse {
    let location = format!("{}/", req.path());
    HttpResponse::PermanentRedirect().insert_header((header::LOCATION, location)).finish()
}

async fn index() -> HttpResponse {
    asset("text/html; charset=utf-8", INDEX_HTML)
}

async fn app_js() -> HttpResponse {
    asset("text/javascript; charset=utf-8", APP_JS)
}

async fn style_css() -> HttpResponse {
    asset("text/css; charset=utf-8", STYLE_CSS)
}

async fn icon() -> HttpResponse {
    asset("image/svg+xml", ICON_SVG)
}

async fn openapi() -> HttpResponse {
    asset("application/json", OPENAPI)
}

async fn healthz(state: Data) -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok", "version": VERSION, "node": state.host.node}))
}

async fn metrics(state: Data) -> Reply {
    let jobs = state.host.store.list_jobs().await?;
    let enabled = state.host.store.global_enabled().await?;
    let text = state.host.metrics.render(&jobs, enabled, VERSION);
    Ok(HttpResponse::Ok().content_type("text/plain; version=0.0.4; charset=utf-8").body(text))
}

// ---- views -------------------------------------------------------------------

#[derive(Serialize)]
struct Items {
    total: i64,
    ok: i64,
    skipped: i64,
    failed: i64,
}

#[derive(Serialize)]
struct Progress {
    done: u64,
    total: Option<u64>,
}

#[derive(Serialize)]
struct ArgsView<'a> {
    date: Option<&'a str>,
    limit: Option<u64>,
    dry_run: bool,
    args: serde_json::Map<String, Value>,
}

#[derive(Serialize)]
struct ExecutionView<'a> {
    id: ExecutionId,
    job: &'a str,
    trigger: &'static str,
    scheduled_for: DateTime<Utc>,
    attempt: i64,
    parent_id: Option<ExecutionId>,
    status: &'static str,
    started_at: Option<DateTime<Utc>>,
    finished_at: Option<DateTime<Utc>>,
    duration_ms: Option<i64>,
    version: Option<i64>,
    digest: Option<&'a str>,
    node: Option<&'a str>,
    items: Items,
    progress: Option<Progress>,
    changed: i64,
    error_class: Option<&'static str>,
    error_message: Option<&'a str>,
    summary: Option<&'a str>,
    overrun: bool,
    fuel_consumed: Option<i64>,
    args: ArgsView<'a>,
}

fn execution_view<'a>(e: &'a ExecutionRecord, live: Option<LiveProgress>) -> ExecutionView<'a> {
    let running = matches!(e.status, ExecutionStatus::Queued | ExecutionStatus::Running);
    let progress = running.then(|| match live {
        Some(p) => Progress { done: p.done, total: p.total },
        None => Progress { done: u64::try_from(e.items_total).unwrap_or(0), total: None },
    });
    ExecutionView {
        id: e.id,
        job: &e.job_name,
        trigger: e.trigger.as_str(),
        scheduled_for: e.scheduled_for,
        attempt: e.attempt,
        parent_id: e.parent_id,
        status: e.status.as_str(),
        started_at: e.started_at,
        finished_at: e.finished_at,
        duration_ms: e.started_at.zip(e.finished_at).map(|(s, f)| (f - s).num_milliseconds().max(0)),
        version: e.component_version,
        digest: e.component_digest.as_deref(),
        node: e.node.as_deref(),
        items: Items { total: e.items_total, ok: e.items_ok, skipped: e.items_skipped, failed: e.items_failed },
        progress,
        changed: e.changed,
        error_class: e.error_class.map(|c| c.as_str()),
        error_message: e.error_message.as_deref(),
        summary: e.summary.as_deref(),
        overrun: e.overrun,
        fuel_consumed: e.fuel_consumed,
        args: ArgsView {
            date: e.args.date.as_deref(),
            limit: e.args.limit,
            dry_run: e.args.dry_run,
            args: e.args.args.iter().map(|(k, v)| (k.clone(), json!(v))).collect(),
        },
    }
}

#[derive(Serialize)]
struct JobView<'a> {
    name: &'a str,
    description: &'a str,
    kind: &'static str,
    schedule: &'a str,
    schedule_text: Option<String>,
    timezone: &'a str,
    enabled: bool,
    next_run_at: Option<DateTime<Utc>>,
    last_run_at: Option<DateTime<Utc>>,
    last_status: Option<&'static str>,
    last_execution_id: Option<ExecutionId>,
    version: Option<i64>,
    digest: Option<&'a str>,
    load_error: Option<&'a str>,
    missed_fires: i64,
    running: usize,
}

fn job_view<'a>(
    j: &'a JobRecord,
    last: Option<(ExecutionId, ExecutionStatus)>,
    running: usize,
    scheduler_enabled: bool,
) -> JobView<'a> {
    let schedule = Schedule::parse(&j.schedule, &j.timezone).ok();
    JobView {
        name: &j.name,
        description: &j.description,
        kind: j.kind.as_str(),
        schedule: &j.schedule,
        schedule_text: schedule.as_ref().map(Schedule::describe).filter(|d| d != &j.schedule).map(|d| capitalize(&d)),
        timezone: &j.timezone,
        enabled: j.enabled,
        next_run_at: j.next_run_at.filter(|_| j.enabled && scheduler_enabled),
        last_run_at: j.last_run_at,
        last_status: last.map(|(_, s)| s.as_str()),
        last_execution_id: last.map(|(id, _)| id),
        version: j.component_version,
        digest: j.component_digest.as_deref(),
        load_error: j.load_error.as_deref(),
        missed_fires: j.missed_fires,
        running,
    }
}

/// "at 03:15 every day" -> "At 03:15 every day".
fn capitalize(s: &str) -> String {
    let mut chars = s.chars();
    chars.next().map(|c| c.to_uppercase().chain(chars).collect()).unwrap_or_default()
}

/// A job by name, or by numeric id if no job has that name.
async fn find_job(state: &ApiState, id: &str) -> Result<JobRecord, ApiError> {
    if let Some(j) = state.host.store.get_job(id).await? {
        return Ok(j);
    }
    if let Ok(n) = id.parse::<i64>()
        && let Some(j) = state.host.store.list_jobs().await?.into_iter().find(|j| j.id.0 == n)
    {
        return Ok(j);
    }
    Err(ApiError::not_found(format!("unknown job {id:?}")))
}

fn execution_id(id: &str) -> Result<ExecutionId, ApiError> {
    id.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .map(ExecutionId)
        .ok_or_else(|| ApiError::bad_request(format!("execution id must be a positive number, got {id:?}")))
}

// ---- scheduler ---------------------------------------------------------------

async fn status_json(state: &ApiState) -> Result<Value, ApiError> {
    let host = &state.host;
    let enabled = host.store.global_enabled().await?;
    let live = host.live_progress().await?;
    let active = host.store.active_executions().await?;
    let running: Vec<_> = active.iter().map(|e| execution_view(e, live.get(&e.id).copied())).collect();
    let jobs = host.store.list_jobs().await?;
    let mut next: Vec<(DateTime<Utc>, &str)> = if enabled {
        jobs.iter().filter(|j| j.enabled).filter_map(|j| j.next_run_at.map(|t| (t, j.name.as_str()))).collect()
    } else {
        Vec::new()
    };
    next.sort();
    let next_fires: Vec<_> = next.iter().take(NEXT_FIRES).map(|(at, job)| json!({"job": job, "at": at})).collect();
    let hosts: Vec<_> = host
        .store
        .live_hosts()
        .await?
        .into_iter()
        .map(|h| {
            let this = h.node == host.node;
            json!({
                "node": h.node,
                "version": h.version,
                "started_at": h.started_at,
                "heartbeat_at": h.heartbeat_at,
                "lease_expires_at": h.lease_expires_at,
                "this": this,
            })
        })
        .collect();
    Ok(json!({
        "version": VERSION,
        "node": host.node,
        "backend": if host.store.is_postgres() { "postgres" } else { "sqlite" },
        "hosts": hosts,
        "enabled": enabled,
        "scheduling": host.scheduler.is_some(),
        "jobs": jobs.len(),
        "running": running,
        "next_fires": next_fires,
        "slots": host.slots.as_ref().map(|s| json!({
            "limit": s.limit(),
            "running": s.running(),
            "waiting": s.waiting(),
        })),
    }))
}

async fn status(state: Data) -> Reply {
    Ok(HttpResponse::Ok().json(status_json(&state).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Switch {
    enabled: bool,
}

async fn set_enabled(state: Data, body: web::Json<Switch>) -> Reply {
    state.host.set_enabled(body.enabled).await?;
    Ok(HttpResponse::Ok().json(status_json(&state).await?))
}

// ---- jobs --------------------------------------------------------------------

async fn jobs(state: Data) -> Reply {
    let host = &state.host;
    let jobs = host.store.list_jobs().await?;
    let last: HashMap<String, (ExecutionId, ExecutionStatus)> =
        host.store.last_executions(None).await?.into_iter().map(|(name, id, s)| (name, (id, s))).collect();
    let running: HashMap<String, usize> =
        host.snapshots().await?.into_iter().map(|s| (s.job.name, s.running.len())).collect();
    let enabled = host.store.global_enabled().await?;
    let views: Vec<_> = jobs
        .iter()
        .map(|j| job_view(j, last.get(&j.name).copied(), running.get(&j.name).copied().unwrap_or(0), enabled))
        .collect();
    Ok(HttpResponse::Ok().json(json!({ "jobs": views })))
}

async fn job_json(state: &ApiState, id: &str) -> Result<Value, ApiError> {
    let host = &state.host;
    let job = find_job(state, id).await?;
    let snap: Option<JobSnapshot> = host.job_snapshot(&job.name).await.ok();
    let last = host.store.last_executions(Some(job.id)).await?.into_iter().next().map(|(_, id, s)| (id, s));
    let enabled = host.store.global_enabled().await?;
    let running = snap.as_ref().map_or(0, |s| s.running.len());
    let mut v = serde_json::to_value(job_view(&job, last, running, enabled)).map_err(ApiError::internal)?;
    let versions = host.store.job_versions(job.id, VERSIONS).await?;
    let groups = match &host.scheduler {
        Some(s) => s
            .send(UpcomingGroups { name: job.name.clone(), after: host.clock.now(), count: UPCOMING })
            .await
            .ok()
            .flatten(),
        None => None,
    };
    let upcoming: Vec<DateTime<Utc>> = match (&groups, Schedule::parse(&job.schedule, &job.timezone)) {
        (Some(g), _) => g.iter().map(|(at, _)| *at).collect(),
        (None, Ok(s)) => s.iter_after(host.clock.now()).take(UPCOMING).collect(),
        (None, Err(_)) => Vec::new(),
    };
    let upcoming_groups: Option<Vec<Value>> =
        groups.map(|g| g.into_iter().map(|(at, zones)| json!({"at": at, "zones": zones})).collect());
    let extra = json!({
        "schedule_source": job.schedule_source.as_str(),
        "versions": versions,
        "upcoming": upcoming,
        "upcoming_groups": upcoming_groups,
    });
    if let (Value::Object(m), Value::Object(e)) = (&mut v, extra) {
        m.extend(e);
    }
    if let (Value::Object(m), Some(s)) = (&mut v, snap) {
        let c = &s.config;
        let requested: Vec<String> = s.info.capabilities.iter().map(ToString::to_string).collect();
        let mismatches = s.grant_mismatches();
        m.insert(
            "grants".into(),
            json!({
                "database": c.database.as_str(),
                "http": c.limits.http.hosts().iter().map(ToString::to_string).collect::<Vec<_>>(),
                "state": c.state,
            }),
        );
        m.insert("requested".into(), json!(requested));
        m.insert("grant_mismatches".into(), json!(mismatches));
        m.insert(
            "limits".into(),
            json!({
                "timeout_secs": c.limits.timeout.as_secs_f64(),
                "memory_mib": c.limits.memory_bytes / (1024 * 1024),
                "fuel": c.limits.fuel,
                "http_rate_per_sec": c.limits.http_rate.as_ref().map(|r| r.per_sec()),
                "max_running": c.max_running,
                "priority": c.priority,
                "item_workers": c.item_workers,
            }),
        );
        m.insert(
            "policies".into(),
            json!({
                "overlap": c.overlap.as_str(),
                "misfire": c.misfire.as_str(),
                "max_attempts": c.max_attempts,
                "retry_backoff_secs": c.retry_backoff.as_secs_f64(),
                "expected_duration_secs": c.expected_duration.as_secs_f64(),
                "retry_on_crash": c.retry_on_crash,
                "jitter_secs": c.jitter.as_secs(),
                "jitter_offset_secs": crate::actors::supervisor::jitter_offset(&job.name, c.jitter).as_secs_f64(),
            }),
        );
        m.insert("configured_schedule".into(), json!({"schedule": c.schedule, "timezone": c.timezone}));
        let item_zones = match &c.item_zones {
            None => serde_json::Value::Null,
            Some(ItemZones::All) => json!({"source": "all"}),
            Some(ItemZones::List(slots)) => {
                json!({"source": "list", "slots": slots.iter().map(ToString::to_string).collect::<Vec<_>>()})
            }
            Some(ItemZones::Query(sql)) => json!({"source": "query", "query": sql}),
        };
        m.insert("item_zones".into(), item_zones);
    }
    Ok(v)
}

/// "requests read-write database access but is granted read-only", if so.
async fn job(state: Data, id: web::Path<String>) -> Reply {
    Ok(HttpResponse::Ok().json(job_json(&state, &id).await?))
}

async fn set_job_enabled(state: Data, id: web::Path<String>, body: web::Json<Switch>) -> Reply {
    let job = find_job(&state, &id).await?;
    state.host.set_job_enabled(&job.name, body.enabled).await?;
    Ok(HttpResponse::Ok().json(job_json(&state, &job.name).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScheduleBody {
    schedule: String,
    timezone: Option<String>,
}

async fn set_schedule(state: Data, id: web::Path<String>, body: web::Json<ScheduleBody>) -> Reply {
    let job = find_job(&state, &id).await?;
    let body = body.into_inner();
    state.host.set_schedule(&job.name, Some((body.schedule, body.timezone))).await?;
    Ok(HttpResponse::Ok().json(job_json(&state, &job.name).await?))
}

async fn reset_schedule(state: Data, id: web::Path<String>) -> Reply {
    let job = find_job(&state, &id).await?;
    state.host.set_schedule(&job.name, None).await?;
    Ok(HttpResponse::Ok().json(job_json(&state, &job.name).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RunBody {
    date: Option<String>,
    limit: Option<u64>,
    #[serde(default)]
    dry_run: bool,
    #[serde(default)]
    args: std::collections::BTreeMap<String, String>,
}

/// A JSON body that may be absent (or blank): then the default.
async fn optional_json<T: Default + serde::de::DeserializeOwned>(body: web::Payload) -> Result<T, ApiError> {
    let bytes = read_body(body, MAX_JSON_BYTES).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(&bytes).map_err(|e| ApiError::bad_request(format!("invalid JSON body: {e}")))
}

async fn run(state: Data, id: web::Path<String>, body: web::Payload) -> Reply {
    let job = find_job(&state, &id).await?;
    // The body is optional: none runs with no options.
    let body: RunBody = optional_json(body).await?;
    if let Some(d) = &body.date
        && chrono::NaiveDate::parse_from_str(d, "%Y-%m-%d").is_err()
    {
        return Err(ApiError::bad_request(format!("date: expected YYYY-MM-DD, got {d:?}")));
    }
    if body.limit == Some(0) {
        return Err(ApiError::bad_request("limit: must be at least 1"));
    }
    let args =
        RunArgs { date: body.date, limit: body.limit, dry_run: body.dry_run, args: body.args.into_iter().collect() };
    let started = state.host.start_run(&job.name, args).await?;
    Ok(HttpResponse::Accepted().json(json!({"execution_id": started.id, "job": job.name})))
}

#[derive(Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RollbackBody {
    /// A version number or a digest prefix.
    to: Option<RollbackTarget>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum RollbackTarget {
    Version(i64),
    Text(String),
}

async fn rollback(state: Data, id: web::Path<String>, body: web::Payload) -> Reply {
    let job = find_job(&state, &id).await?;
    let body: RollbackBody = optional_json(body).await?;
    let to = body.to.map(|t| match t {
        RollbackTarget::Version(v) => v.to_string(),
        RollbackTarget::Text(s) => s,
    });
    let done = state.host.rollback(&job.name, to.as_deref()).await?;
    Ok(HttpResponse::Ok().json(json!({
        "job": done.job.name,
        "from_version": done.from,
        "to_version": done.to.version,
        "version": done.job.component_version,
        "digest": done.job.component_digest,
    })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    limit: Option<u32>,
    before: Option<i64>,
}

async fn executions(state: Data, id: web::Path<String>, page: web::Query<PageQuery>) -> Reply {
    let job = find_job(&state, &id).await?;
    let limit = page.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let before = page.before.map(ExecutionId);
    let rows = state.host.store.list_executions(&job.name, limit + 1, before).await?;
    let live: HashMap<ExecutionId, LiveProgress> =
        state.host.job_snapshot(&job.name).await.map(|s| s.running.into_iter().collect()).unwrap_or_default();
    let more = rows.len() > limit as usize;
    let rows = &rows[..rows.len().min(limit as usize)];
    let next_cursor = if more { rows.last().map(|e| e.id.0.to_string()) } else { None };
    let views: Vec<_> = rows.iter().map(|e| execution_view(e, live.get(&e.id).copied())).collect();
    Ok(HttpResponse::Ok().json(json!({"executions": views, "next_cursor": next_cursor, "limit": limit})))
}

async fn execution(state: Data, id: web::Path<String>) -> Reply {
    let id = execution_id(&id)?;
    let Some(e) = state.host.store.get_execution(id).await? else {
        return Err(ApiError::not_found(format!("unknown execution {id}")));
    };
    let live = match e.status {
        ExecutionStatus::Queued | ExecutionStatus::Running => state
            .host
            .job_snapshot(&e.job_name)
            .await
            .ok()
            .and_then(|s| s.running.into_iter().find(|(i, _)| *i == id).map(|(_, p)| p)),
        _ => None,
    };
    let problems: Vec<Value> = state
        .host
        .store
        .execution_items(id)
        .await?
        .into_iter()
        .map(|(key, outcome, class, message)| json!({"key": key, "outcome": outcome, "class": class, "message": message}))
        .collect();
    let mut v = serde_json::to_value(execution_view(&e, live)).map_err(ApiError::internal)?;
    if let Value::Object(m) = &mut v {
        m.insert("logs".into(), json!(e.logs));
        m.insert("logs_truncated".into(), json!(e.logs_truncated));
        m.insert("problems".into(), json!(problems));
    }
    Ok(HttpResponse::Ok().json(v))
}

async fn cancel(state: Data, id: web::Path<String>) -> Reply {
    let id = execution_id(&id)?;
    let Some(e) = state.host.store.get_execution(id).await? else {
        return Err(ApiError::not_found(format!("unknown execution {id}")));
    };
    if state.host.cancel(id).await? {
        return Ok(HttpResponse::Accepted().json(json!({"cancelled": true, "execution_id": id})));
    }
    let why = if e.status.is_final() {
        format!("execution {id} is not running (it ended {})", e.status)
    } else {
        format!("execution {id} is not running on this host")
    };
    Err(ApiError::new(StatusCode::CONFLICT, why).with("status", json!(e.status.as_str())))
}

/// Reads a request body of at most `cap` bytes.
async fn read_body(mut body: web::Payload, cap: usize) -> Result<Vec<u8>, ApiError> {
    let mut bytes = Vec::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("cannot read the request body: {e}")))?;
        if bytes.len() + chunk.len() > cap {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body is larger than the limit of {cap} bytes"),
            ));
        }
        bytes.extend_from_slice(&chunk);
    }
    Ok(bytes)
}

async fn deploy(state: Data, body: web::Payload) -> Reply {
    let bytes = read_body(body, MAX_COMPONENT_BYTES).await?;
    if bytes.is_empty() {
        return Err(ApiError::bad_request("empty upload: send the component's bytes as the request body"));
    }
    let job = state.host.deploy(bytes).await?;
    Ok(HttpResponse::Created().json(json!({
        "job": job.name,
        "version": job.component_version,
        "digest": job.component_digest,
    })))
}

// ---- events ------------------------------------------------------------------

async fn events(state: Data) -> HttpResponse {
    let rx = state.host.subscribe();
    let start = futures_util::stream::once(async { Ok::<_, actix_web::Error>(web::Bytes::from_static(b": live\n\n")) });
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let chunk = match tokio::time::timeout(KEEP_ALIVE, rx.recv()).await {
            Err(_) => ": keep-alive\n\n".to_string(),
            Ok(Ok(event)) => match serde_json::to_string(&event) {
                Ok(data) => format!("event: {}\ndata: {data}\n\n", event.name()),
                Err(_) => return Some((Ok(web::Bytes::new()), rx)),
            },
            Ok(Err(RecvError::Lagged(n))) => format!("event: lagged\ndata: {{\"missed\": {n}}}\n\n"),
            Ok(Err(RecvError::Closed)) => return None,
        };
        Some((Ok::<_, actix_web::Error>(web::Bytes::from(chunk)), rx))
    });
    HttpResponse::Ok()
        .insert_header((header::CONTENT_TYPE, "text/event-stream"))
        .insert_header((header::CACHE_CONTROL, "no-cache"))
        .insert_header(("X-Accel-Buffering", "no"))
        .streaming(start.chain(stream))
}

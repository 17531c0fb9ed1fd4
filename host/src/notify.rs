//! Webhook notifications: a JSON POST to each configured URL when a run
//! fails, ends partial, recovers after failures, or runs past its expected
//! duration.
//!
//! ```toml
//! [[webhooks]]
//! url = "https://hooks.example.com/sundial"
//! events = ["failed", "partial", "recovered", "overrun"]   # default: all four
//! jobs = ["snapshot", "metrics"]                            # default: every job
//! ```
//!
//! A host that schedules (`sundial serve`, or an embedded host with
//! scheduling on) sends them; one-shot commands such as `sundial run` do not.
//! Delivery never blocks a run: the notifier follows the host's event stream
//! on its own task, and each delivery is its own task, retried with
//! exponential backoff (1 s, 2 s, 4 s, 8 s) on a connection error or a
//! non-2xx answer. A delivery that still fails is logged, never fatal.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::RecvError;

use crate::events::Event;
use crate::model::{ExecutionId, ExecutionStatus};
use crate::store::Store;

/// Attempts per delivery.
pub const ATTEMPTS: u32 = 5;

/// How long one attempt may take (connect, answer).
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);

/// Why a notification is sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Notice {
    /// The run failed or timed out.
    Failed,
    /// Some items failed.
    Partial,
    /// The run succeeded after the job's previous run had failed or ended partial.
    Recovered,
    /// The run is still going past the job's expected duration.
    Overrun,
}

impl Notice {
    /// Every kind.
    pub const ALL: [Notice; 4] = [Notice::Failed, Notice::Partial, Notice::Recovered, Notice::Overrun];

    /// The name in the payload and the configuration.
    pub fn as_str(self) -> &'static str {
        match self {
            Notice::Failed => "failed",
            Notice::Partial => "partial",
            Notice::Recovered => "recovered",
            Notice::Overrun => "overrun",
        }
    }
}

/// One `[[webhooks]]` entry.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    /// Where to POST (http or https).
    pub url: String,
    /// Which notices (default: all).
    pub events: Option<Vec<Notice>>,
    /// Which jobs (default: all).
    pub jobs: Option<Vec<String>>,
}

impl Webhook {
    /// Checks the URL: http or https with a host.
    pub fn validate(&self) -> Result<(), String> {
        let uri: http::Uri = self.url.parse().map_err(|e| format!("url {:?}: {e}", self.url))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => return Err(format!("url {:?}: must start with http:// or https://", self.url)),
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(format!("url {:?}: has no host", self.url));
        }
        if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
            return Err(format!(
                "url {:?}: credentials in the URL are not supported; put a secret in the path instead",
                self.url
            ));
        }
        Ok(())
    }

    fn wants(&self, notice: Notice, job: &str) -> bool {
        self.events.as_ref().is_none_or(|e| e.contains(&notice))
            && self.jobs.as_ref().is_none_or(|j| j.iter().any(|n| n == job))
    }
}

/// Follows `events` and delivers notifications to `hooks` until the host's
/// event channel closes. `node` names this host in payloads.
pub fn follow(hooks: Vec<Webhook>, store: Store, node: String, mut events: Receiver<Event>) {
    if hooks.is_empty() {
        return;
    }
    actix_rt::spawn(async move {
        // The last finished status per job, to tell a recovery.
        let mut last: HashMap<String, ExecutionStatus> = HashMap::new();
        loop {
            let event = match events.recv().await {
                Ok(e) => e,
                Err(RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "the notifier fell behind; some notifications were not sent");
                    last.clear();
                    continue;
                }
                Err(RecvError::Closed) => return,
            };
            let (notice, id, job) = match &event {
                Event::ExecutionFinished { id, job, status, .. } => {
                    // Cancelled and skipped runs say nothing about the job's health.
                    if !matters(*status) {
                        continue;
                    }
                    let previous = match last.insert(job.clone(), *status) {
                        Some(p) => Some(p),
                        None => previous_status(&store, job, *id).await,
                    };
                    let notice = match status {
                        ExecutionStatus::Failed | ExecutionStatus::TimedOut => Notice::Failed,
                        ExecutionStatus::Partial => Notice::Partial,
                        ExecutionStatus::Succeeded if previous.is_some_and(is_bad) => Notice::Recovered,
                        _ => continue,
                    };
                    (notice, *id, job.clone())
                }
                Event::ExecutionOverrun { id, job, .. } => (Notice::Overrun, *id, job.clone()),
                _ => continue,
            };
            let targets: Vec<String> = hooks.iter().filter(|h| h.wants(notice, &job)).map(|h| h.url.clone()).collect();
            if targets.is_empty() {
                continue;
            }
            let payload = payload(&store, &node, notice, id, &job, &event).await;
            for url in targets {
                let body = payload.clone();
                actix_rt::spawn(async move { deliver(url, body).await });
            }
        }
    });
}

fn matters(status: ExecutionStatus) -> bool {
    matches!(
        status,
        ExecutionStatus::Succeeded | ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Partial
    )
}

fn is_bad(status: ExecutionStatus) -> bool {
    matches!(status, ExecutionStatus::Failed | ExecutionStatus::TimedOut | ExecutionStatus::Partial)
}

/// The status of the job's finished execution before `id`, from the store.
async fn previous_status(store: &Store, job: &str, id: ExecutionId) -> Option<ExecutionStatus> {
    let recent = store.list_executions(job, 20, None).await.ok()?;
    recent.into_iter().filter(|e| e.id < id && e.finished_at.is_some() && matters(e.status)).map(|e| e.status).next()
}

async fn payload(store: &Store, node: &str, notice: Notice, id: ExecutionId, job: &str, event: &Event) -> Bytes {
    let e = store.get_execution(id).await.ok().flatten();
    let mut v = json!({
        "event": notice.as_str(),
        "job": job,
        "execution_id": id,
        "host": node,
    });
    if let (serde_json::Value::Object(m), Some(e)) = (&mut v, e) {
        m.insert("status".into(), json!(e.status));
        m.insert("trigger".into(), json!(e.trigger));
        m.insert("attempt".into(), json!(e.attempt));
        m.insert("scheduled_for".into(), json!(e.scheduled_for));
        m.insert("started_at".into(), json!(e.started_at));
        m.insert("finished_at".into(), json!(e.finished_at));
        m.insert("error_class".into(), json!(e.error_class));
        m.insert("error".into(), json!(e.error_message));
        m.insert("summary".into(), json!(e.summary));
        m.insert(
            "items".into(),
            json!({"total": e.items_total, "ok": e.items_ok, "skipped": e.items_skipped, "failed": e.items_failed}),
        );
        m.insert("version".into(), json!(e.component_version));
    }
    if let (serde_json::Value::Object(m), Event::ExecutionOverrun { expected_secs, .. }) = (&mut v, event) {
        m.insert("expected_secs".into(), json!(expected_secs));
    }
    Bytes::from(v.to_string())
}

/// POSTs `body` to `url`, retrying with backoff; logs the outcome.
async fn deliver(url: String, body: Bytes) {
    let mut delay = Duration::from_secs(1);
    for attempt in 1..=ATTEMPTS {
        match post(&url, body.clone()).await {
            Ok(status) if status.is_success() => {
                tracing::debug!(%url, attempt, "notification delivered");
                return;
            }
            Ok(status) => tracing::warn!(%url, attempt, %status, "notification refused"),
            Err(e) => tracing::warn!(%url, attempt, error = %e, "notification not delivered"),
        }
        if attempt < ATTEMPTS {
            actix_rt::time::sleep(delay).await;
            delay *= 2;
        }
    }
    tracing::error!(%url, attempts = ATTEMPTS, "notification given up");
}

async fn post(url: &str, body: Bytes) -> Result<http::StatusCode, String> {
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| e.to_string())?;
    let host = uri.authority().map(|a| a.as_str().to_string()).unwrap_or_default();
    let request = http::Request::post(uri)
        // The connection-level client sends only the path: the host goes here.
        .header(http::header::HOST, host)
        .header(http::header::CONNECTION, "close")
        .header(http::header::CONTENT_TYPE, "application/json")
        .header(http::header::USER_AGENT, concat!("sundial/", env!("CARGO_PKG_VERSION")))
        .body(Full::new(body).map_err(|never| match never {}))
        .map_err(|e| e.to_string())?;
    let options = wasmtime_wasi_http::RequestOptions {
        connect_timeout: Some(ATTEMPT_TIMEOUT),
        first_byte_timeout: Some(ATTEMPT_TIMEOUT),
        between_bytes_timeout: Some(ATTEMPT_TIMEOUT),
    };
    let send = async {
        let (response, io) =
            wasmtime_wasi_http::default_send_request(request, Some(options)).await.map_err(|e| format!("{e:?}"))?;
        let status = response.status();
        // Drive the connection while the body is read (and dropped).
        let read = async {
            let _ = response.into_body().collect().await;
        };
        let _ = tokio::join!(io, read);
        Ok(status)
    };
    tokio::time::timeout(ATTEMPT_TIMEOUT * 2, send).await.map_err(|_| "timed out".to_string())?
}

//! Outbound HTTP for jobs: `wasi:http` from `wasmtime-wasi-http`, restricted
//! per job by the hooks below.
//!
//! Invariants:
//! - deny by default: a request goes out only if its host and port are in the
//!   job's `http` grant ([`HttpAllowlist`]). The check runs in
//!   [`WasiHttpHooks::send_request`], which every outgoing request passes
//!   through with its final URI, before anything touches the network. A
//!   denied request fails with `http-request-denied`; the host's log and the
//!   execution's log say which host was refused and how to grant it;
//! - the host never follows redirects: a 3xx goes back to the guest, and a
//!   guest that follows it makes a new request, checked like the first;
//! - no request outlives its execution: connecting, waiting for the response
//!   and each wait for more of the body are bounded by [`DEFAULT_HTTP_TIMEOUT`]
//!   (or the guest's request options), all of it by the execution's deadline,
//!   and an operator's cancel stops it within [`STOP_CHECK`];
//! - a response body larger than [`MAX_HTTP_RESPONSE_BYTES`] is refused (by
//!   its `content-length` up front, else when the stream passes the cap);
//! - nothing else reaches the network: WASI sockets stay denied.
//!
//! The IO runs on the runtime's Tokio runtime, which the worker thread enters
//! for the execution (see `exec::execute`).

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use wasmtime_wasi_http::{
    Error as WasiHttpErr, RequestOptions, WasiBody, WasiHttpCtxView, WasiHttpHooks, WasiHttpView,
};

use super::host::{CancelToken, HostState};
use crate::model::{HttpAllowlist, HttpHost};

/// Largest response body a job may receive.
pub const MAX_HTTP_RESPONSE_BYTES: u64 = 16 << 20;

/// How long a request may wait to connect, for the response, and between two
/// pieces of its body, unless the guest asks for other bounds; never longer
/// than what is left of the execution's deadline.
pub const DEFAULT_HTTP_TIMEOUT: Duration = Duration::from_secs(60);

/// How often a waiting request looks at the execution's cancel token.
pub const STOP_CHECK: Duration = Duration::from_millis(50);

type IoFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<()>> + Send>;
type SendFuture = Box<dyn Future<Output = wasmtime_wasi_http::Result<(http::Response<WasiBody>, IoFuture)>> + Send>;

/// At most N outbound HTTP requests a second for one job, across all its
/// executions (seed 001: keep a paid API's usage in check). Requests are
/// spaced at least 1/N s apart; one that would go too early waits for its
/// slot (within the execution's deadline) rather than fail.
#[derive(Debug, Clone)]
pub struct HttpRateLimit {
    per_sec: u32,
    next: Arc<std::sync::Mutex<Instant>>,
}

impl HttpRateLimit {
    /// A limit of `per_sec` requests a second (at least 1).
    pub fn new(per_sec: u32) -> Self {
        HttpRateLimit { per_sec: per_sec.max(1), next: Arc::new(std::sync::Mutex::new(Instant::now())) }
    }

    /// Requests a second.
    pub fn per_sec(&self) -> u32 {
        self.per_sec
    }

    /// Takes the next free slot and returns how long to wait for it, or
    /// `None` (taking nothing) if that slot is after `deadline`: a run that
    /// cannot get a slot in time does not push later runs' slots back.
    fn reserve(&self, deadline: Instant) -> Option<Duration> {
        let interval = Duration::from_secs(1) / self.per_sec;
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        let slot = (*next).max(now);
        if slot >= deadline {
            return None;
        }
        *next = slot + interval;
        Some(slot - now)
    }
}

impl PartialEq for HttpRateLimit {
    fn eq(&self, other: &Self) -> bool {
        self.per_sec == other.per_sec
    }
}

impl Eq for HttpRateLimit {}

/// The HTTP side of one execution: the job's grant, the execution's deadline
/// and cancel token, and the denials not yet copied into its log.
pub(crate) struct HttpGuard {
    job: String,
    /// The hosts the job may reach.
    pub(crate) allowlist: HttpAllowlist,
    /// The job's request rate limit, shared by its executions.
    pub(crate) rate: Option<HttpRateLimit>,
    stop: Stop,
    denials: Vec<String>,
}

impl HttpGuard {
    /// Nothing granted (until the execution sets the job's grant).
    pub(crate) fn deny_all(job: &str, deadline: Instant, cancel: CancelToken) -> Self {
        HttpGuard {
            job: job.to_string(),
            allowlist: HttpAllowlist::default(),
            rate: None,
            stop: Stop { deadline, cancel },
            denials: Vec::new(),
        }
    }

    /// Denials since the last call, for the execution's log.
    pub(crate) fn take_denials(&mut self) -> Vec<String> {
        std::mem::take(&mut self.denials)
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http_ctx, table: &mut self.table, hooks: &mut self.http }
    }
}

/// When a request must give up: the execution's deadline or cancellation.
#[derive(Clone)]
struct Stop {
    deadline: Instant,
    cancel: CancelToken,
}

impl Stop {
    fn reached(&self) -> Option<WasiHttpErr> {
        if self.cancel.is_cancelled() {
            return Some(WasiHttpErr::InternalError(Some("the execution was cancelled".into())));
        }
        (Instant::now() >= self.deadline).then_some(WasiHttpErr::HttpResponseTimeout)
    }

    /// Resolves with the reason once the deadline passes or the execution is
    /// cancelled.
    async fn wait(self) -> WasiHttpErr {
        let mut tick = tokio::time::interval(STOP_CHECK);
        loop {
            tick.tick().await;
            if let Some(e) = self.reached() {
                return e;
            }
        }
    }
}

/// Checks a request's URI against the grant; returns the `host:port` it goes
/// to, or why it is refused (naming the host and the grant that would allow it).
fn authorize(allowlist: &HttpAllowlist, job: &str, uri: &http::Uri) -> Result<String, String> {
    let default_port = match uri.scheme_str() {
        Some("https") => 443,
        Some("http") => 80,
        other => {
            let s = other.unwrap_or_default();
            return Err(format!("HTTP request denied: scheme {s:?} is not supported, only http and https"));
        }
    };
    let authority = uri.authority().map(|a| a.as_str()).unwrap_or_default();
    let Some(parsed) = uri.authority().filter(|a| !a.host().is_empty() && !authority.contains('@')) else {
        return Err(format!("HTTP request denied: {authority:?} is not a host or host:port"));
    };
    let host = HttpHost::normalize_host(parsed.host());
    let port = parsed.port_u16().unwrap_or(default_port);
    if allowlist.allows(&host, port, default_port) {
        return Ok(HttpHost { host, port: Some(port) }.to_string());
    }
    // The grant that would allow it: the bare host for the scheme's own port.
    let entry = HttpHost { host, port: (port != default_port).then_some(port) };
    let granted = if allowlist.is_empty() { "none".to_string() } else { allowlist.to_string() };
    Err(format!(
        "HTTP request to {entry} denied: job {job:?} is not granted it (granted hosts: {granted}); \
         an operator allows it with `http = [\"{entry}\"]` under [jobs.{job}] in sundial.toml"
    ))
}

impl WasiHttpHooks for HttpGuard {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: IoFuture,
    ) -> SendFuture {
        match authorize(&self.allowlist, &self.job, request.uri()) {
            Ok(target) => {
                tracing::debug!(job = %self.job, %target, method = %request.method(), "outbound HTTP request")
            }
            Err(denied) => {
                tracing::warn!(job = %self.job, "{denied}");
                self.denials.push(denied);
                return Box::new(async { Err(WasiHttpErr::HttpRequestDenied) });
            }
        }
        let stop = self.stop.clone();
        let wait = match self.rate.as_ref().map(|r| (r.per_sec, r.reserve(stop.deadline))) {
            None => Duration::ZERO,
            Some((_, Some(wait))) => wait,
            Some((per_sec, None)) => {
                let denied = format!(
                    "HTTP request refused: the job's rate limit ({per_sec} a second) has no free slot before the \
                     execution's deadline"
                );
                tracing::warn!(job = %self.job, "{denied}");
                self.denials.push(denied);
                return Box::new(async { Err(WasiHttpErr::HttpRequestDenied) });
            }
        };
        let remaining = stop.deadline.saturating_duration_since(Instant::now() + wait);
        let options = bounded_options(options, remaining);
        let job = self.job.clone();
        Box::new(async move {
            if !wait.is_zero() {
                tracing::debug!(job = %job, wait_ms = wait.as_millis() as u64, "HTTP request waits for the job's rate limit");
                tokio::select! {
                    () = tokio::time::sleep(wait) => {}
                    e = stop.clone().wait() => return Err(e),
                }
            }
            if let Some(e) = stop.reached() {
                return Err(e);
            }
            let send = wasmtime_wasi_http::default_send_request(request, Some(options));
            let (response, io) = tokio::select! {
                sent = send => sent?,
                e = stop.clone().wait() => return Err(e),
            };
            if let Some(len) = content_length(response.headers())
                && len > MAX_HTTP_RESPONSE_BYTES
            {
                tracing::warn!(len, "HTTP response refused: larger than {MAX_HTTP_RESPONSE_BYTES} bytes");
                return Err(WasiHttpErr::HttpResponseBodySize(Some(MAX_HTTP_RESPONSE_BYTES)));
            }
            let response = response.map(|body| CappedBody::new(body.boxed_unsync(), stop).boxed_unsync());
            Ok((response, Box::new(io) as IoFuture))
        })
    }
}

/// The guest's request options (or the defaults), each bounded by what is left
/// of the execution.
fn bounded_options(options: Option<RequestOptions>, remaining: Duration) -> RequestOptions {
    let o = options.unwrap_or_default();
    let bound = |d: Option<Duration>| Some(d.unwrap_or(DEFAULT_HTTP_TIMEOUT).min(remaining));
    RequestOptions {
        connect_timeout: bound(o.connect_timeout),
        first_byte_timeout: bound(o.first_byte_timeout),
        between_bytes_timeout: bound(o.between_bytes_timeout),
    }
}

fn content_length(headers: &http::HeaderMap) -> Option<u64> {
    headers.get(http::header::CONTENT_LENGTH)?.to_str().ok()?.trim().parse().ok()
}

/// A response body that fails once it passes [`MAX_HTTP_RESPONSE_BYTES`],
/// the deadline, or a cancel.
struct CappedBody {
    inner: WasiBody,
    read: u64,
    stop: Stop,
    tick: tokio::time::Interval,
}

impl CappedBody {
    /// Must be called in the Tokio runtime: the body is later polled from the
    /// guest's thread too, where no timer can be created.
    fn new(inner: WasiBody, stop: Stop) -> Self {
        let mut tick = tokio::time::interval(STOP_CHECK);
        tick.reset();
        CappedBody { inner, read: 0, stop, tick }
    }
}

impl Body for CappedBody {
    type Data = Bytes;
    type Error = WasiHttpErr;

    fn poll_frame(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, WasiHttpErr>>> {
        let this = self.get_mut();
        if let Some(e) = this.stop.reached() {
            return Poll::Ready(Some(Err(e)));
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.read += data.len() as u64;
                    if this.read > MAX_HTTP_RESPONSE_BYTES {
                        return Poll::Ready(Some(Err(WasiHttpErr::HttpResponseBodySize(Some(
                            MAX_HTTP_RESPONSE_BYTES,
                        )))));
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Pending => {
                // Wake up now and then to notice the deadline or a cancel.
                while this.tick.poll_tick(cx).is_ready() {
                    if let Some(e) = this.stop.reached() {
                        return Poll::Ready(Some(Err(e)));
                    }
                }
                Poll::Pending
            }
            done => done,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rate_limit_spaces_slots_and_refuses_one_past_the_deadline() {
        let limit = HttpRateLimit::new(10);
        let far = Instant::now() + Duration::from_secs(60);
        assert_eq!(limit.reserve(far), Some(Duration::ZERO));
        let second = limit.reserve(far).unwrap();
        assert!(second > Duration::from_millis(90) && second <= Duration::from_millis(100), "{second:?}");
        // A run whose deadline comes before the next slot gets none, and takes none.
        assert_eq!(limit.reserve(Instant::now() + Duration::from_millis(50)), None);
        let third = limit.reserve(far).unwrap();
        assert!(third > Duration::from_millis(190) && third <= Duration::from_millis(200), "{third:?}");
    }

    fn grant(hosts: &[&str]) -> HttpAllowlist {
        HttpAllowlist::new(hosts.iter().map(|h| h.parse().unwrap()).collect())
    }

    fn check(g: &HttpAllowlist, uri: &str) -> Result<String, String> {
        authorize(g, "job", &uri.parse().unwrap())
    }

    #[test]
    fn requests_go_only_to_granted_hosts_and_ports() {
        let g = grant(&["127.0.0.1:8123", "API.example.com", "[::1]:8080"]);
        assert_eq!(check(&g, "http://127.0.0.1:8123/x?y=1").unwrap(), "127.0.0.1:8123");
        assert_eq!(check(&g, "https://api.example.com/").unwrap(), "api.example.com:443");
        assert_eq!(check(&g, "https://Api.Example.COM.:443/").unwrap(), "api.example.com:443");
        assert_eq!(check(&g, "http://[::1]:8080/").unwrap(), "[::1]:8080");
        assert_eq!(check(&g, "http://api.example.com/").unwrap(), "api.example.com:80");
        assert!(check(&g, "https://api.example.com:8443/").is_err(), "a bare host allows default ports only");
        assert!(check(&g, "http://127.0.0.1:8124/").is_err());
        assert!(check(&g, "http://127.0.0.2:8123/").is_err());
        assert!(check(&g, "http://user@127.0.0.1:8123/").is_err());
        assert!(check(&g, "ftp://127.0.0.1:8123/").is_err());
        assert!(check(&g, "/relative").is_err());
    }

    #[test]
    fn a_denial_names_the_host_and_the_grant() {
        let none = HttpAllowlist::default();
        let e = authorize(&none, "listed-companies", &"http://127.0.0.2:81/".parse().unwrap()).unwrap_err();
        assert!(e.contains("HTTP request to 127.0.0.2:81 denied"), "{e}");
        assert!(e.contains("granted hosts: none"), "{e}");
        assert!(e.contains(r#"`http = ["127.0.0.2:81"]` under [jobs.listed-companies]"#), "{e}");
        let e = check(&grant(&["a.example"]), "https://b.example/").unwrap_err();
        assert!(e.contains(r#"`http = ["b.example"]`"#) && e.contains(r#"granted hosts: ["a.example"]"#), "{e}");
    }

    #[test]
    fn timeouts_never_outlive_the_execution() {
        let o = bounded_options(None, Duration::from_secs(5));
        assert_eq!(o.connect_timeout, Some(Duration::from_secs(5)));
        let asked = RequestOptions { first_byte_timeout: Some(Duration::from_secs(2)), ..Default::default() };
        let o = bounded_options(Some(asked), Duration::from_secs(3600));
        assert_eq!(o.first_byte_timeout, Some(Duration::from_secs(2)));
        assert_eq!(o.between_bytes_timeout, Some(DEFAULT_HTTP_TIMEOUT));
    }
}

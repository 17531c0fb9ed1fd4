//! Outbound HTTP: a small blocking client over `wasi:http`.
//!
//! The operator grants a job the hosts it may reach, in the job's section of
//! `sundial.toml`:
//!
//! ```toml
//! [jobs.listed-companies]
//! http = ["api.example.com", "127.0.0.1:8123"]   # host (default port) or host:port
//! ```
//!
//! A request to any other host fails with [`HttpError::Denied`], whose message
//! names the host and the grant that would allow it. The host also bounds every
//! request by the execution's deadline, refuses response bodies over 16 MiB and
//! never follows redirects itself: [`Request::send`] follows up to
//! [`MAX_REDIRECTS`] of them for `GET` and `HEAD`, each one a new request that
//! the grant must allow.
//!
//! ```no_run
//! use sundial_guest::{http, JobError};
//!
//! fn fetch(url: &str) -> Result<Vec<u8>, JobError> {
//!     let response = http::get(url)?; // connection problems are retryable
//!     match response.status {
//!         200..=299 => Ok(response.body),
//!         500..=599 => Err(JobError::retryable(format!("{url} answered {}", response.status))),
//!         status => Err(JobError::fatal(format!("{url} answered {status}"))),
//!     }
//! }
//! ```

use std::fmt;
use std::time::Duration;

use wasip2::http::outgoing_handler;
use wasip2::http::types::{
    ErrorCode, Fields, IncomingBody, IncomingResponse, Method as WitMethod, OutgoingBody, OutgoingRequest,
    RequestOptions, Scheme,
};
use wasip2::io::streams::StreamError;

use crate::JobError;

/// Redirects [`Request::send`] follows for `GET` and `HEAD` before giving up.
pub const MAX_REDIRECTS: usize = 5;

/// Bytes asked for per read of a response body.
const READ_CHUNK: u64 = 64 * 1024;
/// Bytes written per call of a request body (the most `wasi:io` guarantees).
const WRITE_CHUNK: usize = 4096;

/// An HTTP method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// `GET`
    Get,
    /// `HEAD`
    Head,
    /// `POST`
    Post,
    /// `PUT`
    Put,
    /// `PATCH`
    Patch,
    /// `DELETE`
    Delete,
}

impl Method {
    fn to_wit(self) -> WitMethod {
        match self {
            Method::Get => WitMethod::Get,
            Method::Head => WitMethod::Head,
            Method::Post => WitMethod::Post,
            Method::Put => WitMethod::Put,
            Method::Patch => WitMethod::Patch,
            Method::Delete => WitMethod::Delete,
        }
    }
}

/// A request being built; [`Request::send`] sends it and waits for the whole
/// response.
#[derive(Debug, Clone)]
pub struct Request {
    method: Method,
    url: String,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    timeout: Option<Duration>,
}

impl Request {
    /// A request with no headers and no body.
    pub fn new(method: Method, url: &str) -> Request {
        Request { method, url: url.to_string(), headers: Vec::new(), body: Vec::new(), timeout: None }
    }

    /// A `GET` request.
    pub fn get(url: &str) -> Request {
        Request::new(Method::Get, url)
    }

    /// A `POST` request with a body.
    pub fn post(url: &str, body: impl Into<Vec<u8>>) -> Request {
        Request::new(Method::Post, url).body(body)
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }

    /// Bounds connecting, waiting for the response and each wait for more of
    /// its body (the host's default is 60 s). The execution's deadline bounds
    /// them whatever this says.
    pub fn timeout(mut self, timeout: Duration) -> Request {
        self.timeout = Some(timeout);
        self
    }

    /// Sends the request and reads the whole response. Any status is a
    /// response, not an error; errors are about getting one at all.
    pub fn send(self) -> Result<Response, HttpError> {
        let follow = matches!(self.method, Method::Get | Method::Head);
        let mut url = Url::parse(&self.url)?;
        let mut redirects = 0;
        loop {
            let response = send_once(&self, &url)?;
            let location = match response.status {
                301 | 302 | 303 | 307 | 308 if follow => response.header("location"),
                _ => None,
            };
            let Some(location) = location else {
                return Ok(response);
            };
            if redirects == MAX_REDIRECTS {
                return Err(HttpError::Redirects(format!(
                    "{} redirected more than {MAX_REDIRECTS} times (last to {location})",
                    self.url
                )));
            }
            redirects += 1;
            url = Url::parse(&url.join(location))?;
        }
    }
}

/// Sends a `GET` request and reads the whole response.
pub fn get(url: &str) -> Result<Response, HttpError> {
    Request::get(url).send()
}

/// A complete response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// The headers, names in lowercase, values as text (invalid UTF-8 replaced).
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// The URL that answered (after redirects).
    pub url: String,
}

impl Response {
    /// Whether the status is 2xx.
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The first value of a header, by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why no response was received. Every message names the host or URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// The URL is not an absolute `http` or `https` URL.
    InvalidUrl(String),
    /// The host refused the request: the operator has not granted this job
    /// that host (the message says how to).
    Denied(String),
    /// No connection: DNS failure, refused, reset, unreachable. Worth retrying.
    Connect(String),
    /// No answer in time. Worth retrying.
    Timeout(String),
    /// The response is larger than the host accepts.
    TooLarge(String),
    /// Too many redirects.
    Redirects(String),
    /// Anything else (TLS, protocol, a header the host forbids).
    Other(String),
}

impl HttpError {
    /// Whether trying again later may succeed (connection problems, timeouts).
    pub fn is_retryable(&self) -> bool {
        matches!(self, HttpError::Connect(_) | HttpError::Timeout(_))
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::InvalidUrl(m)
            | HttpError::Denied(m)
            | HttpError::Connect(m)
            | HttpError::Timeout(m)
            | HttpError::TooLarge(m)
            | HttpError::Redirects(m)
            | HttpError::Other(m) => f.write_str(m),
        }
    }
}

impl std::error::Error for HttpError {}

/// Connection problems and timeouts are retryable; the rest is fatal.
impl From<HttpError> for JobError {
    fn from(e: HttpError) -> Self {
        if e.is_retryable() { JobError::retryable(e.to_string()) } else { JobError::fatal(e.to_string()) }
    }
}

/// An absolute URL split the way `wasi:http` wants it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Url {
    https: bool,
    authority: String,
    path_with_query: String,
}

impl Url {
    fn parse(url: &str) -> Result<Url, HttpError> {
        let invalid = |why: &str| HttpError::InvalidUrl(format!("invalid URL {url:?}: {why}"));
        let (scheme, rest) = url.split_once("://").ok_or_else(|| invalid("expected http://… or https://…"))?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "https" => true,
            "http" => false,
            _ => return Err(invalid("only http and https are supported")),
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let (authority, path) = rest.split_at(rest.find(['/', '?']).unwrap_or(rest.len()));
        if authority.is_empty() {
            return Err(invalid("no host"));
        }
        if authority.contains('@') {
            return Err(invalid("user names and passwords in URLs are not supported; send an authorization header"));
        }
        if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(invalid("spaces and control characters must be percent-encoded"));
        }
        let path_with_query = match path {
            "" => "/".to_string(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_string(),
        };
        Ok(Url { https, authority: authority.to_string(), path_with_query })
    }

    fn scheme(&self) -> &'static str {
        if self.https { "https" } else { "http" }
    }

    /// `location` (a redirect target) resolved against this URL.
    fn join(&self, location: &str) -> String {
        if location.contains("://") {
            location.to_string()
        } else if let Some(rest) = location.strip_prefix("//") {
            format!("{}://{rest}", self.scheme())
        } else if location.starts_with('/') {
            format!("{}://{}{location}", self.scheme(), self.authority)
        } else {
            let path = self.path_with_query.split('?').next().unwrap_or("/");
            let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
            format!("{}://{}{dir}{location}", self.scheme(), self.authority)
        }
    }
}

impl fmt::Display for Url {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}{}", self.scheme(), self.authority, self.path_with_query)
    }
}

fn send_once(req: &Request, url: &Url) -> Result<Response, HttpError> {
    // Under `sundial_guest::testing` there is no `wasi:http` to send through.
    #[cfg(all(feature = "testing", not(target_arch = "wasm32")))]
    if let Some(answer) = crate::testing::backend::http::intercept(req.method, &url.to_string(), &url.authority) {
        return answer;
    }
    let host = url.authority.as_str();
    let other = |what: &str| HttpError::Other(format!("HTTP request to {host}: {what}"));
    let headers = Fields::new();
    for (name, value) in &req.headers {
        headers
            .append(&name.to_ascii_lowercase(), value.as_bytes())
            .map_err(|e| other(&format!("header {name:?} is not accepted ({e:?})")))?;
    }
    let request = OutgoingRequest::new(headers);
    request.set_method(&req.method.to_wit()).map_err(|()| other("the method is not accepted"))?;
    request
        .set_scheme(Some(if url.https { &Scheme::Https } else { &Scheme::Http }))
        .map_err(|()| other("the scheme is not accepted"))?;
    request.set_authority(Some(host)).map_err(|()| HttpError::InvalidUrl(format!("invalid host {host:?}")))?;
    request
        .set_path_with_query(Some(&url.path_with_query))
        .map_err(|()| HttpError::InvalidUrl(format!("invalid path {:?}", url.path_with_query)))?;
    let body = if req.body.is_empty() {
        None
    } else {
        Some(request.body().map_err(|()| other("the request body is not available"))?)
    };
    let options = req.timeout.map(|t| {
        let nanos = u64::try_from(t.as_nanos()).unwrap_or(u64::MAX);
        let options = RequestOptions::new();
        // A host that does not support one of these keeps its own bound.
        let _ = options.set_connect_timeout(Some(nanos));
        let _ = options.set_first_byte_timeout(Some(nanos));
        let _ = options.set_between_bytes_timeout(Some(nanos));
        options
    });

    let pending = outgoing_handler::handle(request, options).map_err(|c| from_code(c, host))?;
    if let Some(body) = body {
        {
            let stream = body.write().map_err(|()| other("the request body is not writable"))?;
            for chunk in req.body.chunks(WRITE_CHUNK) {
                stream.blocking_write_and_flush(chunk).map_err(|e| body_error(e, host, "sending the request body"))?;
            }
        }
        OutgoingBody::finish(body, None).map_err(|c| from_code(c, host))?;
    }
    let response = loop {
        match pending.get() {
            Some(r) => break r,
            None => pending.subscribe().block(),
        }
    };
    let response = response.map_err(|()| other("the response was already taken"))?.map_err(|c| from_code(c, host))?;
    let status = response.status();
    let headers = {
        let fields = response.headers();
        fields.entries().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect()
    };
    let body = read_body(&response, host)?;
    Ok(Response { status, headers, body, url: url.to_string() })
}

fn read_body(response: &IncomingResponse, host: &str) -> Result<Vec<u8>, HttpError> {
    let other = |what: &str| HttpError::Other(format!("HTTP response from {host}: {what}"));
    let incoming = response.consume().map_err(|()| other("the body was already taken"))?;
    let mut body = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| other("the body is not readable"))?;
        loop {
            match stream.blocking_read(READ_CHUNK) {
                Ok(chunk) => body.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(e) => return Err(body_error(e, host, "reading the response body")),
            }
        }
    }
    let _trailers = IncomingBody::finish(incoming);
    Ok(body)
}

/// A failed body read or write: the host's error code if it gave one, else a
/// connection problem (the transfer broke off; worth retrying).
fn body_error(e: StreamError, host: &str, doing: &str) -> HttpError {
    match e {
        StreamError::Closed => HttpError::Connect(format!("{doing} from {host} failed: the connection closed")),
        StreamError::LastOperationFailed(e) => match wasip2::http::types::http_error_code(&e) {
            Some(code) => from_code(code, host),
            None => HttpError::Connect(format!("{doing} from {host} failed: {}", e.to_debug_string())),
        },
    }
}

/// Classifies the host's error code; the message names the host.
fn from_code(code: ErrorCode, host: &str) -> HttpError {
    use ErrorCode as E;
    match code {
        E::HttpRequestDenied | E::DestinationIpProhibited => HttpError::Denied(format!(
            "HTTP request to {host} denied: this job is not granted {host}; an operator allows it with \
             `http = [\"{host}\"]` in the job's [jobs.<name>] section of sundial.toml"
        )),
        E::DnsTimeout
        | E::ConnectionTimeout
        | E::ConnectionReadTimeout
        | E::ConnectionWriteTimeout
        | E::HttpResponseTimeout => HttpError::Timeout(format!("{host} did not answer in time ({})", describe(&code))),
        E::DnsError(_)
        | E::DestinationNotFound
        | E::DestinationUnavailable
        | E::DestinationIpUnroutable
        | E::ConnectionRefused
        | E::ConnectionTerminated
        | E::ConnectionLimitReached
        | E::HttpResponseIncomplete => HttpError::Connect(format!("cannot reach {host}: {}", describe(&code))),
        E::HttpResponseBodySize(limit) => HttpError::TooLarge(match limit {
            Some(n) => format!("the response from {host} is larger than the {n} bytes the host accepts"),
            None => format!("the response from {host} is larger than the host accepts"),
        }),
        E::HttpRequestUriInvalid | E::HttpRequestUriTooLong => {
            HttpError::InvalidUrl(format!("invalid URL for {host}: {}", describe(&code)))
        }
        code => HttpError::Other(format!("HTTP request to {host} failed: {}", describe(&code))),
    }
}

fn describe(code: &ErrorCode) -> String {
    use ErrorCode as E;
    match code {
        E::DnsTimeout => "DNS lookup timed out".into(),
        E::DnsError(p) => {
            format!("DNS lookup failed{}", p.rcode.as_deref().map(|r| format!(" ({r})")).unwrap_or_default())
        }
        E::ConnectionRefused => "connection refused".into(),
        E::ConnectionTerminated => "connection closed early".into(),
        E::ConnectionTimeout => "connecting timed out".into(),
        E::ConnectionReadTimeout => "no data in time".into(),
        E::HttpResponseTimeout => "the response did not arrive in time".into(),
        E::HttpResponseIncomplete => "incomplete response".into(),
        E::TlsCertificateError => "invalid TLS certificate".into(),
        E::InternalError(Some(m)) => m.clone(),
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_scheme_authority_and_path() {
        let u = Url::parse("http://127.0.0.1:8123/companies?all=1#top").unwrap();
        assert_eq!(
            (u.https, u.authority.as_str(), u.path_with_query.as_str()),
            (false, "127.0.0.1:8123", "/companies?all=1")
        );
        assert_eq!(Url::parse("HTTPS://api.example.com").unwrap().path_with_query, "/");
        assert_eq!(Url::parse("https://api.example.com?x=1").unwrap().path_with_query, "/?x=1");
        for bad in ["api.example.com/x", "ftp://h/x", "http:///x", "http://u:p@h/x", "http://h/a b"] {
            assert!(matches!(Url::parse(bad), Err(HttpError::InvalidUrl(_))), "{bad}");
        }
    }

    #[test]
    fn redirect_targets_resolve_against_the_url() {
        let u = Url::parse("https://a.example/v1/list?x=1").unwrap();
        assert_eq!(u.join("https://b.example/y"), "https://b.example/y");
        assert_eq!(u.join("//c.example/z"), "https://c.example/z");
        assert_eq!(u.join("/v2/list"), "https://a.example/v2/list");
        assert_eq!(u.join("other"), "https://a.example/v1/other");
    }

    #[test]
    fn connection_problems_are_retryable_and_denials_are_not() {
        let refused = from_code(ErrorCode::ConnectionRefused, "127.0.0.1:1");
        assert!(refused.is_retryable() && refused.to_string().contains("127.0.0.1:1"), "{refused}");
        let denied = from_code(ErrorCode::HttpRequestDenied, "127.0.0.2:8123");
        assert!(!denied.is_retryable());
        assert!(denied.to_string().contains(r#"`http = ["127.0.0.2:8123"]`"#), "{denied}");
        assert!(matches!(JobError::from(denied), JobError::Fatal(_)));
    }
}

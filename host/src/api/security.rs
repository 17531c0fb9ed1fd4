//! The API's defences: a bearer token (compared in constant time) on every
//! state-changing request, `Host` checked against DNS rebinding, `Origin`
//! checked against cross-site requests, and security headers on every reply.

use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::header::{self, HeaderValue};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::web;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{ApiError, ApiState};

/// Shortest token accepted.
const MIN_TOKEN_LEN: usize = 16;

/// Why the API cannot start as configured.
#[derive(Debug, thiserror::Error)]
pub enum SecurityError {
    /// The address is malformed or cannot be bound.
    #[error("cannot listen on {addr}: {message}")]
    Address {
        /// The address given.
        addr: String,
        /// Why.
        message: String,
    },
    /// A non-loopback address without a token.
    #[error(
        "refusing to serve the API on {0} without a token: set SUNDIAL_API_TOKEN (or [http] token) to a long \
         random secret, or listen on 127.0.0.1"
    )]
    PublicWithoutToken(String),
    /// A token too short to be a secret.
    #[error("the API token is too short ({0} characters); use at least {MIN_TOKEN_LEN} random characters")]
    WeakToken(usize),
    /// No randomness for a generated token.
    #[error("cannot generate an API token: {0}")]
    Random(String),
}

/// How the API is protected.
#[derive(Debug, Clone)]
pub struct ApiOptions {
    /// The bearer token state-changing requests need.
    pub token: String,
    /// Host names (or `host:port`) accepted in `Host` besides the loopback names.
    pub allowed_hosts: Vec<String>,
    /// Origins accepted besides the API's own.
    pub allowed_origins: Vec<String>,
    /// Whether reads need the token too (`/healthz`, `/metrics` and the UI's
    /// files never do). `sundial serve` sets this on non-loopback addresses.
    pub reads_need_token: bool,
}

impl ApiOptions {
    /// Loopback names only, reads open, state changes behind `token`.
    pub fn with_token(token: &str) -> Self {
        ApiOptions {
            token: token.to_string(),
            allowed_hosts: Vec::new(),
            allowed_origins: Vec::new(),
            reads_need_token: false,
        }
    }
}

/// Checks a configured token (at least 16 characters); returns it trimmed.
pub fn check_token(token: &str) -> Result<String, SecurityError> {
    let token = token.trim();
    if token.chars().count() < MIN_TOKEN_LEN {
        return Err(SecurityError::WeakToken(token.chars().count()));
    }
    Ok(token.to_string())
}

/// A new random API token: 32 random bytes, hex.
pub fn random_token() -> Result<String, SecurityError> {
    let mut bytes = [0u8; 32];
    getrandom::getrandom(&mut bytes).map_err(|e| SecurityError::Random(e.to_string()))?;
    Ok(hex::encode(bytes))
}

/// The checks, prepared.
pub(crate) struct Security {
    token_hash: [u8; 32],
    allowed_hosts: Vec<String>,
    allowed_origins: Vec<String>,
    reads_need_token: bool,
}

impl Security {
    pub(crate) fn new(o: ApiOptions) -> Self {
        Security {
            token_hash: Sha256::digest(o.token.as_bytes()).into(),
            allowed_hosts: o.allowed_hosts.iter().map(|h| h.trim().to_ascii_lowercase()).collect(),
            allowed_origins: o
                .allowed_origins
                .iter()
                .map(|h| h.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
            reads_need_token: o.reads_need_token,
        }
    }

    /// Whether `Authorization` carries the token (hashes compared in constant
    /// time, so neither the token's bytes nor its length leak).
    fn authorized(&self, req: &ServiceRequest) -> bool {
        let Some(given) = req
            .headers()
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
        else {
            return false;
        };
        let hash: [u8; 32] = Sha256::digest(given.trim().as_bytes()).into();
        hash.ct_eq(&self.token_hash).into()
    }

    /// Whether `host` (the `Host` header: `name` or `name:port`) is one this
    /// API answers to.
    fn host_allowed(&self, host: &str) -> bool {
        let host = host.to_ascii_lowercase();
        let name = match host.rsplit_once(':') {
            Some((name, port)) if !name.ends_with(':') && port.bytes().all(|b| b.is_ascii_digit()) => name,
            _ => host.as_str(),
        };
        matches!(name, "localhost" | "127.0.0.1" | "[::1]")
            || self.allowed_hosts.iter().any(|a| a == &host || a == name)
    }

    /// Whether `origin` is the API's own (`http(s)://` + `host`) or allowed.
    fn origin_allowed(&self, origin: &str, host: &str) -> bool {
        let origin = origin.to_ascii_lowercase();
        let host = host.to_ascii_lowercase();
        origin == format!("http://{host}")
            || origin == format!("https://{host}")
            || self.allowed_origins.iter().any(|a| a == &origin)
    }
}

/// Paths anyone who can reach the port may read (relative to where the API
/// is mounted).
fn public_path(path: &str) -> bool {
    path.is_empty() || path == "/" || path == "/healthz" || path == "/metrics" || path.starts_with("/ui/")
}

/// The middleware: every request passes the host, origin and token checks,
/// and every reply gets the security headers.
pub(crate) async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let Some(state) = req.app_data::<web::Data<ApiState>>().cloned() else {
        return Err(ApiError::internal("the API state is missing").into());
    };
    let sec = &state.security;
    // The raw header: forwarded-host headers are attacker-controlled.
    let host = req
        .headers()
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_string)
        .or_else(|| req.uri().authority().map(|a| a.to_string()))
        .unwrap_or_default();
    if !sec.host_allowed(&host) {
        return Err(ApiError::new(
            StatusCode::MISDIRECTED_REQUEST,
            format!("host {host:?} is not allowed; add it to [http] allowed_hosts"),
        )
        .into());
    }
    if let Some(origin) = req.headers().get(header::ORIGIN) {
        let origin = origin.to_str().unwrap_or("");
        if !sec.origin_allowed(origin, &host) {
            return Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!("cross-origin request from {origin:?} refused; add it to [http] allowed_origins"),
            )
            .into());
        }
    }
    // The path below the prefix an application mounted the API at (if any).
    let path = req.match_info().unprocessed();
    let reads = matches!(*req.method(), Method::GET | Method::HEAD);
    let needs_token = !reads || (sec.reads_need_token && !public_path(path));
    if needs_token && !sec.authorized(&req) {
        return Err(ApiError::unauthorized().into());
    }
    let api = path.starts_with("/api/");
    let mut res = next.call(req).await?;
    let headers = res.headers_mut();
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"),
    );
    if api {
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    Ok(res)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sec() -> Security {
        let mut o = ApiOptions::with_token("0123456789abcdef0123");
        o.allowed_hosts = vec!["ops.example.com".into(), "10.0.0.5:8080".into()];
        o.allowed_origins = vec!["https://dash.example.com/".into()];
        Security::new(o)
    }

    #[test]
    fn only_loopback_and_listed_hosts_are_answered() {
        let s = sec();
        for ok in ["127.0.0.1:8080", "localhost", "LOCALHOST:1", "[::1]:8080", "ops.example.com", "10.0.0.5:8080"] {
            assert!(s.host_allowed(ok), "{ok}");
        }
        for bad in ["evil.example", "127.0.0.1.evil.example:8080", "10.0.0.5:9999", "", "localhost.:80"] {
            assert!(!s.host_allowed(bad), "{bad}");
        }
    }

    #[test]
    fn only_the_own_origin_and_listed_origins_pass() {
        let s = sec();
        assert!(s.origin_allowed("http://127.0.0.1:8080", "127.0.0.1:8080"));
        assert!(s.origin_allowed("https://dash.example.com", "127.0.0.1:8080"));
        assert!(!s.origin_allowed("http://evil.example", "127.0.0.1:8080"));
        assert!(!s.origin_allowed("null", "127.0.0.1:8080"));
        assert!(!s.origin_allowed("http://127.0.0.1:9999", "127.0.0.1:8080"));
    }

    #[test]
    fn weak_tokens_are_refused_and_generated_ones_are_long() {
        assert!(matches!(check_token("short"), Err(SecurityError::WeakToken(5))));
        let t = random_token().unwrap();
        assert_eq!(t.len(), 64);
        assert_ne!(t, random_token().unwrap());
    }
}

//! The HTTP API and the operator UI (actix-web), for `sundial serve --http`
//! and for applications embedding the host ([`configure`]).
//!
//! The contract is `docs/http-api.md` (and `/api/openapi.json`). Secure by
//! default (the `guard` middleware): loopback only unless a token is configured, a bearer
//! token on every state-changing request, `Host` and `Origin` checked against
//! DNS rebinding and cross-site requests, bounded bodies and pages.

mod error;
mod handlers;
mod security;

use std::net::{SocketAddr, ToSocketAddrs};

use actix_web::dev::Server;
use actix_web::{App, HttpServer, web};

pub use error::ApiError;
pub use security::{ApiOptions, SecurityError, check_token, random_token};

use crate::host::Host;

/// Where `sundial serve` listens unless told otherwise.
pub const DEFAULT_ADDR: &str = "127.0.0.1:8080";

/// Largest JSON body accepted.
pub const MAX_JSON_BYTES: usize = 64 * 1024;

/// Largest page of executions.
pub const MAX_PAGE: u32 = 200;

/// What the handlers share.
pub(crate) struct ApiState {
    host: Host,
    security: security::Security,
}

/// Mounts the API, `/healthz`, `/metrics` and the UI on an actix-web app:
///
/// ```no_run
/// # async fn example(host: sundial::host::Host) -> std::io::Result<()> {
/// use sundial::api::{ApiOptions, configure};
/// let options = ApiOptions::with_token("a long random secret");
/// let routes = configure(host, options);
/// actix_web::HttpServer::new(move || actix_web::App::new().configure(routes.clone()))
///     .bind("127.0.0.1:8080")?
///     .run()
///     .await
/// # }
/// ```
pub fn configure(host: Host, options: ApiOptions) -> impl Fn(&mut web::ServiceConfig) + Clone + Send + 'static {
    let state = web::Data::new(ApiState { host, security: security::Security::new(options) });
    move |cfg: &mut web::ServiceConfig| handlers::routes(cfg, state.clone())
}

/// A running API server.
pub struct Serving {
    /// The server (await it, or stop it through its handle).
    pub server: Server,
    /// The address it is bound to (the real port if 0 was asked for).
    pub addr: SocketAddr,
    /// The token state-changing requests need.
    pub token: String,
    /// Whether the token was made up at start (none was configured).
    pub generated_token: bool,
}

/// Binds `addr` and serves the API and UI for `host`. Refuses a non-loopback
/// address without a configured token; on loopback without one, makes a
/// random token (reported in [`Serving::token`]).
pub fn serve(host: Host, addr: &str, token: Option<String>) -> Result<Serving, SecurityError> {
    let addrs: Vec<SocketAddr> = addr
        .to_socket_addrs()
        .map_err(|e| SecurityError::Address { addr: addr.to_string(), message: e.to_string() })?
        .collect();
    let Some(first) = addrs.first().copied() else {
        return Err(SecurityError::Address { addr: addr.to_string(), message: "resolves to no address".into() });
    };
    let loopback = addrs.iter().all(|a| a.ip().is_loopback());
    let generated_token = token.is_none();
    let token = match token {
        Some(t) => security::check_token(&t)?,
        None if loopback => security::random_token()?,
        None => return Err(SecurityError::PublicWithoutToken(addr.to_string())),
    };
    let http = &host.config.http;
    let mut options = ApiOptions::with_token(&token);
    options.allowed_hosts = http.allowed_hosts.clone();
    options.allowed_origins = http.allowed_origins.clone();
    options.reads_need_token = !loopback;
    if !loopback && !first.ip().is_unspecified() {
        options.allowed_hosts.push(first.ip().to_string());
    }
    let routes = configure(host, options);
    let server = HttpServer::new(move || App::new().configure(routes.clone()))
        .workers(1)
        .shutdown_timeout(2)
        .bind(&addrs[..])
        .map_err(|e| SecurityError::Address { addr: addr.to_string(), message: e.to_string() })?;
    let bound = server.addrs().first().copied().unwrap_or(first);
    Ok(Serving { server: server.run(), addr: bound, token, generated_token })
}

//! API errors: `{"error": "<message>"}` plus fields a client can act on,
//! with a status code. Internals (SQL, paths) are logged, never sent.

use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::{HttpResponse, ResponseError};
use serde_json::{Map, Value, json};

use crate::actors::supervisor::RunRejected;
use crate::host::HostError;
use crate::store::StoreError;

/// An error reply.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    message: String,
    extra: Map<String, Value>,
}

impl ApiError {
    /// An error with a status and a message for the client.
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError { status, message: message.into(), extra: Map::new() }
    }

    /// 400.
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::BAD_REQUEST, message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError::new(StatusCode::NOT_FOUND, message)
    }

    /// 401 (the token is missing or wrong).
    pub fn unauthorized() -> Self {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "this request needs the API token: send \"Authorization: Bearer <token>\"",
        )
    }

    /// 500, logging the details.
    pub fn internal(details: impl std::fmt::Display) -> Self {
        tracing::error!(error = %details, "API request failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error; see the host log")
    }

    /// Adds a field to the reply.
    pub fn with(mut self, key: &str, value: Value) -> Self {
        self.extra.insert(key.to_string(), value);
        self
    }

    /// The status.
    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        let mut body = Map::new();
        body.insert("error".into(), json!(self.message));
        body.extend(self.extra.clone());
        let mut res = HttpResponse::build(self.status);
        if self.status == StatusCode::UNAUTHORIZED {
            res.insert_header((header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")));
        }
        res.json(Value::Object(body))
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::UnknownJob(name) => ApiError::not_found(format!("unknown job {name:?}")),
            e => ApiError::internal(format!("{:#}", anyhow::Error::new(e))),
        }
    }
}

impl From<HostError> for ApiError {
    fn from(e: HostError) -> Self {
        match e {
            HostError::UnknownJob { .. } => ApiError::not_found(e.to_string()),
            HostError::Rejected(RunRejected::Overlap { active }) => {
                let active = (active.0 > 0).then_some(active.0);
                ApiError::new(StatusCode::CONFLICT, e.to_string()).with("active_execution_id", json!(active))
            }
            HostError::Rejected(RunRejected::NotRecorded | RunRejected::Stopping) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, e.to_string())
            }
            HostError::InvalidSchedule(_) => ApiError::bad_request(e.to_string()),
            HostError::InvalidComponent(_) => ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, e.to_string()),
            HostError::Deploy(ref d) => match d {
                crate::actors::loader::DeployError::Native(_)
                | crate::actors::loader::DeployError::FileTaken { .. }
                | crate::actors::loader::DeployError::Config(_) => ApiError::new(StatusCode::CONFLICT, e.to_string()),
                _ => ApiError::internal(e),
            },
            HostError::Rollback(ref r) => {
                use crate::host::RollbackError as R;
                let status = match r {
                    R::UnknownVersion { .. } => StatusCode::NOT_FOUND,
                    R::BadTarget(_) => StatusCode::BAD_REQUEST,
                    R::Native(_) | R::NoEarlier { .. } | R::NotKept { .. } | R::AlreadyLive { .. } => {
                        StatusCode::CONFLICT
                    }
                };
                ApiError::new(status, e.to_string())
            }
            HostError::Store(s) => s.into(),
            HostError::Mailbox(_) | HostError::Abandoned => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "the host is stopping")
            }
            e => ApiError::internal(format!("{:#}", anyhow::Error::new(e))),
        }
    }
}

use std::path::PathBuf;

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::json;

/// Errors of setting up and running a server. The underlying error, where there is one, is
/// the `source()`, not repeated in the message.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// A setting out of range, or two that do not fit together.
    #[error("serve config: {0}")]
    Config(String),
    /// A settings file that is not valid TOML or names an unknown field.
    #[error("serve config {}", path.display())]
    ConfigFile {
        path: PathBuf,
        #[source]
        source: toml::de::Error,
    },
    /// The API key file could not be read.
    #[error("cannot read the API key file {}", path.display())]
    KeyFile {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot listen on {addr}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("server")]
    Io(#[source] std::io::Error),
}

/// An error answer: `{"error": {"code", "message"}}` with its HTTP status. Codes are the
/// Rekognition exception names where one fits, so existing clients can branch on them.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "InvalidParameterException", message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE {
            response.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        response
    }
}

/// One line of an error and its causes (the one rule, in strix-core).
pub(crate) use strix_core::error_chain as chain;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_names_every_cause_once() {
        let io = std::io::Error::other("disk on fire");
        let e = ServeError::Io(io);
        assert_eq!(chain(&e), "server: disk on fire");
        let e = ServeError::Config("bad".into());
        assert_eq!(chain(&e), "serve config: bad");
    }
}

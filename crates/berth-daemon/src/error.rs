//! API errors, and the one place where domain errors become HTTP status codes.
//!
//! Clients rely on the codes: 400 bad input, 404 missing object, 409 conflict, 304 no
//! change, 500 everything else; the body is always `{"message": "..."}`.

use berth_image::{reference::ReferenceError, ImageError};
use http::StatusCode;

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        ApiError {
            status,
            message: message.into(),
        }
    }
    pub fn bad_request(m: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(StatusCode::CONFLICT, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, m)
    }
    pub fn not_implemented(m: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_IMPLEMENTED, m)
    }
}

/// Writes the whole error chain, as the CLI prints it.
pub fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        let part = c.to_string();
        if !s.contains(&part) {
            s.push_str(": ");
            s.push_str(&part);
        }
        cur = c.source();
    }
    s
}

impl From<ImageError> for ApiError {
    fn from(e: ImageError) -> Self {
        let status = match &e {
            ImageError::NotFound(_) => StatusCode::NOT_FOUND,
            ImageError::Reference(_)
            | ImageError::Invalid(_)
            | ImageError::Unpack(_)
            | ImageError::Change(_) => StatusCode::BAD_REQUEST,
            ImageError::Conflict(_) => StatusCode::CONFLICT,
            ImageError::Content(berth_image::content::ContentError::DigestMismatch { .. }) => {
                StatusCode::BAD_REQUEST
            }
            ImageError::Content(_) | ImageError::Store(_) | ImageError::Io { .. } => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            tracing::error!(error = %chain(&e), "image operation failed");
        }
        ApiError::new(status, chain(&e))
    }
}

impl From<ReferenceError> for ApiError {
    fn from(e: ReferenceError) -> Self {
        ApiError::bad_request(e.to_string())
    }
}

impl From<berth_store::StoreError> for ApiError {
    fn from(e: berth_store::StoreError) -> Self {
        tracing::error!(error = %e, "metadata database failed");
        ApiError::internal(e.to_string())
    }
}

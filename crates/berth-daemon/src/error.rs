//! The engine's errors: what went wrong, in the engine's own words (a kind and a
//! message), with no protocol in them. Each door maps the kind to its own: the Docker
//! API to an HTTP status (`http::status_of`: 400 invalid, 404 missing, 409 conflict,
//! 304 no change, 500 everything else; the body is always `{"message": "..."}`).

use berth_image::{reference::ReferenceError, ImageError};

/// What kind of failure an engine error is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// the request is malformed or names something impossible
    Invalid,
    /// an object it names does not exist
    NotFound,
    /// it conflicts with the object's state or with another object
    Conflict,
    /// there is nothing to do (a start of a running container)
    NotModified,
    /// the engine refuses it (a built-in network, a registry's denial)
    Forbidden,
    /// the registry wants credentials
    Unauthorized,
    /// the engine cannot do it yet or here (swarm, a feature not built)
    NotImplemented,
    /// a part it depends on is not there (swarm mode)
    Unavailable,
    /// the engine failed
    Internal,
}

#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct EngineError {
    pub kind: Kind,
    pub message: String,
}

impl EngineError {
    pub fn new(kind: Kind, message: impl Into<String>) -> Self {
        EngineError {
            kind,
            message: message.into(),
        }
    }
    pub fn invalid(m: impl Into<String>) -> Self {
        Self::new(Kind::Invalid, m)
    }
    pub fn not_found(m: impl Into<String>) -> Self {
        Self::new(Kind::NotFound, m)
    }
    pub fn conflict(m: impl Into<String>) -> Self {
        Self::new(Kind::Conflict, m)
    }
    pub fn not_modified(m: impl Into<String>) -> Self {
        Self::new(Kind::NotModified, m)
    }
    pub fn forbidden(m: impl Into<String>) -> Self {
        Self::new(Kind::Forbidden, m)
    }
    pub fn unauthorized(m: impl Into<String>) -> Self {
        Self::new(Kind::Unauthorized, m)
    }
    pub fn unavailable(m: impl Into<String>) -> Self {
        Self::new(Kind::Unavailable, m)
    }
    pub fn internal(m: impl Into<String>) -> Self {
        Self::new(Kind::Internal, m)
    }
    pub fn not_implemented(m: impl Into<String>) -> Self {
        Self::new(Kind::NotImplemented, m)
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

impl From<ImageError> for EngineError {
    fn from(e: ImageError) -> Self {
        let kind = match &e {
            ImageError::NotFound(_) => Kind::NotFound,
            ImageError::Reference(_)
            | ImageError::Invalid(_)
            | ImageError::Unpack(_)
            | ImageError::Change(_) => Kind::Invalid,
            ImageError::Conflict(_) => Kind::Conflict,
            ImageError::Content(berth_image::content::ContentError::DigestMismatch { .. }) => {
                Kind::Invalid
            }
            ImageError::Content(_) | ImageError::Store(_) | ImageError::Io { .. } => Kind::Internal,
        };
        if kind == Kind::Internal {
            tracing::error!(error = %chain(&e), "image operation failed");
        }
        EngineError::new(kind, chain(&e))
    }
}

impl From<ReferenceError> for EngineError {
    fn from(e: ReferenceError) -> Self {
        EngineError::invalid(e.to_string())
    }
}

impl From<berth_store::StoreError> for EngineError {
    fn from(e: berth_store::StoreError) -> Self {
        tracing::error!(error = %e, "metadata database failed");
        EngineError::internal(e.to_string())
    }
}

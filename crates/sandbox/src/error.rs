//! API errors and their `metav1.Status` bodies, worded as the real API server words them.
//!
//! Every failure of a request ends here: handlers return `ApiError`, the HTTP layer writes `status()` with
//! `code()`, and the in-process API hands the same error to simulated actors.

use serde_json::{Value, json};

/// A group and resource as the server names them in messages: `pods`, `tenantpools.sublet.dev`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GroupResource {
    pub group: String,
    pub resource: String,
}

impl GroupResource {
    pub fn new(group: &str, resource: &str) -> GroupResource {
        GroupResource {
            group: group.to_string(),
            resource: resource.to_string(),
        }
    }

    fn details(&self, name: &str) -> Value {
        let mut details = json!({ "name": name, "kind": self.resource });
        if !self.group.is_empty() {
            details["group"] = json!(self.group);
        }
        details
    }
}

impl std::fmt::Display for GroupResource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.resource)
        } else {
            write!(f, "{}.{}", self.resource, self.group)
        }
    }
}

/// A failed API request.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ApiError {
    #[error("{gr} \"{name}\" not found")]
    NotFound { gr: GroupResource, name: String },
    #[error("{gr} \"{name}\" already exists")]
    AlreadyExists { gr: GroupResource, name: String },
    #[error("Operation cannot be fulfilled on {gr} \"{name}\": {reason}")]
    Conflict {
        gr: GroupResource,
        name: String,
        reason: String,
    },
    /// A fully formed Status (422 Invalid, 403 Forbidden, 409 apply conflicts, 429 disruption budget).
    #[error("{}", .0["message"].as_str().unwrap_or("request failed"))]
    Status(Value),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Forbidden(String),
    #[error("the server does not allow this method on the requested resource")]
    MethodNotAllowed,
    #[error("the server could not find the requested resource")]
    NoRoute,
    #[error("{0}")]
    UnsupportedMediaType(String),
    #[error("{0}")]
    NotAcceptable(String),
    /// 410: a resourceVersion or continue token older than what the server keeps.
    #[error("{0}")]
    Expired(String),
    #[error("{message}")]
    TooManyRequests { message: String, retry_after: u64 },
    #[error("Internal error occurred: {0}")]
    Internal(String),
    #[error("{0}")]
    Timeout(String),
}

impl ApiError {
    pub(crate) fn not_found(gr: &GroupResource, name: &str) -> ApiError {
        ApiError::NotFound {
            gr: gr.clone(),
            name: name.to_string(),
        }
    }

    pub fn stale(gr: &GroupResource, name: &str) -> ApiError {
        ApiError::Conflict {
            gr: gr.clone(),
            name: name.to_string(),
            reason: "the object has been modified; please apply your changes to the latest version and try again"
                .to_string(),
        }
    }

    /// A 422 Invalid with one cause, for the server's own checks on built-in kinds.
    pub fn invalid(kind: &str, group: &str, name: &str, field: &str, reason: &str, detail: &str) -> ApiError {
        let qualified = if group.is_empty() {
            kind.to_string()
        } else {
            format!("{kind}.{group}")
        };
        let message = format!("{qualified} \"{name}\" is invalid: {field}: {detail}");
        let mut details = json!({
            "name": name, "kind": kind,
            "causes": [{ "reason": reason, "message": detail, "field": field }],
        });
        if !group.is_empty() {
            details["group"] = json!(group);
        }
        ApiError::Status(status_body(422, "Invalid", &message, Some(details)))
    }

    pub fn code(&self) -> u16 {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => 404,
            ApiError::AlreadyExists { .. } | ApiError::Conflict { .. } => 409,
            ApiError::Status(v) => v["code"].as_u64().and_then(|c| u16::try_from(c).ok()).unwrap_or(500),
            ApiError::BadRequest(_) => 400,
            ApiError::Forbidden(_) => 403,
            ApiError::MethodNotAllowed => 405,
            ApiError::NotAcceptable(_) => 406,
            ApiError::UnsupportedMediaType(_) => 415,
            ApiError::Expired(_) => 410,
            ApiError::TooManyRequests { .. } => 429,
            ApiError::Internal(_) => 500,
            ApiError::Timeout(_) => 504,
        }
    }

    pub fn reason(&self) -> &'static str {
        match self {
            ApiError::NotFound { .. } | ApiError::NoRoute => "NotFound",
            ApiError::AlreadyExists { .. } => "AlreadyExists",
            ApiError::Conflict { .. } => "Conflict",
            ApiError::Status(_) => "",
            ApiError::BadRequest(_) => "BadRequest",
            ApiError::Forbidden(_) => "Forbidden",
            ApiError::MethodNotAllowed => "MethodNotAllowed",
            ApiError::NotAcceptable(_) => "NotAcceptable",
            ApiError::UnsupportedMediaType(_) => "UnsupportedMediaType",
            ApiError::Expired(_) => "Expired",
            ApiError::TooManyRequests { .. } => "TooManyRequests",
            ApiError::Internal(_) => "InternalError",
            ApiError::Timeout(_) => "Timeout",
        }
    }

    /// Seconds a client should wait before retrying, for the Retry-After header.
    pub(crate) fn retry_after(&self) -> Option<u64> {
        match self {
            ApiError::TooManyRequests { retry_after, .. } => Some(*retry_after),
            ApiError::Status(v) => v["details"]["retryAfterSeconds"].as_u64(),
            _ => None,
        }
    }

    /// The `metav1.Status` body of this error.
    pub fn status(&self) -> Value {
        let details = match self {
            ApiError::NotFound { gr, name }
            | ApiError::AlreadyExists { gr, name }
            | ApiError::Conflict { gr, name, .. } => Some(gr.details(name)),
            ApiError::Status(v) => return v.clone(),
            ApiError::TooManyRequests { retry_after, .. } => Some(json!({ "retryAfterSeconds": retry_after })),
            ApiError::Internal(msg) => Some(json!({ "causes": [{ "message": msg }] })),
            _ => None,
        };
        status_body(self.code(), self.reason(), &self.to_string(), details)
    }
}

/// A `metav1.Status` of failure.
pub(crate) fn status_body(code: u16, reason: &str, message: &str, details: Option<Value>) -> Value {
    let mut body = json!({
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": message,
        "reason": reason,
        "code": code,
    });
    if let Some(details) = details {
        body["details"] = details;
    }
    body
}

//! The one error shape of every route (design §6):
//! `{"error": {"code": "...", "message": "...", "details": [...]}}`.
//!
//! Handlers return `Result<_, ApiError>`; extractors map their rejections to it, so that a
//! body too large, malformed JSON or a bad path parameter answers in the same shape as a
//! refused consent. Messages never carry a My Number or any stored personal data.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use pmh_loader::RowError;
use serde::Serialize;
use utoipa::ToSchema;

/// The stable error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Code {
    /// 403: no live consent of the person for the institution.
    ConsentRequired,
    /// 401: no token, or an unknown one.
    Unauthorized,
    /// 403: the token's role or scope does not allow this.
    Forbidden,
    /// 400: the body is not well-formed (JSON syntax, unreadable CSV).
    MalformedRequest,
    /// 422: well-formed but breaks a rule (check digits, required fields, bad rows).
    InvalidInput,
    /// 404.
    NotFound,
    /// 405.
    MethodNotAllowed,
    /// 408: the request took longer than `[limits] request_timeout`.
    Timeout,
    /// 409: an `Idempotency-Key` reused with a different body.
    IdempotencyConflict,
    /// 413: the body exceeds `[limits] max_body_bytes`.
    PayloadTooLarge,
    /// 415: an upload in a format the hub does not read.
    UnsupportedMediaType,
    /// 500: a fault on our side (details are logged, not returned).
    Internal,
    /// 503: shutting down or not ready.
    Unavailable,
}

impl Code {
    /// The code as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::ConsentRequired => "consent_required",
            Code::Unauthorized => "unauthorized",
            Code::Forbidden => "forbidden",
            Code::MalformedRequest => "malformed_request",
            Code::InvalidInput => "invalid_input",
            Code::NotFound => "not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::Timeout => "timeout",
            Code::IdempotencyConflict => "idempotency_conflict",
            Code::PayloadTooLarge => "payload_too_large",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::Internal => "internal",
            Code::Unavailable => "unavailable",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Code::ConsentRequired | Code::Forbidden => StatusCode::FORBIDDEN,
            Code::Unauthorized => StatusCode::UNAUTHORIZED,
            Code::MalformedRequest => StatusCode::BAD_REQUEST,
            Code::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            Code::NotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::Timeout => StatusCode::REQUEST_TIMEOUT,
            Code::IdempotencyConflict => StatusCode::CONFLICT,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            Code::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One item of `details`: for input errors, the row (1-based data row, 0 for the file or
/// the header; absent for a request body that is not a file), the field, the rule and a
/// message; `value` is the offending value with any My Number masked, when there is one.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
pub struct Detail {
    /// 1-based data row of an uploaded file (header not counted; 0 = the file itself).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub row: Option<usize>,
    /// The field (PMH API name, dotted for nested fields).
    pub field: String,
    /// The rule that failed, a short stable phrase.
    pub rule: String,
    /// What is wrong.
    pub message: String,
    /// The offending value, My Numbers masked (absent when there is none).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<String>,
}

impl Detail {
    /// A detail about a request field (no row).
    pub fn field(field: &str, rule: &str, message: impl Into<String>) -> Detail {
        Detail { row: None, field: field.to_owned(), rule: rule.to_owned(), message: message.into(), value: None }
    }
}

impl From<&RowError> for Detail {
    fn from(e: &RowError) -> Detail {
        Detail {
            row: Some(e.row),
            field: e.field.clone(),
            rule: e.rule.to_owned(),
            message: e.message.clone(),
            value: (!e.value.is_empty()).then(|| e.value.clone()),
        }
    }
}

/// The body of every error response.
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorBody {
    /// The error.
    pub error: ErrorObject,
}

/// `error` of [`ErrorBody`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, ToSchema)]
pub struct ErrorObject {
    /// Stable code: `consent_required`, `unauthorized`, `forbidden`, `malformed_request`,
    /// `invalid_input`, `not_found`, `method_not_allowed`, `timeout`,
    /// `idempotency_conflict`, `payload_too_large`, `unsupported_media_type`, `internal`,
    /// `unavailable`.
    pub code: String,
    /// Human-readable explanation.
    pub message: String,
    /// Itemised problems (every bad row and field of an upload); may be empty.
    pub details: Vec<Detail>,
}

/// An error answered to the client.
#[derive(Debug, Clone)]
pub struct ApiError {
    /// The code (and so the status).
    pub code: Code,
    /// The message.
    pub message: String,
    /// The details.
    pub details: Vec<Detail>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: Code, message: impl Into<String>) -> ApiError {
        ApiError { code, message: message.into(), details: Vec::new() }
    }

    /// An error with details.
    pub fn with_details(code: Code, message: impl Into<String>, details: Vec<Detail>) -> ApiError {
        ApiError { code, message: message.into(), details }
    }

    /// 422 about one request field.
    pub fn invalid(field: &str, rule: &str, message: impl Into<String>) -> ApiError {
        let message = message.into();
        ApiError::with_details(
            Code::InvalidInput,
            format!("{field}: {message}"),
            vec![Detail::field(field, rule, message)],
        )
    }

    /// 500; the cause is logged here and not returned (it may name files or keys).
    pub fn internal(cause: impl std::fmt::Display) -> ApiError {
        tracing::error!("internal error: {cause}");
        ApiError::new(Code::Internal, "internal error; the operator's log has the cause")
    }

    /// The JSON body.
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            error: ErrorObject {
                code: self.code.as_str().to_owned(),
                message: self.message.clone(),
                details: self.details.clone(),
            },
        }
    }
}

impl From<pmh_engine::Error> for ApiError {
    fn from(e: pmh_engine::Error) -> ApiError {
        match e {
            // Not a fault of this request: the log is being retried (the writer logs why).
            pmh_engine::Error::AccessLogUnavailable => ApiError::new(Code::Unavailable, e.to_string()),
            e => ApiError::internal(e),
        }
    }
}

/// The refusal without consent, rendered once: the same bytes whether or not the person
/// has records (design §5.1), and no allocation on the hot path.
pub const CONSENT_REQUIRED_BODY: &str = r#"{"error":{"code":"consent_required","message":"no live consent of this person for this institution","details":[]}}"#;

/// The 403 `consent_required` response.
pub fn consent_required() -> Response {
    json_bytes(StatusCode::FORBIDDEN, CONSENT_REQUIRED_BODY.as_bytes())
}

/// A JSON response from already rendered bytes (a `&'static` body is sent without a copy).
pub fn json_bytes(status: StatusCode, body: impl Into<axum::body::Body>) -> Response {
    let mut r = (status, body.into()).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    r
}

/// A JSON response of `value`; 500 if it cannot be serialised.
pub fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Result<Response, ApiError> {
    serde_json::to_vec(value).map(|b| json_bytes(status, b)).map_err(ApiError::internal)
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = self.code.status();
        let body = serde_json::to_vec(&self.body()).unwrap_or_else(|_| b"{}".to_vec());
        json_bytes(status, body)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn consent_required_body_is_the_error_shape() {
        let v: ErrorBody = serde_json::from_str(CONSENT_REQUIRED_BODY).unwrap();
        assert_eq!(v.error.code, "consent_required");
        assert!(v.error.details.is_empty());
        assert_eq!(Code::ConsentRequired.status(), StatusCode::FORBIDDEN);
    }
}

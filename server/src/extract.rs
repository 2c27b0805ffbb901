//! Request extraction that answers in the error shape: the body (413 above the limit), JSON
//! bodies (400 for syntax, 422 for content), path PMH-IDs and the lookup query — the last
//! two parsed straight from the request without allocating.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, RawPathParams, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use pmh_engine::{Date, InstitutionCode, PmhId};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, Code};

/// The raw request body, within `[limits] max_body_bytes`.
pub struct Body(pub Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Body, ApiError> {
        match Bytes::from_request(req, state).await {
            Ok(b) => Ok(Body(b)),
            Err(r) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::new(
                Code::PayloadTooLarge,
                "the request body exceeds the configured limit (max_body_bytes)",
            )),
            Err(r) => {
                Err(ApiError::new(Code::MalformedRequest, format!("cannot read the request body: {}", r.body_text())))
            }
        }
    }
}

/// Parses a JSON request body. Syntax errors are 400 `malformed_request`; a well-formed
/// body of the wrong shape is 422 `invalid_input`. serde's own words are passed on only
/// for missing and unknown fields: its other messages quote the offending value, which
/// could be a My Number.
pub fn json<T: DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        let at = format!("line {}, column {}", e.line(), e.column());
        match e.classify() {
            serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
                ApiError::new(Code::MalformedRequest, format!("the body is not valid JSON ({at})"))
            }
            serde_json::error::Category::Io => ApiError::new(Code::MalformedRequest, "the body cannot be read"),
            serde_json::error::Category::Data => {
                let text = e.to_string();
                let message = if text.starts_with("missing field") || text.starts_with("unknown field") {
                    text
                } else {
                    format!("a value has the wrong type or form ({at})")
                };
                ApiError::invalid("(body)", "shape", message)
            }
        }
    })
}

/// Parses a PMH-ID (32 lowercase hex characters); 422 otherwise.
pub fn pmh_id(s: &str, field: &str) -> Result<PmhId, ApiError> {
    PmhId::parse(s).map_err(|_| ApiError::invalid(field, "format", "a PMH-ID is 32 hexadecimal characters"))
}

/// Parses a 10-digit 医療機関コード with its check digit; 422 otherwise.
pub fn institution(s: &str, field: &str) -> Result<InstitutionCode, ApiError> {
    InstitutionCode::parse(s).map_err(|e| {
        ApiError::invalid(
            field,
            e.rule,
            format!("not a valid institution code (10 digits with check digit): {}", e.rule),
        )
    })
}

/// Parses a date (`YYYY-MM-DD` or `YYYYMMDD`), or today in Asia/Tokyo when absent.
pub fn date_or_today(s: Option<&str>, field: &str) -> Result<Date, ApiError> {
    match s {
        None | Some("") => Ok(Date::today_tokyo()),
        Some(s) => Date::parse(s).map_err(|_| ApiError::invalid(field, "date", "a date is YYYY-MM-DD")),
    }
}

/// The `{pmhId}` path parameter, parsed without allocating.
pub struct PathPmhId(pub PmhId);

impl<S: Send + Sync> FromRequestParts<S> for PathPmhId {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<PathPmhId, ApiError> {
        let params = RawPathParams::from_request_parts(parts, state)
            .await
            .map_err(|_| ApiError::new(Code::Internal, "route without path parameters"))?;
        let (_, v) = params.iter().next().ok_or_else(|| ApiError::new(Code::NotFound, "no PMH-ID in the path"))?;
        pmh_id(v, "pmhId").map(PathPmhId)
    }
}

/// `institution` and `date` of a lookup's query string, parsed in place.
pub struct LookupQuery {
    /// `institution` (required).
    pub institution: InstitutionCode,
    /// `date` (default today in Asia/Tokyo).
    pub date: Date,
}

impl<S: Send + Sync> FromRequestParts<S> for LookupQuery {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<LookupQuery, ApiError> {
        let (institution, date) = query_pair(parts.uri.query().unwrap_or(""), "institution", "date");
        let institution = institution.ok_or_else(|| {
            ApiError::invalid("institution", "required", "the query parameter `institution` is required")
        })?;
        Ok(LookupQuery {
            institution: self::institution(institution, "institution")?,
            date: date_or_today(date, "date")?,
        })
    }
}

/// The values of two query parameters (first occurrence each). Values are used as they
/// are: the parameters this API takes (digits, dates, `full`/`diff`) need no
/// percent-decoding, and an encoded one fails its format check.
pub fn query_pair<'q>(query: &'q str, a: &str, b: &str) -> (Option<&'q str>, Option<&'q str>) {
    let (mut va, mut vb) = (None, None);
    for kv in query.split('&') {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        if k == a && va.is_none() {
            va = Some(v);
        } else if k == b && vb.is_none() {
            vb = Some(v);
        }
    }
    (va, vb)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_pairs() {
        assert_eq!(query_pair("institution=1&date=2", "institution", "date"), (Some("1"), Some("2")));
        assert_eq!(query_pair("date=2&x=1&institution=1&date=3", "institution", "date"), (Some("1"), Some("2")));
        assert_eq!(query_pair("", "institution", "date"), (None, None));
        assert_eq!(query_pair("institution", "institution", "date"), (Some(""), None));
    }

    #[test]
    fn json_errors_never_quote_values() {
        #[derive(serde::Deserialize, Debug)]
        #[allow(dead_code)]
        struct T {
            n: u32,
        }
        let e = json::<T>(br#"{"n": "123456789018"}"#).unwrap_err();
        assert_eq!(e.code, Code::InvalidInput);
        assert!(!format!("{e:?}").contains("123456789018"));
        assert_eq!(json::<T>(b"{").unwrap_err().code, Code::MalformedRequest);
        let e = json::<T>(b"{}").unwrap_err();
        assert!(e.message.contains("missing field `n`"), "{}", e.message);
    }
}

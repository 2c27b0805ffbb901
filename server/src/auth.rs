//! Bearer-token authentication (`Authorization: Bearer <token>`) and role checks.
//!
//! A token is looked up by the SHA-256 of what the client presents, compared in constant
//! time against every configured token ([`Config::authenticate`]), so neither the answer
//! nor its timing tells how close a guess was. Unknown or missing tokens get 401
//! `unauthorized`; a known token of the wrong role gets 403 `forbidden`.
//!
//! [`Config::authenticate`]: pmh_loader::config::Config::authenticate

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use pmh_engine::ClientId;
use pmh_loader::config::{Role, Token};

use crate::error::{ApiError, Code};
use crate::state::AppState;

/// The authenticated caller of a request: its token's position, role and access-log
/// client id. Plain values, so extracting it touches no shared reference count.
#[derive(Debug, Clone, Copy)]
pub struct Caller {
    index: usize,
    role: Role,
    client: ClientId,
}

impl Caller {
    /// The caller's token entry in `st`'s configuration.
    pub fn token<'s>(&self, st: &'s AppState) -> &'s Token {
        &st.config().tokens[self.index]
    }

    /// The caller's access-log client id.
    pub fn client(&self) -> ClientId {
        self.client
    }

    /// Succeeds when the caller has `role`; 403 `forbidden` otherwise.
    pub fn require(&self, role: Role) -> Result<(), ApiError> {
        if self.role == role {
            Ok(())
        } else {
            Err(ApiError::new(
                Code::Forbidden,
                format!("this operation needs a {role} token, not a {} token", self.role),
            ))
        }
    }
}

impl FromRequestParts<AppState> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Caller, ApiError> {
        let unauthorized = || ApiError::new(Code::Unauthorized, "a valid `Authorization: Bearer <token>` is required");
        let value = parts.headers.get(AUTHORIZATION).ok_or_else(unauthorized)?;
        let value = value.to_str().map_err(|_| unauthorized())?;
        let bearer = value
            .strip_prefix("Bearer ")
            .or_else(|| value.strip_prefix("bearer "))
            .map(str::trim)
            .ok_or_else(unauthorized)?;
        let index = state.config().authenticate_index(bearer).ok_or_else(unauthorized)?;
        Ok(Caller { index, role: state.config().tokens[index].role, client: state.client(index) })
    }
}

//! How a request is refused for who sent it, in RFC 6750's terms (section
//! 3) and our error body: no token is 401 with a bare `Bearer` challenge;
//! a bad token 401 `invalid_token`; a malformed request 400
//! `invalid_request`; a good token without the scope 403
//! `insufficient_scope`; too many requests 429 with `Retry-After`.

use std::time::Duration;

use super::scope::Scope;
use super::verify::TokenError;
use crate::error::HttpError;

/// The realm every challenge names.
const REALM: &str = "order-pipeline";

#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    #[error("a bearer token is required")]
    Missing,
    #[error("{0}")]
    InvalidToken(#[from] TokenError),
    #[error("{0}")]
    InvalidRequest(&'static str),
    #[error("the token lacks the scope this needs: {}", scope_list(.0))]
    InsufficientScope(&'static [Scope]),
    #[error("too many requests for this caller; retry later")]
    SubjectLimited(Duration),
    #[error("too many failed authentications from this address; retry later")]
    PeerLimited(Duration),
    /// The keys could not be refreshed in time (an unknown key id).
    #[error("the issuer's keys are being fetched; retry shortly")]
    KeysUnavailable,
}

fn scope_list(scopes: &[Scope]) -> String {
    let names: Vec<&str> = scopes.iter().map(|scope| scope.name()).collect();
    names.join(" or ")
}

impl AuthError {
    /// The label of this outcome in `auth_refusals_total`.
    pub fn outcome(&self) -> &'static str {
        self.code()
    }
}

impl HttpError for AuthError {
    fn status_code(&self) -> u16 {
        match self {
            AuthError::Missing | AuthError::InvalidToken(_) => 401,
            AuthError::InvalidRequest(_) => 400,
            AuthError::InsufficientScope(_) => 403,
            AuthError::SubjectLimited(_) | AuthError::PeerLimited(_) => 429,
            AuthError::KeysUnavailable => 503,
        }
    }

    fn code(&self) -> &'static str {
        match self {
            AuthError::Missing => "unauthenticated",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InsufficientScope(_) => "insufficient_scope",
            AuthError::SubjectLimited(_) => "rate_limited",
            AuthError::PeerLimited(_) => "too_many_failed_authentications",
            AuthError::KeysUnavailable => "issuer_keys_unavailable",
        }
    }

    fn challenge(&self) -> Option<String> {
        let error = match self {
            AuthError::Missing => return Some(format!("Bearer realm=\"{REALM}\"")),
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::InvalidRequest(_) => "invalid_request",
            AuthError::InsufficientScope(scopes) => {
                let names: Vec<&str> = scopes.iter().map(|scope| scope.name()).collect();
                return Some(format!(
                    "Bearer realm=\"{REALM}\", error=\"insufficient_scope\", scope=\"{}\"",
                    names.join(" ")
                ));
            }
            _ => return None,
        };
        Some(format!(
            "Bearer realm=\"{REALM}\", error=\"{error}\", error_description=\"{self}\""
        ))
    }

    fn retry_after(&self) -> Option<u64> {
        match self {
            AuthError::SubjectLimited(wait) | AuthError::PeerLimited(wait) => {
                Some(wait.as_secs_f64().ceil().max(1.0) as u64)
            }
            AuthError::KeysUnavailable => Some(1),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_refusal_has_rfc_6750s_status_and_challenge() {
        let missing = AuthError::Missing.to_response();
        assert_eq!(missing.status(), 401);
        assert_eq!(
            missing.header("WWW-Authenticate"),
            Some("Bearer realm=\"order-pipeline\"")
        );
        let bad = AuthError::InvalidToken(TokenError::Expired).to_response();
        assert_eq!(bad.status(), 401);
        assert!(
            bad.header("WWW-Authenticate")
                .unwrap()
                .contains("error=\"invalid_token\"")
        );
        let twice = AuthError::InvalidRequest("two Authorization headers").to_response();
        assert_eq!(twice.status(), 400);
        let scope = AuthError::InsufficientScope(&[Scope::OrdersPlace]).to_response();
        assert_eq!(scope.status(), 403);
        assert!(
            scope
                .header("WWW-Authenticate")
                .unwrap()
                .ends_with("scope=\"orders.place\"")
        );
        let limited = AuthError::SubjectLimited(Duration::from_millis(1200)).to_response();
        assert_eq!(
            (limited.status(), limited.header("Retry-After")),
            (429, Some("2"))
        );
    }
}

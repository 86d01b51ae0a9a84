//! Bearer tokens: how they are made and kept, who is calling, and what each
//! role may do.

use axum::extract::{FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine as _;
use serde_json::Value;
use sha2::{Digest, Sha256};

use super::{ApiError, ApiState};
use crate::store::{ApiAuditWrite, Role};

/// Every token starts with this, so a leaked one is easy to recognise (and
/// to scan for in repositories).
pub const TOKEN_PREFIX: &str = "cnc_";

/// A new token: `cnc_` and 32 random bytes from the operating system,
/// base64url without padding (47 characters).
pub fn generate_token() -> Result<String, getrandom::Error> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes)?;
    Ok(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
    ))
}

/// What the store keeps of a token: its SHA-256, hex.
///
/// A plain, unsalted, fast hash is enough here, unlike for passwords:
/// the token carries 256 bits of randomness, so neither a dictionary nor
/// brute force over the hash can find it, and a fast hash keeps each
/// request's look-up cheap. The hash is also what the store indexes, so a
/// token is found without comparing secrets in application code.
pub fn hash_token(token: &str) -> String {
    let digest = Sha256::digest(token.as_bytes());
    digest.iter().map(|b| format!("{b:02x}")).collect()
}

/// Token names: 1-64 letters, digits, `.`, `_` or `-`.
pub fn valid_token_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
}

/// Who is calling: set by [`authenticate`] on every API request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub role: Role,
}

impl Caller {
    /// How operator actions by this caller are recorded in a record's
    /// history.
    pub fn actor(&self) -> String {
        format!("api:{}", self.name)
    }
}

/// The largest request body the API reads (its JSON bodies are small).
pub const MAX_BODY: usize = 1 << 20;

/// Middleware on every API route: finds the caller by bearer token (401
/// without a valid one), and writes each mutating call to the audit trail
/// with the caller's name, the request body and the status answered.
pub async fn authenticate(State(state): State<ApiState>, request: Request, next: Next) -> Response {
    let caller = match caller_of(&state, request.headers()).await {
        Ok(caller) => caller,
        Err(e) => return e.into_response(),
    };
    let mutating = !matches!(
        *request.method(),
        Method::GET | Method::HEAD | Method::OPTIONS
    );
    if !mutating {
        let mut request = request;
        request.extensions_mut().insert(caller);
        return next.run(request).await;
    }
    let method = request.method().to_string();
    let path = request.uri().path().to_owned();
    let (parts, body) = request.into_parts();
    let Ok(bytes) = axum::body::to_bytes(body, MAX_BODY).await else {
        return ApiError::new(
            axum::http::StatusCode::PAYLOAD_TOO_LARGE,
            "too_large",
            format!("request bodies are limited to {MAX_BODY} bytes"),
        )
        .into_response();
    };
    let detail = serde_json::from_slice::<Value>(&bytes).ok();
    let mut request = Request::from_parts(parts, axum::body::Body::from(bytes));
    request.extensions_mut().insert(caller.clone());
    let response = next.run(request).await;
    let call = ApiAuditWrite {
        token_name: caller.name,
        role: caller.role,
        method,
        path,
        status: response.status().as_u16(),
        detail,
    };
    if let Err(error) = state.store().audit_api_call(&call).await {
        // The call happened; failing it now would hide that. Loudly logged.
        tracing::error!(message = "Cannot write the API audit trail.", token = %call.token_name, path = %call.path, status = call.status, %error);
    }
    response
}

async fn caller_of(state: &ApiState, headers: &axum::http::HeaderMap) -> Result<Caller, ApiError> {
    let unauthorized = || {
        ApiError::new(
            axum::http::StatusCode::UNAUTHORIZED,
            "unauthorized",
            "a valid bearer token is required: Authorization: Bearer cnc_…",
        )
    };
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(unauthorized)?;
    let (scheme, token) = value.split_once(' ').ok_or_else(unauthorized)?;
    let token = token.trim();
    if !scheme.eq_ignore_ascii_case("bearer") || !token.starts_with(TOKEN_PREFIX) {
        return Err(unauthorized());
    }
    let found = state
        .store()
        .api_token_by_hash(&hash_token(token))
        .await
        .map_err(ApiError::internal)?
        .ok_or_else(unauthorized)?;
    // Kept roughly: one write a minute per token at most.
    let stale = found
        .last_used_at
        .is_none_or(|t| chrono::Utc::now() - t > chrono::Duration::minutes(1));
    if stale && let Err(error) = state.store().touch_api_token(found.id).await {
        tracing::warn!(message = "Cannot note when an API token was used.", token = %found.name, %error);
    }
    Ok(Caller {
        name: found.name,
        role: found.role,
    })
}

/// A caller with at least the role `MIN` (0 viewer, 1 operator, 2 admin);
/// use the aliases [`Viewer`], [`Operator`] and [`Admin`] in handlers.
/// Anyone else gets 403.
#[derive(Debug, Clone)]
pub struct Auth<const MIN: u8>(pub Caller);

pub type Viewer = Auth<0>;
pub type Operator = Auth<1>;
pub type Admin = Auth<2>;

const fn role_of(min: u8) -> Role {
    match min {
        0 => Role::Viewer,
        1 => Role::Operator,
        _ => Role::Admin,
    }
}

impl<const MIN: u8, S: Send + Sync> FromRequestParts<S> for Auth<MIN> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        let Some(caller) = parts.extensions.get::<Caller>() else {
            return Err(ApiError::new(
                axum::http::StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required: Authorization: Bearer cnc_…",
            ));
        };
        let needed = role_of(MIN);
        if caller.role < needed {
            return Err(ApiError::new(
                axum::http::StatusCode::FORBIDDEN,
                "forbidden",
                format!(
                    "this needs the {needed} role; the token {:?} has {}",
                    caller.name, caller.role
                ),
            ));
        }
        Ok(Auth(caller.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_long_random_and_prefixed() {
        let a = generate_token().unwrap();
        let b = generate_token().unwrap();
        assert_ne!(a, b);
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert!(
            a[TOKEN_PREFIX.len()..]
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
    }

    #[test]
    fn the_hash_is_sha256_hex() {
        // echo -n abc | sha256sum
        assert_eq!(
            hash_token("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn roles_include_the_ones_before_them() {
        assert!(Role::Admin > Role::Operator && Role::Operator > Role::Viewer);
        assert_eq!(role_of(0), Role::Viewer);
        assert_eq!(role_of(2), Role::Admin);
    }

    #[test]
    fn token_names_are_plain() {
        assert!(valid_token_name("ci-bot.prod_1"));
        assert!(!valid_token_name(""));
        assert!(!valid_token_name("a b"));
        assert!(!valid_token_name(&"x".repeat(65)));
    }
}

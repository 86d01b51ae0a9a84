//! The admin API: the operator CLI's operations as JSON over HTTP, under
//! `/api/v1/…`, with bearer tokens and roles, and its OpenAPI document at
//! `/openapi.json`.
//!
//! [`router`] builds the routes; `concord serve` merges them (and
//! [`crate::metrics::router`]) into its server. Every route is registered
//! together with its `#[utoipa::path]` description, so the document and
//! the router cannot disagree.
//!
//! - **Auth**: `Authorization: Bearer cnc_…` on every `/api` route; a
//!   missing, unknown or revoked token gets 401, a token of too small a
//!   role 403. Errors are `{"error": CODE, "message": TEXT}` and never
//!   carry internal details (those go to the log).
//! - **Roles**: viewer reads; operator also runs jobs, resolves conflicts
//!   and replays; admin also manages tokens and reads the audit trail.
//! - **Masking**: viewers see sensitive fields masked ([`mask`]).
//! - **Audit**: every mutating call is written to the audit trail with the
//!   token's name, what was asked and the status answered; record versions
//!   an API call writes name the actor `api:TOKEN_NAME`.
//! - **Running a job** (`POST /api/v1/jobs/{name}/run`) is synchronous: the
//!   answer is the run's report (200) once the run is over. The same job is
//!   not started twice at once through the API (409).

pub mod auth;
pub mod mask;
mod params;
mod routes;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use utoipa::openapi::security::{Http, HttpAuthScheme, SecurityScheme};
use utoipa::{Modify, OpenApi, ToSchema};
use utoipa_axum::router::OpenApiRouter;

use crate::settings::Settings;
use crate::store::{Role, Store};
use crate::sync::Engine;

pub use auth::{Caller, generate_token, hash_token, valid_token_name};
pub use mask::Masker;

/// `[api]`: the admin API.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiSettings {
    /// Field names whose values viewers see masked, at any depth of a
    /// record (canonical or as received), compared without case, `_` or
    /// `-`. Replaces the default list: bank accounts and IBANs (`iban`,
    /// `bank_accounts`, `bank_account`, `account`, `account_number`,
    /// `counterparty_account`), tax ids (`tax_id`, `vat`, `vat_id`,
    /// `vat_number`), and personal contact data (`email`, `phone`).
    /// IBAN-shaped text is masked for viewers everywhere regardless.
    pub sensitive_fields: Vec<String>,
}

impl Default for ApiSettings {
    fn default() -> Self {
        ApiSettings {
            sensitive_fields: [
                "iban",
                "bank_accounts",
                "bank_account",
                "account",
                "account_number",
                "counterparty_account",
                "tax_id",
                "vat",
                "vat_id",
                "vat_number",
                "email",
                "phone",
            ]
            .map(str::to_owned)
            .to_vec(),
        }
    }
}

/// What the API's handlers share. Cheap to clone.
#[derive(Clone)]
pub struct ApiState {
    inner: Arc<Inner>,
}

struct Inner {
    engine: Arc<Engine>,
    /// Configured system instances (`--take SYSTEM` in a resolution).
    systems: BTreeSet<String>,
    masker: Masker,
    /// Jobs running through the API now.
    running: Mutex<BTreeSet<String>>,
}

impl ApiState {
    /// Over an engine already built (the server's).
    pub fn new(engine: Arc<Engine>, settings: &Settings) -> ApiState {
        ApiState {
            inner: Arc::new(Inner {
                engine,
                systems: settings.systems.keys().cloned().collect(),
                masker: Masker::new(&settings.api.sensitive_fields),
                running: Mutex::new(BTreeSet::new()),
            }),
        }
    }

    /// Opens the store and builds the engine from `settings`.
    pub async fn open(settings: &Settings) -> anyhow::Result<ApiState> {
        let store = Store::open(&settings.store).await?;
        let engine = Engine::new(settings.clone(), store)?;
        Ok(ApiState::new(Arc::new(engine), settings))
    }

    pub fn store(&self) -> &Store {
        self.inner.engine.store()
    }

    pub fn engine(&self) -> &Engine {
        &self.inner.engine
    }
}

/// The API's routes and `/openapi.json`. Unknown paths under `/api` answer
/// 404 and wrong methods 405, both as JSON.
pub fn router(state: ApiState) -> axum::Router {
    let (api, doc) = documented(state.clone());
    let doc = Arc::new(doc);
    api.route(
        "/openapi.json",
        axum::routing::get(move || {
            let doc = doc.clone();
            async move { axum::Json(doc.as_ref().clone()) }
        }),
    )
    .route("/api", axum::routing::any(not_found))
    .route("/api/{*rest}", axum::routing::any(not_found))
    .method_not_allowed_fallback(method_not_allowed)
}

/// The OpenAPI document of [`router`].
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes::collect(OpenApiRouter::with_openapi(ApiDoc::openapi()))
        .split_for_parts()
        .1
}

fn documented(state: ApiState) -> (axum::Router, utoipa::openapi::OpenApi) {
    let (router, doc) =
        routes::collect(OpenApiRouter::with_openapi(ApiDoc::openapi())).split_for_parts();
    let router = router
        .route_layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::authenticate,
        ))
        .with_state(state);
    (router, doc)
}

#[derive(OpenApi)]
#[openapi(
    info(
        title = "concord admin API",
        description = "The operator CLI's operations over HTTP. Every route needs `Authorization: Bearer cnc_…` (`concord tokens create NAME --role viewer|operator|admin`). Viewers read, with sensitive fields masked; operators also run, resolve and replay; admins also manage tokens and read the audit trail."
    ),
    modifiers(&BearerAuth),
    security(("bearer" = [])),
    tags(
        (name = "status", description = "Store, queues and jobs"),
        (name = "conflicts", description = "Fields two systems disagree on"),
        (name = "replay", description = "Retrying what failed"),
        (name = "records", description = "Canonical records and their history"),
        (name = "alerts", description = "Data-quality alerts"),
        (name = "admin", description = "Tokens and the audit trail"),
    )
)]
struct ApiDoc;

struct BearerAuth;

impl Modify for BearerAuth {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(Http::new(HttpAuthScheme::Bearer)),
        );
    }
}

/// The body of every error answer.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ErrorBody {
    /// A stable code: `unauthorized`, `forbidden`, `not_found`,
    /// `bad_request`, `unsupported_media_type`, `unprocessable`,
    /// `conflict`, `too_large`, `method_not_allowed`, `internal`.
    pub error: String,
    /// What went wrong, for people.
    pub message: String,
}

/// An error answer: a status and an [`ErrorBody`].
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    body: ErrorBody,
}

impl ApiError {
    pub fn new(status: StatusCode, error: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            body: ErrorBody {
                error: error.to_owned(),
                message: message.into(),
            },
        }
    }

    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    pub fn bad_request(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn conflict(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::CONFLICT, "conflict", message)
    }

    /// A failure of ours: logged with its cause chain, answered without it.
    pub fn internal(error: impl Into<anyhow::Error>) -> ApiError {
        let error = error.into();
        tracing::error!(
            message = "Admin API request failed.",
            error = format!("{error:#}")
        );
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal",
            "the request failed on the server; the server log has the details",
        )
    }

    pub fn status(&self) -> StatusCode {
        self.status
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, axum::Json(self.body)).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such route; see /openapi.json")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this route does not take that method; see /openapi.json",
    )
}

/// A JSON request body. An empty body (or JSON `null`) reads as `{}`; a
/// non-empty one must be `application/json` (415), well-formed (400) and of
/// the right shape (422).
pub struct Body<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json_type = req
            .headers()
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .map(|v| {
                let v = v.trim().to_ascii_lowercase();
                v == "application/json" || (v.starts_with("application/") && v.ends_with("+json"))
            });
        let bytes = axum::body::Bytes::from_request(req, state)
            .await
            .map_err(|e| {
                ApiError::bad_request(format!("cannot read the body: {}", e.body_text()))
            })?;
        let text = std::str::from_utf8(&bytes).unwrap_or("x").trim();
        if text.is_empty() || text == "null" {
            return serde_json::from_str("{}").map(Body).map_err(|e| {
                ApiError::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unprocessable",
                    format!("a request body is required: {e}"),
                )
            });
        }
        if json_type != Some(true) {
            return Err(json_rejection(JsonRejection::MissingJsonContentType(
                Default::default(),
            )));
        }
        let unprocessable =
            |m: String| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "unprocessable", m);
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| ApiError::bad_request(format!("the body is not valid JSON: {e}")))?;
        // Every body is an object; serde would also read a struct from an
        // array of its fields, which the document does not allow.
        if !value.is_object() {
            return Err(unprocessable(
                "the body must be a JSON object; see /openapi.json".into(),
            ));
        }
        T::deserialize(value)
            .map(Body)
            .map_err(|e| unprocessable(e.to_string()))
    }
}

fn json_rejection(rejection: JsonRejection) -> ApiError {
    match rejection {
        JsonRejection::MissingJsonContentType(_) => ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            "request bodies are JSON: send Content-Type: application/json",
        ),
        JsonRejection::JsonSyntaxError(e) => {
            ApiError::bad_request(format!("the body is not valid JSON: {}", e.body_text()))
        }
        JsonRejection::JsonDataError(e) => ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "unprocessable",
            e.body_text(),
        ),
        other => ApiError::bad_request(format!("cannot read the body: {}", other.body_text())),
    }
}

/// Path parameters; a bad one answers 400 as JSON.
pub struct PathParams<T>(pub T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for PathParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(v)| PathParams(v))
            .map_err(|e: PathRejection| ApiError::bad_request(e.body_text()))
    }
}

/// Query parameters; a bad one answers 400 as JSON.
pub struct QueryParams<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(v)| QueryParams(v))
            .map_err(|e: QueryRejection| ApiError::bad_request(e.body_text()))
    }
}

/// A JSON answer, masked for viewers.
fn reply<T: Serialize>(
    state: &ApiState,
    caller: &Caller,
    status: StatusCode,
    body: &T,
) -> Result<Response, ApiError> {
    let mut value = serde_json::to_value(body).map_err(ApiError::internal)?;
    if caller.role == Role::Viewer {
        state.inner.masker.mask(&mut value);
    }
    Ok((status, axum::Json(value)).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_document_describes_every_route_with_bearer_auth() {
        let doc = serde_json::to_value(openapi()).unwrap();
        if std::env::var_os("CONCORD_PRINT_OPENAPI").is_some() {
            println!("{}", serde_json::to_string_pretty(&doc).unwrap());
        }
        let paths = doc["paths"].as_object().unwrap();
        assert!(paths.keys().all(|p| p.starts_with("/api/v1/")));
        let operations: usize = paths.values().map(|p| p.as_object().unwrap().len()).sum();
        assert_eq!(operations, 19);
        assert_eq!(
            doc["components"]["securitySchemes"]["bearer"]["scheme"],
            "bearer"
        );
        assert_eq!(doc["security"][0]["bearer"], serde_json::json!([]));
        let status = &doc["components"]["schemas"]["StatusDto"];
        assert!(
            status["required"]
                .as_array()
                .unwrap()
                .contains(&"open_conflicts".into())
        );
        for (path, ops) in paths {
            for (method, op) in ops.as_object().unwrap() {
                assert!(
                    op["responses"]["401"].is_object(),
                    "{method} {path} lacks 401"
                );
                assert!(
                    op["responses"]["403"].is_object(),
                    "{method} {path} lacks 403"
                );
            }
        }
    }
}

//! The admin HTTP server: health, Prometheus metrics, and the handler API
//! (list, inspect, upload a new version, roll back).
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok` (`ok; paused: NAME, ...` while stages are paused), or 503 when a stage is not running |
//! | `GET /metrics` | 200, Prometheus text format |
//! | `GET /handlers` | 200, JSON array of [`HandlerInfo`] |
//! | `GET /handlers/{name}` | 200 [`HandlerInfo`], 404 unknown |
//! | `PUT /handlers/{name}` (body: the `.wasm`) | 200 [`HandlerInfo`] of the new version, 404 unknown, 409 a canary runs, 422 rejected |
//! | `PUT /handlers/{name}?canary=PERCENT[&margin_percent=&min_messages=&promote_after_messages=&promote_after=]` | 200 [`HandlerInfo`] with its `canary`, 400 percent outside 1-99, 404, 409 a canary already runs, 422 rejected |
//! | `PUT /handlers/{name}?shadow=true` | 200 [`HandlerInfo`] with its `shadow`: the version runs on a copy of every message, compared and never produced; 404, 409 a canary or shadow already runs, 422 rejected |
//! | `GET /handlers/{name}/shadow` | 200 the running (else the last) shadow's agreements, differences and last differences; 404 |
//! | `DELETE /handlers/{name}/shadow` | 200 [`HandlerInfo`]: the shadow is discarded, 404, 409 no shadow |
//! | `POST /handlers/{name}/promote` | 200 [`HandlerInfo`]: the canary or shadow serves every key (pinned), 404, 409 neither runs |
//! | `POST /handlers/{name}/rollback` | 200 [`HandlerInfo`] (one step back, pinned; with a canary running, the canary ends and the stable version serves every key), 404 unknown, 409 no previous version |
//! | `POST /handlers/{name}/pin[?version=V]` | 200 [`HandlerInfo`] (that version, or the serving one, pinned), 404, 422 |
//! | `DELETE /handlers/{name}` | 200, 404 unknown, 409 a route uses it |
//! | `GET /handlers/{name}/logs[?after=SEQ]` | 200, the handler's recent guest lines after SEQ |
//! | `GET /topics` | 200, each stage's input partitions: watermarks, committed offset, lag; 503 |
//! | `GET /state/{stage}/{key}` | 200 `{stage, key, partition, value, expires_at}` from this host's store, 404 not here or no such key |
//! | `POST /stages/{name}/pause` | 200 `{stage, paused: true, changed}`: the stage stops fetching (what it holds is finished, nothing is lost, lag is still reported), 404 no such stage runs here |
//! | `POST /stages/{name}/resume` | 200 `{stage, paused: false, changed}`, 404 |
//! | `POST /stages/{name}/redrive[?kind=K,K&handler=H&since=TIME&dry_run=true]` | 200 `{stage, input, sent, already, dry_run, summary}`: `host dlq redrive` with the config in force; 400 bad query, 404 no such stage, 502 Kafka failed |
//! | `GET /graph` | 200, the pipeline graph for the console: topics, stages (running, paused), edges |
//! | `GET /dead-letters` | 200, the host's last 50 dead letters, newest first |
//! | `GET /`, `/console.js`, `/console.css` | the live console ([`console`]), served without the token |
//!
//! Errors are JSON objects `{"error": "..."}`. With a token configured every
//! request must carry `Authorization: Bearer <token>`, else 401; only the
//! console's static files, which hold no data, are served without it.
//!
//! The server only reads [`Metrics`]: swaps are recorded by the
//! [`HandlerControl`], which also sees swaps from other sources (a watched
//! file, a config re-read).

use super::console;
use super::dead_letter_topic::{RedriveFilter, letter_time, redrive};
pub use super::handlers::rfc3339;
use super::handlers::{HandlerControl, HandlerInfo, SwapError, TopicInfo};
use super::metrics::Metrics;
use super::stages::{StagePauses, StateViews};
use crate::handlers::canary::CanaryRules;
use crate::handlers::sandbox::RecentLine;
use crate::handlers::shadow::ShadowReport;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Query, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use bytes::Bytes;
use std::future::Future;
use std::sync::Arc;

/// The largest component `PUT /handlers/{name}` accepts, in bytes.
pub const MAX_UPLOAD_BYTES: usize = 64 << 20;

/// The content type of `GET /metrics`.
pub const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4";

/// Serves the admin API on `listener` until `shutdown` completes, then
/// finishes the requests in progress and returns.
///
/// `token`: when set (and not empty), every request needs
/// `Authorization: Bearer <token>`.
///
/// # Errors
///
/// When the listener's address cannot be read or accepting fails for good.
pub async fn serve(
    listener: tokio::net::TcpListener,
    token: Option<String>,
    control: Arc<dyn HandlerControl>,
    metrics: Arc<Metrics>,
    states: Arc<StateViews>,
    pauses: Arc<StagePauses>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let address = listener.local_addr()?;
    let token = token.filter(|token| !token.is_empty());
    tracing::info!(%address, token = token.is_some(), "admin server listening");
    let state = AppState {
        control,
        metrics,
        states,
        pauses,
    };
    axum::serve(listener, router(token, state))
        .with_graceful_shutdown(shutdown)
        .await?;
    tracing::info!(%address, "admin server stopped");
    Ok(())
}

#[derive(Clone)]
struct AppState {
    control: Arc<dyn HandlerControl>,
    metrics: Arc<Metrics>,
    states: Arc<StateViews>,
    pauses: Arc<StagePauses>,
}

fn router(token: Option<String>, state: AppState) -> Router {
    let token: Option<Arc<[u8]>> = token.map(|token| Arc::from(token.into_bytes()));
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/handlers", get(list_handlers))
        .route(
            "/handlers/{name}",
            get(show_handler).put(upload_handler).delete(delete_handler),
        )
        .route("/handlers/{name}/rollback", post(rollback_handler))
        .route("/handlers/{name}/promote", post(promote_handler))
        .route(
            "/handlers/{name}/shadow",
            get(shadow_report).delete(discard_shadow),
        )
        .route("/handlers/{name}/pin", post(pin_handler))
        .route("/handlers/{name}/logs", get(handler_logs))
        .route("/topics", get(list_topics))
        .route("/state/{stage}/{key}", get(state_entry))
        .route("/stages/{name}/pause", post(pause_stage))
        .route("/stages/{name}/resume", post(resume_stage))
        .route("/stages/{name}/redrive", post(redrive_stage))
        .route("/graph", get(pipeline_graph))
        .route("/dead-letters", get(recent_dead_letters))
        .merge(console::pages())
        .method_not_allowed_fallback(method_not_allowed)
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(MAX_UPLOAD_BYTES))
        .layer(middleware::from_fn_with_state(token, require_token))
        .with_state(state)
}

/// An error answer: `{"error": message}` with a status.
struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<SwapError> for ApiError {
    fn from(err: SwapError) -> Self {
        let status = match err {
            SwapError::UnknownHandler(_) | SwapError::NotFound(_) => StatusCode::NOT_FOUND,
            SwapError::Rejected(_) => StatusCode::UNPROCESSABLE_ENTITY,
            SwapError::NoPrevious(_) | SwapError::InUse(..) | SwapError::Conflict(_) => {
                StatusCode::CONFLICT
            }
            SwapError::Invalid(_) => StatusCode::BAD_REQUEST,
        };
        ApiError(status, err.to_string())
    }
}

/// The `{name}` of a handler route; a malformed one is a JSON 400.
struct HandlerName(String);

impl<S: Send + Sync> FromRequestParts<S> for HandlerName {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        Path::<String>::from_request_parts(parts, state)
            .await
            .map(|Path(name)| HandlerName(name))
            .map_err(|rejection: PathRejection| ApiError(rejection.status(), rejection.body_text()))
    }
}

async fn require_token(
    State(token): State<Option<Arc<[u8]>>>,
    request: Request,
    next: Next,
) -> Response {
    let Some(expected) = token else {
        return next.run(request).await;
    };
    // The console's page and files carry no data; it sends the token itself.
    if console::is_public(request.method(), request.uri().path()) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|value| bearer_token(value.as_bytes()));
    if presented.is_some_and(|presented| constant_time_eq(presented, &expected)) {
        return next.run(request).await;
    }
    let mut response = ApiError(
        StatusCode::UNAUTHORIZED,
        "missing or wrong bearer token".into(),
    )
    .into_response();
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"stagehost\""),
    );
    response
}

/// The token of an `Authorization: Bearer <token>` value.
fn bearer_token(value: &[u8]) -> Option<&[u8]> {
    const SCHEME: &[u8] = b"bearer ";
    if value.len() < SCHEME.len() || !value[..SCHEME.len()].eq_ignore_ascii_case(SCHEME) {
        return None;
    }
    Some(value[SCHEME.len()..].trim_ascii())
}

/// Compares in time that depends on the lengths only, not on where the
/// contents first differ.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    let difference = a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y));
    std::hint::black_box(difference) == 0
}

async fn healthz(State(state): State<AppState>) -> Response {
    if state.control.healthy() {
        let paused = state.pauses.paused();
        if paused.is_empty() {
            "ok".into_response()
        } else {
            format!("ok; paused: {}", paused.join(", ")).into_response()
        }
    } else {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "not all stages are running".into(),
        )
        .into_response()
    }
}

async fn pause_stage(state: State<AppState>, name: Path<String>) -> Response {
    set_paused(state, name, true)
}

async fn resume_stage(state: State<AppState>, name: Path<String>) -> Response {
    set_paused(state, name, false)
}

fn set_paused(State(state): State<AppState>, Path(name): Path<String>, paused: bool) -> Response {
    match state.pauses.set(&name, paused) {
        Some(changed) => {
            tracing::info!(stage = %name, paused, changed, "stage pause set through the admin API");
            Json(serde_json::json!({ "stage": name, "paused": paused, "changed": changed }))
                .into_response()
        }
        None => ApiError(
            StatusCode::NOT_FOUND,
            format!("no stage `{name}` runs in this host"),
        )
        .into_response(),
    }
}

/// `?kind=K[,K...]&handler=H&since=TIME&dry_run=true` of
/// `POST /stages/{name}/redrive`.
#[derive(serde::Deserialize)]
struct RedriveQuery {
    kind: Option<String>,
    handler: Option<String>,
    since: Option<String>,
    #[serde(default)]
    dry_run: bool,
}

/// `POST /stages/{name}/redrive`: what `host dlq redrive` does, with the
/// config in force, on the blocking pool (it reads the dead-letter topic to
/// its end and sends the letters back in transactions).
async fn redrive_stage(
    State(state): State<AppState>,
    Path(name): Path<String>,
    query: Result<Query<RedriveQuery>, QueryRejection>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let Some(config) = state.control.config_in_force() else {
        return Err(ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            "the host has no config in force yet".into(),
        ));
    };
    if !config
        .pipeline
        .stages
        .iter()
        .any(|stage| stage.name == name)
    {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no stage `{name}` in {}", config.path.display()),
        ));
    }
    let since = query
        .since
        .as_deref()
        .map(letter_time)
        .transpose()
        .map_err(|reason| ApiError(StatusCode::BAD_REQUEST, format!("since: {reason}")))?;
    let filter = RedriveFilter {
        kinds: query
            .kind
            .iter()
            .flat_map(|kinds| kinds.split(','))
            .filter(|kind| !kind.is_empty())
            .map(str::to_string)
            .collect(),
        handler: query.handler,
        since,
    };
    let (stage, dry_run) = (name.clone(), query.dry_run);
    let done = blocking(move || redrive(&config, &stage, &filter, dry_run))
        .await?
        .map_err(|err| {
            tracing::warn!(stage = %name, cause = %format!("{err:#}"), "redrive failed");
            ApiError(StatusCode::BAD_GATEWAY, format!("{err:#}"))
        })?;
    tracing::info!(stage = %name, sent = done.sent, already = done.already, dry_run, "redrive through the admin API");
    Ok(Json(serde_json::json!({
        "stage": done.stage,
        "input": done.input,
        "sent": done.sent,
        "already": done.already,
        "dry_run": done.dry_run,
        "summary": done.to_string(),
    })))
}

async fn metrics_text(State(state): State<AppState>) -> Response {
    let mut text = state.metrics.encode();
    text.push_str(&super::trial_metrics::encode(&state.control.trials()));
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

async fn list_handlers(State(state): State<AppState>) -> Json<Vec<HandlerInfo>> {
    Json(state.control.handlers())
}

async fn show_handler(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
) -> Result<Json<HandlerInfo>, ApiError> {
    state
        .control
        .handlers()
        .into_iter()
        .find(|info| info.name == name)
        .map(Json)
        .ok_or_else(|| SwapError::UnknownHandler(name).into())
}

/// `?canary=PERCENT` of `PUT /handlers/{name}`, with the canary's rules
/// (each defaults to [`CanaryRules::default`]'s).
#[derive(serde::Deserialize)]
struct UploadQuery {
    canary: Option<i64>,
    #[serde(default)]
    shadow: bool,
    margin_percent: Option<f64>,
    min_messages: Option<u64>,
    promote_after_messages: Option<u64>,
    promote_after: Option<String>,
}

impl UploadQuery {
    fn rules(&self) -> Result<CanaryRules, ApiError> {
        let defaults = CanaryRules::default();
        let promote_after = match &self.promote_after {
            None => defaults.promote_after,
            Some(text) => Some(humantime::parse_duration(text).map_err(|err| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("promote_after `{text}` is not a duration such as 10m: {err}"),
                )
            })?),
        };
        Ok(CanaryRules {
            margin_percent: self.margin_percent.unwrap_or(defaults.margin_percent),
            min_messages: self.min_messages.unwrap_or(defaults.min_messages),
            promote_after_messages: self
                .promote_after_messages
                .unwrap_or(defaults.promote_after_messages),
            promote_after,
        })
    }
}

/// `PUT /handlers/{name}`: the body becomes the serving version, or with
/// `?canary=PERCENT` a canary on that share of the keys.
async fn upload_handler(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
    query: Result<Query<UploadQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<HandlerInfo>, ApiError> {
    let Query(query) =
        query.map_err(|rejection| ApiError(StatusCode::BAD_REQUEST, rejection.body_text()))?;
    let bytes = body.map_err(|rejection| ApiError(rejection.status(), rejection.body_text()))?;
    let size = bytes.len();
    let control = state.control.clone();
    let handler = name.clone();
    if query.shadow {
        if query.canary.is_some() {
            return Err(ApiError(
                StatusCode::BAD_REQUEST,
                "a new version is a canary or a shadow, not both".into(),
            ));
        }
        tracing::info!(handler = %name, size, "shadow upload received");
        let outcome = blocking(move || control.shadow(&handler, Vec::from(bytes))).await?;
        return answer(&name, "shadow", outcome);
    }
    match query.canary {
        None => {
            tracing::info!(handler = %name, size, "handler upload received");
            let outcome = blocking(move || control.upload(&handler, Vec::from(bytes))).await?;
            answer(&name, "upload", outcome)
        }
        Some(percent) => {
            let rules = query.rules()?;
            tracing::info!(handler = %name, size, percent, "canary upload received");
            let outcome =
                blocking(move || control.canary(&handler, Vec::from(bytes), percent, rules))
                    .await?;
            answer(&name, "canary", outcome)
        }
    }
}

async fn shadow_report(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
) -> Result<Json<ShadowReport>, ApiError> {
    let control = state.control.clone();
    blocking(move || control.shadow_report(&name))
        .await?
        .map(Json)
        .map_err(ApiError::from)
}

async fn discard_shadow(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
) -> Result<Json<HandlerInfo>, ApiError> {
    let control = state.control.clone();
    let handler = name.clone();
    let outcome = blocking(move || control.discard_shadow(&handler)).await?;
    answer(&name, "discard shadow", outcome)
}

async fn promote_handler(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
) -> Result<Json<HandlerInfo>, ApiError> {
    let control = state.control.clone();
    let handler = name.clone();
    let outcome = blocking(move || control.promote(&handler)).await?;
    answer(&name, "promote", outcome)
}

/// `?version=V` of `POST /handlers/{name}/pin`.
#[derive(serde::Deserialize)]
struct PinQuery {
    version: Option<String>,
}

async fn pin_handler(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
    Query(query): Query<PinQuery>,
) -> Result<Json<HandlerInfo>, ApiError> {
    let control = state.control.clone();
    let handler = name.clone();
    let outcome = blocking(move || control.pin(&handler, query.version.as_deref())).await?;
    answer(&name, "pin", outcome)
}

async fn delete_handler(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
) -> Result<Json<serde_json::Value>, ApiError> {
    let control = state.control.clone();
    let handler = name.clone();
    blocking(move || control.delete(&handler))
        .await?
        .map(|()| Json(serde_json::json!({ "removed": name })))
        .map_err(|err| {
            tracing::info!(handler = %name, action = "delete", cause = %err, "admin request refused");
            err.into()
        })
}

/// `?after=SEQ` of `GET /handlers/{name}/logs`.
#[derive(serde::Deserialize)]
struct LogsQuery {
    #[serde(default)]
    after: u64,
}

async fn handler_logs(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
    Query(query): Query<LogsQuery>,
) -> Result<Json<Vec<RecentLine>>, ApiError> {
    state
        .control
        .logs(&name, query.after)
        .map(Json)
        .map_err(ApiError::from)
}

async fn list_topics(State(state): State<AppState>) -> Result<Json<Vec<TopicInfo>>, ApiError> {
    let control = state.control.clone();
    blocking(move || control.topics())
        .await?
        .map(Json)
        .map_err(|reason| ApiError(StatusCode::SERVICE_UNAVAILABLE, reason))
}

/// `GET /state/{stage}/{key}`: the key's entry in the partitions this host
/// holds (the key as UTF-8 text; the value as text, or base64 when not UTF-8).
async fn state_entry(
    State(state): State<AppState>,
    Path((stage, key)): Path<(String, String)>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let Some(stage_state) = state.states.get(&stage) else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("stage `{stage}` keeps no state in this host"),
        ));
    };
    let lookup = key.clone();
    let found = blocking(move || stage_state.lookup(lookup.as_bytes())).await?;
    let Some((partition, value, expires)) = found.into_iter().next() else {
        return Err(ApiError(
            StatusCode::NOT_FOUND,
            format!("no state under `{key}` in the partitions of `{stage}` this host holds"),
        ));
    };
    let value = crate::kafka::headers::bytes_json(&value);
    Ok(Json(serde_json::json!({
        "stage": stage,
        "key": key,
        "partition": partition,
        "value": value,
        "expires_at": expires,
    })))
}

async fn rollback_handler(
    State(state): State<AppState>,
    HandlerName(name): HandlerName,
) -> Result<Json<HandlerInfo>, ApiError> {
    let control = state.control.clone();
    let handler = name.clone();
    let outcome = blocking(move || control.rollback(&handler)).await?;
    answer(&name, "rollback", outcome)
}

/// Runs a handler operation on the blocking pool.
async fn blocking<T: Send + 'static>(
    operation: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(operation).await.map_err(|err| {
        tracing::error!(cause = %err, "handler operation panicked");
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            "the handler operation failed unexpectedly".into(),
        )
    })
}

/// Logs a refused upload or rollback; the control logs the swaps it makes.
fn answer(
    name: &str,
    action: &'static str,
    outcome: Result<HandlerInfo, SwapError>,
) -> Result<Json<HandlerInfo>, ApiError> {
    outcome.map(Json).map_err(|err| {
        tracing::info!(handler = %name, action, cause = %err, "admin request refused");
        err.into()
    })
}

/// `GET /graph`: the pipeline for the console (see [`console::graph`]).
async fn pipeline_graph(State(state): State<AppState>) -> Response {
    match console::graph(state.control.as_ref(), &state.pauses) {
        Some(graph) => Json(graph).into_response(),
        None => ApiError(
            StatusCode::NOT_FOUND,
            "this host has no config to show".into(),
        )
        .into_response(),
    }
}

/// `GET /dead-letters`: the host's last dead letters, newest first.
async fn recent_dead_letters(
    State(state): State<AppState>,
) -> Json<Vec<crate::pipeline::recent::RecentDeadLetter>> {
    Json(state.metrics.recent_dead_letters())
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such route".into())
}

async fn method_not_allowed() -> ApiError {
    ApiError(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this route".into(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn rfc3339_is_utc_to_the_second() {
        let t = UNIX_EPOCH + Duration::from_millis(1_714_564_800_750);
        assert_eq!(rfc3339(t), "2024-05-01T12:00:00Z");
        assert_eq!(rfc3339(UNIX_EPOCH), "1970-01-01T00:00:00Z");
    }

    #[test]
    fn bearer_tokens_are_parsed_and_compared() {
        assert_eq!(bearer_token(b"Bearer s3cret"), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"bearer  s3cret "), Some(&b"s3cret"[..]));
        assert_eq!(bearer_token(b"Basic czNjcmV0"), None);
        assert_eq!(bearer_token(b"Bearer"), None);
        assert!(constant_time_eq(b"s3cret", b"s3cret"));
        assert!(!constant_time_eq(b"s3cret", b"s3creT"));
        assert!(!constant_time_eq(b"s3cret", b"s3cre"));
    }
}

#[cfg(test)]
mod console_tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct NoHandlers;

    impl HandlerControl for NoHandlers {
        fn handlers(&self) -> Vec<HandlerInfo> {
            Vec::new()
        }
        fn upload(&self, handler: &str, _: Vec<u8>) -> Result<HandlerInfo, SwapError> {
            Err(SwapError::UnknownHandler(handler.into()))
        }
        fn rollback(&self, handler: &str) -> Result<HandlerInfo, SwapError> {
            Err(SwapError::UnknownHandler(handler.into()))
        }
        fn healthy(&self) -> bool {
            true
        }
    }

    /// The status of `method path` to a server with token `s3cret`.
    async fn status(address: std::net::SocketAddr, method: &str, path: &str, auth: &str) -> u16 {
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\nConnection: close\r\n\r\n"
        );
        stream.write_all(head.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        String::from_utf8_lossy(&answer[9..12]).parse().unwrap()
    }

    #[tokio::test]
    async fn only_the_console_files_are_served_without_the_token() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let address = listener.local_addr().unwrap();
        let state = AppState {
            control: Arc::new(NoHandlers),
            metrics: Metrics::new(),
            states: Default::default(),
            pauses: Default::default(),
        };
        let server = tokio::spawn(async move {
            axum::serve(listener, router(Some("s3cret".into()), state)).await
        });
        let good = "Authorization: Bearer s3cret\r\n";
        let wrong = "Authorization: Bearer s3creT\r\n";
        for path in ["/", "/console.js", "/console.css"] {
            assert_eq!(status(address, "GET", path, "").await, 200, "{path}");
            assert_eq!(status(address, "GET", path, wrong).await, 200, "{path}");
            assert_eq!(status(address, "POST", path, "").await, 401, "{path}");
        }
        for (method, path) in [
            ("GET", "/graph"),
            ("GET", "/dead-letters"),
            ("GET", "/metrics"),
            ("GET", "/handlers"),
            ("GET", "/healthz"),
            ("GET", "/topics"),
            ("POST", "/handlers/add/rollback"),
            ("POST", "/stages/calculator/pause"),
            ("GET", "/console.js/"),
            ("GET", "/index.html"),
        ] {
            let what = format!("{method} {path}");
            assert_eq!(status(address, method, path, "").await, 401, "{what}");
            assert_eq!(status(address, method, path, wrong).await, 401, "{what}");
            assert_ne!(status(address, method, path, good).await, 401, "{what}");
        }
        assert_eq!(status(address, "GET", "/dead-letters", good).await, 200);
        server.abort();
    }
}

//! The HTTP API (axum): routes, JSON errors, request metrics, the bounds on requests.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::extract::{
    DefaultBodyLimit, Extension, MatchedPath, Path, Query, RawQuery, Request, State,
};
use axum::http::{Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use pinnersage_catalog::catalog::Catalog;
use pinnersage_catalog::filter::Filter;
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;
use serde_json::{Value, json};

use crate::auth::{AuthConfig, RouteClass};
use crate::clock::unix_now;
use crate::front::DEFAULT_HEADER_TIMEOUT;
use crate::ingest::{Ingest, IngestError, MAX_BODY_BYTES};
use crate::metrics::{Metrics, write_histogram, write_metric};
use pinnersage_engine::engine::{
    Engine, EngineError, Recommended, Request as RecoRequest, SampledMedoid,
};
use pinnersage_pipeline::batch::BatchRequest;

/// The OpenAPI description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The recommendation engine.
    pub engine: Arc<Engine>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// Event ingestion and batches (when the server owns the event store).
    pub ingest: Option<Arc<Ingest>>,
    /// Counters of the NATS consumer, when one runs.
    pub nats: Option<Arc<crate::nats::NatsCounters>>,
    /// Fleet mode: posted events go to the stream through this publisher.
    pub publisher: Option<crate::fleet::Publisher>,
    /// Fleet mode: the partitions and the ones this replica holds.
    pub fleet: Option<crate::fleet::FleetConfig>,
    /// What the replica waits for before it takes traffic (`/readyz`).
    pub readiness: Arc<crate::fleet::Readiness>,
    /// Counters of the shipped-profiles watcher, when one runs.
    pub shipped: Option<Arc<crate::fleet::ShippedCounters>>,
    /// Who may do what.
    pub auth: Arc<AuthConfig>,
    /// Bounds on concurrent requests and their time.
    pub limits: Arc<Limits>,
    /// The NATS consumer task, when one runs (the server is unhealthy once it has stopped).
    pub nats_task: Option<Arc<tokio::task::JoinHandle<()>>>,
    /// What this server recorded in its data directory: `/healthz` proves knowing its secret
    /// to the commands that hand it work ([`crate::handoff`]).
    pub identity: Option<Arc<crate::handoff::ServerRecord>>,
}

/// Bounds that keep an overloaded server answering: at most `in_flight` requests at once (the
/// rest get 503 with `Retry-After`), each finished within `timeout` (admin batches excepted).
#[derive(Debug)]
pub struct Limits {
    in_flight: Arc<tokio::sync::Semaphore>,
    max_in_flight: usize,
    timeout: Duration,
    header_timeout: Duration,
}

impl Limits {
    /// At most `max_in_flight` concurrent requests (at least 1), each within `timeout`; a
    /// connection's request head within [`DEFAULT_HEADER_TIMEOUT`].
    pub fn new(max_in_flight: usize, timeout: Duration) -> Self {
        let max_in_flight = max_in_flight.max(1);
        Self {
            in_flight: Arc::new(tokio::sync::Semaphore::new(max_in_flight)),
            max_in_flight,
            timeout,
            header_timeout: DEFAULT_HEADER_TIMEOUT,
        }
    }

    /// The same limits with another time for a connection to send a request head, or to stay
    /// idle between requests (then it is closed).
    pub fn with_header_timeout(mut self, header_timeout: Duration) -> Self {
        self.header_timeout = header_timeout;
        self
    }

    /// The time a connection has to send a request head, or may stay idle between requests.
    pub fn header_timeout(&self) -> Duration {
        self.header_timeout
    }
}

impl Default for Limits {
    fn default() -> Self {
        Self::new(DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT)
    }
}

/// Concurrent requests served at most by default.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 512;

/// Time a request may take by default (admin batches excepted).
pub const DEFAULT_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

/// A JSON error: `{"error":{"code":..,"message":..}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
        }
    }

    /// Adds `Retry-After: seconds` (overload: the client should come back).
    fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        response
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        match e {
            EngineError::UnknownItem(_) => {
                Self::new(StatusCode::NOT_FOUND, "unknown_item", e.to_string())
            }
            EngineError::BadRequest(_) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string())
            }
            EngineError::Internal(_) => {
                Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            }
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text())
    }
}

/// 413: a body over [`MAX_BODY_BYTES`].
fn body_too_large() -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "body_too_large",
        format!("request body over the limit of {MAX_BODY_BYTES} bytes"),
    )
}

impl From<BytesRejection> for ApiError {
    fn from(e: BytesRejection) -> Self {
        match e.status() {
            StatusCode::PAYLOAD_TOO_LARGE => body_too_large(),
            status => Self::new(status, "bad_body", e.body_text()),
        }
    }
}

impl From<IngestError> for ApiError {
    fn from(e: IngestError) -> Self {
        match e {
            IngestError::BadBody(_) => {
                Self::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
            }
            IngestError::TooMany(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                e.to_string(),
            ),
            IngestError::Store(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_failed",
                e.to_string(),
            ),
            IngestError::Overloaded(_) => {
                Self::new(StatusCode::SERVICE_UNAVAILABLE, "overloaded", e.to_string())
                    .retry_after(1)
            }
            IngestError::Unavailable(_) => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "stream_unavailable",
                e.to_string(),
            )
            .retry_after(1),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text())
    }
}

/// The router with every route, metrics middleware and JSON fallbacks.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/users/{user}/recommendations", get(recommendations))
        .route("/v1/users/{user}/profile", get(profile))
        .route("/v1/users/{user}/map", get(user_map))
        .route("/v1/users", get(users))
        .route("/", get(page))
        .route("/v1/items/{item}/similar", get(similar))
        .route("/v1/events", post(events))
        .route("/v1/admin/batch", post(admin_batch))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        // Outermost first: metrics, the access policy (headers only), then the body and the
        // in-flight and time bounds.
        .layer(middleware::from_fn_with_state(state.limits.clone(), limit))
        .layer(middleware::from_fn_with_state(state.clone(), guard))
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(state)
}

/// The access class of a request, from its matched route and method.
fn route_class(req: &Request) -> RouteClass {
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    match (req.method(), path) {
        (_, Some("/" | "/healthz" | "/readyz" | "/metrics" | "/openapi.json")) => RouteClass::Open,
        (&Method::POST, Some("/v1/events")) => RouteClass::Write,
        (&Method::POST, Some(p)) if p.starts_with("/v1/admin/") => RouteClass::Admin,
        _ => RouteClass::Read,
    }
}

/// A request's place among the in-flight requests, shared with the blocking work it starts: the
/// place is given back when the request and its work have both finished, so work that outlives
/// its timed-out request still counts against `--max-in-flight`.
#[derive(Clone)]
struct InFlight(#[allow(dead_code)] Arc<tokio::sync::OwnedSemaphorePermit>);

/// Runs `work` on the blocking thread pool, holding the request's in-flight place until it ends:
/// CPU-heavy work (filtered and exact searches, profile reads) never occupies an async worker,
/// so other requests keep being answered, and the request's timeout still applies to it.
async fn blocking<T: Send + 'static>(
    place: Option<Extension<InFlight>>,
    work: impl FnOnce() -> T + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(move || {
        let _held = place;
        work()
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))
}

/// Reads the request's body (refused at once when its declared length is over the limit, 408
/// when it does not arrive within the request timeout), then bounds concurrency (503 with
/// `Retry-After` beyond it) and time (503 after the timeout; the admin batch, which can take
/// minutes, is exempt). A slow upload holds no in-flight place: it waits before taking one.
async fn limit(State(limits): State<Arc<Limits>>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        // Before hyper answers `Expect: 100-continue`: the client sends nothing of it.
        return body_too_large().into_response();
    }
    // Most requests (GETs) have no body: nothing to read.
    let mut req = if axum::body::HttpBody::size_hint(req.body()).exact() == Some(0) {
        req
    } else {
        match read_body(req, &limits).await {
            Ok(req) => req,
            Err(refused) => return refused,
        }
    };
    let Ok(permit) = limits.in_flight.clone().try_acquire_owned() else {
        return ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "overloaded",
            format!(
                "{} requests in flight, the most this server takes: retry shortly",
                limits.max_in_flight
            ),
        )
        .retry_after(1)
        .into_response();
    };
    // Held here until the response, and by blocking work the handler starts until it ends.
    let place = Arc::new(permit);
    req.extensions_mut().insert(InFlight(place.clone()));
    let response = if route_class(&req) == RouteClass::Admin {
        next.run(req).await
    } else {
        timed(&limits, next.run(req)).await
    };
    drop(place);
    response
}

/// `req` with its body read whole (within the request timeout, at most [`MAX_BODY_BYTES`]), or
/// the answer refusing it (408, 413, 400).
async fn read_body(req: Request, limits: &Limits) -> Result<Request, Response> {
    let (parts, body) = req.into_parts();
    let body = match tokio::time::timeout(
        limits.timeout,
        axum::body::to_bytes(body, MAX_BODY_BYTES),
    )
    .await
    {
        Ok(Ok(bytes)) => bytes,
        Ok(Err(e)) => {
            let e = e.into_inner();
            return Err(if e.is::<http_body_util::LengthLimitError>() {
                body_too_large()
            } else {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
            }
            .into_response());
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                format!(
                    "the request body did not arrive within {:.0} s",
                    limits.timeout.as_secs_f64()
                ),
            )
            .into_response());
        }
    };
    Ok(Request::from_parts(parts, axum::body::Body::from(body)))
}

/// `respond`'s response, or a 503 once `limits.timeout` has passed.
async fn timed(limits: &Limits, respond: impl Future<Output = Response>) -> Response {
    match tokio::time::timeout(limits.timeout, respond).await {
        Ok(response) => response,
        Err(_) => ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "timeout",
            format!(
                "the request took longer than {:.0} s; if it posted events, retry it with the same event ids",
                limits.timeout.as_secs_f64()
            ),
        )
        .retry_after(1)
        .into_response(),
    }
}

/// Enforces the access policy before any handler runs: the `Host` name, JSON bodies on write
/// and admin routes, and the bearer token's scope.
async fn guard(State(state): State<AppState>, req: Request, next: Next) -> Response {
    match refusal(&state.auth, &req) {
        Some(refused) => refused.into_response(),
        None => next.run(req).await,
    }
}

/// Why `req` must not be served under `auth`, if it must not.
fn refusal(auth: &AuthConfig, req: &Request) -> Option<Response> {
    let class = route_class(req);
    let path = req.extensions().get::<MatchedPath>().map(|p| p.as_str());
    // Probes name whatever host they were configured with (kubelet: the pod's IP) or none
    // (HAProxy's HTTP/1.0 `option httpchk`): they answer without the Host check.
    let probe = matches!(path, Some("/healthz" | "/readyz" | "/metrics"));
    let header = |name: header::HeaderName| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if !probe && !auth.host_allowed(header(header::HOST).as_deref()) {
        return Some(
            ApiError::new(
                StatusCode::MISDIRECTED_REQUEST,
                "host_not_allowed",
                "the Host header names a host this server does not serve (see --allowed-host)",
            )
            .into_response(),
        );
    }
    if matches!(class, RouteClass::Write | RouteClass::Admin) {
        let json = header(header::CONTENT_TYPE).is_some_and(|t| {
            t.split(';')
                .next()
                .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"))
        });
        // An admin call's parameters are optional: without a body it needs no content type.
        // (A browser's cross-site request always carries `Origin`: it still needs JSON.)
        let bodiless = class == RouteClass::Admin
            && header(header::CONTENT_TYPE).is_none()
            && header(header::ORIGIN).is_none()
            && header(header::TRANSFER_ENCODING).is_none()
            && header(header::CONTENT_LENGTH).is_none_or(|n| n.trim() == "0");
        if !json && !bodiless {
            return Some(
                ApiError::new(
                    StatusCode::UNSUPPORTED_MEDIA_TYPE,
                    "unsupported_media_type",
                    "this route takes a JSON body: send Content-Type: application/json",
                )
                .into_response(),
            );
        }
    }
    if let Some(scope) = auth.required(class) {
        let presented = header(header::AUTHORIZATION);
        let token = presented.as_deref().and_then(bearer_token);
        let Some(scopes) = token.and_then(|t| auth.tokens.scopes_of(t)) else {
            let mut response = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                format!(
                    "this route needs an API token with the {:?} scope: send Authorization: Bearer TOKEN",
                    scope.name()
                ),
            )
            .into_response();
            response.headers_mut().insert(
                header::WWW_AUTHENTICATE,
                "Bearer".parse().expect("valid header"),
            );
            return Some(response);
        };
        if !scopes.contains(&scope) {
            return Some(
                ApiError::new(
                    StatusCode::FORBIDDEN,
                    "forbidden",
                    format!("this token lacks the {:?} scope", scope.name()),
                )
                .into_response(),
            );
        }
    }
    None
}

/// The token of an `Authorization: Bearer TOKEN` value (the scheme is case-insensitive).
fn bearer_token(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim_start().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>().map(|p| p.as_str()) {
        Some("/v1/users/{user}/recommendations") => "recommendations",
        Some("/v1/users/{user}/profile") => "profile",
        Some("/v1/users/{user}/map") => "map",
        Some("/v1/users") => "users",
        Some("/v1/items/{item}/similar") => "similar",
        Some("/v1/events") => "events",
        Some("/v1/admin/batch") => "batch",
        Some("/healthz") => "healthz",
        Some("/readyz") => "readyz",
        Some("/metrics") => "metrics",
        Some("/openapi.json") => "openapi",
        Some("/") => "page",
        Some(_) => "other",
        None => "unknown",
    };
    let start = Instant::now();
    let response = next.run(req).await;
    state
        .metrics
        .record(route, response.status().as_u16(), start.elapsed());
    response
}

#[derive(Debug, Deserialize)]
struct RecoQuery {
    k: Option<usize>,
    medoids: Option<usize>,
    selection: Option<String>,
    blend: Option<String>,
    global: Option<f64>,
    exclude_seen: Option<bool>,
}

/// The catalog attributes of `row` (a JSON object), if it has any.
fn attributes_of(catalog: &Catalog, row: usize) -> Option<&RawValue> {
    catalog
        .attributes(row)
        .and_then(|text| serde_json::from_str(text).ok())
}

/// One result as JSON, ids borrowed from the catalog.
#[derive(Serialize)]
struct ItemOut<'a> {
    item: &'a str,
    score: f64,
    medoid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct MedoidOut<'a> {
    item: &'a str,
    importance: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a RawValue>,
}

#[derive(Serialize)]
struct RecommendationsOut<'a> {
    user: &'a str,
    items: Vec<ItemOut<'a>>,
    medoids: Vec<MedoidOut<'a>>,
    fallback: bool,
}

fn items_out<'a>(
    engine: &'a Engine,
    items: &[Recommended],
    medoids: &[SampledMedoid],
) -> Vec<ItemOut<'a>> {
    let catalog = engine.catalog();
    items
        .iter()
        .map(|r| ItemOut {
            item: catalog.id(r.row as usize),
            score: r.score,
            medoid: r.medoid.map(|m| catalog.id(medoids[m].row as usize)),
            attributes: attributes_of(catalog, r.row as usize),
        })
        .collect()
}

/// The `filter` parameters of a query string (repeatable: all conditions must hold), parsed
/// against the catalog's attributes.
fn filter_of(engine: &Engine, raw: Option<&str>) -> Result<Option<Filter>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let conditions: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "filter")
        .map(|(_, value)| value.as_str())
        .collect();
    Ok(engine.filter(&conditions)?)
}

async fn recommendations(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<RecoQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(user) = user?;
    let Query(q) = query?;
    let filter = filter_of(&state.engine, raw.as_deref())?;
    let defaults = state.engine.retrieval();
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e);
    let req = RecoRequest {
        k: q.k.unwrap_or(50),
        medoids: q.medoids.unwrap_or(defaults.medoids),
        selection: match q.selection.as_deref() {
            None => defaults.selection,
            Some(s) => s.parse().map_err(bad)?,
        },
        blend: match q.blend.as_deref() {
            None => defaults.blend,
            Some(s) => s.parse().map_err(bad)?,
        },
        global: q.global.unwrap_or(defaults.global),
        exclude_seen: q.exclude_seen.unwrap_or(true),
        now: unix_now(),
        nonce: crate::clock::unix_nanos(),
    };
    let engine = &state.engine;
    let reco = match filter {
        None => engine.recommend(&user, req)?,
        Some(filter) => {
            let (engine, user) = (engine.clone(), user.clone());
            blocking(place, move || {
                engine.recommend_filtered(&user, req, Some(&filter))
            })
            .await??
        }
    };
    let body = RecommendationsOut {
        user: &user,
        items: items_out(engine, &reco.items, &reco.medoids),
        medoids: reco
            .medoids
            .iter()
            .map(|m| MedoidOut {
                item: engine.catalog().id(m.row as usize),
                importance: m.importance,
                attributes: attributes_of(engine.catalog(), m.row as usize),
            })
            .collect(),
        fallback: reco.fallback,
    };
    Ok(json_response(&body))
}

/// Serialises `body` straight into the response (no intermediate `Value`).
fn json_response(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

#[derive(Debug, Deserialize)]
struct ProfileQuery {
    members: Option<usize>,
}

/// Most members listed per interest when a request asks for more.
const MAX_MEMBERS: usize = 10_000;

/// The explorer page: plain HTML, CSS and JS compiled into the binary (no CDN, no build step).
/// No other site may frame it (its **Engage** button posts events: clickjacking).
async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        include_str!("explorer.html"),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
struct UsersQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

/// Most users listed per request.
const MAX_USERS: usize = 1_000;

async fn users(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_USERS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("limit must be between 1 and {MAX_USERS}"),
        ));
    }
    let engine = state.engine.clone();
    let prefix = q.prefix.unwrap_or_default();
    let listed = blocking(place, move || engine.users(&prefix, limit)).await??;
    Ok(json_response(&json!({ "users": listed })))
}

async fn user_map(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    user: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(user) = user?;
    let engine = state.engine.clone();
    let u = user.clone();
    let map = blocking(place, move || engine.map(&u))
        .await??
        .ok_or_else(|| no_profile(&user))?;
    #[derive(Serialize)]
    struct Point<'a> {
        item: &'a str,
        interest: usize,
        x: f64,
        y: f64,
    }
    let catalog = state.engine.catalog();
    Ok(json_response(&json!({
        "user": user,
        "explained": map.explained,
        "points": map.points.iter().map(|&(row, interest, x, y)| Point {
            item: catalog.id(row as usize), interest, x, y,
        }).collect::<Vec<_>>(),
    })))
}

fn no_profile(user: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_profile",
        format!(
            "user {user:?} has no profile in the current batch generation and no online actions"
        ),
    )
}

async fn profile(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(user) = user?;
    let Query(q) = query?;
    let members = q
        .members
        .unwrap_or(pinnersage_engine::engine::MEMBERS_SHOWN);
    if members > MAX_MEMBERS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("members must be at most {MAX_MEMBERS}"),
        ));
    }
    let engine = state.engine.clone();
    let u = user.clone();
    let served = blocking(place, move || engine.profile(&u, members)).await??;
    let Some(p) = served else {
        return Err(no_profile(&user));
    };
    #[derive(Serialize)]
    struct ClusterOut<'a> {
        medoid: &'a str,
        size: u32,
        importance: f64,
        latest_time: i64,
        members: Vec<&'a str>,
        online: bool,
        source: &'static str,
    }
    #[derive(Serialize)]
    struct ProfileOut<'a> {
        user: &'a str,
        generation: Option<&'a str>,
        online_actions: usize,
        online_since: Option<i64>,
        clusters: Vec<ClusterOut<'a>>,
        /// Attributes of the medoids and members, by item id (when the catalog has any).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        attributes: BTreeMap<&'a str, &'a RawValue>,
    }
    let catalog = state.engine.catalog();
    let attributes = p
        .interests
        .iter()
        .flat_map(|i| std::iter::once(&i.medoid).chain(&i.members))
        .filter_map(|&r| Some((catalog.id(r as usize), attributes_of(catalog, r as usize)?)))
        .collect();
    Ok(json_response(&ProfileOut {
        user: &user,
        generation: p.generation.as_deref(),
        online_actions: p.online_actions,
        online_since: (p.online_since != i64::MIN).then_some(p.online_since),
        clusters: p
            .interests
            .iter()
            .map(|i| ClusterOut {
                medoid: catalog.id(i.medoid as usize),
                size: i.size,
                importance: i.importance,
                latest_time: i.latest_time,
                members: i.members.iter().map(|&r| catalog.id(r as usize)).collect(),
                online: i.source != pinnersage_engine::engine::Source::Batch,
                source: i.source.as_str(),
            })
            .collect(),
        attributes,
    }))
}

fn ingest_of(state: &AppState) -> Result<Arc<Ingest>, ApiError> {
    state.ingest.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "ingestion_disabled",
            "this server does not own an event store",
        )
    })
}

async fn events(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let report = match &state.publisher {
        Some(publisher) => {
            publisher
                .publish_body(&body, state.engine.catalog())
                .await?
        }
        None => {
            let ingest = ingest_of(&state)?;
            ingest.ingest(&body, state.engine.catalog()).await?
        }
    };
    state.metrics.record_rejected_events(report.rejected.len());
    if report.accepted + report.duplicates == 0 {
        #[derive(Serialize)]
        struct AllRejected<'a> {
            error: Value,
            rejected: &'a [crate::ingest::Rejected],
        }
        let body = AllRejected {
            error: json!({"code": "no_valid_events", "message": "every event was rejected; nothing was stored"}),
            rejected: &report.rejected,
        };
        let mut response = json_response(&body);
        *response.status_mut() = StatusCode::UNPROCESSABLE_ENTITY;
        return Ok(response);
    }
    let mut response = json_response(&report);
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

async fn admin_batch(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    if state.fleet.is_some() {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "fleet_replica",
            "a fleet replica does not run batches: its store holds only what the stream retains, \
             and its profiles are shipped (`pinnersage ship`, docs/fleet.md)",
        ));
    }
    let ingest = ingest_of(&state)?;
    let q: BatchRequest = if body.iter().all(u8::is_ascii_whitespace) {
        BatchRequest::default()
    } else {
        let bad = |e: serde_json::Error| {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
        };
        let value: Value = serde_json::from_slice(&body).map_err(bad)?;
        let null = value
            .as_object()
            .and_then(|o| o.iter().find(|(_, v)| v.is_null()));
        if let Some((field, _)) = null {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_body",
                format!("{field:?} must not be null: leave it out to take its default"),
            ));
        }
        serde_json::from_value(value).map_err(bad)?
    };
    let config = q.config(unix_now());
    let engine = state.engine.clone();
    let summary = tokio::task::spawn_blocking(move || {
        let summary = ingest.run_batch(&config);
        if summary.is_ok() {
            engine.reload_profiles()?;
        }
        Ok::<_, EngineError>(summary)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??
    .map_err(|e| {
        use pinnersage_pipeline::batch::BatchError;
        use pinnersage_store::profiles::ProfileStoreError;
        match e {
            // Another command publishing into the data directory: its path and pid stay here.
            BatchError::Profiles(ProfileStoreError::Busy(_)) => ApiError::new(
                StatusCode::CONFLICT,
                "busy",
                "another command is publishing into the data directory (an import, an index \
                 build or a batch): retry when it has finished",
            )
            .retry_after(10),
            BatchError::Refused(_) => ApiError::new(
                StatusCode::CONFLICT,
                "not_published",
                format!("{e}; send \"force\": true to publish it anyway"),
            ),
            // The request is well-formed; the store has nothing to cluster in its window.
            BatchError::NoEvents { .. } => {
                ApiError::new(StatusCode::CONFLICT, "no_events", e.to_string())
            }
            BatchError::Config(_) | BatchError::Settings(_) => {
                ApiError::new(StatusCode::BAD_REQUEST, "batch_failed", e.to_string())
            }
            _ => ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "batch_failed",
                e.to_string(),
            ),
        }
    })?;
    Ok(json_response(&summary))
}

#[derive(Debug, Deserialize)]
struct SimilarQuery {
    k: Option<usize>,
}

async fn similar(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    item: Result<Path<String>, PathRejection>,
    query: Result<Query<SimilarQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(item) = item?;
    let Query(q) = query?;
    let filter = filter_of(&state.engine, raw.as_deref())?;
    let k = q.k.unwrap_or(20);
    let hits = match filter {
        None => state.engine.similar(&item, k)?,
        Some(filter) => {
            let (engine, item) = (state.engine.clone(), item.clone());
            blocking(place, move || {
                engine.similar_filtered(&item, k, Some(&filter))
            })
            .await??
        }
    };
    #[derive(Serialize)]
    struct Neighbour<'a> {
        item: &'a str,
        score: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        attributes: Option<&'a RawValue>,
    }
    #[derive(Serialize)]
    struct SimilarOut<'a> {
        item: &'a str,
        items: Vec<Neighbour<'a>>,
    }
    let catalog = state.engine.catalog();
    Ok(json_response(&SimilarOut {
        item: &item,
        items: hits
            .iter()
            .map(|h| Neighbour {
                item: catalog.id(h.row as usize),
                score: h.score,
                attributes: attributes_of(catalog, h.row as usize),
            })
            .collect(),
    }))
}

/// Why the server cannot do its job, if it cannot: the event store fails its commits (for
/// example poisoned after an fsync error), or the NATS consumer has stopped.
fn unhealthy_reasons(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Some(ingest) = &state.ingest
        && let Ok(failing) = ingest.counters().failing.lock()
        && let Some(error) = failing.as_deref()
    {
        reasons.push(format!("the event store fails its commits: {error}"));
    }
    if state.nats_task.as_ref().is_some_and(|t| t.is_finished()) {
        reasons.push("the NATS consumer has stopped: events on the stream are not consumed".into());
    }
    reasons
}

async fn healthz(State(state): State<AppState>, headers: axum::http::HeaderMap) -> Response {
    let e = &state.engine;
    let index = e.index();
    let reasons = unhealthy_reasons(&state);
    let mut response = Json(json!({
        "status": if reasons.is_empty() { "ok" } else { "unhealthy" },
        "reasons": reasons,
        "catalog_items": e.catalog().rows(),
        "index": {"kind": index.index.kind(), "items": index.index.len(), "version": index.version},
        "profiles": e.profile_generation()
            .and_then(|g| g.file_name().map(|n| n.to_string_lossy().into_owned())),
    }))
    .into_response();
    if !reasons.is_empty() {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    let challenge = headers
        .get(crate::handoff::CHALLENGE_HEADER)
        .and_then(|v| v.to_str().ok())
        .filter(|c| c.len() <= 128);
    if let (Some(identity), Some(challenge)) = (&state.identity, challenge)
        && let Ok(proof) = identity.prove(challenge).parse()
    {
        response
            .headers_mut()
            .insert(crate::handoff::PROOF_HEADER, proof);
    }
    response
}

/// Ready for traffic: healthy, caught up with the event stream as it stood at startup and the
/// newest shipped profiles imported (503 with what it waits for until then).
async fn readyz(State(state): State<AppState>) -> Response {
    let mut waiting: Vec<String> = unhealthy_reasons(&state);
    waiting.extend(state.readiness.waiting_for().into_iter().map(str::to_owned));
    let mut response = Json(json!({
        "status": if waiting.is_empty() { "ready" } else { "not_ready" },
        "waiting_for": waiting,
        "profiles": state.engine.profile_generation()
            .and_then(|g| g.file_name().map(|n| n.to_string_lossy().into_owned())),
    }))
    .into_response();
    if !waiting.is_empty() {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let mut out = String::new();
    state.metrics.render(&mut out);
    let e = &state.engine;
    let cache = e.cache();
    let (entries, bytes) = cache.usage();
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_hits_total",
        "counter",
        "Medoid neighbour lookups answered from the cache.",
        cache.hits() as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_misses_total",
        "counter",
        "Medoid neighbour lookups that ran an ANN search.",
        cache.misses() as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_excluded_items",
        "gauge",
        "Items on the operator's exclusion list (never returned).",
        e.excluded().len() as f64,
    );
    let filtered = e.filtered_counters();
    write_metric(
        &mut out,
        "pinnersage_filtered_searches_total",
        "counter",
        "ANN searches with a query-time filter (they bypass the medoid cache).",
        filtered.searches.load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_filtered_exact_fallbacks_total",
        "counter",
        "Filtered searches the graph could not fill, answered by the exact scan.",
        filtered
            .exact_fallbacks
            .load(std::sync::atomic::Ordering::Relaxed) as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_entries",
        "gauge",
        "Neighbour lists held in the medoid cache.",
        entries as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_medoid_cache_bytes",
        "gauge",
        "Approximate bytes held in the medoid cache.",
        bytes as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_index_items",
        "gauge",
        "Items in the ANN index.",
        e.index().index.len() as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_index_version",
        "gauge",
        "Generation number of the index being served.",
        e.index().version as f64,
    );
    write_metric(
        &mut out,
        "pinnersage_catalog_items",
        "gauge",
        "Items in the catalog.",
        e.catalog().rows() as f64,
    );
    if let Some(ingest) = &state.ingest {
        use std::sync::atomic::Ordering::Relaxed;
        let c = ingest.counters();
        let counters = [
            (
                "pinnersage_events_stored_total",
                "Events stored (durable).",
                c.stored.load(Relaxed),
            ),
            (
                "pinnersage_events_duplicate_total",
                "Events already stored (retries).",
                c.duplicates.load(Relaxed),
            ),
            (
                "pinnersage_event_commits_total",
                "Store writes (one fsync each, of one or more staged groups).",
                c.commits.load(Relaxed),
            ),
            (
                "pinnersage_event_commit_failures_total",
                "Staged groups that were not stored (their write or their check failed).",
                c.failures.load(Relaxed),
            ),
            (
                "pinnersage_events_rejected_total",
                "Events refused by validation.",
                state.metrics.rejected_events(),
            ),
        ];
        write_counters(&mut out, &counters);
        out.push_str(
            "# HELP pinnersage_event_commit_seconds Time of the ingest phases: per staged group lookup (duplicate checks) and online (re-clustering its users); per store write of one or more groups write (journal write + fsync + storage write stalls).\n\
             # TYPE pinnersage_event_commit_seconds histogram\n",
        );
        for (phase, histogram) in [
            ("lookup", &c.lookup_time),
            ("write", &c.write_time),
            ("online", &c.online_time),
        ] {
            write_histogram(
                &mut out,
                "pinnersage_event_commit_seconds",
                &format!("phase=\"{phase}\""),
                histogram,
            );
        }
        let engine = ingest.engine_stats();
        for (name, help, value) in [
            (
                "pinnersage_event_store_sealed_memtables",
                "Full memtables waiting for a flush (writes stall at 4 in one keyspace).",
                engine.sealed_memtables,
            ),
            (
                "pinnersage_event_store_outstanding_flushes",
                "Memtable flushes queued or running.",
                engine.outstanding_flushes,
            ),
            (
                "pinnersage_event_store_l0_tables",
                "Tables in level 0, waiting to be compacted (writes slow down at 20 runs).",
                engine.l0_tables,
            ),
            (
                "pinnersage_event_store_tables",
                "Tables on disk.",
                engine.tables,
            ),
            (
                "pinnersage_event_store_active_compactions",
                "Compactions running.",
                engine.active_compactions,
            ),
            (
                "pinnersage_event_store_journals",
                "Journal files (more than one while flushes lag).",
                engine.journals,
            ),
            (
                "pinnersage_event_store_write_buffer_bytes",
                "Bytes held in memtables.",
                engine.write_buffer_bytes,
            ),
        ] {
            write_metric(&mut out, name, "gauge", help, value as f64);
        }
        write_counters(
            &mut out,
            &[(
                "pinnersage_event_store_compactions_total",
                "Compactions completed since the store was opened.",
                engine.compactions_completed,
            )],
        );
        if let Some(n) = &state.nats {
            let nats = [
                (
                    "pinnersage_nats_acked_total",
                    "NATS messages acknowledged after their events were stored.",
                    n.acked.load(Relaxed),
                ),
                (
                    "pinnersage_nats_nacked_total",
                    "NATS messages to be redelivered (store failure).",
                    n.nacked.load(Relaxed),
                ),
                (
                    "pinnersage_nats_terminated_total",
                    "NATS messages dropped as unprocessable.",
                    n.terminated.load(Relaxed),
                ),
            ];
            write_counters(&mut out, &nats);
        }
        if let Some(n) = &state.shipped {
            let shipped = [
                (
                    "pinnersage_shipped_generations_imported_total",
                    "Shipped profile generations imported.",
                    n.imported.load(Relaxed),
                ),
                (
                    "pinnersage_shipped_generations_failed_total",
                    "Shipped profile generations refused or failed to import.",
                    n.failed.load(Relaxed),
                ),
            ];
            write_counters(&mut out, &shipped);
        }
        write_metric(
            &mut out,
            "pinnersage_online_users",
            "gauge",
            "Users with online actions since the served batch, held in memory.",
            e.online().users() as f64,
        );
        write_metric(
            &mut out,
            "pinnersage_online_evictions_total",
            "counter",
            "Users evicted from memory over --online-users (rebuilt from the event store on demand).",
            e.online().evictions() as f64,
        );
    }
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
}

/// Writes `(name, help, value)` counters.
fn write_counters(out: &mut String, counters: &[(&str, &str, u64)]) {
    for &(name, help, value) in counters {
        write_metric(out, name, "counter", help, value as f64);
    }
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route; see /openapi.json",
    )
}

#[cfg(test)]
mod tests {
    use std::io::{Read, Write};
    use std::net::TcpStream;

    use super::*;

    /// A server of one slow route (it sleeps `hold`) and one fast one behind [`limit`], on a
    /// real socket; stopped when the returned sender is dropped.
    fn limited(
        limits: Limits,
        hold: Duration,
    ) -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
        let app = Router::new()
            .route(
                "/slow",
                get(move || async move {
                    tokio::time::sleep(hold).await;
                    "slept"
                }),
            )
            .route(
                "/fast",
                post(|body: Bytes| async move { body.len().to_string() }),
            )
            .layer(middleware::from_fn_with_state(Arc::new(limits), limit));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let shutdown = async {
                    let _ = stopped.await;
                };
                crate::front::serve_connections(
                    listener,
                    app,
                    Duration::from_millis(500),
                    shutdown,
                )
                .await
                .unwrap();
            });
        });
        (addr_rx.recv().unwrap(), stop)
    }

    /// Sends `head` (and `body`) on a new connection; the whole answer.
    fn exchange(addr: std::net::SocketAddr, head: &str, body: &str) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        write!(s, "{head}Host: {addr}\r\nConnection: close\r\n\r\n{body}").unwrap();
        let mut raw = String::new();
        let _ = s.read_to_string(&mut raw);
        raw
    }

    #[test]
    fn in_flight_requests_and_their_time_are_bounded() {
        let (addr, _stop) = limited(
            Limits::new(1, Duration::from_millis(500)),
            Duration::from_secs(5),
        );
        // A request that takes too long holds the one place...
        let slow = std::thread::spawn(move || exchange(addr, "GET /slow HTTP/1.1\r\n", ""));
        std::thread::sleep(Duration::from_millis(150));
        // ...so the next request is refused at once, with a hint to come back.
        let refused = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
        assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
        assert!(refused.contains("\"overloaded\""), "{refused}");
        assert!(
            refused.to_ascii_lowercase().contains("retry-after: 1"),
            "{refused}"
        );
        // The slow request is cut off at the timeout, and the place is free again.
        let raw = slow.join().unwrap();
        assert!(raw.starts_with("HTTP/1.1 503"), "{raw}");
        assert!(raw.to_ascii_lowercase().contains("retry-after: 1"), "{raw}");
        assert!(raw.contains("\"timeout\""), "{raw}");
        let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
        assert!(
            ok.starts_with("HTTP/1.1 200") && ok.ends_with("\r\n\r\n2"),
            "{ok}"
        );
    }

    #[test]
    fn a_slow_upload_holds_no_place_and_times_out() {
        let (addr, _stop) = limited(Limits::new(1, Duration::from_millis(500)), Duration::ZERO);
        // Eight uploads that announce a body and send one byte of it...
        let uploads: Vec<TcpStream> = (0..8)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                write!(
                    s,
                    "POST /fast HTTP/1.1\r\nHost: {addr}\r\nContent-Length: 100\r\n\r\n{{"
                )
                .unwrap();
                s
            })
            .collect();
        std::thread::sleep(Duration::from_millis(100));
        // ...take no in-flight place: other requests are served.
        let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
        // Each is answered 408 once the request timeout has passed.
        for mut s in uploads {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut raw = String::new();
            let _ = s.read_to_string(&mut raw);
            assert!(raw.starts_with("HTTP/1.1 408"), "{raw}");
            assert!(raw.contains("\"body_timeout\""), "{raw}");
        }
        // A body declared over the limit is refused before it is sent (no 100 Continue).
        let raw = exchange(
            addr,
            &format!(
                "POST /fast HTTP/1.1\r\nExpect: 100-continue\r\nContent-Length: {}\r\n",
                crate::ingest::MAX_BODY_BYTES + 1
            ),
            "",
        );
        assert!(raw.starts_with("HTTP/1.1 413"), "{raw}");
        assert!(raw.contains("\"body_too_large\""), "{raw}");
    }

    #[test]
    fn half_sent_and_idle_connections_are_closed() {
        let (addr, _stop) = limited(Limits::new(4, Duration::from_secs(5)), Duration::ZERO);
        // 200 connections that send half a request head, and one that sends nothing.
        let mut open: Vec<TcpStream> = (0..200)
            .map(|_| {
                let mut s = TcpStream::connect(addr).unwrap();
                write!(s, "GET /fast HTTP/1.1\r\nHost: {addr}\r\nX-Slow: ").unwrap();
                s
            })
            .collect();
        open.push(TcpStream::connect(addr).unwrap());
        // Closed by the server at the header timeout (500 ms here), each of them.
        let started = std::time::Instant::now();
        for mut s in open {
            s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            let mut rest = Vec::new();
            let read = s.read_to_end(&mut rest);
            assert!(read.is_ok(), "the server closed it: {read:?}");
        }
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
        // The server still answers.
        let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }

    #[test]
    fn requests_the_http_layer_cannot_parse_get_json_errors_too() {
        let (addr, _stop) = limited(Limits::new(4, Duration::from_secs(5)), Duration::ZERO);
        let long_url = format!("/fast?filter={}", "a".repeat(70_000));
        let big_header = format!("X-Big: {}\r\n", "b".repeat(600_000));
        for (head, status, code) in [
            (
                "GET /fast?q=a>b HTTP/1.1\r\n".to_owned(),
                "400",
                "bad_request",
            ),
            (
                format!("GET {long_url} HTTP/1.1\r\n"),
                "414",
                "uri_too_long",
            ),
            (
                format!("GET /fast HTTP/1.1\r\n{big_header}"),
                "431",
                "headers_too_large",
            ),
        ] {
            let raw = exchange(addr, &head, "");
            let shown = &raw[..raw.len().min(300)];
            assert!(raw.starts_with(&format!("HTTP/1.1 {status} ")), "{shown}");
            assert!(raw.contains("content-type: application/json"), "{shown}");
            let body = raw.split("\r\n\r\n").nth(1).unwrap_or_default();
            let json: Value = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {shown}"));
            assert_eq!(json["error"]["code"], code, "{shown}");
        }
        // The server goes on answering.
        let ok = exchange(addr, "POST /fast HTTP/1.1\r\nContent-Length: 2\r\n", "{}");
        assert!(ok.starts_with("HTTP/1.1 200"), "{ok}");
    }

    #[test]
    fn bearer_schemes_are_case_insensitive() {
        for value in ["Bearer abc", "bearer abc", "BEARER abc", "  BeArEr   abc "] {
            assert_eq!(bearer_token(value), Some("abc"), "{value:?}");
        }
        for value in ["Basic abc", "Bearer", "Bearer   ", "abc"] {
            assert_eq!(bearer_token(value), None, "{value:?}");
        }
    }
}

//! The HTTP API (axum): routes, JSON errors, request metrics, graceful shutdown.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{MatchedPath, Path, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::metrics::{Metrics, write_metric};
use crate::recommend::{Engine, EngineError, Recommended, Request as RecoRequest, SampledMedoid};

/// The OpenAPI description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The recommendation engine.
    pub engine: Arc<Engine>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
}

/// A JSON error: `{"error":{"code":..,"message":..}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
}

impl ApiError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        (self.status, Json(body)).into_response()
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
        .route("/v1/items/{item}/similar", get(similar))
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics))
        .route("/openapi.json", get(openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(middleware::from_fn_with_state(state.clone(), track))
        .with_state(state)
}

/// Serves `router(state)` on `listener` until `shutdown` completes, then finishes in-flight
/// requests. Reloads the profile generation every `reload` when a batch publishes a new one.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    reload: Duration,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let engine = state.engine.clone();
    let reloader = tokio::spawn(async move {
        let mut tick = tokio::time::interval(reload);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let engine = engine.clone();
            match tokio::task::spawn_blocking(move || engine.reload_profiles()).await {
                Ok(Ok(true)) => eprintln!("serving a new profile generation"),
                Ok(Err(e)) => {
                    eprintln!("profile reload failed (still serving the previous generation): {e}")
                }
                _ => {}
            }
        }
    });
    let result = axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown)
        .await;
    reloader.abort();
    result
}

/// Resolves on SIGTERM or Ctrl-C.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}

async fn track(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = match req.extensions().get::<MatchedPath>().map(|p| p.as_str()) {
        Some("/v1/users/{user}/recommendations") => "recommendations",
        Some("/v1/users/{user}/profile") => "profile",
        Some("/v1/items/{item}/similar") => "similar",
        Some("/healthz") => "healthz",
        Some("/metrics") => "metrics",
        Some("/openapi.json") => "openapi",
        Some("/") => "page",
        _ => "other",
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
    exclude_seen: Option<bool>,
}

fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// One result as JSON, ids borrowed from the catalog.
#[derive(Serialize)]
struct ItemOut<'a> {
    item: &'a str,
    score: f64,
    medoid: Option<&'a str>,
}

#[derive(Serialize)]
struct MedoidOut<'a> {
    item: &'a str,
    importance: f64,
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
        })
        .collect()
}

async fn recommendations(
    State(state): State<AppState>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<RecoQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(user) = user?;
    let Query(q) = query?;
    let req = RecoRequest {
        k: q.k.unwrap_or(50),
        medoids: q.medoids.unwrap_or(3),
        exclude_seen: q.exclude_seen.unwrap_or(true),
        now: unix_now(),
    };
    let engine = &state.engine;
    let reco = engine.recommend(&user, req)?;
    let body = RecommendationsOut {
        user: &user,
        items: items_out(engine, &reco.items, &reco.medoids),
        medoids: reco
            .medoids
            .iter()
            .map(|m| MedoidOut {
                item: engine.catalog().id(m.row as usize),
                importance: m.importance,
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

/// Members shown per cluster in the profile response.
const MEMBERS_SHOWN: usize = 5;

async fn profile(
    State(state): State<AppState>,
    user: Result<Path<String>, PathRejection>,
) -> Result<Json<Value>, ApiError> {
    let Path(user) = user?;
    let Some(p) = state.engine.profile(&user)? else {
        return Err(ApiError::new(
            StatusCode::NOT_FOUND,
            "no_profile",
            format!("user {user:?} has no profile in the current batch generation"),
        ));
    };
    let mut members: Vec<Vec<&str>> = vec![Vec::new(); p.clusters.len()];
    for i in &p.items {
        let m = &mut members[i.cluster as usize];
        if m.len() < MEMBERS_SHOWN {
            m.push(&i.item);
        }
    }
    let clusters: Vec<Value> = p
        .clusters
        .iter()
        .zip(&members)
        .map(|(c, m)| {
            json!({
                "medoid": c.medoid,
                "size": c.size,
                "importance": c.importance,
                "latest_time": c.latest_time,
                "members": m,
                "online": false,
            })
        })
        .collect();
    Ok(Json(json!({
        "user": user,
        "generation": state.engine.profile_generation()
            .and_then(|g| g.file_name().map(|n| n.to_string_lossy().into_owned())),
        "clusters": clusters,
    })))
}

#[derive(Debug, Deserialize)]
struct SimilarQuery {
    k: Option<usize>,
}

async fn similar(
    State(state): State<AppState>,
    item: Result<Path<String>, PathRejection>,
    query: Result<Query<SimilarQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(item) = item?;
    let Query(q) = query?;
    let hits = state.engine.similar(&item, q.k.unwrap_or(20))?;
    #[derive(Serialize)]
    struct Neighbour<'a> {
        item: &'a str,
        score: f64,
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
            })
            .collect(),
    }))
}

async fn healthz(State(state): State<AppState>) -> Json<Value> {
    let e = &state.engine;
    let index = e.index();
    Json(json!({
        "status": "ok",
        "catalog_items": e.catalog().rows(),
        "index": {"kind": index.index.kind(), "items": index.index.len(), "version": index.version},
        "profiles": e.profile_generation()
            .and_then(|g| g.file_name().map(|n| n.to_string_lossy().into_owned())),
    }))
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
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], out)
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
        "this route only answers GET; see /openapi.json",
    )
}

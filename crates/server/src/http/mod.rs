//! The HTTP API (axum): the router here, one file per route group ([`recommend`], [`users`],
//! [`events`], [`health`], [`metrics`]), the JSON errors ([`error`]) and the layers every
//! request passes ([`middleware`]).

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

use crate::auth::{AuthConfig, RouteClass, Scope};
use crate::clock::unix_now;
use crate::front::DEFAULT_HEADER_TIMEOUT;
use crate::intake::{IngestError, MAX_BODY_BYTES};
use crate::metrics::Metrics;
use crate::owned_store::OwnedStore;
use pinnersage_engine::engine::{
    Engine, EngineError, Recommended, Request as RecoRequest, SampledMedoid,
};
use pinnersage_pipeline::batch::BatchRequest;

/// The OpenAPI description of every route.
pub const OPENAPI: &str = include_str!("openapi.json");

/// Shared state of the handlers.
#[derive(Clone)]
pub struct AppState {
    /// The recommendation engine being served (replaced whole by a new catalog or index
    /// generation: a handler takes it once, [`AppState::engine`]).
    pub serving: Arc<pinnersage_engine::serving::Serving>,
    /// Request metrics.
    pub metrics: Arc<Metrics>,
    /// The event store this server owns (batches, health and counters).
    pub store: Arc<OwnedStore>,
    /// Where posted events go: the owned store, or a fleet's stream.
    pub sink: crate::sink::EventSink,
    /// Standalone, or a fleet replica.
    pub mode: crate::sink::Mode,
    /// Counters of the NATS consumer, when one runs.
    pub nats: Option<Arc<crate::nats::NatsCounters>>,
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
    /// The online experiments.
    pub experiments: Arc<crate::experiments::Experiments>,
    /// The source of recommendation answers' `request_id`s.
    pub requests: Arc<RequestIds>,
    /// The experiments' impression writer (when the experiments file defines any).
    pub recorder: Option<Arc<crate::impressions::Recorder>>,
}

impl AppState {
    /// The engine to answer with: take it once per request, so that its rows and ids come from
    /// one catalog.
    pub fn engine(&self) -> Arc<Engine> {
        self.serving.engine()
    }

    /// 421 `misdirected` when this is a fleet replica that does not hold `user`'s partition:
    /// it has neither the user's online interests nor (with partitioned profiles) the profile.
    fn holds(&self, user: &str) -> Result<(), ApiError> {
        match &self.mode {
            crate::sink::Mode::Replica(fleet) => fleet
                .holds(user)
                .map_err(|partition| ApiError::misdirected(user, partition, fleet)),
            crate::sink::Mode::Standalone => Ok(()),
        }
    }

    /// The alpha of the profiles `user` is served from by their experiment arm (`None`: the
    /// generation's own), so that what the explorer shows of them is what they are served.
    fn arm_alpha(&self, user: &str) -> Option<f64> {
        match self.experiments.assign(user)?.plan {
            crate::experiments::ArmPlan::Retrieval(r) => r.alpha,
            crate::experiments::ArmPlan::External => None,
        }
    }
}

mod error;
mod events;
mod experiments;
mod health;
mod items;
mod layers;
mod metrics;
mod recommend;
mod users;

#[cfg(test)]
mod tests;

use self::{
    error::*, events::*, experiments::*, health::*, items::*, layers::*, metrics::*, recommend::*,
    users::*,
};
pub use error::ApiError;
pub use items::MAX_ITEMS_PER_REQUEST;
pub use layers::{DEFAULT_MAX_IN_FLIGHT, DEFAULT_REQUEST_TIMEOUT, Limits};

/// The router with every route, metrics middleware and JSON fallbacks.
pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/v1/users/{user}/recommendations", get(recommendations))
        .route("/v1/users/{user}/profile", get(profile))
        .route("/v1/users/{user}/map", get(user_map))
        .route("/v1/users", get(users))
        .route("/", get(page))
        .route("/v1/items/{item}/similar", get(similar))
        .route("/v1/items", post(put_items))
        .route("/v1/items/delete", post(delete_items))
        .route("/v1/items/{item}", axum::routing::delete(delete_item))
        .route("/v1/events", post(events))
        .route("/v1/admin/batch", post(admin_batch))
        .route("/v1/admin/experiments", get(admin_experiments))
        .route("/v1/impressions", post(post_impressions))
        .route("/v1/experiments/{name}/report", get(experiment_report))
        .route("/v1/experiments/{name}/partial", get(experiment_partial))
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

/// Unique ids of recommendation answers: a random prefix drawn when the server starts and a
/// counter, so that ids of replicas and restarts do not collide.
#[derive(Debug)]
pub struct RequestIds {
    prefix: u64,
    next: std::sync::atomic::AtomicU64,
}

impl RequestIds {
    /// A new source with its own prefix.
    pub fn new() -> Self {
        use ring::rand::{SecureRandom, SystemRandom};
        let mut prefix = [0u8; 8];
        // The system's randomness fails only on a broken kernel; the prefix then is the time and
        // the process id, hashed.
        if SystemRandom::new().fill(&mut prefix).is_err() {
            let mut seed = crate::clock::unix_nanos().to_le_bytes().to_vec();
            seed.extend_from_slice(&std::process::id().to_le_bytes());
            prefix = pinnersage_core::hash::stable_hash(&seed).to_le_bytes();
        }
        Self {
            prefix: u64::from_le_bytes(prefix),
            next: std::sync::atomic::AtomicU64::new(0),
        }
    }

    /// The next id: 32 hex digits.
    pub fn next(&self) -> String {
        let n = self.next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        format!("{:016x}{n:016x}", self.prefix)
    }
}

impl Default for RequestIds {
    fn default() -> Self {
        Self::new()
    }
}

/// Serialises `body` straight into the response (no intermediate `Value`).
pub(super) fn json_response(body: &impl Serialize) -> Response {
    match serde_json::to_vec(body) {
        Ok(bytes) => ([(header::CONTENT_TYPE, "application/json")], bytes).into_response(),
        Err(e) => ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string())
            .into_response(),
    }
}

pub(super) async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], OPENAPI)
}

pub(super) async fn not_found() -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "not_found",
        "no such route; see /openapi.json",
    )
}

pub(super) async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "method not allowed on this route; see /openapi.json",
    )
}

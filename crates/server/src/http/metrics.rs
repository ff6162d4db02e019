//! `GET /metrics`: request, ingest, cache, store and fleet counters ([`crate::metrics`]).

use super::*;

pub(super) async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, crate::metrics::CONTENT_TYPE)],
        state.metrics.encode(),
    )
}

//! Probes: `GET /healthz` (the server can do its job) and `GET /readyz` (it takes traffic).

use super::*;

/// Why the server cannot do its job, if it cannot: the event store fails its commits (for
/// example poisoned after an fsync error), or the NATS consumer has stopped.
pub(super) fn unhealthy_reasons(state: &AppState) -> Vec<String> {
    let mut reasons = Vec::new();
    if let Ok(failing) = state.store.counters().failing.lock()
        && let Some(error) = failing.as_deref()
    {
        reasons.push(format!("the event store fails its commits: {error}"));
    }
    if state.nats_task.as_ref().is_some_and(|t| t.is_finished()) {
        reasons.push("the NATS consumer has stopped: events on the stream are not consumed".into());
    }
    reasons
}

pub(super) async fn healthz(
    State(state): State<AppState>,
    headers: axum::http::HeaderMap,
) -> Response {
    let e = state.engine();
    let index = e.index();
    let reasons = unhealthy_reasons(&state);
    let mut response = Json(json!({
        "status": if reasons.is_empty() { "ok" } else { "unhealthy" },
        "reasons": reasons,
        "catalog_items": e.catalog().live_rows(),
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
/// newest shipped profiles imported (503 with what it waits for until then); a fleet replica
/// also says which partitions it holds.
pub(super) async fn readyz(State(state): State<AppState>) -> Response {
    let mut waiting: Vec<String> = unhealthy_reasons(&state);
    waiting.extend(state.readiness.waiting_for().into_iter().map(str::to_owned));
    let mut body = json!({
        "status": if waiting.is_empty() { "ready" } else { "not_ready" },
        "waiting_for": waiting,
        "profiles": state.engine().profile_generation()
            .and_then(|g| g.file_name().map(|n| n.to_string_lossy().into_owned())),
    });
    if let crate::sink::Mode::Replica(fleet) = &state.mode {
        let held = fleet.share().held_partitions();
        body["partitions"] = json!({"count": fleet.partitions, "held": held});
    }
    let mut response = Json(body).into_response();
    if !waiting.is_empty() {
        *response.status_mut() = StatusCode::SERVICE_UNAVAILABLE;
    }
    response
}

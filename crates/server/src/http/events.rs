//! Data in and batches: `POST /v1/events` and `POST /v1/admin/batch`.

use super::*;

pub(super) async fn events(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let engine = state.engine();
    let report = state.sink.accept(&body, engine.catalog()).await?;
    state.metrics.record_rejected_events(report.rejected.len());
    if report.accepted + report.duplicates == 0 {
        #[derive(Serialize)]
        struct AllRejected<'a> {
            error: Value,
            rejected: &'a [crate::intake::Rejected],
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

pub(super) async fn admin_batch(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    if let crate::sink::Mode::Replica(_) = state.mode {
        return Err(ApiError::new(
            StatusCode::CONFLICT,
            "fleet_replica",
            "a fleet replica does not run batches: its store holds only what the stream retains, \
             and its profiles are shipped (`pinnersage ship`, docs/fleet.md)",
        ));
    }
    let store = state.store.clone();
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
    let engine = state.engine();
    let summary = tokio::task::spawn_blocking(move || {
        let summary = store.run_batch(&config);
        if summary.is_ok() {
            engine.reload_profiles()?;
        }
        Ok::<_, EngineError>(summary)
    })
    .await
    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", e.to_string()))??
    .map_err(|e| {
        use pinnersage_core::error::Kind;
        use pinnersage_pipeline::batch::BatchError;
        use pinnersage_store::profiles::ProfileStoreError;
        match e {
            // Another command publishing into the data directory: its path and pid stay here.
            BatchError::Profiles(ProfileStoreError::Busy(_)) => ApiError::new(
                status_of(e.kind()),
                "busy",
                "another command is publishing into the data directory (an import, an index \
                 build or a batch): retry when it has finished",
            )
            .retry_after(10),
            BatchError::Refused(_) => ApiError::new(
                status_of(e.kind()),
                "not_published",
                format!("{e}; send \"force\": true to publish it anyway"),
            ),
            BatchError::NoEvents { .. } => ApiError::of(&e, "no_events"),
            _ => ApiError::of(&e, "batch_failed"),
        }
    })?;
    Ok(json_response(&summary))
}

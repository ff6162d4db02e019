//! The catalog while serving: `POST /v1/items` (upserts), `POST /v1/items/delete` and
//! `DELETE /v1/items/{item}`. Every item of a request is validated before any is journaled; the
//! answer (202) comes once the changes are fsynced and visible, or on a fleet replica once the
//! stream holds them ([`crate::item_changes`]).

use super::*;
use crate::item_changes::{DeleteBody, UpsertBody, delete_message, upsert_message};
use pinnersage_catalog::changes::{ItemChange, ItemError};

/// Most items (or ids) one request may change.
pub const MAX_ITEMS_PER_REQUEST: usize = 10_000;

fn bad_body(e: serde_json::Error) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_body", e.to_string())
}

fn too_many(n: usize) -> Result<(), ApiError> {
    if n > MAX_ITEMS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_items",
            format!("{n} items in one request: at most {MAX_ITEMS_PER_REQUEST}; split them"),
        ));
    }
    if n == 0 {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "no_items",
            "the request names no item",
        ));
    }
    Ok(())
}

/// The refusal of item `k` (with its id): 400, or 404 for an item the catalog lacks.
fn refused(k: usize, id: &str, e: &ItemError) -> ApiError {
    let mut shown: String = id.chars().take(64).collect();
    if shown.len() < id.len() {
        shown.push_str("...");
    }
    ApiError::of(e, "bad_item").with_message(format!("items[{k}] ({shown:?}): {e}"))
}

/// Journals and applies `changes` off the async workers, after checking them against the
/// catalog; answers `{"upserted":N,"deleted":M,"skipped":K,"seq":S}`. A fleet replica publishes
/// them instead ([`publish`]).
async fn journal_and_apply(
    state: &AppState,
    place: Option<Extension<InFlight>>,
    changes: Vec<ItemChange>,
    messages: impl FnOnce() -> Vec<(String, Vec<u8>)>,
) -> Result<Response, ApiError> {
    if let crate::sink::EventSink::Stream(publisher) = &state.sink {
        return publish(state, publisher, &changes, messages()).await;
    }
    let serving = state.serving.clone();
    let applied = blocking(place, move || {
        loop {
            // A new catalog generation swapped in while the changes waited: checked and
            // applied again on it (they were not journaled).
            let engine = serving.engine();
            engine.check_item_changes()?;
            if let Err((k, e)) = engine.check_items(&changes) {
                return Err(refused(k, changes[k].id(), &e));
            }
            match engine.change_items(changes.clone()) {
                Err(EngineError::Retired) => continue,
                outcome => return Ok(outcome?),
            }
        }
    })
    .await??;
    accepted(json!({
        "upserted": applied.upserted,
        "deleted": applied.deleted,
        "skipped": applied.skipped,
        "seq": applied.seq,
    }))
}

/// Fleet mode: checks `changes` against this replica's catalog like a standalone server, then
/// publishes `messages` (one per change, [`crate::item_changes`]) and answers
/// `{"upserted":N,"deleted":M}` once the stream holds them all; every replica applies them.
async fn publish(
    state: &AppState,
    publisher: &crate::fleet::Publisher,
    changes: &[ItemChange],
    messages: Vec<(String, Vec<u8>)>,
) -> Result<Response, ApiError> {
    let engine = state.engine();
    engine.check_item_changes()?;
    if let Err((k, e)) = engine.check_items(changes) {
        return Err(refused(k, changes[k].id(), &e));
    }
    publisher.publish_items(messages).await?;
    let deleted = changes
        .iter()
        .filter(|c| matches!(c, ItemChange::Delete { .. }))
        .count();
    accepted(json!({ "upserted": changes.len() - deleted, "deleted": deleted }))
}

fn accepted(body: Value) -> Result<Response, ApiError> {
    let mut response = json_response(&body);
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

pub(super) async fn put_items(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: UpsertBody = serde_json::from_slice(&body?).map_err(bad_body)?;
    too_many(body.items.len())?;
    let rules = state.engine().catalog().rules();
    let changes = body
        .items
        .iter()
        .enumerate()
        .map(|(k, item)| item.change(&rules).map_err(|e| refused(k, &item.id, &e)))
        .collect::<Result<Vec<_>, _>>()?;
    journal_and_apply(&state, place, changes, || {
        body.items
            .iter()
            .map(|item| (item.id.clone(), upsert_message(item)))
            .collect()
    })
    .await
}

pub(super) async fn delete_items(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body: DeleteBody = serde_json::from_slice(&body?).map_err(bad_body)?;
    too_many(body.ids.len())?;
    let changes = body
        .ids
        .iter()
        .enumerate()
        .map(|(k, id)| ItemChange::delete(id).map_err(|e| refused(k, id, &e)))
        .collect::<Result<Vec<_>, _>>()?;
    journal_and_apply(&state, place, changes, || deletes(&body.ids)).await
}

pub(super) async fn delete_item(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    item: Result<Path<String>, PathRejection>,
) -> Result<Response, ApiError> {
    let Path(item) = item?;
    let change = ItemChange::delete(&item).map_err(|e| refused(0, &item, &e))?;
    let ids = [item];
    journal_and_apply(&state, place, vec![change], || deletes(&ids)).await
}

fn deletes(ids: &[String]) -> Vec<(String, Vec<u8>)> {
    ids.iter()
        .map(|id| (id.clone(), delete_message(id)))
        .collect()
}

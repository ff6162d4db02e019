//! Item changes as they travel: the JSON of `POST /v1/items` and `POST /v1/items/delete`, and in
//! fleet mode the stream that carries them to every replica.
//!
//! In fleet mode a replica validates posted changes like a standalone server, publishes each as
//! its own message on `<items subject>.<hex of the id's UTF-8 bytes>` ([`item_subject`]; the
//! API's JSON for that one item) and answers once JetStream holds them all. Every replica applies
//! the stream in order through its own durable consumer ([`apply_in_order`]): journaled,
//! fsynced and visible before the message is acknowledged, as on a standalone server.
//!
//! The stream keeps the last message of each subject only (`max_messages_per_subject` 1, the
//! way NATS' key-value buckets keep the last value of each key): the latest change of every item.
//! So it grows with the catalog rather than with the number of changes, a replica starting from an
//! empty position reads the current state of every changed item, and a change redelivered late
//! (its replica was killed before acknowledging it) can never undo a newer change of the same
//! item: the newer message removed it from the stream.

use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use futures_util::StreamExt;
use pinnersage_catalog::changes::{ItemChange, ItemError, Rules};
use pinnersage_engine::engine::EngineError;
use pinnersage_engine::serving::Serving;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::nats::NatsCounters;

/// One item of `POST /v1/items`: its id, and the vector and/or attributes to set.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ItemIn {
    /// The item id.
    pub id: String,
    /// The new vector; absent keeps the current one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub embedding: Option<Vec<f32>>,
    /// The new attributes; absent keeps the current ones.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attributes: Option<Value>,
}

impl ItemIn {
    /// The validated change (normalised, attributes typed by the catalog's `rules`).
    pub fn change(&self, rules: &Rules) -> Result<ItemChange, ItemError> {
        ItemChange::upsert(
            &self.id,
            self.embedding.clone(),
            self.attributes.as_ref(),
            rules,
        )
    }
}

/// The body of `POST /v1/items`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct UpsertBody {
    /// The items to add or replace.
    pub items: Vec<ItemIn>,
}

/// The body of `POST /v1/items/delete`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DeleteBody {
    /// The ids of the items to delete.
    pub ids: Vec<String>,
}

/// The subject of `id`'s changes under `prefix`: `<prefix>.<hex of the id's UTF-8 bytes>` (an id
/// may hold characters a subject cannot, such as `.`, `*` or spaces).
///
/// ```
/// use pinnersage_server::item_changes::item_subject;
/// assert_eq!(item_subject("pinnersage.items", "a.b"), "pinnersage.items.612e62");
/// ```
pub fn item_subject(prefix: &str, id: &str) -> String {
    use std::fmt::Write;
    let mut subject = String::with_capacity(prefix.len() + 1 + 2 * id.len());
    subject.push_str(prefix);
    subject.push('.');
    for b in id.bytes() {
        let _ = write!(subject, "{b:02x}");
    }
    subject
}

/// The message of one item's upsert: `{"items":[item]}`, the API's body for that item.
pub fn upsert_message(item: &ItemIn) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "items": [item] })).expect("plain data")
}

/// The message of one item's delete: `{"ids":[id]}`, the API's body for that item.
pub fn delete_message(id: &str) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({ "ids": [id] })).expect("plain data")
}

/// The change one message on `subject` carries, validated against `rules`; why it cannot be
/// applied otherwise (not JSON, not one change, another item than its subject names, invalid).
pub fn change_of_message(
    prefix: &str,
    subject: &str,
    payload: &[u8],
    rules: &Rules,
) -> Result<ItemChange, String> {
    let value: Value = serde_json::from_slice(payload).map_err(|e| format!("not JSON: {e}"))?;
    let change = if value.get("items").is_some() {
        let body: UpsertBody = serde_json::from_value(value).map_err(|e| e.to_string())?;
        match body.items.as_slice() {
            [item] => item.change(rules).map_err(|e| e.to_string())?,
            items => {
                return Err(format!(
                    "{} items in one message: one expected",
                    items.len()
                ));
            }
        }
    } else {
        let body: DeleteBody = serde_json::from_value(value).map_err(|e| e.to_string())?;
        match body.ids.as_slice() {
            [id] => ItemChange::delete(id).map_err(|e| e.to_string())?,
            ids => return Err(format!("{} ids in one message: one expected", ids.len())),
        }
    };
    if subject != item_subject(prefix, change.id()) {
        return Err(format!(
            "the message is about item {:?}, whose subject is {}",
            change.id(),
            item_subject(prefix, change.id())
        ));
    }
    Ok(change)
}

/// Most messages applied as one journal append.
const APPLY_CHUNK: usize = 512;

/// Applies the item changes of `messages` (a replica's durable consumer of the items stream, in
/// stream order) to the served engine: each ready run of messages is journaled as one group
/// commit, and its messages are acknowledged once it is durable and visible. A message that can
/// never apply is terminated (and logged); a run the journal could not take is redelivered.
pub async fn apply_in_order(
    messages: impl futures_util::Stream<
        Item = Result<jetstream::Message, jetstream::consumer::pull::MessagesError>,
    >,
    prefix: String,
    serving: Arc<Serving>,
    counters: Arc<NatsCounters>,
) {
    use std::sync::atomic::Ordering::Relaxed;
    let mut runs = std::pin::pin!(messages.ready_chunks(APPLY_CHUNK));
    while let Some(run) = runs.next().await {
        let rules = serving.engine().catalog().rules();
        let mut changes = Vec::with_capacity(run.len());
        let mut applying = Vec::with_capacity(run.len());
        for message in run.into_iter().flatten() {
            match change_of_message(&prefix, &message.subject, &message.payload, &rules) {
                Ok(change) => {
                    changes.push(change);
                    applying.push(message);
                }
                Err(e) => {
                    eprintln!("NATS item change on {}: {e}; dropped", message.subject);
                    if message.ack_with(AckKind::Term).await.is_ok() {
                        counters.item_terminated.fetch_add(1, Relaxed);
                    }
                }
            }
        }
        if changes.is_empty() {
            continue;
        }
        let serving = serving.clone();
        let outcome = tokio::task::spawn_blocking(move || {
            loop {
                // A new catalog generation swapped in while the run waited: applied there.
                match serving.engine().change_items(changes.clone()) {
                    Err(EngineError::Retired) => continue,
                    outcome => return outcome.map_err(|e| e.to_string()),
                }
            }
        })
        .await
        .unwrap_or_else(|e| Err(e.to_string()));
        match outcome {
            Ok(_) => {
                let acks = applying.iter().map(|m| m.double_ack());
                for acked in futures_util::future::join_all(acks).await {
                    if acked.is_ok() {
                        counters.item_acked.fetch_add(1, Relaxed);
                    }
                }
            }
            Err(e) => {
                eprintln!(
                    "NATS item changes: {e}; {} messages will be redelivered",
                    applying.len()
                );
                let nak = AckKind::Nak(Some(Duration::from_secs(1)));
                let naks = applying.iter().map(|m| m.ack_with(nak));
                for nacked in futures_util::future::join_all(naks).await {
                    if nacked.is_ok() {
                        counters.item_nacked.fetch_add(1, Relaxed);
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules() -> Rules {
        Rules {
            dim: 2,
            normalize: true,
        }
    }

    #[test]
    fn a_message_carries_one_change_of_the_item_its_subject_names() {
        let item = ItemIn {
            id: "shoe 7".into(),
            embedding: Some(vec![3.0, 4.0]),
            attributes: None,
        };
        let subject = item_subject("items", "shoe 7");
        assert_eq!(subject, "items.73686f652037");
        let change =
            change_of_message("items", &subject, &upsert_message(&item), &rules()).unwrap();
        match change {
            ItemChange::Upsert { id, vector, .. } => {
                assert_eq!(id, "shoe 7");
                assert_eq!(vector, Some(vec![0.6, 0.8]), "normalised as at import");
            }
            other => panic!("{other:?}"),
        }
        let delete = change_of_message("items", &subject, &delete_message("shoe 7"), &rules());
        assert!(matches!(delete, Ok(ItemChange::Delete { .. })));

        let elsewhere = change_of_message("items", "items.00", &delete_message("shoe 7"), &rules());
        assert!(elsewhere.unwrap_err().contains("whose subject is"));
        let two = br#"{"ids":["a","b"]}"#;
        assert!(
            change_of_message("items", "items.61", two, &rules())
                .unwrap_err()
                .contains("one expected")
        );
        assert!(
            change_of_message("items", "items.61", b"nope", &rules())
                .unwrap_err()
                .contains("not JSON")
        );
        let wrong_dimension = br#"{"items":[{"id":"a","embedding":[1,2,3]}]}"#;
        assert!(change_of_message("items", "items.61", wrong_dimension, &rules()).is_err());
    }
}

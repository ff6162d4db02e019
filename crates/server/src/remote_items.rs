//! Item changes read from a file and sent to a running server (`pinnersage items put|delete`):
//! the file is read line by line and sent in requests of `batch` items (fewer when they would
//! pass the server's body limit), each acknowledged
//! (journaled and applied) before the next is sent. A refused item stops the run with its file
//! and line; every request before it was applied.
//!
//! Upserts are JSON lines in the API's item shape, `{"id": "...", "embedding": [...],
//! "attributes": {...}}` (embedding or attributes may be left out). Deletes are one id a line,
//! or JSON lines with an `"id"`. Blank lines and lines starting with `#` are skipped.

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::time::Duration;

use pinnersage_core::progress::Progress;
use serde_json::Value;

use crate::client::{ClientError, Conn};
use crate::http::MAX_ITEMS_PER_REQUEST;

/// Bytes of items a request carries at most: the server's body limit, less room for the
/// envelope.
const BODY_BUDGET: usize = crate::intake::MAX_BODY_BYTES - 1024;

/// What a file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ItemsAction {
    /// Items to add or replace (`POST /v1/items`).
    Put,
    /// Ids of items to delete (`POST /v1/items/delete`).
    Delete,
}

/// What the server acknowledged.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ItemsSent {
    /// Requests sent.
    pub requests: usize,
    /// Items added or replaced.
    pub upserted: usize,
    /// Items deleted.
    pub deleted: usize,
    /// Changes that found nothing to change (a delete of an item deleted meanwhile).
    pub skipped: usize,
    /// The journal's sequence number of the last change (none from a fleet replica, which
    /// answers once the stream holds the changes).
    pub seq: Option<u64>,
}

/// Why sending stopped.
#[derive(Debug, thiserror::Error)]
pub enum SendItemsError {
    /// A line is not an item, or the server refused its item (nothing of its request applied).
    #[error("{}:{line}: {message} ({} items before it were applied)", path.display(), sent.upserted + sent.deleted + sent.skipped)]
    Line {
        /// The file.
        path: PathBuf,
        /// 1-based line number.
        line: usize,
        /// What is wrong.
        message: String,
        /// What was applied before.
        sent: ItemsSent,
    },
    /// The server refused a request for another reason (a token, a replica, a read-only index).
    #[error("the server answered {status}: {message}")]
    Server {
        /// The HTTP status.
        status: u16,
        /// The server's message.
        message: String,
        /// What was applied before.
        sent: ItemsSent,
    },
    /// The file could not be read.
    #[error("{}: {source}", path.display())]
    Read {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The server could not be reached or its answer read.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// Sends the changes of `path` to the server on `conn`, `batch` items a request (at most
/// [`MAX_ITEMS_PER_REQUEST`]); reports items sent to `progress`. A `503` (the server busy) is
/// retried after a second, up to a minute.
pub fn send_items(
    conn: &mut Conn,
    action: ItemsAction,
    path: &Path,
    batch: usize,
    progress: &dyn Progress,
) -> Result<ItemsSent, SendItemsError> {
    let batch = batch.clamp(1, MAX_ITEMS_PER_REQUEST);
    let read_error = |source| SendItemsError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = std::fs::File::open(path).map_err(read_error)?;
    progress.phase("items sent", 0);
    let mut sent = ItemsSent::default();
    // The pending request's items: (line number, JSON text of the item or id), and its size.
    let mut pending: Vec<(usize, String)> = Vec::with_capacity(batch);
    let mut bytes = 0;
    for (k, line) in std::io::BufReader::new(file).lines().enumerate() {
        let line = line.map_err(read_error)?;
        let text = line.trim();
        if text.is_empty() || text.starts_with('#') {
            continue;
        }
        let item = parse_line(action, text).map_err(|message| SendItemsError::Line {
            path: path.to_path_buf(),
            line: k + 1,
            message,
            sent,
        })?;
        if bytes + item.len() > BODY_BUDGET {
            let n = pending.len() as u64;
            send(conn, action, path, &mut pending, &mut sent)?;
            progress.advance(n);
            bytes = 0;
        }
        bytes += item.len() + 1;
        pending.push((k + 1, item));
        if pending.len() == batch {
            send(conn, action, path, &mut pending, &mut sent)?;
            progress.advance(batch as u64);
            bytes = 0;
        }
    }
    let rest = pending.len() as u64;
    send(conn, action, path, &mut pending, &mut sent)?;
    progress.advance(rest);
    progress.finish();
    Ok(sent)
}

/// The JSON text an item line contributes to a request: the item object for a put, the id as
/// a JSON string for a delete.
fn parse_line(action: ItemsAction, text: &str) -> Result<String, String> {
    let object = || -> Result<Value, String> {
        let value: Value =
            serde_json::from_str(text).map_err(|e| format!("not a JSON object: {e}"))?;
        match value.get("id") {
            Some(Value::String(_)) => Ok(value),
            Some(_) => Err("\"id\" must be a string".into()),
            None => Err("no \"id\"".into()),
        }
    };
    match action {
        ItemsAction::Put => object().map(|_| text.to_owned()),
        ItemsAction::Delete if text.starts_with('{') => Ok(object()?["id"].to_string()),
        ItemsAction::Delete => Ok(Value::String(text.to_owned()).to_string()),
    }
}

/// Sends the pending items as one request (none: nothing) and adds what was acknowledged.
fn send(
    conn: &mut Conn,
    action: ItemsAction,
    path: &Path,
    pending: &mut Vec<(usize, String)>,
    sent: &mut ItemsSent,
) -> Result<(), SendItemsError> {
    if pending.is_empty() {
        return Ok(());
    }
    let items: Vec<&str> = pending.iter().map(|(_, item)| item.as_str()).collect();
    let (route, body) = match action {
        ItemsAction::Put => ("/v1/items", format!(r#"{{"items":[{}]}}"#, items.join(","))),
        ItemsAction::Delete => (
            "/v1/items/delete",
            format!(r#"{{"ids":[{}]}}"#, items.join(",")),
        ),
    };
    let mut busy_since = None;
    let (status, answer) = loop {
        let (status, answer) = conn.post_json(route, body.as_bytes())?;
        let started = *busy_since.get_or_insert_with(std::time::Instant::now);
        if status == 503 && started.elapsed() < Duration::from_secs(60) {
            std::thread::sleep(Duration::from_secs(1));
            continue;
        }
        break (status, answer);
    };
    let answer: Value = serde_json::from_slice(&answer).unwrap_or(Value::Null);
    if status == 202 {
        let count = |key: &str| answer[key].as_u64().unwrap_or(0) as usize;
        sent.requests += 1;
        sent.upserted += count("upserted");
        sent.deleted += count("deleted");
        sent.skipped += count("skipped");
        sent.seq = answer["seq"].as_u64().or(sent.seq);
        pending.clear();
        return Ok(());
    }
    let message = answer["error"]["message"]
        .as_str()
        .unwrap_or("no message")
        .to_owned();
    // "items[k] (...): ..." names the refused item of the request.
    let refused = message
        .strip_prefix("items[")
        .and_then(|rest| rest.split(']').next())
        .and_then(|k| k.parse::<usize>().ok())
        .and_then(|k| pending.get(k));
    match refused {
        Some(&(line, _)) if matches!(status, 400 | 404) => Err(SendItemsError::Line {
            path: path.to_path_buf(),
            line,
            message,
            sent: *sent,
        }),
        _ => Err(SendItemsError::Server {
            status,
            message,
            sent: *sent,
        }),
    }
}

impl pinnersage_core::error::Kind for SendItemsError {
    fn kind(&self) -> pinnersage_core::error::ErrorKind {
        use pinnersage_core::error::ErrorKind::*;
        match self {
            Self::Line { .. } => BadInput,
            Self::Server { status, .. } => match status {
                401 | 403 | 400 | 413 => BadInput,
                404 => NotFound,
                409 => Conflict,
                503 => Unavailable,
                _ => Internal,
            },
            Self::Read { source, .. } => pinnersage_core::error::ErrorKind::of_io(source),
            Self::Client(e) => e.kind(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_become_items_or_ids_and_bad_lines_say_why() {
        let put = |t| parse_line(ItemsAction::Put, t);
        let delete = |t| parse_line(ItemsAction::Delete, t);
        assert_eq!(
            put(r#"{"id":"a","embedding":[1]}"#).unwrap(),
            r#"{"id":"a","embedding":[1]}"#
        );
        assert!(put("a").unwrap_err().contains("not a JSON object"));
        assert!(put(r#"{"id":3}"#).unwrap_err().contains("must be a string"));
        assert!(
            put(r#"{"embedding":[1]}"#)
                .unwrap_err()
                .contains("no \"id\"")
        );
        assert_eq!(delete(r#"say "hi""#).unwrap(), r#""say \"hi\"""#);
        assert_eq!(delete(r#"{"id":"b"}"#).unwrap(), r#""b""#);
    }
}

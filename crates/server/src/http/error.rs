//! JSON errors: every refusal of the API is `{"error":{"code","message"}}` with its status.

use super::*;
use pinnersage_core::error::{ErrorKind, Kind};

/// A JSON error: `{"error":{"code":..,"message":..}}` with an HTTP status.
#[derive(Debug)]
pub struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after: Option<u32>,
    partition: Option<u32>,
}

impl ApiError {
    pub(super) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            retry_after: None,
            partition: None,
        }
    }

    /// The same refusal with another message.
    pub(super) fn with_message(mut self, message: String) -> Self {
        self.message = message;
        self
    }

    /// Adds `Retry-After: seconds` (overload: the client should come back).
    pub(super) fn retry_after(mut self, seconds: u32) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// 421 `misdirected`: `user`'s partition is not held by this fleet replica; the answer
    /// names it in its message and in the [`PARTITION_HEADER`].
    pub(super) fn misdirected(
        user: &str,
        partition: u32,
        fleet: &crate::fleet::FleetConfig,
    ) -> Self {
        let held: Vec<String> = fleet.consume.iter().map(u32::to_string).collect();
        let mut shown: String = user.chars().take(64).collect();
        if shown.len() < user.len() {
            shown.push_str("...");
        }
        Self {
            partition: Some(partition),
            ..Self::new(
                StatusCode::MISDIRECTED_REQUEST,
                "misdirected",
                format!(
                    "user {shown:?} is in partition {partition} of {}, which this replica does not \
                     hold (it holds {}): route users by crc32(user) % {} (docs/fleet.md)",
                    fleet.partitions,
                    held.join(","),
                    fleet.partitions
                ),
            )
        }
    }
}

/// The header of a 421 `misdirected` answer naming the user's partition.
pub const PARTITION_HEADER: &str = "x-pinnersage-partition";

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({"error": {"code": self.code, "message": self.message}});
        let mut response = (self.status, Json(body)).into_response();
        if let Some(seconds) = self.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, seconds.into());
        }
        if let Some(partition) = self.partition {
            response
                .headers_mut()
                .insert(PARTITION_HEADER, partition.into());
        }
        response
    }
}

/// The HTTP status of each kind of error: the one place statuses come from library errors.
pub(super) fn status_of(kind: ErrorKind) -> StatusCode {
    match kind {
        ErrorKind::BadInput => StatusCode::BAD_REQUEST,
        ErrorKind::NotFound => StatusCode::NOT_FOUND,
        ErrorKind::Conflict => StatusCode::CONFLICT,
        ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

impl ApiError {
    /// `e` with the status of its kind and the machine-readable `code`.
    pub(super) fn of(e: &(impl Kind + std::fmt::Display), code: &'static str) -> Self {
        Self::new(status_of(e.kind()), code, e.to_string())
    }
}

impl From<EngineError> for ApiError {
    fn from(e: EngineError) -> Self {
        let code = match e {
            EngineError::UnknownItem(_) => "unknown_item",
            EngineError::UnknownCut(_) => "unknown_cut",
            EngineError::MissingCut(_) => "missing_cut",
            EngineError::BadRequest(_) => "bad_request",
            EngineError::Internal(_) => "internal",
            EngineError::ReadOnly(_) => "read_only",
            EngineError::Retired => "retry",
        };
        Self::of(&e, code)
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_query", e.body_text())
    }
}

/// 413: a body over [`MAX_BODY_BYTES`].
pub(super) fn body_too_large() -> ApiError {
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
            IngestError::BadBody(_) => Self::of(&e, "bad_body"),
            // Bad input, told apart: the body's size is what to change.
            IngestError::TooMany(_) => Self::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_many_events",
                e.to_string(),
            ),
            IngestError::Store(_) => Self::of(&e, "store_failed"),
            IngestError::Overloaded(_) => Self::of(&e, "overloaded").retry_after(1),
            IngestError::Unavailable(_) => Self::of(&e, "stream_unavailable").retry_after(1),
        }
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_path", e.body_text())
    }
}

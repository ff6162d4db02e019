//! The online experiments: `GET /v1/admin/experiments`.

use super::*;

/// The experiments the server runs, as its experiments file defines them.
pub(super) async fn admin_experiments(State(state): State<AppState>) -> Response {
    json_response(&state.experiments.view())
}

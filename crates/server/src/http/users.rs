//! Users and their profiles: `GET /v1/users`, `/v1/users/{user}/profile`, `/v1/users/{user}/map`, and the
//! explorer page that shows them.

use super::*;

#[derive(Debug, Deserialize)]
pub(super) struct ProfileQuery {
    members: Option<usize>,
    alpha: Option<f64>,
}

/// The query of `GET /v1/users/{user}/map`.
#[derive(Debug, Deserialize)]
pub(super) struct MapQuery {
    alpha: Option<f64>,
}

/// Most members listed per interest when a request asks for more.
pub(super) const MAX_MEMBERS: usize = 10_000;

/// The explorer page: plain HTML, CSS and JS compiled into the binary (no CDN, no build step).
/// No other site may frame it (its **Engage** button posts events: clickjacking).
pub(super) async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::X_FRAME_OPTIONS, "DENY"),
            (header::CONTENT_SECURITY_POLICY, "frame-ancestors 'none'"),
        ],
        include_str!("explorer.html"),
    )
        .into_response()
}

#[derive(Debug, Deserialize)]
pub(super) struct UsersQuery {
    prefix: Option<String>,
    limit: Option<usize>,
}

/// Most users listed per request.
pub(super) const MAX_USERS: usize = 1_000;

pub(super) async fn users(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    query: Result<Query<UsersQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(q) = query?;
    let limit = q.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_USERS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("limit must be between 1 and {MAX_USERS}"),
        ));
    }
    let engine = state.engine();
    let prefix = q.prefix.unwrap_or_default();
    let listed = blocking(place, move || engine.users(&prefix, limit)).await??;
    Ok(json_response(&json!({ "users": listed })))
}

pub(super) async fn user_map(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<MapQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(user) = user?;
    state.holds(&user)?;
    let Query(q) = query?;
    let alpha = q.alpha.or_else(|| state.arm_alpha(&user));
    let engine = state.engine();
    let u = user.clone();
    let served_by = engine.clone();
    let map = blocking(place, move || served_by.map(&u, alpha))
        .await??
        .ok_or_else(|| no_profile(&user))?;
    #[derive(Serialize)]
    struct Point<'a> {
        item: &'a str,
        interest: usize,
        x: f64,
        y: f64,
    }
    let catalog = engine.catalog();
    Ok(json_response(&json!({
        "user": user,
        "explained": map.explained,
        "points": map.points.iter().map(|&(row, interest, x, y)| Point {
            item: catalog.id(row as usize), interest, x, y,
        }).collect::<Vec<_>>(),
    })))
}

pub(super) fn no_profile(user: &str) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "no_profile",
        format!(
            "user {user:?} has no profile in the current batch generation and no online actions"
        ),
    )
}

pub(super) async fn profile(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<ProfileQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(user) = user?;
    state.holds(&user)?;
    let Query(q) = query?;
    let members = q
        .members
        .unwrap_or(pinnersage_engine::engine::MEMBERS_SHOWN);
    if members > MAX_MEMBERS {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("members must be at most {MAX_MEMBERS}"),
        ));
    }
    let engine = state.engine();
    let u = user.clone();
    let served_by = engine.clone();
    let alpha = q.alpha.or_else(|| state.arm_alpha(&user));
    let served = blocking(place, move || served_by.profile(&u, members, alpha)).await??;
    let Some(p) = served else {
        return Err(no_profile(&user));
    };
    #[derive(Serialize)]
    struct ClusterOut<'a> {
        medoid: &'a str,
        size: u32,
        importance: f64,
        latest_time: i64,
        members: Vec<&'a str>,
        online: bool,
        source: &'static str,
    }
    #[derive(Serialize)]
    struct ProfileOut<'a> {
        user: &'a str,
        generation: Option<&'a str>,
        alpha: f64,
        online_actions: usize,
        online_since: Option<i64>,
        clusters: Vec<ClusterOut<'a>>,
        /// Attributes of the medoids and members, by item id (when the catalog has any).
        #[serde(skip_serializing_if = "BTreeMap::is_empty")]
        attributes: BTreeMap<&'a str, &'a RawValue>,
    }
    let catalog = engine.catalog();
    let attributes = p
        .interests
        .iter()
        .flat_map(|i| std::iter::once(&i.medoid).chain(&i.members))
        .filter_map(|&r| Some((catalog.id(r as usize), attributes_of(catalog, r as usize)?)))
        .collect();
    Ok(json_response(&ProfileOut {
        user: &user,
        generation: p.generation.as_deref(),
        alpha: p.alpha,
        online_actions: p.online_actions,
        online_since: (p.online_since != i64::MIN).then_some(p.online_since),
        clusters: p
            .interests
            .iter()
            .map(|i| ClusterOut {
                medoid: catalog.id(i.medoid as usize),
                size: i.size,
                importance: i.importance,
                latest_time: i.latest_time,
                members: i.members.iter().map(|&r| catalog.id(r as usize)).collect(),
                online: i.source != pinnersage_engine::engine::Source::Batch,
                source: i.source.as_str(),
            })
            .collect(),
        attributes,
    }))
}

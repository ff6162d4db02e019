//! Recommendations and similar items: `GET /v1/users/{user}/recommendations`,
//! `GET /v1/items/{item}/similar`.

use super::*;
use crate::experiments::ArmPlan;
use pinnersage_store::impressions::ImpressionHead;

#[derive(Debug, Deserialize)]
pub(super) struct RecoQuery {
    k: Option<usize>,
    medoids: Option<usize>,
    selection: Option<String>,
    blend: Option<String>,
    global: Option<f64>,
    alpha: Option<f64>,
    exclude_seen: Option<bool>,
}

/// The catalog attributes of `row` (a JSON object), if it has any.
pub(super) fn attributes_of(catalog: &Catalog, row: usize) -> Option<&RawValue> {
    catalog
        .attributes(row)
        .and_then(|text| serde_json::from_str(text).ok())
}

/// One result as JSON, ids borrowed from the catalog.
#[derive(Serialize)]
pub(super) struct ItemOut<'a> {
    item: &'a str,
    score: f64,
    medoid: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(super) struct MedoidOut<'a> {
    item: &'a str,
    importance: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    attributes: Option<&'a RawValue>,
}

#[derive(Serialize)]
pub(super) struct RecommendationsOut<'a> {
    user: &'a str,
    /// Unique per answer: what impressions and engagements refer to.
    request_id: String,
    /// The running experiment, when the user is in one.
    #[serde(skip_serializing_if = "Option::is_none")]
    experiment: Option<&'a str>,
    /// The user's arm in it.
    #[serde(skip_serializing_if = "Option::is_none")]
    arm: Option<&'a str>,
    /// The arm is the team's own recommender: no items from us.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    external: bool,
    items: Vec<ItemOut<'a>>,
    medoids: Vec<MedoidOut<'a>>,
    fallback: bool,
}

pub(super) fn items_out<'a>(
    engine: &'a Engine,
    items: &[Recommended],
    medoids: &[SampledMedoid],
) -> Vec<ItemOut<'a>> {
    let catalog = engine.catalog();
    items
        .iter()
        .map(|r| ItemOut {
            item: catalog.id(r.row as usize),
            score: r.score,
            medoid: r.medoid.map(|m| catalog.id(medoids[m].row as usize)),
            attributes: attributes_of(catalog, r.row as usize),
        })
        .collect()
}

/// The `filter` parameters of a query string (repeatable: all conditions must hold), parsed
/// against the catalog's attributes.
pub(super) fn filter_of(engine: &Engine, raw: Option<&str>) -> Result<Option<Filter>, ApiError> {
    let pairs: Vec<(String, String)> = serde_urlencoded::from_str(raw.unwrap_or(""))
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e.to_string()))?;
    let conditions: Vec<&str> = pairs
        .iter()
        .filter(|(key, _)| key == "filter")
        .map(|(_, value)| value.as_str())
        .collect();
    Ok(engine.filter(&conditions)?)
}

pub(super) async fn recommendations(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    user: Result<Path<String>, PathRejection>,
    query: Result<Query<RecoQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let started = Instant::now();
    let Path(user) = user?;
    state.holds(&user)?;
    let Query(q) = query?;
    let engine = state.engine();
    let filter = filter_of(&engine, raw.as_deref())?;
    let assignment = state.experiments.assign(&user);
    let request_id = state.requests.next();
    let defaults = match assignment.map(|a| a.plan) {
        Some(ArmPlan::Retrieval(arm)) => *arm,
        Some(ArmPlan::External) => {
            let body = RecommendationsOut {
                user: &user,
                request_id,
                experiment: assignment.map(|a| a.experiment),
                arm: assignment.map(|a| a.arm),
                external: true,
                items: Vec::new(),
                medoids: Vec::new(),
                fallback: false,
            };
            return Ok(json_response(&body));
        }
        None => engine.retrieval(),
    };
    let bad = |e: String| ApiError::new(StatusCode::BAD_REQUEST, "bad_request", e);
    let now = unix_now();
    let req = RecoRequest {
        k: q.k.unwrap_or(50),
        medoids: q.medoids.unwrap_or(defaults.medoids),
        selection: match q.selection.as_deref() {
            None => defaults.selection,
            Some(s) => s.parse().map_err(bad)?,
        },
        blend: match q.blend.as_deref() {
            None => defaults.blend,
            Some(s) => s.parse().map_err(bad)?,
        },
        global: q.global.unwrap_or(defaults.global),
        alpha: q.alpha.or(defaults.alpha),
        exclude_seen: q.exclude_seen.unwrap_or(true),
        now,
        nonce: crate::clock::unix_nanos(),
    };
    let engine = &engine;
    let reco = match filter {
        None => engine.recommend(&user, req)?,
        Some(filter) => {
            let (engine, user) = (engine.clone(), user.clone());
            blocking(place, move || {
                engine.recommend_filtered(&user, req, Some(&filter))
            })
            .await??
        }
    };
    let body = RecommendationsOut {
        user: &user,
        request_id,
        experiment: assignment.map(|a| a.experiment),
        arm: assignment.map(|a| a.arm),
        external: false,
        items: items_out(engine, &reco.items, &reco.medoids),
        medoids: reco
            .medoids
            .iter()
            .map(|m| MedoidOut {
                item: engine.catalog().id(m.row as usize),
                importance: m.importance,
                attributes: attributes_of(engine.catalog(), m.row as usize),
            })
            .collect(),
        fallback: reco.fallback,
    };
    if let (Some(assigned), Some(recorder)) = (assignment, &state.recorder) {
        // Encoded from the answer's strings: one allocation, nothing copied twice.
        let head = ImpressionHead {
            request_id: &body.request_id,
            experiment: assigned.experiment,
            arm: assigned.arm,
            user: body.user,
            time: now,
            latency_micros: Some(
                u32::try_from(started.elapsed().as_micros()).unwrap_or(u32::MAX - 1),
            ),
        };
        let shown = (body.items.iter()).map(|i| (i.item, i.medoid));
        recorder.served(head, shown).await;
    }
    Ok(json_response(&body))
}

#[derive(Debug, Deserialize)]
pub(super) struct SimilarQuery {
    k: Option<usize>,
}

pub(super) async fn similar(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    item: Result<Path<String>, PathRejection>,
    query: Result<Query<SimilarQuery>, QueryRejection>,
    RawQuery(raw): RawQuery,
) -> Result<Response, ApiError> {
    let Path(item) = item?;
    let Query(q) = query?;
    let engine = state.engine();
    let filter = filter_of(&engine, raw.as_deref())?;
    let k = q.k.unwrap_or(20);
    let hits = match filter {
        None => engine.similar(&item, k)?,
        Some(filter) => {
            let (engine, item) = (engine.clone(), item.clone());
            blocking(place, move || {
                engine.similar_filtered(&item, k, Some(&filter))
            })
            .await??
        }
    };
    #[derive(Serialize)]
    struct Neighbour<'a> {
        item: &'a str,
        score: f64,
        #[serde(skip_serializing_if = "Option::is_none")]
        attributes: Option<&'a RawValue>,
    }
    #[derive(Serialize)]
    struct SimilarOut<'a> {
        item: &'a str,
        items: Vec<Neighbour<'a>>,
    }
    let catalog = engine.catalog();
    Ok(json_response(&SimilarOut {
        item: &item,
        items: hits
            .iter()
            .map(|h| Neighbour {
                item: catalog.id(h.row as usize),
                score: h.score,
                attributes: attributes_of(catalog, h.row as usize),
            })
            .collect(),
    }))
}

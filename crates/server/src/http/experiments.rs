//! The online experiments: `GET /v1/admin/experiments`, `POST /v1/impressions` (what a team's
//! own recommender showed, for an `external` arm) and `GET /v1/experiments/{name}/report`.

use super::*;
use crate::experiments::{ArmPlan, Experiment};
use crate::impressions::RecordError;
use crate::intake::{IdIn, MAX_CLOCK_SKEW_SECONDS, TsIn};
use pinnersage_eval::online::{
    ArmsOf, DEFAULT_WINDOW_SECONDS, StoredPeriod, partial_from_stores, report_from_stores,
};
use pinnersage_store::impressions::{DAY_SECONDS, Impression, Shown, check_impression};

/// Most impressions in one `POST /v1/impressions`.
pub const MAX_IMPRESSIONS_PER_REQUEST: usize = 10_000;

/// The experiments the server runs, as its experiments file defines them.
pub(super) async fn admin_experiments(State(state): State<AppState>) -> Response {
    json_response(&state.experiments.view())
}

#[derive(Deserialize)]
struct ImpressionsIn<'a> {
    /// Each impression stays raw until it is parsed on its own (errors by index).
    #[serde(borrow)]
    impressions: Vec<&'a RawValue>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ImpressionIn {
    request_id: IdIn,
    experiment: String,
    arm: String,
    user: IdIn,
    time: Option<TsIn>,
    items: Vec<ShownIn>,
}

/// An item shown: its id, or `{"item": ID, "interest": ID}`.
#[derive(Deserialize)]
#[serde(untagged)]
enum ShownIn {
    Id(IdIn),
    Full { item: IdIn, interest: Option<IdIn> },
}

fn bad_impression(index: usize, code: &'static str, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(
        StatusCode::BAD_REQUEST,
        code,
        format!("impression {index}: {message}; nothing was recorded"),
    )
}

/// One posted impression, checked against the experiments, the split, the catalog and the store.
fn impression_of(
    index: usize,
    raw: &RawValue,
    state: &AppState,
    catalog: &Catalog,
    now: i64,
    retention_days: u32,
) -> Result<Impression, ApiError> {
    let bad = |code, message: String| bad_impression(index, code, message);
    let i: ImpressionIn = serde_json::from_str(raw.get()).map_err(|e| {
        bad(
            "bad_impression",
            format!("{e} (fields: request_id, experiment, arm, user, items, optional time)"),
        )
    })?;
    let experiment: &Experiment = (state.experiments.all.iter())
        .find(|e| e.name == i.experiment)
        .ok_or_else(|| {
            bad(
                "unknown_experiment",
                format!(
                    "experiment {:?} is not in the server's experiments file",
                    i.experiment
                ),
            )
        })?;
    let arm = (experiment.arms.iter().find(|a| a.name == i.arm)).ok_or_else(|| {
        let arms: Vec<&str> = experiment.arms.iter().map(|a| a.name.as_str()).collect();
        bad(
            "unknown_arm",
            format!(
                "experiment {:?} has no arm {:?} (its arms: {})",
                experiment.name,
                i.arm,
                arms.join(", ")
            ),
        )
    })?;
    if arm.plan != ArmPlan::External {
        return Err(bad(
            "not_external",
            format!(
                "arm {:?} is served by this server, which records its impressions itself; post \
                 impressions of `external = true` arms only",
                arm.name
            ),
        ));
    }
    let user = i.user.into_string();
    let assigned = experiment.arm_of(&user);
    if assigned.name != arm.name {
        return Err(bad(
            "wrong_arm",
            format!(
                "user {user:?} is in arm {:?} of experiment {:?}, not {:?}: show each user what \
                 their arm serves (the arm is in every recommendations answer)",
                assigned.name, experiment.name, arm.name
            ),
        ));
    }
    let time = match i.time {
        None => now,
        Some(ts) => ts
            .unix()
            .map_err(|e| bad("bad_timestamp", format!("time: {e}")))?,
    };
    if time > now.saturating_add(MAX_CLOCK_SKEW_SECONDS) {
        return Err(bad(
            "future_timestamp",
            format!(
                "time {time} is {}s in the future (at most {MAX_CLOCK_SKEW_SECONDS}s allowed)",
                time - now
            ),
        ));
    }
    let oldest = now - i64::from(retention_days) * DAY_SECONDS;
    if time < oldest {
        return Err(bad(
            "expired",
            format!(
                "time {time} is older than the impressions' retention of {retention_days} days"
            ),
        ));
    }
    let mut items = Vec::with_capacity(i.items.len());
    for (k, shown) in i.items.into_iter().enumerate() {
        let (item, interest) = match shown {
            ShownIn::Id(item) => (item.into_string(), None),
            ShownIn::Full { item, interest } => {
                (item.into_string(), interest.map(IdIn::into_string))
            }
        };
        if catalog.row_of(&item).is_none() {
            return Err(bad(
                "unknown_item",
                format!(
                    "items[{k}]: item {item:?} is not in the catalog (engagements with it would be \
                     refused by /v1/events, so the arm's clicks on it would go uncounted)"
                ),
            ));
        }
        items.push(Shown { item, interest });
    }
    let impression = Impression {
        request_id: i.request_id.into_string(),
        experiment: experiment.name.clone(),
        arm: arm.name.clone(),
        user,
        time,
        latency_micros: None,
        items,
    };
    check_impression(&impression).map_err(|e| bad("bad_impression", e.to_string()))?;
    Ok(impression)
}

/// `POST /v1/impressions`: `{"impressions":[{"request_id","experiment","arm","user","items",
/// "time"?}]}`, all or nothing; 202 `{"recorded": N}` once they are on disk.
pub(super) async fn post_impressions(
    State(state): State<AppState>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, ApiError> {
    let body = body?;
    let parsed: ImpressionsIn = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            format!("body must be {{\"impressions\":[...]}}: {e} (see /openapi.json)"),
        )
    })?;
    if parsed.impressions.is_empty() {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_body",
            "\"impressions\" is empty",
        ));
    }
    if parsed.impressions.len() > MAX_IMPRESSIONS_PER_REQUEST {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "too_many_impressions",
            format!(
                "{} impressions in one request; the limit is {MAX_IMPRESSIONS_PER_REQUEST}",
                parsed.impressions.len()
            ),
        ));
    }
    let Some(recorder) = &state.recorder else {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "unknown_experiment",
            "this server runs no experiments (serve --experiments FILE); nothing was recorded",
        ));
    };
    let engine = state.engine();
    let now = unix_now();
    let retention = recorder.store().retention_days();
    let impressions = (parsed.impressions.iter().enumerate())
        .map(|(index, raw)| impression_of(index, raw, &state, engine.catalog(), now, retention))
        .collect::<Result<Vec<Impression>, ApiError>>()?;
    let recorded = impressions.len();
    recorder
        .acknowledged(&impressions)
        .await
        .map_err(|e| match e {
            RecordError::Busy(_) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "busy", e.to_string()).retry_after(1)
            }
            RecordError::Invalid(e) => {
                ApiError::new(StatusCode::BAD_REQUEST, "bad_impression", e.to_string())
            }
            RecordError::Failed(m) => {
                ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "not_recorded", m)
            }
        })?;
    let mut response = json_response(&json!({ "recorded": recorded }));
    *response.status_mut() = StatusCode::ACCEPTED;
    Ok(response)
}

#[derive(Debug, Deserialize)]
pub(super) struct ReportQuery {
    from: Option<String>,
    to: Option<String>,
    window_hours: Option<f64>,
    /// `/partial` only: the partitions to count (default: those the replica holds).
    partitions: Option<String>,
}

/// A query's time: unix seconds or RFC 3339.
fn time_param(name: &str, value: Option<&str>, default: i64) -> Result<i64, ApiError> {
    let Some(value) = value else {
        return Ok(default);
    };
    let ts = match value.parse::<i64>() {
        Ok(t) => TsIn::Int(t),
        Err(_) => TsIn::Text(value.to_owned()),
    };
    ts.unix().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`{name}`: {e} (unix seconds or RFC 3339)"),
        )
    })
}

/// What a report request asks for: the experiment, its recorder, the period and the arms.
struct Asked<'a> {
    experiment: &'a Experiment,
    recorder: Arc<crate::impressions::Recorder>,
    period: StoredPeriod,
    arms: ArmsOf,
    window_hours: f64,
}

/// Checks a report request: the experiment is in the file, the times parse, the window is sane.
fn asked<'a>(state: &'a AppState, name: &str, q: &ReportQuery) -> Result<Asked<'a>, ApiError> {
    let experiment = (state.experiments.all.iter().find(|e| e.name == name)).ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_experiment",
            format!("experiment {name:?} is not in the server's experiments file"),
        )
    })?;
    let recorder = state.recorder.clone().ok_or_else(|| {
        ApiError::new(
            StatusCode::NOT_FOUND,
            "unknown_experiment",
            "no experiments",
        )
    })?;
    let now = unix_now();
    let retention = i64::from(recorder.store().retention_days()) * DAY_SECONDS;
    let window_hours = q
        .window_hours
        .unwrap_or(DEFAULT_WINDOW_SECONDS as f64 / 3_600.0);
    if !(window_hours.is_finite() && (0.0..=24.0 * 365.0).contains(&window_hours)) {
        return Err(ApiError::new(
            StatusCode::BAD_REQUEST,
            "bad_request",
            format!("`window_hours` must be between 0 and 8760, got {window_hours}"),
        ));
    }
    let period = StoredPeriod {
        experiment: experiment.name.clone(),
        from: time_param("from", q.from.as_deref(), now - retention)?,
        to: time_param("to", q.to.as_deref(), now)?,
        window_seconds: (window_hours * 3_600.0).round() as i64,
    };
    let arms = ArmsOf {
        names: experiment.arms.iter().map(|a| a.name.clone()).collect(),
        shares: experiment.arms.iter().map(|a| a.share).collect(),
        control: experiment.control,
    };
    Ok(Asked {
        experiment,
        recorder,
        period,
        arms,
        window_hours,
    })
}

/// `GET /v1/experiments/{name}/report`: the experiment's report over the impressions this
/// server recorded from `from` to `to` (default: the retention up to now) and the engagement
/// events it stored, attributed within `window_hours` (default 24).
///
/// A fleet replica's report counts the users of the partitions it holds (`partitions` says
/// which); one holding some partitions, started with peers, reports the whole fleet: its part
/// merged with the other partitions' parts fetched from its peers (`parts` says from where).
pub(super) async fn experiment_report(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    headers: axum::http::HeaderMap,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let Query(q) = query?;
    let Asked {
        experiment,
        recorder,
        period,
        arms,
        window_hours,
    } = asked(&state, &name, &q)?;
    let (from, to) = (period.from, period.to);
    #[derive(Serialize)]
    struct Coverage {
        count: u32,
        held: Vec<u32>,
    }
    #[derive(Serialize)]
    struct Part {
        server: String,
        partitions: Vec<u32>,
    }
    #[derive(Serialize)]
    struct ReportOut<'a> {
        experiment: &'a str,
        from: i64,
        to: i64,
        window_hours: f64,
        /// In a fleet: the partitions whose users the report counts.
        #[serde(skip_serializing_if = "Option::is_none")]
        partitions: Option<Coverage>,
        /// A fleet's report merged here: each replica asked and the partitions it counted.
        #[serde(skip_serializing_if = "Vec::is_empty")]
        parts: Vec<Part>,
        #[serde(flatten)]
        report: pinnersage_eval::online::OnlineReport,
    }
    let fleet = match &state.mode {
        crate::Mode::Replica(fleet) => Some(fleet),
        crate::Mode::Standalone => None,
    };
    let held = fleet.map(|f| f.share().held_partitions());
    let partial =
        (fleet.zip(held.as_ref())).is_some_and(|(f, held)| held.len() < f.partitions as usize);
    if let Some(fleet) = fleet.filter(|f| partial && !f.peers.is_empty()) {
        let own = state.identity.as_ref().map(|record| record.reach());
        let peers = fleet.peers.clone();
        let token = (headers.get(header::AUTHORIZATION))
            .and_then(|v| v.to_str().ok())
            .and_then(super::layers::bearer_token)
            .map(str::to_owned);
        let asked = crate::fleet_report::ReportPeriod {
            from: Some(from.to_string()),
            to: Some(to.to_string()),
            window_hours: Some(window_hours),
        };
        let name = experiment.name.clone();
        let merged = blocking(place, move || {
            let mut servers: Vec<std::net::SocketAddr> = own.into_iter().collect();
            for peer in &peers {
                servers.push(resolve(peer)?);
            }
            crate::fleet_report::fleet_report(&servers, &name, &asked, token.as_deref())
                .map_err(|e| e.to_string())
        })
        .await?
        .map_err(|m| {
            ApiError::new(
                StatusCode::BAD_GATEWAY,
                "fleet_report_failed",
                format!("the fleet's report (this replica and its peers): {m}"),
            )
        })?;
        return Ok(json_response(&ReportOut {
            experiment: &experiment.name,
            from,
            to,
            window_hours,
            partitions: Some(Coverage {
                count: merged.partitions,
                held: (0..merged.partitions).collect(),
            }),
            parts: (merged.parts.iter())
                .map(|(server, partitions)| Part {
                    server: server.to_string(),
                    partitions: partitions.clone(),
                })
                .collect(),
            report: merged.report,
        }));
    }
    let events = state.store.events().clone();
    let report = blocking(place, move || {
        report_from_stores(&arms, &period, recorder.store(), &events)
    })
    .await?
    .map_err(|e| ApiError::of(&e, "report_failed"))?;
    Ok(json_response(&ReportOut {
        experiment: &experiment.name,
        from,
        to,
        window_hours,
        partitions: fleet.zip(held).map(|(f, held)| Coverage {
            count: f.partitions,
            held,
        }),
        parts: Vec::new(),
        report,
    }))
}

/// The address of a peer `HOST:PORT` (resolved at each report: a name may move).
fn resolve(peer: &str) -> Result<std::net::SocketAddr, String> {
    use std::net::ToSocketAddrs;
    (peer
        .to_socket_addrs()
        .map_err(|e| format!("peer {peer}: {e}"))?)
    .next()
    .ok_or_else(|| format!("peer {peer}: the name has no address"))
}

/// `GET /v1/experiments/{name}/partial`: what the report counts, over the users of the given
/// `partitions` (default: every partition this server holds), as mergeable sums
/// ([`pinnersage_eval::online::Partial`]): the parts of a partitioned fleet's replicas, one per
/// partition, merge into the fleet's report (`pinnersage experiment report --servers`).
pub(super) async fn experiment_partial(
    State(state): State<AppState>,
    place: Option<Extension<InFlight>>,
    name: Result<Path<String>, PathRejection>,
    query: Result<Query<ReportQuery>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Path(name) = name?;
    let Query(q) = query?;
    let Asked {
        experiment,
        recorder,
        period,
        arms,
        window_hours,
    } = asked(&state, &name, &q)?;
    let share = match &state.mode {
        crate::Mode::Replica(fleet) => fleet.share(),
        crate::Mode::Standalone => crate::fleet::Share::everyone(),
    };
    let held = share.held_partitions();
    let counted: Vec<u32> = match q.partitions.as_deref() {
        None => held.clone(),
        Some(list) => {
            let mut counted = Vec::new();
            for item in list.split(',') {
                let range: crate::fleet::PartitionRange = item.parse().map_err(|e: String| {
                    ApiError::new(
                        StatusCode::BAD_REQUEST,
                        "bad_request",
                        format!("`partitions`: {e}"),
                    )
                })?;
                for p in range.partitions() {
                    if !held.contains(&p) {
                        return Err(ApiError::new(
                            StatusCode::BAD_REQUEST,
                            "partition_not_held",
                            format!(
                                "`partitions`: this server does not hold partition {p} (it holds \
                                 {held:?} of {})",
                                share.count
                            ),
                        ));
                    }
                    if !counted.contains(&p) {
                        counted.push(p);
                    }
                }
            }
            counted.sort_unstable();
            counted
        }
    };
    let (from, to) = (period.from, period.to);
    let events = state.store.events().clone();
    let (count, chosen) = (share.count, counted.clone());
    let arms_out = arms.clone();
    let partial = blocking(place, move || {
        let counts = |user: &str| chosen.contains(&crate::fleet::partition_of(user, count));
        partial_from_stores(&arms, &period, recorder.store(), &events, &counts)
    })
    .await?
    .map_err(|e| ApiError::of(&e, "report_failed"))?;
    Ok(json_response(&json!({
        "experiment": experiment.name,
        "from": from,
        "to": to,
        "window_hours": window_hours,
        "arms": arms_out,
        "partitions": {"count": share.count, "counted": counted},
        "partial": partial,
    })))
}

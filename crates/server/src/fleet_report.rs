//! The report of an experiment over a partitioned fleet: each replica reports only the users of
//! the partitions it holds, so the fleet's report is the merge of one part per partition.
//! [`fleet_report`] asks every replica what it holds (`/readyz`), gives each partition to the
//! first replica holding it, fetches those parts (`GET /v1/experiments/{name}/partial`) and
//! merges them ([`pinnersage_eval::online::Partial::merge`]): counts and per-user moments add up
//! over disjoint users, so the merge is the report one server holding everyone would give.

use std::net::SocketAddr;

use pinnersage_eval::online::{ArmsOf, OnlineReport, Partial};
use serde::Deserialize;

use crate::client::{ClientError, Conn};

/// The period and window of a report, as the report routes take them.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ReportPeriod {
    /// First impression time (unix seconds or RFC 3339; default: the servers' retention).
    pub from: Option<String>,
    /// Last impression time (default: now).
    pub to: Option<String>,
    /// Attribution window in hours (default: 24).
    pub window_hours: Option<f64>,
}

/// A fleet's report and where its parts came from.
#[derive(Debug, Clone, PartialEq)]
pub struct FleetReport {
    /// The merged report.
    pub report: OnlineReport,
    /// The experiment's arms, as the servers run them.
    pub arms: ArmsOf,
    /// Partitions in the fleet.
    pub partitions: u32,
    /// Each server asked and the partitions it counted.
    pub parts: Vec<(SocketAddr, Vec<u32>)>,
}

/// Why a fleet's report could not be made.
#[derive(Debug, thiserror::Error)]
pub enum FleetReportError {
    /// A server did not answer.
    #[error("{server}: {source}")]
    Client {
        /// The server.
        server: SocketAddr,
        /// What failed.
        source: ClientError,
    },
    /// A server answered with an error, or something else than expected.
    #[error("{server}: {message}")]
    Answer {
        /// The server.
        server: SocketAddr,
        /// What it answered.
        message: String,
    },
    /// The servers do not run the same fleet or experiment.
    #[error("{0}")]
    Disagree(String),
    /// Some partitions are held by none of the servers given.
    #[error(
        "partitions {missing:?} of {partitions} are held by none of the servers given: add a replica holding each"
    )]
    Uncovered {
        /// The partitions nobody holds.
        missing: Vec<u32>,
        /// Partitions in the fleet.
        partitions: u32,
    },
}

#[derive(Deserialize)]
struct Ready {
    status: String,
    #[serde(default)]
    waiting_for: Vec<String>,
    partitions: Option<Held>,
}

#[derive(Deserialize)]
struct Held {
    count: u32,
    held: Vec<u32>,
}

#[derive(Deserialize)]
struct PartOut {
    arms: ArmsOf,
    partial: Partial,
}

/// The report of experiment `name` over the fleet of `servers` (at least one replica holding
/// each partition; a standalone server is a fleet of one partition), with `token` when the
/// servers require one (read scope).
pub fn fleet_report(
    servers: &[SocketAddr],
    name: &str,
    period: &ReportPeriod,
    token: Option<&str>,
) -> Result<FleetReport, FleetReportError> {
    let mut held_by = Vec::with_capacity(servers.len());
    let mut partitions = None;
    for &server in servers {
        let (status, body) = get(server, "/readyz", token)?;
        // A replica not ready answers 503 with what it waits for.
        let ready: Ready = parse(server, if status == 503 { 200 } else { status }, &body)?;
        if ready.status != "ready" {
            return Err(FleetReportError::Answer {
                server,
                message: format!(
                    "not ready (waiting for {}): its part would miss what it has not consumed yet",
                    ready.waiting_for.join(", ")
                ),
            });
        }
        let held = ready.partitions.unwrap_or(Held {
            count: 1,
            held: vec![0],
        });
        match partitions {
            None => partitions = Some(held.count),
            Some(p) if p != held.count => {
                return Err(FleetReportError::Disagree(format!(
                    "{server} has {} partitions, the servers before it {p}: not one fleet",
                    held.count
                )));
            }
            Some(_) => {}
        }
        held_by.push((server, held.held));
    }
    let partitions = partitions.unwrap_or(1);
    // Each partition from the first server holding it.
    let mut assigned: Vec<(SocketAddr, Vec<u32>)> =
        servers.iter().map(|&s| (s, Vec::new())).collect();
    let mut missing = Vec::new();
    for p in 0..partitions {
        match held_by.iter().position(|(_, held)| held.contains(&p)) {
            Some(k) => assigned[k].1.push(p),
            None => missing.push(p),
        }
    }
    if !missing.is_empty() {
        return Err(FleetReportError::Uncovered {
            missing,
            partitions,
        });
    }
    assigned.retain(|(_, parts)| !parts.is_empty());
    let mut query = String::new();
    for (key, value) in [
        ("from", period.from.clone()),
        ("to", period.to.clone()),
        ("window_hours", period.window_hours.map(|w| w.to_string())),
    ] {
        if let Some(value) = value {
            query.push_str(&format!("&{key}={}", encode(&value)));
        }
    }
    let mut merged: Option<(Partial, ArmsOf)> = None;
    for (server, parts) in &assigned {
        let list: Vec<String> = parts.iter().map(u32::to_string).collect();
        let path = format!(
            "/v1/experiments/{}/partial?partitions={}{query}",
            encode(name),
            list.join(",")
        );
        let (status, body) = get(*server, &path, token)?;
        let part: PartOut = parse(*server, status, &body)?;
        match &mut merged {
            None => merged = Some((part.partial, part.arms)),
            Some((partial, arms)) => {
                if *arms != part.arms {
                    return Err(FleetReportError::Disagree(format!(
                        "{server} runs experiment {name:?} with arms {:?}, another server with \
                         {:?}: give the servers the same experiments file",
                        part.arms.names, arms.names
                    )));
                }
                partial
                    .merge(&part.partial)
                    .map_err(|e| FleetReportError::Disagree(e.to_string()))?;
            }
        }
    }
    let (partial, arms) = merged.expect("at least one partition, so one part");
    Ok(FleetReport {
        report: partial.report(&arms),
        arms,
        partitions,
        parts: assigned,
    })
}

/// GETs `path` from `server` on a fresh connection.
fn get(
    server: SocketAddr,
    path: &str,
    token: Option<&str>,
) -> Result<(u16, Vec<u8>), FleetReportError> {
    let client = |source| FleetReportError::Client { server, source };
    Conn::open(server)
        .map_err(client)?
        .with_token(token)
        .get(path)
        .map_err(client)
}

/// The JSON of a 200 answer, or the server's error message.
fn parse<T: serde::de::DeserializeOwned>(
    server: SocketAddr,
    status: u16,
    body: &[u8],
) -> Result<T, FleetReportError> {
    let answer = |message: String| FleetReportError::Answer { server, message };
    if status != 200 {
        let message = serde_json::from_slice::<serde_json::Value>(body)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return Err(answer(format!("answered {status}: {message}")));
    }
    serde_json::from_slice(body).map_err(|e| answer(format!("unexpected answer: {e}")))
}

/// `text` percent-encoded for a URL's query or path (unreserved characters kept).
fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

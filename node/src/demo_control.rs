//! The running demo's control port (127.0.0.1 only): `geocache demo
//! partition A B [--for 10s]` cuts two regions apart in the link emulator,
//! `geocache demo heal [A B]` joins them again. The CLI side is here too,
//! so the two ends of the protocol sit in one file.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use serde_json::json;
use thiserror::Error;

use crate::demo::{Demo, REGIONS};
use geocache_link_emulator::LinkEmulator;

/// The longest `--for` a partition takes: a day; longer is a mistake.
pub const PARTITION_FOR_MAX: Duration = Duration::from_secs(86_400);

/// What `POST /partition` and `POST /heal` take.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PairRequest {
    /// One region; with `b`, the pair. `heal` without both heals all.
    pub a: Option<String>,
    /// The other region.
    pub b: Option<String>,
    /// For a partition: heal it by itself after this many ms.
    pub for_ms: Option<u64>,
}

/// One region pair as the control port reports it.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
pub struct PairState {
    /// One region.
    pub a: String,
    /// The other.
    pub b: String,
    /// One-way delay, ms.
    pub delay_ms: u64,
    /// Whether it is cut off.
    pub partitioned: bool,
}

#[derive(Clone)]
struct Control {
    links: Arc<LinkEmulator>,
    /// Partitions made per pair, so a timed heal does not undo a later
    /// partition of the same pair.
    generations: Arc<Mutex<BTreeMap<(String, String), u64>>>,
}

type Refusal = (StatusCode, Json<serde_json::Value>);

fn refuse(code: &str, error: String) -> Refusal {
    (StatusCode::BAD_REQUEST, Json(json!({ "error": error, "code": code })))
}

/// The pair named, in order, after checking both are demo regions.
fn pair(request: &PairRequest) -> Result<(String, String), Refusal> {
    let (Some(a), Some(b)) = (&request.a, &request.b) else {
        return Err(refuse("pair_needed", "name two regions: a and b".into()));
    };
    for r in [a, b] {
        if !REGIONS.iter().any(|(name, ..)| name == r) {
            let known: Vec<&str> = REGIONS.iter().map(|r| r.0).collect();
            return Err(refuse(
                "unknown_region",
                format!("no region {r:?} in the demo; it has {}", known.join(", ")),
            ));
        }
    }
    if a == b {
        return Err(refuse("same_region", format!("{a} and {b} are one region; name two")));
    }
    Ok(if a < b { (a.clone(), b.clone()) } else { (b.clone(), a.clone()) })
}

fn states(links: &LinkEmulator) -> Vec<PairState> {
    let mut out = Vec::new();
    for (a, ..) in REGIONS {
        for (b, ..) in REGIONS {
            if a < b {
                let spec = links.link(a, b);
                out.push(PairState {
                    a: a.to_string(),
                    b: b.to_string(),
                    delay_ms: spec.delay_ms,
                    partitioned: spec.partitioned,
                });
            }
        }
    }
    out
}

async fn list(State(control): State<Control>) -> Json<Vec<PairState>> {
    Json(states(&control.links))
}

async fn partition(
    State(control): State<Control>,
    Json(request): Json<PairRequest>,
) -> Result<Json<Vec<PairState>>, Refusal> {
    let (a, b) = pair(&request)?;
    let heal_after = request.for_ms.map(Duration::from_millis);
    if heal_after.is_some_and(|d| d > PARTITION_FOR_MAX || d.is_zero()) {
        return Err(refuse("bad_duration", "for_ms: more than 0 and at most a day".into()));
    }
    control.links.partition(&a, &b);
    let generation = {
        let mut g = control.generations.lock().unwrap_or_else(|e| e.into_inner());
        let n = g.entry((a.clone(), b.clone())).or_default();
        *n += 1;
        *n
    };
    tracing::warn!(%a, %b, for_ms = request.for_ms, "demo: regions partitioned");
    if let Some(after) = heal_after {
        let control = control.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            let current = control
                .generations
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .get(&(a.clone(), b.clone()))
                .copied();
            if current == Some(generation) {
                control.links.heal(&a, &b);
                tracing::warn!(%a, %b, "demo: partition healed");
            }
        });
    }
    Ok(Json(states(&control.links)))
}

async fn heal(
    State(control): State<Control>,
    Json(request): Json<PairRequest>,
) -> Result<Json<Vec<PairState>>, Refusal> {
    let pairs = if request.a.is_none() && request.b.is_none() {
        states(&control.links).into_iter().map(|p| (p.a, p.b)).collect()
    } else {
        vec![pair(&request)?]
    };
    let mut g = control.generations.lock().unwrap_or_else(|e| e.into_inner());
    for (a, b) in pairs {
        // A timed heal pending for the pair no longer applies.
        *g.entry((a.clone(), b.clone())).or_default() += 1;
        control.links.heal(&a, &b);
        tracing::warn!(%a, %b, "demo: partition healed");
    }
    drop(g);
    Ok(Json(states(&control.links)))
}

/// Serves the control port for `demo` until `shutdown` says so.
///
/// # Errors
///
/// The port cannot be bound.
pub async fn serve(
    demo: &Demo,
    mut shutdown: tokio::sync::watch::Receiver<bool>,
) -> std::io::Result<SocketAddr> {
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), demo.options.control_port);
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let control = Control { links: demo.links.clone(), generations: Arc::default() };
    let app = Router::new()
        .route("/links", get(list))
        .route("/partition", post(partition))
        .route("/heal", post(heal))
        .with_state(control);
    tokio::spawn(async move {
        let stop = async move {
            let _ = shutdown.wait_for(|s| *s).await;
        };
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(stop).await {
            tracing::error!(error = %e, "the demo's control port stopped");
        }
    });
    Ok(addr)
}

/// What the CLI side could not do.
#[derive(Debug, Error)]
pub enum ControlError {
    /// Nothing listens on the control port.
    #[error("no demo answers on {0} (start one with `geocache demo`): {1}")]
    NoDemo(SocketAddr, String),
    /// The demo refused the request.
    #[error("{0}")]
    Refused(String),
}

/// Sends `request` to the running demo's `path` (`partition` or `heal`)
/// and returns the pairs as they are now.
///
/// # Errors
///
/// No demo runs, or it refused the request (unknown region, ...).
pub async fn send(port: u16, path: &str, request: &PairRequest) -> Result<Vec<PairState>, ControlError> {
    let addr = SocketAddr::new(Ipv4Addr::LOCALHOST.into(), port);
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ControlError::NoDemo(addr, e.to_string()))?;
    let response = client
        .post(format!("http://{addr}/{path}"))
        .json(request)
        .send()
        .await
        .map_err(|e| ControlError::NoDemo(addr, e.to_string()))?;
    if response.status().is_success() {
        return response.json().await.map_err(|e| ControlError::Refused(e.to_string()));
    }
    let body: serde_json::Value = response.json().await.unwrap_or_default();
    Err(ControlError::Refused(body["error"].as_str().unwrap_or("the demo refused the request").to_string()))
}

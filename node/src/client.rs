//! A Rust client for geocache's HTTP API that always talks to the closest
//! healthy node.
//!
//! Build it from a list of node addresses (ranked by the round trip it
//! measures to each) or from one address plus the caller's latitude and
//! longitude (that node ranks the live nodes by great-circle distance,
//! `GET /v1/closest`). Calls go to the first healthy node; when a node
//! fails, it is set aside for a while and the call moves on to the next
//! one, as long as repeating it is safe.
//!
//! ```no_run
//! # async fn example() -> Result<(), geocache_node::client::ClientError> {
//! use geocache_node::client::{Client, PutOptions};
//! use std::time::Duration;
//!
//! let client = Client::near("127.0.0.2:7070".parse().unwrap(), 48.86, 2.35).await?;
//! client.put("greeting", "hello").await?;
//! client.put_with("session:1", "token", PutOptions::ttl(Duration::from_secs(60))).await?;
//! let hits = client
//!     .update("hits", |old| {
//!         let n: u64 = old.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
//!         Some((n + 1).to_string().into_bytes())
//!     })
//!     .await?;
//! assert!(client.get("greeting").await?.is_some());
//! # Ok(()) }
//! ```

use bytes::Bytes;
use reqwest::{Method, StatusCode, Url};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use thiserror::Error;

use crate::cluster::Durability;

/// Rounds of read-modify-write [`Client::update`] tries before giving up.
const UPDATE_ATTEMPTS_MAX: usize = 100;
/// How long a node that failed is passed over.
const NODE_SET_ASIDE: Duration = Duration::from_secs(5);
/// Nodes a client keeps, closest first.
const NODES_MAX_COUNT: usize = 64;

/// A call failed.
#[derive(Debug, Error)]
pub enum ClientError {
    /// No node could be reached.
    #[error("no geocache node answered (tried {tried}): {last}")]
    NoNode {
        /// How many nodes were tried.
        tried: usize,
        /// The last failure.
        last: String,
    },
    /// A node refused the request.
    #[error("{status} {code}: {message}")]
    Refused {
        /// The HTTP status.
        status: u16,
        /// The API's error code.
        code: String,
        /// Its message.
        message: String,
    },
    /// A conditional write was sent but its answer was lost: it may or may
    /// not have been applied, so it is not repeated.
    #[error("the write's outcome is unknown: {0}")]
    Unknown(String),
    /// [`Client::update`] lost the race [`UPDATE_ATTEMPTS_MAX`] times.
    #[error("update of {key:?} kept conflicting with other writers ({attempts} attempts)")]
    Contended {
        /// The key.
        key: String,
        /// Attempts made.
        attempts: usize,
    },
    /// The client could not be built.
    #[error("building the HTTP client: {0}")]
    Setup(String),
}

/// A value read.
#[derive(Clone, Debug, PartialEq)]
pub struct Entry {
    /// The bytes as stored.
    pub value: Bytes,
    /// The version (the ETag, quotes included), for conditional writes.
    pub etag: String,
    /// Its media type, if the writer gave one.
    pub content_type: Option<String>,
}

/// How a [`Client::put_with`] is made.
#[derive(Clone, Debug, Default)]
pub struct PutOptions {
    /// Expire after this long (whole milliseconds).
    pub ttl: Option<Duration>,
    /// Wait until the write is this far (default: acknowledged locally).
    pub durability: Option<Durability>,
}

impl PutOptions {
    /// Only a TTL.
    pub fn ttl(ttl: Duration) -> PutOptions {
        PutOptions { ttl: Some(ttl), durability: None }
    }

    /// Only a durability level.
    pub fn durability(level: Durability) -> PutOptions {
        PutOptions { ttl: None, durability: Some(level) }
    }
}

/// Whether a call may be sent again after its answer was lost.
#[derive(Clone, Copy, PartialEq)]
enum Repeat {
    /// Reads, deletes and unconditional puts: repeating has the same effect.
    Safe,
    /// Conditional writes: retried elsewhere only if never sent.
    OnlyIfUnsent,
}

struct NodeState {
    http: SocketAddr,
    failed_at: Option<Instant>,
}

struct Request<'a> {
    method: Method,
    key: &'a str,
    body: Option<Bytes>,
    headers: Vec<(&'static str, String)>,
    ttl_ms: Option<u128>,
    repeat: Repeat,
}

impl<'a> Request<'a> {
    /// A bodiless, safely repeatable request on `key`.
    fn plain(method: Method, key: &'a str) -> Request<'a> {
        Request { method, key, body: None, headers: Vec::new(), ttl_ms: None, repeat: Repeat::Safe }
    }
}

/// A geocache client. Cheap to clone; clones share the node ranking.
#[derive(Clone)]
pub struct Client {
    http: reqwest::Client,
    nodes: Arc<Mutex<Vec<NodeState>>>,
    namespace: String,
}

impl Client {
    /// A client over these nodes, ranked by the round trip measured to each
    /// now (`GET /healthz`); unreachable ones go last.
    ///
    /// # Errors
    ///
    /// [`ClientError::NoNode`] when none answers.
    pub async fn connect(nodes: &[SocketAddr]) -> Result<Client, ClientError> {
        let http = http_client()?;
        let mut measured = Vec::with_capacity(nodes.len());
        let mut last = String::from("no address given");
        for &node in nodes.iter().take(NODES_MAX_COUNT) {
            let started = Instant::now();
            match http.get(format!("http://{node}/healthz")).send().await {
                Ok(r) if r.status().is_success() => measured.push((Some(started.elapsed()), node)),
                Ok(r) => {
                    last = format!("{node}: {}", r.status());
                    measured.push((None, node));
                }
                Err(e) => {
                    last = format!("{node}: {e}");
                    measured.push((None, node));
                }
            }
        }
        if measured.iter().all(|(rtt, _)| rtt.is_none()) {
            return Err(ClientError::NoNode { tried: measured.len(), last });
        }
        // Measured ones first, fastest first; the rest keep their order.
        measured.sort_by_key(|(rtt, _)| rtt.unwrap_or(Duration::MAX));
        Ok(Client::over(http, measured.into_iter().map(|(_, n)| n).collect()))
    }

    /// A client for a caller at `lat`/`lon`: `seed` (any node) ranks the
    /// live nodes it knows by distance from there.
    ///
    /// # Errors
    ///
    /// [`ClientError::NoNode`] when the seed does not answer.
    pub async fn near(seed: SocketAddr, lat: f64, lon: f64) -> Result<Client, ClientError> {
        let http = http_client()?;
        let url = format!("http://{seed}/v1/closest?lat={lat}&lon={lon}");
        let unreachable = |e: String| ClientError::NoNode { tried: 1, last: format!("{seed}: {e}") };
        let answer = http.get(url).send().await.map_err(|e| unreachable(e.to_string()))?;
        let status = answer.status();
        let body: serde_json::Value = answer.json().await.map_err(|e| unreachable(e.to_string()))?;
        if !status.is_success() {
            return Err(refused(status, &body));
        }
        let mut nodes: Vec<SocketAddr> = body["candidates"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|c| c["http"].as_str()?.parse().ok())
            .take(NODES_MAX_COUNT)
            .collect();
        if nodes.is_empty() {
            nodes.push(seed);
        }
        Ok(Client::over(http, nodes))
    }

    fn over(http: reqwest::Client, nodes: Vec<SocketAddr>) -> Client {
        let nodes = nodes.into_iter().map(|http| NodeState { http, failed_at: None }).collect();
        Client { http, nodes: Arc::new(Mutex::new(nodes)), namespace: "default".into() }
    }

    /// The same client on another namespace (default: `default`).
    pub fn namespace(&self, namespace: &str) -> Client {
        Client { namespace: namespace.to_owned(), ..self.clone() }
    }

    /// The nodes in the order calls try them now: the closest healthy one
    /// first, nodes that failed recently last.
    pub fn nodes(&self) -> Vec<SocketAddr> {
        self.order()
    }

    /// The value of `key`, if any.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn get(&self, key: &str) -> Result<Option<Entry>, ClientError> {
        let answer = self.send(Request::plain(Method::GET, key)).await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(None),
            s if s.is_success() => {
                let header =
                    |name: &str| answer.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
                let etag = header("etag").unwrap_or_default();
                let content_type = header("content-type");
                let value = answer.bytes().await.map_err(|e| ClientError::Unknown(e.to_string()))?;
                Ok(Some(Entry { value, etag, content_type }))
            }
            s => Err(refused_answer(s, answer).await),
        }
    }

    /// Stores `value` under `key` (no TTL beyond the namespace's default,
    /// acknowledged locally). Returns the new version's ETag.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn put(&self, key: &str, value: impl Into<Bytes>) -> Result<String, ClientError> {
        self.put_with(key, value, PutOptions::default()).await
    }

    /// Stores `value` under `key` with a TTL and/or a durability level.
    ///
    /// # Errors
    ///
    /// [`ClientError`]; a durability level not reached in time is
    /// [`ClientError::Refused`] with status 504 (the write is applied).
    pub async fn put_with(
        &self,
        key: &str,
        value: impl Into<Bytes>,
        options: PutOptions,
    ) -> Result<String, ClientError> {
        let mut headers = Vec::new();
        if let Some(level) = options.durability {
            headers.push(("geocache-durability", level.as_str().to_owned()));
        }
        let request = Request {
            method: Method::PUT,
            key,
            body: Some(value.into()),
            headers,
            ttl_ms: options.ttl.map(|t| t.as_millis().max(1)),
            repeat: Repeat::Safe,
        };
        let answer = self.send(request).await?;
        written(answer).await
    }

    /// Deletes `key`. `true` when a value was deleted.
    ///
    /// # Errors
    ///
    /// [`ClientError`].
    pub async fn delete(&self, key: &str) -> Result<bool, ClientError> {
        let answer = self.send(Request::plain(Method::DELETE, key)).await?;
        match answer.status() {
            StatusCode::NOT_FOUND => Ok(false),
            s if s.is_success() => Ok(true),
            s => Err(refused_answer(s, answer).await),
        }
    }

    /// Read-modify-write: applies `f` to the current value (`None` when
    /// absent) and writes the result only if no one wrote in between,
    /// retrying otherwise. `f` returning `None` leaves the value as it is.
    /// Returns the value written (or left).
    ///
    /// # Errors
    ///
    /// [`ClientError::Contended`] after [`UPDATE_ATTEMPTS_MAX`] lost races;
    /// [`ClientError::Unknown`] when a write's answer was lost (it may
    /// have been applied; running `f` again could apply it twice).
    pub async fn update<F>(&self, key: &str, mut f: F) -> Result<Option<Bytes>, ClientError>
    where
        F: FnMut(Option<&[u8]>) -> Option<Vec<u8>>,
    {
        for _ in 0..UPDATE_ATTEMPTS_MAX {
            let current = self.get(key).await?;
            let Some(next) = f(current.as_ref().map(|e| e.value.as_ref())) else {
                return Ok(current.map(|e| e.value));
            };
            let condition = match &current {
                Some(e) => ("if-match", e.etag.clone()),
                None => ("if-none-match", "*".to_owned()),
            };
            let next = Bytes::from(next);
            let request = Request {
                method: Method::PUT,
                key,
                body: Some(next.clone()),
                headers: vec![condition],
                ttl_ms: None,
                repeat: Repeat::OnlyIfUnsent,
            };
            let answer = self.send(request).await?;
            if answer.status() == StatusCode::PRECONDITION_FAILED {
                continue;
            }
            written(answer).await?;
            return Ok(Some(next));
        }
        Err(ClientError::Contended { key: key.to_owned(), attempts: UPDATE_ATTEMPTS_MAX })
    }

    /// Sends to the first healthy node and on to the next when a node
    /// cannot be reached (or, for safe calls, breaks off).
    async fn send(&self, request: Request<'_>) -> Result<reqwest::Response, ClientError> {
        let order = self.order();
        let mut last = String::new();
        for node in &order {
            let url = self.url(*node, request.key, request.ttl_ms)?;
            let mut builder = self.http.request(request.method.clone(), url);
            for (name, value) in &request.headers {
                builder = builder.header(*name, value);
            }
            if let Some(body) = &request.body {
                builder = builder.body(body.clone());
            }
            match builder.send().await {
                // A node shutting down or not ready answers 503: next.
                Ok(answer) if answer.status() == StatusCode::SERVICE_UNAVAILABLE => {
                    last = format!("{node}: 503");
                    self.set_aside(*node);
                }
                Ok(answer) => {
                    self.recovered(*node);
                    return Ok(answer);
                }
                Err(e) => {
                    last = format!("{node}: {e}");
                    self.set_aside(*node);
                    let never_sent = e.is_connect();
                    if request.repeat == Repeat::OnlyIfUnsent && !never_sent {
                        return Err(ClientError::Unknown(last));
                    }
                }
            }
        }
        Err(ClientError::NoNode { tried: order.len(), last })
    }

    fn url(&self, node: SocketAddr, key: &str, ttl_ms: Option<u128>) -> Result<Url, ClientError> {
        let mut url =
            Url::parse(&format!("http://{node}/")).map_err(|e| ClientError::Setup(e.to_string()))?;
        if let Ok(mut path) = url.path_segments_mut() {
            path.clear().push("v1").push("kv").push(&self.namespace).push(key);
        }
        if let Some(ms) = ttl_ms {
            url.query_pairs_mut().append_pair("ttl", &format!("{ms}ms"));
        }
        Ok(url)
    }

    /// Healthy nodes in rank order, then the ones set aside, oldest
    /// failure first (the likeliest to be back).
    fn order(&self) -> Vec<SocketAddr> {
        let nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        let now = Instant::now();
        let healthy = |n: &&NodeState| n.failed_at.is_none_or(|at| now.duration_since(at) >= NODE_SET_ASIDE);
        let mut order: Vec<SocketAddr> = nodes.iter().filter(healthy).map(|n| n.http).collect();
        let mut aside: Vec<&NodeState> = nodes.iter().filter(|n| !healthy(n)).collect();
        aside.sort_by_key(|n| n.failed_at);
        order.extend(aside.into_iter().map(|n| n.http));
        order
    }

    fn set_aside(&self, node: SocketAddr) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter_mut().find(|n| n.http == node) {
            n.failed_at = Some(Instant::now());
        }
    }

    fn recovered(&self, node: SocketAddr) {
        let mut nodes = self.nodes.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = nodes.iter_mut().find(|n| n.http == node) {
            n.failed_at = None;
        }
    }
}

fn http_client() -> Result<reqwest::Client, ClientError> {
    reqwest::Client::builder()
        .connect_timeout(Duration::from_secs(1))
        .timeout(Duration::from_secs(10))
        .build()
        .map_err(|e| ClientError::Setup(e.to_string()))
}

/// The ETag of a successful write, or the refusal.
async fn written(answer: reqwest::Response) -> Result<String, ClientError> {
    let status = answer.status();
    if !status.is_success() {
        return Err(refused_answer(status, answer).await);
    }
    Ok(answer.headers().get("etag").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned())
}

async fn refused_answer(status: StatusCode, answer: reqwest::Response) -> ClientError {
    let body = answer.json::<serde_json::Value>().await.unwrap_or_default();
    refused(status, &body)
}

fn refused(status: StatusCode, body: &serde_json::Value) -> ClientError {
    ClientError::Refused {
        status: status.as_u16(),
        code: body["code"].as_str().unwrap_or("unknown").to_owned(),
        message: body["error"].as_str().unwrap_or("").to_owned(),
    }
}

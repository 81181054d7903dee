//! The floor geocache's front ends stand on: the same runtime (tokio,
//! multi-threaded, one worker per core), the same allocator (mimalloc),
//! the same map (moka, byte-weighed, bounded) and the same HTTP stack
//! (axum on hyper) as the node, doing none of the node's own work — no
//! registers, clocks, version vectors, replication, TTL policy, metrics
//! or auth. `bench/local-ops.sh` and `bench/http-get.sh` run it beside
//! redis-server and nginx in the same run, so a gap to those splits into
//! what these crates cost (floor / reference) and what geocache adds on
//! them (geocache / floor).
//!
//!     floor-server --resp 127.0.0.1:6400 --http 127.0.0.1:8400 [--like-store]
//!
//! `--like-store` configures the map as the node's store must (per-entry
//! expiry, an eviction listener, which makes moka lock each key it
//! inserts) and makes a SET what a store SET is at least: under a striped
//! lock, a `get` of the value held (a write builds its version vector on
//! it), then an `insert`. The gap between the two floors is what moka
//! charges for what the store needs of it; the gap to geocache is
//! geocache's own work.
//!
//! RESP: `SET key value`, `GET key`, `DBSIZE`, `ECHO`, `PING`, and an empty answer to
//! `CONFIG` (redis-benchmark asks for two settings at start); anything
//! else is an error. HTTP: `PUT` and `GET /v1/kv/{namespace}/{key}`.
//! Prints `resp=ADDR http=ADDR` once both listen.

use anyhow::{bail, Context, Result};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use axum::Router;
use bytes::{Buf, BytesMut};
use clap::Parser;
use moka::sync::Cache;
use std::hash::BuildHasher;
use std::net::SocketAddr;
use std::sync::Arc;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Bytes asked of the socket per read, as the node's RESP port does.
const READ_CHUNK_BYTES: usize = 16 * 1024;

/// A request larger than this closes its connection: the floor bounds its
/// buffers too.
const REQUEST_BYTES_MAX: usize = 1024 * 1024;

#[derive(Parser)]
struct Args {
    /// RESP listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    resp: SocketAddr,
    /// HTTP listen address.
    #[arg(long, default_value = "127.0.0.1:0")]
    http: SocketAddr,
    /// The map's byte budget (keys and values).
    #[arg(long, default_value_t = 2 << 30)]
    max_memory_bytes: u64,
    /// Configure the map and the SET as the store needs them (above).
    #[arg(long)]
    like_store: bool,
}

/// No entry expires; configured only so moka keeps its per-entry expiry
/// machinery, as it does for the store.
struct NoExpiry;

impl moka::Expiry<MapKey, Arc<[u8]>> for NoExpiry {}

/// Locks that serialize SETs of one key under `--like-store`: as many as
/// the store has.
const LOCK_STRIPE_COUNT: usize = 1_024;

#[derive(Clone)]
struct Floor {
    map: Map,
    /// With `--like-store`: the store's striped locks.
    stripes: Option<Arc<[std::sync::Mutex<()>]>>,
    stripe_hasher: foldhash::fast::RandomState,
}

/// Key and value bytes, as moka's budget counts them here: the floor has
/// no per-entry overhead to add, since it keeps nothing else.
type Map = Cache<MapKey, Arc<[u8]>, foldhash::fast::RandomState>;

/// A key as the map holds it.
type MapKey = Box<[u8]>;

fn weigh(key: &MapKey, value: &Arc<[u8]>) -> u32 {
    u32::try_from(key.len() + value.len()).unwrap_or(u32::MAX)
}

fn main() -> Result<()> {
    let args = Args::parse();
    let builder = Cache::builder().max_capacity(args.max_memory_bytes).weigher(weigh);
    let hasher = foldhash::fast::RandomState::default();
    let floor = if args.like_store {
        let map =
            builder.expire_after(NoExpiry).eviction_listener(|_, _, _| {}).build_with_hasher(hasher.clone());
        let stripes = (0..LOCK_STRIPE_COUNT).map(|_| std::sync::Mutex::new(())).collect();
        Floor { map, stripes: Some(stripes), stripe_hasher: hasher }
    } else {
        Floor { map: builder.build_with_hasher(hasher.clone()), stripes: None, stripe_hasher: hasher }
    };
    let map = floor.map.clone();
    let runtime = tokio::runtime::Runtime::new().context("starting the async runtime")?;
    runtime.block_on(async move {
        let resp =
            TcpListener::bind(args.resp).await.with_context(|| format!("binding --resp {}", args.resp))?;
        let http =
            TcpListener::bind(args.http).await.with_context(|| format!("binding --http {}", args.http))?;
        println!("resp={} http={}", resp.local_addr()?, http.local_addr()?);
        let app = Router::new()
            .route("/v1/kv/{namespace}/{key}", get(http_get).put(http_put))
            .with_state(map.clone());
        tokio::spawn(async move { axum::serve(http, app).await });
        loop {
            let (stream, _) = resp.accept().await.context("accepting a RESP connection")?;
            let _ = stream.set_nodelay(true);
            let floor = floor.clone();
            tokio::spawn(async move { serve_resp(&floor, stream).await });
        }
    })
}

fn http_key(namespace: &str, key: &str) -> Box<[u8]> {
    [namespace.as_bytes(), b"/", key.as_bytes()].concat().into_boxed_slice()
}

async fn http_get(
    State(map): State<Map>,
    Path((namespace, key)): Path<(String, String)>,
) -> (StatusCode, Bytes) {
    match map.get(&http_key(&namespace, &key)) {
        Some(v) => (StatusCode::OK, Bytes::copy_from_slice(&v)),
        None => (StatusCode::NOT_FOUND, Bytes::new()),
    }
}

async fn http_put(
    State(map): State<Map>,
    Path((namespace, key)): Path<(String, String)>,
    body: Bytes,
) -> StatusCode {
    map.insert(http_key(&namespace, &key), Arc::from(&body[..]));
    StatusCode::NO_CONTENT
}

/// Reads, runs every whole command buffered, writes the replies in one
/// write, repeats: the node's RESP loop without its limits and time-outs.
async fn serve_resp(floor: &Floor, mut stream: TcpStream) -> Result<()> {
    let mut read = BytesMut::with_capacity(READ_CHUNK_BYTES);
    let mut write = Vec::with_capacity(READ_CHUNK_BYTES);
    loop {
        while let Some(args) = parse(&mut read)? {
            run(floor, &args, &mut write);
        }
        if !write.is_empty() {
            stream.write_all(&write).await?;
            write.clear();
        }
        if read.len() > REQUEST_BYTES_MAX {
            bail!("request over {REQUEST_BYTES_MAX} bytes");
        }
        read.reserve(READ_CHUNK_BYTES);
        if stream.read_buf(&mut read).await? == 0 {
            return Ok(());
        }
    }
}

fn run(floor: &Floor, args: &[Bytes], out: &mut Vec<u8>) {
    let map = &floor.map;
    let command = args.first().map(|c| c.to_ascii_uppercase()).unwrap_or_default();
    match (&command[..], args.len()) {
        (b"SET", 3) => {
            let key = &args[1][..];
            match &floor.stripes {
                Some(stripes) => {
                    let stripe = &stripes[(floor.stripe_hasher.hash_one(key) as usize) % stripes.len()];
                    let _update = stripe.lock().unwrap_or_else(|e| e.into_inner());
                    let held = map.get(key);
                    map.insert(Box::from(key), Arc::from(&args[2][..]));
                    drop(held);
                }
                None => map.insert(Box::from(key), Arc::from(&args[2][..])),
            }
            out.extend_from_slice(b"+OK\r\n");
        }
        (b"GET", 2) => match map.get(&args[1][..]) {
            Some(v) => {
                out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                out.extend_from_slice(&v);
                out.extend_from_slice(b"\r\n");
            }
            None => out.extend_from_slice(b"$-1\r\n"),
        },
        (b"DBSIZE", 1) => {
            map.run_pending_tasks();
            out.extend_from_slice(format!(":{}\r\n", map.entry_count()).as_bytes());
        }
        // `redis-cli --pipe` ends its stream with an ECHO, to know the
        // last reply when it comes back.
        (b"ECHO", 2) => {
            out.extend_from_slice(format!("${}\r\n", args[1].len()).as_bytes());
            out.extend_from_slice(&args[1]);
            out.extend_from_slice(b"\r\n");
        }
        (b"PING", _) => out.extend_from_slice(b"+PONG\r\n"),
        (b"CONFIG", _) => out.extend_from_slice(b"*0\r\n"),
        _ => out.extend_from_slice(b"-ERR unknown command\r\n"),
    }
}

/// One whole `*N` array of bulk strings off the front of `buf`, or `None`
/// until it has all arrived.
fn parse(buf: &mut BytesMut) -> Result<Option<Vec<Bytes>>> {
    // Blank lines between requests are skipped, as Redis does
    // (`redis-cli --pipe` sends one before its closing ECHO).
    while buf.starts_with(b"\r\n") {
        buf.advance(2);
    }
    let Some((count, mut at)) = line_number(buf, 0, b'*')? else { return Ok(None) };
    let mut spans = Vec::with_capacity(count);
    for _ in 0..count {
        let Some((len, start)) = line_number(buf, at, b'$')? else { return Ok(None) };
        if buf.len() < start + len + 2 {
            return Ok(None);
        }
        spans.push((start, len));
        at = start + len + 2;
    }
    let whole = buf.split_to(at).freeze();
    Ok(Some(spans.into_iter().map(|(start, len)| whole.slice(start..start + len)).collect()))
}

/// The number after `sigil` on the line starting at `at`, and where the
/// next line starts.
fn line_number(buf: &BytesMut, at: usize, sigil: u8) -> Result<Option<(usize, usize)>> {
    let rest = &buf.chunk()[at.min(buf.len())..];
    let Some(end) = rest.iter().position(|&b| b == b'\n') else { return Ok(None) };
    if rest.first() != Some(&sigil) || end < 2 || rest[end - 1] != b'\r' {
        bail!("expected a {} line", sigil as char);
    }
    let n: usize = std::str::from_utf8(&rest[1..end - 1])?.parse()?;
    if n > REQUEST_BYTES_MAX {
        bail!("length {n} over {REQUEST_BYTES_MAX}");
    }
    Ok(Some((n, at + end + 1)))
}

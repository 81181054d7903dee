//! The Rust client against a running cluster.
//!
//! Start the demo (`cargo run --release --bin geocache -- demo`) in one
//! terminal, then run `cargo run --example client` in another. It connects
//! as a client in Paris would, writes, reads, counts with a CAS loop and
//! prints which node served it. Give other seed addresses as arguments.

use geocache_node::client::{Client, PutOptions};
use std::net::SocketAddr;
use std::time::Duration;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let seed: SocketAddr = std::env::args().nth(1).unwrap_or_else(|| "127.0.0.2:7070".into()).parse()?;
    // Paris: the closest demo region is frankfurt.
    let client = Client::near(seed, 48.86, 2.35).await?;
    println!("nodes, closest first: {:?}", client.nodes());

    client.put("greeting", "bonjour").await?;
    client.put_with("session:42", "token", PutOptions::ttl(Duration::from_secs(30))).await?;
    let greeting = client.get("greeting").await?.map(|e| e.value);
    println!("greeting = {greeting:?}");

    for _ in 0..10 {
        client
            .update("visits", |old| {
                let n: u64 = old.and_then(|b| std::str::from_utf8(b).ok()?.parse().ok()).unwrap_or(0);
                Some((n + 1).to_string().into_bytes())
            })
            .await?;
    }
    let visits = client.get("visits").await?.map(|e| e.value);
    println!("visits = {visits:?}");
    println!("deleted session: {}", client.delete("session:42").await?);
    Ok(())
}

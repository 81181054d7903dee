//! The `geocache` binary.
fn main() {
    eprintln!("geocache {}: `serve` and `demo` are not built yet", env!("CARGO_PKG_VERSION"));
    std::process::exit(2);
}

//! `geocache-sim`: run a scenario, or explore many seeds of it.

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use geocache_sim::scenario::Scenario;
use geocache_sim::{simulate, simulate_with_html};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// A run allocates and frees tens of millions of small deltas and
/// registers; mimalloc's thread-local free lists do that faster than
/// glibc's malloc. Only the binary: the library stays allocator-neutral.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Deterministic simulator of a geocache deployment.
#[derive(Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run one scenario with one seed and print the report.
    Run {
        /// The scenario file (TOML; see docs/SIMULATOR.md).
        scenario: PathBuf,
        /// The seed.
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Also write the report as JSON here.
        #[arg(long)]
        json: Option<PathBuf>,
        /// Also write an HTML page with plots here.
        #[arg(long)]
        html: Option<PathBuf>,
    },
    /// Run many seeds; print the failing ones with the command that replays each.
    Explore {
        /// The scenario file.
        scenario: PathBuf,
        /// Seeds as START..END (END excluded), e.g. 1..500.
        #[arg(long, default_value = "1..100")]
        seeds: String,
    },
}

fn load(path: &Path) -> Result<Scenario> {
    let text = std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    Scenario::from_toml(&text).with_context(|| path.display().to_string())
}

fn seeds(range: &str) -> Result<std::ops::Range<u64>> {
    let Some((a, b)) = range.split_once("..") else { bail!("--seeds: expected START..END, got {range:?}") };
    let (a, b): (u64, u64) =
        (a.trim().parse().context("--seeds start")?, b.trim().parse().context("--seeds end")?);
    if a >= b {
        bail!("--seeds: {a}..{b} is empty");
    }
    Ok(a..b)
}

fn bar(len: u64) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    if let Ok(style) = ProgressStyle::with_template("{bar:40} {pos}/{len} {msg} [{elapsed}]") {
        bar.set_style(style);
    }
    bar
}

/// This process's peak resident set (`VmHWM`), from /proc; `None` where
/// there is no /proc.
fn peak_rss_mib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: u64 = line.trim_start_matches("VmHWM:").trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kib / 1024)
}

fn main() -> Result<()> {
    match Cli::parse().command {
        Command::Run { scenario, seed, json, html } => {
            let s = load(&scenario)?;
            let progress = bar(1_000);
            let started = Instant::now();
            let (report, page) = simulate_with_html(
                &s,
                seed,
                &mut |share| progress.set_position((share * 1_000.0) as u64),
                html.is_some(),
            );
            progress.finish_and_clear();
            let wall = started.elapsed();
            print!("{}", report.to_text());
            let ops = report.reads + report.writes;
            let wall_s = wall.as_secs_f64().max(1e-9);
            println!(
                "\nwall {:.2} s, {:.2} virtual s per wall s, {:.0} simulated client ops per wall second, peak RSS {}",
                wall.as_secs_f64(),
                report.virtual_s / wall_s,
                ops as f64 / wall_s,
                peak_rss_mib().map_or("unknown".to_string(), |mib| format!("{mib} MiB"))
            );
            if let Some(path) = json {
                std::fs::write(&path, report.to_json())
                    .with_context(|| format!("--json {}", path.display()))?;
            }
            if let (Some(path), Some(page)) = (html, page) {
                std::fs::write(&path, page).with_context(|| format!("--html {}", path.display()))?;
            }
            if !report.passed() {
                println!("SEED={seed}: replay with `geocache-sim run {} --seed {seed}`", scenario.display());
                std::process::exit(1);
            }
            Ok(())
        }
        Command::Explore { scenario, seeds: range } => {
            let s = load(&scenario)?;
            let range = seeds(&range)?;
            let progress = bar(range.end - range.start);
            let mut failed = Vec::new();
            for seed in range.clone() {
                let report = simulate(&s, seed, &mut |_| {});
                if !report.passed() {
                    let which: Vec<&str> =
                        report.checks.iter().filter(|c| !c.passed).map(|c| c.name).collect();
                    progress.suspend(|| {
                        println!(
                            "SEED={seed} failed {}: replay with `geocache-sim run {} --seed {seed}`",
                            which.join(", "),
                            scenario.display()
                        )
                    });
                    failed.push(seed);
                }
                progress.inc(1);
            }
            progress.finish_and_clear();
            println!("{} seeds, {} failed", range.end - range.start, failed.len());
            if !failed.is_empty() {
                std::process::exit(1);
            }
            Ok(())
        }
    }
}
